//! Golden tests for the SQL dialect layer: every statement, command and config fragment
//! `flavor/` renders (each one production sends), per server version, compared with
//! tests/golden/sql/<version>/. Statements carrying a secret
//! have two goldens: `<case>.shown.sql` (what is printed: the password must not be there) and
//! `<case>.text.sql` (what is sent: the escaped password must be there). UPDATE_GOLDEN=1
//! rewrites the files; a missing or stale golden fails the test.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::{
    quote, ChangeMaster, ChunkTable, Flavor, FragmentSettings, KeyColumn, KeyValue,
    PromotionRecord, Sql, StartAt,
};
use crate::secret::Secret;

/// Quotes, a semicolon, a backslash and spaces: everything that could end or bend a literal.
const NASTY: &str = r#"p'a"s;s \w rd"#;

/// (golden directory, @@version, @@version_comment) as the servers report them.
const VERSIONS: &[(&str, &str, &str)] = &[
    ("mysql-5.7.44", "5.7.44-log", "MySQL Community Server (GPL)"),
    ("mysql-8.0.22", "8.0.22", "MySQL Community Server - GPL"),
    ("mysql-8.0.23", "8.0.23", "MySQL Community Server - GPL"),
    ("mysql-8.0.36", "8.0.36", "MySQL Community Server - GPL"),
    (
        "mysql-8.4.0",
        "8.4.0-commercial",
        "MySQL Enterprise Server - Commercial",
    ),
    ("mysql-9.7.4", "9.7.4", "MySQL Community Server - GPL"),
    ("mariadb-10.11.6", "10.11.6-MariaDB-0+deb12u1", "Debian 12"),
    ("mariadb-11.4.2", "11.4.2-MariaDB", "MariaDB Server"),
    (
        "mariadb-11.8.3",
        "11.8.3-MariaDB-4 from Debian",
        "Debian n/a",
    ),
];

fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/sql")
}

fn statements(sqls: &[Sql], text: bool) -> String {
    sqls.iter()
        .map(|s| format!("{};\n", if text { s.text() } else { s.shown() }))
        .collect()
}

/// Everything rendered for one version: file name -> content.
struct Rendered {
    files: BTreeMap<String, String>,
    /// Files that carry the password (shown and text forms).
    secret_cases: Vec<String>,
}

impl Rendered {
    fn plain(&mut self, name: &str, sqls: &[Sql]) {
        for s in sqls {
            assert_eq!(
                s.text(),
                s.shown(),
                "{name}: a plain statement differs when shown"
            );
        }
        self.files
            .insert(format!("{name}.sql"), statements(sqls, false));
    }
    fn secret(&mut self, name: &str, sqls: &[Sql]) {
        self.files
            .insert(format!("{name}.shown.sql"), statements(sqls, false));
        self.files
            .insert(format!("{name}.text.sql"), statements(sqls, true));
        self.secret_cases.push(name.to_string());
    }
}

fn change(start: StartAt, ssl: bool) -> ChangeMaster {
    ChangeMaster {
        host: "127.0.0.1".into(),
        port: 3306,
        user: "repl".into(),
        password: Secret::new(NASTY),
        start,
        ssl,
        connect_retry: 10,
        heartbeat: None,
    }
}

fn settings() -> FragmentSettings {
    FragmentSettings {
        host_name: "db2".into(),
        server_id: 2,
        report_host: "127.0.0.12".into(),
        log_bin: "mysql-bin".into(),
        relay_log: "mysql-relay".into(),
        log_slave_updates: false,
        auto_increment: None,
        gtid: false,
        bind_address: None,
        net_timeout: None,
    }
}

