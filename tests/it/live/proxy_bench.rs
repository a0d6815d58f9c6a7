//! The `proxy` benchmark's driver (bench/sections.sh `section_proxy` runs it with
//! `cargo test --release -- --ignored --exact live::proxy_bench::bench_proxy_endpoints`), not
//! a test of its own: the endpoint tests are in `live::proxy`. It prints one
//! `BENCH|what|median|runs|floor|ratio` line per table row on stdout.
//!
//! On netns hosts h1..h3 (MariaDB) and proxies p1 (HAProxy) and p2 (nginx) in the topology
//! file, with an application writer through each writer endpoint, it measures the longest gap
//! between two acknowledged writes during switchovers, the first write on the new master after
//! a failover's start, and the acknowledged writes lost; against, in the same run, the same
//! switchover behind p3: a HAProxy configured as the guides do (`option mysql-check`,
//! `inter 1s fall 3`, the old master first and the target as first backup) that only follows
//! its own health checks, so the old master must be stopped for it to move.

use std::time::{Duration, Instant};

use crate::support::netns::{show, Flavor, NetnsHosts, NET};
use crate::support::proxy::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn row(what: &str, value: f64, runs: usize, floor: Option<f64>) {
    let (f, r) = match floor {
        Some(f) if f > 0.0 => (format!("{f:.1}"), format!("{:.1}", value / f)),
        _ => ("-".into(), "-".into()),
    };
    println!("BENCH|{what}|{value:.1}|{runs}|{f}|{r}");
}

