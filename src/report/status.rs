//! `repltool status`: health and drift assessment (pure), the diagnoses from the manual's
//! troubleshooting section, the table, the tree and the JSON of the contract.

use std::collections::HashMap;
use std::fmt::Write as _;

use comfy_table::{presets::UTF8_HORIZONTAL_ONLY, Cell, Color, Table};
use serde_json::{json, Value};

use crate::observe::{Facts, IoThread, SqlFacts};
use crate::topology::{Host, Topology};

pub use super::galera::galera_table;
pub use crate::analysis::{findings as problems, master_name, Finding as Problem};

fn sql<'a>(facts: &'a HashMap<String, Facts>, name: &str) -> Option<&'a SqlFacts> {
    facts.get(name).and_then(|f| f.sql.as_ref())
}

pub(crate) fn io_text(io: Option<IoThread>) -> &'static str {
    match io {
        Some(IoThread::Yes) => "Yes",
        Some(IoThread::Connecting) => "Connecting",
        _ => "No",
    }
}

/// The thread states a healthy replica shows most, in a few words; others shortened. The
/// full text is in the JSON.
fn short_state(s: &str) -> String {
    let l = s.to_ascii_lowercase();
    let known = [
        ("waiting for master to send event", "waiting for events"),
        ("waiting for source to send event", "waiting for events"),
        ("has read all relay log", "caught up"),
        ("connecting to master", "connecting"),
        ("connecting to source", "connecting"),
        ("reconnecting after a failed", "reconnecting"),
        ("queueing master event to the relay log", "queueing events"),
        ("queueing source event to the relay log", "queueing events"),
    ];
    for (k, v) in known {
        if l.contains(k) {
            return v.to_string();
        }
    }
    shorten(s, 24)
}

/// Binary log coordinates without the file's base name: `000002:1234`.
fn coords(file: &str, pos: u64) -> String {
    let suffix = file.rsplit_once('.').map(|(_, n)| n).unwrap_or(file);
    format!("{suffix}:{pos}")
}

