//! The same commands on MySQL 9.7 and MariaDB 11.8 hosts (network namespaces running the
//! servers of debootstrapped Debian sid / trixie roots, over a real sshd, each started by its own
//! service command), and on mixed clusters: the upgrade path (MariaDB 10.11 master, 11.8
//! slave) works; a MySQL replica of a MariaDB master, and a promote that would leave a slave
//! replicating from a newer server, are refused before anything changes.

use std::time::Duration;

use crate::support::cluster::{Writer, WriterReport};
use crate::support::netns::{show, Flavor, NetnsHosts};

const T: Duration = Duration::from_secs(30);

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &std::process::Output) {
    assert!(o.status.success(), "{}", show(o));
}

/// `status --format json` is healthy.
fn healthy(net: &NetnsHosts) -> serde_json::Value {
    let out = net.run(&["status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", show(&out)));
    assert_eq!(out.status.code(), Some(0), "{v:#}");
    assert_eq!(v["healthy"], true, "{v:#}");
    v
}

/// Rewrite the `master:` lines of the harness's topology file (h1 master of all by default):
/// `masters[k]` is host k+1's master, and optionally `gtid: true`.
fn shape(net: &NetnsHosts, masters: &[Option<&str>], gtid: bool) {
    let mut text = String::new();
    let mut k = 0usize;
    for line in net.topology_text().lines() {
        if line.trim_start().starts_with("master:") {
            continue;
        }
        if gtid && line.trim() == "replication:" {
            text.push_str("replication:\n  gtid: true\n");
            continue;
        }
        text.push_str(line);
        text.push('\n');
        if line.trim_start().starts_with("address:") {
            if let Some(Some(m)) = masters.get(k) {
                text.push_str(&format!("    master: {m}\n"));
            }
            k += 1;
        }
    }
    std::fs::write(&net.file, text).expect("topology file");
}

/// The application's account on every host, out of the binary log (like any account a DBA
/// makes per server): reachable from this process, the bridge's root-namespace end.
fn app_account(net: &NetnsHosts) {
    for h in &net.hosts {
        h.sql(
            "SET SESSION sql_log_bin = 0; \
             CREATE USER IF NOT EXISTS 'app'@'10.231.77.1' IDENTIFIED BY 'app-pw'; \
             GRANT SELECT, INSERT ON app.* TO 'app'@'10.231.77.1'",
        );
    }
}

fn writer(net: &NetnsHosts, ks: &[usize], max: u64) -> Writer {
    Writer::start_at(
        ks.iter().map(|k| (net.h(*k).addr.clone(), 3306)).collect(),
        max,
        Duration::from_secs(60),
    )
}

/// Every acknowledged id is on host k.
fn all_present(net: &NetnsHosts, k: usize, r: &WriterReport) {
    let n = r.acked.len().to_string();
    net.h(k).wait_sql(
        &format!(
            "SELECT COUNT(*) FROM app.seq WHERE id <= {}",
            r.acked.last().copied().unwrap_or(0)
        ),
        &n,
        T,
    );
}

