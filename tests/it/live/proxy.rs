//! Live tests of the application endpoints (`proxies:`, `vip:`): network-namespace database
//! hosts (MariaDB, the Debian way) and proxy hosts p1, p2 at 10.231.77.2K running the machine's
//! HAProxy, nginx (stream module) and keepalived under Debian's init scripts, reached over SSH
//! like the database hosts. An application writer connects through the writer endpoint (or
//! the VIP) from this process and records every acknowledged id; the assertions are what an
//! application sees: every acknowledged write on the new master, reads off a stopped slave,
//! the VIP answering after its proxy died, status naming a writer changed by hand.
//! Hosts of one test at a time (tests/it/support/netns.rs).

use std::time::Duration;

use crate::support::netns::{show, Flavor, NetnsHosts};
use crate::support::proxy::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("output is not JSON ({e}):\n{}", show(o)))
}

fn ok(net: &NetnsHosts, args: &[&str]) -> String {
    let out = net.run(args);
    assert!(
        out.status.success(),
        "repltool {}: {}",
        args.join(" "),
        show(&out)
    );
    stdout(&out)
}

/// `status --format json`'s endpoint `e` (0 writer, 1 reader) of proxy `i`: whom it sends to.
fn sends_to(v: &serde_json::Value, i: usize, e: usize) -> Vec<String> {
    v["proxies"][i]["endpoints"][e]["sends_to"]
        .as_array()
        .unwrap_or_else(|| panic!("no endpoint {e} of proxy {i}: {v:#}"))
        .iter()
        .map(|s| s.as_str().unwrap_or_default().to_string())
        .collect()
}

/// The block repltool wrote in p's haproxy.cfg, as lines.
fn haproxy_block(p: &crate::support::netns::NsHost) -> String {
    haproxy_block_of(p, "netns")
}

/// The block of cluster `name` in p's haproxy.cfg.
fn haproxy_block_of(p: &crate::support::netns::NsHost, name: &str) -> String {
    p.sh(&format!(
        "sed -n '/^# BEGIN repltool {name}$/,/^# END repltool {name}$/p' /etc/haproxy/haproxy.cfg"
    ))
}

