//! The cluster lock: every command that changes servers (init, promote, restart) holds it for
//! its whole run, so two runs never interleave (two promotes each promoting their own target,
//! two inits streaming two dumps into one replica). It is
//!
//! - a named server lock (`GET_LOCK`) on every server that answers, taken in host order without
//!   waiting, on a connection kept open for the run: the server releases it when the run ends
//!   or dies (a killed repltool, a lost link), so a dead run never blocks the next one;
//! - an exclusive `flock` on the topology file, so two runs from one machine conflict even
//!   when a server is down, and the file rewrite of a promote is never raced.
//!
//! A second run refuses (exit 1), naming who holds the lock: the connection, account and age
//! on the server, or the process holding the file.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::error::problem;
use crate::flavor::Flavor;
use crate::observe::column;
use crate::topology::Topology;
use crate::transport::sql::SqlConn;
use crate::transport::Sessions;

/// Held for as long as it lives.
pub struct ClusterLock {
    /// Open connections holding the named lock, one per server.
    held: Vec<(String, Box<dyn SqlConn>, Flavor)>,
    /// Servers whose lock was given up for a restart, to take back.
    suspended: Vec<String>,
    /// Servers whose connection is lent out (the lock stays held on them).
    lent: Vec<(String, Flavor)>,
    name: String,
    _file: Option<File>,
    /// With `watch:`: the cluster's etcd lock (watchers and people never act at once).
    _etcd: Option<crate::watch::CommandLock>,
}

impl std::fmt::Debug for ClusterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts: Vec<&str> = self.held.iter().map(|(h, _, _)| h.as_str()).collect();
        write!(f, "ClusterLock({} on {})", self.name, hosts.join(", "))
    }
}

/// The lock's name on the servers: per cluster, at most 64 characters (MySQL's limit).
pub fn lock_name(topo: &Topology) -> String {
    let mut n = format!("repltool:{}", topo.name);
    if n.len() > 64 {
        let mut cut = 64;
        while !n.is_char_boundary(cut) {
            cut -= 1;
        }
        n.truncate(cut);
    }
    n
}

/// Who holds the flock of `file`, from /proc/locks: "pid 1234 (repltool promote db2)".
fn file_holder(file: &File) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let ino = file.metadata().ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    for l in locks.lines() {
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:123456 0 EOF"
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" {
            continue;
        }
        let (pid, dev_ino) = (f[4], f[5]);
        if dev_ino.rsplit(':').next() == Some(&ino.to_string()) {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| {
                    String::from_utf8_lossy(&b)
                        .split('\0')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            return Some(if cmd.is_empty() {
                format!("pid {pid}")
            } else {
                format!("pid {pid} ({cmd})")
            });
        }
    }
    None
}

fn lock_file(path: &Path) -> Result<File> {
    let f = File::open(path).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    // SAFETY: flock(2) on a descriptor we own.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let who = file_holder(&f).unwrap_or_else(|| "another process".into());
        return Err(problem(format!(
            "another repltool run is working on this cluster: {} is locked by {who}. Wait for \
             it to finish (nothing was changed)",
            path.display()
        )));
    }
    Ok(f)
}

/// How [`ClusterLock::acquire_how`] takes the lock.
#[derive(Default)]
struct How {
    etcd_held: bool,
    steal: bool,
    /// The read timeout of the lock's connections.
    read_timeout: Duration,
}

impl ClusterLock {
    /// Take the lock: the file first, then every server in `hosts` (those that answer), in host
    /// order. Hosts whose login fails are skipped (a dead master cannot hold a lock); any
    /// server where another session holds it: release what was taken and refuse.
    pub fn acquire(
        topo: &Topology,
        file: Option<&Path>,
        sessions: &Sessions,
        hosts: &[String],
        timeout: Duration,
    ) -> Result<ClusterLock> {
        Self::acquire_with(topo, file, sessions, hosts, timeout, false, false)
    }

    /// [`ClusterLock::acquire`] on connections whose reads may wait `read_timeout` (the
    /// longest wait of the run), for a caller that goes on to work on them once lent
    /// ([`ClusterLock::lend`]): promote runs its statements on the lock's own connections.
    pub fn acquire_to_work(
        topo: &Topology,
        file: Option<&Path>,
        sessions: &Sessions,
        hosts: &[String],
        timeout: Duration,
        read_timeout: Duration,
    ) -> Result<ClusterLock> {
        Self::acquire_how(
            topo,
            file,
            sessions,
            hosts,
            timeout,
            How {
                read_timeout,
                ..How::default()
            },
        )
    }

