//! Unit tests of the dialects.

use super::*;
use crate::secret::Secret;
use config::FRAGMENT_HEADER;

fn f(version: &str, comment: &str) -> Flavor {
    Flavor::detect(version, comment).unwrap()
}

#[test]
fn detect_mariadb_before_numbers() {
    for (v, c, want) in [
        ("10.11.6-MariaDB-0+deb12u1", "Debian 12", (10, 11, 6)),
        (
            "5.5.5-10.11.6-MariaDB",
            "mariadb.org binary distribution",
            (10, 11, 6),
        ),
        ("11.4.2-MariaDB", "MariaDB Server", (11, 4, 2)),
        ("5.5.68-MariaDB", "MariaDB Server", (5, 5, 68)),
        // A build whose version string lost the suffix is still recognised by its comment.
        ("10.6.16", "MariaDB Server", (10, 6, 16)),
    ] {
        let fl = f(v, c);
        assert_eq!(fl.kind, Kind::MariaDB, "{v}");
        assert_eq!((fl.major, fl.minor, fl.patch), want, "{v}");
    }
    // MariaDB 11.4 must not take MySQL 8.0.23+ paths.
    let m = f("11.4.2-MariaDB", "");
    assert_eq!(m.show_replica_status().shown(), "SHOW SLAVE STATUS");
    assert_eq!(m.log_slave_updates_var(), "log_slave_updates");
}

#[test]
fn detect_mysql_and_refuse_garbage() {
    let m = f("8.0.36", "MySQL Community Server - GPL");
    assert_eq!((m.kind, m.major, m.minor, m.patch), (Kind::MySQL, 8, 0, 36));
    let m = f("8.4.0-commercial", "MySQL Enterprise Server - Commercial");
    assert_eq!((m.kind, m.major, m.minor, m.patch), (Kind::MySQL, 8, 4, 0));
    let m = f("5.7.44-log", "MySQL Community Server (GPL)");
    assert_eq!(m.describe(), "MySQL 5.7.44");
    // The 5.5.5- prefix is only MariaDB's: a MySQL 5.5.5 stays 5.5.5.
    assert_eq!(f("5.5.5-log", "MySQL").describe(), "MySQL 5.5.5");
    for bad in [
        "",
        "garbage",
        "8",
        "8.0",
        "8.0.",
        "8.x.1",
        "1.2.3.4",
        "99999999999.0.0",
    ] {
        assert!(Flavor::detect(bad, "MySQL").is_err(), "{bad:?}");
    }
    assert!(Flavor::detect("MariaDB", "MariaDB").is_err());
}

#[test]
fn supported_versions() {
    assert!(f("5.7.44", "").check_supported().is_ok());
    assert!(f("5.6.51", "").check_supported().is_err());
    assert!(f("10.1.48-MariaDB", "").check_supported().is_err());
    assert!(f("10.11.6-MariaDB", "").check_supported().is_ok());
}

