//! The `proxy` benchmark's driver (bench/sections.sh `section_proxy` runs it with
//! `cargo test --release -- --ignored --exact live::proxy_bench::bench_proxy_endpoints`), not
//! a test of its own: the endpoint tests are in `live::proxy`. It prints one
//! `BENCH|what|median|runs|floor|ratio` line per table row on stdout, and one `bench:` line per
//! run on stderr.
//!
//! On netns hosts h1..h3 (MariaDB), with an application writer through the writer endpoint,
//! for p1 (HAProxy) then p2 (nginx), each alone in the topology file: the longest gap between
//! two acknowledged writes during a switchover (floor: the servers' own write window, from
//! read_only on the old master to writable on the new one, as promote reports it), the first
//! acknowledged write on the new master after a failover's `promote` started, and the
//! acknowledged writes lost. Then, in the same run, the same switchover behind p3: a HAProxy
//! configured as the guides do (`option mysql-check`, `inter 1s fall 3`, the master first and
//! the target as first backup), which only follows its own health checks, so the old master
//! must be stopped for it to move. `RUNS` runs of each (default 5).

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

/// The servers' own write window a promote reports ("writes blocked for X ms").
fn blocked_ms(out: &str) -> Option<f64> {
    let i = out.find("writes blocked for ")?;
    out[i + 19..].split(' ').next()?.parse().ok()
}

