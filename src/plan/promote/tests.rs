//! Golden cases of the promote planner: facts in (built here, no server), plan text out
//! (tests/golden/promote/<case>.txt; `UPDATE_GOLDEN=1` rewrites them, review the diff). A
//! refusal's golden is its message and exit code.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::*;
use crate::flavor::Flavor;
use crate::observe::{Facts, IoThread};
use crate::testing::{converged, topo};
use crate::topology::Topology;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/promote")
}

struct Case {
    t: Topology,
    facts: HashMap<String, Facts>,
    states: HashMap<String, HostState>,
    proxies_down: BTreeMap<String, String>,
}

impl Case {
    /// db1 the master of db2, db3 (and more), every server converged and up.
    fn new(spec: &[(&str, Option<&str>)]) -> Case {
        let t = topo(spec);
        let mut facts = converged(&t);
        for h in &t.hosts {
            let s = facts.get_mut(&h.name).unwrap().sql.as_mut().unwrap();
            s.master_status = Some(crate::observe::MasterStatus {
                file: "mysql-bin.000003".into(),
                position: 1000,
                executed_gtid_set: None,
            });
            if let Some(r) = s.replica.as_mut() {
                r.master_log_file = "mysql-bin.000003".into();
                r.read_master_log_pos = 1000;
                r.relay_master_log_file = "mysql-bin.000003".into();
                r.exec_master_log_pos = 1000;
                r.master_server_id = t.host(h.master.as_ref().unwrap()).unwrap().server_id;
            }
        }
        let states = t
            .hosts
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    HostState {
                        sql_reach: None,
                        sql_error: None,
                        shell: Shell::Up,
                        listening: None,
                    },
                )
            })
            .collect();
        Case {
            t,
            facts,
            states,
            proxies_down: BTreeMap::new(),
        }
    }
    /// Application endpoints: proxy `lbK` of each kind, the ones in `down` not answering.
    fn proxies(mut self, kinds: &[crate::topology::ProxyKind], down: &[&str]) -> Case {
        for (i, k) in kinds.iter().enumerate() {
            let name = format!("lb{}", i + 1);
            if down.contains(&name.as_str()) {
                self.proxies_down
                    .insert(name.clone(), format!("{name}: SSH connection timed out"));
            }
            self.t.proxies.push(crate::topology::Proxy {
                name,
                address: format!("10.0.0.{}", 5 + i),
                kind: *k,
                writer: 3306,
                reader: Some(3307),
                transport: crate::topology::Transport::Local,
                line: 10 + i,
            });
        }
        self
    }
    fn mysql97(mut self) -> Case {
        for f in self.facts.values_mut() {
            if let Some(s) = f.sql.as_mut() {
                s.flavor = Flavor::detect("9.7.4", "MySQL Community Server - GPL").unwrap();
                s.server_uuid = format!("uuid-of-{}", f.host);
            }
        }
        for f in self.facts.values_mut() {
            if let Some(r) = f.sql.as_mut().and_then(|s| s.replica.as_mut()) {
                r.master_uuid = "uuid-of-db1".into();
            }
        }
        self
    }
    /// The server on `h` does not answer: `reach` for SQL, `shell` for SSH.
    fn down(mut self, h: &str, reach: Reach, shell: Shell, listening: Option<bool>) -> Case {
        let f = self.facts.get_mut(h).unwrap();
        f.sql = None;
        f.sql_error = Some(format!("{h}: SQL login failed ({reach:?})"));
        self.states.insert(
            h.to_string(),
            HostState {
                sql_reach: Some(reach),
                sql_error: f.sql_error.clone(),
                shell,
                listening,
            },
        );
        self
    }
    /// Slave `h` received the old master's log up to `pos` (and the IO thread lost it).
    fn received(mut self, h: &str, file: &str, pos: u64) -> Case {
        let r = self
            .facts
            .get_mut(h)
            .unwrap()
            .sql
            .as_mut()
            .unwrap()
            .replica
            .as_mut()
            .unwrap();
        r.master_log_file = file.into();
        r.read_master_log_pos = pos;
        r.io_running = Some(IoThread::Connecting);
        self
    }
    fn gtid(mut self) -> Case {
        self.t.replication.gtid = true;
        self
    }
    fn plan(&self, target: &str, force: bool) -> String {
        let pf = PromoteFacts {
            facts: &self.facts,
            hosts: &self.states,
            proxies_down: &self.proxies_down,
        };
        match plan_promote(
            &self.t,
            &pf,
            target,
            PlanOptions {
                force,
                timeout_secs: 30,
            },
        ) {
            Ok(Some(p)) => p.render(),
            Ok(None) => format!("nothing to do: {target} is the master\n"),
            Err(e) => format!("refused (exit {}): {e:#}\n", crate::error::exit_code(&e)),
        }
    }
}