#[test]
fn haproxy_init_keeps_the_users_config_converges_without_reload_and_serves_readers() {
    let net = NetnsHosts::start_with_proxies(&[Flavor::System; 3], 1);
    let p1 = net.p(1);
    // A section of the user's own, which init must keep.
    p1.sh("printf '\\nlisten users-own\\n\\tbind *:8080\\n\\tmode tcp\\n\\tserver s 127.0.0.1:9\\n' >> /etc/haproxy/haproxy.cfg");
    let before = p1.sh("cat /etc/haproxy/haproxy.cfg");
    add_proxies(&net, "haproxy", false);
    // HAProxy missing on the proxy (its binary hidden in p1's own mount namespace): a clear
    // error naming the package, before anything is changed anywhere.
    p1.sh("mount --bind /dev/null /usr/sbin/haproxy");
    let out = net.run(&["init"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("p1: `haproxy` is not installed: install the `haproxy` package (apt-get install haproxy)"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(net.h(1).etc_mysql("mariadb.conf.d/60-repltool.cnf"), None);
    p1.sh("umount /usr/sbin/haproxy");
    let out = ok(&net, &["init"]);
    eprintln!("{out}");
    let cfg = p1.sh("cat /etc/haproxy/haproxy.cfg");
    assert!(
        cfg.starts_with(before.trim_end()),
        "the user's part changed:\n{cfg}"
    );
    assert!(cfg.contains("listen repltool-netns-writer"), "{cfg}");
    let pid = pid_in(p1, "/run/haproxy.pid").expect("HAProxy runs");
    // Converged: nothing to do, HAProxy not reloaded.
    let again = ok(&net, &["init"]);
    assert!(again.contains("nothing to do"), "{again}");
    assert_eq!(
        pid_in(p1, "/run/haproxy.pid"),
        Some(pid),
        "HAProxy was reloaded"
    );
    app_schema(&net, 1);
    let v = json(&net.run(&["status", "--format", "json"]));
    assert_eq!(v["healthy"], serde_json::json!(true), "{v:#}");
    assert_eq!(sends_to(&v, 0, 0), vec!["h1"]);
    assert_eq!(sends_to(&v, 0, 1), vec!["h2", "h3"]);
    // Writes through the writer endpoint land on the master.
    let (s1, s2, s3) = (server_id(&net, 1), server_id(&net, 2), server_id(&net, 3));
    assert_eq!(lands_on(&p1.addr, WRITER_PORT), Ok(s1));
    // Reads are spread over the slaves.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(lands_on(&p1.addr, READER_PORT).expect("reader"));
    }
    assert_eq!(seen, [s2, s3].into_iter().collect());
    // A stopped slave: HAProxy's own check takes it out within seconds, no repltool run.
    net.h(3).crash_server();
    let took = wait_for("reads off the stopped h3", Duration::from_secs(10), || {
        (0..10).all(|_| lands_on(&p1.addr, READER_PORT) == Ok(s2))
    });
    eprintln!("netns: the reader endpoint left the stopped slave within {took:?}");
    let out = net
        .h(3)
        .sh_with("service mariadb start", None, Duration::from_secs(60));
    assert!(out.status.success(), "{}", show(&out));
    wait_for(
        "h3 back in the reader endpoint",
        Duration::from_secs(20),
        || (0..10).any(|_| lands_on(&p1.addr, READER_PORT) == Ok(s3)),
    );
    wait_for("h3 replicating again", Duration::from_secs(20), || {
        net.run(&["status"]).status.success()
    });
    // A slave that falls behind (delayed replication): HAProxy cannot tell, repltool's
    // judgement (init --max-lag) takes it out, at runtime, and writes the same in the file.
    net.h(2)
        .sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 600; START SLAVE");
    net.h(1).sql("INSERT INTO app.seq (id) VALUES (1000000)");
    let lag = || -> u64 {
        net.h(2)
            .sh("mariadb -e 'SHOW SLAVE STATUS\\G' | awk '/Seconds_Behind_Master/ { print $2 }'")
            .trim()
            .parse()
            .unwrap_or(0)
    };
    wait_for("h2 lagging 2s", Duration::from_secs(20), || lag() >= 2);
    let out = ok(&net, &["init", "--dry-run", "--max-lag", "1"]);
    assert!(out.contains("HAProxy at runtime, no reload"), "{out}");
    let out = ok(&net, &["init", "--max-lag", "1"]);
    assert_eq!(
        pid_in(p1, "/run/haproxy.pid"),
        Some(pid),
        "HAProxy was reloaded"
    );
    let landed: Vec<_> = (0..10).map(|_| lands_on(&p1.addr, READER_PORT)).collect();
    assert!(
        landed.iter().all(|l| *l == Ok(s3)),
        "reads should all reach h3 ({s3}) while h2 lags: {landed:?}\n{out}"
    );
    // The file says the same, so a reload keeps it.
    let block = haproxy_block(p1);
    assert!(
        block.contains("server h2 10.231.77.12:3306 disabled"),
        "{block}"
    );
    let v = json(&net.run(&["status", "--format", "json", "--max-lag", "1"]));
    assert_eq!(sends_to(&v, 0, 1), vec!["h3"], "{v:#}");
    net.h(2)
        .sql("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE");
    wait_for("h2 caught up", Duration::from_secs(20), || lag() == 0);
    ok(&net, &["init", "--max-lag", "1"]);
    wait_for(
        "h2 back in the reader endpoint",
        Duration::from_secs(10),
        || (0..10).any(|_| lands_on(&p1.addr, READER_PORT) == Ok(s2)),
    );
    // A writer endpoint changed by hand: status names it, with the command that fixes it.
    haproxy_socket(p1, "set server repltool-netns-writer/h2 state ready");
    let out = net.run(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "p1: writer :3306 sends to h1 and h2: 2 servers take writes, and only h1 is the master"
        ),
        "{text}"
    );
    assert!(
        text.contains("run `repltool init`: it points the writer endpoint at h1 only"),
        "{text}"
    );
    let v = json(&net.run(&["status", "--format", "json"]));
    assert_eq!(sends_to(&v, 0, 0), vec!["h1", "h2"]);
    assert!(
        v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["host"] == "p1"),
        "{v:#}"
    );
    ok(&net, &["init"]);
    let v = json(&net.run(&["status", "--format", "json"]));
    assert_eq!(sends_to(&v, 0, 0), vec!["h1"], "{v:#}");
    assert_eq!(v["healthy"], serde_json::json!(true), "{v:#}");
    assert_eq!(
        pid_in(p1, "/run/haproxy.pid"),
        Some(pid),
        "HAProxy was reloaded"
    );
    // `check` sees the proxy: reachable, its packages, its configuration writable.
    let v = json(&net.run(&["check", "--format", "json"]));
    for c in ["proxy reachable", "proxy packages", "proxy config writable"] {
        let r = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["check"] == c && r["host"] == "p1")
            .unwrap_or_else(|| panic!("no `{c}` row: {v:#}"));
        assert_eq!(r["result"], "ok", "{r:#}");
    }
    // A switchover that aborts once the writer points at the target (its server dies before
    // it is made writable): the writer is pointed back at the old master, which is writable
    // again; applications write there.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_repltool"))
        .args(["promote", "h2", "--yes", "-f"])
        .arg(&net.file)
        .env("REPLTOOL_FAILPOINT", "promote-before-writable:pause=4000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("repltool promote");
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            if l.contains("failpoint promote-before-writable: pausing") {
                let _ = tx.send(None);
            }
            all.push_str(&l);
            all.push('\n');
        }
        let _ = tx.send(Some(all));
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(60))
            .expect("the failpoint"),
        None
    );
    assert_eq!(
        sends_to(&json(&net.run(&["status", "--format", "json"])), 0, 0),
        vec!["h2"]
    );
    net.h(2).crash_server();
    let stderr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("promote ends")
        .unwrap_or_default();
    let status = child.wait().expect("promote exit");
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains("the writer endpoint sends to h1 again"),
        "{stderr}"
    );
    assert!(stderr.contains("h1 is writable again"), "{stderr}");
    assert_eq!(lands_on(&p1.addr, WRITER_PORT), Ok(s1));
    assert_eq!(net.h(1).sql("SELECT @@read_only"), "0");
}

