//! Byte pumps between a local socket and an SSH channel: the SQL port-forward (a local listener
//! whose connections each get a direct-tcpip channel, served only when the connecting socket
//! belongs to the user running repltool) and the jump-host tunnel (a socketpair whose other end
//! carries the target's SSH session).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::conn::{read_buf, Chan, ChannelError, Conn, Dirs, Step, Waiter};

const CHUNK: usize = 32 * 1024;
/// Forwarded connections open at once per port; more wait for a free slot. Only the user
/// running repltool gets this far (see [`SocketTables`]), so nobody else can take the slots.
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
    let mut chan_buf = read_buf();
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
            match chan.read_data(id, "forwarding data", 0, &mut chan_buf) {
                Ok(Step::Ready(0)) => {
                    if chan.eof() {
                        remote_eof = true;
                        progress = true;
                    } else {
                        dirs.read = true;
                    }
                }
                Ok(Step::Ready(n)) => {
                    down.extend_from_slice(&chan_buf[..n]);
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

/// Who owns the socket at the other end of a connection accepted on 127.0.0.1, from the
/// kernel's socket tables (/proc/net/tcp and tcp6): the row whose local address is the peer and
/// whose remote address is our end. TCP itself carries no credentials, and any local user can
/// connect to a loopback port; the forward must serve only the user running repltool, whose
/// SSH identity it spends.
pub(crate) struct SocketTables {
    text: String,
}

impl SocketTables {
    pub fn read() -> std::io::Result<SocketTables> {
        let mut text = std::fs::read_to_string("/proc/net/tcp")?;
        // IPv6 sockets connecting to 127.0.0.1 (v4-mapped) are listed there; absent without
        // IPv6, which is fine.
        if let Ok(t6) = std::fs::read_to_string("/proc/net/tcp6") {
            text.push_str(&t6);
        }
        Ok(SocketTables { text })
    }

    #[cfg(test)]
    fn from_text(text: &str) -> SocketTables {
        SocketTables {
            text: text.to_string(),
        }
    }

    /// The uid owning the live socket at `peer` connected to `ours`; None when there is no
    /// such socket or it is orphaned (closed by its process: inode 0, no owner to trust).
    pub fn owner(&self, ours: SocketAddr, peer: SocketAddr) -> Option<u32> {
        let (want_local, want_remote) = match (peer, ours) {
            (SocketAddr::V4(p), SocketAddr::V4(o)) => (
                [hex_v4(p.ip(), p.port()), hex_v4_mapped(p.ip(), p.port())],
                [hex_v4(o.ip(), o.port()), hex_v4_mapped(o.ip(), o.port())],
            ),
            _ => return None,
        };
        for line in self.text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
            if f.len() < 10 {
                continue;
            }
            let (local, remote) = (f[1], f[2]);
            let matches =
                |a: &str, set: &[String; 2]| set.iter().any(|s| s.eq_ignore_ascii_case(a));
            if !matches(local, &want_local) || !matches(remote, &want_remote) {
                continue;
            }
            let inode: u64 = f[9].parse().ok()?;
            if inode == 0 {
                return None;
            }
            return f[7].parse().ok();
        }
        None
    }
}

/// `0100007F:1F90`: the kernel prints the address as the u32 in memory order, in hex.
fn hex_v4(ip: &std::net::Ipv4Addr, port: u16) -> String {
    format!("{:08X}:{port:04X}", u32::from_ne_bytes(ip.octets()))
}

/// The same address as an IPv4-mapped IPv6 one, as /proc/net/tcp6 prints it.
fn hex_v4_mapped(ip: &std::net::Ipv4Addr, port: u16) -> String {
    let o = ip.to_ipv6_mapped().octets();
    let words: String = o
        .chunks(4)
        .map(|c| format!("{:08X}", u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    format!("{words}:{port:04X}")
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
    let ours = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    // Connections of the owner waiting for a slot: never dropped, only delayed.
    let mut waiting: VecDeque<TcpStream> = VecDeque::new();
    while !stop.load(Ordering::Relaxed) {
        poll_in(
            listener.as_raw_fd(),
            Duration::from_millis(if waiting.is_empty() { 250 } else { 20 }),
        );
        // Everything pending at once, then one read of the socket tables for all of it: a
        // flood of strangers' connections costs one table read per batch, not one each.
        let mut batch = Vec::new();
        while batch.len() < 512 {
            match listener.accept() {
                Ok((s, peer)) => batch.push((s, peer)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
        if !batch.is_empty() {
            match SocketTables::read() {
                Ok(tables) => {
                    for (s, peer) in batch {
                        if tables.owner(ours, peer) == Some(me) {
                            waiting.push_back(s);
                        }
                        // Anyone else, or a socket whose owner cannot be told: closed at once,
                        // before any channel is opened or any slot taken.
                    }
                }
                Err(e) => {
                    *last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!(
                        "{}: cannot tell who connected to the local SQL forward (reading \
                         /proc/net/tcp: {e}); refusing the connection",
                        conn.host
                    ));
                }
            }
        }
        while active.load(Ordering::Relaxed) < MAX_ACTIVE {
            let Some(stream) = waiting.pop_front() else {
                break;
            };
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
                break;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    // A client socket 127.0.0.1:40000 (uid 1000, inode 555) connected to our listener on
    // 127.0.0.1:8080, its accepted end (uid 0), an orphaned one on :40001 (inode 0), and a
    // v4-mapped IPv6 client on :40002 (uid 65534).
    const TABLES: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 100 1 0000000000000000 100 0 0 10 0
   1: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 555 1 0000000000000000 20 4 30 10 -1
   2: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 556 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:9C41 0100007F:1F90 08 00000000:00000000 00:00000000 00000000  1000        0 0 1 0000000000000000 20 4 30 10 -1
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0000000000000000FFFF00000100007F:9C42 0000000000000000FFFF00000100007F:1F90 01 00000000:00000000 00:00000000 00000000 65534        0 777 1 0000000000000000 20 4 30 10 -1
";

    fn a(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn the_owner_of_the_connecting_socket_is_found() {
        let t = SocketTables::from_text(TABLES);
        assert_eq!(t.owner(a(8080), a(40000)), Some(1000));
        // Orphaned (closed before we looked): no owner to trust.
        assert_eq!(t.owner(a(8080), a(40001)), None);
        assert_eq!(t.owner(a(8080), a(40002)), Some(65534));
        assert_eq!(t.owner(a(8080), a(40003)), None);
        // A socket connected elsewhere is not the peer.
        assert_eq!(t.owner(a(8081), a(40000)), None);
    }

    #[test]
    fn a_real_connection_is_owned_by_this_process_user() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
        let t = SocketTables::read().unwrap();
        // SAFETY: geteuid has no preconditions.
        assert_eq!(
            t.owner(l.local_addr().unwrap(), peer),
            Some(unsafe { libc::geteuid() })
        );
    }
}
