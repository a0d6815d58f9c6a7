//! Live tests of physical seeding (`replication.seed: physical`: mariabackup on MariaDB, the
//! clone plugin on MySQL) and of `repltool verify`, on network-namespace hosts reached over SSH
//! (tests/it/support/netns.rs). Each test starts its own hosts; the harness serializes them.

use crate::support::netns;

use std::time::{Duration, Instant};

use netns::{run_bounded, show, Flavor, NetnsHosts};

const T: Duration = Duration::from_secs(30);

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn all(o: &std::process::Output) -> String {
    format!("{}{}", stdout(o), String::from_utf8_lossy(&o.stderr))
}

/// `repltool ARGS -f FILE` with extra environment (a failpoint, a forced route), bounded.
fn run_env(net: &NetnsHosts, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let t = Instant::now();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_repltool"));
    cmd.args(args).arg("-f").arg(&net.file);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = run_bounded(&mut cmd, None, Duration::from_secs(300));
    eprintln!(
        "bigdata: repltool {} {env:?} -> {:?} in {:.2}s",
        args.join(" "),
        out.status.code(),
        t.elapsed().as_secs_f64()
    );
    out
}

/// Set `replication.seed` in the hosts' topology file.
fn set_seed(net: &NetnsHosts, method: &str) {
    let text = net.topology_text();
    assert!(text.contains("\nreplication:\n"), "{text}");
    let text = text.replace(
        "\nreplication:\n",
        &format!("\nreplication:\n  seed: {method}\n"),
    );
    std::fs::write(&net.file, text).expect("topology file");
}

/// Tables of several shapes on host K (the master): an integer key, a composite key with a
/// binary column, a table without any key, about `rows` rows in the first.
fn fill(h: &netns::NsHost, rows: u64) {
    h.sql(
        "CREATE DATABASE app; \
         CREATE TABLE app.orders (id BIGINT PRIMARY KEY, pad VARCHAR(255), note TEXT NULL) ENGINE=InnoDB; \
         CREATE TABLE app.lines (o INT NOT NULL, sku VARBINARY(8) NOT NULL, qty INT, PRIMARY KEY (o, sku)) ENGINE=InnoDB; \
         CREATE TABLE app.events (at DATETIME, what VARCHAR(40)) ENGINE=InnoDB; \
         INSERT INTO app.orders VALUES (1, REPEAT('x', 200), NULL), (2, REPEAT('y', 200), 'n')",
    );
    // Doubling up to the size asked.
    loop {
        let n: u64 = h
            .sql("SELECT COUNT(*) FROM app.orders")
            .parse()
            .expect("a count");
        if n >= rows {
            break;
        }
        let max: u64 = h
            .sql("SELECT MAX(id) FROM app.orders")
            .parse()
            .expect("a number");
        h.sql(&format!(
            "INSERT INTO app.orders SELECT id + {max}, REPEAT(MD5(RAND()), 7), \
             IF(RAND() < 0.2, NULL, 'note') FROM app.orders ORDER BY id LIMIT {}",
            rows - n
        ));
    }
    h.sql(
        "INSERT INTO app.lines SELECT id DIV 4, UNHEX(CONCAT('0', id MOD 4, 'FF')), id MOD 9 \
         FROM app.orders WHERE id <= 4000; \
         INSERT INTO app.events VALUES ('2026-01-01 10:00:00', 'a'), ('2026-01-01 10:00:00', 'a'), \
         (NULL, 'b')",
    );
}

/// Row count and CHECKSUM TABLE of every app table on host K.
fn fingerprint(h: &netns::NsHost) -> String {
    h.sql(
        "SELECT COUNT(*) FROM app.orders; SELECT COUNT(*) FROM app.lines; \
         SELECT COUNT(*) FROM app.events; CHECKSUM TABLE app.orders, app.lines, app.events",
    )
}

/// The names repltool keeps in a datadir while it copies: none may be left behind.
fn leftovers(h: &netns::NsHost) -> String {
    h.sh("ls -A /var/lib/mysql | grep '^\\.repltool' || true; \
          ls -A /var/lib | grep '^\\.repltool' || true")
        .trim()
        .to_string()
}

