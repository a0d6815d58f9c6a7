//! Live tests of `repltool promote` against real servers. Ports 25300-25399.

use crate::support::cluster;

use std::time::Duration;

use cluster::{show, stderr, stdout, Cluster, Writer, APP_SETUP};

const T: Duration = Duration::from_secs(20);

fn count_on_all(c: &Cluster, nodes: &[usize], sql: &str, want: &str) {
    for k in nodes {
        c.wait_for(*k, sql, want, T);
    }
}

#[test]
fn failover_after_sigkill_of_the_master_keeps_every_row() {
    let c = Cluster::start(4, 25300, "master-slave");
    c.exec(
        1,
        "CREATE DATABASE f; CREATE TABLE f.t (id INT PRIMARY KEY)",
    );
    c.init_ok();
    for i in 0..50 {
        c.exec(1, &format!("INSERT INTO f.t VALUES ({i})"));
    }
    count_on_all(&c, &[2, 3, 4], "SELECT COUNT(*) FROM f.t", "50");
    c.kill9(1);
    let out = c.run(&["promote", "node3", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    assert!(text.contains("failover node1 -> node3"), "{text}");
    // The new master has every row, is writable, and its writes replicate to the others.
    assert_eq!(c.one(3, "SELECT COUNT(*) FROM f.t"), "50");
    assert_eq!(c.one(3, "SELECT @@read_only"), "0");
    c.exec(3, "INSERT INTO f.t VALUES (1000)");
    count_on_all(&c, &[2, 4], "SELECT COUNT(*) FROM f.t", "51");
    // The file says so, and init with it does not undo the promote.
    let file = c.topology_text();
    assert!(file.contains("master: node3"), "{file}");
    assert!(c.file.with_extension("yaml.bak").exists());
    let (code, v) = c.status_json();
    assert_eq!(code, 1, "node1 is down: {v:#}");
    assert_eq!(v["hosts"][1]["replicating_from"], "node3");
    assert_eq!(v["hosts"][3]["replicating_from"], "node3");
}

#[test]
fn a_slave_that_is_behind_gets_the_difference_from_the_dead_masters_disk() {
    behind_target_lifted(25310, false);
}

#[test]
fn with_gtid_a_slave_that_is_behind_gets_the_difference_from_the_dead_masters_disk() {
    behind_target_lifted(25430, true);
}

/// A master (node1) with two slaves, table b.t: node3 stops receiving after row 1, node2
/// gets rows 2 and 3, then node1's server is killed (its host and disk stay).
fn node3_behind_node2_when_node1_dies(port: u16, gtid: bool) -> Cluster {
    let c = Cluster::start(3, port, "master-slave");
    if gtid {
        let text = c
            .topology_text()
            .replace("replication:\n", "replication:\n  gtid: true\n");
        cluster::write(&c.file, &text);
    }
    c.exec(
        1,
        "CREATE DATABASE b; CREATE TABLE b.t (id INT PRIMARY KEY)",
    );
    c.init_ok();
    c.exec(1, "INSERT INTO b.t VALUES (1)");
    count_on_all(&c, &[2, 3], "SELECT COUNT(*) FROM b.t", "1");
    c.exec(3, "STOP SLAVE IO_THREAD");
    c.exec(1, "INSERT INTO b.t VALUES (2)");
    c.exec(1, "INSERT INTO b.t VALUES (3)");
    c.wait_for(2, "SELECT COUNT(*) FROM b.t", "3", T);
    c.kill9(1);
    c
}

/// node3 asked for after it received less than node2: the part it lacks comes from node1's
/// binary log on its disk, every slave ends at the same place, node2 re-pointed at node3 (by
/// coordinates, or by GTID) gets no transaction twice.
fn behind_target_lifted(port: u16, gtid: bool) {
    let c = node3_behind_node2_when_node1_dies(port, gtid);
    // The dry run says what it will do about it.
    let out = c.run(&["promote", "node3", "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("node3 received less than node2")
            || stderr(&out).contains("node3 received less than node2"),
        "{}",
        show(&out)
    );
    let out = c.run(&["promote", "node3", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stderr(&out).contains("stopped behind node2"),
        "{}",
        show(&out)
    );
    assert_eq!(c.one(3, "SELECT COUNT(*) FROM b.t"), "3");
    assert_eq!(c.one(3, "SELECT @@read_only"), "0");
    // node2 follows node3 and gets no transaction twice.
    c.exec(3, "INSERT INTO b.t VALUES (4)");
    c.wait_for(2, "SELECT COUNT(*) FROM b.t", "4", T);
    assert_eq!(c.one(2, "SELECT COUNT(*) FROM b.t WHERE id = 4"), "1");
    use mysql::prelude::Queryable;
    let row: mysql::Row = c
        .conn(2)
        .query_first("SHOW SLAVE STATUS")
        .unwrap()
        .expect("node2 replicates");
    let text = |k: &str| row.get::<String, _>(k).unwrap_or_default();
    assert_eq!(text("Master_Port"), c.lab.ports[2].to_string());
    assert_eq!(
        text("Using_Gtid"),
        if gtid { "Slave_Pos" } else { "No" },
        "node2 re-pointed by GTID or by coordinates"
    );
    assert_eq!(text("Slave_SQL_Running"), "Yes");
    assert_eq!(text("Last_SQL_Errno"), "0");
}

#[test]
fn a_slave_that_is_behind_is_refused_when_the_dead_masters_log_cannot_be_read() {
    let c = node3_behind_node2_when_node1_dies(25420, false);
    // Its binary logs are gone from where the server kept them.
    let data = c.lab.node_dir(1).join("data");
    let away = c.lab.node_dir(1).join("data.away");
    std::fs::rename(&data, &away).unwrap();
    let out = c.run(&["promote", "node3", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("node3 is behind node2"), "{err}");
    assert!(err.contains("cannot be read"), "{err}");
    assert!(err.contains("repltool promote node2"), "{err}");
    assert!(
        !c.topology_text().contains("master: node3"),
        "file changed by a refused promote"
    );
    assert_eq!(c.one(3, "SELECT @@read_only"), "1");
    // The logs are back: the suggested promote continues from there.
    std::fs::rename(&away, &data).unwrap();
    let out = c.run(&["promote", "node2", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(c.one(2, "SELECT COUNT(*) FROM b.t"), "3");
    // node3 got the two it never received from node1's binary log on disk, then follows node2.
    c.wait_for(3, "SELECT COUNT(*) FROM b.t", "3", T);
    c.exec(2, "INSERT INTO b.t VALUES (4)");
    c.wait_for(3, "SELECT COUNT(*) FROM b.t", "4", T);
}

#[test]
fn failover_recovers_what_no_slave_received_from_the_dead_masters_disk() {
    let c = Cluster::start(3, 25360, "master-slave");
    c.exec(
        1,
        "CREATE DATABASE s; CREATE TABLE s.t (id INT PRIMARY KEY)",
    );
    c.init_ok();
    c.exec(1, "INSERT INTO s.t VALUES (1)");
    count_on_all(&c, &[2, 3], "SELECT COUNT(*) FROM s.t", "1");
    // Neither slave receives the next three transactions; then the server dies (its disk stays).
    c.exec(2, "STOP SLAVE IO_THREAD");
    c.exec(3, "STOP SLAVE IO_THREAD");
    for i in 2..=4 {
        c.exec(1, &format!("INSERT INTO s.t VALUES ({i})"));
    }
    c.kill9(1);
    let out = c.run(&["promote", "node2", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("recovered 3 transaction(s)"),
        "{}",
        show(&out)
    );
    assert_eq!(c.one(2, "SELECT COUNT(*) FROM s.t"), "4");
    c.wait_for(3, "SELECT COUNT(*) FROM s.t", "4", T);
    // The old master comes back with nothing the new one lacks: init rejoins it.
    assert!(c.lab.ctl(1, "start").status.success());
    c.init_ok();
    c.exec(2, "INSERT INTO s.t VALUES (5)");
    c.wait_for(1, "SELECT COUNT(*) FROM s.t", "5", T);
}

#[test]
fn switchover_under_write_load_loses_no_acknowledged_write() {
    let c = Cluster::start(4, 25320, "master-slave");
    c.init_ok();
    // The application's schema and account after init: they replicate to every server, so
    // the writer can write on whichever becomes the master.
    c.exec(1, APP_SETUP);
    for k in [2, 3, 4] {
        c.wait_for(
            k,
            "SELECT COUNT(*) FROM mysql.user WHERE User = 'app'",
            "1",
            T,
        );
    }
    // node1 first, then the others: the writer follows whichever server takes writes.
    let w = Writer::start(c.lab.ports.clone(), 100_000, Duration::from_secs(6));
    std::thread::sleep(Duration::from_millis(700));
    let out = c.run(&["promote", "node2", "--yes"]);
    let at_promote = w.acked();
    std::thread::sleep(Duration::from_millis(700));
    let report = w.finish();
    assert!(out.status.success(), "{}", show(&out));
    let n = report.acked.len();
    assert!(n > 100, "the writer barely wrote: {report:?}");
    // It went on writing on the new master.
    assert!(
        n > at_promote + 20,
        "no writes after the switchover ({at_promote} before, {n} in all)"
    );
    let last = *report.acked.last().unwrap();
    // Every acknowledged id is on the new master and on every slave, the old one included.
    for k in [2, 1, 3, 4] {
        c.wait_for(k, "SELECT COUNT(*) FROM app.seq", &n.to_string(), T);
        c.wait_for(k, "SELECT MAX(id) FROM app.seq", &last.to_string(), T);
    }
    assert_eq!(c.one(1, "SELECT @@read_only"), "1");
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["hosts"][0]["replicating_from"], "node2");
    eprintln!(
        "switchover under load: {n} acked writes, longest gap {:?}",
        report.max_gap
    );
}

#[test]
fn the_old_master_comes_back_read_only_and_init_rejoins_it_unless_it_has_errant_transactions() {
    let c = Cluster::start(3, 25330, "master-slave");
    c.exec(
        1,
        "CREATE DATABASE r; CREATE TABLE r.t (id INT PRIMARY KEY)",
    );
    c.init_ok();
    c.exec(1, "INSERT INTO r.t VALUES (1)");
    count_on_all(&c, &[2, 3], "SELECT COUNT(*) FROM r.t", "1");
    c.kill9(1);
    let out = c.run(&["promote", "node2", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    c.exec(2, "INSERT INTO r.t VALUES (2)");
    assert!(c.lab.ctl(1, "start").status.success());
    // Fenced: back read-only, and status calls it a former master.
    assert_eq!(c.one(1, "SELECT @@read_only"), "1");
    let st = c.run(&["status"]);
    assert!(
        stdout(&st).contains("node1: former master"),
        "{}",
        show(&st)
    );
    c.init_ok();
    c.wait_for(1, "SELECT COUNT(*) FROM r.t", "2", T);
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");

    // Again, but the old master takes a write of its own after the failover: init refuses.
    c.kill9(2);
    let out = c.run(&["promote", "node3", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(c.lab.ctl(2, "start").status.success());
    c.exec(
        2,
        "SET GLOBAL read_only = OFF; INSERT INTO r.t VALUES (99); SET GLOBAL read_only = ON",
    );
    let out = c.run(&["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("errant"), "{err}");
    assert!(err.contains("Nothing was reset"), "{err}");
    assert_eq!(c.one(2, "SELECT COUNT(*) FROM r.t WHERE id = 99"), "1");
}

#[test]
fn master_master_promote_switches_the_writer_only() {
    let c = Cluster::start(2, 25340, "master-master");
    c.init_ok();
    let inc = c.one(1, "SELECT @@auto_increment_offset");
    let out = c.run(&["promote", "node2", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(c.one(1, "SELECT @@read_only"), "1");
    assert_eq!(c.one(2, "SELECT @@read_only"), "0");
    assert_eq!(c.one(1, "SELECT @@auto_increment_offset"), inc);
    assert!(
        c.topology_text().contains("read_only: true"),
        "{}",
        c.topology_text()
    );
    // init keeps it so.
    c.init_ok();
    assert_eq!(c.one(1, "SELECT @@read_only"), "1");
    assert_eq!(c.one(2, "SELECT @@read_only"), "0");
}

#[test]
fn promote_refuses_without_a_terminal_or_yes_and_dry_run_changes_nothing() {
    let c = Cluster::start(2, 25350, "master-slave");
    c.init_ok();
    let out = c.run(&["promote", "node2", "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("switchover node1 -> node2"));
    let out = c.run(&["promote", "node2"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("--yes"));
    assert_eq!(c.one(1, "SELECT @@read_only"), "0");
    let out = c.run(&["promote", "nodeX", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(stderr(&out).contains("no host named nodeX"));
}

#[test]
fn a_promote_killed_half_way_is_finished_by_the_next_one() {
    let c = Cluster::start(3, 25370, "master-slave");
    c.exec(
        1,
        "CREATE DATABASE k; CREATE TABLE k.t (id INT PRIMARY KEY); INSERT INTO k.t VALUES (1)",
    );
    c.init_ok();
    let f = c.file_str();
    let out = std::process::Command::new(cluster::lab::bin())
        .args(["promote", "node2", "--yes", "-f", &f])
        .env("REPLTOOL_FAILPOINT", "promote-after-target")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(101), "{}", show(&out));
    // Half-way: node2 writable and promoted, node3 and node1 not re-pointed, file unchanged.
    assert_eq!(c.one(2, "SELECT @@read_only"), "0");
    assert!(!c.topology_text().contains("master: node2"));
    let out = c.run(&["promote", "node2", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("already promoted by an earlier run"),
        "{}",
        show(&out)
    );
    c.exec(2, "INSERT INTO k.t VALUES (2)");
    for k in [1, 3] {
        c.wait_for(k, "SELECT COUNT(*) FROM k.t", "2", T);
    }
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn a_promote_whose_ssh_link_drops_half_way_is_reported_and_the_next_one_finishes() {
    let mut c = Cluster::start(3, 25380, "master-slave");
    c.exec(
        1,
        "CREATE DATABASE l; CREATE TABLE l.t (id INT PRIMARY KEY); INSERT INTO l.t VALUES (1)",
    );
    c.init_ok();
    let f = c.file_str();
    let out = cluster::run_with_pause(
        &f,
        &["promote", "node2", "--yes"],
        "promote-after-target",
        || c.cut_ssh(),
    );
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("SSH connection") && err.contains("lost"),
        "{err}"
    );
    assert!(err.contains("node2: is the master"), "{err}");
    assert!(err.contains("run the same promote again"), "{err}");
    c.restore_ssh();
    let out = c.run(&["promote", "node2", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    c.exec(2, "INSERT INTO l.t VALUES (2)");
    for k in [1, 3] {
        c.wait_for(k, "SELECT COUNT(*) FROM l.t", "2", T);
    }
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn with_gtid_init_failover_and_rejoin_all_use_gtid_positions() {
    let c = Cluster::start(3, 25390, "master-slave");
    let text = c
        .topology_text()
        .replace("replication:\n", "replication:\n  gtid: true\n");
    cluster::write(&c.file, &text);
    c.exec(
        1,
        "CREATE DATABASE g; CREATE TABLE g.t (id INT PRIMARY KEY); INSERT INTO g.t VALUES (1)",
    );
    c.init_ok();
    let using_gtid = |k: usize| {
        let mut conn = c.conn(k);
        let row: Option<mysql::Row> =
            mysql::prelude::Queryable::query_first(&mut conn, "SHOW SLAVE STATUS").unwrap();
        row.and_then(|r| r.get::<String, _>("Using_Gtid"))
            .unwrap_or_default()
    };
    assert_eq!(using_gtid(2), "Slave_Pos");
    assert_eq!(using_gtid(3), "Slave_Pos");
    c.wait_for(3, "SELECT COUNT(*) FROM g.t", "1", T);
    c.exec(1, "INSERT INTO g.t VALUES (2)");
    count_on_all(&c, &[2, 3], "SELECT COUNT(*) FROM g.t", "2");
    c.kill9(1);
    let out = c.run(&["promote", "node2", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(using_gtid(3), "Slave_Pos");
    c.exec(2, "INSERT INTO g.t VALUES (3)");
    c.wait_for(3, "SELECT COUNT(*) FROM g.t", "3", T);
    // The old master comes back and rejoins by GTID.
    assert!(c.lab.ctl(1, "start").status.success());
    c.init_ok();
    assert_eq!(using_gtid(1), "Slave_Pos");
    c.wait_for(1, "SELECT COUNT(*) FROM g.t", "3", T);
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn force_promotes_a_slave_that_is_behind_after_saying_what_is_lost() {
    let c = Cluster::start(3, 25400, "master-slave");
    c.exec(
        1,
        "CREATE DATABASE fo; CREATE TABLE fo.t (id INT PRIMARY KEY)",
    );
    c.init_ok();
    c.exec(1, "INSERT INTO fo.t VALUES (1)");
    count_on_all(&c, &[2, 3], "SELECT COUNT(*) FROM fo.t", "1");
    c.exec(3, "STOP SLAVE IO_THREAD");
    c.exec(1, "INSERT INTO fo.t VALUES (2)");
    c.wait_for(2, "SELECT COUNT(*) FROM fo.t", "2", T);
    // The machine dies with the server: nothing can be read from its disk.
    c.kill9(1);
    std::fs::remove_dir_all(c.lab.node_dir(1).join("data")).unwrap();
    let out = c.run(&["promote", "node3", "--yes", "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("--force: promoting node3 loses"), "{err}");
    assert!(err.contains("that node2 received"), "{err}");
    assert_eq!(c.one(3, "SELECT @@read_only"), "0");
    assert_eq!(c.one(3, "SELECT COUNT(*) FROM fo.t"), "1");
}

#[test]
fn a_file_promote_cannot_rewrite_safely_stops_it_before_anything_changes_and_modes_are_kept() {
    use std::os::unix::fs::PermissionsExt;
    let c = Cluster::start(2, 25410, "master-slave");
    c.init_ok();
    let original = c.topology_text();
    // node2's master comes from a merge key: removing it for node2 alone is impossible.
    assert_eq!(
        original.matches("    master: node1\n").count(),
        1,
        "{original}"
    );
    let merged = original
        .replace("    master: node1\n", "    <<: *follow\n")
        .replace(
            "\nhosts:\n",
            "\nx-follow: &follow\n  master: node1\nhosts:\n",
        );
    cluster::write(&c.file, &merged);
    let node2_line = 1 + merged
        .lines()
        .position(|l| l == "  node2:")
        .expect("node2's entry");
    let out = c.run(&["promote", "node2", "--yes"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}:{node2_line}: hosts.node2.master: ",
            c.file.display()
        )) && err.contains("merge key"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    // Nothing changed: the file, no backup, the servers.
    assert_eq!(c.topology_text(), merged);
    assert!(!c.file.with_extension("yaml.bak").exists());
    assert_eq!(c.one(2, "SELECT @@read_only"), "1");
    assert_eq!(c.one(1, "SELECT @@read_only"), "0");

    // A private file: the rewritten file and its backup stay private.
    cluster::write(&c.file, &original);
    std::fs::set_permissions(&c.file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = c.run(&["promote", "node2", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let bak = c.file.with_extension("yaml.bak");
    assert_eq!(mode(&bak), 0o600, "backup mode");
    assert_eq!(mode(&c.file), 0o600, "file mode");
    assert_eq!(std::fs::read_to_string(&bak).unwrap(), original);
    assert!(c.topology_text().contains("master: node2"));
}