/// A switchover then a failover under an application writer connected through the writer
/// endpoint of `kind` on p1: every acknowledged write is on the new master each time, the
/// writes go on, the endpoint and the file agree afterwards. Returns the writer's gaps (for
/// the log).
fn writer_follows_promotes(kind: &str) {
    let net = NetnsHosts::start_with_proxies(&[Flavor::System; 3], 1);
    let p1 = net.p(1);
    add_proxies(&net, kind, false);
    ok(&net, &["init"]);
    app_schema(&net, 1);
    let (s2, s3) = (server_id(&net, 2), server_id(&net, 3));
    // Switchover h1 -> h2 under load.
    let w = Writer::start(&p1.addr, WRITER_PORT, Duration::from_secs(60), 1_000_000);
    std::thread::sleep(Duration::from_millis(700));
    let t0 = std::time::Instant::now();
    let o = net.run(&["promote", "h2", "--yes"]);
    assert!(o.status.success(), "{}", show(&o));
    let t1 = std::time::Instant::now();
    eprintln!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    w.wait_more(50, Duration::from_secs(30));
    let writes = w.stop();
    eprintln!(
        "netns: {kind} switchover: {} writes acknowledged, {} errors, longest gap {:?}",
        writes.acked.len(),
        writes.errors,
        writes.max_gap
    );
    assert!(
        writes.acked_after(t1) > 0,
        "no write acknowledged after the switchover"
    );
    assert!(
        writes.acked.iter().any(|(_, a)| *a < t0),
        "no write before the switchover"
    );
    all_acked_on(&writes, net.h(2));
    assert_eq!(lands_on(&p1.addr, WRITER_PORT), Ok(s2));
    let v = json(&net.run(&["status", "--format", "json"]));
    assert_eq!(sends_to(&v, 0, 0), vec!["h2"], "{v:#}");
    // The old master replicates from h2: a reader again; h2 the readers' fallback only.
    let mut last = serde_json::Value::Null;
    let healthy = (0..100).any(|_| {
        let v = json(&net.run(&["status", "--format", "json"]));
        let done =
            sends_to(&v, 0, 1) == vec!["h1", "h3"] && v["healthy"] == serde_json::json!(true);
        last = v;
        done || {
            std::thread::sleep(Duration::from_millis(100));
            false
        }
    });
    assert!(
        healthy,
        "h1 not in the reader endpoint, or not healthy: {last:#}"
    );
    // Converged with the file: init changes nothing.
    let again = ok(&net, &["init"]);
    assert!(again.contains("nothing to do"), "{again}");
    // Failover h2 -> h3 under load: the server of h2 crashes.
    let w = Writer::start(&p1.addr, WRITER_PORT, Duration::from_secs(60), 1_000_000);
    std::thread::sleep(Duration::from_millis(700));
    net.h(2).crash_server();
    let t0 = std::time::Instant::now();
    let o = net.run(&["promote", "h3", "--yes"]);
    assert!(o.status.success(), "{}", show(&o));
    eprintln!("{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    w.wait_more(50, Duration::from_secs(30));
    let writes = w.stop();
    let first = writes.first_after(t0).expect("a write after the failover");
    eprintln!(
        "netns: {kind} failover: {} writes acknowledged, first on h3 {:?} after the promote started",
        writes.acked.len(),
        first - t0
    );
    // The dead master's host answered: what no slave received was read from its disk.
    all_acked_on(&writes, net.h(3));
    assert_eq!(lands_on(&p1.addr, WRITER_PORT), Ok(s3));
    let v = json(&net.run(&["status", "--format", "json"]));
    assert_eq!(sends_to(&v, 0, 0), vec!["h3"], "{v:#}");
    // The dead h2 is in no endpoint; h1 serves the reads.
    assert_eq!(sends_to(&v, 0, 1), vec!["h1"], "{v:#}");
}

#[test]
fn haproxy_writer_follows_a_switchover_and_a_failover_under_load() {
    writer_follows_promotes("haproxy");
}

#[test]
fn nginx_writer_follows_a_switchover_and_a_failover_under_load() {
    writer_follows_promotes("nginx");
}

#[test]
fn the_vip_moves_when_the_active_proxy_dies() {
    let net = NetnsHosts::start_with_proxies(&[Flavor::System; 2], 2);
    let (p1, p2) = (net.p(1), net.p(2));
    add_proxies(&net, "haproxy", true);
    let out = ok(&net, &["init"]);
    eprintln!("{out}");
    let vip = vip();
    // keepalived on both; one of them takes the VIP (the higher priority, the first in the
    // file, unless the other came up first: `nopreempt` keeps it where it is).
    let took = wait_for("the VIP on a proxy", Duration::from_secs(15), || {
        holds(p1, &vip) || holds(p2, &vip)
    });
    let (active, standby) = if holds(p1, &vip) { (p1, p2) } else { (p2, p1) };
    eprintln!("netns: {} took the VIP {took:?} after init", active.name);
    assert!(!holds(standby, &vip), "the VIP is on both proxies");
    app_schema(&net, 1);
    let s1 = server_id(&net, 1);
    assert_eq!(lands_on(&vip, WRITER_PORT), Ok(s1));
    let v = json(&net.run(&["status", "--format", "json"]));
    assert_eq!(
        v["vip"]["held_by"],
        serde_json::json!([active.name]),
        "{v:#}"
    );
    assert_eq!(v["healthy"], serde_json::json!(true), "{v:#}");
    // Converged: keepalived not reloaded, nothing to do.
    let kpid = pid_in(p1, "/run/keepalived.pid").expect("keepalived runs on p1");
    assert!(ok(&net, &["init"]).contains("nothing to do"));
    assert_eq!(pid_in(p1, "/run/keepalived.pid"), Some(kpid));
    // The application writes through the VIP; HAProxy on the active proxy dies.
    let w = Writer::start(&vip, WRITER_PORT, Duration::from_secs(60), 1_000_000);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = std::time::Instant::now();
    kill_pidfile(active, "/run/haproxy.pid");
    let moved = wait_for("the VIP on the standby", Duration::from_secs(20), || {
        holds(standby, &vip)
    });
    assert!(!holds(active, &vip), "the VIP is on both proxies");
    wait_for(
        "writes through the VIP again",
        Duration::from_secs(10),
        || lands_on(&vip, WRITER_PORT) == Ok(s1),
    );
    w.wait_more(50, Duration::from_secs(30));
    let writes = w.stop();
    assert!(
        writes.acked_after(t0 + moved) > 0,
        "no write through the VIP after it moved"
    );
    eprintln!(
        "netns: HAProxy on {} killed: the VIP on {} after {moved:?}; longest gap between acknowledged writes through the VIP {:?} ({} acknowledged)",
        active.name,
        standby.name,
        writes.max_gap,
        writes.acked.len()
    );
    all_acked_on(&writes, net.h(1));
    // status: the dead HAProxy (with the command that fixes it); who holds the VIP.
    let out = net.run(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    eprintln!("{text}");
    assert!(
        text.contains(&format!("{}: HAProxy is not running", active.name)),
        "{text}"
    );
    assert!(text.contains(&format!("{} [VIP]", standby.name)), "{text}");
    // init starts it again; the VIP stays where it is (nopreempt: one move per failure).
    ok(&net, &["init"]);
    let v = json(&net.run(&["status", "--format", "json"]));
    assert_eq!(v["healthy"], serde_json::json!(true), "{v:#}");
    std::thread::sleep(Duration::from_secs(3));
    assert!(holds(standby, &vip) && !holds(active, &vip));
    // keepalived's notify scripts are not used: no database was touched by the move.
    assert_eq!(net.h(1).sql("SELECT @@read_only"), "0");
    assert_eq!(net.h(2).sql("SELECT @@read_only"), "1");
}

#[test]
fn nginx_in_front_of_a_master_master_pair_follows_the_writer_switch() {
    // Seed 000: nginx in front of a master-master pair, with the stream module this time.
    let net = NetnsHosts::start_with_proxies(&[Flavor::System; 2], 1);
    let p1 = net.p(1);
    let text = net.topology_text().replace(
        &format!("  h1:\n    address: {}\n", net.h(1).addr),
        &format!("  h1:\n    address: {}\n    master: h2\n", net.h(1).addr),
    );
    std::fs::write(&net.file, text).expect("topology file");
    add_proxies(&net, "nginx", false);
    ok(&net, &["init"]);
    let conf = p1.sh("cat /etc/nginx/nginx.conf");
    assert!(
        conf.contains("stream {\n\tinclude /etc/nginx/repltool/*.conf;\n}"),
        "{conf}"
    );
    assert!(
        conf.contains("http {"),
        "the user's http block is gone:\n{conf}"
    );
    app_schema(&net, 1);
    let (s1, s2) = (server_id(&net, 1), server_id(&net, 2));
    // Both members writable: the writer goes to the first, the other is its backup.
    let v = json(&net.run(&["status", "--format", "json"]));
    assert_eq!(sends_to(&v, 0, 0), vec!["h1"], "{v:#}");
    assert_eq!(
        v["proxies"][0]["endpoints"][0]["fallback"],
        serde_json::json!(["h2"]),
        "{v:#}"
    );
    assert_eq!(lands_on(&p1.addr, WRITER_PORT), Ok(s1));
    let w = Writer::start(&p1.addr, WRITER_PORT, Duration::from_secs(60), 1_000_000);
    std::thread::sleep(Duration::from_millis(700));
    let out = ok(&net, &["promote", "h2", "--yes"]);
    eprintln!("{out}");
    w.wait_more(50, Duration::from_secs(30));
    let writes = w.stop();
    eprintln!(
        "netns: nginx, pair writer switch: {} acknowledged, longest gap {:?}",
        writes.acked.len(),
        writes.max_gap
    );
    all_acked_on(&writes, net.h(2));
    assert_eq!(lands_on(&p1.addr, WRITER_PORT), Ok(s2));
    // h1 is the passive side now (read_only: true in the file): no writer backup any more.
    assert!(net.topology_text().contains("read_only: true"));
    let v = json(&net.run(&["status", "--format", "json"]));
    assert_eq!(sends_to(&v, 0, 0), vec!["h2"], "{v:#}");
    assert_eq!(
        v["proxies"][0]["endpoints"][0]["fallback"],
        serde_json::json!([]),
        "{v:#}"
    );
    assert!(ok(&net, &["init"]).contains("nothing to do"));
    // A writer upstream edited by hand (both members on) and reloaded: status names it.
    p1.sh("sed -i 's/ down; # h1/ max_fails=1 fail_timeout=2s; # h1/' /etc/nginx/repltool/netns.conf && nginx -s reload");
    let out = net.run(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "p1: writer :3306 sends to h1 and h2: 2 servers take writes, and only h2 is the master"
        ),
        "{text}"
    );
    ok(&net, &["init"]);
    assert!(net.run(&["status"]).status.success());
}

/// `status --format json`'s server `host` (its normal slot, or its `backup` slot) in endpoint
/// `e` (0 writer, 1 reader) of the first proxy: HAProxy's state of it, its sessions.
fn server<'a>(
    v: &'a serde_json::Value,
    e: usize,
    host: &str,
    backup: bool,
) -> &'a serde_json::Value {
    v["proxies"][0]["endpoints"][e]["servers"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["host"] == host && s["backup"] == serde_json::json!(backup))
        })
        .unwrap_or_else(|| panic!("no server {host} (backup {backup}) in endpoint {e}: {v:#}"))
}

