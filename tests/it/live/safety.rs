//! Live tests of the safety rules (issue 13): a master that answers is never failed over, two
//! runs never interleave, a switchover's lock waits are bounded, init makes masters writable
//! right after their restart and names every server it left read-only. Ports 25500-25599.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use crate::support::cluster::{self, show, stderr, stdout, Cluster};

const T: Duration = Duration::from_secs(15);

#[test]
fn a_master_answering_too_many_connections_is_not_failed_over() {
    let c = Cluster::start(3, 25500, "master-slave");
    c.exec(1, "CREATE DATABASE app; CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw'; GRANT SELECT ON app.* TO 'app'@'127.0.0.1'");
    c.init_ok();
    // Every ordinary slot taken by the application, and the one extra slot for accounts with
    // CONNECTION ADMIN taken too: repltool's login is refused with 1040.
    c.exec(1, "SET GLOBAL max_connections = 10");
    let port = c.lab.ports[0];
    let app = |user: &str, pw: &str| {
        mysql::Conn::new(
            mysql::OptsBuilder::new()
                .ip_or_hostname(Some("127.0.0.1"))
                .tcp_port(port)
                .user(Some(user))
                .pass(Some(pw))
                .prefer_socket(false),
        )
    };
    let mut held = Vec::new();
    while let Ok(conn) = app("app", "app-pw") {
        held.push(conn);
        assert!(held.len() < 50, "max_connections does not bind");
    }
    let (user, pw) = (c.lab.admin_user.clone(), c.lab.admin_password.clone());
    while let Ok(conn) = app(&user, &pw) {
        held.push(conn);
        assert!(held.len() < 60, "max_connections does not bind the admin");
    }
    let out = c.run(&["promote", "node2", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("1040"), "{err}");
    assert!(err.contains("refused the login"), "{err}");
    assert!(err.contains("--force"), "{err}");
    drop(held);
    // Nothing changed: node1 is still the writable master and both slaves follow it.
    c.exec(1, "SET GLOBAL max_connections = 151");
    assert_eq!(c.one(1, "SELECT @@read_only"), "0");
    assert_eq!(c.one(2, "SELECT @@read_only"), "1");
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
    assert!(!c.topology_text().contains("master: node2"));
}

#[test]
fn two_promotes_started_together_one_runs_and_one_refuses_naming_the_holder() {
    let c = Cluster::start(3, 25510, "master-slave");
    c.exec(
        1,
        "CREATE DATABASE k; CREATE TABLE k.t (id INT PRIMARY KEY); INSERT INTO k.t VALUES (1)",
    );
    c.init_ok();
    let f = c.file_str();
    // The first one pauses with the target promoted; the second starts meanwhile.
    let first = Command::new(cluster::lab::bin())
        .args(["promote", "node2", "--yes", "-f", &f])
        .env("REPLTOOL_FAILPOINT", "promote-after-target:pause=3000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("first promote");
    let until = Instant::now() + T;
    while Instant::now() < until && c.one(2, "SELECT @@read_only") != "0" {
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = c.run(&["promote", "node3", "--yes"]);
    let first = first.wait_with_output().expect("first promote");
    assert!(first.status.success(), "{}", show(&first));
    assert_eq!(second.status.code(), Some(1), "{}", show(&second));
    let err = stderr(&second);
    assert!(
        err.contains("another repltool run")
            && (err.contains("is locked by pid") || err.contains("holds the cluster lock")),
        "{err}"
    );
    assert!(
        err.contains("Nothing was changed") || err.contains("nothing was changed"),
        "{err}"
    );
    // One master: node2. Everyone else read-only and following it.
    assert_eq!(c.one(2, "SELECT @@read_only"), "0");
    for k in [1, 3] {
        assert_eq!(c.one(k, "SELECT @@read_only"), "1");
    }
    c.exec(2, "INSERT INTO k.t VALUES (2)");
    for k in [1, 3] {
        c.wait_for(k, "SELECT COUNT(*) FROM k.t", "2", T);
    }
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn a_switchover_behind_a_long_query_gives_up_within_its_timeout_and_changes_nothing() {
    let c = Cluster::start(2, 25520, "master-slave");
    c.exec(
        1,
        "CREATE DATABASE q; CREATE TABLE q.t (id INT PRIMARY KEY); INSERT INTO q.t VALUES (1)",
    );
    c.init_ok();
    // An application session holds a table write lock (a long maintenance job): the read lock
    // of a switchover waits behind it, bounded by the run's timeout on the server too.
    let mut holder = c.lab.conn(1);
    holder.query_drop("LOCK TABLES q.t WRITE").expect("lock");
    let t = Instant::now();
    let out = c.run(&["promote", "node2", "--yes", "--timeout", "3"]);
    let took = t.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        took < Duration::from_secs(15),
        "took {took:?}: {}",
        show(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("Lock wait timeout") || err.contains("1205"),
        "{err}"
    );
    assert!(
        err.contains("node1 is writable again (read back: read_only = OFF)"),
        "{err}"
    );
    assert_eq!(c.one(1, "SELECT @@read_only"), "0");
    assert_eq!(c.one(2, "SELECT @@read_only"), "1");
    holder.query_drop("UNLOCK TABLES").expect("unlock");
    c.exec(1, "INSERT INTO q.t VALUES (2)");
    c.wait_for(2, "SELECT COUNT(*) FROM q.t", "2", T);
}

#[test]
fn init_makes_the_master_writable_right_after_its_restart_and_names_servers_left_read_only() {
    // A pair: m1 holds the data, m2 is seeded from it. m1 is writable as soon as it restarted;
    // m2 only once it holds m1's data.
    let c = Cluster::start(2, 25530, "master-master");
    c.exec(
        1,
        "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); INSERT INTO d.t VALUES (1)",
    );
    let out = c.run(&["init"]);
    assert!(out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    let writable1 = err.find("node1: writable").expect("node1 made writable");
    let seeded = err.find("seeded from node1").expect("node2 seeded");
    let writable2 = err.find("node2: writable").expect("node2 made writable");
    assert!(writable1 < seeded && seeded < writable2, "{err}");

    // Again from scratch, but node2's server dies after the restarts (paused there): the
    // failure says node2 is left read-only.
    let c = Cluster::start(2, 25540, "master-master");
    c.exec(
        1,
        "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY)",
    );
    let f = c.file_str();
    let run = Command::new(cluster::lab::bin())
        .args(["init", "-f", &f])
        .env("REPLTOOL_FAILPOINT", "execute-after-wave-2:pause=3000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("init");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(c.lab.ctl(2, "stop").status.success());
    let out = run.wait_with_output().expect("init");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("left read-only (fenced) until init completes: node2"),
        "{err}"
    );
    assert!(err.contains("already changed"), "{err}");
    assert!(c.lab.ctl(2, "start").status.success());
    c.init_ok();
    let again = c.run(&["init"]);
    assert!(stdout(&again).contains("nothing to do"), "{}", show(&again));
}
