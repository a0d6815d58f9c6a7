//! `repltool check`: pre-flight checks that change nothing, as a table of check / host / result
//! / detail. Exit 1 when any check fails.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::json;

use crate::execute::{remove_file, write_defaults};
use crate::observe::{self, connect_sql, query_columns, query_one, ConfigTarget};
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

/// Run every check; never changes anything (the repl login test writes a temporary client
/// option file of mode 600 on the slave and removes it).
pub fn run_checks(topo: &Topology, timeout: Duration) -> Vec<CheckRow> {
    let mut rows: Vec<CheckRow> = Vec::new();
    let mut row = |check: &'static str, host: &str, verdict: Verdict, detail: String| {
        rows.push(CheckRow {
            check,
            host: host.to_string(),
            verdict,
            detail,
        })
    };
    // Sessions: SSH with verified host keys (or local).
    let (sessions, failed) = crate::transport::connect_all(topo, Some(timeout));
    for h in &topo.hosts {
        if let Some((_, e)) = failed.iter().find(|(n, _)| n == &h.name) {
            row("shell reachable", &h.name, Verdict::Fail, format!("{e:#}"));
            continue;
        }
        let how = match &h.transport {
            Transport::Ssh(s) => format!(
                "{}@{}:{} (host key verified against {})",
                s.user,
                h.address,
                s.port,
                s.known_hosts.display()
            ),
            Transport::Local => "local transport (this machine)".to_string(),
        };
        row("shell reachable", &h.name, Verdict::Pass, how);
    }
    let facts = observe::observe_all(topo, &sessions, &[], timeout, true);
    // Privileges need their own query.
    let grant_rows = crate::par::each(&topo.hosts, |h| {
        let m = sessions
            .get(&h.name)
            .ok_or_else(|| anyhow::anyhow!("no session"))?;
        let mut sess = m.lock().unwrap_or_else(|e| e.into_inner());
        let mut c = connect_sql(sess.as_mut(), h, timeout)?;
        Ok(query_columns(&mut c, "SHOW GRANTS FOR CURRENT_USER()")?
            .into_iter()
            .filter_map(|r| r.into_iter().next().and_then(|(_, v)| v))
            .collect::<Vec<_>>()
            .join("\n"))
    });
    let grants: HashMap<String, String> = topo
        .hosts
        .iter()
        .zip(grant_rows)
        .filter_map(|(h, g)| g.ok().map(|g| (h.name.clone(), g)))
        .collect();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    for h in &topo.hosts {
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
        let g = grants
            .get(&h.name)
            .cloned()
            .unwrap_or_default()
            .to_uppercase();
        let needed = ["RELOAD", "REPLICATION", "CREATE USER", "SELECT"];
        let missing: Vec<&str> = if g.contains("ALL PRIVILEGES ON *.*") {
            vec![]
        } else {
            needed.iter().copied().filter(|p| !g.contains(p)).collect()
        };
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
                format!("missing {} (init needs RELOAD, REPLICATION SLAVE ADMIN/SUPER, CREATE USER, SELECT: GRANT ALL ON *.* ... WITH GRANT OPTION is simplest)", missing.join(", "))
            },
        );
        // A slave must not be older than its master.
        if let Some(m) = &h.master {
            if let Some(ms) = facts.get(m).and_then(|f| f.sql.as_ref()) {
                let (a, b) = (s.flavor, ms.flavor);
                let verdict = if a.kind != b.kind {
                    (Verdict::Warn, format!("{} replicates from {}: mixed flavors are not supported by either vendor", a.describe(), b.describe()))
                } else if (a.major, a.minor) < (b.major, b.minor) {
                    (Verdict::Fail, format!("{} is older than its master {} ({}): a slave must not be older than its master", a.describe(), m, b.describe()))
                } else {
                    (
                        Verdict::Pass,
                        format!("{} from {} ({})", a.describe(), m, b.describe()),
                    )
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
        let skew = (s.clock - now).abs();
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
        // The config target: found, and its directory writable.
        if let (Some(c), Some(m)) = (&f.config, sessions.get(&h.name)) {
            let dir = c
                .target
                .path()
                .parent()
                .map(|p| p.to_path_buf())
                .unwrap_or_default();
            let mut sess = m.lock().unwrap_or_else(|e| e.into_inner());
            let w = sess.run(
                &format!(
                    "test -d {d} && test -w {d}",
                    d = shell_quote(&dir.to_string_lossy())
                ),
                None,
                true,
                Duration::from_secs(10),
            );
            let ok = w.map(|o| o.ok()).unwrap_or(false);
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
        } else if f.config.is_none() {
            row(
                "config writable",
                &h.name,
                Verdict::Fail,
                f.sql_error
                    .clone()
                    .unwrap_or_else(|| "config layout not read".into()),
            );
        }
    }
    // server_ids: unique in the file (the loader guarantees it); say what runs now.
    let mut live: HashMap<u32, Vec<&str>> = HashMap::new();
    for h in &topo.hosts {
        if let Some(s) = facts.get(&h.name).and_then(|f| f.sql.as_ref()) {
            live.entry(s.server_id).or_default().push(&h.name);
        }
    }
    let dups: Vec<String> = live
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(id, v)| format!("{id} on {}", v.join(", ")))
        .collect();
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
    // The replication login, tested from each slave's own host towards its master.
    for h in &topo.hosts {
        let Some(m) = h.master.as_ref().and_then(|m| topo.host(m)) else {
            continue;
        };
        let (Some(sm), Some(mf)) = (sessions.get(&h.name), facts.get(&m.name)) else {
            continue;
        };
        let Some(msql) = &mf.sql else { continue };
        if !msql.repl_user_hosts.iter().any(|a| a == &h.address) {
            row(
                "replication login",
                &h.name,
                Verdict::Pass,
                format!(
                    "{}@{} does not exist on {} yet; init creates it",
                    topo.replication.user, h.address, m.name
                ),
            );
            continue;
        }
        let mut sess = sm.lock().unwrap_or_else(|e| e.into_inner());
        let (v, d) = repl_login(
            sess.as_mut(),
            topo,
            h,
            m,
            facts
                .get(&h.name)
                .and_then(|f| f.sql.as_ref())
                .map(|s| s.flavor),
        );
        row("replication login", &h.name, v, d);
        // Free disk for a seed copy: at least the master's data size on the slave's datadir.
        if let (Some(ss), Ok(mut mc)) = (
            facts.get(&h.name).and_then(|f| f.sql.as_ref()),
            sessions
                .get(&m.name)
                .map(|x| x.lock().unwrap_or_else(|e| e.into_inner()))
                .ok_or(())
                .and_then(|mut g| connect_sql(g.as_mut(), m, timeout).map_err(|_| ())),
        ) {
            let need = query_one(&mut mc, "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES WHERE TABLE_SCHEMA NOT IN ('mysql','information_schema','performance_schema','sys')").ok().flatten().and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) as u64;
            let out = sess.run(
                &format!("df -Pk {} | tail -1", shell_quote(&ss.datadir)),
                None,
                false,
                Duration::from_secs(10),
            );
            let free = out
                .ok()
                .and_then(|o| {
                    o.stdout_str()
                        .split_whitespace()
                        .nth(3)
                        .and_then(|k| k.parse::<u64>().ok())
                })
                .map(|k| k * 1024);
            match free {
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
    }
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
) -> (Verdict, String) {
    let Some(f) = flavor else {
        return (Verdict::Fail, "slave flavor unknown".into());
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
        Err(e) => return (Verdict::Fail, format!("{e:#}")),
    };
    let cmd = format!(
        "{} --host={} --port={} --connect-timeout=5 -e 'SELECT 1' 2>&1",
        f.client_command(&def.to_string_lossy()),
        shell_quote(&master.address),
        master.mysql.port
    );
    let out = sess.run(&cmd, None, false, Duration::from_secs(15));
    remove_file(sess, &def);
    match out {
        Ok(o) if o.ok() => (
            Verdict::Pass,
            format!(
                "{}@{} logs in to {} ({}:{})",
                topo.replication.user,
                slave.address,
                master.name,
                master.address,
                master.mysql.port
            ),
        ),
        Ok(o) => (
            Verdict::Fail,
            format!(
                "from {} to {} ({}:{}): {}",
                slave.name,
                master.name,
                master.address,
                master.mysql.port,
                o.stdout_str().trim()
            ),
        ),
        Err(e) => (Verdict::Fail, format!("{e:#}")),
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