fn run_ok(net: &NetnsHosts, args: &[&str]) -> String {
    let out = net.run(args);
    assert!(
        out.status.success(),
        "repltool {}: {}",
        args.join(" "),
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The DB-side write window a promote reports ("writes blocked for X ms").
fn blocked_ms(out: &str) -> Option<f64> {
    let i = out.find("writes blocked for ")?;
    out[i + 19..].split(' ').next()?.parse().ok()
}

fn wait_healthy(net: &NetnsHosts) {
    wait_for("a healthy cluster", Duration::from_secs(60), || {
        net.run(&["status"]).status.success()
    });
}

/// p3's HAProxy as the guides configure it, the master `m` first and `next` first backup.
fn guide_haproxy(net: &NetnsHosts, m: usize, next: usize) {
    let mut servers = format!(
        "\tserver h{m} {}:3306 check inter 1s fall 3 rise 2\n\tserver h{next} {}:3306 check inter 1s fall 3 rise 2 backup\n",
        net.h(m).addr,
        net.h(next).addr
    );
    for k in 1..=3 {
        if k != m && k != next {
            servers.push_str(&format!(
                "\tserver h{k} {}:3306 check inter 1s fall 3 rise 2 backup\n",
                net.h(k).addr
            ));
        }
    }
    let cfg = format!(
        "\nlisten galera-guide\n\tbind *:{WRITER_PORT}\n\tmode tcp\n\toption tcplog\n\toption tcpka\n\toption mysql-check user haproxy_check\n\tbalance leastconn\n{servers}"
    );
    let p3 = net.p(3);
    p3.sh("cp /etc/haproxy/haproxy.cfg.orig /etc/haproxy/haproxy.cfg 2>/dev/null || cp /etc/haproxy/haproxy.cfg /etc/haproxy/haproxy.cfg.orig");
    p3.sh(&format!(
        "cat >> /etc/haproxy/haproxy.cfg <<'EOF'\n{cfg}EOF"
    ));
    p3.sh("service haproxy restart >/dev/null");
    let sid = server_id(net, m);
    wait_for(
        "the guides' HAProxy on the master",
        Duration::from_secs(20),
        || lands_on(&p3.addr, WRITER_PORT) == Ok(sid),
    );
}

#[test]
#[ignore = "benchmark driver: bash bench/run.sh proxy"]
fn bench_proxy_endpoints() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let net = NetnsHosts::start_with_proxies(&[Flavor::System; 3], 3);
    let proxies = format!(
        "proxies:\n  p1: {{ address: {}, kind: haproxy, writer: {WRITER_PORT}, reader: {READER_PORT} }}\n  p2: {{ address: {}, kind: nginx, writer: {WRITER_PORT}, reader: {READER_PORT} }}\n",
        net.p(1).addr,
        net.p(2).addr
    );
    let base = net.topology_text();
    std::fs::write(&net.file, format!("{base}{proxies}")).expect("topology file");
    run_ok(&net, &["init"]);
    net.h(1).sql(&format!(
        "CREATE DATABASE app; CREATE TABLE app.seq_h (id BIGINT PRIMARY KEY); \
         CREATE TABLE app.seq_n (id BIGINT PRIMARY KEY); CREATE TABLE app.seq_g (id BIGINT PRIMARY KEY); \
         CREATE USER '{APP_USER}'@'{NET}.%' IDENTIFIED BY '{APP_PASSWORD}'; \
         GRANT SELECT, INSERT ON app.* TO '{APP_USER}'@'{NET}.%'; \
         CREATE USER 'haproxy_check'@'{}';",
        net.p(3).addr
    ));
    let (p1, p2, p3) = (&net.p(1).addr, &net.p(2).addr, &net.p(3).addr);
    let mut m = 1usize;
    let next = |m: usize| m % 3 + 1;
    let limit = Duration::from_secs(120);

    // Switchovers through repltool's endpoints: HAProxy (p1) and nginx (p2) at once.
    let (mut gap_h, mut gap_n, mut blocked, mut took) = (vec![], vec![], vec![], vec![]);
    let mut lost = 0usize;
    for i in 0..runs {
        wait_healthy(&net);
        let t = next(m);
        let (wh, wn) = (
            Writer::start_into(p1, WRITER_PORT, "seq_h", limit, u64::MAX),
            Writer::start_into(p2, WRITER_PORT, "seq_n", limit, u64::MAX),
        );
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        let out = run_ok(&net, &["promote", &format!("h{t}"), "--yes"]);
        took.push(t0.elapsed().as_secs_f64() * 1000.0);
        std::thread::sleep(Duration::from_millis(500));
        let (h, n) = (wh.stop(), wn.stop());
        assert!(h.acked_after(t0 + Duration::from_millis(1)) > 0 && n.acked_after(t0) > 0);
        let l = lost_on(&h, net.h(t), "seq_h").len() + lost_on(&n, net.h(t), "seq_n").len();
        lost += l;
        gap_h.push(h.max_gap.as_secs_f64() * 1000.0);
        gap_n.push(n.max_gap.as_secs_f64() * 1000.0);
        blocked.push(blocked_ms(&out).unwrap_or(f64::NAN));
        eprintln!(
            "bench: switchover {i} h{m} -> h{t}: gaps HAProxy {:.1} ms, nginx {:.1} ms; writes blocked {:.1} ms; {l} lost",
            gap_h[i], gap_n[i], blocked[i]
        );
        m = t;
    }
    let floor = median(blocked.clone());
    row(
        "switchover behind HAProxy (repltool): longest gap between acknowledged writes, ms (target < 100) (floor: the servers' own write window)",
        median(gap_h.clone()),
        runs,
        Some(floor),
    );
    row(
        "switchover behind nginx stream (repltool): longest gap between acknowledged writes, ms (floor: the servers' own write window)",
        median(gap_n),
        runs,
        Some(floor),
    );
    row(
        "`promote` switchover with 2 proxies, ms",
        median(took),
        runs,
        None,
    );
    row(
        "switchover: acknowledged writes lost (HAProxy + nginx, all runs; target 0)",
        lost as f64,
        runs,
        None,
    );

    // Failovers: the master's server is killed, then `promote` to the next host.
    let (mut first_h, mut first_n) = (vec![], vec![]);
    let mut flost = 0usize;
    for i in 0..runs {
        wait_healthy(&net);
        let t = next(m);
        let (wh, wn) = (
            Writer::start_into(p1, WRITER_PORT, "seq_h", limit, u64::MAX),
            Writer::start_into(p2, WRITER_PORT, "seq_n", limit, u64::MAX),
        );
        std::thread::sleep(Duration::from_millis(500));
        net.h(m).crash_server();
        let t0 = Instant::now();
        run_ok(&net, &["promote", &format!("h{t}"), "--yes"]);
        std::thread::sleep(Duration::from_millis(700));
        let (h, n) = (wh.stop(), wn.stop());
        let f = |w: &Writes| {
            w.first_after(t0)
                .map(|a| (a - t0).as_secs_f64() * 1000.0)
                .unwrap_or(f64::NAN)
        };
        first_h.push(f(&h));
        first_n.push(f(&n));
        let l = lost_on(&h, net.h(t), "seq_h").len() + lost_on(&n, net.h(t), "seq_n").len();
        flost += l;
        eprintln!(
            "bench: failover {i} h{m} -> h{t}: first write after {:.1} ms (HAProxy), {:.1} ms (nginx); {l} lost",
            first_h[i], first_n[i]
        );
        // The dead master back: `init` rejoins it under the new one.
        let out = net
            .h(m)
            .sh_with("service mariadb start", None, Duration::from_secs(60));
        assert!(out.status.success(), "{}", show(&out));
        run_ok(&net, &["init"]);
        m = t;
    }
    row(
        "failover behind HAProxy: first acknowledged write on the new master after `promote` started, ms (target < 1000)",
        median(first_h.clone()),
        runs,
        None,
    );
    row(
        "failover behind nginx stream: first acknowledged write on the new master after `promote` started, ms (target < 1000)",
        median(first_n),
        runs,
        None,
    );
    row(
        "failover: acknowledged writes lost (HAProxy + nginx, all runs; the dead master's host answers)",
        flost as f64,
        runs,
        None,
    );

    // The same switchover behind the guides' HAProxy (p3), which only follows its checks: the
    // old master must be stopped for it to move. The topology file without `proxies:` for it.
    let (mut gap_g, mut glost) = (vec![], 0usize);
    for i in 0..runs {
        wait_healthy(&net);
        let t = next(m);
        guide_haproxy(&net, m, t);
        let with = net.topology_text();
        let without = with.replace(&proxies, "");
        std::fs::write(&net.file, &without).expect("topology file");
        let w = Writer::start_into(p3, WRITER_PORT, "seq_g", limit, u64::MAX);
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        run_ok(&net, &["promote", &format!("h{t}"), "--yes"]);
        let out = net
            .h(m)
            .sh_with("service mariadb stop", None, Duration::from_secs(60));
        assert!(out.status.success(), "{}", show(&out));
        let sid = server_id(&net, t);
        wait_for(
            "the guides' HAProxy on the new master",
            Duration::from_secs(30),
            || lands_on(p3, WRITER_PORT) == Ok(sid),
        );
        std::thread::sleep(Duration::from_millis(500));
        let g = w.stop();
        assert!(
            g.acked_after(t0) > 0,
            "no write behind the guides' HAProxy after the switchover"
        );
        let l = lost_on(&g, net.h(t), "seq_g").len();
        glost += l;
        gap_g.push(g.max_gap.as_secs_f64() * 1000.0);
        eprintln!(
            "bench: guides' HAProxy, switchover {i} h{m} -> h{t}: gap {:.1} ms; {l} lost",
            gap_g[i]
        );
        // Back as it was: the old master started (it already replicates from the new one),
        // the proxies in the file again and brought up to date by init.
        let out = net
            .h(m)
            .sh_with("service mariadb start", None, Duration::from_secs(60));
        assert!(out.status.success(), "{}", show(&out));
        let rewritten = net.topology_text();
        std::fs::write(&net.file, format!("{rewritten}{proxies}")).expect("topology file");
        run_ok(&net, &["init"]);
        m = t;
    }
    let ours = median(gap_h);
    row(
        "the same switchover behind HAProxy as the guides set it (mysql-check, inter 1s fall 3; old master stopped), longest gap, ms (floor: repltool's HAProxy gap)",
        median(gap_g),
        runs,
        Some(ours),
    );
    row(
        "guides' HAProxy: acknowledged writes lost (all runs)",
        glost as f64,
        runs,
        None,
    );
}
