//! The status analysis: what is wrong with the cluster as observed, against the file, as a
//! list of [`Finding`]s in plain words with the likely cause and the next step (the manual's
//! troubleshooting section, 6-10), each in the verbs of the server it is about. Pure:
//! unit-tested from facts.

use std::collections::HashMap;

use crate::flavor::Words;
use crate::observe::{Facts, IoThread, ReplicaStatus, SqlFacts};
use crate::topology::{Host, Topology};

/// One problem found, in plain words, with the likely cause and the next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub host: String,
    pub what: String,
    pub next: String,
}

fn sql<'a>(facts: &'a HashMap<String, Facts>, name: &str) -> Option<&'a SqlFacts> {
    facts.get(name).and_then(|f| f.sql.as_ref())
}

/// Does the replica point at `master` (address and port)?
pub fn points_at(r: &ReplicaStatus, master: &Host) -> bool {
    r.master_host == master.address && r.master_port == master.mysql.port
}

/// The name of the host a replica points at, if it is in the file.
pub fn master_name<'a>(topo: &'a Topology, r: &ReplicaStatus) -> Option<&'a str> {
    topo.hosts
        .iter()
        .find(|h| points_at(r, h))
        .map(|h| h.name.as_str())
}

/// Explain an IO thread error by its number (manual 6-10 and the server error list).
pub fn diagnose_io(r: &ReplicaStatus, master: &str, w: Words) -> String {
    let e = r.last_io_errno;
    let text = &r.last_io_error;
    match e {
        1045 => format!(
            "the master refused the replication login ({text}): the replication user's password \
             is wrong or it does not exist for this slave's address on {master}. Run `repltool \
             init` to create or reset it, or check SELECT User, Host FROM mysql.user on {master}"
        ),
        1130 => format!(
            "{master} does not allow the replication user from this slave's address ({text}): the \
             user is restricted to other hosts. `repltool init` creates it for each slave's address"
        ),
        2003 | 2002 | 2005 | 2013 | 2026 => format!(
            "the slave cannot reach {master}'s server at {}:{} ({text}): is it running, listening \
             on that address (bind_address), and open in the firewall?",
            r.master_host, r.master_port
        ),
        1236 => format!(
            "{master} no longer has the binary log position this slave needs ({text}): the log was \
             purged or the position is wrong. Re-seed this slave (`repltool init --force`)"
        ),
        1593 => format!(
            "server ids or UUIDs collide with {master} ({text}): every server needs its own \
             server_id (`repltool init` sets them)"
        ),
        0 if r.io_running == Some(IoThread::Connecting) => format!(
            "the IO thread is still connecting to {}:{}; if it stays so, check network, grants and \
             the replication password",
            r.master_host, r.master_port
        ),
        0 => format!(
            "replication was stopped by hand ({}): {}, or run `repltool init`",
            w.stop(),
            w.start()
        ),
        _ => format!("IO thread error {e}: {text}"),
    }
}

/// Explain an SQL thread error.
pub fn diagnose_sql(r: &ReplicaStatus, w: Words) -> String {
    let text = &r.last_sql_error;
    let data = "the slave's data differs from the master's (a write on the slave, or a bad copy)";
    let skip = format!(
        "Skipping the event ({}; {}) loses it and hides the difference; re-seeding the slave \
         (`repltool init --force`) is the safe fix",
        w.skip_one(),
        w.start()
    );
    match r.last_sql_errno {
        1062 => {
            format!("a row replicated from the master already exists here ({text}): {data}. {skip}")
        }
        1032 => format!("a row the master changed is missing here ({text}): {data}. {skip}"),
        1146 | 1049 => {
            format!("a table or database the master uses is missing here ({text}): {data}. {skip}")
        }
        0 => format!("the SQL thread was stopped by hand: {}", w.start()),
        n => format!("a replicated statement failed with error {n} ({text}). {skip}"),
    }
}