fn shorten(s: &str, n: usize) -> String {
    let s = s.replace('\n', " ");
    if s.chars().count() <= n {
        s
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

/// The role shown for a host: Galera members are `galera-member` (every one takes writes).
pub fn role(topo: &Topology, h: &Host) -> &'static str {
    if topo.is_member(h) {
        "galera-member"
    } else {
        h.role.as_str()
    }
}

/// The table: one row per host.
pub fn table(topo: &Topology, facts: &HashMap<String, Facts>, max_lag: u64, color: bool) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_HORIZONTAL_ONLY);
    if !color {
        t.force_no_tty();
    } else {
        // On a terminal, fit its width (cells wrap) instead of running off the edge.
        t.enforce_styling();
        t.set_content_arrangement(comfy_table::ContentArrangement::Dynamic);
    }
    t.set_header(vec![
        "host",
        "role",
        "master",
        "IO",
        "IO state",
        "SQL",
        "SQL state",
        "lag",
        "read",
        "executed",
        "ro",
        "id",
        "version",
        "last error",
    ]);
    for h in &topo.hosts {
        let mut row: Vec<Cell> = vec![super::cell(&h.name), super::cell(role(topo, h))];
        match sql(facts, &h.name) {
            None => {
                let err = facts
                    .get(&h.name)
                    .and_then(|f| f.sql_error.clone())
                    .unwrap_or_default();
                row.push(super::cell(h.master.clone().unwrap_or_else(|| "-".into())));
                for _ in 0..10 {
                    row.push(super::cell(""));
                }
                let mut c = super::cell(format!("unreachable: {}", shorten(&err, 60)));
                if color {
                    c = c.fg(Color::Red);
                }
                row.push(c);
            }
            Some(s) => {
                let r = s.replica.as_ref();
                let actual = r
                    .and_then(|r| {
                        master_name(topo, r).map(|n| n.to_string()).or_else(|| {
                            (!r.master_host.is_empty())
                                .then(|| format!("{}:{}", r.master_host, r.master_port))
                        })
                    })
                    .or_else(|| h.master.as_ref().map(|m| format!("({m})")))
                    .unwrap_or_else(|| "-".into());
                row.push(super::cell(actual));
                let mut io = super::cell(r.map(|r| io_text(r.io_running)).unwrap_or("-"));
                let mut sq = super::cell(
                    r.map(|r| if r.sql_running { "Yes" } else { "No" })
                        .unwrap_or("-"),
                );
                if color {
                    if let Some(r) = r {
                        if r.io_running != Some(IoThread::Yes) {
                            io = io.fg(Color::Red);
                        }
                        if !r.sql_running {
                            sq = sq.fg(Color::Red);
                        }
                    }
                }
                row.push(io);
                row.push(super::cell(
                    r.map(|r| short_state(&r.io_state)).unwrap_or_default(),
                ));
                row.push(sq);
                row.push(super::cell(
                    r.map(|r| short_state(&r.sql_state)).unwrap_or_default(),
                ));
                let lag = r.and_then(|r| r.seconds_behind_master);
                let mut lc = super::cell(match (r, lag) {
                    (None, _) => "-".to_string(),
                    (Some(_), None) => "NULL".to_string(),
                    (Some(_), Some(l)) => format!("{l}s"),
                });
                if color && lag.map(|l| l > max_lag).unwrap_or(false) {
                    lc = lc.fg(Color::Yellow);
                }
                row.push(lc);
                row.push(super::cell(
                    r.map(|r| coords(&r.master_log_file, r.read_master_log_pos))
                        .unwrap_or_else(|| {
                            s.master_status
                                .as_ref()
                                .map(|m| coords(&m.file, m.position))
                                .unwrap_or_else(|| "-".into())
                        }),
                ));
                row.push(super::cell(
                    r.map(|r| coords(&r.relay_master_log_file, r.exec_master_log_pos))
                        .unwrap_or_else(|| "-".into()),
                ));
                row.push(super::cell(if s.read_only { "ON" } else { "OFF" }));
                row.push(super::cell(s.server_id));
                row.push(super::cell(s.flavor.describe()));
                let err = r
                    .map(|r| {
                        if !r.last_io_error.is_empty() {
                            format!("IO {}: {}", r.last_io_errno, r.last_io_error)
                        } else if !r.last_sql_error.is_empty() {
                            format!("SQL {}: {}", r.last_sql_errno, r.last_sql_error)
                        } else {
                            String::new()
                        }
                    })
                    .unwrap_or_default();
                let mut ec = super::cell(shorten(&err, 60));
                if color && !err.is_empty() {
                    ec = ec.fg(Color::Red);
                }
                row.push(ec);
            }
        }
        t.add_row(row);
    }
    if color {
        // Names, threads, numbers and coordinates never wrap; the states, the version and the
        // error take what the terminal has left.
        for i in [0, 1, 2, 3, 5, 7, 8, 9, 10, 11] {
            if let Some(c) = t.column_mut(i) {
                c.set_constraint(comfy_table::ColumnConstraint::ContentWidth);
            }
        }
        for c in t.column_iter_mut() {
            c.set_padding((0, 1));
        }
    }
    t
}

