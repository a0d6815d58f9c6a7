//! One non-blocking libssh2 session shared by many threads. libssh2 holds its session lock for
//! the whole of a blocking call, so one blocked reader would starve every other channel; here
//! every call is non-blocking, and a thread that gets EAGAIN sleeps in poll(2) on the socket
//! (in the direction libssh2 asks for) and on its own doorbell. A call that consumes socket
//! input may take packets meant for another thread's channel, so it rings every doorbell.

use std::io::{self, Read, Write};
use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use ssh2::{BlockDirections, Channel, ErrorCode, Session};

/// libssh2's "would block".
const EAGAIN: i32 = -37;

/// The length of every libssh2 read of a channel (see [`Chan::read_data`]). At most 3/4 of
/// the 2 MiB receive window libssh2 gives a channel, so `libssh2_channel_read_ex` never
/// takes its other path (a forced adjustment by the read length).
pub(crate) const READ_LEN: usize = 64 * 1024;

/// A buffer for [`Chan::read_data`].
pub(crate) type ReadBuf = Box<[u8; READ_LEN]>;

pub(crate) fn read_buf() -> ReadBuf {
    Box::new([0; READ_LEN])
}

/// Longest single sleep: the safety net for a doorbell that was not rung (input that arrived
/// between our check and libssh2's read) and how often loops notice a stop request.
const POLL_CAP: Duration = Duration::from_millis(250);

/// Errors after which the transport is gone (socket, protocol, crypto), as opposed to errors
/// of one channel (a refused forward, a closed channel).
fn is_fatal(code: i32) -> bool {
    matches!(
        code,
        -2 | -3 | -4 | -5 | -7 | -8 | -9 | -12 | -13 | -14 | -30 | -43 | -44 | -45
    )
}

/// libssh2's terse message, with what it means for the common transport failures.
fn describe(code: i32, msg: &str) -> String {
    let meaning = match code {
        -43 | -13 => "the server or the network closed the connection",
        -7 => "sending on the connection failed",
        -4 | -12 => "the data received was corrupted",
        -9 | -30 => "the connection timed out",
        _ => "",
    };
    if meaning.is_empty() {
        format!("{msg} [libssh2 error {code}]")
    } else {
        format!("{meaning}: {msg} [libssh2 error {code}]")
    }
}

/// The outcome of one non-blocking call.
pub(crate) enum Step<T> {
    Ready(T),
    /// Would block; wait for these socket directions.
    Again(Dirs),
}

/// Socket directions libssh2 is waiting for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Dirs {
    pub read: bool,
    pub write: bool,
}

impl Dirs {
    pub fn or(self, other: Dirs) -> Dirs {
        Dirs {
            read: self.read || other.read,
            write: self.write || other.write,
        }
    }
}

