//! Golden tests for the status parsers: captured `SHOW SLAVE/REPLICA STATUS\G` and `SHOW
//! MASTER/BINARY LOG STATUS\G` output (tests/golden/status/*.txt) parsed through
//! `parse_vertical` + `*_from_columns` must equal the expected facts (*.json). UPDATE_GOLDEN=1
//! rewrites the .json files; a missing one fails the test.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::{
    master_status_from_columns, parse_vertical, replica_status_from_columns, IoThread,
    MasterStatus, ReplicaStatus,
};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/status")
}

fn is_binlog_status(case: &str) -> bool {
    case.ends_with("-master-status") || case.ends_with("-binary-log-status")
}

/// The captures, by case name (file stem), sorted.
fn captures() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let entries = fs::read_dir(dir()).expect("tests/golden/status exists");
    for e in entries {
        let p = e.expect("readable directory entry").path();
        if p.extension().and_then(|x| x.to_str()) != Some("txt") {
            continue;
        }
        let stem = p
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("UTF-8 file name")
            .to_string();
        let text = fs::read_to_string(&p).expect("readable capture");
        out.push((stem, text));
    }
    out.sort();
    out
}

enum Parsed {
    Replica(Option<Box<ReplicaStatus>>),
    Master(Option<MasterStatus>),
}

impl Parsed {
    fn json(&self) -> String {
        let v = match self {
            Parsed::Replica(r) => serde_json::to_value(r),
            Parsed::Master(m) => serde_json::to_value(m),
        }
        .expect("serialisable");
        serde_json::to_string_pretty(&v).expect("serialisable") + "\n"
    }
}

fn parse(case: &str, text: &str) -> Parsed {
    let rows = parse_vertical(text);
    assert!(
        rows.len() <= 1,
        "{case}: one channel expected, got {} rows",
        rows.len()
    );
    if is_binlog_status(case) {
        Parsed::Master(
            rows.first()
                .map(|r| master_status_from_columns(r).unwrap_or_else(|e| panic!("{case}: {e:#}"))),
        )
    } else {
        Parsed::Replica(rows.first().map(|r| {
            Box::new(replica_status_from_columns(r).unwrap_or_else(|e| panic!("{case}: {e:#}")))
        }))
    }
}

