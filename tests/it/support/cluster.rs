//! Test helper for live cluster tests: a lab of real servers (optionally reached over a real
//! sshd), run the built binary against it, query servers, and a bounded application writer.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

pub use super::{lab, sshd};

pub use lab::{repltool, show, Lab};

/// A lab plus the topology file the test drives, and the sshd it is reached through.
pub struct Cluster {
    pub lab: Lab,
    pub file: PathBuf,
    pub sshd: Option<sshd::Sshd>,
}

impl Cluster {
    /// `nodes` servers (lab shape `shape`) reached over a real sshd on 127.0.0.1, with SQL
    /// through SSH port-forwards: the way users run repltool. Topology at DIR/topology.yaml.
    pub fn start(nodes: u32, base_port: u16, shape: &str) -> Cluster {
        let mut c = Cluster::start_local(nodes, base_port, shape);
        let sshd = sshd::Sshd::start();
        let ssh = sshd.ssh();
        let text = c.topology_text();
        assert!(
            text.contains("\n  transport: local\n"),
            "unexpected lab file:\n{text}"
        );
        let block = format!(
            "\n  transport: ssh\n  ssh:\n    user: {}\n    port: {}\n    identity_file: {}\n    known_hosts: {}\n",
            ssh.user,
            ssh.port,
            sshd.identity.display(),
            sshd.known_hosts.display()
        );
        write(&c.file, &text.replace("\n  transport: local\n", &block));
        c.sshd = Some(sshd);
        c
    }

    /// The same without SSH: the lab's own file (local transport).
    pub fn start_local(nodes: u32, base_port: u16, shape: &str) -> Cluster {
        let lab = Lab::start_with(nodes, base_port, &["--shape", shape], true);
        let file = lab.topology.clone();
        Cluster {
            lab,
            file,
            sshd: None,
        }
    }

    /// Cut every SSH link (sshd and its sessions killed), as when a host drops off the network.
    pub fn cut_ssh(&mut self) {
        self.sshd.as_mut().expect("an SSH cluster").kill();
    }

    /// sshd back on the same port with the same keys.
    pub fn restore_ssh(&mut self) {
        self.sshd.as_mut().expect("an SSH cluster").restart();
    }

    pub fn file_str(&self) -> String {
        self.file.to_string_lossy().into_owned()
    }

    /// Run `repltool ARGS -f FILE`.
    pub fn run(&self, args: &[&str]) -> Output {
        let f = self.file_str();
        let mut all: Vec<&str> = args.to_vec();
        all.push("-f");
        all.push(&f);
        repltool(&all)
    }

