//! Live tests of `repltool init` against real MariaDB servers (the lab) with the built binary.
//! Ports 25000-25199.

use crate::support::cluster;

use std::time::Duration;

use cluster::{show, stderr, stdout, Cluster};

const T: Duration = Duration::from_secs(15);

#[test]
fn master_with_two_slaves_replicates_and_a_rerun_changes_nothing() {
    let c = Cluster::start(3, 25000, "master-slave");
    let out = c.init_ok();
    assert!(out.contains("node2: replicates from node1"), "{out}");
    assert!(out.contains("node3: replicates from node1"), "{out}");
    // Writes on the master reach both slaves; the slaves are read-only, the master is not.
    c.exec(1, "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); INSERT INTO shop.t VALUES (1),(2)");
    for k in [2, 3] {
        c.wait_for(k, "SELECT COUNT(*) FROM shop.t", "2", T);
        assert_eq!(c.one(k, "SELECT @@read_only"), "1");
    }
    assert_eq!(c.one(1, "SELECT @@read_only"), "0");
    // The replication user: REPLICATION SLAVE only, for the replicas' address, never '%'.
    let grants = c.q(1, "SHOW GRANTS FOR 'repl'@'127.0.0.1'");
    let g = grants
        .iter()
        .map(|r| r[0].clone())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(g.contains("GRANT REPLICATION SLAVE ON *.*"), "{g}");
    assert!(!g.contains("ALL PRIVILEGES"), "{g}");
    assert_eq!(
        c.one(
            1,
            "SELECT COUNT(*) FROM mysql.user WHERE User='repl' AND Host='%'"
        ),
        "0"
    );
    // Re-run: nothing to do, no restart (uptime keeps growing), no CHANGE MASTER.
    let uptime = |k| {
        c.one(k, "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME='UPTIME'").parse::<u64>().unwrap()
    };
    let before: Vec<u64> = (1..=3).map(uptime).collect();
    std::thread::sleep(Duration::from_millis(1100));
    let again = c.run(&["init"]);
    assert!(again.status.success(), "{}", show(&again));
    assert!(stdout(&again).contains("nothing to do"), "{}", show(&again));
    for k in 1..=3 {
        assert!(
            uptime(k) > before[k - 1],
            "node{k} was restarted by a re-run"
        );
    }
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["healthy"], true);
}

#[test]
fn master_master_pair_seeds_the_empty_side_from_the_one_with_data() {
    let c = Cluster::start(2, 25010, "master-master");
    // Data on node2 only, before replication exists.
    c.exec(2, "CREATE DATABASE crm; CREATE TABLE crm.c (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(20)); INSERT INTO crm.c (v) VALUES ('a'),('b'),('c')");
    let out = c.init_ok();
    assert!(out.contains("seeded from node2"), "{out}");
    c.wait_for(1, "SELECT COUNT(*) FROM crm.c", "3", T);
    // Both writable, distinct auto_increment offsets, writes flow both ways without collisions.
    assert_eq!(c.one(1, "SELECT @@read_only"), "0");
    assert_eq!(c.one(2, "SELECT @@read_only"), "0");
    assert_eq!(c.one(1, "SELECT @@auto_increment_increment"), "2");
    assert_ne!(
        c.one(1, "SELECT @@auto_increment_offset"),
        c.one(2, "SELECT @@auto_increment_offset")
    );
    c.exec(1, "INSERT INTO crm.c (v) VALUES ('from1')");
    c.exec(2, "INSERT INTO crm.c (v) VALUES ('from2')");
    for k in [1, 2] {
        c.wait_for(k, "SELECT COUNT(*) FROM crm.c", "5", T);
    }
    // The copy was not written into node1's own binary log, so node2 did not apply it twice.
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
    assert!(stdout(&c.run(&["init"])).contains("nothing to do"));
}

#[test]
fn chain_seeds_through_the_relay() {
    let c = Cluster::start(3, 25020, "chain");
    c.exec(1, "CREATE DATABASE inv; CREATE TABLE inv.i (id INT PRIMARY KEY); INSERT INTO inv.i VALUES (1),(2),(3),(4)");
    let out = c.init_ok();
    assert!(out.contains("node3: replicates from node2"), "{out}");
    c.wait_for(3, "SELECT COUNT(*) FROM inv.i", "4", T);
    c.exec(1, "INSERT INTO inv.i VALUES (5)");
    c.wait_for(3, "SELECT COUNT(*) FROM inv.i", "5", T);
    assert_eq!(c.one(2, "SELECT @@log_slave_updates"), "1");
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["hosts"][1]["role"], "relay");
}