#[test]
fn mysql_9_7_check_init_seed_switchover_under_load_failover_salvage_and_rejoin() {
    let net = NetnsHosts::start_with(&[Flavor::MySQL97, Flavor::MySQL97, Flavor::MySQL97]);
    let h1 = net.h(1);
    h1.sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v VARCHAR(20)); \
         INSERT INTO shop.t VALUES (1, 'a'), (2, 'b'); \
         CREATE DATABASE app; CREATE TABLE app.seq (id BIGINT PRIMARY KEY) ENGINE=InnoDB",
    );
    app_account(&net);
    // check: the package's layout, and what init will do about it.
    let out = net.run(&["check"]);
    let text = stdout(&out);
    assert!(text.contains("MySQL 9.7"), "{}", show(&out));
    assert!(text.contains("service mysql restart"), "{}", show(&out));
    // init: the fragment must be read after the package's mysqld.cnf (bind-address).
    let out = net.run(&["init"]);
    ok(&out);
    let all = stdout(&out) + &stderr(&out);
    assert!(all.contains("zz-repltool.cnf"), "{all}");
    for k in [2, 3] {
        net.h(k).wait_sql("SELECT COUNT(*) FROM shop.t", "2", T);
        // Fenced the MySQL way: both read-only flags, and the replica uses the 9.x syntax.
        assert_eq!(
            net.h(k).sql("SELECT @@read_only, @@super_read_only"),
            "1\t1"
        );
    }
    assert_eq!(h1.sql("SELECT @@read_only, @@super_read_only"), "0\t0");
    let v = healthy(&net);
    assert!(
        v["hosts"][1]["version"]
            .as_str()
            .unwrap_or("")
            .starts_with("9.7."),
        "{v:#}"
    );
    let again = net.run(&["init"]);
    ok(&again);
    assert!(stdout(&again).contains("nothing to do"), "{}", show(&again));

    // Switchover under a bounded write load: nothing acknowledged is lost.
    let w = writer(&net, &[1, 2], 100_000);
    std::thread::sleep(Duration::from_millis(800));
    let dry = net.run(&["promote", "h2", "--dry-run"]);
    ok(&dry);
    let plan = stdout(&dry);
    assert!(
        plan.contains("STOP REPLICA") && plan.contains("SHOW BINARY LOG STATUS"),
        "{plan}"
    );
    for gone in [
        "STOP SLAVE",
        "START SLAVE",
        "RESET SLAVE",
        "SHOW MASTER",
        "CHANGE MASTER",
        "MASTER_POS_WAIT",
    ] {
        assert!(
            !plan.contains(gone),
            "{gone} in a plan for MySQL 9.7: {plan}"
        );
    }
    let out = net.run(&["promote", "h2", "--yes"]);
    ok(&out);
    let at_promote = w.acked();
    std::thread::sleep(Duration::from_millis(800));
    let r = w.finish();
    assert!(r.acked.len() > 10, "{r:?}");
    assert!(
        r.acked.len() > at_promote + 5,
        "no writes after the switchover: {r:?}"
    );
    for k in [1, 2, 3] {
        all_present(&net, k, &r);
    }
    assert_eq!(
        net.h(1).sql("SELECT @@read_only, @@super_read_only"),
        "1\t1"
    );
    assert_eq!(net.h(2).sql("SELECT @@read_only"), "0");
    healthy(&net);

    // Failover: h3 and h1 stop receiving, h2 writes 3 more rows that only its binary log
    // has, then its server dies (its machine answers): the rows are salvaged from the
    // binary log on its disk with mysqlbinlog.
    for k in [1, 3] {
        net.h(k).sql("STOP REPLICA IO_THREAD");
    }
    net.h(2)
        .sql("INSERT INTO shop.t VALUES (3, 'c'), (4, 'd'); INSERT INTO shop.t VALUES (5, 'e')");
    net.h(2).crash_server();
    let out = net.run(&["promote", "h3", "--yes"]);
    ok(&out);
    let text = stdout(&out);
    assert!(text.contains("failover h2 -> h3"), "{}", show(&out));
    assert!(
        text.contains("recovered 2 transaction(s)"),
        "{}",
        show(&out)
    );
    net.h(3).wait_sql("SELECT COUNT(*) FROM shop.t", "5", T);
    net.h(1).wait_sql("SELECT COUNT(*) FROM shop.t", "5", T);
    // The old master comes back fenced; init rejoins it at the recorded position.
    ok(&net
        .h(2)
        .sh_with("service mysql start", None, Duration::from_secs(60)));
    assert_eq!(
        net.h(2).sql("SELECT @@read_only, @@super_read_only"),
        "1\t1"
    );
    let out = net.run(&["init"]);
    ok(&out);
    assert!(stdout(&out).contains("rejoined"), "{}", show(&out));
    net.h(3).sql("INSERT INTO shop.t VALUES (6, 'f')");
    net.h(2).wait_sql("SELECT COUNT(*) FROM shop.t", "6", T);
    healthy(&net);
}

#[test]
fn mysql_9_7_chain_with_gtid_auto_position() {
    let net = NetnsHosts::start_with(&[Flavor::MySQL97, Flavor::MySQL97, Flavor::MySQL97]);
    // h1 <- h2 <- h3, by GTID.
    shape(&net, &[None, Some("h1"), Some("h2")], true);
    ok(&net.run(&["init"]));
    for k in [2, 3] {
        assert_eq!(
            net.h(k).sql(
                "SELECT AUTO_POSITION FROM performance_schema.replication_connection_configuration"
            ),
            "1"
        );
    }
    net.h(1).sql(
        "CREATE DATABASE g; CREATE TABLE g.t (id INT PRIMARY KEY); INSERT INTO g.t VALUES (1)",
    );
    net.h(3).wait_sql("SELECT COUNT(*) FROM g.t", "1", T);
    healthy(&net);
    let again = net.run(&["init"]);
    ok(&again);
    assert!(stdout(&again).contains("nothing to do"), "{}", show(&again));
}

#[test]
fn mysql_9_7_master_master_pair() {
    let net = NetnsHosts::start_with(&[Flavor::MySQL97, Flavor::MySQL97]);
    net.h(1)
        .sql("CREATE DATABASE g; CREATE TABLE g.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)");
    shape(&net, &[Some("h2"), Some("h1")], false);
    ok(&net.run(&["init"]));
    for (k, off) in [(1, "1"), (2, "2")] {
        assert_eq!(
            net.h(k)
                .sql("SELECT @@read_only, @@auto_increment_increment, @@auto_increment_offset"),
            format!("0\t2\t{off}")
        );
    }
    // Both sides take writes; ids never collide; each sees the other's.
    net.h(1).sql("INSERT INTO g.t (v) VALUES (1), (1)");
    net.h(2).sql("INSERT INTO g.t (v) VALUES (2), (2)");
    for k in [1, 2] {
        net.h(k)
            .wait_sql("SELECT COUNT(*), COUNT(DISTINCT id) FROM g.t", "4\t4", T);
    }
    healthy(&net);
}