#[test]
fn captured_status_parses_to_the_expected_facts() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let caps = captures();
    assert!(
        caps.len() >= 20,
        "captures missing from {}",
        dir().display()
    );
    let mut problems = Vec::new();
    for (case, text) in &caps {
        let got = parse(case, text).json();
        let path = dir().join(format!("{case}.json"));
        if update {
            fs::write(&path, &got).expect("writable golden");
            continue;
        }
        match fs::read_to_string(&path) {
            Err(_) => problems.push(format!(
                "{case}: no {} (run with UPDATE_GOLDEN=1 and review the diff)",
                path.display()
            )),
            Ok(want) if want != got => problems.push(format!(
                "{case}: parse differs\n--- want\n{want}--- got\n{got}"
            )),
            Ok(_) => {}
        }
    }
    // A golden without its capture tests nothing.
    let stems: BTreeSet<&str> = caps.iter().map(|(c, _)| c.as_str()).collect();
    for e in fs::read_dir(dir()).expect("tests/golden/status exists") {
        let p = e.expect("readable directory entry").path();
        if p.extension().and_then(|x| x.to_str()) == Some("json") {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
            if !stems.contains(stem) {
                problems.push(format!("{}: no capture for this golden", p.display()));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// What each kind of capture must mean to a user of `repltool status`, whatever the flavor:
/// these hold independently of the golden files.
#[test]
fn each_case_means_what_its_name_says() {
    let caps = captures();
    let mut flavors = BTreeSet::new();
    for (case, text) in &caps {
        let flavor = case.splitn(3, '-').take(2).collect::<Vec<_>>().join("-");
        flavors.insert(flavor.clone());
        let what = &case[flavor.len() + 1..];
        match parse(case, text) {
            Parsed::Master(m) => {
                let m = m.unwrap_or_else(|| panic!("{case}: no row"));
                assert!(!m.file.is_empty() && m.position > 4, "{case}: {m:?}");
                if case.starts_with("mariadb") {
                    assert_eq!(m.executed_gtid_set, None, "{case}");
                } else {
                    let g = m
                        .executed_gtid_set
                        .unwrap_or_else(|| panic!("{case}: no GTID column"));
                    assert!(!g.contains(char::is_whitespace), "{case}: {g:?}");
                }
            }
            Parsed::Replica(None) => assert_eq!(what, "not-replica", "{case}: no row"),
            Parsed::Replica(Some(r)) => {
                assert!(
                    !r.master_host.is_empty() && r.master_port > 0,
                    "{case}: {r:?}"
                );
                assert!(!r.gtid_io_pos.contains(char::is_whitespace), "{case}");
                assert!(!r.executed_gtid_set.contains(char::is_whitespace), "{case}");
                match what {
                    "running" | "running-gtid" => {
                        assert_eq!(r.io_running, Some(IoThread::Yes), "{case}");
                        assert!(r.sql_running, "{case}");
                        assert_eq!(r.seconds_behind_master, Some(0), "{case}");
                        assert_eq!(r.read_master_log_pos, r.exec_master_log_pos, "{case}");
                        assert_eq!(r.master_log_file, r.relay_master_log_file, "{case}");
                        assert_eq!((r.last_io_errno, r.last_sql_errno), (0, 0), "{case}");
                        assert!(r.master_server_id > 0, "{case}");
                        if what == "running-gtid" {
                            assert!(
                                matches!(r.using_gtid.as_str(), "Slave_Pos" | "Yes"),
                                "{case}: {}",
                                r.using_gtid
                            );
                            assert!(!r.gtid_io_pos.is_empty(), "{case}");
                        } else if case.starts_with("mariadb") {
                            assert_eq!(r.using_gtid, "No", "{case}");
                        }
                    }
                    "io-connecting-1045" | "io-connecting-2003" => {
                        assert_eq!(r.io_running, Some(IoThread::Connecting), "{case}");
                        let errno: u32 = what[what.len() - 4..].parse().expect("errno in name");
                        assert_eq!(r.last_io_errno, errno, "{case}");
                        assert!(!r.last_io_error.is_empty(), "{case}");
                        // MySQL 9.7 says 0, not NULL, while its IO thread is still connecting
                        // after CHANGE REPLICATION SOURCE reset the relay log (no source file,
                        // position 4): a lag means nothing unless the IO thread runs.
                        let relay_reset =
                            r.master_log_file.is_empty() && r.read_master_log_pos == 4;
                        if !(relay_reset && r.seconds_behind_master == Some(0)) {
                            assert_eq!(r.seconds_behind_master, None, "{case}");
                        }
                    }
                    "sql-error-1062" => {
                        assert_eq!(r.io_running, Some(IoThread::Yes), "{case}");
                        assert!(!r.sql_running, "{case}");
                        assert_eq!(r.last_sql_errno, 1062, "{case}");
                        assert!(!r.last_sql_error.is_empty(), "{case}");
                        assert_eq!(r.seconds_behind_master, None, "{case}");
                        // Received but not applied: what failover must wait for or refuse.
                        assert!(r.read_master_log_pos > r.exec_master_log_pos, "{case}");
                    }
                    "stopped" => {
                        assert_eq!(r.io_running, Some(IoThread::No), "{case}");
                        assert!(!r.sql_running, "{case}");
                        assert_eq!(r.seconds_behind_master, None, "{case}");
                    }
                    "io-stopped" => {
                        assert_eq!(r.io_running, Some(IoThread::No), "{case}");
                        assert!(r.sql_running, "{case}");
                        assert_eq!(r.seconds_behind_master, None, "{case}");
                    }
                    other => panic!("{case}: unknown case {other:?}: say what it must mean here"),
                }
            }
        }
    }
    for f in [
        "mariadb-10.11.19",
        "mysql-5.7.44",
        "mysql-8.0.22",
        "mysql-8.0.36",
        "mysql-8.4.0",
        "mysql-9.7.4",
        "mariadb-11.8.9",
    ] {
        assert!(flavors.contains(f), "no capture for {f}");
    }
}
