//! The `local` transport: commands run on this machine with `sh -c` (the lab).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{CmdOutput, HostSession, RemoteProcess};

/// How long output readers may linger after the shell exits: a daemon the script started in the
/// background may still hold the pipe open, and we must not wait for it to die.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

pub struct LocalSession {
    name: String,
    address: String,
}

impl LocalSession {
    pub fn new(name: &str, address: &str) -> Self {
        LocalSession {
            name: name.to_string(),
            address: address.to_string(),
        }
    }
}

/// `sh -c SCRIPT` in its own process group, so a timeout can kill the whole tree it started.
/// The secret variables (the passwords' usual names and any `${VAR}` a topology file named)
/// are removed from its environment: the commands get credentials from option files, and
/// whatever they start (a server, a hook) must not find the passwords in its environment.
fn shell(script: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(script).process_group(0);
    for name in crate::topology::child_env_removals() {
        cmd.env_remove(name);
    }
    cmd
}

fn first_line(script: &str) -> &str {
    script.trim_start().lines().next().unwrap_or("")
}

fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: plain syscall; the group is the one we created for this child.
        unsafe {
            libc::killpg(pid, libc::SIGKILL);
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status.code().unwrap_or(-1)
}

/// A pipe read on a thread into a shared buffer, so what arrived is kept even when a background
/// process holds the pipe open past the shell's exit.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    done: mpsc::Receiver<()>,
}

fn collect<R: Read + Send + 'static>(mut r: R) -> Collector {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let (tx, done) = mpsc::channel();
    let shared = Arc::clone(&buf);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 16384];
        loop {
            match r.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => match shared.lock() {
                    Ok(mut b) => b.extend_from_slice(&chunk[..n]),
                    Err(_) => break,
                },
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(());
    });
    Collector { buf, done }
}

fn drained(c: Option<Collector>, until: Instant) -> Vec<u8> {
    let Some(c) = c else { return Vec::new() };
    let _ = c
        .done
        .recv_timeout(until.saturating_duration_since(Instant::now()));
    let taken = match c.buf.lock() {
        Ok(mut b) => std::mem::take(&mut *b),
        Err(_) => Vec::new(),
    };
    taken
}

impl HostSession for LocalSession {
    fn host_name(&self) -> &str {
        &self.name
    }

    fn run(
        &mut self,
        script: &str,
        stdin: Option<&[u8]>,
        _privileged: bool,
        timeout: Duration,
    ) -> Result<CmdOutput> {
        let mut child = shell(script)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("{}: cannot start sh", self.name))?;
        let pid = child.id();
        // Fed from a thread so a script that writes a lot before reading cannot deadlock us.
        if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
            let data = data.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        let out = child.stdout.take().map(collect);
        let err = child.stderr.take().map(collect);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let status = match rx.recv_timeout(timeout) {
            Ok(status) => status.with_context(|| format!("{}: waiting for sh", self.name))?,
            Err(_) => {
                kill_group(pid);
                let _ = rx.recv_timeout(Duration::from_secs(5));
                bail!(
                    "{}: command timed out after {}s and was killed: {}",
                    self.name,
                    timeout.as_secs_f64(),
                    first_line(script)
                );
            }
        };
        let until = Instant::now() + DRAIN_GRACE;
        Ok(CmdOutput {
            status: exit_code(status),
            stdout: drained(out, until),
            stderr: drained(err, until),
        })
    }

    fn spawn(&mut self, script: &str, _privileged: bool) -> Result<Box<dyn RemoteProcess>> {
        let mut child = shell(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("{}: cannot start sh", self.name))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().map(collect);
        Ok(Box::new(LocalProcess {
            child: Some(child),
            stdin,
            stdout,
            stderr,
            sink: std::io::sink(),
            empty: std::io::empty(),
        }))
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
        Ok((self.address.clone(), port))
    }

    fn detached(&self) -> Option<Box<dyn HostSession>> {
        Some(Box::new(LocalSession::new(&self.name, &self.address)))
    }
}

/// A streaming `sh -c` on this machine. Dropped without [`RemoteProcess::wait`], it kills its
/// process group so an abandoned stream leaves nothing running.
pub struct LocalProcess {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<Collector>,
    // Stand-ins once stdin is closed / stdout is taken, so the trait can hand out a reference.
    sink: std::io::Sink,
    empty: std::io::Empty,
}

impl RemoteProcess for LocalProcess {
    fn stdin(&mut self) -> &mut dyn Write {
        match self.stdin.as_mut() {
            Some(s) => s,
            None => &mut self.sink,
        }
    }

    fn stdout(&mut self) -> &mut dyn Read {
        match self.stdout.as_mut() {
            Some(s) => s,
            None => &mut self.empty,
        }
    }

    fn close_stdin(&mut self) -> Result<()> {
        self.stdin = None;
        Ok(())
    }

