//! The Galera planners from facts: bootstrap choice, join order, recovery choice, refusals.

use std::collections::HashMap;

use super::*;
use crate::observe::galera::{GaleraDisk, GaleraService, GraState, WsrepLive, SYNCED};
use crate::testing::{fresh, topo};
use crate::topology::{Galera, Sst, Topology};

const UUID: &str = "08927047-ecc9-11f1-a8e6-4740c38c4e4c";

fn gtopo(n: usize, dr: bool) -> Topology {
    let names: Vec<String> = (1..=n).map(|k| format!("g{k}")).collect();
    let mut spec: Vec<(&str, Option<&str>)> = names.iter().map(|n| (n.as_str(), None)).collect();
    if dr {
        spec.push(("dr1", Some("g1")));
    }
    let mut t = topo(&spec);
    for (i, h) in t.hosts.iter_mut().enumerate() {
        h.address = format!("10.0.0.{}", 11 + i);
        h.mysql.port = 3306;
    }
    t.galera = Some(Galera {
        cluster_name: "shop".into(),
        sst: Sst::Mariabackup,
    });
    t
}

fn service() -> GaleraService {
    GaleraService {
        start: "service mariadb start".into(),
        stop: "service mariadb stop".into(),
        restart: "service mariadb restart".into(),
        bootstrap: Some("service mariadb bootstrap".into()),
    }
}

fn disk_fresh() -> GaleraDisk {
    GaleraDisk {
        datadir: "/var/lib/mysql".into(),
        providers: vec!["/usr/lib/galera/libgalera_smm.so".into()],
        service: Some(service()),
        ..GaleraDisk::default()
    }
}

/// Standalone servers (Debian started them), nothing configured.
struct World {
    t: Topology,
    facts: HashMap<String, Facts>,
    disk: HashMap<String, Result<GaleraDisk, String>>,
    unreachable: HashMap<String, String>,
}

impl World {
    fn fresh(n: usize) -> World {
        World::fresh_with(n, false)
    }

    fn fresh_with(n: usize, dr: bool) -> World {
        let t = gtopo(n, dr);
        let mut facts = fresh(&t);
        for f in facts.values_mut() {
            f.sql.as_mut().unwrap().datadir = "/var/lib/mysql/".into();
        }
        for h in t.members() {
            facts.get_mut(&h.name).unwrap().sql.as_mut().unwrap().galera = Some(WsrepLive {
                provider: "none".into(),
                ..WsrepLive::default()
            });
        }
        let disk = t
            .members()
            .map(|h| (h.name.clone(), Ok(disk_fresh())))
            .collect();
        World {
            t,
            facts,
            disk,
            unreachable: HashMap::new(),
        }
    }

    /// Every member Synced in one Primary component, fragments as planned.
    fn running(n: usize) -> World {
        let mut w = World::fresh(n);
        w.run_all();
        w
    }

    fn run_all(&mut self) {
        let n = self.t.members().count() as u32;
        let names: Vec<String> = self.t.members().map(|h| h.name.clone()).collect();
        for name in &names {
            self.set_live(name, n);
        }
        for name in &names {
            let h = self.t.host(name).unwrap().clone();
            let frag = {
                let inp = self.inputs();
                desired_fragment(&self.t, &h, &inp).unwrap()
            };
            self.facts
                .get_mut(name)
                .unwrap()
                .config
                .as_mut()
                .unwrap()
                .current = Some(frag.text);
            let d = self.disk.get_mut(name).unwrap().as_mut().unwrap();
            d.grastate = Some(Ok(GraState {
                uuid: UUID.into(),
                seqno: -1,
                safe_to_bootstrap: false,
            }));
            d.running = vec![(100, "mariadbd".into())];
        }
    }

    fn set_live(&mut self, name: &str, size: u32) {
        let s = self.facts.get_mut(name).unwrap().sql.as_mut().unwrap();
        s.log_bin = true;
        s.galera = Some(WsrepLive {
            wsrep_on: true,
            provider: "/usr/lib/galera/libgalera_smm.so".into(),
            cluster_name: "shop".into(),
            node_name: name.into(),
            sst_method: "mariabackup".into(),
            state: SYNCED,
            state_comment: "Synced".into(),
            cluster_status: "Primary".into(),
            cluster_size: size,
            state_uuid: UUID.into(),
            last_committed: 10,
            ready: true,
            connected: true,
            sst_account: Some(PasswordCheck::Matches),
            ..WsrepLive::default()
        });
    }

