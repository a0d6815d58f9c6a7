//! One lab node on disk and as a process: its files (my.cnf, client.cnf, ctl), its port, and
//! finding, checking and stopping exactly the server process it started.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::template::{write_private, Server, ADMIN_USER, SERVER_SETTINGS};
use crate::transport::shell_quote;

/// A node as recorded in `lab.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Node {
    pub name: String,
    pub port: u16,
    /// The server's pid when `lab up` started it (a later `ctl restart` changes it; the pid
    /// file is the live source).
    pub pid: Option<u32>,
    pub dir: PathBuf,
}

impl Node {
    pub fn new(name: String, port: u16, dir: PathBuf) -> Self {
        Node {
            name,
            port,
            pid: None,
            dir,
        }
    }
    pub fn datadir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn defaults_file(&self) -> PathBuf {
        self.dir.join("my.cnf")
    }
    pub fn client_file(&self) -> PathBuf {
        self.dir.join("client.cnf")
    }
    pub fn conf_d(&self) -> PathBuf {
        self.dir.join("conf.d")
    }
    /// The only directory besides the datadir that the server writes (socket, pid file), so
    /// the node directory, its ctl script and config stay the invoking user's.
    pub fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("mysqld.sock")
    }
    pub fn pid_file(&self) -> PathBuf {
        self.run_dir().join("mysqld.pid")
    }
    pub fn error_log(&self) -> PathBuf {
        self.dir.join("error.log")
    }
    pub fn ctl(&self) -> PathBuf {
        self.dir.join("ctl")
    }

    /// The argument that marks a process as this node's server.
    fn marker(&self) -> String {
        format!("--defaults-file={}", self.defaults_file().display())
    }

    /// Is `pid` this node's server (not a recycled pid, not a zombie)?
    pub fn owns(&self, pid: u32) -> bool {
        let marker = self.marker();
        fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| c.split(|b| *b == 0).any(|a| a == marker.as_bytes()))
            .unwrap_or(false)
    }

    /// Every live process that is this node's server: the pid file's, the recorded one, and any
    /// other whose command line names this node's defaults file (a lost pid file).
    pub fn server_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = Vec::new();
        let from_file: Option<u32> = fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pids.extend(from_file);
        pids.extend(self.pid);
        if let Ok(rd) = fs::read_dir("/proc") {
            pids.extend(
                rd.flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())),
            );
        }
        let mut live: Vec<u32> = Vec::new();
        for p in pids {
            if !live.contains(&p) && self.owns(p) {
                live.push(p);
            }
        }
        live
    }

    /// The running server's pid, if any.
    pub fn running_pid(&self) -> Option<u32> {
        let from_file = fs::read_to_string(self.pid_file())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|p| self.owns(*p));
        from_file.or_else(|| self.pid.filter(|p| self.owns(*p)))
    }

    /// The last lines of the error log, for failure messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.error_log()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Write my.cnf, client.cnf, conf.d/ and ctl. `run_as`: the `user=` the server switches to.
    pub fn write_files(&self, server: &Server, run_as: Option<&str>, password: &str) -> Result<()> {
        for d in [self.conf_d(), self.run_dir()] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        // Created here so that, when the server runs as another user, we can hand over just
        // this file rather than the directory.
        fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(self.error_log())
            .with_context(|| format!("creating {}", self.error_log().display()))?;
        let user = run_as.map(|u| format!("user={u}\n")).unwrap_or_default();
        let my_cnf = format!(
            "# repltool lab {name}: written by `repltool lab up`. Started with --defaults-file, so\n\
             # /etc/mysql is not read. `repltool init` writes conf.d/60-repltool.cnf.\n\
             [mysqld]\n{user}\
             datadir={datadir}\nport={port}\nbind-address=127.0.0.1\nsocket={socket}\n\
             pid-file={pid}\nlog-error={log}\n{SERVER_SETTINGS}{extra}\n\
             !includedir {conf_d}\n",
            extra = server.extra_settings,
            name = self.name,
            datadir = self.datadir().display(),
            port = self.port,
            socket = self.socket().display(),
            pid = self.pid_file().display(),
            log = self.error_log().display(),
            conf_d = self.conf_d().display(),
        );
        fs::write(self.defaults_file(), my_cnf)?;
        // The admin login for the ctl script's readiness check and for a human's
        // `mariadb --defaults-file=DIR/nodeK/client.cnf`; private because it holds the password.
        let client = format!(
            "[client]\nuser={ADMIN_USER}\npassword={password}\nhost=127.0.0.1\nport={}\nprotocol=tcp\n",
            self.port
        );
        write_private(&self.client_file(), client.as_bytes())?;
        fs::write(self.ctl(), ctl_script(self, server))?;
        fs::set_permissions(self.ctl(), fs::Permissions::from_mode(0o755))?;
        Ok(())
    }
}