/// The live topology as a tree (what replicates from what), like orchestrator's view.
pub fn tree(topo: &Topology, facts: &HashMap<String, Facts>) -> String {
    // Live edges where the server answers; the file's where it does not.
    let parent = |h: &Host| -> Option<String> {
        match sql(facts, &h.name) {
            Some(s) => s
                .replica
                .as_ref()
                .filter(|r| !r.master_host.is_empty())
                .map(|r| {
                    master_name(topo, r)
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| format!("{}:{}", r.master_host, r.master_port))
                }),
            None => h.master.clone(),
        }
    };
    let edges: Vec<(String, Option<String>)> = topo
        .hosts
        .iter()
        .map(|h| (h.name.clone(), parent(h)))
        .collect();
    let label = |n: &str| -> String {
        let h = topo.host(n);
        match (h, sql(facts, n)) {
            (_, None) => format!("{n} [unreachable]"),
            (Some(h), Some(s)) => {
                let mut l = format!("{n} ({}:{})", h.address, h.mysql.port);
                if !s.read_only {
                    l.push_str(" [writable]");
                }
                if let Some(g) = s.galera.as_ref().filter(|_| topo.is_member(h)) {
                    l.push_str(&super::galera::label(g));
                }
                if let Some(r) = &s.replica {
                    if r.io_running != Some(IoThread::Yes) || !r.sql_running {
                        l.push_str(" [replication broken]");
                    } else if let Some(lag) = r.seconds_behind_master {
                        let _ = write!(l, " lag {lag}s");
                    }
                }
                l
            }
            _ => n.to_string(),
        }
    };
    let mut out = String::new();
    if let Some(line) = super::galera::cluster_line(topo, facts) {
        out.push_str(&line);
        out.push('\n');
    }
    let mut shown: Vec<String> = Vec::new();
    // A recursive printer; its state is passed along rather than captured.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        n: &str,
        prefix: &str,
        last: bool,
        root: bool,
        edges: &[(String, Option<String>)],
        label: &dyn Fn(&str) -> String,
        out: &mut String,
        shown: &mut Vec<String>,
    ) {
        let repeat = shown.iter().any(|s| s == n);
        if root {
            let _ = writeln!(out, "{}", label(n));
        } else {
            let _ = writeln!(
                out,
                "{prefix}{}{}{}",
                if last { "└── " } else { "├── " },
                label(n),
                if repeat { " (see above)" } else { "" }
            );
        }
        if repeat {
            return;
        }
        shown.push(n.to_string());
        let kids: Vec<&String> = edges
            .iter()
            .filter(|(_, p)| p.as_deref() == Some(n))
            .map(|(c, _)| c)
            .collect();
        let child_prefix = if root {
            String::new()
        } else {
            format!("{prefix}{}", if last { "    " } else { "│   " })
        };
        for (i, k) in kids.iter().enumerate() {
            walk(
                k,
                &child_prefix,
                i + 1 == kids.len(),
                false,
                edges,
                label,
                out,
                shown,
            );
        }
    }
    // Roots: hosts with no live master, then any left (cycles: master-master pairs).
    let roots: Vec<String> = edges
        .iter()
        .filter(|(_, p)| p.as_ref().map(|p| topo.host(p).is_none()).unwrap_or(true))
        .map(|(n, _)| n.clone())
        .collect();
    for r in &roots {
        walk(r, "", true, true, &edges, &label, &mut out, &mut shown);
    }
    for (n, _) in &edges {
        if !shown.contains(n) {
            walk(n, "", true, true, &edges, &label, &mut out, &mut shown);
        }
    }
    // Master hosts come from the servers.
    super::clean(&out).into_owned()
}