#[test]
fn galera_behind_haproxy_writes_to_one_member_and_survives_its_death() {
    let g = crate::support::galera::Galera::start_with_proxies(3, 3, "mariabackup", 1);
    g.add_proxies("haproxy");
    let p1 = g.net.p(1);
    // One init builds the cluster and the endpoints.
    let out = g.ok(&["init"]);
    eprintln!("{out}");
    g.assert_cluster(&[1, 2, 3]);
    let pid = pid_in(p1, "/run/haproxy.pid").expect("HAProxy runs");
    // One member takes the writes (the first in the file), the others stand by as backups:
    // two members writing at once would race certification.
    let block = haproxy_block_of(p1, "shop");
    for (k, a) in [(1, "h1"), (2, "h2"), (3, "h3")] {
        let addr = &g.net.h(k).addr;
        let (main, backup) = if k == 1 {
            (
                format!("server {a} {addr}:3306\n"),
                format!("server {a}:backup {addr}:3306 backup disabled\n"),
            )
        } else {
            (
                format!("server {a} {addr}:3306 disabled\n"),
                format!("server {a}:backup {addr}:3306 backup\n"),
            )
        };
        let writer = block
            .split("listen repltool-shop-reader")
            .next()
            .unwrap_or_default();
        assert!(writer.contains(&main), "{main:?} not in:\n{block}");
        assert!(writer.contains(&backup), "{backup:?} not in:\n{block}");
    }
    let v = json(&g.run(&["status", "--format", "json"]));
    assert_eq!(v["healthy"], serde_json::json!(true), "{v:#}");
    assert_eq!(sends_to(&v, 0, 0), vec!["h1"], "{v:#}");
    assert_eq!(
        v["proxies"][0]["endpoints"][0]["fallback"],
        serde_json::json!(["h2", "h3"]),
        "{v:#}"
    );
    // The readers: the other Synced members; the writer only when none is.
    assert_eq!(sends_to(&v, 0, 1), vec!["h2", "h3"], "{v:#}");
    assert_eq!(
        v["proxies"][0]["endpoints"][1]["fallback"],
        serde_json::json!(["h1"]),
        "{v:#}"
    );
    // Converged: nothing to do, HAProxy not reloaded.
    let again = g.ok(&["init"]);
    assert!(again.contains("nothing to do"), "{again}");
    assert_eq!(
        pid_in(p1, "/run/haproxy.pid"),
        Some(pid),
        "HAProxy was reloaded"
    );
    app_schema(&g.net, 1);
    let (s1, s2, s3) = (
        server_id(&g.net, 1),
        server_id(&g.net, 2),
        server_id(&g.net, 3),
    );
    assert!(s1 != s2 && s2 != s3 && s1 != s3, "{s1} {s2} {s3}");
    assert_eq!(lands_on(&p1.addr, WRITER_PORT), Ok(s1));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(lands_on(&p1.addr, READER_PORT).expect("reader"));
    }
    assert_eq!(seen, [s2, s3].into_iter().collect());
    // The writer member's server dies under an application writing through the endpoint:
    // HAProxy's check sends the writes to a backup member, no repltool run.
    let w = Writer::start(&p1.addr, WRITER_PORT, Duration::from_secs(90), 1_000_000);
    w.wait_more(50, Duration::from_secs(30));
    g.net.h(1).crash_server();
    let t0 = std::time::Instant::now();
    w.wait_more(50, Duration::from_secs(60));
    let writes = w.stop();
    let first = writes.first_after(t0).expect("a write after h1 died");
    eprintln!(
        "netns: galera member h1 killed: {} writes acknowledged, {} errors, first after the kill {:?} later, longest gap {:?}",
        writes.acked.len(),
        writes.errors,
        first - t0,
        writes.max_gap
    );
    assert!(
        writes.acked.iter().any(|(_, a)| *a < t0),
        "no write before the kill"
    );
    for k in [2, 3] {
        all_acked_on(&writes, g.net.h(k));
    }
    // Exactly one member takes the writes: the first backup in the file.
    let landed: Vec<_> = (0..10).map(|_| lands_on(&p1.addr, WRITER_PORT)).collect();
    assert!(
        landed.iter().all(|l| *l == Ok(s2)),
        "writes should all reach h2 ({s2}), the first backup: {landed:?}"
    );
    let landed: Vec<_> = (0..10).map(|_| lands_on(&p1.addr, READER_PORT)).collect();
    assert!(
        landed
            .iter()
            .all(|l| matches!(l, Ok(s) if *s == s2 || *s == s3)),
        "reads off the dead h1: {landed:?}"
    );
    // status names the dead member, in the cluster and behind the writer endpoint, and says
    // what helps: h1 back (a Galera cluster has no master to promote).
    let out = g.run(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let text = stdout(&out);
    eprintln!("{text}");
    assert!(text.contains("h1 not in it"), "{text}");
    assert!(
        text.contains(
            "p1: writer :3306: HAProxy's check says h1 is DOWN: writes go to the backup member h2"
        ),
        "{text}"
    );
    assert!(
        text.contains("start h1 again: `repltool init` starts members that are down"),
        "{text}"
    );
    assert!(!text.contains("promote"), "{text}");
    let v = json(&g.run(&["status", "--format", "json"]));
    let h1 = server(&v, 0, "h1", false);
    assert!(
        h1["health"]
            .as_str()
            .unwrap_or_default()
            .starts_with("DOWN"),
        "{h1:#}"
    );
    assert_eq!(server(&v, 0, "h2", true)["health"], "UP", "{v:#}");
    // h1 comes back: `init` starts it, it rejoins, and the writer endpoint prefers it again.
    // The application's connection to the backup h2 is shut once h1 is UP, so it reconnects
    // to h1: one member takes the writes again, not two racing certification.
    let next = writes.acked.last().map(|(i, _)| *i).unwrap_or(0) + 1_000;
    let w = Writer::start_from(
        &p1.addr,
        WRITER_PORT,
        "seq",
        next,
        Duration::from_secs(120),
        1_000_000,
    );
    w.wait_more(20, Duration::from_secs(30));
    let out = g.ok(&["init"]);
    eprintln!("{out}");
    g.assert_cluster(&[1, 2, 3]);
    let sessions = |v: &serde_json::Value, host: &str, backup: bool| {
        server(v, 0, host, backup)["sessions"]
            .as_u64()
            .unwrap_or_default()
    };
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = json(&g.run(&["status", "--format", "json"]));
        if sessions(&v, "h2", true) == 0
            && sessions(&v, "h1", false) >= 1
            && v["healthy"] == serde_json::json!(true)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "the application's session is still on the backup h2, or the cluster unhealthy: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    w.wait_more(50, Duration::from_secs(30));
    let back = w.stop();
    eprintln!(
        "netns: galera member h1 back: {} writes acknowledged, {} errors, longest gap {:?}",
        back.acked.len(),
        back.errors,
        back.max_gap
    );
    assert_eq!(lands_on(&p1.addr, WRITER_PORT), Ok(s1));
    for k in 1..=3 {
        all_acked_on(&writes, g.net.h(k));
        all_acked_on(&back, g.net.h(k));
    }
}
