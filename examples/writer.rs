//! A bounded application writer for the benchmark: inserts sequential ids into `app.seq` on
//! whichever of the given servers accepts writes (read_only refuses the plain `app` account),
//! for at most SECS seconds or COUNT ids, then prints one JSON line: how many ids were
//! acknowledged, the last one, the longest gap between two acknowledgements, and when it was,
//! the failed attempts and the last one's reason. An id whose retry finds it already there
//! (duplicate key: its first attempt committed but the answer was lost to a killed master)
//! counts as acknowledged.
//!
//!   cargo run --release --example writer -- SECS COUNT PORT [PORT...]
//!
//! Connects to 127.0.0.1 only, as user `app` / password `app-pw` (the bench creates it).

use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: writer SECS COUNT PORT [PORT...]");
        std::process::exit(2);
    }
    let secs: f64 = args[0].parse().unwrap_or(3.0);
    let count: u64 = args[1].parse().unwrap_or(1_000_000);
    let ports: Vec<u16> = args[2..].iter().filter_map(|p| p.parse().ok()).collect();
    let connect = |port: u16| -> Option<mysql::Conn> {
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(port)
            .user(Some("app"))
            .pass(Some("app-pw"))
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(2)))
            .read_timeout(Some(Duration::from_secs(10)))
            .write_timeout(Some(Duration::from_secs(10)));
        mysql::Conn::new(opts).ok()
    };
    let start = Instant::now();
    let limit = Duration::from_secs_f64(secs);
    let (mut acked, mut next, mut cur) = (0u64, 1u64, 0usize);
    let mut conn: Option<mysql::Conn> = None;
    let mut last_ack: Option<Instant> = None;
    // Failed attempts (a read-only server, a dead one) and the last one's reason, for the log.
    let (mut errors, mut last_error) = (0u64, String::new());
    let (mut max_gap, mut gap_at) = (Duration::ZERO, 0.0f64);
    while next <= count && start.elapsed() < limit {
        if conn.is_none() {
            conn = connect(ports[cur]);
        }
        let ok = match conn.as_mut() {
            Some(c) => match c.query_drop(format!("INSERT INTO app.seq (id) VALUES ({next})")) {
                Ok(()) => true,
                // An earlier attempt of this id committed but its answer was lost (the master
                // was killed between its commit and its reply): the row is there.
                Err(mysql::Error::MySqlError(e)) if e.code == 1062 => true,
                Err(e) => {
                    last_error = format!("port {}: {e}", ports[cur]);
                    false
                }
            },
            None => {
                last_error = format!("port {}: cannot connect", ports[cur]);
                false
            }
        };
        if !ok {
            errors += 1;
        }
        if ok {
            let now = Instant::now();
            if let Some(l) = last_ack {
                if now - l > max_gap {
                    max_gap = now - l;
                    gap_at = (l - start).as_secs_f64();
                }
            }
            last_ack = Some(now);
            acked += 1;
            next += 1;
        } else {
            conn = None;
            cur = (cur + 1) % ports.len();
        }
    }
    println!(
        "{{\"acked\": {acked}, \"last\": {}, \"max_gap_ms\": {:.1}, \"gap_at_s\": {gap_at:.3}, \"errors\": {errors}, \"last_error\": {:?}, \"secs\": {:.3}}}",
        next - 1,
        max_gap.as_secs_f64() * 1000.0,
        last_error,
        start.elapsed().as_secs_f64()
    );
}