fn check(cases: &[(&str, String)]) {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let dir = golden_dir();
    let mut problems = Vec::new();
    for (name, got) in cases {
        let p = dir.join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&p, got).unwrap();
            continue;
        }
        match std::fs::read_to_string(&p) {
            Ok(want) if &want == got => {}
            Ok(want) => problems.push(format!("{name}: differs\n--- want\n{want}--- got\n{got}")),
            Err(_) => problems.push(format!("{name}: missing golden (UPDATE_GOLDEN=1)")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

const MS: &[(&str, Option<&str>)] = &[("db1", None), ("db2", Some("db1")), ("db3", Some("db1"))];
const PAIR: &[(&str, Option<&str>)] = &[("m1", Some("m2")), ("m2", Some("m1"))];

fn dead() -> Shell {
    Shell::Down(Reach::TimedOut)
}

#[test]
fn golden_plans() {
    let mut cases: Vec<(&str, String)> =
        vec![("switchover-mariadb", Case::new(MS).plan("db2", false))];
    cases.push((
        "switchover-mysql-9.7",
        Case::new(MS).mysql97().plan("db2", false),
    ));
    cases.push((
        "failover-host-down",
        Case::new(MS)
            .down("db1", Reach::Refused, dead(), None)
            .received("db2", "mysql-bin.000003", 1500)
            .received("db3", "mysql-bin.000003", 1500)
            .plan("db2", false),
    ));
    cases.push((
        "failover-server-crashed-host-answers",
        Case::new(MS)
            .mysql97()
            .down("db1", Reach::Refused, Shell::Up, Some(false))
            .received("db2", "mysql-bin.000003", 1500)
            .received("db3", "mysql-bin.000003", 1200)
            .plan("db2", false),
    ));
    cases.push((
        "failover-target-behind-refused",
        Case::new(MS)
            .down("db1", Reach::Refused, dead(), None)
            .received("db2", "mysql-bin.000003", 1200)
            .received("db3", "mysql-bin.000004", 300)
            .plan("db2", false),
    ));
    cases.push((
        "failover-target-behind-disk-lifts-it",
        Case::new(MS)
            .down("db1", Reach::Refused, Shell::Up, Some(false))
            .received("db2", "mysql-bin.000003", 1200)
            .received("db3", "mysql-bin.000003", 1500)
            .plan("db2", false),
    ));
    cases.push((
        "failover-target-behind-forced",
        Case::new(MS)
            .down("db1", Reach::Refused, dead(), None)
            .received("db2", "mysql-bin.000003", 1200)
            .received("db3", "mysql-bin.000003", 1800)
            .plan("db2", true),
    ));
    cases.push((
        "failover-lagging-slave-no-disk-refused",
        Case::new(MS)
            .down("db1", Reach::TimedOut, dead(), None)
            .received("db2", "mysql-bin.000003", 1800)
            .received("db3", "mysql-bin.000003", 1200)
            .plan("db2", false),
    ));
    cases.push((
        "failover-gtid-lagging-slave",
        Case::new(MS)
            .gtid()
            .down("db1", Reach::TimedOut, dead(), None)
            .received("db2", "mysql-bin.000003", 1800)
            .received("db3", "mysql-bin.000003", 1200)
            .plan("db2", false),
    ));
    cases.push((
        "too-many-connections-refused",
        Case::new(MS)
            .down("db1", Reach::Answered(1040), Shell::Up, Some(true))
            .plan("db2", false),
    ));
    cases.push((
        "too-many-connections-forced",
        Case::new(MS)
            .down("db1", Reach::Answered(1040), Shell::Up, Some(true))
            .received("db2", "mysql-bin.000003", 1500)
            .received("db3", "mysql-bin.000003", 1500)
            .plan("db2", true),
    ));
    cases.push((
        "access-denied-ssh-down-refused",
        Case::new(MS)
            .down("db1", Reach::Answered(1045), dead(), None)
            .plan("db2", false),
    ));
    cases.push((
        "hung-server-refused",
        Case::new(MS)
            .down("db1", Reach::TimedOut, Shell::Up, Some(true))
            .plan("db2", false),
    ));
    cases.push((
        "changed-host-key-refused",
        Case::new(MS)
            .down(
                "db1",
                Reach::Refused,
                Shell::Refused("host key for 10.0.0.1 changed".into()),
                None,
            )
            .plan("db2", false),
    ));
    cases.push(("pair-switch", Case::new(PAIR).plan("m2", false)));
    cases.push((
        "pair-failover",
        Case::new(PAIR)
            .down("m1", Reach::Refused, dead(), None)
            .plan("m2", false),
    ));
    cases.push((
        "target-down-refused",
        Case::new(MS)
            .down("db2", Reach::Refused, dead(), None)
            .plan("db2", false),
    ));
    cases.push(("already-master", Case::new(MS).plan("db1", false)));
    cases.push((
        "relay-refused",
        Case::new(&[("db1", None), ("db2", Some("db1")), ("db3", Some("db2"))]).plan("db3", false),
    ));
    // The upgrade path: db2 runs MariaDB 11.8, db1 and db3 10.11: promoting db2 would leave
    // db1 and db3 replicating from a newer server.
    let mut upgrade = Case::new(MS);
    upgrade
        .facts
        .get_mut("db2")
        .unwrap()
        .sql
        .as_mut()
        .unwrap()
        .flavor = Flavor::detect("11.8.3-MariaDB", "").unwrap();
    cases.push(("newer-target-refused", upgrade.plan("db2", false)));
    cases.push(("newer-target-forced", upgrade.plan("db2", true)));
    // An earlier promote to db2 stopped after db2 was promoted.
    let resume = || {
        let mut c = Case::new(MS);
        let s = c.facts.get_mut("db2").unwrap().sql.as_mut().unwrap();
        s.replica = None;
        s.promotions.push(crate::flavor::PromotionRecord {
            old_master: "db1".into(),
            old_server_id: 1,
            old_pos: ("mysql-bin.000003".into(), 1500),
            slaves_pos: ("mysql-bin.000003".into(), 1500),
            new_master: "db2".into(),
            new_pos: ("mysql-bin.000001".into(), 328),
            ..Default::default()
        });
        c
    };
    cases.push((
        "resume-proxies",
        resume()
            .proxies(&[crate::topology::ProxyKind::Haproxy], &[])
            .plan("db2", false),
    ));
    cases.push(("resume", resume().plan("db2", false)));
    // Application endpoints (`proxies:`): the writer moves with the master.
    use crate::topology::ProxyKind::{Haproxy, Nginx};
    cases.push((
        "switchover-proxies",
        Case::new(MS)
            .proxies(&[Haproxy, Nginx], &[])
            .plan("db2", false),
    ));
    cases.push((
        "switchover-proxy-down-refused",
        Case::new(MS)
            .proxies(&[Haproxy, Haproxy], &["lb2"])
            .plan("db2", false),
    ));
    cases.push((
        "switchover-proxy-down-forced",
        Case::new(MS)
            .proxies(&[Haproxy, Haproxy], &["lb2"])
            .plan("db2", true),
    ));
    cases.push((
        "failover-proxies-one-down",
        Case::new(MS)
            .proxies(&[Haproxy, Haproxy], &["lb2"])
            .down("db1", Reach::Refused, Shell::Up, Some(false))
            .received("db2", "mysql-bin.000003", 1500)
            .received("db3", "mysql-bin.000003", 1500)
            .plan("db2", false),
    ));
    cases.push((
        "pair-switch-proxies",
        Case::new(PAIR).proxies(&[Nginx], &[]).plan("m2", false),
    ));
    cases.push((
        "pair-failover-proxies",
        Case::new(PAIR)
            .proxies(&[Haproxy], &[])
            .down("m1", Reach::Refused, dead(), None)
            .plan("m2", false),
    ));
    check(&cases);
}

#[test]
fn unknown_host_is_bad_input() {
    let c = Case::new(MS);
    let out = c.plan("db9", false);
    assert!(out.starts_with("refused (exit 2): "), "{out}");
    assert!(
        out.contains("no host named db9 (hosts: db1, db2, db3)"),
        "{out}"
    );
}

#[test]
fn a_master_that_answers_in_any_way_is_never_failed_over_without_force() {
    for reach in [Reach::Answered(1040), Reach::Answered(1045), Reach::Other] {
        for (shell, listening) in [
            (Shell::Up, Some(true)),
            (Shell::Up, None),
            (Shell::Down(Reach::TimedOut), None),
            (Shell::Refused("auth".into()), None),
        ] {
            let c = Case::new(MS).down("db1", reach, shell.clone(), listening);
            let out = c.plan("db2", false);
            assert!(
                out.starts_with("refused (exit 1)"),
                "{reach:?} {shell:?} {listening:?}: {out}"
            );
        }
    }
    // Down on both: failover.
    let c = Case::new(MS).down("db1", Reach::TimedOut, Shell::Down(Reach::Refused), None);
    assert!(c.plan("db2", false).starts_with("failover db1 -> db2"));
}

#[test]
fn ranking_is_by_file_number_then_position_and_ties_favour_the_target() {
    let mut p = BTreeMap::new();
    p.insert("db2".to_string(), ("mysql-bin.000009".to_string(), 900));
    p.insert("db3".to_string(), ("mysql-bin.000010".to_string(), 4));
    let r = rank("db1", "db2", &p).unwrap();
    assert_eq!(r.best, "db3");
    assert_eq!(
        r.target_loses.as_deref(),
        Some("db1's binary log from mysql-bin.000009:900 to mysql-bin.000010:4")
    );
    assert_eq!(r.ahead, vec!["db3".to_string()]);
    p.insert("db3".to_string(), ("mysql-bin.000009".to_string(), 900));
    let r = rank("db1", "db2", &p).unwrap();
    assert_eq!(r.best, "db2");
    assert_eq!(r.target_loses, None);
    assert!(r.behind.is_empty() && r.ahead.is_empty());
}
