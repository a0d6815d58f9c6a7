//! The SSH transport (ssh2): verified host keys, key file or agent auth, optional jump host and
//! `sudo -n`, timeouts, one session per host reused for every step, and SQL through a
//! direct-tcpip port-forward.
//!
//! One libssh2 session carries everything for a host: commands, streams and forwarded SQL
//! connections run at the same time from several threads (see `conn` for how). Clones of an
//! [`SshSession`] share that session. A server refusing more sessions (OpenSSH `MaxSessions`)
//! makes new commands wait for a free one. A command that times out, or a stream dropped
//! before its end, has its remote process group killed. A dead link (server gone, reset,
//! silent network loss via TCP keepalive) fails every user of the session with a message
//! naming the host.

mod conn;
mod exec;
mod forward;
mod known_hosts;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::transport::sql::{ConnectError, Reach};
use anyhow::{anyhow, bail, Context, Result};
use ssh2::{ErrorCode, HashType, MethodType, Session};

use super::{CmdOutput, HostSession, RemoteProcess};
use crate::topology::{SqlRoute, Ssh};
use conn::Conn;
use forward::Forward;
use known_hosts::{KnownHosts, Verdict};

/// A connected, authenticated SSH session to one host. Cloning shares the connection.
#[derive(Clone)]
pub struct SshSession {
    name: String,
    address: String,
    route: SqlRoute,
    sudo: bool,
    conn: Arc<Conn>,
    forwards: Arc<Mutex<HashMap<u16, Forward>>>,
}

