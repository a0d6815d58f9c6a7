//! Live tests of `repltool status` and `repltool check` against real servers. Ports 25200-25299.

use crate::support::cluster;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use cluster::{show, stdout, Cluster};

const T: Duration = Duration::from_secs(15);

#[test]
fn healthy_cluster_exits_0_with_the_contract_json_and_a_tree() {
    let c = Cluster::start(3, 25200, "master-slave");
    c.init_ok();
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["healthy"], true);
    assert_eq!(v["name"], "lab");
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 3);
    // The contract's keys and types.
    let m = &hosts[0];
    assert_eq!(m["role"], "master");
    assert!(m["replication"].is_null());
    for h in &hosts[1..] {
        assert_eq!(h["role"], "slave");
        assert_eq!(h["master"], "node1");
        assert_eq!(h["reachable"], true);
        assert!(h["server_id"].is_u64());
        assert_eq!(h["read_only"], true);
        assert!(h["version"].as_str().unwrap().contains("MariaDB"));
        let r = &h["replication"];
        assert_eq!(r["io_running"], true);
        assert_eq!(r["sql_running"], true);
        assert!(r["io_state"].is_string() && r["sql_state"].is_string());
        assert!(r["seconds_behind_master"].is_u64());
        assert!(r["master_log_file"]
            .as_str()
            .unwrap()
            .starts_with("mysql-bin."));
        assert!(r["exec_master_log_pos"].is_u64());
        assert!(r["last_error"].is_null());
    }
    let out = c.run(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains("node1 (127.0.0.1:")
            && text.contains("├── node2")
            && text.contains("└── node3"),
        "{text}"
    );
    assert!(text.contains("healthy"), "{text}");
    // Piped: no colour codes.
    assert!(!text.contains("\x1b["), "colour when piped: {text}");
}

#[test]
fn stopped_sql_thread_and_a_replication_error_are_shown_with_a_diagnosis() {
    let c = Cluster::start(3, 25210, "master-slave");
    c.init_ok();
    c.exec(2, "STOP SLAVE SQL_THREAD");
    let out = c.run(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains("node2: SQL thread stopped"), "{text}");
    assert!(text.contains("stopped by hand"), "{text}");
    c.exec(2, "START SLAVE SQL_THREAD");
    // A conflicting row on a slave, then the same key on the master: error 1062.
    c.exec(
        1,
        "CREATE DATABASE app2; CREATE TABLE app2.t (id INT PRIMARY KEY)",
    );
    c.wait_for(
        3,
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA='app2'",
        "1",
        T,
    );
    c.exec(3, "INSERT INTO app2.t VALUES (42)");
    c.exec(1, "INSERT INTO app2.t VALUES (42)");
    let end = Instant::now() + T;
    let (code, v) = loop {
        let (code, v) = c.status_json();
        if v["hosts"][2]["replication"]["sql_running"] == false || Instant::now() > end {
            break (code, v);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 1, "{v:#}");
    let r = &v["hosts"][2]["replication"];
    assert_eq!(r["last_sql_errno"], 1062, "{v:#}");
    assert!(
        r["last_error"].as_str().unwrap().contains("Duplicate"),
        "{v:#}"
    );
    let problems = v["problems"].to_string();
    assert!(problems.contains("already exists here"), "{problems}");
    assert!(problems.contains("sql_slave_skip_counter"), "{problems}");
}

#[test]
fn a_killed_server_is_a_row_and_status_answers_in_bounded_time() {
    let c = Cluster::start(3, 25220, "master-slave");
    c.init_ok();
    c.kill9(3);
    let t0 = Instant::now();
    let (code, v) = c.status_json();
    let took = t0.elapsed();
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["hosts"][2]["reachable"], false);
    let err = v["hosts"][2]["error"].as_str().unwrap();
    // Direct: "refused"; through an SSH forward: the channel's "connect failed".
    assert!(
        err.contains("refused") || err.contains("connect failed"),
        "{v:#}"
    );
    assert!(took < Duration::from_secs(5), "status took {took:?}");
}

#[test]
fn a_partitioned_host_costs_at_most_the_timeout() {
    let c = Cluster::start(2, 25230, "master-slave");
    c.init_ok();
    // A port whose accept queue is full drops SYNs (no RST): connects hang like a partition.
    let hole = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    let mut held = Vec::new();
    for _ in 0..8 {
        if let Ok(s) = std::net::TcpStream::connect_timeout(
            &hole.local_addr().unwrap(),
            Duration::from_millis(200),
        ) {
            held.push(s);
        }
    }
    let text = c.topology_text().replace(
        &format!("port: {}", c.lab.ports[1]),
        &format!("port: {port}"),
    );
    cluster::write(&c.file, &text);
    let t0 = Instant::now();
    let out = c.run(&["status", "--timeout", "2"]);
    let took = t0.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stdout(&out).contains("node2: unreachable"),
        "{}",
        show(&out)
    );
    assert!(
        took < Duration::from_secs(4),
        "status took {took:?} with a 2 s timeout"
    );
    drop(held);
}

#[test]
fn check_passes_on_a_good_cluster_and_names_a_wrong_repl_password() {
    let c = Cluster::start(2, 25240, "master-slave");
    c.init_ok();
    let out = c.run(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = stdout(&out);
    for check in [
        "shell reachable",
        "admin login",
        "admin privileges",
        "binary log",
        "clock",
        "config writable",
        "replication login",
        "disk for seeding",
    ] {
        assert!(text.contains(check), "no `{check}` row: {text}");
    }
    assert!(text.contains("all checks passed"), "{text}");
    cluster::write(&c.lab.dir.join("repl.password"), "not-the-password");
    let out = c.run(&["check", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&serde_json::Value> = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["result"] == "FAIL")
        .collect();
    assert_eq!(failed.len(), 1, "{v:#}");
    assert_eq!(failed[0]["check"], "replication login");
    assert_eq!(failed[0]["host"], "node2");
    assert!(
        failed[0]["detail"]
            .as_str()
            .unwrap()
            .contains("Access denied"),
        "{v:#}"
    );
    assert!(
        !out.stdout.windows(16).any(|w| w == b"not-the-password"),
        "password printed"
    );
}