fn render(f: &Flavor) -> Rendered {
    let mut r = Rendered {
        files: BTreeMap::new(),
        secret_cases: Vec::new(),
    };
    let pos = StartAt::Position {
        file: "mysql-bin.000002".into(),
        pos: 1234,
    };
    r.secret(
        "change-master-pos",
        &[f.change_master(&change(pos.clone(), false))],
    );
    r.secret(
        "change-master-pos-ssl",
        &[f.change_master(&change(pos, true))],
    );
    r.secret(
        "change-master-gtid",
        &[f.change_master(&change(StartAt::Gtid, false))],
    );
    r.secret(
        "change-master-gtid-ssl",
        &[f.change_master(&change(StartAt::Gtid, true))],
    );
    r.secret(
        "repl-user",
        &f.create_repl_user("repl", "127.0.0.12", &Secret::new(NASTY)),
    );
    r.plain(
        "replica-control",
        &[
            f.start_replica(),
            f.stop_replica(),
            f.stop_io_thread(),
            f.stop_sql_thread(),
            f.start_sql_thread(),
            f.start_replica_until("mysql-bin.000002", 1234),
            f.reset_replica_all(),
            f.set_net_timeout(4),
            f.change_master_timing(1, 1.0),
        ],
    );
    r.plain(
        "status",
        &[
            f.show_replica_status(),
            f.show_master_status(),
            f.show_binary_logs(),
            f.show_binlog_events("mysql-bin.000002", 4),
            f.show_replicas(),
        ],
    );
    r.plain(
        "snapshot-lock",
        &[
            f.lock_wait_timeout(30),
            f.flush_tables_with_read_lock(),
            f.show_master_status(),
            f.unlock_tables(),
        ],
    );
    r.plain("read-only-on", &f.set_read_only(true));
    r.plain("read-only-off", &f.set_read_only(false));
    let mut window = f.write_window(true);
    window.extend(f.write_window(false));
    r.plain("write-window", &window);
    r.plain(
        "cluster-lock",
        &[
            f.get_lock("repltool:shop"),
            f.lock_holder_query("repltool:shop"),
            f.release_lock("repltool:shop"),
        ],
    );
    r.plain(
        "sessions",
        &[f.client_sessions_query("admin"), f.kill_connection(42)],
    );
    let gtid = if f.describe().starts_with("MariaDB") {
        "0-1-1234"
    } else {
        "3e11fa47-71ca-11e1-9e33-c80aa9429562:1-1234"
    };
    let mut waits = vec![
        f.pos_wait("mysql-bin.000002", 1234, 30),
        f.gtid_wait(gtid, 30),
    ];
    waits.extend(f.binlog_gtid_pos("mysql-bin.000002", 1234));
    r.plain("waits", &waits);
    r.plain("seed-gtid", &f.seed_gtid(gtid));
    let mut runtime = vec![
        Flavor::session_setup(),
        f.set_server_id(2),
        f.set_binlog_format_row(),
        f.session_binlog(false),
        f.session_binlog(true),
    ];
    runtime.extend(f.set_auto_increment(2, 1));
    runtime.extend(f.adopt_own_gtids());
    r.plain("runtime-settings", &runtime);
    r.plain(
        "observe",
        &[
            Flavor::detect_query(),
            Flavor::ping(),
            f.variables_query(),
            f.global_var("read_only").expect("a variable name"),
            f.databases_query(),
            f.non_transactional_tables_query(),
            f.data_size_query(),
            f.repl_user_hosts_query("repl"),
            f.repl_accounts_query("repl"),
            f.show_own_grants(),
        ],
    );
    let mut canary = f.canary_setup();
    canary.push(f.canary_write("db1", "c-1700000000-42"));
    canary.push(f.canary_exists());
    canary.push(f.canary_read("db1"));
    canary.extend(f.record_promotion(&PromotionRecord {
        old_master: "db1".into(),
        old_server_id: 1,
        old_server_uuid: "3e11fa47-71ca-11e1-9e33-c80aa9429562".into(),
        old_pos: ("mysql-bin.000002".into(), 1234),
        old_gtid: "0-1-57".into(),
        slaves_pos: ("mysql-bin.000002".into(), 1200),
        new_master: "db2".into(),
        new_pos: ("mysql-bin.000007".into(), 4567),
    }));
    canary.push(f.promotions_exist());
    canary.push(f.promotions_query());
    r.plain("canary", &canary);
    let dump = f
        .dump_databases_command(
            "/tmp/repltool-dump.cnf",
            &["shop".into(), "odd name".into()],
        )
        .expect("two user databases");
    r.files.insert(
        "commands.txt".into(),
        format!(
            "dump: {}\ndump databases: {dump}\nclient: {}\nload: {}\nbinlog: {}\nlogin test: {}\n",
            f.dump_command("/tmp/repltool-dump.cnf"),
            f.client_command("/tmp/repltool client.cnf"),
            f.load_command("/tmp/repltool-load.cnf"),
            f.binlog_tool(),
            f.login_test_command("/tmp/repltool-login.cnf", "10.0.0.1", 3306),
        ),
    );

    match f.physical_copy() {
        Ok(super::PhysicalCopy::Mariabackup) => {
            r.files.insert(
                "physical.txt".into(),
                format!(
                    "backup: {}\nextract: {}\nprepare: {}\nprograms: {:?}\nbinlog info: {}\n\
                     drop from the copy: {}\nkeep from the slave: {}\n",
                    f.backup_stream_command(
                        "/tmp/repltool-client.cnf",
                        "/var/lib/mysql/",
                        "/tmp/repltool-backup.x",
                        "/tmp/repltool-backup.x/backup.log"
                    ),
                    f.backup_extract_command("/var/lib/mysql/.repltool-seed"),
                    f.backup_prepare_command("/var/lib/mysql/.repltool-seed"),
                    f.backup_programs(),
                    f.backup_binlog_info_files().join(" "),
                    f.backup_foreign_files().join(" "),
                    f.datadir_identity_files().join(" "),
                ),
            );
            r.plain("physical-checks", &[f.innodb_dirs_query()]);
        }
        Ok(super::PhysicalCopy::Clone) => {
            let mut stmts = vec![f.clone_plugin_query()];
            stmts.extend(f.install_clone_plugin());
            stmts.push(f.set_clone_donor("10.0.0.1", 3306));
            stmts.extend(f.drop_clone_user("repltool_clone", "10.0.0.2"));
            stmts.push(f.clone_status_query());
            stmts.push(f.innodb_dirs_query());
            r.plain("clone", &stmts);
            let mut secret = f.create_clone_user("repltool_clone", "10.0.0.2", &Secret::new(NASTY));
            secret.push(
                f.clone_instance(
                    "repltool_clone",
                    "10.0.0.1",
                    3306,
                    &Secret::new(NASTY),
                    Some("/var/lib/mysql/.repltool-seed"),
                    false,
                )
                .expect("an absolute data directory"),
            );
            secret.push(
                f.clone_instance(
                    "repltool_clone",
                    "10.0.0.1",
                    3306,
                    &Secret::new(NASTY),
                    None,
                    false,
                )
                .expect("in place"),
            );
            r.secret("clone-instance", &secret);
        }
        Err(why) => {
            r.files
                .insert("physical.txt".into(), format!("no physical copy: {why}\n"));
        }
    }
    let key_table = ChunkTable {
        schema: "shop".into(),
        name: "order`lines".into(),
        columns: vec!["order_id".into(), "sku".into(), "qty".into(), "note".into()],
        key: vec![
            KeyColumn {
                name: "order_id".into(),
                binary: false,
            },
            KeyColumn {
                name: "sku".into(),
                binary: true,
            },
        ],
        index: Some("PRIMARY".into()),
    };
    let lo = [KeyValue::Text("1000".into()), KeyValue::Hex("00FF".into())];
    let hi = [KeyValue::Text("1999".into()), KeyValue::Hex("".into())];
    let whole = ChunkTable {
        schema: "shop".into(),
        name: "log".into(),
        columns: vec!["line".into()],
        key: Vec::new(),
        index: None,
    };
    let mut verify = f.verify_session_setup();
    verify.push(f.consistent_snapshot());
    verify.extend(f.snapshot_coordinates_query());
    verify.push(f.start_sql_thread_until("mysql-bin.000002", 1234));
    verify.push(f.verify_tables_query());
    verify.push(f.verify_columns_query());
    verify.push(f.verify_keys_query());
    verify.push(f.chunk_boundary(&key_table, None, 1000).expect("a key"));
    verify.push(
        f.chunk_boundary(&key_table, Some(&lo), 5000)
            .expect("a key"),
    );
    verify.push(
        f.chunk_checksum(&key_table, None, Some(&lo))
            .expect("columns"),
    );
    verify.push(
        f.chunk_checksum(&key_table, Some(&lo), Some(&hi))
            .expect("columns"),
    );
    verify.push(
        f.chunk_checksum(&key_table, Some(&hi), None)
            .expect("columns"),
    );
    verify.push(f.chunk_checksum(&whole, None, None).expect("columns"));
    verify.push(f.end_snapshot());
    r.plain("verify", &verify);

    let slave = settings();
    r.files
        .insert("fragment-slave.cnf".into(), f.fragment(&slave));
    let relay = FragmentSettings {
        host_name: "relay1".into(),
        server_id: 3,
        log_slave_updates: true,
        ..settings()
    };
    r.files
        .insert("fragment-relay.cnf".into(), f.fragment(&relay));
    let mm = FragmentSettings {
        host_name: "m2".into(),
        server_id: 12,
        log_slave_updates: true,
        auto_increment: Some((2, 2)),
        ..settings()
    };
    r.files
        .insert("fragment-master-master.cnf".into(), f.fragment(&mm));
    let gtid_slave = FragmentSettings {
        gtid: true,
        ..settings()
    };
    r.files
        .insert("fragment-gtid.cnf".into(), f.fragment(&gtid_slave));
    let watched = FragmentSettings {
        net_timeout: Some(4),
        ..settings()
    };
    r.files
        .insert("fragment-watched.cnf".into(), f.fragment(&watched));
    let gtid_mm = FragmentSettings { gtid: true, ..mm };
    r.files.insert(
        "fragment-master-master-gtid.cnf".into(),
        f.fragment(&gtid_mm),
    );
    galera(f, &mut r);
    r
}

