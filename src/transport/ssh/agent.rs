//! A deadline for ssh-agent. libssh2 talks to the agent with blocking reads and no timeout of
//! its own, so an agent that accepts and never answers (hung, or waiting for a confirmation no
//! one will give) would stop the connect forever, whatever `--timeout` says. libssh2 is pointed
//! at a private socket of ours instead; a thread relays to the real agent and, when the
//! deadline passes, closes both ends, which turns libssh2's wait into an error.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The relay; stopped and its socket removed when dropped.
pub(crate) struct AgentProxy {
    path: PathBuf,
    _dir: tempfile::TempDir,
    stop: Arc<AtomicBool>,
    timed_out: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl AgentProxy {
    /// Listen on a socket in a new private directory, relaying to the agent at `agent` until
    /// `deadline`.
    /// Fails when the agent cannot be reached by then.
    pub fn start(agent: &Path, deadline: Instant) -> io::Result<AgentProxy> {
        let stop = Arc::new(AtomicBool::new(false));
        let first = connect_until(agent, deadline, &stop)?;
        // A directory of mode 0700 from its creation: nobody else can reach the socket in it.
        let dir = tempfile::Builder::new()
            .prefix("repltool-agent-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()?;
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let timed_out = Arc::new(AtomicBool::new(false));
        let (s, t, real) = (
            Arc::clone(&stop),
            Arc::clone(&timed_out),
            agent.to_path_buf(),
        );
        let thread = std::thread::Builder::new()
            .name("ssh-agent-relay".into())
            .spawn(move || relay(listener, Some(first), &real, deadline, &s, &t))?;
        Ok(AgentProxy {
            path,
            _dir: dir,
            stop,
            timed_out,
            thread: Some(thread),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The deadline passed with an agent request unanswered (or the agent never accepted).
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Wait until `fds` are ready or 100 ms pass (so the loop sees `stop` and the deadline).
fn poll(fds: &mut [libc::pollfd], deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    let ms = left.min(Duration::from_millis(100)).as_millis().max(1) as libc::c_int;
    // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms);
    }
}

/// Connect to a Unix socket without blocking past `deadline`: a blocking connect to an agent
/// whose accept queue is full would wait forever.
fn connect_until(path: &Path, deadline: Instant, stop: &AtomicBool) -> io::Result<UnixStream> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: zeroed sockaddr_un is a valid value; the path is copied in bounds below.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "SSH_AUTH_SOCK is too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    loop {
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe {
            libc::socket(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: `addr` is a valid sockaddr_un of the given size.
        let rc = unsafe {
            libc::connect(
                fd,
                &addr as *const libc::sockaddr_un as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return Ok(UnixStream::from(owned));
        }
        let e = io::Error::last_os_error();
        // A full accept queue: EAGAIN at once on a Unix socket; try again until the deadline.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
        if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn relay(
    listener: UnixListener,
    mut first: Option<UnixStream>,
    agent: &Path,
    deadline: Instant,
    stop: &AtomicBool,
    timed_out: &AtomicBool,
) {
    // libssh2 opens one connection per `Agent::connect`; serve them one after another.
    while !stop.load(Ordering::Relaxed) {
        if Instant::now() >= deadline {
            timed_out.store(true, Ordering::Relaxed);
            return;
        }
        let mut fds = [libc::pollfd {
            fd: listener.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        poll(&mut fds, deadline);
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(_) => continue,
        };
        let upstream = match first
            .take()
            .map_or_else(|| connect_until(agent, deadline, stop), Ok)
        {
            Ok(u) => u,
            Err(e) => {
                if e.kind() == io::ErrorKind::TimedOut {
                    timed_out.store(true, Ordering::Relaxed);
                }
                // Closing the client makes libssh2 report a failed agent at once.
                continue;
            }
        };
        pump(client, upstream, deadline, stop, timed_out);
    }
}

/// Copy both ways until either side closes, or the deadline (then `timed_out` is set before
/// both ends are closed).
fn pump(
    client: UnixStream,
    upstream: UnixStream,
    deadline: Instant,
    stop: &AtomicBool,
    timed_out: &AtomicBool,
) {
    if client.set_nonblocking(true).is_err() || upstream.set_nonblocking(true).is_err() {
        return;
    }
    let ends = [client, upstream];
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut buf = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if Instant::now() >= deadline {
            timed_out.store(true, Ordering::Relaxed);
            for e in &ends {
                let _ = e.shutdown(std::net::Shutdown::Both);
            }
            return;
        }
        let mut fds: Vec<libc::pollfd> = ends
            .iter()
            .enumerate()
            .map(|(i, e)| libc::pollfd {
                fd: e.as_raw_fd(),
                // Read from a side only when what it sent before has been passed on.
                events: if pending[1 - i].is_empty() {
                    libc::POLLIN
                } else {
                    0
                } | if pending[i].is_empty() {
                    0
                } else {
                    libc::POLLOUT
                },
                revents: 0,
            })
            .collect();
        poll(&mut fds, deadline);
        for i in 0..2 {
            let (from, to) = (i, 1 - i);
            if pending[to].is_empty() {
                match (&ends[from]).read(&mut buf) {
                    Ok(0) => return,
                    Ok(n) => pending[to].extend_from_slice(&buf[..n]),
                    Err(e) if would_block(&e) => {}
                    Err(_) => return,
                }
            }
            if !pending[to].is_empty() {
                match (&ends[to]).write(&pending[to]) {
                    Ok(n) => {
                        pending[to].drain(..n);
                    }
                    Err(e) if would_block(&e) => {}
                    Err(_) => return,
                }
            }
        }
    }
}

fn would_block(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sock");
        let l = UnixListener::bind(&real).unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut b = [0u8; 4];
            c.read_exact(&mut b).unwrap();
            c.write_all(b"pong").unwrap();
        });
        let p = AgentProxy::start(&real, Instant::now() + Duration::from_secs(10)).unwrap();
        let mut c = UnixStream::connect(p.path()).unwrap();
        c.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pong");
        server.join().unwrap();
        assert!(!p.timed_out());
    }

    #[test]
    fn a_silent_agent_is_cut_off_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sock");
        let l = UnixListener::bind(&real).unwrap();
        // Accepts and never answers.
        let _hold = std::thread::spawn(move || {
            let c = l.accept();
            std::thread::sleep(Duration::from_secs(5));
            drop(c);
        });
        let t = Instant::now();
        let p = AgentProxy::start(&real, t + Duration::from_millis(500)).unwrap();
        let mut c = UnixStream::connect(p.path()).unwrap();
        c.write_all(b"request").unwrap();
        let mut b = [0u8; 4];
        // A blocking read, as libssh2 does: it must end with the deadline.
        let n = c.read(&mut b).unwrap_or(0);
        assert_eq!(n, 0);
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(p.timed_out());
    }

    #[test]
    fn the_socket_is_private_and_a_missing_agent_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        assert!(AgentProxy::start(
            Path::new("/nonexistent/agent.sock"),
            Instant::now() + Duration::from_secs(1),
        )
        .is_err());
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.sock");
        let _l = UnixListener::bind(&real).unwrap();
        let p = AgentProxy::start(&real, Instant::now() + Duration::from_secs(1)).unwrap();
        let dir = p.path().parent().unwrap();
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
