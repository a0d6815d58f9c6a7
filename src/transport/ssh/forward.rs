//! Byte pumps between a local socket and an SSH channel: the SQL port-forward (a local listener
//! whose connections each get a direct-tcpip channel) and the jump-host tunnel (a socketpair
//! whose other end carries the target's SSH session).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::conn::{Chan, ChannelError, Conn, Dirs, Step, Waiter};

const CHUNK: usize = 32 * 1024;
/// Forwarded connections open at once per port; more are closed on accept.
const MAX_ACTIVE: usize = 64;

/// The local end of a pump.
pub(crate) trait LocalEnd: Read + Write + AsRawFd {
    fn shutdown_write(&self);
}

impl LocalEnd for TcpStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

impl LocalEnd for UnixStream {
    fn shutdown_write(&self) {
        let _ = self.shutdown(Shutdown::Write);
    }
}

/// Copy both ways between `local` (non-blocking) and `chan` until both sides have ended, the
/// channel fails, or `stop` is set. Closes the channel at the end.
pub(crate) fn pump<L: LocalEnd>(
    w: &mut Waiter,
    chan: &mut Chan,
    local: &mut L,
    stop: &AtomicBool,
) -> Result<()> {
    let conn = Arc::clone(w.conn());
    let res = pump_inner(w, &conn, chan, local, stop);
    chan.close(Duration::from_secs(5));
    res
}