/// Galera (MariaDB only): what observe reads, the SST account (given by its hash: the shown
/// form is the golden, the sent one never contains the password either), runtime settings and
/// a member's fragment (shown form: the SST password masked).
fn galera(f: &Flavor, r: &mut Rendered) {
    use super::galera::{GaleraSettings, SST_USER};
    if f.galera_support().is_err() {
        return;
    }
    r.plain(
        "galera-observe",
        &[
            f.wsrep_dirty_reads(),
            f.wsrep_status_query(),
            f.wsrep_variables_query(),
            f.unreplicated_tables_query(),
            f.tables_without_pk_query(),
            f.sst_account_query(),
        ],
    );
    r.plain(
        "galera-runtime",
        &[
            f.pc_bootstrap(),
            f.set_sst_method(crate::topology::Sst::Rsync),
        ],
    );
    let mut sst = f.create_sst_user(&Secret::new(NASTY));
    sst.push(f.set_sst_auth(SST_USER, &Secret::new(NASTY)));
    for q in &sst {
        assert!(!q.text().contains(NASTY) || q.shown().contains("'***'"));
    }
    r.files
        .insert("galera-sst-user.shown.sql".into(), statements(&sst, false));
    let member = FragmentSettings {
        host_name: "g2".into(),
        server_id: 2,
        report_host: "10.0.1.11".into(),
        log_bin: "/var/lib/mysql/mysql-bin".into(),
        log_slave_updates: true,
        bind_address: Some("0.0.0.0".into()),
        ..settings()
    };
    let g = GaleraSettings {
        provider: "/usr/lib/galera/libgalera_smm.so".into(),
        cluster_name: "shop".into(),
        addresses: vec!["10.0.1.10".into(), "10.0.1.11".into(), "10.0.1.12".into()],
        node_address: "10.0.1.11".into(),
        node_name: "g2".into(),
        sst: crate::topology::Sst::Mariabackup,
        sst_password: Some(Secret::new(NASTY)),
    };
    let frag = f
        .galera_fragment(&member, &g)
        .expect("a MariaDB with Galera");
    r.files
        .insert("fragment-galera.shown.cnf".into(), frag.shown);
}

