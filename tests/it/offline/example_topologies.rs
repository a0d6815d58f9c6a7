//! The example files in topologies/ load, with the roles their comments promise.

use std::path::{Path, PathBuf};

use repltool::topology::{load_str, Role, Topology};

fn env(name: &str) -> Option<String> {
    match name {
        "MYSQL_ADMIN_PASSWORD" => Some("example-admin".to_string()),
        "REPL_PASSWORD" => Some("example-repl".to_string()),
        "HOME" => Some("/home/example".to_string()),
        "USER" => Some("example".to_string()),
        _ => None,
    }
}

fn load_example(name: &str) -> Topology {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("topologies")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("example file");
    load_str(&text, &path, &env).unwrap_or_else(|e| panic!("{name}:\n{e}"))
}

fn roles(t: &Topology) -> Vec<(&str, Role, Option<&str>, Vec<&str>)> {
    t.hosts
        .iter()
        .map(|h| {
            (
                h.name.as_str(),
                h.role,
                h.peer.as_deref(),
                h.slaves.iter().map(String::as_str).collect(),
            )
        })
        .collect()
}

#[test]
fn master_slave_example() {
    let t = load_example("master-slave.yaml");
    assert_eq!(t.name, "shop");
    assert_eq!(
        roles(&t),
        [
            ("db1", Role::Master, None, vec!["db2", "db3"]),
            ("db2", Role::Slave, None, vec![]),
            ("db3", Role::Slave, None, vec![]),
        ]
    );
    assert_eq!(t.replication.password.expose(), "example-repl");
    assert_eq!(t.hosts[0].mysql.password.expose(), "example-admin");
    assert_eq!(t.hosts[0].mysql.user, "admin");
}

#[test]
fn master_master_example() {
    let t = load_example("master-master.yaml");
    assert_eq!(
        roles(&t),
        [
            ("m1", Role::MasterMaster, Some("m2"), vec!["m2", "reports"]),
            ("m2", Role::MasterMaster, Some("m1"), vec!["m1"]),
            ("reports", Role::Slave, None, vec![]),
        ]
    );
    let m1 = t.host("m1").expect("m1");
    let m2 = t.host("m2").expect("m2");
    assert!(t.writable(m1));
    assert!(!t.writable(m2), "m2 is the passive member");
    assert_eq!(t.host("reports").expect("reports").mysql.port, 3307);
    assert!(t.replication.gtid);
}

#[test]
fn chain_example() {
    let t = load_example("chain.yaml");
    assert_eq!(
        roles(&t),
        [
            ("db1", Role::Master, None, vec!["db2"]),
            ("db2", Role::Relay, None, vec!["db3"]),
            ("db3", Role::Slave, None, vec![]),
        ]
    );
    let ids: Vec<u32> = t.hosts.iter().map(|h| h.server_id).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(t.replication.user, "repl");
}

#[test]
fn examples_need_their_variables() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("topologies/chain.yaml");
    let text = std::fs::read_to_string(&path).expect("example file");
    let err = load_str(&text, &path, &|n| match n {
        "REPL_PASSWORD" => None,
        other => env(other),
    })
    .expect_err("REPL_PASSWORD is unset");
    assert!(
        err.to_string()
            .contains("replication.password: environment variable REPL_PASSWORD is not set"),
        "{err}"
    );
}
