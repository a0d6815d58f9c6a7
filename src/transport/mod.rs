//! How repltool reaches a host: the [`HostSession`] trait, with `local` (this machine, the lab)
//! and `ssh` (ssh2) implementations. Planners never see this; only observe and execute do.

pub mod cleanup;
#[cfg(test)]
pub mod fake;
pub mod local;
pub mod optfile;
pub mod sql;
pub mod ssh;

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::topology::{Host, Transport};

/// What a finished command left behind.
#[derive(Debug, Clone, Default)]
pub struct CmdOutput {
    /// Exit status; -1 when killed by a signal or the status is unknown.
    pub status: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl CmdOutput {
    pub fn ok(&self) -> bool {
        self.status == 0
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A command running on a host, for streaming (a dump piped into a client on another host).
pub trait RemoteProcess: Send {
    /// The process's standard input. Dropping or [`RemoteProcess::close_stdin`] sends EOF.
    fn stdin(&mut self) -> &mut dyn Write;
    /// The process's standard output.
    fn stdout(&mut self) -> &mut dyn Read;
    fn close_stdin(&mut self) -> Result<()>;
    /// Wait for the end; stdout already read through [`RemoteProcess::stdout`] is not repeated.
    fn wait(self: Box<Self>) -> Result<CmdOutput>;
}

/// One connection to one host, reused for every step (one SSH session per host).
pub trait HostSession: Send {
    /// The host's name in the topology, for messages.
    fn host_name(&self) -> &str;

    /// Run `script` with `sh -c` on the host, feeding `stdin` if given. `privileged` steps go
    /// through `sudo -n` when the topology says `sudo: true`. Secrets go through stdin, never
    /// into `script`. The command is killed when `timeout` passes.
    fn run(
        &mut self,
        script: &str,
        stdin: Option<&[u8]>,
        privileged: bool,
        timeout: Duration,
    ) -> Result<CmdOutput>;

    /// Start `script` with `sh -c` and return it for streaming.
    fn spawn(&mut self, script: &str, privileged: bool) -> Result<Box<dyn RemoteProcess>>;

    /// A TCP endpoint on this machine that reaches the SQL server listening on `port` on the
    /// host: the address itself for direct TCP and the lab, or a local end of an SSH
    /// port-forward (direct-tcpip) that lives as long as the session.
    fn sql_endpoint(&mut self, port: u16) -> Result<(String, u16)>;

    /// Why the last connection through [`HostSession::sql_endpoint`] to `port` failed on the
    /// far side, when the transport knows (an SSH forward whose target refused): the SQL client
    /// itself only sees a closed connection.
    fn endpoint_error(&self, port: u16) -> Option<String> {
        let _ = port;
        None
    }

    /// Another handle on the same host that works while this one is busy or locked (an SSH
    /// session's clone shares its connection), for removing this run's files on a signal.
    /// None: the transport cannot offer one.
    fn detached(&self) -> Option<Box<dyn HostSession>> {
        None
    }

    /// An administrative SQL connection to the host's server (real sessions:
    /// [`sql::connect`] through [`HostSession::sql_endpoint`]), `connect_timeout` bounding the
    /// login and `io_timeout` every read and write.
    fn sql_connect(
        &mut self,
        host: &Host,
        connect_timeout: Duration,
        io_timeout: Duration,
    ) -> Result<Box<dyn sql::SqlConn>>;

    /// Read a file; `Ok(None)` when it does not exist.
    fn read_file(&mut self, path: &Path, privileged: bool) -> Result<Option<Vec<u8>>> {
        let p = shell_quote(&path.to_string_lossy());
        let out = self.run(
            &format!("if [ -e {p} ]; then cat {p}; else exit 3; fi"),
            None,
            privileged,
            Duration::from_secs(30),
        )?;
        match out.status {
            0 => Ok(Some(out.stdout)),
            3 => Ok(None),
            s => bail!(
                "{}: reading {} failed (exit {s}): {}",
                self.host_name(),
                path.display(),
                out.stderr_str().trim()
            ),
        }
    }

    /// Write a file atomically (temporary file in the same directory, then rename), creating
    /// the directory if needed. With `keep_backup`, an existing file is kept as `PATH.bak`.
    fn write_file_atomic(
        &mut self,
        path: &Path,
        contents: &[u8],
        mode: u32,
        keep_backup: bool,
        privileged: bool,
    ) -> Result<()> {
        let p = shell_quote(&path.to_string_lossy());
        let dir = shell_quote(
            &path
                .parent()
                .map(|d| d.to_string_lossy().into_owned())
                .unwrap_or_else(|| "/".into()),
        );
        let backup = if keep_backup {
            format!("if [ -e {p} ]; then cp -p {p} {p}.bak; fi; ")
        } else {
            String::new()
        };
        // The temporary name is unique per shell ($$) and removed on any failure, so a disk-full
        // write leaves the old file in place and no debris.
        // The directory is made under the login umask (a server must read it); the temporary
        // file under umask 077, so it is never more open than `mode` asks, even before chmod.
        let script = format!(
            "set -e; mkdir -p {dir}; umask 077; t={p}.repltool-tmp.$$; trap 'rm -f \"$t\"' EXIT; \
             cat > \"$t\"; chmod {mode:o} \"$t\"; sync \"$t\" 2>/dev/null || true; {backup}mv -f \"$t\" {p}; trap - EXIT"
        );
        let out = self.run(&script, Some(contents), privileged, Duration::from_secs(30))?;
        if !out.ok() {
            bail!(
                "{}: writing {} failed (exit {}): {}",
                self.host_name(),
                path.display(),
                out.status,
                out.stderr_str().trim()
            );
        }
        Ok(())
    }
}

/// The sessions of a run, one per host, each behind a lock so threads can share them.
pub type Sessions = std::collections::HashMap<String, std::sync::Mutex<Box<dyn HostSession>>>;

/// Open a session to every host at once; `timeout` caps each SSH connect (status and promote
/// must not wait the topology's full connect timeout for a dead host). Returns the sessions
/// opened and, for every host that could not be reached, why.
pub fn connect_all(
    topo: &crate::topology::Topology,
    timeout: Option<Duration>,
) -> (Sessions, Vec<(String, anyhow::Error)>) {
    let results = crate::par::each(&topo.hosts, |h| {
        let mut h2 = h.clone();
        if let (Some(t), Transport::Ssh(ssh)) = (timeout, &mut h2.transport) {
            ssh.connect_timeout = ssh.connect_timeout.min(t);
        }
        Ok(connect(&h2))
    });
    let mut sessions = Sessions::new();
    let mut failed = Vec::new();
    for (h, r) in topo.hosts.iter().zip(results) {
        match r.and_then(|x| x) {
            Ok(s) => {
                sessions.insert(h.name.clone(), std::sync::Mutex::new(s));
            }
            Err(e) => failed.push((h.name.clone(), e)),
        }
    }
    (sessions, failed)
}

/// Why SQL through each host's transport broke, for hosts whose transport knows (a lost SSH
/// link, a refused forward): the SQL client alone only reports a closed connection.
pub fn link_problems(topo: &crate::topology::Topology, sessions: &Sessions) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in &topo.hosts {
        if let Some(m) = sessions.get(&h.name) {
            let s = m.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = s.endpoint_error(h.mysql.port) {
                if !out.contains(&e) {
                    out.push(e);
                }
            }
        }
    }
    out
}

/// Open the session a host's topology entry asks for.
pub fn connect(host: &Host) -> Result<Box<dyn HostSession>> {
    match &host.transport {
        Transport::Local => Ok(Box::new(local::LocalSession::new(
            &host.name,
            &host.address,
        ))),
        Transport::Ssh(cfg) => {
            let s = ssh::SshSession::connect(&host.name, &host.address, cfg, host.mysql.route)
                .with_context(|| format!("{}: SSH connection to {}", host.name, host.address))?;
            Ok(Box::new(s))
        }
    }
}

/// `timeout` from now, saturating: an enormous timeout means "no deadline", never an overflow
/// panic (`Instant + Duration` panics when the sum does not fit).
pub fn deadline_in(timeout: Duration) -> std::time::Instant {
    let now = std::time::Instant::now();
    now.checked_add(timeout)
        .or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Quote a string for a POSIX shell: `'...'` with embedded quotes closed and escaped.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::shell_quote;
    #[test]
    fn deadlines_saturate() {
        let far = super::deadline_in(std::time::Duration::MAX);
        assert!(far > std::time::Instant::now() + std::time::Duration::from_secs(3600 * 24 * 365));
        let near = super::deadline_in(std::time::Duration::from_secs(1));
        assert!(near <= std::time::Instant::now() + std::time::Duration::from_secs(1));
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("/etc/my.cnf"), "/etc/my.cnf");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote(""), "''");
    }
}