/// Every problem with the cluster as observed, against the file.
pub fn findings(topo: &Topology, facts: &HashMap<String, Facts>, max_lag: u64) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut p = |host: &str, what: String, next: String| {
        out.push(Finding {
            host: host.to_string(),
            what,
            next,
        })
    };
    let mut ids: HashMap<u32, Vec<&str>> = HashMap::new();
    for h in &topo.hosts {
        let Some(s) = sql(facts, &h.name) else {
            let err = facts
                .get(&h.name)
                .and_then(|f| f.sql_error.clone())
                .unwrap_or_else(|| "not observed".into());
            p(
                &h.name,
                format!("unreachable: {err}"),
                "check that the host and its server are up; `repltool check` tells which step fails"
                    .into(),
            );
            continue;
        };
        ids.entry(s.server_id).or_default().push(&h.name);
        let w = s.flavor.words();
        if s.server_id == 0 {
            p(
                &h.name,
                "server_id is 0: it can neither replicate nor be replicated from".into(),
                "run `repltool init` (it sets a unique server_id)".into(),
            );
        }
        let has_slaves = !h.slaves.is_empty();
        if has_slaves && !s.log_bin {
            p(
                &h.name,
                "the binary log is off on a master: its slaves cannot replicate".into(),
                "run `repltool init` (it enables log-bin; needs a restart)".into(),
            );
        }
        match (&h.master, &s.replica) {
            (Some(m), None) => {
                let demoted = topo.hosts.iter().any(|x| {
                    sql(facts, &x.name)
                        .map(|xs| xs.promotions.iter().any(|p| p.old_master == h.name))
                        .unwrap_or(false)
                });
                if demoted && s.read_only {
                    p(&h.name, "former master: demoted by `repltool promote`, fenced read-only, not replicating yet".to_string(),
                      format!("run `repltool init` to rejoin it under {m} (it refuses if it holds transactions {m} lacks)"));
                } else if !s.read_only {
                    p(&h.name, format!("writable and not replicating, but the file says it is a slave of {m}: a former master that came back writable (split-brain risk)"),
                      format!("{} on it now; `repltool init` rejoins it under {m} when it has no transactions {m} lacks", w.read_only_on));
                } else {
                    p(
                        &h.name,
                        format!("not replicating, but the file says it replicates from {m}"),
                        format!("run `repltool init` to rejoin it under {m}"),
                    );
                }
            }
            (Some(m), Some(r)) => {
                let mh = topo.host(m);
                if let Some(mh) = mh {
                    if !r.master_host.is_empty() && !points_at(r, mh) {
                        let actual = master_name(topo, r)
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| format!("{}:{}", r.master_host, r.master_port));
                        p(&h.name, format!("replicates from {actual}, but the file says {m}"),
                          "fix the file (after a promote it is rewritten) or run `repltool init --force` to rewire it".into());
                    }
                }
                if r.io_running != Some(IoThread::Yes) {
                    p(
                        &h.name,
                        format!(
                            "IO thread {}: {}",
                            crate::report::status::io_text(r.io_running),
                            if r.last_io_error.is_empty() {
                                "no error".to_string()
                            } else {
                                format!("error {}", r.last_io_errno)
                            }
                        ),
                        diagnose_io(r, m, w),
                    );
                }
                if !r.sql_running {
                    p(
                        &h.name,
                        format!(
                            "SQL thread stopped{}",
                            if r.last_sql_error.is_empty() {
                                String::new()
                            } else {
                                format!(": error {}", r.last_sql_errno)
                            }
                        ),
                        diagnose_sql(r, w),
                    );
                }
                if let Some(l) = r.seconds_behind_master {
                    if l > max_lag {
                        p(&h.name, format!("{l}s behind its master (limit {max_lag}s)"),
                          "check the slave's load and the SQL thread's state; large transactions or a slow disk are the usual causes".into());
                    }
                }
                if !s.read_only && !topo.writable(h) {
                    p(
                        &h.name,
                        "a slave is writable: writes there make it diverge from its master".into(),
                        format!("{} (or run `repltool init`)", w.read_only_on),
                    );
                }
            }
            (None, Some(r)) if !r.master_host.is_empty() => {
                let actual = master_name(topo, r)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| format!("{}:{}", r.master_host, r.master_port));
                p(
                    &h.name,
                    format!("replicates from {actual}, but the file says it is a master"),
                    format!(
                        "fix the file, or stop that replication ({}; {})",
                        w.stop(),
                        w.reset_all()
                    ),
                );
            }
            _ => {}
        }
        if h.master.is_none() && topo.writable(h) && s.read_only {
            p(
                &h.name,
                "the master is read-only: it takes no writes".into(),
                "run `repltool init` (it makes the master writable), or promote another host"
                    .into(),
            );
        }
    }
    let mut dup: Vec<(u32, Vec<&str>)> = ids.into_iter().filter(|(_, v)| v.len() > 1).collect();
    dup.sort();
    for (id, hosts) in dup {
        p(
            hosts[0],
            format!("server_id {id} is used by {}", hosts.join(" and ")),
            "every server needs its own server_id: run `repltool init`".into(),
        );
    }
    out
}

#[cfg(test)]
mod tests;
