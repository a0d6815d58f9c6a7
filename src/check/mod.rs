//! `repltool check`: pre-flight checks that change nothing, as a table of check / host / result
//! / detail. Exit 1 when any check fails. Observe (`observe_checks`), then pure verdicts
//! (`verdicts`), unit-tested from facts.

pub mod galera;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::json;

use crate::execute::{remove_file, write_defaults};
use crate::observe::{self, connect_sql, ConfigTarget};
use crate::topology::{Host, Topology, Transport};
use crate::transport::{shell_quote, HostSession};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl Verdict {
    fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CheckRow {
    pub check: &'static str,
    pub host: String,
    pub verdict: Verdict,
    pub detail: String,
}

/// The clock skew beyond which replication lag figures mislead.
const MAX_SKEW_SECS: i64 = 5;

/// What `check` observed of one host.
#[derive(Debug, Default)]
pub struct HostCheck {
    /// How the shell was reached, or why not.
    pub shell: Option<Result<String, String>>,
    /// The admin account's grants (SHOW GRANTS rows).
    pub grants: Vec<String>,
    /// Whether the config target's directory exists and is writable.
    pub config_writable: Option<bool>,
    /// Bytes of user data (for a master, what a seed copies).
    pub data_size: Option<u64>,
    /// Free bytes in the datadir's file system.
    pub free_disk: Option<u64>,
    /// The replication login from this (slave) host to its master: Ok(what) or Err(why);
    /// None when the account does not exist yet.
    pub repl_login: Option<Result<String, String>>,
}

/// Everything `check` observed.
pub struct CheckFacts {
    pub facts: HashMap<String, observe::Facts>,
    pub hosts: HashMap<String, HostCheck>,
    /// This machine's clock, seconds since the epoch.
    pub now: i64,
    /// Galera members' hosts and ports (a file with `galera:`).
    pub galera: Option<galera::GaleraCheck>,
}

/// Observe what the checks judge: sessions (host keys verified), SQL facts with the config
/// layout, grants, config directory, data size, free disk, and the replication login from
/// each slave's own host. Changes nothing (the login test writes a mode-600 option file on
/// the slave and removes it).
pub fn observe_checks(topo: &Topology, timeout: Duration) -> CheckFacts {
    let (sessions, failed) = crate::transport::connect_all(topo, Some(timeout));
    let mut hosts: HashMap<String, HostCheck> = HashMap::new();
    for h in &topo.hosts {
        let shell = match failed.iter().find(|(n, _)| n == &h.name) {
            Some((_, e)) => Err(format!("{e:#}")),
            None => Ok(match &h.transport {
                Transport::Ssh(s) => format!(
                    "{}@{}:{} (host key verified against {})",
                    s.user,
                    h.address,
                    s.port,
                    s.known_hosts.display()
                ),
                Transport::Local => "local transport (this machine)".to_string(),
            }),
        };
        hosts.insert(
            h.name.clone(),
            HostCheck {
                shell: Some(shell),
                ..HostCheck::default()
            },
        );
    }
    let facts = observe::observe_all(topo, &sessions, &[], timeout, true);
    let per_host = crate::par::each(&topo.hosts, |h| {
        let mut out = HostCheck::default();
        let Some(m) = sessions.get(&h.name) else {
            return Ok(out);
        };
        let mut sess = m.lock().unwrap_or_else(|e| e.into_inner());
        let f = facts.get(&h.name);
        if let Ok(mut c) = connect_sql(sess.as_mut(), h, timeout) {
            if let Some(s) = f.and_then(|f| f.sql.as_ref()) {
                out.grants = c.column(&s.flavor.show_own_grants()).unwrap_or_default();
                out.data_size = c
                    .one(&s.flavor.data_size_query())
                    .ok()
                    .flatten()
                    .and_then(|v| v.parse::<f64>().ok())
                    .map(|v| v as u64);
            }
        }
        if let Some(c) = f.and_then(|f| f.config.as_ref()) {
            let dir = c
                .target
                .path()
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default();
            let w = sess.run(
                &format!(
                    "test -d {d} && test -w {d}",
                    d = shell_quote(&dir.to_string_lossy())
                ),
                None,
                true,
                Duration::from_secs(10),
            );
            out.config_writable = Some(w.map(|o| o.ok()).unwrap_or(false));
        }
        if let Some(s) = f.and_then(|f| f.sql.as_ref()) {
            let df = sess.run(
                &format!("df -Pk {} | tail -1", shell_quote(&s.datadir)),
                None,
                false,
                Duration::from_secs(10),
            );
            out.free_disk = df
                .ok()
                .and_then(|o| {
                    o.stdout_str()
                        .split_whitespace()
                        .nth(3)
                        .and_then(|k| k.parse::<u64>().ok())
                })
                .map(|k| k * 1024);
        }
        if let Some(master) = h.master.as_ref().and_then(|m| topo.host(m)) {
            let exists = facts
                .get(&master.name)
                .and_then(|f| f.sql.as_ref())
                .is_some_and(|ms| ms.repl_user_hosts.iter().any(|a| a == &h.address));
            if exists {
                let flavor = f.and_then(|f| f.sql.as_ref()).map(|s| s.flavor);
                out.repl_login = Some(repl_login(sess.as_mut(), topo, h, master, flavor));
            }
        }
        Ok(out)
    });
    for (h, r) in topo.hosts.iter().zip(per_host) {
        if let (Ok(o), Some(hc)) = (r, hosts.get_mut(&h.name)) {
            hc.grants = o.grants;
            hc.config_writable = o.config_writable;
            hc.data_size = o.data_size;
            hc.free_disk = o.free_disk;
            hc.repl_login = o.repl_login;
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let galera = topo
        .galera
        .is_some()
        .then(|| galera::observe(topo, &sessions));
    CheckFacts {
        facts,
        hosts,
        now,
        galera,
    }
}

/// Judge what was observed: one row per check and host. Pure.
pub fn verdicts(topo: &Topology, cf: &CheckFacts) -> Vec<CheckRow> {
    let mut rows: Vec<CheckRow> = Vec::new();
    let mut row = |check: &'static str, host: &str, verdict: Verdict, detail: String| {
        rows.push(CheckRow {
            check,
            host: host.to_string(),
            verdict,
            detail,
        })
    };
    let facts = &cf.facts;
    let none = HostCheck::default();
    for h in &topo.hosts {
        let hc = cf.hosts.get(&h.name).unwrap_or(&none);
        match &hc.shell {
            Some(Ok(how)) => row("shell reachable", &h.name, Verdict::Pass, how.clone()),
            Some(Err(e)) => {
                row("shell reachable", &h.name, Verdict::Fail, e.clone());
                continue;
            }
            None => {}
        }
        let Some(f) = facts.get(&h.name) else {
            continue;
        };
        let Some(s) = &f.sql else {
            row(
                "admin login",
                &h.name,
                Verdict::Fail,
                f.sql_error.clone().unwrap_or_default(),
            );
            continue;
        };
        row(
            "admin login",
            &h.name,
            Verdict::Pass,
            format!(
                "{} on port {} ({})",
                h.mysql.user,
                h.mysql.port,
                s.flavor.describe()
            ),
        );
        let missing = s.flavor.missing_privileges(&hc.grants);
        row(
            "admin privileges",
            &h.name,
            if missing.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            if missing.is_empty() {
                "enough for init and promote".into()
            } else {
                format!(
                    "missing {}: {} is simplest",
                    missing.join("; "),
                    s.flavor.grant_all_advice(&h.mysql.user)
                )
            },
        );
        // A slave must be able to read its master's binary log.
        if let Some(m) = &h.master {
            if let Some(ms) = facts.get(m).and_then(|f| f.sql.as_ref()) {
                let verdict = match s.flavor.can_replicate_from(&ms.flavor) {
                    Ok(()) => (
                        Verdict::Pass,
                        format!(
                            "{} from {} ({})",
                            s.flavor.describe(),
                            m,
                            ms.flavor.describe()
                        ),
                    ),
                    Err(why) => (Verdict::Fail, why),
                };
                row("versions compatible", &h.name, verdict.0, verdict.1);
            }
        }
        let restart = f.config.as_ref().and_then(|c| c.restart.clone());
        row(
            "binary log",
            &h.name,
            if s.log_bin || restart.is_some() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            if s.log_bin {
                "on".into()
            } else if let Some(r) = &restart {
                format!("off; init enables it and restarts with `{r}`")
            } else {
                "off, and no restart command to enable it: set `restart:`".into()
            },
        );
        row(
            "restart command",
            &h.name,
            if restart.is_some() { Verdict::Pass } else { Verdict::Warn },
            restart.unwrap_or_else(|| "none found (systemd not PID 1, no service script); needed only when a restart is".into()),
        );
        // Replicas on other hosts cannot reach a server that listens on loopback only.
        let loopback = |a: &str| {
            let a = a.trim();
            a == "localhost" || a == "::1" || a.starts_with("127.")
        };
        let bind_loopback_only =
            !s.bind_address.trim().is_empty() && s.bind_address.split(',').all(loopback);
        if !loopback(&h.address) {
            row(
                "listens beyond loopback",
                &h.name,
                if bind_loopback_only {
                    Verdict::Warn
                } else {
                    Verdict::Pass
                },
                if bind_loopback_only {
                    format!(
                        "bind_address is {}: no replica can reach it at {}; init sets bind_address = 0.0.0.0 (a restart)",
                        s.bind_address, h.address
                    )
                } else {
                    format!(
                        "bind_address {}",
                        if s.bind_address.is_empty() {
                            "(all)"
                        } else {
                            &s.bind_address
                        }
                    )
                },
            );
        }
        let skew = (s.clock - cf.now).abs();
        row(
            "clock",
            &h.name,
            if skew <= MAX_SKEW_SECS {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            format!("{skew}s from this machine's clock (limit {MAX_SKEW_SECS}s)"),
        );
        match (&f.config, hc.config_writable) {
            (Some(c), Some(ok)) => {
                let dir = c
                    .target
                    .path()
                    .parent()
                    .map(|p| p.to_path_buf())
                    .unwrap_or_default();
                let what = match &c.target {
                    ConfigTarget::Fragment(p) => format!("fragment {}", p.display()),
                    ConfigTarget::Block(p) => format!("managed block in {}", p.display()),
                };
                row(
                    "config writable",
                    &h.name,
                    if ok { Verdict::Pass } else { Verdict::Fail },
                    if ok {
                        what
                    } else {
                        format!("{} is missing or not writable ({what})", dir.display())
                    },
                );
            }
            _ => row(
                "config writable",
                &h.name,
                Verdict::Fail,
                f.sql_error
                    .clone()
                    .unwrap_or_else(|| "config layout not read".into()),
            ),
        }
    }
    // server_ids: unique in the file (the loader guarantees it); say what runs now.
    let mut live: HashMap<u32, Vec<&str>> = HashMap::new();
    for h in &topo.hosts {
        if let Some(s) = facts.get(&h.name).and_then(|f| f.sql.as_ref()) {
            live.entry(s.server_id).or_default().push(&h.name);
        }
    }
    let mut dups: Vec<String> = live
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(id, v)| format!("{id} on {}", v.join(", ")))
        .collect();
    dups.sort();
    row(
        "server_ids unique",
        "*",
        Verdict::Pass,
        if dups.is_empty() {
            "unique in the file and on the servers".into()
        } else {
            format!(
                "unique in the file; running now with duplicates ({}) that init replaces",
                dups.join("; ")
            )
        },
    );
    // The replication login, tested from each slave's own host towards its master, and room
    // for a seed copy.
    for h in &topo.hosts {
        let Some(m) = h.master.as_ref().and_then(|m| topo.host(m)) else {
            continue;
        };
        let hc = cf.hosts.get(&h.name).unwrap_or(&none);
        if !matches!(hc.shell, Some(Ok(_)))
            || facts.get(&m.name).and_then(|f| f.sql.as_ref()).is_none()
        {
            continue;
        }
        match &hc.repl_login {
            None => row(
                "replication login",
                &h.name,
                Verdict::Pass,
                format!(
                    "{}@{} does not exist on {} yet; init creates it",
                    topo.replication.user, h.address, m.name
                ),
            ),
            Some(Ok(d)) => row("replication login", &h.name, Verdict::Pass, d.clone()),
            Some(Err(d)) => row("replication login", &h.name, Verdict::Fail, d.clone()),
        }
        let need = cf.hosts.get(&m.name).and_then(|x| x.data_size).unwrap_or(0);
        let Some(ss) = facts.get(&h.name).and_then(|f| f.sql.as_ref()) else {
            continue;
        };
        match hc.free_disk {
            Some(free) => row(
                "disk for seeding",
                &h.name,
                if free > need {
                    Verdict::Pass
                } else {
                    Verdict::Fail
                },
                format!(
                    "{} MiB free in {}, {} MiB of data on {}",
                    free >> 20,
                    ss.datadir,
                    need >> 20,
                    m.name
                ),
            ),
            None => row(
                "disk for seeding",
                &h.name,
                Verdict::Warn,
                format!("could not read free space of {}", ss.datadir),
            ),
        }
    }
    if let Some(g) = &cf.galera {
        rows.extend(galera::verdicts(topo, g));
    }
    rows
}

/// Run every check; never changes anything.
pub fn run_checks(topo: &Topology, timeout: Duration) -> Vec<CheckRow> {
    // The database hosts and the proxies (`proxies:`) at once.
    let (cf, proxies) = std::thread::scope(|s| {
        let p = s.spawn(|| crate::proxy::report::observe_checks(topo, timeout));
        let cf = observe_checks(topo, timeout);
        (cf, p.join().unwrap_or_default())
    });
    let mut rows = verdicts(topo, &cf);
    rows.extend(crate::proxy::report::check_verdicts(topo, &proxies));
    rows
}

/// Log in as the replication user from the slave's host to its master, with the client on the
/// slave (credentials in a mode-600 option file, removed afterwards).
fn repl_login(
    sess: &mut dyn HostSession,
    topo: &Topology,
    slave: &Host,
    master: &Host,
    flavor: Option<crate::flavor::Flavor>,
) -> Result<String, String> {
    let Some(f) = flavor else {
        return Err("slave flavor unknown".into());
    };
    let fake = Host {
        mysql: crate::topology::Mysql {
            user: topo.replication.user.clone(),
            password: topo.replication.password.clone(),
            port: master.mysql.port,
            route: master.mysql.route,
        },
        ..slave.clone()
    };
    let def = match write_defaults(sess, &fake) {
        Ok(d) => d,
        Err(e) => return Err(format!("{e:#}")),
    };
    let cmd = f.login_test_command(&def.to_string_lossy(), &master.address, master.mysql.port);
    let out = sess.run(&cmd, None, false, Duration::from_secs(15));
    remove_file(sess, &def);
    match out {
        Ok(o) if o.ok() => Ok(format!(
            "{}@{} logs in to {} ({}:{})",
            topo.replication.user, slave.address, master.name, master.address, master.mysql.port
        )),
        Ok(o) => Err(format!(
            "from {} to {} ({}:{}): {}",
            slave.name,
            master.name,
            master.address,
            master.mysql.port,
            o.stdout_str().trim()
        )),
        Err(e) => Err(format!("{e:#}")),
    }
}

pub fn render(rows: &[CheckRow], json_out: bool) -> String {
    if json_out {
        let v: Vec<_> = rows
            .iter()
            .map(|r| json!({"check": r.check, "host": r.host, "result": r.verdict.as_str(), "detail": r.detail}))
            .collect();
        return serde_json::to_string_pretty(
            &json!({"ok": rows.iter().all(|r| r.verdict != Verdict::Fail), "checks": v}),
        )
        .unwrap_or_default()
            + "\n";
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec!["check", "host", "result", "detail"]);
    for r in rows {
        t.add_row(vec![
            r.check.to_string(),
            r.host.clone(),
            r.verdict.as_str().to_string(),
            r.detail.clone(),
        ]);
    }
    let fails = rows.iter().filter(|r| r.verdict == Verdict::Fail).count();
    format!(
        "{t}\n{}\n",
        if fails == 0 {
            "all checks passed".to_string()
        } else {
            format!("{fails} check(s) failed")
        }
    )
}

#[cfg(test)]
mod tests {
    //! Verdicts from facts, without servers.
    use super::*;
    use crate::flavor::Flavor;
    use crate::testing::{converged, topo};

    fn facts_of(t: &Topology) -> CheckFacts {
        let facts = converged(t);
        let hosts = t
            .hosts
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    HostCheck {
                        shell: Some(Ok("local".into())),
                        grants: vec![
                            "GRANT ALL PRIVILEGES ON *.* TO `a`@`h` WITH GRANT OPTION".into()
                        ],
                        config_writable: Some(true),
                        data_size: Some(10 << 20),
                        free_disk: Some(1 << 30),
                        repl_login: Some(Ok("logs in".into())),
                    },
                )
            })
            .collect();
        CheckFacts {
            facts,
            hosts,
            now: 0,
            galera: None,
        }
    }

    fn verdict(rows: &[CheckRow], check: &str, host: &str) -> (Verdict, String) {
        rows.iter()
            .find(|r| r.check == check && r.host == host)
            .map(|r| (r.verdict, r.detail.clone()))
            .unwrap_or_else(|| panic!("no {check} row for {host}: {rows:?}"))
    }

    #[test]
    fn a_healthy_cluster_passes_every_check() {
        let t = topo(&[("db1", None), ("db2", Some("db1"))]);
        let rows = verdicts(&t, &facts_of(&t));
        let fails: Vec<&CheckRow> = rows.iter().filter(|r| r.verdict == Verdict::Fail).collect();
        assert!(fails.is_empty(), "{fails:?}");
    }

    #[test]
    fn unreadable_links_skewed_clocks_small_disks_and_missing_privileges_fail() {
        let t = topo(&[("db1", None), ("db2", Some("db1"))]);
        let mut cf = facts_of(&t);
        cf.facts
            .get_mut("db2")
            .unwrap()
            .sql
            .as_mut()
            .unwrap()
            .flavor = Flavor::detect("9.7.4", "MySQL").unwrap();
        cf.facts.get_mut("db1").unwrap().sql.as_mut().unwrap().clock = 60;
        cf.hosts.get_mut("db2").unwrap().free_disk = Some(1 << 20);
        cf.hosts.get_mut("db1").unwrap().grants = vec!["GRANT SELECT ON *.* TO `a`@`h`".into()];
        cf.hosts.get_mut("db2").unwrap().repl_login = Some(Err("Access denied".into()));
        let rows = verdicts(&t, &cf);
        let (v, d) = verdict(&rows, "versions compatible", "db2");
        assert_eq!(v, Verdict::Fail);
        assert!(d.contains("cannot replicate from a MariaDB"), "{d}");
        assert_eq!(verdict(&rows, "clock", "db1").0, Verdict::Fail);
        let (v, d) = verdict(&rows, "disk for seeding", "db2");
        assert_eq!(v, Verdict::Fail, "{d}");
        let (v, d) = verdict(&rows, "admin privileges", "db1");
        assert_eq!(v, Verdict::Fail);
        assert!(d.contains("READ_ONLY ADMIN") && d.contains("RELOAD"), "{d}");
        assert_eq!(verdict(&rows, "replication login", "db2").0, Verdict::Fail);
    }

    #[test]
    fn an_unreachable_shell_fails_and_stops_that_hosts_checks() {
        let t = topo(&[("db1", None), ("db2", Some("db1"))]);
        let mut cf = facts_of(&t);
        cf.hosts.get_mut("db2").unwrap().shell = Some(Err("db2: connection refused".into()));
        let rows = verdicts(&t, &cf);
        assert_eq!(verdict(&rows, "shell reachable", "db2").0, Verdict::Fail);
        assert!(!rows
            .iter()
            .any(|r| r.host == "db2" && r.check == "admin login"));
    }
}