/// The JSON of the contract (topology.md), plus `problems`.
pub fn json(topo: &Topology, facts: &HashMap<String, Facts>, problems: &[Problem]) -> Value {
    let hosts: Vec<Value> = topo
        .hosts
        .iter()
        .map(|h| {
            let mut v = json!({
                "name": h.name, "address": h.address, "port": h.mysql.port,
                "role": role(topo, h), "master": h.master,
            });
            match sql(facts, &h.name) {
                None => {
                    v["reachable"] = json!(false);
                    v["error"] = json!(facts.get(&h.name).and_then(|f| f.sql_error.clone()).unwrap_or_default());
                }
                Some(s) => {
                    v["reachable"] = json!(true);
                    v["server_id"] = json!(s.server_id);
                    v["read_only"] = json!(s.read_only);
                    v["version"] = json!(s.version);
                    v["log_bin"] = json!(s.log_bin);
                    v["replicating_from"] = json!(s.replica.as_ref().and_then(|r| master_name(topo, r)));
                    if topo.is_member(h) {
                        v["galera"] = super::galera::member_json(s.galera.as_ref());
                    }
                    v["replication"] = match &s.replica {
                        None => Value::Null,
                        Some(r) => {
                            let err = if !r.last_io_error.is_empty() {
                                Some(r.last_io_error.clone())
                            } else if !r.last_sql_error.is_empty() {
                                Some(r.last_sql_error.clone())
                            } else {
                                None
                            };
                            json!({
                                "io_running": r.io_running == Some(IoThread::Yes),
                                "io_thread": io_text(r.io_running),
                                "sql_running": r.sql_running,
                                "io_state": r.io_state, "sql_state": r.sql_state,
                                "seconds_behind_master": r.seconds_behind_master,
                                "master_host": r.master_host, "master_port": r.master_port,
                                "master_log_file": r.master_log_file,
                                "read_master_log_pos": r.read_master_log_pos,
                                "relay_master_log_file": r.relay_master_log_file,
                                "exec_master_log_pos": r.exec_master_log_pos,
                                "last_io_errno": r.last_io_errno, "last_sql_errno": r.last_sql_errno,
                                "last_error": err,
                            })
                        }
                    };
                }
            }
            v
        })
        .collect();
    json!({
        "name": topo.name,
        "healthy": problems.is_empty(),
        "hosts": hosts,
        "problems": problems.iter().map(|p| json!({"host": p.host, "problem": p.what, "next": p.next})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{ReplicaStatus, SqlFacts};

    #[test]
    fn server_text_reaches_the_table_tree_and_problems_escaped() {
        let topo = crate::topology::load_str(
            "defaults: { transport: local, mysql: { password: \"\" } }\nreplication: { password: x }\nhosts:\n  db1: { address: 127.0.0.1 }\n  db2: { address: 127.0.0.2, master: db1 }\n",
            std::path::Path::new("t.yaml"),
            &|_| None,
        )
        .unwrap();
        let evil = "Could not execute Write_rows: Duplicate entry '\x1b[2J\x1b]0;owned\x07' \
                    for key 'PRIMARY'";
        let base = crate::testing::fresh(&topo)["db2"]
            .sql
            .clone()
            .expect("facts");
        let sql = |replica: Option<ReplicaStatus>| SqlFacts {
            version: "10.11.6-MariaDB\x1b[31m".into(),
            server_id: 2,
            log_bin: true,
            binlog_format: "ROW".into(),
            read_only: true,
            replica,
            ..base.clone()
        };
        let r = ReplicaStatus {
            master_host: "127.0.0.1".into(),
            master_port: 3306,
            io_running: Some(IoThread::Yes),
            sql_running: false,
            sql_state: "\x1b[1Astate".into(),
            last_sql_errno: 1062,
            last_sql_error: evil.into(),
            ..ReplicaStatus::default()
        };
        let mut facts = HashMap::new();
        facts.insert(
            "db1".to_string(),
            Facts {
                host: "db1".into(),
                sql: Some(sql(None)),
                sql_error: None,
                config: None,
            },
        );
        facts.insert(
            "db2".to_string(),
            Facts {
                host: "db2".into(),
                sql: Some(sql(Some(r))),
                sql_error: None,
                config: None,
            },
        );
        let shown = format!(
            "{}\n{}",
            table(&topo, &facts, 60, false),
            tree(&topo, &facts)
        );
        assert!(
            !shown.contains('\x1b') && !shown.contains('\x07'),
            "{shown:?}"
        );
        assert!(shown.contains("\\u{1b}"), "{shown}");
        let problems = problems(&topo, &facts, 60);
        assert!(problems.iter().any(|p| p.next.contains("Duplicate entry")));
        for p in &problems {
            let line = format!(
                "{} {}",
                crate::report::clean(&p.what),
                crate::report::clean(&p.next)
            );
            assert!(!line.contains('\x1b'), "{line:?}");
        }
    }
}
