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
    p.sh("sed -n '/^# BEGIN repltool netns$/,/^# END repltool netns$/p' /etc/haproxy/haproxy.cfg")
}

#[test]
fn haproxy_init_keeps_the_users_config_converges_without_reload_and_serves_readers() {
    let net = NetnsHosts::start_with_proxies(&[Flavor::System; 3], 1);
    let p1 = net.p(1);
    // A section of the user's own, which init must keep.
    p1.sh("printf '\\nlisten users-own\\n\\tbind *:8080\\n\\tmode tcp\\n\\tserver s 127.0.0.1:9\\n' >> /etc/haproxy/haproxy.cfg");
    let before = p1.sh("cat /etc/haproxy/haproxy.cfg");
    add_proxies(&net, "haproxy", false);
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
}