#[test]
fn adding_a_host_to_the_file_adds_just_that_host() {
    let c = Cluster::start(3, 25030, "master-slave");
    let full = c.topology_text();
    // The file without node3 first.
    let cut = full.find("  node3:").expect("node3 in the lab file");
    cluster::write(&c.file, &full[..cut]);
    c.init_ok();
    c.exec(
        1,
        "CREATE DATABASE d; CREATE TABLE d.t (id INT PRIMARY KEY); INSERT INTO d.t VALUES (7)",
    );
    cluster::write(&c.file, &full);
    let out = c.init_ok();
    assert!(out.contains("node3: replicates from node1"), "{out}");
    assert!(out.contains("node3: seeded from node1"), "{out}");
    for line in out.lines().filter(|l| l.trim_start().starts_with("- ")) {
        assert!(!line.contains("node2"), "node2 was touched: {out}");
        assert!(!line.contains("node1: restarted"), "node1 restarted: {out}");
    }
    c.wait_for(3, "SELECT COUNT(*) FROM d.t", "1", T);
}

#[test]
fn a_password_with_quotes_semicolons_backslashes_and_spaces_works() {
    let c = Cluster::start(2, 25040, "master-slave");
    let pw = "p'a\"s;s \\w rd `x` $HOME";
    cluster::write(&c.lab.dir.join("repl.password"), pw);
    c.init_ok();
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["hosts"][1]["replication"]["io_running"], true);
    // The password is never printed, in the plan or anywhere.
    let dry = c.run(&["init", "--dry-run"]);
    assert!(!stdout(&dry).contains("s;s"), "{}", show(&dry));
}

