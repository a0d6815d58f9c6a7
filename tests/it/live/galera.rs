//! Galera clusters, live over SSH, on network-namespace hosts running the machine's MariaDB
//! 10.11 and galera-4 (each host started standalone, the way Debian installs it): build from
//! empty and from one member's data, grow, recover a full outage, promote after a quorum loss,
//! rolling restart under writes, status diagnoses, both SST methods.

use std::time::Duration;

use crate::support::galera::{Galera, Writer};
use crate::support::netns::show;

const FRAGMENT: &str = "mariadb.conf.d/60-repltool.cnf";

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn three_members_from_empty_then_converged_and_writable_everywhere() {
    let g = Galera::start(3, 3, "mariabackup");
    let dry = g.run(&["init", "--dry-run"]);
    assert!(dry.status.success(), "{}", show(&dry));
    let init = g.run(&["init"]);
    assert!(init.status.success(), "{}", show(&init));
    let out = stdout(&init);
    assert!(out.contains("done in"), "{out}");
    let uuid = g.assert_cluster(&[1, 2, 3]);
    // The SST account's password is in the fragment (mode 640) and nowhere in repltool's
    // output; the account has the backup privileges only.
    let frag = g.net.h(1).etc_mysql(FRAGMENT).expect("fragment");
    let pw = frag
        .lines()
        .find_map(|l| l.strip_prefix("wsrep_sst_auth = repltool_sst:"))
        .expect("an SST account")
        .to_string();
    assert!(pw.len() >= 16, "{pw}");
    for o in [&dry, &init] {
        assert!(
            !stdout(o).contains(&pw) && !stderr(o).contains(&pw),
            "{}",
            show(o)
        );
    }
    assert!(
        stdout(&dry).contains("repltool_sst:***"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(
        g.net.h(3).sql("SHOW GRANTS FOR 'repltool_sst'@'localhost'").lines().next().unwrap_or(""),
        "GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO `repltool_sst`@`localhost` IDENTIFIED BY PASSWORD '*"
            .to_string()
            + &g.net.h(3).sql("SELECT authentication_string FROM mysql.user WHERE User = 'repltool_sst'")[1..]
            + "'"
    );
    assert!(!uuid.is_empty());
    // A canary from the bootstrap member reached the others.
    for k in 2..=3 {
        assert_eq!(
            g.net
                .h(k)
                .sql("SELECT COUNT(*) FROM repltool.canary WHERE host = 'h1'"),
            "1"
        );
    }
    // Node names are per host; the fragment is readable by mysql only, and hides nothing
    // else from root.
    for k in 1..=3 {
        let f = g.net.h(k).etc_mysql(FRAGMENT).expect("fragment");
        assert!(f.contains(&format!("wsrep_node_name = h{k}\n")), "{f}");
        assert!(f.contains("wsrep_sst_method = mariabackup"), "{f}");
        let mode = g
            .net
            .h(k)
            .sh("stat -c '%a %G' /etc/mysql/mariadb.conf.d/60-repltool.cnf");
        assert_eq!(mode.trim(), "640 mysql");
        assert_eq!(g.net.h(k).sql("SELECT @@read_only"), "0");
    }
    // Converged: nothing to do, no restart.
    let pids = g.pids(&[1, 2, 3]);
    let again = g.ok(&["init"]);
    assert!(again.contains("nothing to do"), "{again}");
    assert_eq!(
        g.pids(&[1, 2, 3]),
        pids,
        "a converged cluster was restarted"
    );
    // Writes work on every member, also after a member restarts (read_only is OFF in the
    // fragment: Galera fences by quorum).
    g.app_setup(1);
    for k in 1..=3 {
        g.net
            .h(k)
            .sql(&format!("INSERT INTO app.seq VALUES ({k}, 'h{k}')"));
    }
    g.net.h(2).sh("service mariadb restart");
    g.net.h(2).wait_sql(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_LOCAL_STATE_COMMENT'",
        "Synced",
        Duration::from_secs(60),
    );
    g.net.h(2).sql("INSERT INTO app.seq VALUES (4, 'h2')");
    for k in 1..=3 {
        g.net
            .h(k)
            .wait_sql("SELECT COUNT(*) FROM app.seq", "4", Duration::from_secs(20));
    }
    // status: every member's Galera state in the table and the JSON.
    let st = g.run(&["status"]);
    assert_eq!(st.status.code(), Some(0), "{}", show(&st));
    let text = stdout(&st);
    assert!(
        text.contains("galera cluster shop_galera: primary component of 3/3, 3 Synced"),
        "{text}"
    );
    let st = g.run(&["status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    for h in v["hosts"].as_array().unwrap() {
        assert_eq!(h["role"], "galera-member");
        assert_eq!(h["galera"]["state"], "Synced");
        assert_eq!(h["galera"]["primary"], true);
        assert_eq!(h["galera"]["cluster_size"], 3);
        assert_eq!(h["galera"]["state_uuid"], uuid.as_str());
    }
}

#[test]
fn the_member_holding_data_bootstraps_and_the_others_get_it_by_rsync() {
    let g = Galera::start(3, 3, "rsync");
    g.net.h(2).sql(
        "CREATE DATABASE shop; \
         CREATE TABLE shop.orders (id INT PRIMARY KEY, item VARCHAR(20)) ENGINE=InnoDB; \
         INSERT INTO shop.orders VALUES (1, 'tea'), (2, 'cake'); \
         CREATE TABLE shop.logs (line VARCHAR(80)) ENGINE=MyISAM; \
         CREATE TABLE shop.events (what VARCHAR(20)) ENGINE=InnoDB",
    );
    g.net
        .h(3)
        .sql("CREATE DATABASE crm; CREATE TABLE crm.c (id INT PRIMARY KEY)");
    // Two members with data: refused, naming both; nothing restarted.
    let pids = g.pids(&[1, 2, 3]);
    let out = g.run(&["init"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("more than one member holds data: h2 (databases shop), h3 (databases crm)"),
        "{err}"
    );
    assert_eq!(g.pids(&[1, 2, 3]), pids);
    assert!(
        g.net.h(1).etc_mysql(FRAGMENT).is_none(),
        "a refused init wrote a fragment"
    );
    g.net.h(3).sql("DROP DATABASE crm");
    // --dry-run shows the choice and the tables Galera will not replicate, changes nothing.
    let out = g.run(&["init", "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    let plan = stdout(&out);
    assert!(
        plan.contains("h2 holds the data (databases shop)"),
        "{plan}"
    );
    assert!(
        plan.contains("[h2] bootstrap the cluster: service mariadb bootstrap"),
        "{plan}"
    );
    assert!(
        !plan.contains("wsrep_sst_auth"),
        "rsync needs no SST account: {plan}"
    );
    let err = stderr(&out);
    assert!(err.contains("shop.logs (MyISAM)"), "{err}");
    assert!(
        err.contains("without a primary key") && err.contains("shop.events"),
        "{err}"
    );
    assert_eq!(g.pids(&[1, 2, 3]), pids);
    // init: h2 bootstraps, h1 and h3 get its data by rsync.
    let out = g.run(&["init"]);
    assert!(out.status.success(), "{}", show(&out));
    g.assert_cluster(&[1, 2, 3]);
    for k in [1, 3] {
        assert_eq!(
            g.net
                .h(k)
                .sql("SELECT GROUP_CONCAT(item ORDER BY id) FROM shop.orders"),
            "tea,cake"
        );
        assert_eq!(
            g.wsrep(k, "wsrep_cluster_state_uuid"),
            g.wsrep(2, "wsrep_cluster_state_uuid")
        );
    }
    assert!(g
        .net
        .h(1)
        .etc_mysql(FRAGMENT)
        .unwrap()
        .contains("wsrep_sst_method = rsync"));
}

#[test]
fn a_fourth_member_joins_without_restarting_the_others_and_an_async_replica_follows() {
    let g = Galera::start(5, 3, "mariabackup");
    // h5 replicates asynchronously from h1 (the `dr1` of the topology contract).
    g.write(3, "mariabackup", &[(5, 1)]);
    g.ok(&["init"]);
    g.assert_cluster(&[1, 2, 3]);
    g.net.h(5).wait_sql(
        "SELECT COUNT(*) FROM repltool.canary WHERE host = 'h1'",
        "1",
        Duration::from_secs(20),
    );
    // Writes on any member reach the asynchronous replica of h1.
    g.app_setup(2);
    g.net.h(3).sql("INSERT INTO app.seq VALUES (33, 'h3')");
    g.net
        .h(5)
        .wait_sql("SELECT COUNT(*) FROM app.seq", "1", Duration::from_secs(20));
    // check: Galera's library, tools, service and ports.
    let out = g.run(&["check", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for check in [
        "galera provider",
        "SST tools",
        "galera service",
        "galera ports",
    ] {
        for k in 1..=3 {
            let row = v["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["check"] == check && r["host"] == format!("h{k}"))
                .unwrap_or_else(|| panic!("no {check} row for h{k}: {v:#}"));
            assert_eq!(row["result"], "ok", "{row}");
        }
    }
    // h4 added to the file: it joins, nobody else restarts. Meanwhile no process on any host
    // has the SST password on its command line (the donor's SST script gets it in its
    // environment).
    let pids = g.pids(&[1, 2, 3, 5]);
    g.write(4, "mariabackup", &[(5, 1)]);
    let pw = g
        .net
        .h(1)
        .etc_mysql(FRAGMENT)
        .and_then(|f| {
            f.lines()
                .find_map(|l| l.strip_prefix("wsrep_sst_auth = repltool_sst:"))
                .map(str::to_string)
        })
        .expect("the SST password in h1's fragment");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (out, seen) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut seen: Vec<String> = Vec::new();
            let mut scans = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for h in &g.net.hosts {
                    for (pid, name) in h.processes() {
                        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                        if String::from_utf8_lossy(&cmd).contains(&pw) {
                            seen.push(format!("{}: {pid} {name}", h.name));
                        }
                    }
                }
                scans += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            (seen, scans)
        });
        let out = g.ok(&["init"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (out, watcher.join().expect("watcher"))
    });
    assert!(
        seen.1 > 50,
        "the command lines were scanned {} times only",
        seen.1
    );
    assert!(
        seen.0.is_empty(),
        "the SST password on a command line: {:?}",
        seen.0
    );
    assert!(out.contains("h4: started with Galera"), "{out}");
    g.assert_cluster(&[1, 2, 3, 4]);
    assert_eq!(
        g.pids(&[1, 2, 3, 5]),
        pids,
        "a running member or the replica restarted"
    );
    for k in 1..=3 {
        let f = g.net.h(k).etc_mysql(FRAGMENT).unwrap();
        assert!(
            f.contains(&g.net.h(4).addr),
            "h{k}'s fragment lacks h4: {f}"
        );
    }
    assert_eq!(g.net.h(4).sql("SELECT COUNT(*) FROM app.seq"), "1");
    // status: the replica shows as before, under its member.
    let st = g.run(&["status", "--format", "json"]);
    assert_eq!(st.status.code(), Some(0), "{}", show(&st));
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    let h5 = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "h5")
        .unwrap();
    assert_eq!(h5["role"], "slave");
    assert_eq!(h5["replicating_from"], "h1");
    assert_eq!(h5["replication"]["sql_running"], true);
    assert!(h5.get("galera").is_none());
}

#[test]
fn a_full_outage_is_recovered_from_the_most_advanced_member_with_every_acknowledged_row() {
    let g = Galera::start(3, 3, "mariabackup");
    g.ok(&["init"]);
    g.app_setup(1);
    let w = Writer::start(g.addrs(&[1, 2, 3]), 1, 200_000, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    // h1 dies first: what follows is committed on h2 and h3 only (once they evicted h1).
    g.net.h(1).crash_server();
    g.net.h(2).wait_sql(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_CLUSTER_SIZE'",
        "2",
        Duration::from_secs(30),
    );
    let before: u64 = g
        .net
        .h(2)
        .sql("SELECT COUNT(*) FROM app.seq")
        .parse()
        .unwrap();
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while g
        .net
        .h(2)
        .sql("SELECT COUNT(*) FROM app.seq")
        .parse::<u64>()
        .unwrap()
        < before + 50
    {
        assert!(
            std::time::Instant::now() < end,
            "no writes on h2 and h3 after h1 died"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    g.net.h(2).crash_server();
    g.net.h(3).crash_server();
    let r = w.finish();
    assert!(r.acked.len() > 50, "the writer barely wrote: {r:?}");
    // A member that cannot be reached might be more advanced: refused without --force.
    g.net.h(3).set_link(false);
    let out = g.run(&["init"]);
    g.net.h(3).set_link(true);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains(
            "full outage: h3 could not be reached and may have committed transactions after seqno"
        ),
        "{err}"
    );
    assert!(
        g.pids(&[1, 2, 3]).iter().all(|p| p.is_none()),
        "a refused init started a server"
    );
    // Recovery: --wsrep-recover on every crashed member, the most advanced bootstraps.
    let out = g.run(&["init"]);
    assert!(out.status.success(), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("--wsrep-recover: last committed"), "{err}");
    assert!(err.contains("full outage: every member is down"), "{err}");
    assert!(
        err.contains("h2 is the most advanced") || err.contains("h3 is the most advanced"),
        "h1 died first, h2 and h3 went on: {err}"
    );
    g.assert_cluster(&[1, 2, 3]);
    for k in 1..=3 {
        let ids = g.ids(k);
        let missing: Vec<&u64> = r
            .acked
            .iter()
            .filter(|i| ids.binary_search(i).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "h{k} lost acknowledged rows: {missing:?}"
        );
    }
    // Exactly one grastate.dat said safe_to_bootstrap: the bootstrapped member's, and the
    // cluster is converged again.
    let again = g.ok(&["init"]);
    assert!(again.contains("nothing to do"), "{again}");
}

#[test]
fn two_of_three_killed_then_the_survivor_is_promoted_and_the_dead_rejoin() {
    let g = Galera::start(3, 3, "mariabackup");
    g.ok(&["init"]);
    g.app_setup(1);
    g.net.h(1).sql("INSERT INTO app.seq VALUES (1, 'h1')");
    // h3 dies and h2 drops off the network: h1 is alone, non-primary.
    g.net.h(3).crash_server();
    g.net.h(2).set_link(false);
    g.net.h(1).wait_sql(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = 'WSREP_CLUSTER_STATUS'",
        "non-Primary",
        Duration::from_secs(30),
    );
    // h2 cannot be reached: it might be alive with a primary component on its side. Refused.
    let out = g.run(&["promote", "h1", "--yes"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("h2: could not be reached"), "{err}");
    assert!(
        err.contains("cannot prove that no primary component exists elsewhere"),
        "{err}"
    );
    assert_eq!(g.wsrep(1, "wsrep_cluster_status"), "non-Primary");
    // Now h2 is dead for sure (its server killed, its host back): two of three are down.
    g.net.h(2).crash_server();
    g.net.h(2).set_link(true);
    // status diagnoses the quorum loss and says what to run.
    let st = g.run(&["status"]);
    assert_eq!(st.status.code(), Some(1), "{}", show(&st));
    let text = stdout(&st);
    assert!(
        text.contains("NO primary component (quorum lost)"),
        "{text}"
    );
    assert!(
        text.contains("quorum lost: in a non-Primary component of 1 (of 3 members)"),
        "{text}"
    );
    assert!(text.contains("`repltool promote h1`"), "{text}");
    let st = g.run(&["status", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("json");
    let h1 = &v["hosts"][0];
    assert_eq!(h1["galera"]["primary"], false);
    assert_eq!(h1["galera"]["cluster_size"], 1);
    assert_eq!(v["healthy"], false);
    // init does not guess: it refuses and names the promote.
    let out = g.run(&["init"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("quorum lost: h1 is in a non-primary component (size 1 of 3)"));
    // promote: h2 and h3 are positively down (their hosts answer, no server runs).
    let out = g.run(&["promote", "h1", "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("pc.bootstrap=YES"),
        "{}",
        stdout(&out)
    );
    let out = g.run(&["promote", "h1", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(g.wsrep(1, "wsrep_cluster_status"), "Primary");
    g.net.h(1).sql("INSERT INTO app.seq VALUES (2, 'h1')");
    // The dead come back when init runs: started, rejoined by IST or SST.
    let out = g.run(&["init"]);
    assert!(out.status.success(), "{}", show(&out));
    g.assert_cluster(&[1, 2, 3]);
    for k in 2..=3 {
        assert_eq!(g.ids(k), vec![1, 2], "h{k}");
    }
    let out = g.run(&["promote", "h2", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("already in the primary component"));
}

#[test]
fn a_rolling_restart_under_writes_keeps_every_acknowledged_write() {
    let g = Galera::start(3, 3, "mariabackup");
    g.ok(&["init"]);
    g.app_setup(1);
    let out = g.run(&["restart", "--rolling", "--dry-run"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(
        stdout(&out).contains("[h3] check every member Synced"),
        "{}",
        stdout(&out)
    );
    let pids = g.pids(&[1, 2, 3]);
    let w = Writer::start(g.addrs(&[1, 2, 3]), 1, 1_000_000, Duration::from_secs(90));
    std::thread::sleep(Duration::from_secs(1));
    let out = g.run(&["restart", "--rolling"]);
    let r = w.finish();
    assert!(out.status.success(), "{}", show(&out));
    let after = g.pids(&[1, 2, 3]);
    for k in 0..3 {
        assert_ne!(after[k], pids[k], "h{} was not restarted", k + 1);
    }
    g.assert_cluster(&[1, 2, 3]);
    assert!(r.acked.len() > 100, "writes did not continue: {r:?}");
    for k in 1..=3 {
        let ids = g.ids(k);
        let missing: Vec<&u64> = r
            .acked
            .iter()
            .filter(|i| ids.binary_search(i).is_err())
            .collect();
        assert!(
            missing.is_empty(),
            "h{k} lost acknowledged writes: {missing:?}"
        );
    }
    eprintln!(
        "rolling restart: {} writes acknowledged, {} failed and retried elsewhere, longest gap {:?}",
        r.acked.len(),
        r.failures,
        r.max_gap
    );
}

/// The benchmark of bench/run.sh's `galera` section (`bash bench/run.sh galera`): bootstrap of
/// 3 members from empty, full-outage recovery and rolling restart, each against a floor
/// measured in the same run: the same service commands, state transfers and waits done by hand
/// over SSH, in sequence, the way the Galera documentation tells a DBA to. Prints `BENCH|what|median|runs|
/// floor|ratio` lines. RUNS (default 3) runs each.
#[test]
#[ignore = "benchmark: run by `bash bench/run.sh galera`"]
fn bench() {
    use std::time::Instant;
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let synced = |g: &Galera, k: usize, size: usize| {
        let end = Instant::now() + Duration::from_secs(300);
        loop {
            let out = g.net.h(k).try_sql(
                "SELECT GROUP_CONCAT(VARIABLE_VALUE ORDER BY VARIABLE_NAME) FROM information_schema.GLOBAL_STATUS \
                 WHERE VARIABLE_NAME IN ('WSREP_CLUSTER_SIZE', 'WSREP_LOCAL_STATE_COMMENT')",
            );
            if stdout(&out).trim() == format!("{size},Synced") {
                return;
            }
            assert!(Instant::now() < end, "h{k} not Synced: {}", show(&out));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // By hand means over SSH, as a DBA does it (OpenSSH, the hosts' verified keys).
    let sh = |g: &Galera, k: usize, cmd: &str| {
        let out = g.net.ssh(k, cmd);
        assert!(out.status.success(), "h{k}: {cmd}: {}", show(&out));
        stdout(&out)
    };
    let (mut boot, mut boot_floor) = (Vec::new(), Vec::new());
    let (mut outage, mut outage_floor) = (Vec::new(), Vec::new());
    let (mut roll, mut roll_floor) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        eprintln!("bench galera: run {run}/{runs}");
        // Floor: the fragments repltool would write (from its --dry-run, with an SST password
        // of our own), then stop + bootstrap h1, the SST account, h2 and h3 restarted in turn.
        {
            let g = Galera::start(3, 3, "mariabackup");
            let plan = g.ok(&["init", "--dry-run"]);
            let mut frags: Vec<String> = vec![String::new(); 3];
            let mut cur: Option<usize> = None;
            for l in plan.lines() {
                if let Some(rest) = l.trim_start().split_once(". [") {
                    cur = rest
                        .1
                        .strip_prefix('h')
                        .and_then(|r| r[..1].parse::<usize>().ok())
                        .filter(|_| l.contains("] write "));
                    continue;
                }
                if let (Some(k), Some(line)) = (cur, l.strip_prefix("      | ")) {
                    frags[k - 1]
                        .push_str(&line.replace("repltool_sst:***", "repltool_sst:bench-pw"));
                    frags[k - 1].push('\n');
                }
            }
            assert!(frags.iter().all(|f| f.contains("wsrep_on = ON")), "{plan}");
            let t = Instant::now();
            for k in 1..=3 {
                let out = g.net.h(k).sh_with(
                    "cat > /etc/mysql/mariadb.conf.d/60-repltool.cnf",
                    Some(frags[k - 1].as_bytes()),
                    Duration::from_secs(10),
                );
                assert!(out.status.success(), "{}", show(&out));
            }
            sh(&g, 1, "service mariadb stop && service mariadb bootstrap");
            synced(&g, 1, 1);
            g.net.h(1).sql(
                "CREATE USER 'repltool_sst'@'localhost' IDENTIFIED BY 'bench-pw'; \
                 GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO 'repltool_sst'@'localhost'",
            );
            for k in 2..=3 {
                sh(&g, k, "service mariadb restart");
                synced(&g, k, k);
            }
            boot_floor.push(t.elapsed().as_secs_f64());
        }
        // repltool init on fresh hosts; then the outage and the rolling restart on its cluster.
        let g = Galera::start(3, 3, "mariabackup");
        let t = Instant::now();
        g.ok(&["init"]);
        boot.push(t.elapsed().as_secs_f64());
        g.assert_cluster(&[1, 2, 3]);
        // Full outage by hand: grastate.dat, --wsrep-recover where it says -1, the most
        // advanced marked safe and bootstrapped, the others started in turn.
        for k in 1..=3 {
            g.net.h(k).crash_server();
        }
        let t = Instant::now();
        let mut best = (i64::MIN, 0);
        for k in 1..=3 {
            let gra = sh(&g, k, "cat /var/lib/mysql/grastate.dat");
            let mut seqno: i64 = gra
                .lines()
                .find_map(|l| l.strip_prefix("seqno:"))
                .and_then(|v| v.trim().parse().ok())
                .expect("seqno");
            if seqno < 0 {
                let rec = sh(
                    &g,
                    k,
                    "mariadbd --user=mysql --wsrep-recover --disable-log-error 2>&1 | grep 'Recovered position'",
                );
                seqno = rec
                    .trim()
                    .rsplit(':')
                    .next()
                    .and_then(|v| v.trim().parse().ok())
                    .expect("recovered seqno");
            }
            if seqno > best.0 {
                best = (seqno, k);
            }
        }
        let b = best.1;
        sh(
            &g,
            b,
            "sed -i 's/^safe_to_bootstrap:.*/safe_to_bootstrap: 1/' /var/lib/mysql/grastate.dat && service mariadb bootstrap",
        );
        synced(&g, b, 1);
        let mut size = 1;
        for k in (1..=3).filter(|k| *k != b) {
            sh(&g, k, "service mariadb start");
            size += 1;
            synced(&g, k, size);
        }
        outage_floor.push(t.elapsed().as_secs_f64());
        for k in 1..=3 {
            g.net.h(k).crash_server();
        }
        let t = Instant::now();
        g.ok(&["init"]);
        outage.push(t.elapsed().as_secs_f64());
        g.assert_cluster(&[1, 2, 3]);
        // Rolling restart by hand: each member restarted, Synced in a cluster of 3 again
        // before the next.
        let t = Instant::now();
        for k in 1..=3 {
            sh(&g, k, "service mariadb restart");
            synced(&g, k, 3);
        }
        roll_floor.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        g.ok(&["restart", "--rolling"]);
        roll.push(t.elapsed().as_secs_f64());
        g.assert_cluster(&[1, 2, 3]);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        let n = v.len();
        if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        }
    };
    for (what, ours, floor) in [
        (
            "galera: `init` 3 members from empty, mariabackup SST (floor: the same starts and SSTs by hand, in sequence; target ratio <= 1.3)",
            &mut boot,
            &mut boot_floor,
        ),
        (
            "galera: `init` after a full outage, SIGKILL of all 3 (floor: grastate, --wsrep-recover, bootstrap, starts by hand; target <= 1.3)",
            &mut outage,
            &mut outage_floor,
        ),
        (
            "galera: `restart --rolling`, 3 members (floor: service restarts by hand, each Synced before the next; target <= 1.3)",
            &mut roll,
            &mut roll_floor,
        ),
    ] {
        eprintln!("{what}: ours {ours:?}, floor {floor:?}");
        let (m, f) = (median(ours), median(floor));
        println!("BENCH|{what}|{m:.2}|{runs}|{f:.2}|{:.2}", m / f);
    }
}