    fn live(&mut self, name: &str) -> &mut WsrepLive {
        self.facts
            .get_mut(name)
            .unwrap()
            .sql
            .as_mut()
            .unwrap()
            .galera
            .as_mut()
            .unwrap()
    }

    fn down(&mut self, name: &str, seqno: i64, safe: bool) {
        let f = self.facts.get_mut(name).unwrap();
        f.sql = None;
        f.sql_error = Some("connection refused".into());
        let d = self.disk.get_mut(name).unwrap().as_mut().unwrap();
        d.running.clear();
        d.grastate = Some(Ok(GraState {
            uuid: UUID.into(),
            seqno,
            safe_to_bootstrap: safe,
        }));
    }

    fn data(&mut self, name: &str, dbs: &[&str]) {
        let s = self.facts.get_mut(name).unwrap().sql.as_mut().unwrap();
        s.has_user_data = true;
        s.databases = dbs.iter().map(|d| d.to_string()).collect();
    }

    fn inputs(&self) -> GaleraInputs<'_> {
        GaleraInputs {
            facts: &self.facts,
            disk: &self.disk,
            unreachable: &self.unreachable,
        }
    }

    fn plan(&self, force: bool) -> Result<GaleraPlan> {
        plan_galera(&self.t, &self.inputs(), &GaleraOptions { force })
    }
}

/// The steps as `host: kind` lines.
fn kinds(p: &GaleraPlan) -> Vec<String> {
    p.steps
        .iter()
        .map(|s| {
            let k = match &s.action {
                GAction::WriteConfig { .. } => "config".to_string(),
                GAction::Stop { .. } => "stop".into(),
                GAction::SafeToBootstrap { on, .. } => format!("safe={}", u8::from(*on)),
                GAction::Bootstrap { .. } => "bootstrap".into(),
                GAction::Join { transfer, .. } => format!("join {transfer:?}"),
                GAction::Sql { what, .. } if what.starts_with("the SST account ") => {
                    "sst-user".into()
                }
                GAction::Sql { what, .. } if what.contains("password for this running") => {
                    "sst-auth".into()
                }
                GAction::Sql { what, .. } => format!("sql {what}"),
                GAction::Verify { size, .. } => format!("verify {size}"),
            };
            format!("{}: {k}", s.host)
        })
        .collect()
}

#[test]
fn three_fresh_members_bootstrap_the_first_and_join_one_at_a_time() {
    let w = World::fresh(3);
    let p = w.plan(false).unwrap();
    assert_eq!(
        kinds(&p),
        [
            "g1: config",
            "g2: config",
            "g3: config",
            "g1: stop",
            "g1: bootstrap",
            "g1: sst-user",
            "g2: join Sst",
            "g3: join Sst",
            "g1: verify 3"
        ]
    );
    let frag = match &p.steps[0].action {
        GAction::WriteConfig { contents, .. } => contents.clone(),
        _ => unreachable!(),
    };
    assert!(frag
        .text
        .contains("wsrep_cluster_address = \"gcomm://10.0.0.11,10.0.0.12,10.0.0.13\""));
    assert!(frag.text.contains("wsrep_node_name = g1\n"));
    assert!(frag
        .text
        .contains("wsrep_provider = /usr/lib/galera/libgalera_smm.so"));
    assert!(frag.text.contains("read_only = OFF"));
    assert!(frag.text.contains("bind_address = 0.0.0.0"));
    // The plan shows no secret.
    let shown = p.render();
    let pw = crate::flavor::galera::sst_password("shop", &w.t.replication.password);
    assert!(!shown.contains(pw.expose()), "{shown}");
    assert!(shown.contains("repltool_sst:***"), "{shown}");
    // Node names differ per host (seed 002 gave both nodes the same one).
    let names: Vec<String> = p
        .steps
        .iter()
        .filter_map(|s| match &s.action {
            GAction::WriteConfig { contents, .. } => contents
                .text
                .lines()
                .find(|l| l.starts_with("wsrep_node_name"))
                .map(str::to_string),
            _ => None,
        })
        .collect();
    assert_eq!(names.len(), 3);
    assert!(names[0] != names[1] && names[1] != names[2]);
}