    fn wait(mut self: Box<Self>) -> Result<CmdOutput> {
        self.stdin = None;
        let out = self.stdout.take().map(collect);
        let Some(mut child) = self.child.take() else {
            bail!("process already waited for");
        };
        let status = child.wait().context("waiting for sh")?;
        let until = Instant::now() + DRAIN_GRACE;
        Ok(CmdOutput {
            status: exit_code(status),
            stdout: drained(out, until),
            stderr: drained(self.stderr.take(), until),
        })
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id());
            std::thread::spawn(move || {
                let _ = child.wait();
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn s() -> LocalSession {
        LocalSession::new("here", "127.0.0.1")
    }

    #[test]
    fn children_do_not_inherit_secret_variables() {
        // Unique names: the test changes the process environment.
        std::env::set_var("REPLTOOL_T_ADMIN_PW", "s3cret-admin");
        std::env::set_var("REPLTOOL_T_HARMLESS", "visible");
        let text = "defaults:\n  transport: local\n  mysql: { password: \"${REPLTOOL_T_ADMIN_PW}\" }\nreplication: { password: x }\nhosts:\n  db1: { address: 127.0.0.1 }\n";
        crate::topology::load_str(text, Path::new("t.yaml"), &|n| std::env::var(n).ok()).unwrap();
        assert!(crate::topology::child_env_removals()
            .iter()
            .any(|n| n == "MYSQL_ADMIN_PASSWORD"));
        let out = s()
            .run(
                "echo \"${REPLTOOL_T_ADMIN_PW-unset} ${REPLTOOL_T_HARMLESS-unset} ${HOME:+home}\"",
                None,
                false,
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(out.stdout_str(), "unset visible home\n");
        let mut p = s()
            .spawn("echo ${REPLTOOL_T_ADMIN_PW-unset}", false)
            .unwrap();
        let mut got = String::new();
        p.stdout().read_to_string(&mut got).unwrap();
        assert_eq!(got, "unset\n");
        p.wait().unwrap();
    }

    #[test]
    fn run_reports_exit_status_and_output() {
        let out = s()
            .run(
                "echo out; echo err >&2; exit 7",
                None,
                false,
                Duration::from_secs(10),
            )
            .unwrap();
        assert_eq!(out.status, 7);
        assert_eq!(out.stdout_str(), "out\n");
        assert_eq!(out.stderr_str(), "err\n");
        assert!(!out.ok());
    }

    #[test]
    fn run_feeds_stdin() {
        let big = vec![b'x'; 1 << 20];
        let out = s()
            .run("wc -c", Some(&big), false, Duration::from_secs(10))
            .unwrap();
        assert_eq!(out.stdout_str().trim(), (1usize << 20).to_string());
    }

    #[test]
    fn run_kills_the_whole_group_on_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("late");
        let script = format!(
            "sleep 30 & sleep 1.5; touch {}\nsecond line",
            marker.display()
        );
        let t0 = Instant::now();
        let err = s()
            .run(&script, None, false, Duration::from_millis(300))
            .unwrap_err()
            .to_string();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(err.contains("here"), "{err}");
        assert!(err.contains("timed out"), "{err}");
        assert!(err.contains("sleep 30 & sleep 1.5"), "{err}");
        assert!(!err.contains("second line"), "{err}");
        std::thread::sleep(Duration::from_secs(2));
        assert!(!marker.exists(), "the killed script kept running");
    }

    #[test]
    fn run_does_not_hang_on_a_daemon_holding_stdout() {
        let t0 = Instant::now();
        let out = s()
            .run(
                "echo hi; sleep 6 & exit 0",
                None,
                false,
                Duration::from_secs(10),
            )
            .unwrap();
        assert!(out.ok());
        assert_eq!(out.stdout_str(), "hi\n");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }

    #[test]
    fn spawn_streams_both_ways() {
        let mut p = s().spawn("tr a-z A-Z; echo done >&2", false).unwrap();
        p.stdin().write_all(b"hello\n").unwrap();
        p.close_stdin().unwrap();
        let mut first = [0u8; 6];
        p.stdout().read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HELLO\n");
        let out = p.wait().unwrap();
        assert!(out.ok());
        assert!(out.stdout.is_empty(), "already-read output repeated");
        assert_eq!(out.stderr_str(), "done\n");
    }

    #[test]
    fn spawn_wait_collects_unread_output_and_status() {
        let p = s().spawn("cat; echo tail; exit 4", false).unwrap();
        let out = p.wait().unwrap();
        assert_eq!(out.status, 4);
        assert_eq!(out.stdout_str(), "tail\n");
    }

    #[test]
    fn read_file_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let got = s().read_file(&dir.path().join("nope.cnf"), false).unwrap();
        assert!(got.is_none());
    }

    #[test]
    fn write_file_atomic_creates_keeps_backup_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf.d/60-repltool.cnf");
        let mut sess = s();
        sess.write_file_atomic(&path, b"first\n", 0o640, true, false)
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"first\n");
        assert!(!Path::new(&format!("{}.bak", path.display())).exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);

        sess.write_file_atomic(&path, b"second\n", 0o640, true, false)
            .unwrap();
        assert_eq!(
            sess.read_file(&path, false).unwrap().as_deref(),
            Some(&b"second\n"[..])
        );
        let bak = std::fs::read(format!("{}.bak", path.display())).unwrap();
        assert_eq!(bak, b"first\n");
        let debris: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("repltool-tmp"))
            .collect();
        assert!(debris.is_empty(), "{debris:?}");
    }

    #[test]
    fn write_file_atomic_failure_names_the_host() {
        let dir = tempfile::tempdir().unwrap();
        // A regular file where the parent directory should be: mkdir -p must fail.
        let blocker = dir.path().join("blocker");
        std::fs::write(&blocker, b"x").unwrap();
        let err = s()
            .write_file_atomic(&blocker.join("f.cnf"), b"new", 0o600, false, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("here: writing"), "{err}");
        assert_eq!(std::fs::read(&blocker).unwrap(), b"x");
    }
}