fn wait_healthy(net: &NetnsHosts) {
    wait_for("a healthy cluster", Duration::from_secs(60), || {
        net.run(&["status"]).status.success()
    });
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The next free id of app.TABLE on the master `m`.
fn next_id(net: &NetnsHosts, m: usize, table: &str) -> u64 {
    net.h(m)
        .sql(&format!("SELECT COALESCE(MAX(id), 0) + 1 FROM app.{table}"))
        .parse()
        .expect("an id")
}

/// What one writer saw around `t0`, for the per-run line.
fn timeline(w: &Writes, t0: Instant) -> String {
    let before = w.acked.len() - w.acked_after(t0);
    format!(
        "{} acknowledged before, {} after, {} errors, longest gap {:.1} ms starting {:+.1} ms from the promote",
        before,
        w.acked_after(t0),
        w.errors,
        ms(w.max_gap),
        w.gap_from
            .map(|g| if g >= t0 { ms(g - t0) } else { -ms(t0 - g) })
            .unwrap_or(f64::NAN)
    )
}

/// p3's HAProxy as the guides configure it, the master `m` first and `next` first backup.
fn guide_haproxy(net: &NetnsHosts, m: usize, next: usize) {
    let line = |k: usize, backup: bool| {
        format!(
            "\tserver h{k} {}:3306 check inter 1s fall 3 rise 2{}\n",
            net.h(k).addr,
            if backup { " backup" } else { "" }
        )
    };
    let mut servers = line(m, false) + &line(next, true);
    for k in 1..=3 {
        if k != m && k != next {
            servers.push_str(&line(k, true));
        }
    }
    let cfg = format!(
        "\nlisten guide\n\tbind *:{WRITER_PORT}\n\tmode tcp\n\toption tcplog\n\toption tcpka\n\toption mysql-check user haproxy_check\n\tbalance leastconn\n{servers}"
    );
    let p3 = net.p(3);
    p3.sh("[ -e /etc/haproxy/haproxy.cfg.orig ] || cp /etc/haproxy/haproxy.cfg /etc/haproxy/haproxy.cfg.orig; cp /etc/haproxy/haproxy.cfg.orig /etc/haproxy/haproxy.cfg");
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

/// Switchovers and failovers behind proxy `p` (`kind`) alone in the file; the rows.
fn endpoint_runs(
    net: &NetnsHosts,
    base: &str,
    m: &mut usize,
    k: usize,
    kind: &str,
    runs: usize,
) -> f64 {
    let p = &net.p(k).addr;
    let proxies = format!(
        "proxies:\n  p{k}: {{ address: {p}, kind: {kind}, writer: {WRITER_PORT}, reader: {READER_PORT} }}\n"
    );
    let hosts_now = net.topology_text();
    let hosts_now = hosts_now
        .split("proxies:\n")
        .next()
        .unwrap_or(base)
        .to_string();
    std::fs::write(&net.file, format!("{hosts_now}{proxies}")).expect("topology file");
    run_ok(net, &["init"]);
    let table = format!("seq_{kind}");
    let limit = Duration::from_secs(120);
    let (mut gaps, mut blocked, mut lost) = (vec![], vec![], 0usize);
    for i in 0..runs {
        wait_healthy(net);
        let t = *m % 3 + 1;
        let w = Writer::start_from(
            p,
            WRITER_PORT,
            &table,
            next_id(net, *m, &table),
            limit,
            u64::MAX,
        );
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        let out = run_ok(net, &["promote", &format!("h{t}"), "--yes"]);
        w.wait_more(100, Duration::from_secs(30));
        let wr = w.stop();
        assert!(wr.acked_after(t0) > 0, "no write after the switchover");
        let l = lost_on(&wr, net.h(t), &table).len();
        lost += l;
        gaps.push(ms(wr.max_gap));
        blocked.push(blocked_ms(&out).unwrap_or(f64::NAN));
        eprintln!(
            "bench: {kind} switchover {i} h{m} -> h{t}: {}; servers' write window {:.1} ms; {l} lost",
            timeline(&wr, t0),
            blocked[i]
        );
        *m = t;
    }
    let gap = median(gaps);
    row(
        &format!("switchover behind {kind} (repltool): longest gap between acknowledged writes, ms (target < 100; floor: the servers' own write window)"),
        gap,
        runs,
        Some(median(blocked)),
    );
    let (mut first, mut flost) = (vec![], 0usize);
    for i in 0..runs {
        wait_healthy(net);
        let mut t = *m % 3 + 1;
        let w = Writer::start_from(
            p,
            WRITER_PORT,
            &table,
            next_id(net, *m, &table),
            limit,
            u64::MAX,
        );
        std::thread::sleep(Duration::from_millis(500));
        net.h(*m).crash_server();
        let mut t0 = Instant::now();
        let out = net.run(&["promote", &format!("h{t}"), "--yes"]);
        if !out.status.success() {
            // The slaves stopped at different places and repltool refuses the one behind
            // (it would lose writes): promote the one it names, as an operator would.
            let err = String::from_utf8_lossy(&out.stderr);
            let best = err
                .split("Promote h")
                .nth(1)
                .and_then(|r| r.chars().next())
                .and_then(|c| c.to_digit(10))
                .unwrap_or_else(|| panic!("promote h{t}: {}", show(&out)));
            eprintln!("bench: h{t} is behind; promoting h{best}, which repltool names");
            t = best as usize;
            t0 = Instant::now();
            run_ok(net, &["promote", &format!("h{t}"), "--yes"]);
        }
        w.wait_more(100, Duration::from_secs(30));
        let wr = w.stop();
        first.push(wr.first_after(t0).map(|a| ms(a - t0)).unwrap_or(f64::NAN));
        let l = lost_on(&wr, net.h(t), &table).len();
        flost += l;
        eprintln!(
            "bench: {kind} failover {i} h{m} -> h{t}: first write {:.1} ms after the promote started; {}; {l} lost",
            first[i],
            timeline(&wr, t0)
        );
        // The dead master back: `init` rejoins it under the new one.
        let out = net
            .h(*m)
            .sh_with("service mariadb start", None, Duration::from_secs(60));
        assert!(out.status.success(), "{}", show(&out));
        run_ok(net, &["init"]);
        *m = t;
    }
    row(
        &format!("failover behind {kind}: first acknowledged write on the new master after `promote` started, ms (target < 1000)"),
        median(first),
        runs,
        None,
    );
    row(
        &format!("{kind}: acknowledged writes lost, switchovers + failovers, all runs (target 0)"),
        (lost + flost) as f64,
        runs,
        None,
    );
    gap
}

#[test]
#[ignore = "benchmark driver: bash bench/run.sh proxy"]
fn bench_proxy_endpoints() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let net = NetnsHosts::start_with_proxies(&[Flavor::System; 3], 3);
    let base = net.topology_text();
    run_ok(&net, &["init"]);
    net.h(1).sql(&format!(
        "CREATE DATABASE app; CREATE TABLE app.seq_haproxy (id BIGINT PRIMARY KEY); \
         CREATE TABLE app.seq_nginx (id BIGINT PRIMARY KEY); CREATE TABLE app.seq_guide (id BIGINT PRIMARY KEY); \
         CREATE USER '{APP_USER}'@'{NET}.%' IDENTIFIED BY '{APP_PASSWORD}'; \
         GRANT SELECT, INSERT ON app.* TO '{APP_USER}'@'{NET}.%'; \
         CREATE USER 'haproxy_check'@'{}';",
        net.p(3).addr
    ));
    let mut m = 1usize;
    let ours = endpoint_runs(&net, &base, &mut m, 1, "haproxy", runs);
    endpoint_runs(&net, &base, &mut m, 2, "nginx", runs);

    // The same switchover behind the guides' HAProxy (p3), which only follows its checks: the
    // old master must be stopped for it to move. No `proxies:` in the file for these runs.
    let hosts_now = net.topology_text();
    let hosts_now = hosts_now
        .split("proxies:\n")
        .next()
        .unwrap_or(&base)
        .to_string();
    std::fs::write(&net.file, &hosts_now).expect("topology file");
    let p3 = net.p(3).addr.clone();
    let limit = Duration::from_secs(120);
    let (mut gaps, mut lost) = (vec![], 0usize);
    for i in 0..runs {
        wait_healthy(&net);
        let t = m % 3 + 1;
        guide_haproxy(&net, m, t);
        let w = Writer::start_from(
            &p3,
            WRITER_PORT,
            "seq_guide",
            next_id(&net, m, "seq_guide"),
            limit,
            u64::MAX,
        );
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
            || lands_on(&p3, WRITER_PORT) == Ok(sid),
        );
        // The application writes again (its attempts through the dead server time out first).
        w.wait_more(100, Duration::from_secs(30));
        let g = w.stop();
        let l = lost_on(&g, net.h(t), "seq_guide").len();
        lost += l;
        gaps.push(ms(g.max_gap));
        eprintln!(
            "bench: guides' HAProxy switchover {i} h{m} -> h{t} (old master stopped): {}; {l} lost",
            timeline(&g, t0)
        );
        // The old master started again (it already replicates from the new one).
        let out = net
            .h(m)
            .sh_with("service mariadb start", None, Duration::from_secs(60));
        assert!(out.status.success(), "{}", show(&out));
        m = t;
    }
    row(
        "the same switchover behind HAProxy as the guides set it (mysql-check, inter 1s fall 3; the old master stopped so it moves), longest gap, ms (floor: repltool's HAProxy gap)",
        median(gaps),
        runs,
        Some(ours),
    );
    row(
        "guides' HAProxy: acknowledged writes lost, all runs",
        lost as f64,
        runs,
        None,
    );
}