#[test]
fn rendered_sql_matches_the_goldens() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut problems = Vec::new();
    for (dir_name, version, comment) in VERSIONS {
        let f = Flavor::detect(version, comment).expect("a version the servers report");
        let rendered = render(&f);
        let dir = golden_root().join(dir_name);
        if update {
            fs::create_dir_all(&dir).expect("writable golden directory");
        }
        for (name, got) in &rendered.files {
            let path = dir.join(name);
            if update {
                fs::write(&path, got).expect("writable golden");
                continue;
            }
            match fs::read_to_string(&path) {
                Err(_) => problems.push(format!(
                    "{dir_name}/{name}: missing (run with UPDATE_GOLDEN=1 and review the diff)"
                )),
                Ok(want) if &want != got => problems.push(format!(
                    "{dir_name}/{name}: differs\n--- want\n{want}--- got\n{got}"
                )),
                Ok(_) => {}
            }
        }
        // A golden nothing renders any more is stale: it would keep a reviewer's trust in
        // output that no longer exists.
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !rendered.files.contains_key(&name) {
                    problems.push(format!(
                        "{dir_name}/{name}: stale golden, nothing renders it"
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Independently of the goldens: the password is in what is sent, escaped, and in nothing that
/// is shown; no shown form of anything contains it.
#[test]
fn secrets_are_sent_escaped_and_never_shown() {
    let escaped = quote(NASTY);
    assert_eq!(escaped, r#"'p\'a"s;s \\w rd'"#);
    for (dir_name, version, comment) in VERSIONS {
        let f = Flavor::detect(version, comment).expect("a version the servers report");
        let r = render(&f);
        let clone = usize::from(f.physical_copy() == Ok(super::PhysicalCopy::Clone));
        assert_eq!(r.secret_cases.len(), 5 + clone, "{dir_name}");
        for case in &r.secret_cases {
            let text = &r.files[&format!("{case}.text.sql")];
            let shown = &r.files[&format!("{case}.shown.sql")];
            assert!(text.contains(&escaped), "{dir_name}/{case}: {text}");
            assert!(shown.contains("'***'"), "{dir_name}/{case}: {shown}");
            assert_eq!(
                text.replace(&escaped, "'***'"),
                *shown,
                "{dir_name}/{case}: shown must differ from text only by the mask"
            );
        }
        for (name, content) in &r.files {
            if name.ends_with(".text.sql") {
                continue;
            }
            for piece in ["s;s", r"\w rd", "p'a", r#"a"s"#] {
                assert!(
                    !content.contains(piece),
                    "{dir_name}/{name} shows the password"
                );
            }
        }
    }
}

/// The version rules a user of each server notices first (a statement the server rejects).
#[test]
fn each_version_gets_only_syntax_it_accepts() {
    for (dir_name, version, comment) in VERSIONS {
        let f = Flavor::detect(version, comment).expect("a version the servers report");
        let r = render(&f);
        let all: String = r
            .files
            .iter()
            .filter(|(n, _)| !n.ends_with(".text.sql"))
            .map(|(_, c)| c.as_str())
            .collect();
        let mysql = dir_name.starts_with("mysql");
        if *dir_name == "mysql-8.4.0" || *dir_name == "mysql-9.7.4" {
            // 8.4 removed every MASTER/SLAVE form and the *_repository options.
            // (The privilege is still called REPLICATION SLAVE.)
            for gone in [
                "CHANGE MASTER",
                "MASTER_",
                "START SLAVE",
                "STOP SLAVE",
                "RESET SLAVE",
                "SHOW SLAVE",
                "SHOW MASTER",
                "RESET MASTER",
                "_repository",
                "log_slave_updates =",
                "@@GLOBAL.log_slave_updates",
                "slave_net_timeout",
                "sql_slave_skip_counter",
                "SHOW SLAVE HOSTS",
            ] {
                assert!(!all.contains(gone), "{dir_name}: {gone} is gone in 8.4");
            }
        }
        if !mysql {
            for unknown in [
                "REPLICATION SOURCE",
                "SOURCE_",
                "AUTO_POSITION",
                "PUBLIC_KEY",
                "WAIT_FOR_EXECUTED_GTID_SET",
                "SHOW REPLICAS",
                "gtid_mode",
                "gtid_purged",
                "super_read_only =",
                "@@GLOBAL.super_read_only",
                "@@GLOBAL.server_uuid",
                "SOURCE_POS_WAIT",
                "--set-gtid-purged",
            ] {
                assert!(
                    !all.contains(unknown),
                    "{dir_name}: MariaDB has no {unknown}"
                );
            }
            let cm = &r.files["change-master-pos.shown.sql"];
            assert!(cm.contains("MASTER_USE_GTID=no"), "{dir_name}: {cm}");
        }
        if *dir_name == "mysql-8.0.22" {
            assert!(r.files["change-master-pos.shown.sql"].starts_with("CHANGE MASTER TO"));
            assert!(r.files["replica-control.sql"].starts_with("START REPLICA;"));
        }
        if mysql && *dir_name >= "mysql-8.0.23" {
            assert!(
                r.files["change-master-gtid.shown.sql"].starts_with("CHANGE REPLICATION SOURCE TO")
            );
        }
        for frag in r.files.iter().filter(|(n, _)| n.ends_with(".cnf")) {
            // A Galera member is fenced by quorum, not read_only: every member takes writes.
            let want = if frag.0.starts_with("fragment-galera") {
                "\nread_only = OFF\n"
            } else {
                "\nread_only = ON\n"
            };
            assert!(frag.1.contains(want), "{dir_name}/{}", frag.0);
        }
    }
}