#[test]
fn the_member_holding_data_bootstraps_and_two_with_data_are_refused() {
    let mut w = World::fresh(3);
    w.data("g2", &["shop"]);
    let p = w.plan(false).unwrap();
    let k = kinds(&p);
    assert_eq!(&k[3..6], ["g2: stop", "g2: bootstrap", "g2: sst-user"]);
    assert_eq!(&k[6..8], ["g1: join Sst", "g3: join Sst"]);
    assert!(
        p.notes[0].contains("g2 holds the data (databases shop)"),
        "{:?}",
        p.notes
    );
    w.data("g3", &["crm"]);
    let e = w.plan(false).unwrap_err().to_string();
    assert!(
        e.contains("more than one member holds data: g2 (databases shop), g3 (databases crm)"),
        "{e}"
    );
    // --force does not merge data sets either.
    assert!(w.plan(true).is_err());
}

#[test]
fn tables_galera_does_not_replicate_are_named_before_anything_changes() {
    let mut w = World::fresh(3);
    w.data("g1", &["app"]);
    {
        let l = w.live("g1");
        l.unreplicated_tables = vec!["app.logs (MyISAM)".into()];
        l.no_pk_tables = vec!["app.events".into()];
    }
    let p = w.plan(false).unwrap();
    assert!(
        p.warnings.iter().any(|x| x.contains("app.logs (MyISAM)")),
        "{:?}",
        p.warnings
    );
    assert!(p
        .warnings
        .iter()
        .any(|x| x.contains("without a primary key") && x.contains("app.events")));
}

#[test]
fn a_converged_cluster_plans_nothing() {
    let w = World::running(3);
    let p = w.plan(false).unwrap();
    assert!(p.is_empty(), "{}", p.render());
}

#[test]
fn a_new_member_joins_without_restarting_the_others() {
    let mut w = World::running(3);
    // g4 added to the file: a fresh standalone server.
    let mut t = gtopo(4, false);
    std::mem::swap(&mut w.t, &mut t);
    let f4 = fresh(&w.t).remove("g4").unwrap();
    w.facts.insert("g4".into(), f4);
    w.facts.get_mut("g4").unwrap().sql.as_mut().unwrap().galera = Some(WsrepLive {
        provider: "none".into(),
        ..WsrepLive::default()
    });
    w.disk.insert("g4".into(), Ok(disk_fresh()));
    let p = w.plan(false).unwrap();
    let k = kinds(&p);
    assert_eq!(
        k,
        [
            "g1: config",
            "g2: config",
            "g3: config",
            "g4: config",
            "g1: sst-auth",
            "g2: sst-auth",
            "g3: sst-auth",
            "g4: join Sst",
            "g1: verify 4"
        ]
    );
    // Nothing restarts g1..g3.
    assert!(p.steps.iter().all(|s| s.host == "g4"
        || matches!(
            s.action,
            GAction::WriteConfig { .. } | GAction::Sql { .. } | GAction::Verify { .. }
        )));
    // A new member with data of its own is not wiped without --force.
    w.data("g4", &["legacy"]);
    let e = w.plan(false).unwrap_err().to_string();
    assert!(
        e.contains("g4: holds data of its own (databases legacy)"),
        "{e}"
    );
    assert!(e.contains("--force"), "{e}");
    assert!(w.plan(true).is_ok());
}

#[test]
fn a_member_that_is_down_rejoins_when_init_runs() {
    let mut w = World::running(3);
    w.down("g3", 8, false);
    for n in ["g1", "g2"] {
        w.live(n).cluster_size = 2;
    }
    let p = w.plan(false).unwrap();
    assert_eq!(kinds(&p), ["g3: join Rejoin", "g1: verify 3"]);
}