/// The node's control script: start|stop|restart|status. `restart` is what `repltool init`
/// runs when a static setting such as log-bin changes, so it polls tightly.
fn ctl_script(node: &Node, server: &Server) -> String {
    let q = |p: &Path| shell_quote(&p.to_string_lossy());
    format!(
        r#"#!/bin/sh
# Control the repltool lab server {name}: start|stop|restart|status. Written by `repltool lab up`.
D={dir}
SERVER={server}
ADMIN={admin}
CNF="$D/my.cnf"
PIDFILE="$D/run/mysqld.pid"
LOG="$D/error.log"
SOCK="$D/run/mysqld.sock"
START_TIMEOUT=${{REPLTOOL_LAB_START_TIMEOUT:-60}}
STOP_TIMEOUT=${{REPLTOOL_LAB_STOP_TIMEOUT:-30}}

# Is $1 our server? Checked on the command line, so a recycled pid or a zombie is not.
ours() {{
  [ -n "$1" ] && [ -r "/proc/$1/cmdline" ] &&
    {{ tr '\0' '\n' < "/proc/$1/cmdline"; }} 2>/dev/null | grep -qxF -- "--defaults-file=$CNF"
}}
pid() {{ p=$(cat "$PIDFILE" 2>/dev/null); ours "$p" && echo "$p"; }}
# Dead or a zombie (between fork and exec the child is neither, nor yet "ours").
# Shell builtins only: it runs every 10 ms while a server starts.
gone() {{
  [ -e "/proc/$1" ] || return 0
  {{ while read -r k v _; do [ "$k" = State: ] && {{ [ "$v" = Z ]; return; }}; done; }} \
    < "/proc/$1/status" 2>/dev/null
  return 0
}}
# A real login with the admin account (mariadb-admin ping also succeeds on "access denied",
# which still proves the server accepts connections).
up() {{ "$ADMIN" --defaults-file="$D/client.cnf" --connect-timeout=1 ping >/dev/null 2>&1; }}
fail() {{ echo "{name}: $1; last lines of $LOG:" >&2; tail -n 25 "$LOG" >&2; exit 1; }}

start() {{
  if p=$(pid); then echo "{name}: already running (pid $p)"; return 0; fi
  # setsid: out of the caller's process group and terminal, so a timed-out or interrupted
  # caller does not take the server down. A non-interactive sh's & child is never a group
  # leader, so setsid does not fork and $! is the server itself.
  setsid "$SERVER" --defaults-file="$CNF" </dev/null >/dev/null 2>&1 &
  child=$!
  i=0
  # The socket appears when the server starts listening (TCP at the same moment); pinging
  # only from then on keeps client processes from competing with InnoDB's start for CPU.
  while [ "$i" -lt $((START_TIMEOUT * 100)) ]; do
    if [ -S "$SOCK" ] && up; then echo "{name}: running (pid $child)"; return 0; fi
    gone "$child" && fail "the server exited during startup"
    sleep 0.01
    i=$((i + 1))
  done
  kill -KILL "$child" 2>/dev/null
  fail "the server did not accept connections within ${{START_TIMEOUT}}s (killed it)"
}}

stop() {{
  p=$(pid) || {{ echo "{name}: not running"; return 0; }}
  kill -TERM "$p"
  i=0
  while ours "$p" && [ "$i" -lt $((STOP_TIMEOUT * 50)) ]; do sleep 0.02; i=$((i + 1)); done
  if ours "$p"; then
    echo "{name}: still running after ${{STOP_TIMEOUT}}s, sending SIGKILL" >&2
    kill -KILL "$p"
    i=0
    while ours "$p" && [ "$i" -lt 250 ]; do sleep 0.02; i=$((i + 1)); done
    ours "$p" && {{ echo "{name}: pid $p survived SIGKILL" >&2; exit 1; }}
  fi
  echo "{name}: stopped"
}}

case "$1" in
  start) start ;;
  stop) stop ;;
  restart) stop && start ;;
  status) if p=$(pid); then echo "{name}: running (pid $p)"; else echo "{name}: stopped"; exit 3; fi ;;
  *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac
