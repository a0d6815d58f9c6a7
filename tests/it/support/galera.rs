//! Galera test clusters on the network-namespace hosts: a `galera:` topology file over some of
//! the hosts of a [`NetnsHosts`], their wsrep status, and a bounded application writer that
//! moves to another member when the one it writes to goes away.

use std::path::PathBuf;
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use super::netns::{run_bounded, show, Flavor, NetnsHosts, ROOT_ADDR};

/// The hosts and the galera topology file that describes some of them.
pub struct Galera {
    pub net: NetnsHosts,
    pub file: PathBuf,
}

impl Galera {
    /// `n` hosts (the machine's MariaDB, each started standalone the Debian way); the file names
    /// the first `members` of them as the cluster's members with SST method `sst`.
    pub fn start(n: usize, members: usize, sst: &str) -> Galera {
        Galera::start_with_proxies(n, members, sst, 0)
    }

    /// [`Galera::start`] plus `proxies` proxy hosts p1..pM (see
    /// [`NetnsHosts::start_with_proxies`]), not yet in the file.
    pub fn start_with_proxies(n: usize, members: usize, sst: &str, proxies: usize) -> Galera {
        let net = NetnsHosts::start_with_proxies(&vec![Flavor::System; n], proxies);
        let file = net.dir.join("galera.yaml");
        let g = Galera { net, file };
        g.write(members, sst, &[]);
        g
    }

    /// Rewrite the file: hosts h1..h`members` are members, `replicas` are (name, master) pairs
    /// of further hosts replicating asynchronously.
    pub fn write(&self, members: usize, sst: &str, replicas: &[(usize, usize)]) {
        let mut hosts = String::new();
        for k in 1..=members {
            let h = self.net.h(k);
            hosts.push_str(&format!("  {}: {{ address: {} }}\n", h.name, h.addr));
        }
        for (k, m) in replicas {
            let h = self.net.h(*k);
            hosts.push_str(&format!(
                "  {}: {{ address: {}, master: h{m} }}\n",
                h.name, h.addr
            ));
        }
        let yaml = format!(
            "name: shop\n\
             defaults:\n\
             \x20 ssh:\n\
             \x20   user: root\n\
             \x20   identity_file: {id}\n\
             \x20   known_hosts: {kh}\n\
             \x20   connect_timeout: 3\n\
             \x20 mysql:\n\
             \x20   user: admin\n\
             \x20   password_file: admin.pw\n\
             replication:\n\
             \x20 user: repl\n\
             \x20 password_file: repl.pw\n\
             galera:\n\
             \x20 cluster_name: shop_galera\n\
             \x20 sst: {sst}\n\
             hosts:\n{hosts}",
            id = self.net.identity.display(),
            kh = self.net.known_hosts.display()
        );
        std::fs::write(&self.file, yaml).expect("galera topology file");
    }

    /// Append the `proxies:` block of every proxy host (HAProxy or nginx, `kind`) to the file
    /// (after [`Galera::write`], which starts the file afresh).
    pub fn add_proxies(&self, kind: &str) {
        let mut text = std::fs::read_to_string(&self.file).expect("galera topology file");
        text.push_str(&super::proxy::proxies_yaml(&self.net, kind, false));
        std::fs::write(&self.file, text).expect("galera topology file");
    }

    /// `repltool ARGS -f galera.yaml`, bounded (300 s: state transfers take a while).
    pub fn run(&self, args: &[&str]) -> Output {
        let t = Instant::now();
        let out = run_bounded(
            std::process::Command::new(env!("CARGO_BIN_EXE_repltool"))
                .args(args)
                .arg("-f")
                .arg(&self.file),
            None,
            Duration::from_secs(300),
        );
        eprintln!(
            "galera: repltool {} -> {:?} in {:.2}s",
            args.join(" "),
            out.status.code(),
            t.elapsed().as_secs_f64()
        );
        out
    }

    /// `run` that must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "repltool {} failed:\n{}",
            args.join(" "),
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A wsrep status variable on host K (over its local socket).
    pub fn wsrep(&self, k: usize, var: &str) -> String {
        self.net
            .h(k)
            .sql(&format!("SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = '{}'", var.to_uppercase()))
    }

