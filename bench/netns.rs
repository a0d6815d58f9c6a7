//! Benchmarks on network-namespace test hosts (the live tests' harness, tests/it/support):
//! servers that cannot run on this machine directly (MySQL 9.7 and MariaDB 11.8 from
//! debootstrapped roots), each reached over its own sshd the way users run repltool. Started by
//! `bash bench/run.sh mysql97` (which runs `cargo bench --bench netns -- mysql97`); prints
//! markdown rows `| what | median (s) | runs | floor (s) | ratio |` on stdout, progress on
//! stderr. Every cluster is torn down at the end of its run.

#[path = "../tests/it/support/mod.rs"]
mod support;

mod mysql97big;

use std::process::Output;
use std::time::{Duration, Instant};

use support::cluster::Writer;
use support::netns::{show, Flavor, NetnsHosts};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn row(what: &str, m: f64, runs: usize, floor: Option<f64>) {
    match floor {
        Some(f) => println!("| {what} | {m:.3} | {runs} | {f:.3} | {:.1} |", m / f),
        None => println!("| {what} | {m:.3} | {runs} | - | - |"),
    }
}

fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what} failed:\n{}", show(o));
}

/// Seconds for `f`.
/// With BENCH_LOGS=DIR: keep a command's output (its progress lines carry timings).
fn keep(o: &Output, name: &str) {
    if let Some(dir) = std::env::var_os("BENCH_LOGS") {
        let name = name.replace(' ', "-");
        let text = format!(
            "{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let _ = std::fs::write(std::path::Path::new(&dir).join(format!("{name}.txt")), text);
    }
}

fn timed<R>(f: impl FnOnce() -> R) -> (f64, R) {
    let t = Instant::now();
    let r = f();
    (t.elapsed().as_secs_f64(), r)
}

/// One host's server restarted with its service command, and all of them at once: the floor of
/// an init that restarts every server.
fn restart_floors(net: &NetnsHosts, service: &str) -> (f64, f64) {
    let (one, out) = timed(|| {
        net.h(1).sh_with(
            &format!("service {service} restart"),
            None,
            Duration::from_secs(120),
        )
    });
    ok(&out, "restart");
    let (all, outs) = timed(|| {
        std::thread::scope(|s| {
            let hs: Vec<_> = net
                .hosts
                .iter()
                .map(|h| {
                    s.spawn(move || {
                        h.sh_with(
                            &format!("service {service} restart"),
                            None,
                            Duration::from_secs(120),
                        )
                    })
                })
                .collect();
            hs.into_iter()
                .map(|j| j.join().expect("restart"))
                .collect::<Vec<_>>()
        })
    });
    for o in &outs {
        ok(o, "restart");
    }
    (one, all)
}

fn app_account(net: &NetnsHosts) {
    net.h(1)
        .sql("CREATE DATABASE app; CREATE TABLE app.seq (id BIGINT PRIMARY KEY) ENGINE=InnoDB");
    for h in &net.hosts {
        h.sql(
            "SET SESSION sql_log_bin = 0; \
             CREATE USER IF NOT EXISTS 'app'@'10.231.77.1' IDENTIFIED BY 'app-pw'; \
             GRANT SELECT, INSERT ON app.* TO 'app'@'10.231.77.1'",
        );
    }
}

/// init 1+3, a switchover under write load (every acknowledged write checked on every server)
/// and a failover after SIGKILL, on four hosts of `flavor`.
fn cluster_rows(flavor: Flavor, label: &str, runs: usize) {
    let service = flavor.service();
    let (mut init, mut floor1, mut floor4, mut sw, mut gap, mut fo) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 1..=runs {
        eprintln!("{label}: run {i}/{runs}");
        let net = NetnsHosts::start_with(&[flavor; 4]);
        let (one, all) = restart_floors(&net, service);
        floor1.push(one);
        floor4.push(all);
        app_account(&net);
        let (t, out) = timed(|| net.run(&["init"]));
        ok(&out, "init");
        init.push(t);
        let w = Writer::start_at(
            (1..=4).map(|k| (net.h(k).addr.clone(), 3306)).collect(),
            100_000_000,
            Duration::from_secs(4),
        );
        std::thread::sleep(Duration::from_secs(1));
        let (t, out) = timed(|| net.run(&["promote", "h2", "--yes"]));
        ok(&out, "switchover");
        keep(&out, &format!("{label}-switchover-{i}"));
        sw.push(t);
        let r = w.finish();
        gap.push(r.max_gap.as_secs_f64() * 1000.0);
        let last = r.acked.last().copied().unwrap_or(0);
        for k in 1..=4 {
            net.h(k).wait_sql(
                &format!("SELECT COUNT(*) FROM app.seq WHERE id <= {last}"),
                &r.acked.len().to_string(),
                Duration::from_secs(30),
            );
        }
        eprintln!(
            "  switchover: {} writes acknowledged, longest gap {:.1} ms, all on every server",
            r.acked.len(),
            r.max_gap.as_secs_f64() * 1000.0
        );
        net.h(2).crash_server();
        let (t, out) = timed(|| net.run(&["promote", "h3", "--yes"]));
        ok(&out, "failover");
        keep(&out, &format!("{label}-failover-{i}"));
        fo.push(t);
    }
    row(
        &format!("{label}: `init` 1+3 over SSH (floor: one `service {service} restart`)"),
        median(init.clone()),
        runs,
        Some(median(floor1)),
    );
    row(
        &format!("{label}: `init` 1+3 over SSH (floor: all 4 servers restarted at once)"),
        median(init),
        runs,
        Some(median(floor4)),
    );
    row(
        &format!("{label}: `promote` switchover 1+3 under write load (target < 0.5 s)"),
        median(sw),
        runs,
        None,
    );
    row(
        &format!("{label}: switchover, longest gap between acknowledged writes, ms (0 lost)"),
        median(gap),
        runs,
        None,
    );
    row(
        &format!(
            "{label}: `promote` failover 1+3, SIGKILLed master, salvage checked (target < 1 s)"
        ),
        median(fo),
        runs,
        None,
    );
}

fn main() {
    // `cargo bench` passes `--bench`; the sections are the other arguments.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    for s in &args {
        match s.as_str() {
            "mysql97" => cluster_rows(Flavor::MySQL97, "MySQL 9.7", runs),
            "mariadb118" => cluster_rows(Flavor::MariaDB118, "MariaDB 11.8", runs),
            // The machine's own MariaDB on the same kind of hosts: the MariaDB reference for
            // the rows above (the `lab`/`init`/`promote` sections run on loopback).
            "mariadb1011" => cluster_rows(Flavor::System, "MariaDB 10.11", runs),
            // Big data: one run (RUNS does not apply); BIG_MB MiB on the master, default 256.
            "mysql97big" => mysql97big::rows(
                std::env::var("BIG_MB")
                    .ok()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(256),
            ),
            other => {
                eprintln!(
                    "bench netns: unknown section {other} (known: mysql97, mariadb118, mariadb1011, mysql97big)"
                );
                std::process::exit(2);
            }
        }
    }
}