#[test]
fn mariadb_11_8_init_status_switchover_and_failover() {
    let net = NetnsHosts::start_with(&[Flavor::MariaDB118, Flavor::MariaDB118, Flavor::MariaDB118]);
    net.h(1)
        .sql("CREATE DATABASE app; CREATE TABLE app.seq (id BIGINT PRIMARY KEY) ENGINE=InnoDB");
    app_account(&net);
    ok(&net.run(&["init"]));
    let v = healthy(&net);
    assert!(
        v["hosts"][0]["version"]
            .as_str()
            .unwrap_or("")
            .starts_with("11.8."),
        "{v:#}"
    );
    let w = writer(&net, &[1, 2, 3], 100_000);
    std::thread::sleep(Duration::from_millis(500));
    ok(&net.run(&["promote", "h2", "--yes"]));
    let at_promote = w.acked();
    std::thread::sleep(Duration::from_millis(500));
    let r = w.finish();
    assert!(
        r.acked.len() > at_promote + 5,
        "no writes after the switchover: {r:?}"
    );
    for k in [1, 2, 3] {
        all_present(&net, k, &r);
    }
    healthy(&net);
    // The new master dies, host and all: h3 takes over with everything it received.
    net.h(2).set_link(false);
    let out = net.run(&["promote", "h3", "--yes", "--timeout", "10"]);
    ok(&out);
    assert!(stdout(&out).contains("failover h2 -> h3"), "{}", show(&out));
    net.h(3).sql("INSERT INTO app.seq VALUES (100000000)");
    net.h(1)
        .wait_sql("SELECT COUNT(*) FROM app.seq WHERE id = 100000000", "1", T);
}

#[test]
fn mixed_clusters_the_upgrade_path_works_and_unreadable_links_are_refused() {
    let net = NetnsHosts::start_with(&[Flavor::System, Flavor::MariaDB118, Flavor::MySQL97]);
    // h3 (MySQL) cannot read h1's (MariaDB) binary log: refused before anything changes.
    let out = net.run(&["init"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("h3") && err.contains("cannot replicate from a MariaDB"),
        "{err}"
    );
    for k in 1..=3 {
        let files = net.h(k).sh("ls /etc/mysql/*/ 2>/dev/null");
        assert!(!files.contains("repltool"), "h{k} changed: {files}");
    }
    // Without h3: MariaDB 10.11 master, 11.8 slave (the upgrade path).
    shape(&net, &[None, Some("h1"), None], false);
    let text: String = net
        .topology_text()
        .split("  h3:")
        .next()
        .unwrap_or_default()
        .to_string();
    std::fs::write(&net.file, text).expect("topology");
    ok(&net.run(&["init"]));
    net.h(1).sql(
        "CREATE DATABASE u; CREATE TABLE u.t (id INT PRIMARY KEY); INSERT INTO u.t VALUES (1)",
    );
    net.h(2).wait_sql("SELECT COUNT(*) FROM u.t", "1", T);
    healthy(&net);
    // Promoting the 11.8 slave would leave the 10.11 server replicating from a newer one.
    let out = net.run(&["promote", "h2", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("newer MariaDB 11.8"),
        "{}",
        show(&out)
    );
    assert_eq!(net.h(1).sql("SELECT @@read_only"), "0");
    // --force says what it risks and does it.
    let out = net.run(&["promote", "h2", "--yes", "--force"]);
    ok(&out);
    assert!(stdout(&out).contains("--force"), "{}", show(&out));
    assert_eq!(net.h(2).sql("SELECT @@read_only"), "0");
}

#[test]
fn the_lab_runs_on_a_machine_where_mysql_9_7_is_installed() {
    // The host's userland is Debian sid with MySQL 9.7 installed: repltool runs there as on
    // any such machine (its binary is copied in).
    let net = NetnsHosts::start_with(&[Flavor::MySQL97]);
    let bin = net.dir.join("repltool");
    std::fs::copy(env!("CARGO_BIN_EXE_repltool"), &bin).expect("copy the binary");
    let b = bin.display();
    let out = net.h(1).sh_with(
        &format!(
            "set -e; {b} lab up --nodes 3 --dir /tmp/lab >&2; \
             {b} init -f /tmp/lab/topology.yaml >&2; \
             {b} status -f /tmp/lab/topology.yaml --format json; \
             {b} lab down --dir /tmp/lab >&2"
        ),
        None,
        Duration::from_secs(240),
    );
    ok(&out);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status is not JSON ({e}): {}", show(&out)));
    assert_eq!(v["healthy"], true, "{v:#}");
    let hosts = v["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 3);
    for h in hosts {
        assert!(
            h["version"].as_str().unwrap_or("").starts_with("9.7."),
            "{v:#}"
        );
    }
}