pub(crate) struct Conn {
    /// The host's name in the topology.
    pub host: String,
    /// `user@address:port`, for messages.
    pub dest: String,
    sess: Session,
    fd: RawFd,
    /// Serialises every libssh2 call with the bookkeeping around it (pending-input check,
    /// block directions, last error), which must see the same session state as the call.
    op_lock: Mutex<()>,
    /// libssh2 keeps the state of a channel being opened in the session, not the channel: two
    /// threads opening channels at once would get each other's channel.
    open_lock: Mutex<()>,
    bells: Mutex<Vec<(u64, Arc<UnixStream>)>>,
    next_bell: AtomicU64,
    /// Some call was refused because the socket (or another thread's half-sent packet) blocked
    /// sending.
    out_blocked: AtomicBool,
    broken: Mutex<Option<String>>,
    /// Why the jump-host tunnel under this session ended, if it did.
    pub link_error: Option<Arc<Mutex<Option<String>>>>,
    /// Keeps the jump-host tunnel running; dropped (stopped) after the session.
    pub link: Option<Box<dyn Send + Sync>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding one of these locks leaves plain data behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Conn {
    /// Wrap an authenticated session; switches it to non-blocking mode.
    pub fn new(host: &str, dest: String, sess: Session, fd: RawFd) -> Conn {
        sess.set_blocking(false);
        sess.set_timeout(0);
        Conn {
            host: host.to_string(),
            dest,
            sess,
            fd,
            op_lock: Mutex::new(()),
            open_lock: Mutex::new(()),
            bells: Mutex::new(Vec::new()),
            next_bell: AtomicU64::new(1),
            out_blocked: AtomicBool::new(false),
            broken: Mutex::new(None),
            link_error: None,
            link: None,
        }
    }

    /// The message every user of a dead connection gets.
    pub fn lost_error(&self) -> Option<String> {
        let detail = lock(&self.broken).clone()?;
        let via = self
            .link_error
            .as_ref()
            .and_then(|l| lock(l).clone())
            .map(|e| format!("; jump host tunnel: {e}"))
            .unwrap_or_default();
        Some(format!(
            "{}: SSH connection to {} lost ({detail}{via})",
            self.host, self.dest
        ))
    }

    pub fn check_alive(&self) -> Result<()> {
        match self.lost_error() {
            Some(m) => Err(anyhow!(m)),
            None => Ok(()),
        }
    }

    /// Declare the connection dead and wake every thread sleeping on its socket.
    pub fn mark_broken(&self, detail: &str) {
        {
            let mut b = lock(&self.broken);
            if b.is_none() {
                *b = Some(detail.to_string());
            }
        }
        // SAFETY: shutdown on a descriptor the session owns; it stays open until the session
        // is dropped, which cannot happen while `self` is borrowed.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
        self.ring(0);
    }

    fn pending_input(&self) -> bool {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int.
        let rc = unsafe { libc::ioctl(self.fd, libc::FIONREAD, &mut n) };
        rc == 0 && n > 0
    }

    fn ring(&self, except: u64) {
        for (id, bell) in lock(&self.bells).iter() {
            if *id != except {
                // A full doorbell is already rung.
                let _ = (&**bell).write(&[1]);
            }
        }
    }

    /// Run one libssh2 call that reports errors as `ssh2::Error`.
    pub fn op<T>(
        &self,
        me: u64,
        what: &str,
        f: impl FnOnce(&Session) -> Result<T, ssh2::Error>,
    ) -> Result<Step<T>> {
        self.run_op(me, what, |s| {
            f(s).map_err(|e| match e.code() {
                ErrorCode::Session(c) => (c, e.message().to_string()),
                ErrorCode::SFTP(c) => (c, e.message().to_string()),
            })
        })
    }

    /// Run one channel read or write (`std::io` errors; the libssh2 code comes from the
    /// session's last error, read under the same lock).
    pub fn op_io<T>(
        &self,
        me: u64,
        what: &str,
        f: impl FnOnce() -> io::Result<T>,
    ) -> Result<Step<T>> {
        self.run_op(me, what, |s| match f() {
            Ok(v) => Ok(v),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err((EAGAIN, String::new())),
            Err(e) => {
                let code = ssh2::Error::last_session_error(s)
                    .and_then(|le| match le.code() {
                        ErrorCode::Session(c) => Some(c),
                        ErrorCode::SFTP(_) => None,
                    })
                    .unwrap_or(-1);
                Err((code, e.to_string()))
            }
        })
    }

    fn run_op<T>(
        &self,
        me: u64,
        what: &str,
        f: impl FnOnce(&Session) -> Result<T, (i32, String)>,
    ) -> Result<Step<T>> {
        self.check_alive()?;
        let guard = lock(&self.op_lock);
        let had_input = self.pending_input();
        let res = f(&self.sess);
        let dirs = match &res {
            Err((EAGAIN, _)) => match self.sess.block_directions() {
                BlockDirections::Inbound => Dirs {
                    read: true,
                    write: false,
                },
                BlockDirections::Outbound => Dirs {
                    read: false,
                    write: true,
                },
                BlockDirections::Both => Dirs {
                    read: true,
                    write: true,
                },
                BlockDirections::None => Dirs {
                    read: true,
                    write: false,
                },
            },
            _ => Dirs::default(),
        };
        // A finished send may unblock threads that were refused while another thread's packet
        // was half sent; wake them only then, not on every success (that would wake every idle
        // forward for each block a busy stream moves).
        let unblocked = match &res {
            Ok(_) => self.out_blocked.swap(false, Ordering::Relaxed),
            Err((EAGAIN, _)) => {
                if dirs.write {
                    self.out_blocked.store(true, Ordering::Relaxed);
                }
                false
            }
            Err(_) => false,
        };
        drop(guard);
        if had_input || unblocked {
            self.ring(me);
        }
        match res {
            Ok(v) => Ok(Step::Ready(v)),
            Err((EAGAIN, _)) => Ok(Step::Again(dirs)),
            Err((code, msg)) if is_fatal(code) => {
                self.mark_broken(&format!("{what}: {}", describe(code, &msg)));
                match self.lost_error() {
                    Some(m) => Err(anyhow!(m)),
                    None => Err(anyhow!("{}: {what}: {msg}", self.host)),
                }
            }
            Err((_, msg)) => Err(anyhow!(ChannelError(format!(
                "{}: {what}: {msg}",
                self.host
            )))),
        }
    }

    /// Open a channel (direct-tcpip), waiting until `deadline`.
    pub fn open_channel(
        self: &Arc<Self>,
        what: &str,
        deadline: Instant,
        f: impl Fn(&Session) -> Result<Channel, ssh2::Error>,
    ) -> Result<Chan> {
        let _g = lock(&self.open_lock);
        self.open_locked(what, deadline, f)
    }

    /// Open a session channel and start `command` on it. The exec request is made under the
    /// open lock too: libssh2 waits for its reply by packet type, and takes another channel's
    /// "success" for a failure of its own, so only one such request may be in flight.
    ///
    /// A server at its limit of sessions per connection (OpenSSH `MaxSessions`, 10 by default)
    /// refuses new ones until a running command ends, so a refusal is retried until `deadline`.
    pub fn open_exec(self: &Arc<Self>, command: &str, deadline: Instant) -> Result<Chan> {
        let mut backoff = Duration::from_millis(20);
        let (_g, mut chan) = loop {
            let g = lock(&self.open_lock);
            match self.open_locked("opening a channel", deadline, |s| s.channel_session()) {
                Ok(c) => break (g, c),
                Err(e) if e.is::<ChannelError>() => {
                    drop(g);
                    if Instant::now() + backoff >= deadline {
                        bail!(
                            "{e:#}; the server keeps refusing new sessions (too many commands at \
                             once for its MaxSessions?)"
                        );
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        };
        let mut w = Waiter::new(self)?;
        loop {
            let ch = &mut *chan;
            match self.op(w.id, "starting a command", |_| ch.exec(command))? {
                Step::Ready(()) => return Ok(chan),
                Step::Again(d) => {
                    if !w.wait(d, &[], Some(deadline))? {
                        // Its late reply could be taken for another command's.
                        self.mark_broken("starting a command: no answer from the server");
                        bail!(
                            "{}: the SSH server did not start a command in time",
                            self.host
                        );
                    }
                }
            }
        }
    }

    fn open_locked(
        self: &Arc<Self>,
        what: &str,
        deadline: Instant,
        f: impl Fn(&Session) -> Result<Channel, ssh2::Error>,
    ) -> Result<Chan> {
        let mut w = Waiter::new(self)?;
        loop {
            match self.op(w.id, what, &f)? {
                Step::Ready(c) => {
                    return Ok(Chan {
                        ch: ManuallyDrop::new(c),
                        conn: Arc::clone(self),
                        pending: Vec::new(),
                        closed: false,
                    })
                }
                Step::Again(d) => {
                    if !w.wait(d, &[], Some(deadline))? {
                        // libssh2 would resume this half-open channel on the next open, whatever
                        // its kind: the session cannot be trusted any more.
                        self.mark_broken(&format!("{what}: no answer from the server"));
                        bail!(
                            "{}: {what}: the SSH server did not answer in time",
                            self.host
                        );
                    }
                }
            }
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Free the session in bounded blocking mode: in non-blocking mode libssh2 gives up on
        // freeing channels that would block and leaks them.
        self.sess.set_timeout(2000);
        self.sess.set_blocking(true);
        if lock(&self.broken).is_none() {
            let _ = self.sess.disconnect(None, "repltool done", None);
        }
    }
}

/// A channel that is closed and freed safely on a shared session.
///
/// ssh2 frees a channel in `Drop` without taking its session lock, and libssh2 then edits
/// session-wide lists and may send a close: done while another thread is inside libssh2, that
/// corrupts the session. And libssh2 requires a packet it could only partly send to be sent
/// again by the same call before any other packet: a write abandoned half-way (timeout, stop)
/// would block every other channel for good, so the last unfinished write is kept and
/// finished before the channel is closed.
pub(crate) struct Chan {
    ch: ManuallyDrop<Channel>,
    conn: Arc<Conn>,
    pending: Vec<u8>,
    closed: bool,
}

impl Deref for Chan {
    type Target = Channel;
    fn deref(&self) -> &Channel {
        &self.ch
    }
}

impl DerefMut for Chan {
    fn deref_mut(&mut self) -> &mut Channel {
        &mut self.ch
    }
}

impl Chan {
    /// Read what has arrived on `stream` (0: stdout or a forward's data, 1: stderr) into
    /// `buf`: every read of a channel asks libssh2 for exactly [`READ_LEN`] bytes.
    ///
    /// Why the length must never vary: a read first tops up the receive window when it is
    /// low, by `2 MiB + length - window`. When that WINDOW_ADJUST cannot be sent yet (a key
    /// re-exchange is running, as OpenSSH starts one every 1 GiB with chacha20-poly1305, or
    /// another channel's packet is half sent), the read says "would block" and libssh2 keeps
    /// the packet; the next read of the channel sends it but adds to its own count of the
    /// window the adjustment recomputed from *its* length (channel.c in libssh2-sys's libssh2:
    /// `ssh2_channel_read`, `ssh2_channel_receive_window_adjust`). A 16 KiB stderr
    /// read after a 256 KiB stdout read left libssh2 counting 240 KiB less window than the
    /// server had been granted, again at every such re-exchange; once the reader fell behind,
    /// the server filled the window it had been given and libssh2 dropped whatever went past
    /// its own count ("the current receive window is full, data ignored"): bytes missing from
    /// the middle of a stream, and no error. When the short read's recomputed amount is
    /// negative (a 1 MiB read's adjustment retried by a short one) it wraps and libssh2 kills
    /// the connection ("Window adjust out of bounds"); a long read after a short one counts
    /// window the server never got, and the stream can stall. With one length the recomputed
    /// adjustment is the one that was sent.
    pub fn read_data(
        &self,
        me: u64,
        what: &str,
        stream: i32,
        buf: &mut [u8; READ_LEN],
    ) -> Result<Step<usize>> {
        let mut s = self.ch.stream(stream);
        self.conn.op_io(me, what, || s.read(buf))
    }

    /// Write (part of) `data` to the channel's stdin/stream 0.
    ///
    /// After "would block", the next write of the channel must offer the same bytes again:
    /// libssh2 keeps the packet's length from this call and may take its payload from the
    /// next one (every caller retries with the same slice, [`Chan::close`] with `pending`).
    pub fn write_data(&mut self, me: u64, what: &str, data: &[u8]) -> Result<Step<usize>> {
        let conn = Arc::clone(&self.conn);
        let ch = &mut *self.ch;
        let r = conn.op_io(me, what, || ch.write(data));
        match &r {
            Ok(Step::Again(_)) => {
                if self.pending.as_slice() != data {
                    self.pending.clear();
                    self.pending.extend_from_slice(data);
                }
            }
            _ => self.pending.clear(),
        }
        r
    }

    /// Finish an interrupted write, then close politely, all within `limit`.
    pub fn close(&mut self, limit: Duration) {
        if self.closed || self.conn.check_alive().is_err() {
            return;
        }
        let conn = Arc::clone(&self.conn);
        let Ok(mut w) = Waiter::new(&conn) else {
            return;
        };
        let deadline = Instant::now() + limit;
        while !self.pending.is_empty() {
            let data = std::mem::take(&mut self.pending);
            match self.write_data(w.id, "finishing a write", &data) {
                Ok(Step::Ready(_)) => break,
                Ok(Step::Again(d)) => match w.wait(d, &[], Some(deadline)) {
                    Ok(true) => {}
                    _ => return,
                },
                Err(_) => break,
            }
        }
        loop {
            let ch = &mut *self.ch;
            match conn.op(w.id, "closing a channel", |_| ch.close()) {
                Ok(Step::Ready(())) | Err(_) => {
                    self.closed = true;
                    return;
                }
                Ok(Step::Again(d)) => match w.wait(d, &[], Some(deadline)) {
                    Ok(true) => {}
                    _ => return,
                },
            }
        }
    }

    /// The command or the forward ended and the channel closed by itself.
    pub fn mark_closed(&mut self) {
        self.closed = true;
        self.pending.clear();
    }
}

impl Drop for Chan {
    fn drop(&mut self) {
        let conn = Arc::clone(&self.conn);
        // Holding the op lock keeps every other thread out of libssh2 (all calls go through
        // `op`), so the session can block briefly while libssh2 frees (and if need be closes)
        // the channel, instead of giving up half-way as it does in non-blocking mode.
        let _op = lock(&conn.op_lock);
        let blocking = !self.closed && lock(&conn.broken).is_none();
        if blocking {
            conn.sess.set_timeout(2000);
            conn.sess.set_blocking(true);
        }
        {
            let _session = conn.sess.raw();
            // SAFETY: dropped exactly once, here; the field is never used again.
            unsafe { ManuallyDrop::drop(&mut self.ch) }
        }
        if blocking {
            conn.sess.set_blocking(false);
            conn.sess.set_timeout(0);
        }
    }
}

/// A failure of one channel; the connection itself is fine.
#[derive(Debug)]
pub(crate) struct ChannelError(pub String);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChannelError {}

/// One thread's way to sleep until the session may make progress.
pub(crate) struct Waiter {
    conn: Arc<Conn>,
    pub id: u64,
    bell: Arc<UnixStream>,
    hups: u32,
}

impl Waiter {
    pub fn new(conn: &Arc<Conn>) -> Result<Waiter> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        writer.set_nonblocking(true)?;
        let id = conn.next_bell.fetch_add(1, Ordering::Relaxed);
        lock(&conn.bells).push((id, Arc::new(writer)));
        Ok(Waiter {
            conn: Arc::clone(conn),
            id,
            bell: Arc::new(reader),
            hups: 0,
        })
    }

    pub fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }

    /// Sleep until the SSH socket is ready in `dirs`, another thread made progress, one of
    /// `extra` is ready, or `deadline` passes (returns `Ok(false)` then). Returns early at
    /// least every [`POLL_CAP`], so callers re-check their own stop conditions.
    pub fn wait(
        &mut self,
        dirs: Dirs,
        extra: &[(RawFd, i16)],
        deadline: Option<Instant>,
    ) -> Result<bool> {
        self.conn.check_alive()?;
        let now = Instant::now();
        let mut timeout = POLL_CAP;
        if let Some(d) = deadline {
            if now >= d {
                return Ok(false);
            }
            timeout = timeout.min(d - now);
        }
        let mut events = 0;
        if dirs.read || !dirs.write {
            events |= libc::POLLIN;
        }
        if dirs.write {
            events |= libc::POLLOUT;
        }
        let mut fds = Vec::with_capacity(2 + extra.len());
        fds.push(libc::pollfd {
            fd: self.conn.fd,
            events,
            revents: 0,
        });
        fds.push(libc::pollfd {
            fd: self.bell.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for &(fd, ev) in extra {
            fds.push(libc::pollfd {
                fd,
                events: ev,
                revents: 0,
            });
        }
        let ms = timeout.as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                bail!("{}: waiting on the SSH socket: {e}", self.conn.host);
            }
        }
        if fds[1].revents != 0 {
            let mut sink = [0u8; 64];
            while matches!((&*self.bell).read(&mut sink), Ok(n) if n > 0) {}
        }
        // A hung-up socket normally makes the next libssh2 call fail; if libssh2 keeps
        // answering "would block" without touching it, do not spin forever.
        if fds[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            self.hups += 1;
            if self.hups > 20 {
                self.conn.mark_broken("the connection was closed");
                self.conn.check_alive()?;
            }
        } else {
            self.hups = 0;
        }
        Ok(true)
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        lock(&self.conn.bells).retain(|(id, _)| *id != self.id);
    }
}