"#,
        name = node.name,
        dir = q(&node.dir),
        server = q(&server.path),
        admin = q(&server.admin_tool),
    )
}

/// Is `port` free on 127.0.0.1 right now?
pub fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// The first free port at or after `from` that is not in `taken`; bounded to 1000 candidates.
pub fn next_free_port(from: u16, taken: &[u16]) -> Result<u16> {
    let mut p = from;
    for _ in 0..1000 {
        if p != 0 && !taken.contains(&p) && port_free(p) {
            return Ok(p);
        }
        p = p
            .checked_add(1)
            .context("ran out of ports below 65535; use a lower --base-port")?;
    }
    bail!("no free port among the 1000 from {from}; use another --base-port")
}

/// Did the last start fail because the port was taken (someone bound it after our check)?
pub fn failed_on_port(node: &Node) -> bool {
    let tail = node.log_tail(30);
    tail.contains("Address already in use") || tail.contains("Do you already have another")
}

/// SIGTERM every given pid, wait up to `grace` for all to go, SIGKILL the survivors and wait a
/// little more. Returns the pids still alive (owned by `node`) at the end.
pub fn terminate(pids: &[(usize, u32)], nodes: &[Node], grace: Duration) -> Vec<u32> {
    let alive = |(i, p): &(usize, u32)| nodes.get(*i).is_some_and(|n| n.owns(*p));
    let signal = |sig: i32| {
        for (i, p) in pids {
            if alive(&(*i, *p)) {
                if let Ok(pid) = libc::pid_t::try_from(*p) {
                    // SAFETY: plain syscall on a pid just verified to be our server.
                    unsafe {
                        libc::kill(pid, sig);
                    }
                }
            }
        }
    };
    let wait = |limit: Duration| {
        let deadline = Instant::now() + limit;
        while pids.iter().any(alive) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    signal(libc::SIGTERM);
    wait(grace);
    if pids.iter().any(alive) {
        signal(libc::SIGKILL);
        wait(Duration::from_secs(5));
    }
    pids.iter().filter(|p| alive(p)).map(|(_, p)| *p).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_free_port_skips_a_bound_port_and_taken_ones() {
        let held = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = held.local_addr().unwrap().port();
        let got = next_free_port(port, &[]).unwrap();
        assert_ne!(got, port);
        assert!(got > port);
        let again = next_free_port(port, &[got]).unwrap();
        assert!(again != got && again != port);
    }

    #[test]
    fn owns_only_matches_the_exact_defaults_file() {
        let n = Node::new("node1".into(), 1, PathBuf::from("/nonexistent/lab/node1"));
        // Our own process is certainly not that node's server.
        assert!(!n.owns(std::process::id()));
        assert!(n.running_pid().is_none());
        // A process whose command line carries exactly the node's marker is the node's; one
        // with the marker of another node (a prefix of it, or longer) is not.
        let spawn = |arg: String| {
            std::process::Command::new("sh")
                .args(["-c", "sleep 5", &arg])
                .spawn()
                .expect("sh")
        };
        let mut mine = spawn(n.marker());
        let mut longer = spawn(format!("{}0", n.marker()));
        let mut shorter = spawn(n.marker()[..n.marker().len() - 1].to_string());
        // The child's command line is visible once it has exec'd.
        std::thread::sleep(std::time::Duration::from_millis(100));
        let got = (n.owns(mine.id()), n.owns(longer.id()), n.owns(shorter.id()));
        for c in [&mut mine, &mut longer, &mut shorter] {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert_eq!(got, (true, false, false));
    }
}
