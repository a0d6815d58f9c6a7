//! Findings from facts, without servers.

use super::*;
use crate::flavor::{Flavor, Words};
use crate::testing::{converged, topo};

fn mysql97(f: &mut HashMap<String, Facts>) {
    for x in f.values_mut() {
        let s = x.sql.as_mut().unwrap();
        s.flavor = Flavor::detect("9.7.4", "MySQL Community Server - GPL").unwrap();
        s.version = "9.7.4".into();
    }
}

#[test]
fn a_converged_cluster_has_no_findings() {
    let t = topo(&[("db1", None), ("db2", Some("db1")), ("db3", Some("db1"))]);
    let f = converged(&t);
    assert_eq!(findings(&t, &f, 60), vec![]);
}

#[test]
fn a_stopped_sql_thread_is_explained_in_the_servers_own_verbs() {
    let t = topo(&[("db1", None), ("db2", Some("db1"))]);
    let mut f = converged(&t);
    {
        let r = f
            .get_mut("db2")
            .unwrap()
            .sql
            .as_mut()
            .unwrap()
            .replica
            .as_mut()
            .unwrap();
        r.sql_running = false;
        r.last_sql_errno = 1062;
        r.last_sql_error = "Duplicate entry '7' for key 'PRIMARY'".into();
    }
    let maria = findings(&t, &f, 60);
    assert_eq!(maria.len(), 1, "{maria:?}");
    assert_eq!(maria[0].host, "db2");
    assert!(maria[0].what.contains("SQL thread stopped: error 1062"));
    assert!(
        maria[0].next.contains(&format!(
            "{}; {}",
            Words::unknown().skip_one(),
            Words::unknown().start()
        )),
        "{}",
        maria[0].next
    );
    mysql97(&mut f);
    let my = findings(&t, &f, 60);
    let w97 = Flavor::detect("9.7.4", "").unwrap().words();
    assert!(
        my[0]
            .next
            .contains(&format!("{}; {}", w97.skip_one(), w97.start())),
        "{}",
        my[0].next
    );
    assert!(!my[0].next.contains("SLAVE"), "{}", my[0].next);
}

#[test]
fn a_writable_slave_a_lagging_slave_and_a_duplicate_server_id() {
    let t = topo(&[("db1", None), ("db2", Some("db1")), ("db3", Some("db1"))]);
    let mut f = converged(&t);
    f.get_mut("db2").unwrap().sql.as_mut().unwrap().read_only = false;
    f.get_mut("db3")
        .unwrap()
        .sql
        .as_mut()
        .unwrap()
        .replica
        .as_mut()
        .unwrap()
        .seconds_behind_master = Some(120);
    let id1 = f["db1"].sql.as_ref().unwrap().server_id;
    f.get_mut("db3").unwrap().sql.as_mut().unwrap().server_id = id1;
    let got = findings(&t, &f, 60);
    let whats: Vec<String> = got
        .iter()
        .map(|g| format!("{}: {}", g.host, g.what))
        .collect();
    assert!(
        whats
            .iter()
            .any(|w| w.starts_with("db2: a slave is writable")),
        "{whats:?}"
    );
    assert!(
        whats.iter().any(|w| w.starts_with("db3: 120s behind")),
        "{whats:?}"
    );
    assert!(
        whats
            .iter()
            .any(|w| w.contains(&format!("server_id {id1} is used by db1 and db3"))),
        "{whats:?}"
    );
    // Within the limit: no finding.
    assert_eq!(findings(&t, &f, 200).len(), 2);
}

#[test]
fn a_former_master_that_came_back_writable_is_a_split_brain_risk() {
    let t = topo(&[("db1", Some("db2")), ("db2", None)]);
    let mut f = converged(&t);
    {
        let s = f.get_mut("db1").unwrap().sql.as_mut().unwrap();
        s.replica = None;
        s.read_only = false;
    }
    let got = findings(&t, &f, 60);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].what.contains("split-brain"), "{}", got[0].what);
    assert!(got[0].next.contains(Words::unknown().read_only_on));
}

#[test]
fn an_unreachable_host_and_a_slave_of_the_wrong_master() {
    let t = topo(&[("db1", None), ("db2", Some("db1")), ("db3", Some("db1"))]);
    let mut f = converged(&t);
    f.get_mut("db1").unwrap().sql = None;
    f.get_mut("db1").unwrap().sql_error = Some("connection refused".into());
    let db2 = t.host("db2").unwrap().clone();
    {
        let r = f
            .get_mut("db3")
            .unwrap()
            .sql
            .as_mut()
            .unwrap()
            .replica
            .as_mut()
            .unwrap();
        r.master_port = db2.mysql.port;
    }
    let got = findings(&t, &f, 60);
    assert!(got
        .iter()
        .any(|g| g.host == "db1" && g.what.contains("unreachable: connection refused")));
    assert!(
        got.iter()
            .any(|g| g.host == "db3" && g.what == "replicates from db2, but the file says db1"),
        "{got:?}"
    );
}