    /// [`ClusterLock::acquire`]; with `watch:` in the file, the cluster's etcd lock first
    /// (the one watchers take to recover), unless `etcd_held` (the caller is the watcher that
    /// holds it). `steal`: the caller holds the etcd lock and finishes the recovery of a
    /// watcher that lost it, so a session holding a server's lock is that watcher's, paused:
    /// it is ended.
    pub fn acquire_with(
        topo: &Topology,
        file: Option<&Path>,
        sessions: &Sessions,
        hosts: &[String],
        timeout: Duration,
        etcd_held: bool,
        steal: bool,
    ) -> Result<ClusterLock> {
        Self::acquire_how(
            topo,
            file,
            sessions,
            hosts,
            timeout,
            How {
                etcd_held,
                steal,
                read_timeout: timeout,
            },
        )
    }

    fn acquire_how(
        topo: &Topology,
        file: Option<&Path>,
        sessions: &Sessions,
        hosts: &[String],
        timeout: Duration,
        how: How,
    ) -> Result<ClusterLock> {
        let How {
            etcd_held,
            steal,
            read_timeout,
        } = how;
        let etcd = if etcd_held {
            None
        } else {
            crate::watch::lock_for_command(topo)?
        };
        let file_lock = match file {
            Some(p) => Some(lock_file(p)?),
            None => None,
        };
        let name = lock_name(topo);
        let mut held = Vec::new();
        let mut order: Vec<&crate::topology::Host> = topo
            .hosts
            .iter()
            .filter(|h| hosts.contains(&h.name))
            .collect();
        order.sort_by(|a, b| a.name.cmp(&b.name));
        // The logins (and the flavor query) in parallel (8 hosts one after the other cost
        // 0.2 s over SSH), then the locks in name order.
        let conns = crate::par::each(&order, |h| {
            let m = sessions
                .get(&h.name)
                .ok_or_else(|| anyhow!("{}: no session", h.name))?;
            let mut conn = {
                let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
                s.sql_connect(h, timeout, read_timeout.max(timeout))?
            };
            let f = conn.flavor();
            Ok((conn, f))
        });
        for (h, conn) in order.into_iter().zip(conns) {
            let Ok((mut conn, f)) = conn else { continue };
            let f = f?;
            let mut got = conn.one(&f.get_lock(&name))?.as_deref() == Some("1");
            if !got && etcd_held && steal {
                // The caller holds the cluster's etcd lock and finishes another watcher's
                // recovery, so whoever holds this server's lock is that watcher, paused after
                // it lost the etcd lock: end its session (which also fences what it would still
                // send there) and take the lock.
                let id = conn
                    .query(&f.lock_holder_query(&name))
                    .ok()
                    .and_then(|rows| rows.into_iter().next())
                    .and_then(|r| {
                        column(&r, "ID")
                            .ok()
                            .flatten()
                            .and_then(|v| v.parse::<u64>().ok())
                    });
                if let Some(id) = id {
                    let _ = conn.exec(&f.kill_connection(id));
                    crate::report::say(format!(
                        "{}: ended session {id}, a stale holder of the cluster lock (the etcd lock is ours)",
                        h.name
                    ));
                }
                let end = std::time::Instant::now() + Duration::from_secs(3);
                while !got && std::time::Instant::now() < end {
                    std::thread::sleep(Duration::from_millis(100));
                    got = conn.one(&f.get_lock(&name))?.as_deref() == Some("1");
                }
            }
            match got {
                true => held.push((h.name.clone(), conn, f)),
                false => {
                    let who = conn
                        .query(&f.lock_holder_query(&name))
                        .ok()
                        .and_then(|rows| rows.into_iter().next())
                        .map(|r| {
                            let g =
                                |k: &str| column(&r, k).ok().flatten().unwrap_or("?").to_string();
                            format!(
                                "connection {} of {}@{}, for {} s",
                                g("ID"),
                                g("USER"),
                                g("HOST"),
                                g("TIME")
                            )
                        })
                        .unwrap_or_else(|| "a session that just ended".into());
                    let mut me = ClusterLock {
                        held,
                        suspended: Vec::new(),
                        lent: Vec::new(),
                        name: name.clone(),
                        _file: None,
                        _etcd: None,
                    };
                    me.release();
                    return Err(problem(format!(
                        "another repltool run holds the cluster lock {name:?} on {} ({who}); \
                         wait for it to finish. Nothing was changed",
                        h.name
                    )));
                }
            }
        }
        Ok(ClusterLock {
            held,
            suspended: Vec::new(),
            lent: Vec::new(),
            name,
            _file: file_lock,
            _etcd: etcd,
        })
    }