    /// Assert that hosts `ks` are Synced in one Primary component of `ks.len()` with one state
    /// UUID; returns it.
    pub fn assert_cluster(&self, ks: &[usize]) -> String {
        let mut uuid = String::new();
        for &k in ks {
            assert_eq!(self.wsrep(k, "wsrep_local_state_comment"), "Synced", "h{k}");
            assert_eq!(self.wsrep(k, "wsrep_cluster_status"), "Primary", "h{k}");
            assert_eq!(
                self.wsrep(k, "wsrep_cluster_size"),
                ks.len().to_string(),
                "h{k}"
            );
            let u = self.wsrep(k, "wsrep_cluster_state_uuid");
            if uuid.is_empty() {
                uuid = u;
            } else {
                assert_eq!(u, uuid, "h{k} is in another cluster state");
            }
        }
        uuid
    }

    /// The server's pid on each of `ks` (a restart changes it).
    pub fn pids(&self, ks: &[usize]) -> Vec<Option<i32>> {
        ks.iter().map(|k| self.net.h(*k).server_pid()).collect()
    }

    /// The application account and table, on host K (they replicate).
    pub fn app_setup(&self, k: usize) {
        self.net.h(k).sql(&format!(
            "CREATE DATABASE IF NOT EXISTS app; \
             CREATE TABLE IF NOT EXISTS app.seq (id BIGINT PRIMARY KEY, at VARCHAR(16)) ENGINE=InnoDB; \
             CREATE USER IF NOT EXISTS 'app'@'{ROOT_ADDR}' IDENTIFIED BY 'app-pw'; \
             GRANT SELECT, INSERT ON app.* TO 'app'@'{ROOT_ADDR}'"
        ));
    }

    /// The ids in app.seq on host K.
    pub fn ids(&self, k: usize) -> Vec<u64> {
        let out = self.net.h(k).sql("SELECT id FROM app.seq ORDER BY id");
        out.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    pub fn addrs(&self, ks: &[usize]) -> Vec<String> {
        ks.iter().map(|k| self.net.h(*k).addr.clone()).collect()
    }
}

/// A bounded application writer: inserts sequential ids into app.seq through one member,
/// moving to the next member when an insert fails (its member restarted or lost quorum);
/// records every acknowledged id. Stops after `max` ids, `max_time`, or `stop()`.
pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<WriterReport>>,
}

#[derive(Debug, Clone)]
pub struct WriterReport {
    pub acked: Vec<u64>,
    pub failures: u32,
    pub max_gap: Duration,
}

impl Writer {
    pub fn start(addrs: Vec<String>, first_id: u64, max: u64, max_time: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let connect = |addr: &str| -> Option<mysql::Conn> {
                let opts = mysql::OptsBuilder::new()
                    .ip_or_hostname(Some(addr.to_string()))
                    .tcp_port(3306)
                    .user(Some("app"))
                    .pass(Some("app-pw"))
                    .prefer_socket(false)
                    .tcp_connect_timeout(Some(Duration::from_secs(2)))
                    .read_timeout(Some(Duration::from_secs(5)))
                    .write_timeout(Some(Duration::from_secs(5)));
                mysql::Conn::new(opts).ok()
            };
            let started = Instant::now();
            let mut acked = Vec::new();
            let mut failures = 0;
            let mut cur = 0usize;
            let mut conn: Option<mysql::Conn> = None;
            let mut next = first_id;
            let mut last_ack = Instant::now();
            let mut max_gap = Duration::ZERO;
            while next < first_id + max
                && started.elapsed() < max_time
                && !s2.load(Ordering::Relaxed)
            {
                if conn.is_none() {
                    conn = connect(&addrs[cur]);
                }
                let ok = match conn.as_mut() {
                    Some(c) => c
                        .query_drop(format!(
                            "INSERT INTO app.seq (id, at) VALUES ({next}, '{}')",
                            addrs[cur].rsplit('.').next().unwrap_or("")
                        ))
                        .is_ok(),
                    None => false,
                };
                if ok {
                    let now = Instant::now();
                    if !acked.is_empty() {
                        max_gap = max_gap.max(now - last_ack);
                    }
                    last_ack = now;
                    acked.push(next);
                    next += 1;
                } else {
                    // An insert that failed may still have committed (the reply was lost): a
                    // fresh id keeps "acknowledged" exact.
                    next += 1;
                    failures += 1;
                    conn = None;
                    cur = (cur + 1) % addrs.len();
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            WriterReport {
                acked,
                failures,
                max_gap,
            }
        });
        Writer {
            stop,
            handle: Some(handle),
        }
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