#[test]
fn quote_escapes_what_would_end_or_bend_the_literal() {
    assert_eq!(quote("plain"), "'plain'");
    assert_eq!(quote(r#"p'a"s;s \w rd"#), r#"'p\'a"s;s \\w rd'"#);
    assert_eq!(quote("a\nb\0c\r\x1a"), r"'a\nb\0c\r\Z'");
    assert_eq!(quote(""), "''");
}

#[test]
fn verbs_follow_versions() {
    let v57 = f("5.7.44", "");
    let v22 = f("8.0.22", "");
    let v23 = f("8.0.23", "");
    let v84 = f("8.4.0", "");
    assert_eq!(v57.start_replica().text(), "START SLAVE");
    assert_eq!(v22.start_replica().text(), "START REPLICA");
    assert_eq!(v22.show_master_status().text(), "SHOW MASTER STATUS");
    assert_eq!(v84.show_master_status().text(), "SHOW BINARY LOG STATUS");
    assert_eq!(
        v84.reset_binary_logs().text(),
        "RESET BINARY LOGS AND GTIDS"
    );
    assert!(v23.pos_wait("b.1", 4, 5).text().contains("MASTER_POS_WAIT"));
    assert!(f("8.0.26", "")
        .pos_wait("b.1", 4, 5)
        .text()
        .contains("SOURCE_POS_WAIT"));
    // Every wait has a limit: 0 would mean forever on some versions.
    assert!(v57.pos_wait("b.1", 4, 0).text().ends_with(", 4, 1)"));
    assert_eq!(f("8.0.25", "").log_slave_updates_var(), "log_slave_updates");
    assert_eq!(
        f("8.0.26", "").log_slave_updates_var(),
        "log_replica_updates"
    );
}

fn cm(start: StartAt, ssl: bool) -> ChangeMaster {
    ChangeMaster {
        host: "127.0.0.1".into(),
        port: 3306,
        user: "repl".into(),
        password: Secret::new(r#"p'a"s;s \w rd"#),
        start,
        ssl,
        connect_retry: 10,
        heartbeat: None,
    }
}

#[test]
fn change_master_masks_and_escapes_the_password() {
    let pos = StartAt::Position {
        file: "mysql-bin.000002".into(),
        pos: 1234,
    };
    for v in ["5.7.44", "8.0.22", "8.0.36", "8.4.0", "10.11.6-MariaDB"] {
        let s = f(v, "").change_master(&cm(pos.clone(), false));
        assert!(
            s.text().contains(r#"PASSWORD='p\'a"s;s \\w rd'"#),
            "{v}: {}",
            s.text()
        );
        assert!(!s.shown().contains("s;s"), "{v}: {}", s.shown());
        assert!(s.shown().contains("PASSWORD='***'"), "{v}");
        assert!(!format!("{s} {s:?}").contains("s;s"));
    }
}

#[test]
fn change_master_per_version() {
    let pos = StartAt::Position {
        file: "mysql-bin.000002".into(),
        pos: 1234,
    };
    let maria = f("10.11.6-MariaDB", "").change_master(&cm(pos.clone(), false));
    assert!(maria
        .text()
        .starts_with("CHANGE MASTER TO MASTER_HOST='127.0.0.1'"));
    assert!(maria.text().contains("MASTER_USE_GTID=no"));
    assert!(!maria.text().contains("PUBLIC_KEY"));
    let maria = f("10.11.6-MariaDB", "").change_master(&cm(StartAt::Gtid, true));
    assert!(maria.text().contains("MASTER_USE_GTID=slave_pos"));
    assert!(maria.text().contains("MASTER_SSL=1"));
    assert!(!maria.text().contains("LOG_FILE"));

    let v22 = f("8.0.22", "").change_master(&cm(StartAt::Gtid, false));
    assert!(v22.text().starts_with("CHANGE MASTER TO"));
    assert!(v22.text().contains("MASTER_AUTO_POSITION=1"));
    assert!(v22.text().contains("GET_MASTER_PUBLIC_KEY=1"));

    let v23 = f("8.0.23", "").change_master(&cm(pos.clone(), false));
    assert!(v23
        .text()
        .starts_with("CHANGE REPLICATION SOURCE TO SOURCE_HOST="));
    assert!(v23.text().contains("GET_SOURCE_PUBLIC_KEY=1"));
    assert!(v23.text().contains("SOURCE_AUTO_POSITION=0"));
    assert!(!v23.text().contains("MASTER_"));

    let v84 = f("8.4.0", "").change_master(&cm(StartAt::Gtid, true));
    assert!(v84.text().contains("SOURCE_SSL=1"));
    assert!(!v84.text().contains("PUBLIC_KEY"));
    assert!(!v84.text().contains("MASTER"));

    let v57 = f("5.7.44", "").change_master(&cm(pos, false));
    assert!(!v57.text().contains("PUBLIC_KEY"));
    assert!(v57.text().contains("MASTER_CONNECT_RETRY=10"));
}

#[test]
fn repl_user_is_idempotent_least_privilege_and_masked() {
    let sqls = f("8.0.36", "").create_repl_user("repl", "10.0.0.%", &Secret::new("x'y"));
    assert_eq!(sqls.len(), 5);
    // Out of the binary log: the statements carry the password.
    assert_eq!(sqls[0].text(), "SET SESSION sql_log_bin = 0");
    assert_eq!(sqls[4].text(), "SET SESSION sql_log_bin = 1");
    let sqls = &sqls[1..4];
    assert_eq!(
        sqls[0].text(),
        r"CREATE USER IF NOT EXISTS 'repl'@'10.0.0.%' IDENTIFIED BY 'x\'y'"
    );
    assert_eq!(
        sqls[1].shown(),
        "ALTER USER 'repl'@'10.0.0.%' IDENTIFIED BY '***'"
    );
    assert_eq!(
        sqls[2].text(),
        "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'10.0.0.%'"
    );
}

#[test]
fn read_only_order() {
    let on: Vec<String> = f("8.0.36", "")
        .set_read_only(true)
        .iter()
        .map(|s| s.text().to_string())
        .collect();
    assert_eq!(
        on,
        [
            "SET GLOBAL read_only = ON",
            "SET GLOBAL super_read_only = ON"
        ]
    );
    let off: Vec<String> = f("5.7.44", "")
        .set_read_only(false)
        .iter()
        .map(|s| s.text().to_string())
        .collect();
    assert_eq!(
        off,
        [
            "SET GLOBAL super_read_only = OFF",
            "SET GLOBAL read_only = OFF"
        ]
    );
    let maria = f("10.11.6-MariaDB", "").set_read_only(false);
    assert_eq!(maria.len(), 1);
    assert_eq!(maria[0].text(), "SET GLOBAL read_only = OFF");
}

#[test]
fn wait_outcomes() {
    let my = f("8.0.36", "");
    let ma = f("10.11.6-MariaDB", "");
    assert_eq!(my.pos_wait_outcome(Some(0)), WaitOutcome::Reached);
    assert_eq!(my.pos_wait_outcome(Some(-1)), WaitOutcome::TimedOut);
    assert_eq!(my.pos_wait_outcome(None), WaitOutcome::NotReplicating);
    assert_eq!(my.gtid_wait_outcome(Some(1)), WaitOutcome::TimedOut);
    assert_eq!(ma.gtid_wait_outcome(Some(-1)), WaitOutcome::TimedOut);
    assert_eq!(ma.gtid_wait_outcome(Some(0)), WaitOutcome::Reached);
}

#[test]
fn dump_never_takes_system_schemas_and_quotes_names() {
    let ma = f("10.11.6-MariaDB", "");
    let cmd = ma
        .dump_databases_command("/tmp/my defaults.cnf", &["shop".into(), "a b".into()])
        .unwrap();
    assert!(
        cmd.starts_with("mariadb-dump --defaults-extra-file='/tmp/my defaults.cnf' "),
        "{cmd}"
    );
    assert!(cmd.ends_with(" --databases shop 'a b'"), "{cmd}");
    assert!(!cmd.contains("master-data"));
    assert!(ma.dump_databases_command("/f", &[]).is_err());
    assert!(ma.dump_databases_command("/f", &["mysql".into()]).is_err());
    assert!(ma
        .dump_databases_command("/f", &["--all-databases".into()])
        .is_err());
    let my = f("5.7.44", "").dump_command("/f");
    assert!(
        my.starts_with("mysqldump --defaults-extra-file=/f "),
        "{my}"
    );
    assert!(my.contains("--set-gtid-purged=OFF"));
    assert!(f("10.4.30-MariaDB", "")
        .client_command("/f")
        .starts_with("mysql "));
    assert_eq!(f("11.4.2-MariaDB", "").binlog_tool(), "mariadb-binlog");
    assert!(ma
        .load_command("/f")
        .contains("'--init-command=SET SESSION sql_log_bin = 0'"));
}

fn settings() -> FragmentSettings {
    FragmentSettings {
        host_name: "db2".into(),
        server_id: 2,
        report_host: "127.0.0.2".into(),
        log_bin: "mysql-bin".into(),
        relay_log: "mysql-relay".into(),
        log_slave_updates: false,
        auto_increment: None,
        gtid: false,
        bind_address: None,
        net_timeout: None,
    }
}

#[test]
fn fragment_fences_and_never_skips_slave_start() {
    for v in ["5.7.44", "8.0.36", "8.4.0", "10.11.6-MariaDB"] {
        let text = f(v, "").fragment(&settings());
        assert!(text.starts_with(FRAGMENT_HEADER), "{v}");
        assert!(text.contains("\n[mysqld]\n"), "{v}");
        assert!(text.contains("\nread_only = ON\n"), "{v}");
        assert!(!text.contains("skip_"), "{v}");
        assert!(text.contains("\nserver_id = 2\n"), "{v}");
    }
    let v84 = f("8.4.0", "").fragment(&settings());
    assert!(!v84.contains("_repository"));
    let v57 = f("5.7.44", "").fragment(&settings());
    assert!(v57.contains("master_info_repository = TABLE"));
}

#[test]
fn fragment_gtid_and_master_master() {
    let mut s = settings();
    s.gtid = true;
    let v57 = f("5.7.44", "").fragment(&s);
    assert!(v57.contains("gtid_mode = ON\nenforce_gtid_consistency = ON"));
    assert!(v57.contains("log_slave_updates = ON"));
    s.auto_increment = Some((2, 2));
    let maria = f("10.11.6-MariaDB", "").fragment(&s);
    assert!(maria.contains("gtid_strict_mode = ON"));
    assert!(maria.contains("gtid_domain_id = 2"));
    assert!(maria.contains("auto_increment_increment = 2\nauto_increment_offset = 2"));
    assert!(!maria.contains("gtid_mode"));
}