#[test]
fn full_outage_bootstraps_the_most_advanced_member() {
    let mut w = World::running(3);
    w.down("g1", 10, false);
    w.down("g2", -1, false);
    w.down("g3", -1, false);
    // Crashed members: --wsrep-recover first.
    let p = w.plan(false).unwrap();
    assert_eq!(p.recover, ["g2", "g3"]);
    assert!(p
        .steps
        .iter()
        .all(|s| matches!(s.action, GAction::WriteConfig { .. })));
    for (n, s) in [("g2", 12), ("g3", 12)] {
        w.disk.get_mut(n).unwrap().as_mut().unwrap().recovered = Some(Ok((UUID.into(), s)));
    }
    let p = w.plan(false).unwrap();
    assert_eq!(
        kinds(&p),
        [
            "g2: safe=1",
            "g2: bootstrap",
            "g2: sst-user",
            "g1: join Rejoin",
            "g3: join Rejoin",
            "g2: verify 3"
        ]
    );
    assert!(
        p.notes[0].contains("g1 10, g2 12, g3 12; g2 is the most advanced"),
        "{:?}",
        p.notes
    );
    // A clean shutdown: the last to leave says safe_to_bootstrap, the highest seqno wins.
    let mut w = World::running(3);
    w.down("g1", 20, true);
    w.down("g2", 19, false);
    w.down("g3", 19, false);
    let p = w.plan(false).unwrap();
    assert_eq!(&kinds(&p)[..2], ["g1: bootstrap", "g1: sst-user"]);
    // Only one member is ever marked safe.
    let mut w = World::running(3);
    w.down("g1", 5, true);
    w.down("g2", 9, false);
    w.down("g3", 9, false);
    let p = w.plan(false).unwrap();
    assert_eq!(
        &kinds(&p)[..3],
        ["g1: safe=0", "g2: safe=1", "g2: bootstrap"]
    );
}

#[test]
fn full_outage_refusals() {
    let mut w = World::running(3);
    for n in ["g1", "g2", "g3"] {
        w.down(n, 7, false);
    }
    // Another cluster's history.
    if let Some(Ok(d)) = w.disk.get_mut("g3") {
        d.grastate = Some(Ok(GraState {
            uuid: "11111111-2222-3333-4444-555555555555".into(),
            seqno: 9,
            safe_to_bootstrap: false,
        }));
    }
    let e = w.plan(false).unwrap_err().to_string();
    assert!(e.contains("disagree about the cluster"), "{e}");
    assert!(
        e.contains("g3 11111111-2222-3333-4444-555555555555 (seqno 9)"),
        "{e}"
    );
    assert!(w.plan(true).is_err(), "--force does not pick a history");
    // A member that cannot be reached might be more advanced.
    let mut w = World::running(3);
    for n in ["g1", "g2", "g3"] {
        w.down(n, 7, false);
    }
    w.disk.remove("g3");
    w.facts.remove("g3");
    w.unreachable
        .insert("g3".into(), "connection timed out".into());
    let e = w.plan(false).unwrap_err().to_string();
    assert!(
        e.contains("full outage: g3 could not be reached and may have committed transactions after seqno 7"),
        "{e}"
    );
    let p = w.plan(true).unwrap();
    assert!(
        p.notes[0].contains("--force: g3 not reached"),
        "{:?}",
        p.notes
    );
    assert_eq!(&kinds(&p)[..2], ["g1: safe=1", "g1: bootstrap"]);
    assert!(matches!(
        p.steps.last().unwrap().action,
        GAction::Verify { size: 2, .. }
    ));
}

#[test]
fn quorum_loss_is_refused_with_the_promote_to_run() {
    let mut w = World::running(3);
    w.down("g2", -1, false);
    w.down("g3", -1, false);
    {
        let l = w.live("g1");
        l.cluster_status = "non-Primary".into();
        l.cluster_size = 1;
        l.state_comment = "Initialized".into();
        l.state = 0;
    }
    let e = w.plan(false).unwrap_err().to_string();
    assert!(
        e.contains("quorum lost: g1 is in a non-primary component (size 1 of 3)"),
        "{e}"
    );
    assert!(e.contains("`repltool promote g1`"), "{e}");
    // promote: the others are known dead.
    let p = plan_promote(&w.t, &w.inputs(), "g1", false)
        .unwrap()
        .unwrap();
    assert_eq!(p.dead, ["g2", "g3"]);
    assert!(p.stmt.shown().contains("pc.bootstrap=YES"));
    // One that cannot be reached may be primary elsewhere.
    w.facts.remove("g3");
    w.disk.remove("g3");
    w.unreachable.insert("g3".into(), "no route to host".into());
    let e = plan_promote(&w.t, &w.inputs(), "g1", false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("g3: could not be reached"), "{e}");
    assert!(plan_promote(&w.t, &w.inputs(), "g1", true)
        .unwrap()
        .is_some());
}