    /// `init`, asserting success.
    pub fn init_ok(&self) -> String {
        let out = self.run(&["init"]);
        assert!(out.status.success(), "init failed:\n{}", show(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn conn(&self, k: usize) -> mysql::Conn {
        self.lab.conn(k)
    }

    /// The rows of a query on nodeK, every value as text ("NULL" for NULL).
    pub fn q(&self, k: usize, sql: &str) -> Vec<Vec<String>> {
        rows(&mut self.conn(k), sql)
    }

    pub fn exec(&self, k: usize, sql: &str) {
        self.conn(k)
            .query_drop(sql)
            .unwrap_or_else(|e| panic!("node{k}: {sql}: {e}"));
    }

    /// One value.
    pub fn one(&self, k: usize, sql: &str) -> String {
        self.q(k, sql)
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .unwrap_or_default()
    }

    /// Wait until `sql` on nodeK returns `want` (bounded). A table or database that does not
    /// exist yet (it arrives by replication) is "not yet"; any other error fails at once.
    pub fn wait_for(&self, k: usize, sql: &str, want: &str, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let got = match self.lab.try_conn(k) {
                Ok(mut c) => match c.query::<mysql::Row, _>(sql) {
                    Ok(rs) => rs
                        .into_iter()
                        .next()
                        .and_then(|r| r.as_ref(0).cloned())
                        .map(|v| match v {
                            mysql::Value::NULL => "NULL".to_string(),
                            mysql::Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                            v => v.as_sql(true).trim_matches('\'').to_string(),
                        })
                        .unwrap_or_default(),
                    // 1146: no such table, 1049: no such database: not replicated yet.
                    Err(mysql::Error::MySqlError(e)) if e.code == 1146 || e.code == 1049 => {
                        format!("(not yet: {})", e.message)
                    }
                    Err(e) => panic!("node{k}: `{sql}` failed: {e}"),
                },
                Err(e) => panic!("node{k}: cannot log in: {e}"),
            };
            if got == want {
                return;
            }
            if Instant::now() > end {
                panic!("node{k}: `{sql}` is {got:?}, expected {want:?} within {within:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL nodeK's server.
    pub fn kill9(&self, k: usize) {
        let pid = self.lab.pid(k).expect("pid");
        let st = Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(st.success());
        // Until the port is closed.
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.lab.ports[k - 1])).is_ok() {
            assert!(Instant::now() < end, "node{k} still answers after kill -9");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `status --format json`, parsed.
    pub fn status_json(&self) -> (i32, serde_json::Value) {
        let out = self.run(&["status", "--format", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status JSON does not parse ({e}):\n{}", show(&out)));
        (out.status.code().unwrap_or(-1), v)
    }

    pub fn topology_text(&self) -> String {
        std::fs::read_to_string(&self.file).expect("topology file")
    }
}

pub fn rows(conn: &mut mysql::Conn, sql: &str) -> Vec<Vec<String>> {
    let rs: Vec<mysql::Row> = conn.query(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    rs.into_iter()
        .map(|r| {
            (0..r.len())
                .map(|i| match r.as_ref(i) {
                    Some(mysql::Value::NULL) | None => "NULL".to_string(),
                    Some(mysql::Value::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
                    Some(v) => v.as_sql(true).trim_matches('\'').to_string(),
                })
                .collect()
        })
        .collect()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The application account the writer uses: INSERT/SELECT on app.* only (no privilege that
/// bypasses read_only). Run on the master before replication, or where it replicates.
pub const APP_SETUP: &str = "CREATE DATABASE IF NOT EXISTS app; \
    CREATE TABLE IF NOT EXISTS app.seq (id BIGINT PRIMARY KEY) ENGINE=InnoDB; \
    CREATE USER IF NOT EXISTS 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw'; \
    GRANT SELECT, INSERT ON app.* TO 'app'@'127.0.0.1'";

/// An application writer: inserts sequential ids into app.seq on whichever server is writable,
/// trying the others on failure; stops after `max` ids or `max_time`. Records every
/// acknowledged id and the longest gap between two acknowledgements.
pub struct Writer {
    stop: Arc<AtomicBool>,
    /// Acknowledged ids so far, readable while it runs.
    count: Arc<std::sync::atomic::AtomicUsize>,
    handle: Option<std::thread::JoinHandle<WriterReport>>,
}

#[derive(Debug, Clone)]
pub struct WriterReport {
    pub acked: Vec<u64>,
    pub max_gap: Duration,
    pub switches: u32,
}

impl Writer {
    pub fn start(ports: Vec<u16>, max: u64, max_time: Duration) -> Writer {
        Writer::start_at(
            ports
                .into_iter()
                .map(|p| ("127.0.0.1".to_string(), p))
                .collect(),
            max,
            max_time,
        )
    }

    /// The writer against servers at (address, port), e.g. network-namespace hosts.
    pub fn start_at(targets: Vec<(String, u16)>, max: u64, max_time: Duration) -> Writer {
        let (user, password) = ("app".to_string(), "app-pw".to_string());
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let c2 = count.clone();
        let handle = std::thread::spawn(move || {
            let ports = targets;
            let connect = |(addr, port): (String, u16)| -> Option<mysql::Conn> {
                let opts = mysql::OptsBuilder::new()
                    .ip_or_hostname(Some(addr))
                    .tcp_port(port)
                    .user(Some(user.clone()))
                    .pass(Some(password.clone()))
                    .prefer_socket(false)
                    .tcp_connect_timeout(Some(Duration::from_secs(2)))
                    .read_timeout(Some(Duration::from_secs(5)))
                    .write_timeout(Some(Duration::from_secs(5)));
                mysql::Conn::new(opts).ok()
            };
            let started = Instant::now();
            let mut acked = Vec::new();
            let mut last_ack = Instant::now();
            let mut max_gap = Duration::ZERO;
            let mut cur = 0usize;
            let mut conn: Option<mysql::Conn> = None;
            let mut switches = 0;
            let mut next: u64 = 1;
            while next <= max && started.elapsed() < max_time && !s2.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = connect(ports[cur].clone());
                }
                // A plain application account: read_only refuses it (error 1290), which is
                // what makes it move to the server that became writable.
                let ok = match conn.as_mut() {
                    Some(c) => {
                        match c.query_drop(format!("INSERT INTO app.seq (id) VALUES ({next})")) {
                            Ok(()) => true,
                            // An earlier attempt of this id committed but its answer was lost (a
                            // master killed between its commit and its reply): the row is there.
                            Err(mysql::Error::MySqlError(e)) if e.code == 1062 => true,
                            Err(_) => false,
                        }
                    }
                    None => false,
                };
                if ok {
                    let now = Instant::now();
                    if !acked.is_empty() {
                        max_gap = max_gap.max(now - last_ack);
                    }
                    last_ack = now;
                    acked.push(next);
                    c2.store(acked.len(), Ordering::Relaxed);
                    next += 1;
                } else {
                    conn = None;
                    cur = (cur + 1) % ports.len();
                    switches += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            WriterReport {
                acked,
                max_gap,
                switches,
            }
        });
        Writer {
            stop,
            count,
            handle: Some(handle),
        }
    }

    /// How many writes were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    pub fn finish(mut self) -> WriterReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("writer thread")
    }
}

/// Write `text` to `path`.
pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A shared log for assertions from threads.
pub type Log = Arc<Mutex<Vec<String>>>;

/// Run repltool with a failpoint that pauses; call `during` once the pause is reached, then
/// wait for the end. Bounded: the pause line must come within 60 s.
pub fn run_with_pause(f: &str, args: &[&str], failpoint: &str, during: impl FnOnce()) -> Output {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let mut child = Command::new(lab::bin())
        .args(args)
        .args(["-f", f])
        .env("REPLTOOL_FAILPOINT", format!("{failpoint}:pause=3000"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn repltool");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut r = BufReader::new(stderr);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains("failpoint") && line.contains("pausing") {
                let _ = tx.send(());
            }
            seen.push_str(&line);
            line.clear();
        }
        seen
    });
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the failpoint was not reached");
    during();
    let status = child.wait().expect("wait");
    let mut out = Vec::new();
    if let Some(mut so) = child.stdout.take() {
        let _ = so.read_to_end(&mut out);
    }
    let err = reader.join().unwrap_or_default();
    Output {
        status,
        stdout: out,
        stderr: err.into_bytes(),
    }
}