fn pump_inner<L: LocalEnd>(
    w: &mut Waiter,
    conn: &Arc<Conn>,
    chan: &mut Chan,
    local: &mut L,
    stop: &AtomicBool,
) -> Result<()> {
    let (mut up, mut up_off) = (Vec::with_capacity(CHUNK), 0usize);
    let (mut down, mut down_off) = (Vec::with_capacity(CHUNK), 0usize);
    let (mut local_eof, mut remote_eof, mut eof_sent, mut local_shut) =
        (false, false, false, false);
    let mut buf = vec![0u8; CHUNK];
    let id = w.id;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let mut progress = false;
        let mut dirs = Dirs::default();
        let mut local_events: i16 = 0;

        if up_off == up.len() && !local_eof {
            up.clear();
            up_off = 0;
            match local.read(&mut buf) {
                Ok(0) => {
                    local_eof = true;
                    progress = true;
                }
                Ok(n) => {
                    up.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => local_events |= libc::POLLIN,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                // Reset by the local client: nothing more can be delivered either way.
                Err(_) => return Ok(()),
            }
        }
        if up_off < up.len() {
            match chan.write_data(id, "forwarding data", &up[up_off..]) {
                Ok(Step::Ready(n)) => {
                    up_off += n;
                    progress |= n > 0;
                }
                Ok(Step::Again(d)) => dirs = dirs.or(d),
                // The far end is gone; nothing more can be delivered.
                Err(e) if e.is::<ChannelError>() => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if local_eof && up_off == up.len() && !eof_sent {
            match conn.op(id, "forwarding end of data", |_| chan.send_eof()) {
                Ok(Step::Ready(())) => {
                    eof_sent = true;
                    progress = true;
                }
                Ok(Step::Again(d)) => dirs = dirs.or(d),
                Err(e) if e.is::<ChannelError>() => eof_sent = true,
                Err(e) => return Err(e),
            }
        }

        if down_off == down.len() && !remote_eof {
            down.clear();
            down_off = 0;
            match conn.op_io(id, "forwarding data", || chan.read(&mut buf)) {
                Ok(Step::Ready(0)) => {
                    if chan.eof() {
                        remote_eof = true;
                        progress = true;
                    } else {
                        dirs.read = true;
                    }
                }
                Ok(Step::Ready(n)) => {
                    down.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Ok(Step::Again(d)) => dirs = dirs.or(d),
                Err(e) if e.is::<ChannelError>() => remote_eof = true,
                Err(e) => return Err(e),
            }
        }
        if down_off < down.len() {
            match local.write(&down[down_off..]) {
                Ok(n) => {
                    down_off += n;
                    progress |= n > 0;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => local_events |= libc::POLLOUT,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                // The local client went away.
                Err(_) => return Ok(()),
            }
        }
        if remote_eof && down_off == down.len() && !local_shut {
            local.shutdown_write();
            local_shut = true;
            progress = true;
        }
        if remote_eof && local_shut && eof_sent {
            return Ok(());
        }
        if !progress {
            // Only watch the local socket for what we want from it: a hung-up socket we no
            // longer read would otherwise wake poll(2) at once, forever.
            if local_events == 0 {
                w.wait(dirs, &[], None)?;
            } else {
                w.wait(dirs, &[(local.as_raw_fd(), local_events)], None)?;
            }
        }
    }
}

/// Wait for `fd` to become readable, at most `timeout`.
fn poll_in(fd: RawFd, timeout: Duration) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe {
        libc::poll(&mut p, 1, timeout.as_millis() as libc::c_int);
    }
}

/// A local listener forwarding each connection to a port on the host.
pub(crate) struct Forward {
    pub local_port: u16,
    stop: Arc<AtomicBool>,
    /// The last reason a forwarded connection could not be set up or ended badly.
    pub last_error: Arc<Mutex<Option<String>>>,
}

impl Forward {
    pub fn start(conn: &Arc<Conn>, remote_port: u16) -> Result<Forward> {
        let listener = TcpListener::bind("127.0.0.1:0").with_context(|| {
            format!(
                "{}: cannot open a local port for the SQL forward",
                conn.host
            )
        })?;
        listener.set_nonblocking(true)?;
        let local_port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let last_error = Arc::new(Mutex::new(None));
        let (c, s, e) = (Arc::clone(conn), Arc::clone(&stop), Arc::clone(&last_error));
        thread::Builder::new()
            .name(format!("ssh-forward-{remote_port}"))
            .spawn(move || accept_loop(c, listener, remote_port, local_port, s, e))
            .context("cannot start the SQL forward thread")?;
        Ok(Forward {
            local_port,
            stop,
            last_error,
        })
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn accept_loop(
    conn: Arc<Conn>,
    listener: TcpListener,
    remote_port: u16,
    local_port: u16,
    stop: Arc<AtomicBool>,
    last_error: Arc<Mutex<Option<String>>>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        poll_in(listener.as_raw_fd(), Duration::from_millis(250));
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(_) => {
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if active.load(Ordering::Relaxed) >= MAX_ACTIVE {
            continue;
        }
        active.fetch_add(1, Ordering::Relaxed);
        let (c, s, e, a) = (
            Arc::clone(&conn),
            Arc::clone(&stop),
            Arc::clone(&last_error),
            Arc::clone(&active),
        );
        let spawned = thread::Builder::new()
            .name(format!("ssh-forward-{remote_port}-conn"))
            .spawn(move || {
                if let Err(err) = forward_one(&c, stream, remote_port, local_port, &s) {
                    *e.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{err:#}"));
                }
                a.fetch_sub(1, Ordering::Relaxed);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn forward_one(
    conn: &Arc<Conn>,
    mut stream: TcpStream,
    remote_port: u16,
    local_port: u16,
    stop: &AtomicBool,
) -> Result<()> {
    stream.set_nonblocking(true)?;
    let _ = stream.set_nodelay(true);
    let what = format!("forwarding to port {remote_port} on the host");
    let mut chan = conn.open_channel(&what, Instant::now() + Duration::from_secs(15), |s| {
        s.channel_direct_tcpip("127.0.0.1", remote_port, Some(("127.0.0.1", local_port)))
    })?;
    let mut w = Waiter::new(conn)?;
    pump(&mut w, &mut chan, &mut stream, stop)
}

/// The pump under a jump-host tunnel; stops when dropped.
pub(crate) struct Tunnel {
    stop: Arc<AtomicBool>,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Carry `local` (one end of a socketpair) over `chan` in a thread. When the tunnel ends, its
/// reason goes to `error` and `local` is closed, so the session above sees the end at once.
pub(crate) fn start_tunnel(
    jump: Arc<Conn>,
    mut chan: Chan,
    mut local: UnixStream,
    error: Arc<Mutex<Option<String>>>,
) -> Result<Tunnel> {
    local.set_nonblocking(true)?;
    let stop = Arc::new(AtomicBool::new(false));
    let s = Arc::clone(&stop);
    thread::Builder::new()
        .name("ssh-jump-tunnel".into())
        .spawn(move || {
            let res = Waiter::new(&jump).and_then(|mut w| pump(&mut w, &mut chan, &mut local, &s));
            let why = match res {
                Ok(()) => format!("{} closed the tunnel", jump.host),
                Err(e) => format!("{e:#}"),
            };
            *error.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
            let _ = local.shutdown(Shutdown::Both);
            drop(chan);
        })
        .context("cannot start the jump host tunnel thread")?;
    Ok(Tunnel { stop })
}
