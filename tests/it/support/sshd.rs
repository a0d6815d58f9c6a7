//! A real OpenSSH server for live tests: `/usr/sbin/sshd -D -e` on 127.x addresses and a free
//! port in 2200-2299, with a throwaway host key, a throwaway client key in its
//! authorized_keys, and a known_hosts file that trusts it. Panics (the test fails) when sshd
//! cannot start. Killing it takes every sshd process it forked, so connections drop as they
//! would when a host dies.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use repltool::topology::{Jump, Ssh};

pub struct Sshd {
    dir: tempfile::TempDir,
    pub port: u16,
    pub addrs: Vec<String>,
    /// The client key authorized for the current user.
    pub identity: PathBuf,
    /// A known_hosts trusting this server under `[addr]:port` for every address.
    pub known_hosts: PathBuf,
    /// The public host key line (`ssh-ed25519 AAAA...`).
    pub host_key: String,
    pub host_key_path: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Run a command that must succeed (test setup).
pub fn must(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Generate a passphrase-less ed25519 key at `path` (and `path.pub`).
pub fn keygen(path: &Path) {
    must(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "repltool-test", "-f"])
            .arg(path),
    );
}

/// The user tests log in as (the one running them).
pub fn current_user() -> String {
    must(Command::new("id").arg("-un")).trim().to_string()
}

impl Sshd {
    pub fn start() -> Sshd {
        Sshd::start_on(&["127.0.0.1"])
    }

    /// Listen on several loopback addresses (127.0.0.2 ... are all local on Linux).
    pub fn start_on(addrs: &[&str]) -> Sshd {
        Sshd::start_with_env(addrs, &[])
    }

    /// Like [`Sshd::start_on`], with extra environment variables for the sessions.
    pub fn start_with_env(addrs: &[&str], env: &[(&str, &str)]) -> Sshd {
        Sshd::start_with_config(addrs, env, "")
    }

    /// Like [`Sshd::start_with_env`], with extra sshd_config lines (`RekeyLimit 16M\n`...).
    pub fn start_with_config(addrs: &[&str], env: &[(&str, &str)], config: &str) -> Sshd {
        let extra_env: String = env.iter().map(|(k, v)| format!(" {k}={v}")).collect();
        assert!(
            Path::new("/usr/sbin/sshd").exists(),
            "/usr/sbin/sshd is missing: install openssh-server"
        );
        fs::create_dir_all("/run/sshd")
            .unwrap_or_else(|e| panic!("sshd needs /run/sshd and it cannot be created: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("repltool-sshd-")
            .tempdir()
            .expect("temp dir");
        let host_key_path = dir.path().join("host_ed25519");
        keygen(&host_key_path);
        let identity = dir.path().join("client_ed25519");
        keygen(&identity);
        fs::copy(
            identity.with_extension("pub"),
            dir.path().join("authorized_keys"),
        )
        .expect("authorized_keys");
        let host_key = fs::read_to_string(host_key_path.with_extension("pub"))
            .expect("host key")
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        let mut s = Sshd {
            port: 0,
            addrs: addrs.iter().map(|a| a.to_string()).collect(),
            identity,
            known_hosts: dir.path().join("known_hosts"),
            host_key,
            host_key_path,
            config: dir.path().join("sshd_config"),
            log: dir.path().join("sshd.log"),
            child: None,
            dir,
        };
        // Spread concurrent test binaries over the range; retry when another one wins a port.
        let seed = (std::process::id() as usize).wrapping_mul(7).wrapping_add(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() as usize)
                .unwrap_or(0),
        );
        for i in 0..100 {
            let port = 2200 + ((seed + i * 37) % 100) as u16;
            if !s
                .addrs
                .iter()
                .all(|a| TcpListener::bind((a.as_str(), port)).is_ok())
            {
                continue;
            }
            s.port = port;
            s.write_config(&extra_env, config);
            match s.launch() {
                Ok(()) => {
                    s.write_known_hosts();
                    return s;
                }
                Err(e) if e.contains("Address already in use") => continue,
                Err(e) => panic!("sshd did not start on port {port}: {e}"),
            }
        }
        panic!("no free port for sshd in 2200-2299");
    }

    fn write_config(&self, extra_env: &str, extra_config: &str) {
        let d = self.dir.path().display();
        let listen: String = self
            .addrs
            .iter()
            .map(|a| format!("ListenAddress {a}\n"))
            .collect();
        // SHLVL=1 keeps bash from sourcing the machine's ~/.bashrc for these sessions (bash
        // only does so for ssh commands at shell level 1): tests must not depend on, or be
        // slowed down by, whatever the test user's rc files do.
        // sshd keeps the first value it reads for a keyword: the extra lines come first, so
        // they override the defaults below.
        let text = format!(
            "{extra_config}Port {port}\n{listen}\
             HostKey {d}/host_ed25519\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PidFile {d}/sshd.pid\n\
             PermitRootLogin prohibit-password\n\
             StrictModes no\n\
             UsePAM no\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\n\
             AllowTcpForwarding yes\n\
             PrintMotd no\n\
             MaxStartups 50\n\
             LogLevel INFO\n\
             SetEnv SHLVL=1{extra_env}\n",
            port = self.port
        );
        fs::write(&self.config, text).expect("sshd_config");
    }

    fn write_known_hosts(&self) {
        let text: String = self
            .addrs
            .iter()
            .map(|a| format!("[{a}]:{} {}\n", self.port, self.host_key))
            .collect();
        fs::write(&self.known_hosts, text).expect("known_hosts");
    }

    /// Start sshd on `self.port` and wait (bounded) until every address answers with an SSH
    /// banner. Err carries sshd's own log.
    fn launch(&mut self) -> Result<(), String> {
        let log = fs::File::create(&self.log).map_err(|e| e.to_string())?;
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run /usr/sbin/sshd: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut ready = vec![false; self.addrs.len()];
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!("sshd exited ({status}): {}", self.log()));
                }
            }
            for (i, a) in self.addrs.iter().enumerate() {
                if !ready[i] {
                    ready[i] = banner(a, self.port);
                }
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = self.log();
        self.kill();
        Err(format!("sshd did not accept connections within 15s: {log}"))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SSH settings that log in as the current user with the authorized key.
    pub fn ssh(&self) -> Ssh {
        Ssh {
            user: current_user(),
            port: self.port,
            identity_file: Some(self.identity.clone()),
            known_hosts: self.known_hosts.clone(),
            jump: None,
            sudo: false,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// A jump host entry for this server on `addr`.
    pub fn jump(&self, addr: &str) -> Jump {
        Jump {
            user: current_user(),
            host: addr.to_string(),
            port: self.port,
        }
    }

    /// Kill sshd and every process it started (sessions included), like a host going down.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let root = child.id() as i32;
        let mut victims = descendants(root);
        victims.push(root);
        for pid in victims {
            // SAFETY: plain kill(2) on pids found under our own sshd.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = child.wait();
    }

    /// Start sshd again on the same port with the same keys.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.launch() {
                Ok(()) => return,
                Err(e) if e.contains("Address already in use") && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("sshd did not restart on port {}: {e}", self.port),
            }
        }
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn banner(addr: &str, port: u16) -> bool {
    let Ok(sa) = format!("{addr}:{port}").parse::<SocketAddr>() else {
        return false;
    };
    let Ok(mut s) = TcpStream::connect_timeout(&sa, Duration::from_millis(300)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0")
}

/// All processes below `root`, from /proc.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name is in parentheses and may contain anything; fields follow it.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = after
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse::<i32>().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for &(child, parent) in &parent_of {
            if parent == p && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}
