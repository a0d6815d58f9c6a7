//! Live tests on realistic hosts: network namespaces at 10.231.77.1K, each a "Debian server" with
//! its own sshd on port 22 and its own MariaDB under the package's default config (/etc/mysql,
//! `bind-address = 127.0.0.1`, `service mariadb`). The topology file has addresses, SSH and
//! passwords only, so config layout and restart command come from repltool's detection.
//! Hosts of one test at a time (they share the subnet): see tests/it/support/netns.rs.

use crate::support::netns;

use std::time::{Duration, Instant};

use netns::{show, Flavor, NetnsHosts};

const T: Duration = Duration::from_secs(20);
const FRAGMENT: &str = "/etc/mysql/mariadb.conf.d/60-repltool.cnf";

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("output is not JSON ({e}):\n{}", show(o)))
}

/// The detail of check `name` for `host` in `check --format json`.
fn check_detail(v: &serde_json::Value, name: &str, host: &str) -> (String, String) {
    let row = v["checks"]
        .as_array()
        .and_then(|rows| {
            rows.iter()
                .find(|r| r["check"] == name && r["host"] == host)
        })
        .unwrap_or_else(|| panic!("no `{name}` row for {host}: {v:#}"));
    (
        row["result"].as_str().unwrap_or_default().to_string(),
        row["detail"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn check_finds_the_debian_layout_and_the_service_restart_on_every_host() {
    let net = NetnsHosts::start(3);
    let out = net.run(&["check", "--format", "json"]);
    let v = json(&out);
    for h in &net.hosts {
        let (res, detail) = check_detail(&v, "shell reachable", &h.name);
        assert_eq!(res, "ok", "{detail}");
        assert!(detail.contains(&format!("root@{}:22", h.addr)), "{detail}");
        let (res, detail) = check_detail(&v, "config writable", &h.name);
        assert_eq!(res, "ok", "{detail}");
        assert_eq!(detail, format!("fragment {FRAGMENT}"));
        let (res, detail) = check_detail(&v, "restart command", &h.name);
        assert_eq!(res, "ok", "{detail}");
        assert_eq!(detail, "service mariadb restart");
        let (_, detail) = check_detail(&v, "binary log", &h.name);
        assert_eq!(
            detail,
            "off; init enables it and restarts with `service mariadb restart`"
        );
        // check changes nothing.
        assert_eq!(h.etc_mysql("mariadb.conf.d/60-repltool.cnf"), None);
    }
    // The detected command works on such a host, and touches only that host's server.
    let before: Vec<i32> = net
        .hosts
        .iter()
        .map(|h| h.server_pid().expect("a running server"))
        .collect();
    let t = Instant::now();
    let out = net.h(2).sh_with("service mariadb restart", None, T);
    assert!(out.status.success(), "{}", show(&out));
    eprintln!(
        "netns: service mariadb restart took {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let after: Vec<i32> = net
        .hosts
        .iter()
        .map(|h| h.server_pid().expect("a running server"))
        .collect();
    assert_eq!(after[0], before[0]);
    assert_ne!(after[1], before[1], "h2's server was not restarted");
    assert_eq!(after[2], before[2]);
    assert_eq!(net.h(2).sql("SELECT @@bind_address"), "127.0.0.1");
}

/// `init` on fresh hosts; returns once the slaves replicate.
fn init_ok(net: &NetnsHosts) -> String {
    let out = net.run(&["init"]);
    assert!(out.status.success(), "init failed:\n{}", show(&out));
    stdout(&out)
}

/// `SHOW SLAVE STATUS` of host K as (column, value) pairs (`\G` output).
fn slave_status(net: &NetnsHosts, k: usize) -> Vec<(String, String)> {
    let out = net.h(k).sh_with(
        "mariadb -e 'SHOW SLAVE STATUS\\G'",
        None,
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", show(&out));
    stdout(&out)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field(status: &[(String, String)], name: &str) -> String {
    status
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {name} in {status:?}"))
}

#[test]
fn init_builds_replication_between_hosts_with_the_package_defaults() {
    let net = NetnsHosts::start(3);
    // Data on the master before replication exists: the slaves are seeded across hosts.
    net.h(1).sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); \
         INSERT INTO shop.t VALUES (1),(2),(3)",
    );
    let before: Vec<i32> = net
        .hosts
        .iter()
        .map(|h| h.server_pid().expect("a running server"))
        .collect();
    let run = net.run(&["init"]);
    assert!(run.status.success(), "init failed:\n{}", show(&run));
    let out = stdout(&run);
    for k in [2, 3] {
        assert!(out.contains(&format!("h{k}: replicates from h1")), "{out}");
    }
    // Debian's bind-address = 127.0.0.1 would keep the slaves out: init says so and overrides
    // it in its own fragment (50-server.cnf is left as the package wrote it).
    let all = format!("{out}{}", String::from_utf8_lossy(&run.stderr));
    assert!(
        all.contains("h1: the server listens on 127.0.0.1 only"),
        "{all}"
    );
    for (i, h) in net.hosts.iter().enumerate() {
        // The fragment went where Debian reads it, and the binary log needed the detected
        // restart: a new server process on every host.
        let frag = h
            .etc_mysql("mariadb.conf.d/60-repltool.cnf")
            .unwrap_or_else(|| panic!("{}: no {FRAGMENT}", h.name));
        assert!(
            frag.contains("log_bin") || frag.contains("log-bin"),
            "{frag}"
        );
        assert_ne!(
            h.server_pid(),
            Some(before[i]),
            "{}: the server was not restarted",
            h.name
        );
        assert_eq!(h.sql("SELECT @@log_bin"), "1");
        assert!(frag.contains("bind_address = 0.0.0.0"), "{frag}");
        assert_eq!(h.sql("SELECT @@bind_address"), "0.0.0.0");
        assert!(h
            .etc_mysql("mariadb.conf.d/50-server.cnf")
            .is_some_and(|c| c.contains("bind-address            = 127.0.0.1")));
    }
    // Replication crosses the network: each slave reads from h1's address, and h1 sees the
    // dump threads coming from the slaves' own addresses.
    for k in [2, 3] {
        let st = slave_status(&net, k);
        assert_eq!(field(&st, "Master_Host"), "10.231.77.11");
        assert_eq!(field(&st, "Slave_IO_Running"), "Yes", "{st:?}");
        assert_eq!(field(&st, "Slave_SQL_Running"), "Yes", "{st:?}");
        net.h(k).wait_sql("SELECT COUNT(*) FROM shop.t", "3", T);
        assert_eq!(net.h(k).sql("SELECT @@read_only"), "1");
    }
    let users = net
        .h(1)
        .sql("SELECT Host FROM mysql.user WHERE User='repl' ORDER BY Host");
    assert_eq!(users, "10.231.77.12\n10.231.77.13");
    let dumps = net.h(1).sql(
        "SELECT SUBSTRING_INDEX(HOST, ':', 1) FROM information_schema.PROCESSLIST \
         WHERE COMMAND = 'Binlog Dump' ORDER BY 1",
    );
    assert_eq!(dumps, "10.231.77.12\n10.231.77.13");
    // Writes flow.
    assert_eq!(net.h(1).sql("SELECT @@read_only"), "0");
    net.h(1).sql("INSERT INTO shop.t VALUES (4)");
    for k in [2, 3] {
        net.h(k).wait_sql("SELECT COUNT(*) FROM shop.t", "4", T);
    }
    let again = net.run(&["init"]);
    assert!(again.status.success(), "{}", show(&again));
    assert!(stdout(&again).contains("nothing to do"), "{}", show(&again));
    let st = net.run(&["status", "--format", "json"]);
    assert_eq!(st.status.code(), Some(0), "{}", show(&st));
}

/// `status --format json` (bounded by `--timeout SECS`): exit code, JSON, elapsed time.
fn status(net: &NetnsHosts, timeout: u64) -> (i32, serde_json::Value, Duration) {
    let t = Instant::now();
    let out = net.run(&[
        "status",
        "--format",
        "json",
        "--timeout",
        &timeout.to_string(),
    ]);
    (out.status.code().unwrap_or(-1), json(&out), t.elapsed())
}

#[test]
fn status_names_a_partitioned_host_unreachable_within_its_timeout() {
    let net = NetnsHosts::start(3);
    init_ok(&net);
    let (code, v, _) = status(&net, 3);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["healthy"], true);
    // h3 drops off the network: its interface goes down, packets to it go nowhere.
    net.h(3).set_link(false);
    let (code, v, took) = status(&net, 3);
    eprintln!("netns: status with h3 partitioned took {took:?}");
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["healthy"], false);
    let hosts = v["hosts"].as_array().expect("hosts");
    assert_eq!(hosts[0]["reachable"], true, "{v:#}");
    assert_eq!(hosts[1]["reachable"], true, "{v:#}");
    assert_eq!(hosts[2]["name"], "h3");
    assert_eq!(hosts[2]["reachable"], false, "{v:#}");
    assert!(
        hosts[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("10.231.77.13")),
        "the error should name the address: {v:#}"
    );
    // Within the 3 s per-host bound, plus process start and the rest of the work.
    assert!(took < Duration::from_secs(6), "status took {took:?}");
    // Back on the network: healthy again (bounded).
    net.h(3).set_link(true);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, v, _) = status(&net, 3);
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < end,
            "not healthy 30 s after the link came back: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn failover_after_the_master_crashes_then_the_old_master_rejoins() {
    let net = NetnsHosts::start(3);
    net.h(1)
        .sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)");
    init_ok(&net);
    net.h(1).sql("INSERT INTO app.t VALUES (1),(2),(3)");
    for k in [2, 3] {
        net.h(k).wait_sql("SELECT COUNT(*) FROM app.t", "3", T);
    }
    // The server crashes; the machine (sshd, disk) stays up.
    net.h(1).crash_server();
    assert_eq!(net.h(1).server_pid(), None);
    let out = net.run(&["promote", "h2", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    assert!(stdout(&out).contains("failover h1 -> h2"), "{}", show(&out));
    assert_eq!(net.h(2).sql("SELECT @@read_only"), "0");
    let st = slave_status(&net, 3);
    assert_eq!(field(&st, "Master_Host"), "10.231.77.12");
    net.h(2).sql("INSERT INTO app.t VALUES (4)");
    net.h(3).wait_sql("SELECT COUNT(*) FROM app.t", "4", T);
    let file = net.topology_text();
    assert!(file.contains("master: h2"), "{file}");
    // The old master comes back the Debian way: fenced by its config.
    let out = net
        .h(1)
        .sh_with("service mariadb start", None, Duration::from_secs(60));
    assert!(out.status.success(), "{}", show(&out));
    assert_eq!(net.h(1).sql("SELECT @@read_only"), "1");
    assert_eq!(net.h(1).sql("SELECT COUNT(*) FROM app.t"), "3");
    init_ok(&net);
    let st = slave_status(&net, 1);
    assert_eq!(field(&st, "Master_Host"), "10.231.77.12");
    net.h(1).wait_sql("SELECT COUNT(*) FROM app.t", "4", T);
    net.h(2).sql("INSERT INTO app.t VALUES (5)");
    for k in [1, 3] {
        net.h(k).wait_sql("SELECT COUNT(*) FROM app.t", "5", T);
    }
    let (code, v, _) = status(&net, 3);
    assert_eq!(code, 0, "{v:#}");
}

/// Hosts of three flavors at once: MySQL 9.7 (Debian sid) and MariaDB 11.8 (Debian trixie) from
/// the tests/roots.sh roots, MariaDB 10.11 from this machine. An SSH session lands in each
/// host's own userland, its server started by the package's (or, for MySQL, our) `service`
/// script under the Debian layout, and repltool reaches every server and reports its version.
#[test]
fn status_and_check_reach_mysql_9_7_mariadb_11_8_and_10_11_hosts() {
    let flavors = [Flavor::MySQL97, Flavor::MariaDB118, Flavor::System];
    let net = NetnsHosts::start_with(&flavors);
    // What an operator's SSH session finds on each host.
    let expect = [
        (
            "forky/sid",
            "mysqld --version; command -v mysql mysqldump mysqlbinlog",
            "Ver 9.7.",
            &[
                "/usr/bin/mysql",
                "/usr/bin/mysqldump",
                "/usr/bin/mysqlbinlog",
            ][..],
        ),
        (
            "13.",
            "mariadbd --version; command -v mariadb mariadb-dump mariadb-binlog mariadb-backup",
            "Ver 11.8.",
            &[
                "/usr/bin/mariadb",
                "/usr/bin/mariadb-dump",
                "/usr/bin/mariadb-binlog",
                "/usr/bin/mariadb-backup",
            ][..],
        ),
        (
            "12.",
            "mariadbd --version; command -v mariadb mariadb-dump mariadb-binlog",
            "Ver 10.11.",
            &["/usr/bin/mariadb"][..],
        ),
    ];
    for (k, (debian, tools, ver, paths)) in expect.iter().enumerate() {
        let h = net.h(k + 1);
        let out = net.ssh(k + 1, &format!("cat /etc/debian_version; {tools}"));
        assert!(out.status.success(), "{}: {}", h.name, show(&out));
        let o = stdout(&out);
        assert!(
            o.starts_with(debian),
            "{}: not Debian {debian}: {o}",
            h.name
        );
        assert!(o.contains(ver), "{}: {o}", h.name);
        for p in *paths {
            assert!(o.lines().any(|l| l == *p), "{}: no {p}: {o}", h.name);
        }
        let v = h.sql("SELECT @@version");
        assert!(v.starts_with(h.flavor.version_prefix()), "{}: {v}", h.name);
    }
    // status reaches every server and says which version it runs.
    let out = net.run(&["status", "--format", "json"]);
    let v = json(&out);
    let hosts = v["hosts"].as_array().expect("hosts");
    for (i, h) in net.hosts.iter().enumerate() {
        assert_eq!(hosts[i]["name"], h.name.as_str(), "{v:#}");
        assert_eq!(hosts[i]["reachable"], true, "{v:#}");
        let version = hosts[i]["version"].as_str().unwrap_or_default();
        assert!(
            version.starts_with(h.flavor.version_prefix()),
            "{}: version {version:?}: {v:#}",
            h.name
        );
    }
    // check finds each package's layout and service script, and logs in as admin.
    let out = net.run(&["check", "--format", "json"]);
    let v = json(&out);
    for (h, product) in net
        .hosts
        .iter()
        .zip(["MySQL 9.7.", "MariaDB 11.8.", "MariaDB 10.11."])
    {
        let (res, detail) = check_detail(&v, "shell reachable", &h.name);
        assert_eq!(res, "ok", "{detail}");
        let (res, detail) = check_detail(&v, "admin login", &h.name);
        assert_eq!(res, "ok", "{detail}");
        assert!(
            detail.contains(&format!("({product}")),
            "{}: {detail}",
            h.name
        );
        let (res, detail) = check_detail(&v, "config writable", &h.name);
        assert_eq!(res, "ok", "{detail}");
        // MySQL's package sets bind-address and the binary log in mysql.conf.d/mysqld.cnf,
        // read after 60-*: the fragment is named to be read last there.
        let fragment = if h.flavor == Flavor::MySQL97 {
            "zz-repltool.cnf"
        } else {
            "60-repltool.cnf"
        };
        assert_eq!(
            detail,
            format!("fragment /etc/mysql/{}/{fragment}", h.flavor.conf_dir())
        );
        let (res, detail) = check_detail(&v, "restart command", &h.name);
        assert_eq!(res, "ok", "{detail}");
        assert_eq!(detail, format!("service {} restart", h.flavor.service()));
    }
    // Each host's service script restarts its own server only.
    for k in [1, 2] {
        let before: Vec<Option<i32>> = net.hosts.iter().map(|h| h.server_pid()).collect();
        assert!(before.iter().all(Option::is_some), "{before:?}");
        let h = net.h(k);
        let t = Instant::now();
        let out = h.sh_with(&format!("service {} restart", h.flavor.service()), None, T);
        assert!(out.status.success(), "{}: {}", h.name, show(&out));
        eprintln!(
            "netns: {}: service {} restart took {:.2}s",
            h.name,
            h.flavor.service(),
            t.elapsed().as_secs_f64()
        );
        for (i, g) in net.hosts.iter().enumerate() {
            let now = g.server_pid();
            if i + 1 == k {
                assert!(
                    now.is_some() && now != before[i],
                    "{}: not restarted",
                    g.name
                );
            } else {
                assert_eq!(
                    now, before[i],
                    "{}: restarted by {}'s restart",
                    g.name, h.name
                );
            }
        }
        assert!(h
            .sql("SELECT @@version")
            .starts_with(h.flavor.version_prefix()));
    }
}

/// MariaDB 11.8 hosts (Debian trixie's packages): init builds replication with the package's
/// defaults (11.8 replicas ask for TLS by default; its servers offer it), status is healthy.
#[test]
fn init_builds_replication_between_mariadb_11_8_hosts() {
    let net = NetnsHosts::start_with(&[Flavor::MariaDB118, Flavor::MariaDB118]);
    net.h(1).sql(
        "CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY); \
         INSERT INTO shop.t VALUES (1),(2),(3)",
    );
    let out = init_ok(&net);
    assert!(out.contains("h2: replicates from h1"), "{out}");
    let st = slave_status(&net, 2);
    assert_eq!(field(&st, "Master_Host"), "10.231.77.11");
    assert_eq!(field(&st, "Slave_IO_Running"), "Yes", "{st:?}");
    assert_eq!(field(&st, "Slave_SQL_Running"), "Yes", "{st:?}");
    net.h(2).wait_sql("SELECT COUNT(*) FROM shop.t", "3", T);
    net.h(1).sql("INSERT INTO shop.t VALUES (4)");
    net.h(2).wait_sql("SELECT COUNT(*) FROM shop.t", "4", T);
    let (code, v, _) = status(&net, 3);
    assert_eq!(code, 0, "{v:#}");
    assert!(
        v["hosts"][1]["version"]
            .as_str()
            .is_some_and(|s| s.starts_with("11.8.")),
        "{v:#}"
    );
}

#[test]
fn a_former_master_rebuilt_under_the_same_name_is_seeded_not_rejoined() {
    let net = NetnsHosts::start(3);
    net.h(1)
        .sql("CREATE DATABASE app; CREATE TABLE app.t (id INT PRIMARY KEY)");
    init_ok(&net);
    net.h(1).sql("INSERT INTO app.t VALUES (1),(2),(3)");
    for k in [2, 3] {
        net.h(k).wait_sql("SELECT COUNT(*) FROM app.t", "3", T);
    }
    net.h(1).crash_server();
    let out = net.run(&["promote", "h2", "--yes"]);
    assert!(out.status.success(), "{}", show(&out));
    net.h(2).sql("INSERT INTO app.t VALUES (4)");
    // The machine is rebuilt: a fresh datadir (a new binary log that starts at
    // mysql-bin.000001), the same name, address and config; the admin account made again.
    let pw = std::fs::read_to_string(net.dir.join("admin.pw")).expect("admin password");
    let out = net.h(1).sh_with(
        "set -e; rm -rf /var/lib/mysql/*; \
         mariadb-install-db --user=mysql --datadir=/var/lib/mysql \
           --auth-root-authentication-method=socket --skip-test-db >/dev/null; \
         service mariadb start >/dev/null",
        None,
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", show(&out));
    net.h(1).sql(&format!(
        "CREATE USER 'admin'@'127.0.0.1' IDENTIFIED BY '{pw}'; \
         GRANT ALL PRIVILEGES ON *.* TO 'admin'@'127.0.0.1' WITH GRANT OPTION; \
         CREATE USER 'admin'@'localhost' IDENTIFIED BY '{pw}'; \
         GRANT ALL PRIVILEGES ON *.* TO 'admin'@'localhost' WITH GRANT OPTION"
    ));
    assert_eq!(net.h(1).sql("SHOW DATABASES LIKE 'app'"), "");
    // init must not "rejoin" it at the recorded position (it would get none of the data):
    // it says why and seeds it like any new slave.
    let out = net.run(&["init"]);
    assert!(out.status.success(), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("h1: a promotion to h2 is recorded for it, but it is not the server"),
        "{}",
        show(&out)
    );
    assert!(stdout(&out).contains("seeded from h2"), "{}", show(&out));
    net.h(1).wait_sql("SELECT COUNT(*) FROM app.t", "4", T);
    net.h(2).sql("INSERT INTO app.t VALUES (5)");
    net.h(1).wait_sql("SELECT COUNT(*) FROM app.t", "5", T);
    let (code, v, _) = status(&net, 3);
    assert_eq!(code, 0, "{v:#}");
}