    /// Give up the lock on one server for its restart, until [`ClusterLock::resume`]: a
    /// server waits for an idle session at shutdown (MySQL 9.7: 2 s before "Forcing close of
    /// thread"). Other runs stay out meanwhile: the file lock is held, and a run takes the
    /// servers' locks in name order, refusing at the first it cannot have.
    pub fn suspend(&mut self, host: &str) {
        if let Some(i) = self.held.iter().position(|(h, _, _)| h == host) {
            let (h, mut c, f) = self.held.remove(i);
            let _ = c.exec(&f.release_lock(&self.name));
            self.suspended.push(h);
        }
    }

    /// Take the lock back on a server [`ClusterLock::suspend`]ed it on (retrying for a few
    /// seconds: another run may try it in passing before it refuses on another server).
    pub fn resume(
        &mut self,
        host: &crate::topology::Host,
        session: &mut dyn crate::transport::HostSession,
        timeout: Duration,
    ) -> Result<()> {
        let Some(i) = self.suspended.iter().position(|h| *h == host.name) else {
            return Ok(());
        };
        let mut conn = session.sql_connect(host, timeout, timeout)?;
        let f = conn.flavor()?;
        let end = std::time::Instant::now() + Duration::from_secs(3);
        loop {
            if conn.one(&f.get_lock(&self.name))?.as_deref() == Some("1") {
                break;
            }
            if std::time::Instant::now() >= end {
                return Err(problem(format!(
                    "{}: another repltool run took the cluster lock {:?} while the server \
                     restarted; stopping here (the server runs with its new settings)",
                    host.name, self.name
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.suspended.remove(i);
        self.held.push((host.name.clone(), conn, f));
        Ok(())
    }

    /// Lend the connections holding the lock (each server's lock stays held while they live),
    /// so the run's first observation reads on them instead of logging in again; given back
    /// with [`ClusterLock::give_back`].
    pub fn lend(&mut self) -> Vec<(String, Box<dyn SqlConn>)> {
        let mut out = Vec::new();
        for (h, c, f) in std::mem::take(&mut self.held) {
            self.lent.push((h.clone(), f));
            out.push((h, c));
        }
        out
    }

    /// Take back what [`ClusterLock::lend`] lent.
    pub fn give_back(&mut self, conns: Vec<(String, Box<dyn SqlConn>)>) {
        for (h, c) in conns {
            if let Some(i) = self.lent.iter().position(|(n, _)| *n == h) {
                let (_, f) = self.lent.remove(i);
                self.held.push((h, c, f));
            }
        }
        self.held.sort_by(|a, b| a.0.cmp(&b.0));
    }

    /// The servers the lock is held on (a lent connection still holds it).
    pub fn hosts(&self) -> Vec<String> {
        self.held
            .iter()
            .map(|(h, _, _)| h.clone())
            .chain(self.lent.iter().map(|(h, _)| h.clone()))
            .collect()
    }

    fn release(&mut self) {
        for (_, c, f) in self.held.iter_mut() {
            let _ = c.exec(&f.release_lock(&self.name));
        }
        self.held.clear();
    }
}

impl Drop for ClusterLock {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_servers_limit() {
        let mut t = crate::testing::topo(&[("a", None)]);
        t.name = "shop".into();
        assert_eq!(lock_name(&t), "repltool:shop");
        t.name = "é".repeat(40);
        let n = lock_name(&t);
        assert!(n.len() <= 64 && n.starts_with("repltool:"), "{n}");
    }

    fn server(get_lock: &[&str]) -> crate::transport::fake::Shared {
        use crate::transport::fake::{FakeServer, Reply};
        let s = FakeServer::shared();
        {
            let mut g = s.lock().unwrap();
            g.on(
                "SELECT @@version, @@version_comment",
                Reply::row(&[("v", Some("9.7.4")), ("c", Some("(Debian)"))]),
            );
            for v in get_lock {
                g.on_times("GET_LOCK", 1, Reply::value(v));
            }
            g.on("RELEASE_LOCK", Reply::value("1"))
                .on("IS_USED_LOCK", Reply::empty())
                .on("performance_schema", Reply::empty());
        }
        s
    }

    /// A fake session per host, on its fake server.
    fn sessions_of(
        servers: &[(&str, &crate::transport::fake::Shared)],
    ) -> crate::transport::Sessions {
        use crate::transport::fake::FakeSession;
        let mut sessions: crate::transport::Sessions = std::collections::HashMap::new();
        for (n, s) in servers {
            sessions.insert(
                n.to_string(),
                std::sync::Mutex::new(Box::new(FakeSession::new(n, (*s).clone()))),
            );
        }
        sessions
    }

    #[test]
    fn a_restart_gives_the_lock_up_on_that_server_only_and_takes_it_back() {
        let topo = crate::testing::topo(&[("a", None), ("b", Some("a"))]);
        let (sa, sb) = (server(&["1", "1"]), server(&["1"]));
        let sessions = sessions_of(&[("a", &sa), ("b", &sb)]);
        let names = vec!["a".to_string(), "b".to_string()];
        let t = Duration::from_secs(1);
        let mut l = ClusterLock::acquire(&topo, None, &sessions, &names, t).unwrap();
        assert_eq!(l.hosts(), ["a", "b"]);
        l.suspend("a");
        assert_eq!(l.hosts(), ["b"]);
        assert_eq!(sa.lock().unwrap().ran("RELEASE_LOCK").len(), 1);
        assert!(sb.lock().unwrap().ran("RELEASE_LOCK").is_empty());
        let a = topo.host("a").unwrap();
        {
            let mut s = sessions["a"].lock().unwrap();
            l.resume(a, s.as_mut(), t).unwrap();
        }
        assert_eq!(l.hosts(), ["b", "a"]);
        assert_eq!(sa.lock().unwrap().ran("GET_LOCK").len(), 2);
        // Resuming a server that was never given up changes nothing.
        let mut s = sessions["b"].lock().unwrap();
        l.resume(topo.host("b").unwrap(), s.as_mut(), t).unwrap();
        assert_eq!(sb.lock().unwrap().ran("GET_LOCK").len(), 1);
    }

    #[test]
    fn connections_lent_to_observe_keep_the_lock_and_come_back() {
        let topo = crate::testing::topo(&[("a", None), ("b", Some("a"))]);
        let (sa, sb) = (server(&["1"]), server(&["1"]));
        let sessions = sessions_of(&[("a", &sa), ("b", &sb)]);
        let names = vec!["a".to_string(), "b".to_string()];
        let mut l =
            ClusterLock::acquire(&topo, None, &sessions, &names, Duration::from_secs(1)).unwrap();
        let lent = l.lend();
        assert_eq!(lent.len(), 2);
        // Lent is not released: the lock is still held on both servers.
        assert_eq!(l.hosts(), ["a", "b"]);
        assert!(sa.lock().unwrap().ran("RELEASE_LOCK").is_empty());
        let (facts, back) = crate::observe::observe_all_on(
            &topo,
            &sessions,
            &[],
            Duration::from_secs(1),
            false,
            lent,
        );
        assert_eq!(facts.len(), 2);
        assert_eq!(back.len(), 2);
        l.give_back(back);
        assert_eq!(l.hosts(), ["a", "b"]);
        drop(l);
        for s in [&sa, &sb] {
            assert_eq!(s.lock().unwrap().ran("RELEASE_LOCK").len(), 1);
        }
    }

    #[test]
    fn another_run_that_took_the_server_during_its_restart_stops_this_one() {
        use crate::transport::fake::FakeSession;
        let topo = crate::testing::topo(&[("a", None)]);
        // Taken, then held by someone else for every retry.
        let sa = server(&["1"]);
        sa.lock()
            .unwrap()
            .on("GET_LOCK", crate::transport::fake::Reply::value("0"));
        let mut sessions: crate::transport::Sessions = std::collections::HashMap::new();
        sessions.insert(
            "a".into(),
            std::sync::Mutex::new(Box::new(FakeSession::new("a", sa.clone()))),
        );
        let t = Duration::from_secs(1);
        let mut l = ClusterLock::acquire(&topo, None, &sessions, &["a".to_string()], t).unwrap();
        l.suspend("a");
        let mut s = sessions["a"].lock().unwrap();
        let e = l
            .resume(topo.host("a").unwrap(), s.as_mut(), t)
            .unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("a: another repltool run took the cluster lock"),
            "{msg}"
        );
        assert_eq!(crate::error::exit_code(&e), 1);
        assert!(l.hosts().is_empty());
    }

    #[test]
    fn a_second_holder_of_the_file_is_refused_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.yaml");
        std::fs::write(&p, "x").unwrap();
        let _first = lock_file(&p).unwrap();
        let e = lock_file(&p).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("is locked by pid"), "{msg}");
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        assert_eq!(crate::error::exit_code(&e), 1);
    }
}
