//! Galera diagnoses for `status`, in plain words: a member outside the primary component
//! (quorum lost: what to run), a member in another cluster state UUID (a split), a member not
//! Synced, a cluster smaller than the file, and flow control (a slow member throttles
//! everyone). Pure: unit-tested from facts.

use std::collections::HashMap;

use super::Finding;
use crate::observe::galera::WsrepLive;
use crate::observe::Facts;
use crate::report::galera::FLOW_CONTROL_LIMIT;
use crate::topology::Topology;

fn live<'a>(facts: &'a HashMap<String, Facts>, name: &str) -> Option<&'a WsrepLive> {
    facts
        .get(name)
        .and_then(|f| f.sql.as_ref())
        .and_then(|s| s.galera.as_ref())
}

/// Every Galera problem of the members.
pub fn findings(topo: &Topology, facts: &HashMap<String, Facts>) -> Vec<Finding> {
    let mut out = Vec::new();
    if topo.galera.is_none() {
        return out;
    }
    let mut p = |host: &str, what: String, next: String| {
        out.push(Finding {
            host: host.to_string(),
            what,
            next,
        })
    };
    let members: Vec<&str> = topo.members().map(|h| h.name.as_str()).collect();
    let n = members.len() as u32;
    let lives: Vec<(&str, &WsrepLive)> = members
        .iter()
        .filter_map(|m| live(facts, m).map(|l| (*m, l)))
        .collect();
    let primaries: Vec<(&str, &WsrepLive)> =
        lives.iter().filter(|(_, l)| l.primary()).copied().collect();
    // The state the majority of the primary members are in: the cluster.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, l) in &primaries {
        *counts.entry(l.state_uuid.as_str()).or_default() += 1;
    }
    let cluster_uuid = counts
        .iter()
        .max_by_key(|(u, c)| (**c, std::cmp::Reverse(**u)))
        .map(|(u, _)| *u);
    let nonprimary: Vec<(&str, &WsrepLive)> = lives
        .iter()
        .filter(|(_, l)| l.enabled() && !l.primary())
        .copied()
        .collect();
    let best = nonprimary
        .iter()
        .max_by_key(|(_, l)| l.last_committed)
        .map(|(m, _)| *m);
    for (m, l) in &lives {
        if !l.enabled() {
            p(
                m,
                "runs without Galera (wsrep off or no provider loaded): not a member of the cluster"
                    .into(),
                "run `repltool init` to join it (it refuses to replace data of its own without --force)"
                    .into(),
            );
            continue;
        }
        if !l.primary() {
            let next = if primaries.is_empty() {
                format!(
                    "if the members it cannot see are down for good, make the survivors' component \
                     primary: `repltool promote {}` (it refuses while a primary component may exist \
                     elsewhere); if they are up, the network between the members is broken: \
                     `repltool check` tests ports 4567, 4568 and 4444",
                    best.unwrap_or(m)
                )
            } else {
                format!(
                    "it cannot reach the primary component ({}): check the network between them \
                     (`repltool check` tests ports 4567, 4568 and 4444), then restart it to rejoin",
                    primaries
                        .iter()
                        .map(|(x, _)| *x)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            p(
                m,
                format!(
                    "quorum lost: in a {} component of {} (of {n} members): it refuses reads and writes",
                    if l.cluster_status.is_empty() {
                        "non-primary".to_string()
                    } else {
                        l.cluster_status.clone()
                    },
                    l.cluster_size
                ),
                next,
            );
            continue;
        }
        if Some(l.state_uuid.as_str()) != cluster_uuid {
            p(
                m,
                format!(
                    "split: in its own primary component with cluster state {} while the others \
                     are in {}: two clusters take writes and their data diverge",
                    l.state_uuid,
                    cluster_uuid.unwrap_or("?")
                ),
                "decide which data to keep; stop the members of the other cluster and run \
                 `repltool init` (their data is replaced by a copy)"
                    .into(),
            );
            continue;
        }
        if !l.synced() {
            let why = match l.state {
                1 => "it is receiving a state transfer",
                2 => "it is sending a state transfer (or was desynced by hand); it lags until done",
                3 => "it has its state and is catching up",
                _ => "it is not in sync",
            };
            p(
                m,
                format!("{}: {why}", l.state_text()),
                "wait for Synced; if it stays so, look at its error log".into(),
            );
        }
    }
    if let Some((m, l)) = primaries.first() {
        if l.cluster_size != n {
            let absent: Vec<&str> = members
                .iter()
                .filter(|x| !primaries.iter().any(|(p, _)| p == *x))
                .copied()
                .collect();
            p(
                m,
                format!(
                    "the cluster has {} members, the file {n}{}",
                    l.cluster_size,
                    if absent.is_empty() {
                        String::new()
                    } else {
                        format!(": {} not in it", absent.join(", "))
                    }
                ),
                "run `repltool init`: it starts members that are down (they rejoin by IST or SST) \
                 and joins new ones"
                    .into(),
            );
        }
        let paused = primaries
            .iter()
            .map(|(_, l)| l.flow_control_paused)
            .fold(0.0_f64, f64::max);
        if paused > FLOW_CONTROL_LIMIT {
            let slow = primaries.iter().max_by_key(|(_, l)| l.recv_queue);
            p(
                slow.map(|(m, _)| *m).unwrap_or(m),
                format!(
                    "flow control paused replication {:.0}% of the time: a slow member throttles \
                     the whole cluster{}",
                    paused * 100.0,
                    slow.map(|(m, l)| format!(
                        " (largest receive queue: {m}, {} write sets)",
                        l.recv_queue
                    ))
                    .unwrap_or_default()
                ),
                "look at that member's disk and CPU (or its wsrep_slave_threads); every commit in \
                 the cluster waits for the slowest member"
                    .into(),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::galera::SYNCED;
    use crate::topology::{Galera, Sst};

    fn world(states: &[(&str, &str, u32, &str)]) -> (Topology, HashMap<String, Facts>) {
        let spec: Vec<(&str, Option<&str>)> = states.iter().map(|(n, ..)| (*n, None)).collect();
        let mut t = crate::testing::topo(&spec);
        t.galera = Some(Galera {
            cluster_name: "shop".into(),
            sst: Sst::Mariabackup,
        });
        let mut f = crate::testing::fresh(&t);
        for (n, status, size, uuid) in states {
            f.get_mut(*n).unwrap().sql.as_mut().unwrap().galera = Some(WsrepLive {
                wsrep_on: true,
                provider: "/usr/lib/galera/libgalera_smm.so".into(),
                state: if *status == "Primary" { SYNCED } else { 0 },
                state_comment: if *status == "Primary" {
                    "Synced".into()
                } else {
                    "Initialized".into()
                },
                cluster_status: status.to_string(),
                cluster_size: *size,
                state_uuid: uuid.to_string(),
                ..WsrepLive::default()
            });
        }
        (t, f)
    }

    #[test]
    fn a_healthy_cluster_has_no_findings() {
        let (t, f) = world(&[
            ("g1", "Primary", 3, "u"),
            ("g2", "Primary", 3, "u"),
            ("g3", "Primary", 3, "u"),
        ]);
        assert!(findings(&t, &f).is_empty());
    }

    #[test]
    fn quorum_loss_says_what_to_run() {
        let (t, mut f) = world(&[
            ("g1", "non-Primary", 1, "u"),
            ("g2", "Primary", 3, "u"),
            ("g3", "Primary", 3, "u"),
        ]);
        for n in ["g2", "g3"] {
            let e = f.get_mut(n).unwrap();
            e.sql = None;
            e.sql_error = Some("connection refused".into());
        }
        let x = findings(&t, &f);
        assert_eq!(x.len(), 1, "{x:?}");
        assert!(
            x[0].what
                .contains("quorum lost: in a non-Primary component of 1 (of 3 members)"),
            "{x:?}"
        );
        assert!(x[0].next.contains("`repltool promote g1`"), "{x:?}");
    }

    #[test]
    fn a_split_and_a_small_cluster_and_flow_control() {
        let (t, mut f) = world(&[
            ("g1", "Primary", 2, "u"),
            ("g2", "Primary", 2, "u"),
            ("g3", "Primary", 1, "v"),
        ]);
        {
            let l = f
                .get_mut("g2")
                .unwrap()
                .sql
                .as_mut()
                .unwrap()
                .galera
                .as_mut()
                .unwrap();
            l.flow_control_paused = 0.4;
            l.recv_queue = 50;
        }
        let x = findings(&t, &f);
        let text = format!("{x:?}");
        assert!(
            text.contains("split: in its own primary component with cluster state v"),
            "{text}"
        );
        assert!(
            text.contains("the cluster has 2 members, the file 3"),
            "{text}"
        );
        assert!(
            text.contains("flow control paused replication 40%"),
            "{text}"
        );
        assert!(
            text.contains("largest receive queue: g2, 50 write sets"),
            "{text}"
        );
    }
}
