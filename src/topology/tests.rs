//! Loader tests: one per rule, each through `load_str` with a fake environment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::error::{exit_code, Failure};

const ADMIN_PW: &str = "adm1n-S3CRET";
const REPL_PW: &str = "r3pl-S3CRET";

fn env(name: &str) -> Option<String> {
    match name {
        "MYSQL_ADMIN_PASSWORD" => Some(ADMIN_PW.to_string()),
        "REPL_PASSWORD" => Some(REPL_PW.to_string()),
        "HOME" => Some("/home/tester".to_string()),
        "USER" => Some("tester".to_string()),
        "EMPTY" => Some(String::new()),
        "PORT" => Some("3307".to_string()),
        _ => None,
    }
}

const HEAD: &str = "\
defaults:
  mysql:
    password: ${MYSQL_ADMIN_PASSWORD}
replication:
  password: ${REPL_PASSWORD}
";

fn load_text(text: &str) -> anyhow::Result<Topology> {
    load_str(text, Path::new("/etc/repltool/shop.yaml"), &env)
}

fn ok(text: &str) -> Topology {
    match load_text(text) {
        Ok(t) => t,
        Err(e) => panic!("expected a valid topology, got:\n{e}\n--- file:\n{text}"),
    }
}

/// The error text; also checks it is a bad-input error (exit 2) that leaks no password.
fn err(text: &str) -> String {
    let e = match load_text(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => e,
    };
    assert!(matches!(
        e.downcast_ref::<Failure>(),
        Some(Failure::Input(_))
    ));
    assert_eq!(exit_code(&e), 2);
    let msg = e.to_string();
    assert!(!msg.contains(ADMIN_PW) && !msg.contains(REPL_PW), "{msg}");
    msg
}

fn with_hosts(hosts: &str) -> String {
    format!("{HEAD}hosts:\n{hosts}")
}

fn assert_has(msg: &str, needle: &str) {
    assert!(msg.contains(needle), "missing {needle:?} in:\n{msg}");
}

fn role(t: &Topology, name: &str) -> Role {
    t.host(name).map(|h| h.role).expect("host")
}

#[test]
fn master_slave_roles_defaults_and_lines() {
    let t = ok(&with_hosts(
        "  db1:\n    address: 10.0.1.10\n  db2:\n    address: 10.0.2.10\n    master: db1\n  db3:\n    address: 10.0.2.11\n    source: db1\n",
    ));
    assert_eq!(t.name, "shop");
    assert_eq!(t.file, PathBuf::from("/etc/repltool/shop.yaml"));
    assert_eq!(role(&t, "db1"), Role::Master);
    assert_eq!(role(&t, "db2"), Role::Slave);
    assert_eq!(role(&t, "db3"), Role::Slave);
    let db1 = t.host("db1").unwrap();
    assert_eq!(db1.slaves, ["db2", "db3"]);
    assert_eq!(db1.line, 7);
    assert_eq!(t.host("db3").unwrap().line, 12);
    assert_eq!(t.host("db3").unwrap().master.as_deref(), Some("db1"));
    assert_eq!(db1.server_id, default_server_id("db1"));
    assert_eq!(db1.mysql.user, "root");
    assert_eq!(db1.mysql.port, 3306);
    assert_eq!(db1.mysql.password.expose(), ADMIN_PW);
    assert_eq!(db1.mysql.route, SqlRoute::Forward);
    assert_eq!(
        db1.transport,
        Transport::Ssh(Ssh {
            user: "tester".into(),
            port: 22,
            identity_file: None,
            known_hosts: PathBuf::from("/home/tester/.ssh/known_hosts"),
            jump: None,
            sudo: false,
            connect_timeout: Duration::from_secs(10),
        })
    );
    assert_eq!(t.replication.user, "repl");
    assert_eq!(t.replication.password.expose(), REPL_PW);
    assert!(!t.replication.gtid && !t.replication.ssl);
    assert_eq!(t.masters().count(), 1);
}

#[test]
fn master_master_pair_gets_peers() {
    let t = ok(&with_hosts(
        "  m1: { address: 10.0.1.10, master: m2 }\n  m2: { address: 10.0.2.10, master: m1, read_only: true }\n  s1: { address: 10.0.2.11, master: m1 }\n",
    ));
    let m1 = t.host("m1").unwrap();
    assert_eq!(
        (m1.role, m1.peer.as_deref()),
        (Role::MasterMaster, Some("m2"))
    );
    let m2 = t.host("m2").unwrap();
    assert_eq!(
        (m2.role, m2.peer.as_deref()),
        (Role::MasterMaster, Some("m1"))
    );
    assert_eq!(m1.slaves, ["m2", "s1"]);
    assert!(t.writable(m1));
    assert!(!t.writable(m2));
    assert_eq!(role(&t, "s1"), Role::Slave);
}