impl SshSession {
    pub fn connect(name: &str, address: &str, cfg: &Ssh, route: SqlRoute) -> Result<SshSession> {
        let known_hosts = KnownHosts::load(&expand_home(&cfg.known_hosts))?;
        let timeout = cfg.connect_timeout.max(Duration::from_secs(1));
        let (stream, link) = match &cfg.jump {
            None => (
                Stream::Tcp(tcp_connect(name, address, cfg.port, timeout)?),
                None,
            ),
            Some(j) => {
                let label = format!("{name} (jump host {})", j.host);
                let tcp = tcp_connect(&label, &j.host, j.port, timeout)?;
                let jump = Arc::new(establish(
                    &label,
                    &j.user,
                    &j.host,
                    j.port,
                    Stream::Tcp(tcp),
                    &known_hosts,
                    cfg,
                )?);
                let what = format!("opening a tunnel to {address}:{}", cfg.port);
                let chan = jump
                    .open_channel(&what, Instant::now() + timeout, |s| {
                        s.channel_direct_tcpip(address, cfg.port, None)
                    })
                    .map_err(|e| anyhow!("{e:#} (the jump host could not reach the target)"))?;
                let (mine, theirs) = UnixStream::pair()?;
                let error = Arc::new(Mutex::new(None));
                let tunnel = forward::start_tunnel(jump, chan, theirs, Arc::clone(&error))?;
                (Stream::Unix(mine), Some((tunnel, error)))
            }
        };
        let mut conn = establish(
            name,
            &cfg.user,
            address,
            cfg.port,
            stream,
            &known_hosts,
            cfg,
        )?;
        if let Some((tunnel, error)) = link {
            conn.link = Some(Box::new(tunnel));
            conn.link_error = Some(error);
        }
        Ok(SshSession {
            name: name.to_string(),
            address: address.to_string(),
            route,
            sudo: cfg.sudo,
            conn: Arc::new(conn),
            forwards: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    /// Why the last forwarded SQL connection to `port` failed (the SQL client only sees a
    /// closed connection), if one did.
    pub fn forward_error(&self, port: u16) -> Option<String> {
        let fwd = self.forwards.lock().unwrap_or_else(|p| p.into_inner());
        let f = fwd.get(&port)?;
        let e = f
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        e
    }
}

impl HostSession for SshSession {
    fn host_name(&self) -> &str {
        &self.name
    }
    fn endpoint_error(&self, port: u16) -> Option<String> {
        self.forward_error(port).or_else(|| self.conn.lost_error())
    }

    fn run(
        &mut self,
        script: &str,
        stdin: Option<&[u8]>,
        privileged: bool,
        timeout: Duration,
    ) -> Result<CmdOutput> {
        exec::run(&self.conn, script, stdin, privileged && self.sudo, timeout)
    }

    fn spawn(&mut self, script: &str, privileged: bool) -> Result<Box<dyn RemoteProcess>> {
        Ok(Box::new(exec::SshProcess::start(
            &self.conn,
            script,
            privileged && self.sudo,
        )?))
    }

    fn sql_connect(
        &mut self,
        host: &crate::topology::Host,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Box<dyn crate::transport::sql::SqlConn>> {
        crate::transport::sql::connect(self, host, connect_timeout, io_timeout)
    }

    fn sql_endpoint(&mut self, port: u16) -> Result<(String, u16)> {
        if self.route == SqlRoute::Direct {
            return Ok((self.address.clone(), port));
        }
        self.conn.check_alive()?;
        let mut fwd = self.forwards.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = fwd.get(&port) {
            return Ok(("127.0.0.1".into(), f.local_port));
        }
        let f = Forward::start(&self.conn, port)?;
        let local = f.local_port;
        fwd.insert(port, f);
        Ok(("127.0.0.1".into(), local))
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// `~/x` relative to `$HOME` (the topology normally expands it already).
fn expand_home(p: &Path) -> PathBuf {
    match (p.strip_prefix("~"), std::env::var_os("HOME")) {
        (Ok(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => p.to_path_buf(),
    }
}

fn resolve(label: &str, host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>> {
    // getaddrinfo has no timeout of its own; a stuck resolver leaves only this thread behind.
    let (tx, rx) = mpsc::channel();
    let target = (host.to_string(), port);
    std::thread::Builder::new()
        .name("ssh-resolve".into())
        .spawn(move || {
            let _ = tx.send(target.to_socket_addrs().map(|a| a.collect::<Vec<_>>()));
        })
        .context("cannot start a resolver thread")?;
    match rx.recv_timeout(timeout) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => bail!("{label}: {host} has no address"),
        Ok(Err(e)) => bail!("{label}: cannot resolve {host}: {e}"),
        Err(_) => bail!("{label}: resolving {host} took longer than {timeout:?}"),
    }
}

fn tcp_connect(label: &str, host: &str, port: u16, timeout: Duration) -> Result<TcpStream> {
    let mut last = None;
    for addr in resolve(label, host, port, timeout)? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                tune_socket(&s);
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    // Nothing answered (refused, timed out, no route): typed, so promote can tell a machine
    // that is down from one that answers and refuses us.
    let reach = match last.as_ref().map(|e| e.kind()) {
        Some(std::io::ErrorKind::ConnectionRefused) => Reach::Refused,
        Some(
            std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::HostUnreachable
            | std::io::ErrorKind::NetworkUnreachable,
        ) => Reach::TimedOut,
        _ => Reach::Other,
    };
    let why = last.map(|e| e.to_string()).unwrap_or_default();
    Err(ConnectError {
        reach,
        text: format!("{label}: cannot connect to {host}:{port}: {why} (timeout {timeout:?})"),
    }
    .into())
}

/// A link that dies silently (a host gone, a firewall dropping state) must turn into an error:
/// TCP keepalive probes an idle connection, and TCP_USER_TIMEOUT bounds unacknowledged sends.
fn tune_socket(s: &TcpStream) {
    let _ = s.set_nodelay(true);
    let fd = s.as_raw_fd();
    let set = |level: libc::c_int, opt: libc::c_int, val: libc::c_int| {
        // SAFETY: setsockopt with a c_int option value on an open socket.
        unsafe {
            libc::setsockopt(
                fd,
                level,
                opt,
                &val as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    };
    set(libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1);
    #[cfg(target_os = "linux")]
    {
        set(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, 15);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, 5);
        set(libc::IPPROTO_TCP, libc::TCP_KEEPCNT, 4);
        set(libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT, 45_000);
    }
}

fn err_code(e: &ssh2::Error) -> i32 {
    match e.code() {
        ErrorCode::Session(c) | ErrorCode::SFTP(c) => c,
    }
}

/// Handshake, host key check and authentication on a connected stream.
fn establish(
    label: &str,
    user: &str,
    host: &str,
    port: u16,
    stream: Stream,
    known_hosts: &KnownHosts,
    cfg: &Ssh,
) -> Result<Conn> {
    let fd = stream.fd();
    let mut sess = Session::new().context("cannot create an SSH session")?;
    let timeout = cfg.connect_timeout.max(Duration::from_secs(1));
    sess.set_timeout(u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX));
    sess.set_blocking(true);
    match stream {
        Stream::Tcp(s) => sess.set_tcp_stream(s),
        Stream::Unix(s) => sess.set_tcp_stream(s),
    }
    let name = known_hosts::lookup_name(host, port);
    let known_types = known_hosts.key_types_for(&name);
    if !known_types.is_empty() {
        if let Ok(supported) = sess.supported_algs(MethodType::HostKey) {
            if let Some(pref) = known_hosts::host_key_preference(&known_types, &supported) {
                sess.method_pref(MethodType::HostKey, &pref)
                    .context("cannot set the host key preference")?;
            }
        }
    }
    sess.handshake().map_err(|e| {
        // We asked for the key types known_hosts lists; a server without any of them fails
        // the key exchange, which means its host key changed.
        let hint = if known_types.is_empty() {
            String::new()
        } else {
            format!(
                " (only {} host keys are trusted for {name} in {}; if the server no longer \
                 offers such a key, its host key has changed: verify it before replacing the \
                 entry)",
                known_types.join("/"),
                known_hosts.path.display()
            )
        };
        anyhow!(
            "{label}: SSH handshake with {host}:{port} failed: {}{hint}",
            e.message()
        )
    })?;
    verify_host_key(label, &sess, known_hosts, host, port)?;
    authenticate(label, &sess, user, host, port, cfg)?;
    Ok(Conn::new(label, format!("{user}@{host}:{port}"), sess, fd))
}

fn verify_host_key(
    label: &str,
    sess: &Session,
    kh: &KnownHosts,
    host: &str,
    port: u16,
) -> Result<()> {
    let (key, _) = sess
        .host_key()
        .ok_or_else(|| anyhow!("{label}: the SSH server at {host}:{port} sent no host key"))?;
    let name = known_hosts::lookup_name(host, port);
    let ktype = known_hosts::key_type(key).unwrap_or_else(|| "unknown".into());
    let fp = sess
        .host_key_hash(HashType::Sha256)
        .map(known_hosts::fingerprint)
        .unwrap_or_else(|| "(no fingerprint)".into());
    let path = kh.path.display();
    let short = match ktype.as_str() {
        "ssh-ed25519" => "ed25519",
        "ssh-rsa" => "rsa",
        "ssh-dss" => "dsa",
        t if t.starts_with("ecdsa-") => "ecdsa",
        _ => "ed25519",
    };
    match kh.verify(&name, key) {
        Verdict::Trusted => Ok(()),
        Verdict::Unknown => {
            let missing = if kh.missing {
                " (the file does not exist)"
            } else {
                ""
            };
            bail!(
                "{label}: refusing to connect: the SSH host key of {host}:{port} is not in \
                 {path}{missing}, so the server cannot be verified.\n  \
                 The server presented a {ktype} key with fingerprint {fp}.\n  \
                 Check that fingerprint out of band (on the server: \
                 ssh-keygen -lf /etc/ssh/ssh_host_{short}_key.pub), then accept the key with:\n    \
                 ssh-keyscan -p {port} -t {short} {host} >> {path}"
            )
        }
        Verdict::Changed(known) => {
            let lines = known
                .iter()
                .map(|(l, t)| format!("line {l} ({t})"))
                .collect::<Vec<_>>()
                .join(", ");
            bail!(
                "{label}: REFUSING TO CONNECT: THE SSH HOST KEY OF {host}:{port} HAS CHANGED.\n  \
                 Someone may be intercepting the connection (man-in-the-middle), or the \
                 server's host key was replaced.\n  \
                 The server presented a {ktype} key with fingerprint {fp}; {path} holds a \
                 different key for {name} at {lines}.\n  \
                 Only if the change is known to be legitimate: remove the old entry with \
                 ssh-keygen -f {path} -R '{name}', check the new fingerprint out of band, and \
                 add the new key."
            )
        }
        Verdict::Revoked(line) => bail!(
            "{label}: refusing to connect: the SSH host key of {host}:{port} ({ktype} {fp}) \
             is marked @revoked in {path} line {line}."
        ),
    }
}

fn authenticate(
    label: &str,
    sess: &Session,
    user: &str,
    host: &str,
    port: u16,
    cfg: &Ssh,
) -> Result<()> {
    let offered = sess
        .auth_methods(user)
        .map(str::to_string)
        .unwrap_or_default();
    if sess.authenticated() {
        return Ok(());
    }
    if !offered.is_empty() && !offered.split(',').any(|m| m == "publickey") {
        bail!(
            "{label}: the SSH server at {host}:{port} does not accept public keys for {user} \
             (it offers: {offered}); repltool authenticates with keys only"
        );
    }
    let mut tried = Vec::new();
    match &cfg.identity_file {
        Some(path) => {
            if try_key_file(label, sess, user, &expand_home(path), &mut tried)? {
                return Ok(());
            }
        }
        None => {
            if try_agent(sess, user, &mut tried) {
                return Ok(());
            }
            let home = std::env::var_os("HOME").map(PathBuf::from);
            let mut any = false;
            for n in ["id_ed25519", "id_ecdsa", "id_rsa"] {
                let Some(p) = home.as_ref().map(|h| h.join(".ssh").join(n)) else {
                    continue;
                };
                if p.exists() {
                    any = true;
                    if try_key_file(label, sess, user, &p, &mut tried)? {
                        return Ok(());
                    }
                }
            }
            if !any {
                tried.push("~/.ssh/id_ed25519, id_ecdsa, id_rsa (none exist)".into());
            }
        }
    }
    bail!(
        "{label}: SSH authentication failed for {user}@{host}:{port}; tried: {}",
        tried.join("; ")
    )
}

fn try_key_file(
    label: &str,
    sess: &Session,
    user: &str,
    path: &Path,
    tried: &mut Vec<String>,
) -> Result<bool> {
    let shown = path.display();
    if !path.exists() {
        tried.push(format!("key file {shown} (does not exist)"));
        return Ok(false);
    }
    match sess.userauth_pubkey_file(user, None, path, None) {
        Ok(()) if sess.authenticated() => Ok(true),
        Ok(()) => {
            tried.push(format!("key file {shown} (not accepted)"));
            Ok(false)
        }
        Err(e) => {
            let code = err_code(&e);
            match code {
                -18 | -19 => tried.push(format!("key file {shown} (not accepted by the server)")),
                -16 | -48 => tried.push(format!(
                    "key file {shown} (cannot be used: {}; a passphrase-protected key must be \
                     loaded into ssh-agent instead)",
                    e.message()
                )),
                -13 | -43 | -7 | -9 => bail!(
                    "{label}: the SSH server closed the connection during authentication ({}); \
                     tried: {}",
                    e.message(),
                    tried.join("; ")
                ),
                _ => tried.push(format!("key file {shown} ({})", e.message())),
            }
            Ok(false)
        }
    }
}

fn try_agent(sess: &Session, user: &str, tried: &mut Vec<String>) -> bool {
    if std::env::var_os("SSH_AUTH_SOCK").is_none() {
        tried.push("ssh-agent (SSH_AUTH_SOCK is not set)".into());
        return false;
    }
    let mut agent = match sess.agent() {
        Ok(a) => a,
        Err(e) => {
            tried.push(format!("ssh-agent ({})", e.message()));
            return false;
        }
    };
    if let Err(e) = agent.connect() {
        tried.push(format!("ssh-agent (cannot connect: {})", e.message()));
        return false;
    }
    let ids = match agent.list_identities().and_then(|()| agent.identities()) {
        Ok(ids) => ids,
        Err(e) => {
            tried.push(format!("ssh-agent (cannot list keys: {})", e.message()));
            let _ = agent.disconnect();
            return false;
        }
    };
    let mut ok = false;
    for id in &ids {
        if agent.userauth(user, id).is_ok() && sess.authenticated() {
            ok = true;
            break;
        }
    }
    let _ = agent.disconnect();
    if !ok {
        if ids.is_empty() {
            tried.push("ssh-agent (no keys loaded)".into());
        } else {
            tried.push(format!("ssh-agent ({} key(s), none accepted)", ids.len()));
        }
    }
    ok
}