#[test]
fn an_existing_repl_user_with_another_password_is_reset_and_converges() {
    let c = Cluster::start(2, 25050, "master-slave");
    c.exec(
        1,
        "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'not-the-files'",
    );
    c.init_ok();
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn unreachable_host_stops_before_anything_changes() {
    let c = Cluster::start(3, 25060, "master-slave");
    assert!(c.lab.ctl(3, "stop").status.success());
    let out = c.run(&["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("node3"), "{err}");
    assert!(
        !c.lab.node_dir(1).join("conf.d/60-repltool.cnf").exists(),
        "node1 was changed"
    );
    // Start it again: a re-run converges.
    assert!(c.lab.ctl(3, "start").status.success());
    c.init_ok();
}

#[test]
fn wrong_admin_password_is_named_and_exits_2() {
    let c = Cluster::start(2, 25070, "master-slave");
    cluster::write(&c.lab.dir.join("admin.password"), "wrong");
    let out = c.run(&["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("node1") && err.contains("Access denied"),
        "{err}"
    );
    assert!(!err.contains("wrong"), "password printed: {err}");
}

#[test]
fn a_server_that_does_not_restart_is_reported_with_its_log_and_a_rerun_converges() {
    let c = Cluster::start(2, 25080, "master-slave");
    let broken = c.lab.node_dir(2).join("conf.d/70-broken.cnf");
    cluster::write(&broken, "[mysqld]\nno_such_option_at_all = 1\n");
    let out = c.run(&["init"]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    let err = stderr(&out);
    assert!(err.contains("node2: restarting the server"), "{err}");
    assert!(
        err.contains("no_such_option_at_all") || err.contains("error.log"),
        "no log tail: {err}"
    );
    assert!(err.contains("already changed"), "{err}");
    std::fs::remove_file(&broken).unwrap();
    assert!(c.lab.ctl(2, "start").status.success());
    c.init_ok();
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn a_config_file_repltool_did_not_write_is_not_overwritten() {
    let c = Cluster::start(2, 25090, "master-slave");
    let f = c.lab.node_dir(2).join("conf.d/60-repltool.cnf");
    cluster::write(&f, "[mysqld]\n# the DBA's own\n");
    let out = c.run(&["init"]);
    // A refusal: exit 1.
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("was not written by repltool"),
        "{}",
        show(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        "[mysqld]\n# the DBA's own\n"
    );
}

#[test]
fn replication_running_elsewhere_is_not_rewired_without_force() {
    let c = Cluster::start(3, 25100, "master-slave");
    c.init_ok();
    // node3 now follows node2 behind repltool's back.
    let p2 = c.lab.ports[1];
    c.exec(3, "STOP SLAVE; RESET SLAVE ALL");
    c.exec(3, &format!("CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={p2}, MASTER_USER='x', MASTER_PASSWORD='y', MASTER_USE_GTID=no"));
    let out = c.run(&["init"]);
    // A refusal: exit 1.
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("--force"), "{}", show(&out));
    let out = c.run(&["init", "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn a_disk_full_config_write_is_named_leaves_no_debris_and_a_rerun_converges() {
    let c = Cluster::start(2, 25110, "master-slave");
    let confd = c.lab.node_dir(2).join("conf.d");
    let d = confd.to_string_lossy().into_owned();
    // A full 16 KiB filesystem over node2's include directory.
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "tmpfs", &d])
        .status()
        .expect("mount");
    assert!(st.success(), "cannot mount a tmpfs (the test needs root)");
    // Unmounted however the test ends, so the lab can be removed.
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let mounted = Unmount(d.clone());
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={d}/fill"), "bs=1k", "count=64"])
        .output();
    let out = c.run(&["init"]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("node2: writing") && err.contains("60-repltool.cnf"),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    let left: Vec<String> = std::fs::read_dir(&confd)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["fill".to_string()], "debris left: {left:?}");
    drop(mounted);
    c.init_ok();
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn an_ssh_link_dropped_mid_run_is_named_and_a_rerun_converges() {
    let mut c = Cluster::start(3, 25120, "master-slave");
    let f = c.file_str();
    // The link is cut after the configs are written and the servers restarted (wave 0).
    let out = cluster::run_with_pause(&f, &["init"], "execute-after-wave-0", || c.cut_ssh());
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("SSH connection") && err.contains("lost"),
        "{err}"
    );
    assert!(err.contains("already changed"), "{err}");
    assert!(
        err.contains("node1: wrote") && err.contains("restarted the server"),
        "{err}"
    );
    eprintln!("{err}");
    c.restore_ssh();
    c.init_ok();
    let (code, v) = c.status_json();
    assert_eq!(code, 0, "{v:#}");
}

#[test]
fn another_option_file_overriding_repltools_settings_is_named_after_the_restart() {
    let c = Cluster::start(2, 25130, "master-slave");
    // Read after 60-repltool.cnf: it wins, and init must notice.
    cluster::write(
        &c.lab.node_dir(2).join("conf.d/99-dba.cnf"),
        "[mysqld]\nbinlog_format = STATEMENT\n",
    );
    let out = c.run(&["init"]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("node2") && err.contains("binlog_format is STATEMENT"),
        "{err}"
    );
    assert!(err.contains("overrides"), "{err}");
    std::fs::remove_file(c.lab.node_dir(2).join("conf.d/99-dba.cnf")).unwrap();
    assert!(c.lab.ctl(2, "restart").status.success());
    c.init_ok();
}

/// The directories under /tmp holding option files of the repltool process `pid`
/// (`repltool-cnf-<tag>-<pid>-<start>-XXXXXXXX`).
fn option_dirs_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/tmp")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with("repltool-cnf-") && n.split('-').nth(3) == Some(pid.to_string().as_str())
        })
        .collect()
}

#[test]
fn a_run_killed_mid_seed_by_sigterm_or_sigint_leaves_no_option_file_on_the_host() {
    use mysql::prelude::Queryable;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let c = Cluster::start(2, 25140, "master-slave");
    c.exec(
        1,
        "CREATE DATABASE big; CREATE TABLE big.t (id INT PRIMARY KEY, pad CHAR(200)); \
         INSERT INTO big.t SELECT seq, REPEAT('x', 200) FROM seq_1_to_20000",
    );
    // Converge first (configs written, servers restarted), then cut node2 loose so the next
    // init seeds it again, with no restart that would drop the lock below.
    c.init_ok();
    c.exec(2, "STOP SLAVE; RESET SLAVE ALL");
    // The copy stalls for as long as the test likes: node2 holds the table the copy replaces
    // under a read lock, so the client loading it waits.
    let mut lock = c.conn(2);
    lock.query_drop("LOCK TABLES big.t READ").unwrap();
    let log_dir = tempfile::tempdir().unwrap();
    // node2 holds a database of its own (the first copy), so only --force seeds it.
    for (sig, args) in [
        (libc::SIGTERM, vec!["init", "--force"]),
        (libc::SIGINT, vec!["init", "--force"]),
    ] {
        let log = log_dir.path().join(format!("stderr-{sig}"));
        let child = Command::new(cluster::lab::bin())
            .args(&args)
            .args(["-f", &c.file_str()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let pid = child.id();
        // A failing assertion must not leave this run going (std does not signal a child it
        // has already reaped, so no other process can be hit).
        struct KillOnDrop(std::process::Child);
        impl Drop for KillOnDrop {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let mut guard = KillOnDrop(child);
        let child = &mut guard.0;
        let show_log = || {
            let ps = Command::new("ps")
                .args(["-eo", "pid,ppid,etimes,wchan:24,args"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            let ours: Vec<&str> = ps
                .lines()
                .filter(|l| l.contains("repltool") || l.contains("mariadb"))
                .collect();
            format!(
                "{}\n--- processes\n{}",
                std::fs::read_to_string(&log).unwrap_or_default(),
                ours.join("\n")
            )
        };
        // Mid-seed: the dump or the client loading it runs, reading an option file of this
        // run (the dump may already have ended: the pipes and the SSH windows hold the whole
        // table while the client waits for node2's lock).
        let needle = "--defaults-extra-file=/tmp/repltool-cnf-";
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let dumping = std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| {
                        let c = String::from_utf8_lossy(&c);
                        c.contains(needle) && c.contains(&format!("-{pid}-"))
                    })
                    .unwrap_or(false)
            });
            if dumping {
                break;
            }
            assert!(
                child.try_wait().unwrap().is_none(),
                "repltool ended before the copy was seen:\n{}",
                show_log()
            );
            assert!(
                Instant::now() < deadline,
                "no copy started:\n{}",
                show_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            option_dirs_of(pid).len() >= 2,
            "the master's and the slave's option files exist: {:?}",
            option_dirs_of(pid)
        );
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(pid as i32, sig);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "repltool did not stop on signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.signal(), Some(sig), "{status:?}\n{}", show_log());
        assert_eq!(
            option_dirs_of(pid),
            Vec::<String>::new(),
            "signal {sig} left option files:\n{}",
            show_log()
        );
    }
    lock.query_drop("UNLOCK TABLES").unwrap();
}

/// The dump ends at once (two rows fit in the pipes), but the client loading it on node2 waits
/// for a lock there: init ends that copy after its stall bound and says why, instead of
/// waiting for the client, and leaves no option file; the next run converges.
#[test]
fn a_copy_whose_client_waits_on_a_slaves_lock_is_ended_and_named() {
    use mysql::prelude::Queryable;
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let c = Cluster::start(2, 25160, "master-slave");
    c.exec(
        1,
        "CREATE DATABASE small; CREATE TABLE small.t (id INT PRIMARY KEY); \
         INSERT INTO small.t VALUES (1), (2)",
    );
    c.init_ok();
    c.exec(2, "STOP SLAVE; RESET SLAVE ALL");
    let mut lock = c.conn(2);
    lock.query_drop("LOCK TABLES small.t READ").unwrap();
    let mut child = Command::new(cluster::lab::bin())
        .args(["init", "--force", "-f", &c.file_str()])
        .env("REPLTOOL_COPY_STALL_SECS", "3")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Not a speed check: a run that waits for the client would wait for hours.
    let deadline = Instant::now() + Duration::from_secs(90);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("init still waits for the stalled client after 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the copy from node1 made no progress for 3s"),
        "{err}"
    );
    assert_eq!(option_dirs_of(pid), Vec::<String>::new(), "{err}");
    lock.query_drop("UNLOCK TABLES").unwrap();
    drop(lock);
    let out = c.run(&["init", "--force"]);
    assert!(out.status.success(), "{}", show(&out));
    c.wait_for(
        2,
        "SELECT COUNT(*) FROM small.t",
        "2",
        Duration::from_secs(20),
    );
}

#[test]
fn what_a_killed_run_left_is_swept_by_the_next_run_on_that_host() {
    use std::process::{Command, Stdio};
    let c = Cluster::start(2, 25150, "master-slave");
    c.init_ok();
    // `check` writes an option file on node2 (the replication login test); the failpoint ends
    // the process right after, as a kill -9 would: nothing removes the file.
    let child = Command::new(cluster::lab::bin())
        .args(["check", "-f", &c.file_str()])
        .env("REPLTOOL_FAILPOINT", "optfile-written")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(101), "{}", show(&out));
    let left = option_dirs_of(pid);
    assert_eq!(
        left.len(),
        1,
        "the killed run's directory is left: {left:?}"
    );
    // The next run's first option file on that host removes it.
    let out = c.run(&["check"]);
    assert_eq!(
        option_dirs_of(pid),
        Vec::<String>::new(),
        "still there after the next run:\n{}",
        show(&out)
    );
}