fn replicating(net: &NetnsHosts, k: usize) {
    let v = json(&net.run(&["status", "--format", "json"]));
    let h = v["hosts"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["name"] == format!("h{k}")))
        .unwrap_or_else(|| panic!("no h{k} in {v:#}"))
        .clone();
    assert_eq!(h["replication"]["io_running"], true, "{h:#}");
    assert_eq!(h["replication"]["sql_running"], true, "{h:#}");
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("output is not JSON ({e}):\n{}", show(o)))
}

#[test]
fn physical_seed_copies_a_master_with_data_into_a_new_slave() {
    let net = NetnsHosts::start(2);
    fill(net.h(1), 40_000);
    set_seed(&net, "physical");
    let dry = net.run(&["init", "--dry-run"]);
    assert!(dry.status.success(), "{}", show(&dry));
    assert!(
        stdout(&dry).contains("copy h1 physically into h2"),
        "{}",
        show(&dry)
    );
    let out = net.run(&["init"]);
    assert!(out.status.success(), "init failed:\n{}", show(&out));
    let text = stdout(&out);
    // The change list says how it was copied and how long the master's locks were held.
    assert!(text.contains("h2: seeded physically from h1 ("), "{text}");
    assert!(text.contains("directly between the hosts"), "{text}");
    assert!(text.contains("commits blocked "), "{text}");
    assert!(
        text.contains("h2: removed its previous datadir (/var/lib/mysql/.repltool-previous)"),
        "{text}"
    );
    assert!(
        text.contains("h2: replicates from h1 (from mysql-bin."),
        "{text}"
    );
    assert_eq!(fingerprint(net.h(2)), fingerprint(net.h(1)));
    replicating(&net, 2);
    assert_eq!(leftovers(net.h(2)), "");
    // The slave is itself, with the master's data: its own server_id, fenced.
    assert_ne!(
        net.h(2).sql("SELECT @@server_id"),
        net.h(1).sql("SELECT @@server_id")
    );
    assert_eq!(net.h(2).sql("SELECT @@read_only"), "1");
    // And it follows the master from the copy's point on.
    net.h(1)
        .sql("INSERT INTO app.orders VALUES (999999999, 'after', NULL)");
    net.h(2).wait_sql(
        "SELECT COUNT(*) FROM app.orders WHERE id = 999999999",
        "1",
        T,
    );
    let again = net.run(&["init"]);
    assert!(stdout(&again).contains("nothing to do"), "{}", show(&again));
    let v = net.run(&["verify"]);
    assert_eq!(v.status.code(), Some(0), "{}", show(&v));
}

#[test]
fn an_interrupted_physical_copy_keeps_the_slaves_data_and_a_rerun_converges() {
    let net = NetnsHosts::start(2);
    fill(net.h(1), 60_000);
    // The slave holds data of its own: protected without --force, as for a dump.
    net.h(2).sql(
        "CREATE DATABASE mine; CREATE TABLE mine.t (id INT PRIMARY KEY); \
         INSERT INTO mine.t VALUES (7)",
    );
    set_seed(&net, "physical");
    let refused = net.run(&["init"]);
    // A refusal: exit 1.
    assert_eq!(refused.status.code(), Some(1), "{}", show(&refused));
    assert!(
        all(&refused).contains("h2: already holds databases of its own"),
        "{}",
        show(&refused)
    );
    // Killed halfway through the copy (through SSH, where the halfway point is exact).
    let cut = run_env(
        &net,
        &["init", "--force"],
        &[
            ("REPLTOOL_FAILPOINT", "physical-copy-midway"),
            ("REPLTOOL_PHYSICAL_ROUTE", "ssh"),
        ],
    );
    assert_eq!(cut.status.code(), Some(101), "{}", show(&cut));
    assert!(
        all(&cut).contains("failpoint physical-copy-midway"),
        "{}",
        show(&cut)
    );
    // Nothing of the slave's own is gone: its server runs on its own data, no swap happened
    // (init's earlier restart to turn the binary log on is the only one).
    assert!(net.h(2).server_pid().is_some());
    assert_eq!(net.h(2).sql("SELECT id FROM mine.t"), "7");
    assert!(!leftovers(net.h(2)).contains(".repltool-previous"));
    // The re-run converges: the copy is made again from the start.
    let out = net.run(&["init", "--force"]);
    assert!(out.status.success(), "re-run failed:\n{}", show(&out));
    assert!(
        stdout(&out).contains("h2: seeded physically from h1"),
        "{}",
        show(&out)
    );
    assert_eq!(fingerprint(net.h(2)), fingerprint(net.h(1)));
    assert_eq!(
        net.h(2)
            .sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'mine'"),
        "0"
    );
    replicating(&net, 2);
    assert_eq!(leftovers(net.h(2)), "");
}

