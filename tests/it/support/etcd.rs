//! A three-member etcd cluster (Debian's etcd-server 3.4) on bare network-namespace test hosts,
//! and `repltool watch` processes run inside such hosts' network namespaces. Every process is
//! started with `ip netns exec` (no fork: the child's pid is the program's), stopped by that pid
//! and waited for; Drop stops whatever is left. A member or watcher that cannot start fails the
//! test with its log.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::netns::{run_bounded, show, NsHost};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct Member {
    pub name: String,
    pub ns: String,
    pub addr: String,
    dir: PathBuf,
    child: Option<Child>,
    paused: bool,
}

pub struct Etcd {
    pub members: Vec<Member>,
    cluster: String,
}

fn etcd_bin() -> &'static str {
    assert!(
        Path::new("/usr/bin/etcd").exists() && Path::new("/usr/bin/etcdctl").exists(),
        "/usr/bin/etcd or etcdctl is missing: install etcd-server and etcd-client (tests/install-deps.sh)"
    );
    "/usr/bin/etcd"
}

impl Member {
    fn spawn(&mut self, cluster: &str, state: &str) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .expect("etcd log");
        let a = &self.addr;
        let child = Command::new("/usr/sbin/ip")
            .args(["netns", "exec", &self.ns, etcd_bin()])
            .args(["--name", &self.name])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg(format!("--listen-client-urls=http://{a}:2379"))
            .arg(format!("--advertise-client-urls=http://{a}:2379"))
            .arg(format!("--listen-peer-urls=http://{a}:2380"))
            .arg(format!("--initial-advertise-peer-urls=http://{a}:2380"))
            .arg(format!("--initial-cluster={cluster}"))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=repltool-test")
            .env_clear()
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot start etcd: {e}", self.name));
        self.child = Some(child);
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// SIGKILL by pid, and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as in `pause`; a stopped process dies at once after SIGCONT.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// SIGSTOP (hung: connections are accepted, nothing answers) or SIGCONT.
    pub fn pause(&mut self, stop: bool) {
        self.paused = stop;
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
            unsafe {
                libc::kill(
                    c.id() as i32,
                    if stop { libc::SIGSTOP } else { libc::SIGCONT },
                );
            }
        }
    }
}

use std::os::unix::process::CommandExt;

impl Etcd {
    /// One member on each host, data under `dir`; waits until the cluster answers.
    pub fn start(hosts: &[&NsHost], dir: &Path) -> Etcd {
        let cluster: Vec<String> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| format!("e{}=http://{}:2380", i + 1, h.addr))
            .collect();
        let cluster = cluster.join(",");
        let mut members: Vec<Member> = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let d = dir.join(format!("etcd{}", i + 1));
                fs::create_dir_all(&d).expect("etcd dir");
                Member {
                    name: format!("e{}", i + 1),
                    ns: h.ns.clone(),
                    addr: h.addr.clone(),
                    dir: d,
                    child: None,
                    paused: false,
                }
            })
            .collect();
        for m in &mut members {
            m.spawn(&cluster, "new");
        }
        let e = Etcd { members, cluster };
        e.wait_healthy(Duration::from_secs(30));
        e
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://{}:2379", m.addr))
            .collect()
    }

    /// `ETCDCTL_API=3 etcdctl --endpoints ... ARGS` from the root namespace, bounded.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let eps: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.running() && !m.paused)
            .map(|m| format!("http://{}:2379", m.addr))
            .collect();
        run_bounded(
            Command::new("/usr/bin/etcdctl")
                .arg(format!("--endpoints={}", eps.join(",")))
                .args(["--command-timeout=3s", "--dial-timeout=2s"])
                .args(args)
                .env_clear()
                .env("PATH", PATH)
                .env("ETCDCTL_API", "3"),
            None,
            Duration::from_secs(20),
        )
    }

    /// The value of a key (empty when absent), read with a quorum.
    pub fn get(&self, key: &str) -> String {
        let out = self.ctl(&["get", "--print-value-only", key]);
        assert!(out.status.success(), "etcdctl get {key}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Every value under a prefix.
    pub fn values(&self, prefix: &str) -> Vec<String> {
        let out = self.ctl(&["get", "--prefix", "--print-value-only", prefix]);
        assert!(out.status.success(), "etcdctl get {prefix}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    pub fn wait_healthy(&self, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let out = self.ctl(&["put", "/repltool-test/ping", "1"]);
            if out.status.success() {
                return;
            }
            if Instant::now() > end {
                let logs: Vec<String> = self
                    .members
                    .iter()
                    .map(|m| format!("--- {}\n{}", m.name, m.log()))
                    .collect();
                panic!(
                    "etcd did not answer within {within:?}: {}\n{}",
                    show(&out),
                    logs.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stop member `i` (0-based).
    pub fn kill(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Start member `i` again on its data.
    pub fn restart(&mut self, i: usize) {
        let cluster = self.cluster.clone();
        self.members[i].spawn(&cluster, "existing");
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}

/// A `repltool watch` process in a host's network namespace.
pub struct Watcher {
    pub id: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Watcher {
    /// `repltool watch -f FILE --id ID ARGS` in `host`'s network namespace, stderr and stdout
    /// to DIR/<id>.log, with `env` added.
    pub fn start(
        host: &NsHost,
        file: &Path,
        id: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Watcher {
        let dir = file.parent().expect("the file's directory");
        let log = dir.join(format!("{id}.log"));
        let f = fs::File::create(&log).expect("watcher log");
        let mut cmd = Command::new("/usr/sbin/ip");
        cmd.args(["netns", "exec", &host.ns, env!("CARGO_BIN_EXE_repltool")])
            .arg("watch")
            .arg("-f")
            .arg(file)
            .args(["--id", id])
            .args(args)
            .env("PATH", PATH)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("dup"))
            .stderr(f)
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start watcher {id}: {e}"));
        Watcher {
            id: id.to_string(),
            log,
            child: Some(child),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log has a line containing every one of `words`; that line.
    pub fn wait_for(&self, words: &[&str], within: Duration) -> String {
        let end = Instant::now() + within;
        loop {
            let t = self.text();
            if let Some(l) = t.lines().find(|l| words.iter().all(|w| l.contains(w))) {
                return l.to_string();
            }
            if let Some(c) = self.child.as_ref() {
                let _ = c;
            }
            assert!(
                Instant::now() < end,
                "watcher {}: no line with {words:?} within {within:?}; its log:\n{t}",
                self.id
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: as above; SIGCONT first so a stopped process dies at once.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.kill();
    }
}