#[test]
fn promote_refuses_when_a_primary_component_exists() {
    let mut w = World::running(3);
    {
        let l = w.live("g1");
        l.cluster_status = "non-Primary".into();
        l.cluster_size = 1;
    }
    for n in ["g2", "g3"] {
        w.live(n).cluster_size = 2;
    }
    let e = plan_promote(&w.t, &w.inputs(), "g1", true)
        .unwrap_err()
        .to_string();
    assert!(e.contains("g2: is in a primary component (size 2)"), "{e}");
    // Already primary: nothing to do.
    assert!(plan_promote(&w.t, &w.inputs(), "g2", false)
        .unwrap()
        .is_none());
}

#[test]
fn rolling_restart_needs_a_healthy_cluster() {
    let mut w = World::running(3);
    let r = plan_rolling(&w.t, &w.inputs()).unwrap();
    assert_eq!(
        r.order.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["g1", "g2", "g3"]
    );
    assert_eq!(r.order[0].1, "service mariadb restart");
    w.live("g2").state = 2;
    w.live("g2").state_comment = "Donor/Desynced".into();
    let e = plan_rolling(&w.t, &w.inputs()).unwrap_err().to_string();
    assert!(e.contains("g2: Donor/Desynced"), "{e}");
}

#[test]
fn asynchronous_replicas_are_not_members_and_members_log_what_they_apply() {
    let w = World::fresh_with(3, true);
    let p = w.plan(false).unwrap();
    assert!(p.steps.iter().all(|s| s.host != "dr1"), "{}", p.render());
    for s in &p.steps {
        if let GAction::WriteConfig { contents, .. } = &s.action {
            assert!(
                contents.text.contains("log_slave_updates = ON"),
                "{}",
                contents.text
            );
        }
    }
}

#[test]
fn a_mysql_member_and_a_missing_provider_are_refused() {
    let mut w = World::fresh(3);
    w.facts.get_mut("g2").unwrap().sql.as_mut().unwrap().flavor =
        crate::flavor::Flavor::detect("8.0.36", "MySQL Community Server - GPL").unwrap();
    let e = w.plan(false).unwrap_err().to_string();
    assert!(e.contains("g2: MySQL 8.0.36 has no Galera"), "{e}");
    let mut w = World::fresh(3);
    w.disk
        .get_mut("g3")
        .unwrap()
        .as_mut()
        .unwrap()
        .providers
        .clear();
    let e = w.plan(false).unwrap_err().to_string();
    assert!(e.contains("g3: no Galera provider library"), "{e}");
}

#[test]
fn a_split_cluster_is_refused() {
    let mut w = World::running(3);
    w.live("g3").state_uuid = "11111111-2222-3333-4444-555555555555".into();
    let e = w.plan(false).unwrap_err().to_string();
    assert!(e.contains("more than one primary component"), "{e}");
    assert!(e.contains("g3 in cluster state 11111111"), "{e}");
}

#[test]
fn the_ordinary_init_plan_links_an_async_replica_and_leaves_the_members_to_galera() {
    let mut w = World::fresh_with(3, true);
    w.run_all();
    for n in ["g1", "g2", "g3"] {
        let s = w.facts.get_mut(n).unwrap().sql.as_mut().unwrap();
        s.databases = vec!["repltool".into()];
        // A member listening on loopback only is still not reconfigured by the ordinary plan.
        s.bind_address = "127.0.0.1".into();
    }
    let p = crate::plan::init::plan_init(
        &w.t,
        &w.facts,
        &crate::plan::init::InitOptions { force: false },
    )
    .unwrap();
    for s in &p.steps {
        let member = s.host.starts_with('g');
        match &s.action {
            crate::plan::Action::WriteConfig { .. }
            | crate::plan::Action::Restart { .. }
            | crate::plan::Action::MakeWritable { .. } => {
                assert!(!member, "{}: {:?}", s.host, s.action)
            }
            crate::plan::Action::Link { slaves, seed } => {
                assert_eq!(s.host, "g1");
                assert_eq!(slaves[0].host, "dr1");
                // The member's repltool schema (the canary) is copied into the new replica.
                assert!(seed.is_some());
            }
            _ => {}
        }
    }
    assert!(p
        .steps
        .iter()
        .any(|s| matches!(&s.action, crate::plan::Action::Sql { what, .. } if s.host == "g1" && what.starts_with("replication user"))));
}