#[test]
fn a_slave_that_cannot_start_on_the_copy_is_put_back_on_its_own_datadir() {
    let net = NetnsHosts::start(2);
    fill(net.h(1), 2_000);
    net.h(2).sql(
        "CREATE DATABASE mine; CREATE TABLE mine.t (id INT PRIMARY KEY); \
         INSERT INTO mine.t VALUES (7)",
    );
    // h2's service command refuses to start a server on a datadir holding the master's
    // `app` while /tmp/refuse-copy exists: a copy the slave cannot start on.
    net.h(2).sh(
        "printf '#!/bin/sh\ncase \"$1\" in\n\
         start) if [ -d /var/lib/mysql/app ] && [ -e /tmp/refuse-copy ]; then echo refused >&2; exit 1; fi; exec service mariadb start;;\n\
         stop) exec service mariadb stop;;\n\
         restart) exec service mariadb restart;;\n\
         esac\n' > /tmp/db-ctl && chmod 755 /tmp/db-ctl && touch /tmp/refuse-copy",
    );
    let text = net.topology_text().replace(
        "  h2:\n    address: 10.231.77.12\n",
        "  h2:\n    address: 10.231.77.12\n    restart: /tmp/db-ctl restart\n",
    );
    assert!(text.contains("/tmp/db-ctl restart"), "{text}");
    std::fs::write(&net.file, text).expect("topology file");
    set_seed(&net, "physical");
    let out = net.run(&["init", "--force"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let text = all(&out);
    assert!(
        text.contains(
            "h2: the server did not start on the copy; its previous datadir was put back"
        ),
        "{text}"
    );
    // Running on its own data again, nothing kept aside.
    assert_eq!(net.h(2).sql("SELECT id FROM mine.t"), "7");
    assert_eq!(leftovers(net.h(2)), "");
    net.h(2).sh("rm /tmp/refuse-copy");
    let out = net.run(&["init", "--force"]);
    assert!(out.status.success(), "re-run failed:\n{}", show(&out));
    assert_eq!(fingerprint(net.h(2)), fingerprint(net.h(1)));
    replicating(&net, 2);
}

/// Writes on h1 for `secs` seconds at most (bounded in count too): updates, inserts and deletes
/// in every table, as an application would.
fn write_load(h: &netns::NsHost, secs: u64) -> std::process::Output {
    h.sh_with(
        &format!(
            "end=$(( $(date +%s) + {secs} )); i=0; \
             while [ $(date +%s) -lt $end ] && [ $i -lt 200000 ]; do \
             echo \"UPDATE app.orders SET note = 'w$i' WHERE id = $(( i % 5000 + 1 )); \
             INSERT INTO app.orders VALUES ($(( 2000000000 + i )), 'new', NULL); \
             DELETE FROM app.orders WHERE id = $(( 2000000000 + i - 20 )); \
             UPDATE app.lines SET qty = qty + 1 WHERE o = $(( i % 900 )); \
             INSERT INTO app.events VALUES (NOW(), 'w');\"; i=$((i + 1)); done | mariadb"
        ),
        None,
        Duration::from_secs(secs + 60),
    )
}

#[test]
fn verify_under_write_load_reports_no_difference() {
    let net = NetnsHosts::start(3);
    fill(net.h(1), 20_000);
    let out = net.run(&["init"]);
    assert!(out.status.success(), "init failed:\n{}", show(&out));
    std::thread::scope(|s| {
        let load = s.spawn(|| write_load(net.h(1), 25));
        std::thread::sleep(Duration::from_secs(1));
        let mut runs = 0;
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end {
            let v = net.run(&["verify", "--format", "json", "--chunk-time", "0.05"]);
            let j = json(&v);
            assert_eq!(
                v.status.code(),
                Some(0),
                "false alarm under load:\n{}",
                show(&v)
            );
            assert_eq!(j["consistent"], true, "{j:#}");
            assert_eq!(j["compared"].as_array().map(|a| a.len()), Some(2), "{j:#}");
            assert!(
                j["compared"][0]["rows"].as_u64().unwrap_or(0) >= 20_000,
                "{j:#}"
            );
            runs += 1;
        }
        let l = load.join().expect("load thread");
        assert!(l.status.success(), "the write load failed: {}", show(&l));
        assert!(runs >= 3, "only {runs} verify runs under load");
        eprintln!("bigdata: {runs} verify runs under load, no difference");
    });
    // The replicas replicate as before (verify paused them only for their snapshots), and
    // catch up with what the load wrote (on 2 cores they may lag by many seconds).
    let ms = net.h(1).sql("SHOW MASTER STATUS");
    let mut f = ms.split('\t');
    let (file, pos) = (f.next().unwrap_or(""), f.next().unwrap_or("0"));
    for k in [2, 3] {
        replicating(&net, k);
        let w = net.h(k).sh_with(
            "mariadb --batch --skip-column-names",
            Some(format!("SELECT MASTER_POS_WAIT('{file}', {pos}, 120)").as_bytes()),
            Duration::from_secs(150),
        );
        let w = String::from_utf8_lossy(&w.stdout).trim().to_string();
        assert!(
            w != "-1" && w != "NULL" && !w.is_empty(),
            "h{k} did not catch up: {w:?}"
        );
    }
    let v = net.run(&["verify"]);
    assert_eq!(v.status.code(), Some(0), "{}", show(&v));
    assert!(
        stdout(&v).contains("consistent: 2 replica(s)"),
        "{}",
        show(&v)
    );
}

#[test]
fn verify_finds_exactly_the_differences_planted_on_a_replica() {
    let net = NetnsHosts::start(3);
    fill(net.h(1), 20_000);
    let out = net.run(&["init"]);
    assert!(out.status.success(), "init failed:\n{}", show(&out));
    let clean = net.run(&["verify"]);
    assert_eq!(clean.status.code(), Some(0), "{}", show(&clean));
    // Behind replication's back on h2 only: a changed row, a deleted row, an extra row, each in
    // another table, and a duplicate in the table without a key.
    net.h(2).sql(
        "SET SESSION sql_log_bin = 0; \
         UPDATE app.orders SET note = 'tampered' WHERE id = 12345; \
         DELETE FROM app.lines WHERE o = 77 AND sku = UNHEX('02FF'); \
         INSERT INTO app.orders VALUES (3000000000, 'extra', NULL); \
         INSERT INTO app.events VALUES (NULL, 'b')",
    );
    let v = net.run(&["verify", "--format", "json"]);
    assert_eq!(v.status.code(), Some(1), "{}", show(&v));
    let j = json(&v);
    assert_eq!(j["consistent"], false);
    let mut found: Vec<(String, String, String, String)> = j["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .flat_map(|d| {
            let r = d["replica"].as_str().unwrap_or_default().to_string();
            let t = d["table"].as_str().unwrap_or_default().to_string();
            d["ranges"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |x| {
                    (
                        r.clone(),
                        t.clone(),
                        x["from"].as_str().unwrap_or("-").to_string(),
                        x["to"].as_str().unwrap_or("-").to_string(),
                    )
                })
        })
        .collect();
    found.sort();
    let want = |t: &str, f: &str, to: &str| ("h2".to_string(), t.into(), f.into(), to.into());
    assert_eq!(
        found,
        vec![
            want("app.events", "-", "-"),
            want("app.lines", "[77, 0x02FF]", "[77, 0x02FF]"),
            want("app.orders", "[12345]", "[12345]"),
            want("app.orders", "[3000000000]", "[3000000000]"),
        ],
        "{j:#}"
    );
    // h3 was compared and matches.
    assert!(
        j["compared"]
            .as_array()
            .is_some_and(|a| a.iter().any(|c| c["replica"] == "h3")),
        "{j:#}"
    );
    let text = net.run(&["verify"]);
    assert_eq!(text.status.code(), Some(1));
    let t = stdout(&text);
    assert!(t.contains("[12345]") && t.contains("[77, 0x02FF]"), "{t}");
    assert!(t.contains("DIFFERENT: 3 table(s) differ on h2"), "{t}");
    // verify wrote nothing on the master: its binary log did not move.
    let before = net.h(1).sql("SHOW MASTER STATUS");
    let _ = net.run(&["verify"]);
    assert_eq!(net.h(1).sql("SHOW MASTER STATUS"), before);
}

/// MySQL 9.7: the clone plugin seeds the slave, and verify compares them. The slave holds no
/// data and these hosts' /var/lib/mysql is a mount of its own (a bind mount), so it is cloned
/// in place: no copy built on another mount and moved across. No supervisor restarts its
/// server after the clone (error 3707): repltool starts it.
#[test]
fn clone_seeds_a_mysql_97_slave_and_verify_compares_it() {
    // The package's config as installed: its mysqld.cnf pins bind-address to 127.0.0.1.
    let net = NetnsHosts::start_with(&[Flavor::MySQL97, Flavor::MySQL97]);
    net.h(1).sql(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40)); \
         INSERT INTO app.t VALUES (1, 'a'), (2, 'b'), (3, NULL)",
    );
    set_seed(&net, "physical");
    let out = net.run(&["init"]);
    assert!(out.status.success(), "init failed:\n{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains("h2: seeded physically from h1") && text.contains("by the clone plugin"),
        "{text}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("h2: cloned in place: it holds no user data")
            && err.contains("h2: cloned in place and started on the clone"),
        "{err}"
    );
    assert!(!err.contains("another mount than the datadir"), "{err}");
    assert_eq!(
        net.h(2)
            .sql("SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', id, v))) FROM app.t"),
        net.h(1)
            .sql("SELECT COUNT(*), SUM(CRC32(CONCAT_WS('#', id, v))) FROM app.t")
    );
    // The one-time clone account is gone on both.
    for h in &net.hosts {
        assert_eq!(
            h.sql("SELECT COUNT(*) FROM mysql.user WHERE User = 'repltool_clone'"),
            "0"
        );
    }
    assert_eq!(leftovers(net.h(2)), "");
    net.h(1).sql("INSERT INTO app.t VALUES (4, 'after')");
    net.h(2)
        .wait_sql("SELECT COUNT(*) FROM app.t WHERE id = 4", "1", T);
    let v = net.run(&["verify"]);
    assert_eq!(v.status.code(), Some(0), "{}", show(&v));
    net.h(2).sql(
        "SET SESSION sql_log_bin = 0; SET GLOBAL super_read_only = OFF; \
         UPDATE app.t SET v = 'x' WHERE id = 2; SET GLOBAL super_read_only = ON",
    );
    let v = net.run(&["verify", "--format", "json"]);
    assert_eq!(v.status.code(), Some(1), "{}", show(&v));
    let j = json(&v);
    assert_eq!(j["differences"][0]["table"], "app.t", "{j:#}");
    assert_eq!(j["differences"][0]["ranges"][0]["from"], "[2]", "{j:#}");
}