#[test]
fn chain_has_a_relay() {
    let t = ok(&with_hosts(
        "  db1: { address: a.invalid }\n  db2: { address: b.invalid, master: db1 }\n  db3: { address: c.invalid, master: db2 }\n",
    ));
    assert_eq!(role(&t, "db1"), Role::Master);
    assert_eq!(role(&t, "db2"), Role::Relay);
    assert_eq!(role(&t, "db3"), Role::Slave);
    assert_eq!(t.host("db2").unwrap().slaves, ["db3"]);
}

#[test]
fn host_settings_override_defaults_key_by_key() {
    let text = "\
name: lab
defaults:
  transport: local
  config_file: /etc/my.cnf.d/repltool.cnf
  ssh: { user: admin, port: 2222, identity_file: ~/.ssh/id_ed25519, jump: ops@bastion.invalid:2200, sudo: true, connect_timeout: 3 }
  mysql: { user: admin, password: \"\", port: 3307, connect: direct }
replication: { user: r, password: \"${REPL_PASSWORD}\", gtid: true, ssl: true }
hosts:
  a: { address: 127.0.0.1, mysql: { port: \"${PORT}\" } }
  b:
    address: 127.0.0.1
    master: a
    transport: ssh
    ssh: { port: 22, jump: bastion.invalid }
    mysql: { password_file: /nonexistent-dir-for-test/pw, port: 3308 }
    restart: systemctl restart mariadb
    error_log: /var/log/mysql/error.log
";
    let msg = err(text);
    // The only problem: the password file.
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert_has(
        &msg,
        "hosts.b.mysql.password_file: cannot read /nonexistent-dir-for-test/pw",
    );

    let t = ok(&text.replace(
        "mysql: { password_file: /nonexistent-dir-for-test/pw, port: 3308 }",
        "mysql: { port: 3308 }",
    ));
    assert_eq!(t.name, "lab");
    let a = t.host("a").unwrap();
    assert_eq!(a.transport, Transport::Local);
    assert_eq!(a.mysql.port, 3307);
    assert_eq!(a.mysql.user, "admin");
    assert!(a.mysql.password.is_empty());
    assert_eq!(a.mysql.route, SqlRoute::Direct);
    assert_eq!(
        a.config_file.as_deref(),
        Some(Path::new("/etc/my.cnf.d/repltool.cnf"))
    );
    let b = t.host("b").unwrap();
    let Transport::Ssh(ssh) = &b.transport else {
        panic!("b should use ssh")
    };
    assert_eq!(ssh.user, "admin");
    assert_eq!(ssh.port, 22);
    assert!(ssh.sudo);
    assert_eq!(ssh.connect_timeout, Duration::from_secs(3));
    assert_eq!(
        ssh.identity_file.as_deref(),
        Some(Path::new("/home/tester/.ssh/id_ed25519"))
    );
    assert_eq!(
        ssh.jump,
        Some(Jump {
            user: "admin".into(),
            host: "bastion.invalid".into(),
            port: 22
        })
    );
    assert_eq!(b.mysql.port, 3308);
    assert_eq!(b.restart.as_deref(), Some("systemctl restart mariadb"));
    assert_eq!(
        b.error_log.as_deref(),
        Some(Path::new("/var/log/mysql/error.log"))
    );
    assert_eq!(t.replication.user, "r");
    assert!(t.replication.gtid && t.replication.ssl);
}

#[test]
fn name_defaults_to_the_file_stem() {
    let t = load_str(
        &with_hosts("  a: { address: a.invalid }\n"),
        Path::new("clusters/orders-eu.yaml"),
        &env,
    )
    .unwrap();
    assert_eq!(t.name, "orders-eu");
}

#[test]
fn yaml_syntax_error_names_file_line_and_column() {
    let msg = err("hosts:\n  db1:\n    address: [1, 2\n  db2: {}\n");
    assert!(msg.starts_with("/etc/repltool/shop.yaml:"), "{msg}");
    assert_has(&msg, "YAML syntax error");
    let line: usize = msg.split(':').nth(1).unwrap().parse().unwrap();
    assert!((3..=5).contains(&line), "{msg}");
    let msg = err("hosts:\n\tdb1:\n");
    assert_has(&msg, "tabs");
    let msg = err("hosts:\n  db1: { address: ${ADDR} }\n");
    assert_has(&msg, "quote");
}

#[test]
fn unknown_keys_are_reported_at_every_level_with_suggestions() {
    let text = "\
nmae: x
defaults:
  ssh: { usr: a }
  mysql: { password: x, prot: 1 }
  transprt: ssh
replication: { password: x, gtdi: true }
hosts:
  db1:
    adress: a.invalid
  db2:
    address: b.invalid
    mastr: db1
";
    let msg = err(text);
    assert_has(
        &msg,
        "shop.yaml:1:1: nmae: unknown key; did you mean `name`?",
    );
    assert_has(
        &msg,
        "shop.yaml:3:10: defaults.ssh.usr: unknown key; did you mean `user`?",
    );
    assert_has(
        &msg,
        "defaults.mysql.prot: unknown key; did you mean `port`?",
    );
    assert_has(
        &msg,
        "defaults.transprt: unknown key; did you mean `transport`?",
    );
    assert_has(&msg, "replication.gtdi: unknown key; did you mean `gtid`?");
    assert_has(
        &msg,
        "shop.yaml:9:5: hosts.db1.adress: unknown key; did you mean `address`?",
    );
    assert_has(
        &msg,
        "shop.yaml:12:5: hosts.db2.mastr: unknown key; did you mean `master`?",
    );
    // adress is unknown, so address is also missing.
    assert_has(&msg, "hosts.db1.address: missing");
}

#[test]
fn misplaced_keys_say_where_they_belong() {
    let msg = err(&with_hosts(
        "  db1:\n    address: a.invalid\n    port: 3307\n    gtid: true\n",
    ));
    assert_has(
        &msg,
        "hosts.db1.port: unknown key; `port` belongs under `ssh:` or `mysql:`",
    );
    assert_has(
        &msg,
        "hosts.db1.gtid: unknown key; `gtid` belongs under the top-level `replication:`",
    );
}

#[test]
fn environment_variables_expand_and_unset_ones_are_named() {
    let msg = err(&format!(
        "{HEAD}hosts:\n  db1:\n    address: ${{DB1_ADDR}}\n    restart: systemctl restart ${{SVC}}\n"
    ));
    assert_has(
        &msg,
        "hosts.db1.address: environment variable DB1_ADDR is not set",
    );
    assert_has(
        &msg,
        "hosts.db1.restart: environment variable SVC is not set",
    );

    let t = ok(&with_hosts(
        "  db1: { address: a.invalid, restart: echo $$HOME-$$ }\n",
    ));
    assert_eq!(t.hosts[0].restart.as_deref(), Some("echo $HOME-$"));

    let msg = err("defaults:\n  mysql:\n    password: ${NOPE_PW}\nreplication:\n  password: ${EMPTY}\nhosts:\n  a: { address: a.invalid }\n");
    assert_has(
        &msg,
        "defaults.mysql.password: environment variable NOPE_PW is not set",
    );
    assert_has(
        &msg,
        "replication.password: is empty (environment variable EMPTY is empty)",
    );
}

#[test]
fn master_naming_no_host_is_reported_with_a_suggestion() {
    let msg = err(&with_hosts("  db1: { address: a.invalid }\n  db2: { address: b.invalid, master: db11 }\n  db3: { address: c.invalid, master: zzz }\n"));
    assert_has(
        &msg,
        "hosts.db2.master: no host named `db11`; did you mean `db1`?",
    );
    assert_has(
        &msg,
        "hosts.db3.master: no host named `zzz` (hosts: db1, db2, db3)",
    );
}

#[test]
fn a_host_cannot_be_its_own_master() {
    let msg = err(&with_hosts("  db1: { address: a.invalid, master: db1 }\n"));
    assert_has(&msg, "hosts.db1.master: `db1` names itself");
}

#[test]
fn rings_of_three_or_more_are_refused_naming_the_hosts() {
    let msg = err(&with_hosts(
        "  db1: { address: a.invalid, master: db3 }\n  db2: { address: b.invalid, master: db1 }\n  db3: { address: c.invalid, master: db2 }\n  db4: { address: d.invalid, master: db1 }\n",
    ));
    assert_eq!(msg.lines().count(), 1, "{msg}");
    assert_has(
        &msg,
        "hosts.db1.master: replication cycle of 3 hosts (db1 replicates from db3, db3 replicates from db2, db2 replicates from db1)",
    );
}

#[test]
fn duplicate_host_names_are_reported_with_both_lines() {
    let msg = err(&with_hosts(
        "  db1: { address: a.invalid }\n  db1: { address: b.invalid }\n",
    ));
    assert_has(
        &msg,
        "shop.yaml:8:3: hosts.db1: host `db1` is defined twice (first at line 7)",
    );
}

#[test]
fn duplicate_keys_inside_a_host_are_reported() {
    let msg = err(&with_hosts(
        "  db1:\n    address: a.invalid\n    address: b.invalid\n",
    ));
    assert_has(
        &msg,
        "shop.yaml:9:5: hosts.db1.address: duplicate key (first at line 8)",
    );
}

#[test]
fn two_entries_for_one_server_are_refused() {
    let msg = err(&with_hosts(
        "  db1: { address: 10.0.0.1 }\n  db2: { address: 10.0.0.1, master: db1 }\n",
    ));
    assert_has(
        &msg,
        "hosts.db2.address: `db2` has the same address and ports as `db1` (line 7)",
    );
    // Another instance on the same machine: fine.
    ok(&with_hosts(
        "  db1: { address: 10.0.0.1 }\n  db2: { address: 10.0.0.1, master: db1, mysql: { port: 3307 } }\n",
    ));
    // Forwarded SQL through different SSH endpoints reaches different machines: fine.
    ok(&with_hosts(
        "  db1: { address: 10.0.0.1 }\n  db2: { address: 10.0.0.1, master: db1, ssh: { port: 2222 } }\n",
    ));
    // Direct SQL to the same address and port is the same server whatever the ssh port.
    let msg = err(&with_hosts(
        "  db1: { address: 10.0.0.1, mysql: { connect: direct } }\n  db2: { address: 10.0.0.1, master: db1, ssh: { port: 2222 }, mysql: { connect: direct } }\n",
    ));
    assert_has(&msg, "same address and ports");
}

#[test]
fn empty_or_missing_address_is_refused() {
    let msg = err(&with_hosts(
        "  db1: { address: \"\" }\n  db2: { master: db1 }\n  db3:\n  db4: { address: }\n  db5: { address: '10.0.0.5:3306' }\n",
    ));
    assert_has(&msg, "hosts.db1.address: is empty");
    assert_has(&msg, "hosts.db2.address: missing");
    assert_has(&msg, "hosts.db3.address: missing");
    assert_has(&msg, "hosts.db4.address: no value");
    assert_has(&msg, "hosts.db5.address: `10.0.0.5:3306` includes a port");
}

#[test]
fn ports_outside_the_range_are_refused() {
    let msg = err(&with_hosts(
        "  db1: { address: a.invalid, ssh: { port: 0 }, mysql: { port: 70000 } }\n  db2: { address: b.invalid, mysql: { port: -1 } }\n",
    ));
    assert_has(
        &msg,
        "hosts.db1.ssh.port: 0 is out of range; expected a port number in 1..65535",
    );
    assert_has(&msg, "hosts.db1.mysql.port: 70000 is out of range");
    assert_has(&msg, "hosts.db2.mysql.port: -1 is out of range");
    let msg = err(&with_hosts(
        "  db1: { address: a.invalid, mysql: { port: 99999999999999999999999999999999999999999999 } }\n",
    ));
    assert_has(&msg, "hosts.db1.mysql.port:");
    assert_has(&msg, "out of range");
}

#[test]
fn server_ids_must_be_in_range() {
    let msg = err(&with_hosts(
        "  db1: { address: a.invalid, server_id: 0 }\n  db2: { address: b.invalid, server_id: 4294967296 }\n  db3: { address: c.invalid, server_id: 4294967295 }\n",
    ));
    assert_has(
        &msg,
        "hosts.db1.server_id: 0 is out of range; expected a server_id in 1..4294967295",
    );
    assert_has(&msg, "hosts.db2.server_id: 4294967296 is out of range");
    assert!(!msg.contains("db3"), "{msg}");
}

#[test]
fn duplicate_server_ids_are_refused() {
    let msg = err(&with_hosts(
        "  db1: { address: a.invalid, server_id: 5 }\n  db2: { address: b.invalid, server_id: 5 }\n",
    ));
    assert_has(
        &msg,
        "hosts.db2.server_id: server_id 5 is already used by `db1` (line 7)",
    );
    let derived = default_server_id("db1");
    let msg = err(&with_hosts(&format!(
        "  db1: {{ address: a.invalid }}\n  db2: {{ address: b.invalid, server_id: {derived} }}\n"
    )));
    assert_has(
        &msg,
        &format!("hosts.db2.server_id: server_id {derived} is the default server_id of `db1`"),
    );
    // Explicit first, derived second: still reported on the explicit one.
    let derived2 = default_server_id("db2");
    let msg = err(&with_hosts(&format!(
        "  db1: {{ address: a.invalid, server_id: {derived2} }}\n  db2: {{ address: b.invalid }}\n"
    )));
    assert_has(&msg, "hosts.db1.server_id: server_id");
    assert_has(&msg, "default server_id of `db2`");
}

#[test]
fn wrong_types_are_named() {
    let msg = err(&format!(
        "{HEAD}hosts:\n  db1: {{ address: a.invalid, mysql: {{ port: \"abc\" }}, ssh: {{ port: abc, sudo: maybe }} }}\n"
    ));
    assert_has(
        &msg,
        "hosts.db1.mysql.port: expected a port number in 1..65535, found the string `abc`",
    );
    assert_has(
        &msg,
        "hosts.db1.ssh.port: expected a port number in 1..65535, found `abc`",
    );
    assert_has(
        &msg,
        "hosts.db1.ssh.sudo: expected true or false, found `maybe`",
    );
    let msg = err("defaults:\n  mysql: { password: x }\nreplication: { password: y, gtid: yes, ssl: [1] }\nhosts:\n  a: { address: a.invalid, server_id: 1.5 }\n");
    assert_has(
        &msg,
        "replication.gtid: expected true or false, found `yes` (YAML 1.2: write true or false)",
    );
    assert_has(
        &msg,
        "replication.ssl: expected true or false, found a list",
    );
    assert_has(&msg, "hosts.a.server_id: expected a server_id in 1..4294967295, found `1.5` (not a whole number)");
    let msg = err(&format!("{HEAD}hosts:\n  - db1\n  - db2\n"));
    assert_has(&msg, "hosts: must be a mapping of host name -> host");
    assert_has(&msg, "found a list");
    let msg = err(&format!("{HEAD}hosts:\n  db1: 10.0.0.1\n"));
    assert_has(&msg, "hosts.db1: a host must be a mapping");
    let msg = err(&format!(
        "{HEAD}hosts:\n  db1: {{ address: a.invalid, ssh: 22 }}\n"
    ));
    assert_has(&msg, "hosts.db1.ssh: `ssh` must be a mapping");
    let msg = err("- a\n- b\n");
    assert_has(&msg, "the file must be a mapping");
    let msg = err(&format!("{HEAD}hosts:\n  db1: {{ address: a.invalid, transport: sssh, mysql: {{ connect: tunnel }} }}\n"));
    assert_has(
        &msg,
        "hosts.db1.transport: expected `ssh` or `local`, found `sssh`; did you mean `ssh`?",
    );
    assert_has(
        &msg,
        "hosts.db1.mysql.connect: expected `ssh` or `direct`, found `tunnel`",
    );
    // A quoted ${VAR} is read as a number.
    let t = ok(&with_hosts(
        "  db1: { address: a.invalid, mysql: { port: \"${PORT}\" } }\n",
    ));
    assert_eq!(t.hosts[0].mysql.port, 3307);
}

#[test]
fn no_hosts_is_an_error() {
    assert_has(&err(HEAD), "hosts: missing");
    assert_has(&err(&format!("{HEAD}hosts:\n")), "no hosts");
    assert_has(&err(&format!("{HEAD}hosts: {{}}\n")), "no hosts");
    // Nothing else is worth saying about an empty file.
    assert_eq!(err("").lines().count(), 1);
    assert_has(&err(""), "the file is empty");
    assert_has(&err("# only a comment\n"), "the file is empty");
}

#[test]
fn master_and_source_together_are_refused() {
    let msg = err(&with_hosts(
        "  m1: { address: a.invalid, master: m2 }\n  m2: { address: b.invalid, master: m1, source: db3 }\n  db3: { address: c.invalid }\n",
    ));
    assert_has(
        &msg,
        "hosts.m2.source: both `master` and `source` are given",
    );
}

#[test]
fn read_only_rules() {
    let msg = err(&with_hosts(
        "  db1: { address: a.invalid }\n  db2: { address: b.invalid, master: db1, read_only: false }\n",
    ));
    assert_has(
        &msg,
        "hosts.db2.read_only: `read_only: false` on a host with a master",
    );
    let msg = err(&with_hosts(
        "  m1: { address: a.invalid, master: m2, read_only: true }\n  m2: { address: b.invalid, master: m1, read_only: true }\n",
    ));
    assert_has(&msg, "hosts.m2.read_only: both `m1` and `m2` are read_only");
}

#[test]
fn passwords_are_required_and_never_shown() {
    let msg = err("defaults:\n  mysql: { password: x }\nhosts:\n  a: { address: a.invalid }\n");
    assert_has(&msg, "shop.yaml:1:1: replication.password: missing");
    let msg = err("replication:\n  user: repl\nhosts:\n  a: { address: a.invalid }\n");
    assert_has(&msg, "shop.yaml:1:1: replication.password: missing");
    assert_has(&msg, "defaults.mysql.password: missing");
    let msg = err("replication: { password: x }\nhosts:\n  a: { address: a.invalid, mysql: { password: y } }\n  b: { address: b.invalid }\n");
    assert_has(&msg, "hosts.b.mysql.password: missing");
    assert!(!msg.contains("hosts.a"), "{msg}");
    let msg = err("defaults:\n  mysql: { password: }\nreplication: { password: \"\" }\nhosts:\n  a: { address: a.invalid }\n");
    assert_has(
        &msg,
        "defaults.mysql.password: no value; write password: \"\" for an empty password",
    );
    assert_has(
        &msg,
        "replication.password: is empty; replication needs a password",
    );
    let msg = err("defaults:\n  mysql: { password: a, password_file: b }\nreplication: { password: x }\nhosts:\n  a: { address: a.invalid }\n");
    assert_has(
        &msg,
        "defaults.mysql.password_file: give either `password` or `password_file`, not both",
    );
    // A type error on a password shows no value.
    let msg = err(&format!(
        "defaults:\n  mysql: {{ password: {{ nested: {ADMIN_PW} }} }}\nreplication: {{ password: x }}\nhosts:\n  a: {{ address: a.invalid }}\n"
    ));
    assert_has(
        &msg,
        "defaults.mysql.password: expected a password, found a mapping",
    );
}

#[test]
fn password_files_are_read_relative_to_the_topology_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("repl.pw"), "file-S3CRET\r\n").unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("sub/admin.pw"), "admin-from-file\n").unwrap();
    std::fs::write(dir.path().join("empty.pw"), "\n").unwrap();
    let file = dir.path().join("t.yaml");
    let text = "defaults:\n  mysql: { password_file: sub/admin.pw }\nreplication: { password_file: repl.pw }\nhosts:\n  a: { address: a.invalid }\n";
    let t = load_str(text, &file, &env).unwrap();
    assert_eq!(t.replication.password.expose(), "file-S3CRET");
    assert_eq!(t.hosts[0].mysql.password.expose(), "admin-from-file");

    let text = "defaults:\n  mysql: { password_file: missing.pw }\nreplication: { password_file: empty.pw }\nhosts:\n  a: { address: a.invalid }\n";
    let msg = load_str(text, &file, &env).unwrap_err().to_string();
    let missing = dir.path().join("missing.pw");
    assert_has(
        &msg,
        &format!(
            "defaults.mysql.password_file: cannot read {}",
            missing.display()
        ),
    );
    assert_has(&msg, "replication.password_file:");
    assert_has(&msg, "empty.pw is empty");
    let msg = load_str(
        "defaults:\n  mysql: { password_file: /dev/zero }\nreplication: { password: x }\nhosts:\n  a: { address: a.invalid }\n",
        &file,
        &env,
    )
    .unwrap_err()
    .to_string();
    assert_has(&msg, "not a regular file");
}

#[test]
fn every_problem_is_reported_at_once_in_file_order() {
    let text = "\
defaults:
  mysql: { password: x, port: 0 }
replication: { password: y, gtid: maybe }
hosts:
  db1: { adress: a.invalid }
  db2: { address: b.invalid, master: nobody }
  db3: { address: c.invalid, master: db3, server_id: 0 }
";
    let msg = err(text);
    let lines: Vec<&str> = msg.lines().collect();
    assert_eq!(lines.len(), 7, "{msg}");
    let line_numbers: Vec<usize> = lines
        .iter()
        .map(|l| l.split(':').nth(1).unwrap().parse().unwrap())
        .collect();
    assert_eq!(line_numbers, [2, 3, 5, 5, 6, 7, 7], "{msg}");
    for l in &lines {
        assert!(l.starts_with("/etc/repltool/shop.yaml:"), "{l}");
    }
}

#[test]
fn paths_expand_tilde_and_remote_paths_must_be_absolute() {
    let msg = err(&with_hosts(
        "  db1: { address: a.invalid, config_file: etc/my.cnf, error_log: ~/err.log, ssh: { known_hosts: ~bob/kh } }\n",
    ));
    assert_has(
        &msg,
        "hosts.db1.config_file: `etc/my.cnf` is not an absolute path on the host",
    );
    assert_has(
        &msg,
        "hosts.db1.error_log: `~/err.log` is not an absolute path",
    );
    assert_has(
        &msg,
        "hosts.db1.ssh.known_hosts: `~user` paths are not supported",
    );
    let t = ok(&with_hosts(
        "  db1: { address: a.invalid, ssh: { known_hosts: keys/kh, identity_file: ~/id } }\n",
    ));
    let Transport::Ssh(s) = &t.hosts[0].transport else {
        panic!("ssh")
    };
    assert_eq!(s.known_hosts, PathBuf::from("/etc/repltool/keys/kh"));
    assert_eq!(s.identity_file, Some(PathBuf::from("/home/tester/id")));
}

#[test]
fn bad_jump_and_timeout_are_refused() {
    let msg = err(&with_hosts(
        "  db1: { address: a.invalid, ssh: { jump: \"ops@\", connect_timeout: 0 } }\n",
    ));
    assert_has(&msg, "hosts.db1.ssh.jump: expected user@host[:port]");
    assert_has(
        &msg,
        "hosts.db1.ssh.connect_timeout: 0 is out of range; expected seconds in 1..3600",
    );
}

#[test]
fn user_and_home_fall_back_when_unset() {
    let bare = |name: &str| match name {
        "HOME" | "USER" => None,
        other => env(other),
    };
    let text = with_hosts("  db1: { address: a.invalid }\n");
    let msg = load_str(&text, Path::new("t.yaml"), &bare)
        .unwrap_err()
        .to_string();
    assert_has(&msg, "defaults.ssh.known_hosts: HOME is not set");
    let t = load_str(
        &with_hosts("  db1: { address: a.invalid, ssh: { known_hosts: /k } }\n"),
        Path::new("t.yaml"),
        &bare,
    )
    .unwrap();
    let Transport::Ssh(s) = &t.hosts[0].transport else {
        panic!("ssh")
    };
    assert_eq!(s.user, "root");
    // The lab needs neither.
    load_str(
        &with_hosts("  db1: { address: 127.0.0.1, transport: local }\n"),
        Path::new("t.yaml"),
        &bare,
    )
    .unwrap();
}

#[test]
fn anchors_and_merge_keys_work() {
    // Top-level `x-` keys are ignored, so they can hold anchors (as in compose files).
    let t = ok(&format!(
        "{HEAD}x-common: &common\n  mysql: {{ port: 3310 }}\nhosts:\n  db1:\n    <<: *common\n    address: a.invalid\n"
    ));
    assert_eq!(t.hosts[0].mysql.port, 3310);
    let t = ok(&with_hosts(
        "  db1: &h { address: a.invalid, mysql: { port: 3310 } }\n  db2:\n    <<: *h\n    address: b.invalid\n    master: db1\n",
    ));
    assert_eq!(t.hosts[1].mysql.port, 3310);
    assert_eq!(t.hosts[1].address, "b.invalid");
}

#[test]
fn load_reads_files_and_reports_unreadable_ones() {
    let dir = tempfile::tempdir().unwrap();
    let e = load(&dir.path().join("nope.yaml")).unwrap_err();
    assert_eq!(exit_code(&e), 2);
    assert_has(&e.to_string(), "nope.yaml: cannot read");
    let e = load(dir.path()).unwrap_err();
    assert_has(&e.to_string(), "not a regular file");
    let p = dir.path().join("bin.yaml");
    std::fs::write(&p, [0xff, 0xfe, 0x00]).unwrap();
    assert_has(&load(&p).unwrap_err().to_string(), "not UTF-8");
}

/// A few hundred random edits of a valid file: every result is Ok or a bad-input error, never
/// a panic, and no error shows a password.
#[test]
fn mutated_files_never_panic() {
    let base = format!(
        "{HEAD}  gtid: true\nhosts:\n  m1: {{ address: 10.0.1.10, master: m2, server_id: 7 }}\n  m2:\n    address: 10.0.2.10\n    master: m1\n    ssh: {{ port: 2222, jump: ops@bastion.invalid }}\n  s1:\n    address: \"10.0.2.11\"\n    source: m1\n    mysql: {{ port: 3307, connect: direct }}\n"
    );
    ok(&base);
    let pieces: &[&str] = &[
        ":",
        " ",
        "\n",
        "-",
        "{",
        "}",
        "[",
        "]",
        "\"",
        "'",
        "&a",
        "*a",
        "!!str",
        "${",
        "$$",
        "${MYSQL_ADMIN_PASSWORD}",
        "\t",
        "#",
        "master: ",
        "99999999999",
        "~",
        "<<: ",
        "|",
        ">",
        "é",
        "\u{0}",
        "---\n",
        "? ",
    ];
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut outcomes = (0, 0);
    for _ in 0..400 {
        let mut text: Vec<char> = base.chars().collect();
        let edits = 1 + next() % 4;
        for _ in 0..edits {
            let len = text.len().max(1);
            let at = (next() as usize) % len;
            match next() % 4 {
                0 => {
                    text.remove(at.min(text.len().saturating_sub(1)));
                }
                1 => {
                    let p = pieces[(next() as usize) % pieces.len()];
                    for (k, c) in p.chars().enumerate() {
                        text.insert((at + k).min(text.len()), c);
                    }
                }
                2 => {
                    let p = pieces[(next() as usize) % pieces.len()];
                    if let Some(c) = p.chars().next() {
                        text[at.min(len - 1)] = c;
                    }
                }
                _ => {
                    // Duplicate a line.
                    let s: String = text.iter().collect();
                    let lines: Vec<&str> = s.lines().collect();
                    let i = (next() as usize) % lines.len().max(1);
                    let mut v: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
                    if let Some(l) = v.get(i).cloned() {
                        v.insert(i, l);
                    }
                    text = (v.join("\n") + "\n").chars().collect();
                }
            }
        }
        let text: String = text.into_iter().collect();
        match load_text(&text) {
            Ok(_) => outcomes.0 += 1,
            Err(e) => {
                outcomes.1 += 1;
                assert_eq!(exit_code(&e), 2);
                let msg = e.to_string();
                assert!(!msg.contains(ADMIN_PW) && !msg.contains(REPL_PW), "{msg}");
                for line in msg.lines() {
                    assert!(line.starts_with("/etc/repltool/shop.yaml:"), "{line}");
                }
            }
        }
    }
    // The mutations must exercise both paths, or the test proves little. (Few survive: a stray
    // quote, `$` or `~` in an address is refused since addresses are checked strictly.)
    assert!(outcomes.0 > 5 && outcomes.1 > 100, "{outcomes:?}");
}

#[test]
fn a_leading_byte_order_mark_is_accepted_and_one_elsewhere_is_named() {
    let text = format!("\u{feff}{}", with_hosts("  db1: { address: a.invalid }\n"));
    assert_eq!(ok(&text).hosts[0].name, "db1");
    let msg = err(&with_hosts(
        "  db1:\n    address: a.invalid\n    \u{feff}master: db2\n  db2: { address: b.invalid }\n",
    ));
    assert_has(&msg, "`master` with a byte order mark (U+FEFF) in it");
    assert!(!msg.contains('\u{feff}'), "{msg:?}");
    let msg = err(&with_hosts(
        "  db1: { address: a.invalid, ma\u{200b}ster: x }\n",
    ));
    assert_has(&msg, "an invisible character (U+200B)");
}

#[test]
fn a_big_valid_file_loads_quickly_and_is_not_told_about_aliases() {
    let mut hosts = String::from("  h0: { address: 10.255.255.255 }\n");
    for i in 1..30_000 {
        hosts.push_str(&format!(
            "  h{i}: {{ address: 10.{}.{}.{}, master: h0 }}\n",
            i / 65536,
            (i / 256) % 256,
            i % 256
        ));
    }
    let t = std::time::Instant::now();
    let topo = ok(&with_hosts(&hosts));
    assert_eq!(topo.hosts.len(), 30_000);
    assert_eq!(topo.hosts[0].slaves.len(), 29_999);
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn watch_block_with_defaults_and_every_key() {
    let t = ok(&format!(
        "{HEAD}watch:\n  etcd: [http://10.0.0.21:2379, http://10.0.0.22:2379]\nhosts:\n  db1: {{ address: 10.0.0.1 }}\n"
    ));
    let w = t.watch.expect("watch");
    assert_eq!(w.etcd.len(), 2);
    assert_eq!(w.interval, Duration::from_secs(1));
    assert_eq!(w.anti_flap, Duration::from_secs(3600));
    assert_eq!(w.prefix, "/repltool/v1");
    let t = ok(&format!(
        "{HEAD}watch:\n  etcd: http://e1:2379\n  interval: 500ms\n  confirm: 1s\n  anti_flap: 10m\n  lock_ttl: 4s\n  net_timeout: 5\n  prefix: /x/\n  hooks:\n    pre_failover: /usr/local/bin/vip down\n    post_failover: echo done\nhosts:\n  db1: {{ address: 10.0.0.1 }}\n"
    ));
    let w = t.watch.expect("watch");
    assert_eq!(w.etcd, vec!["http://e1:2379".to_string()]);
    assert_eq!(w.interval, Duration::from_millis(500));
    assert_eq!(w.anti_flap, Duration::from_secs(600));
    assert_eq!(w.lock_ttl, Duration::from_secs(4));
    assert_eq!(w.net_timeout, 5);
    assert_eq!(w.prefix, "/x");
    assert_eq!(
        w.hooks.pre_failover.as_deref(),
        Some("/usr/local/bin/vip down")
    );
    assert!(ok(&with_hosts("  db1: { address: 10.0.0.1 }\n"))
        .watch
        .is_none());
}

#[test]
fn watch_block_problems_name_line_and_key() {
    let msg = err(&format!(
        "{HEAD}watch:\n  etcd: [https://e1:2379, nope]\n  intervall: 1s\n  anti_flap: forever\n  lock_ttl: 1s\nhosts:\n  db1: {{ address: 10.0.0.1 }}\n"
    ));
    assert!(
        msg.contains("watch.etcd[0]") && msg.contains("https"),
        "{msg}"
    );
    assert!(msg.contains("watch.etcd[1]"), "{msg}");
    assert!(
        msg.contains("watch.intervall: unknown key; did you mean `interval`?"),
        "{msg}"
    );
    assert!(
        msg.contains("watch.anti_flap") && msg.contains("forever"),
        "{msg}"
    );
    assert!(
        msg.contains("watch.lock_ttl") && msg.contains("out of range"),
        "{msg}"
    );
    let msg = err(&format!(
        "{HEAD}watch:\n  interval: 1s\nhosts:\n  db1: {{ address: 10.0.0.1 }}\n"
    ));
    assert!(msg.contains("watch.etcd: missing"), "{msg}");
}