/// MySQL 9.7: a slave holding databases of its own is cloned only with --force, and then
/// beside its datadir (its own data kept aside until replication runs on the clone). Here that
/// directory is on another mount than the datadir, which init says before it copies.
#[test]
fn a_mysql_97_slave_holding_data_is_cloned_beside_its_datadir_with_force() {
    let net = NetnsHosts::start_with(&[Flavor::MySQL97, Flavor::MySQL97]);
    net.h(1).sql(
        "CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY, v VARCHAR(40)); \
         INSERT INTO app.t VALUES (1, 'a'), (2, 'b')",
    );
    net.h(2)
        .sql("CREATE DATABASE own; CREATE TABLE own.x (id INT PRIMARY KEY); INSERT INTO own.x VALUES (7)");
    set_seed(&net, "physical");
    let out = net.run(&["init"]);
    // A refusal: exit 1, nothing changed.
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        all(&out).contains("h2: already holds databases of its own"),
        "{}",
        show(&out)
    );
    assert_eq!(net.h(2).sql("SELECT COUNT(*) FROM own.x"), "1");
    let out = net.run(&["init", "--force"]);
    assert!(out.status.success(), "init --force failed:\n{}", show(&out));
    let err = all(&out);
    assert!(
        err.contains("h2: the clone is built in /var/lib, another mount than the datadir"),
        "{err}"
    );
    assert!(!err.contains("cloned in place"), "{err}");
    assert!(
        err.contains("h2: removed its previous datadir (/var/lib/mysql/.repltool-previous)"),
        "{err}"
    );
    assert_eq!(
        net.h(2)
            .sql("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'own'"),
        "0"
    );
    assert_eq!(net.h(2).sql("SELECT COUNT(*) FROM app.t"), "2");
    assert_eq!(leftovers(net.h(2)), "");
    net.h(1).sql("INSERT INTO app.t VALUES (3, 'after')");
    net.h(2)
        .wait_sql("SELECT COUNT(*) FROM app.t WHERE id = 3", "1", T);
}
