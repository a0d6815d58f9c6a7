//! Application endpoints on the netns test hosts: the `proxies:` and `vip:` blocks written into
//! a cluster's topology file, the application's table and account, a bounded application
//! writer that connects through an endpoint (reconnecting on every error) and records every
//! acknowledged id with its time, and helpers on the proxy hosts (HAProxy's admin socket,
//! daemons stopped by their pid file, never by name).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

use super::netns::{NetnsHosts, NsHost, NET};

/// The VIP keepalived moves between the proxies (in the harness's subnet).
pub fn vip() -> String {
    format!("{NET}.100")
}

pub const APP_USER: &str = "app";
pub const APP_PASSWORD: &str = "app-Pw-7";
pub const WRITER_PORT: u16 = 3306;
pub const READER_PORT: u16 = 3307;

/// Append `proxies:` (every proxy host of `net`, of `kind`, writer 3306 and reader 3307) and,
/// with `vip`, a `vip:` block to the topology file.
pub fn add_proxies(net: &NetnsHosts, kind: &str, vip_too: bool) {
    let mut text = net.topology_text();
    text.push_str(&proxies_yaml(net, kind, vip_too));
    std::fs::write(&net.file, text).expect("topology file");
}

/// The `proxies:` block (and with `vip_too` the `vip:` block) [`add_proxies`] appends, for a
/// topology file of another shape (Galera, `watch:`).
pub fn proxies_yaml(net: &NetnsHosts, kind: &str, vip_too: bool) -> String {
    let mut y = String::from("proxies:\n");
    for p in &net.proxies {
        y.push_str(&format!(
            "  {}: {{ address: {}, kind: {kind}, writer: {WRITER_PORT}, reader: {READER_PORT} }}\n",
            p.name, p.addr
        ));
    }
    if vip_too {
        y.push_str(&format!(
            "vip:\n  address: {}/24\n  interface: eth0\n",
            vip()
        ));
    }
    y
}

/// The application's database, table and account (from the proxies' addresses), created on
/// the master `m` and waited for on every database host (bare hosts have no server).
pub fn app_schema(net: &NetnsHosts, m: usize) {
    net.h(m).sql(&format!(
        "CREATE DATABASE IF NOT EXISTS app; CREATE TABLE app.seq (id BIGINT PRIMARY KEY); \
         CREATE USER '{APP_USER}'@'{NET}.%' IDENTIFIED BY '{APP_PASSWORD}'; \
         GRANT SELECT, INSERT ON app.* TO '{APP_USER}'@'{NET}.%';"
    ));
    for h in net.hosts.iter().filter(|h| !h.bare) {
        h.wait_sql(
            &format!("SELECT COUNT(*) FROM mysql.user WHERE User = '{APP_USER}'"),
            "1",
            Duration::from_secs(20),
        );
    }
}

/// A connection as the application makes it.
pub fn app_conn(addr: &str, port: u16, timeout: Duration) -> Result<mysql::Conn, mysql::Error> {
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some(addr))
        .tcp_port(port)
        .user(Some(APP_USER))
        .pass(Some(APP_PASSWORD))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(timeout))
        .read_timeout(Some(timeout))
        .write_timeout(Some(timeout));
    mysql::Conn::new(opts)
}

/// The `@@server_id` a new connection through `addr:port` lands on.
pub fn lands_on(addr: &str, port: u16) -> Result<u32, String> {
    let mut c = app_conn(addr, port, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    c.query_first::<u32, _>("SELECT @@server_id")
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no row".to_string())
}

/// The server_id of host K.
pub fn server_id(net: &NetnsHosts, k: usize) -> u32 {
    net.h(k)
        .sql("SELECT @@server_id")
        .parse()
        .expect("server_id")
}

/// What an application writer saw.
#[derive(Debug, Default)]
pub struct Writes {
    /// Every acknowledged id, with when.
    pub acked: Vec<(u64, Instant)>,
    pub errors: u64,
    /// The longest time between two acknowledgements, and when it started.
    pub max_gap: Duration,
    pub gap_from: Option<Instant>,
}

impl Writes {
    pub fn ids(&self) -> BTreeSet<u64> {
        self.acked.iter().map(|(i, _)| *i).collect()
    }
    /// The first acknowledgement at or after `t`.
    pub fn first_after(&self, t: Instant) -> Option<Instant> {
        self.acked.iter().map(|(_, a)| *a).find(|a| *a >= t)
    }
    pub fn acked_after(&self, t: Instant) -> usize {
        self.acked.iter().filter(|(_, a)| *a >= t).count()
    }
}

/// An application inserting ids 1, 2, 3... into app.seq through `addr:port`, reconnecting on
/// every error, for at most `limit` and `count` ids.
pub struct Writer {
    stop: Arc<AtomicBool>,
    /// Acknowledged so far (live, for waiting on progress).
    count: Arc<std::sync::atomic::AtomicU64>,
    handle: Option<JoinHandle<Writes>>,
}

impl Writer {
    pub fn start(addr: &str, port: u16, limit: Duration, count: u64) -> Writer {
        Writer::start_into(addr, port, "seq", limit, count)
    }

    /// [`Writer::start`] into table `app.TABLE` (`id BIGINT PRIMARY KEY`).
    pub fn start_into(addr: &str, port: u16, table: &str, limit: Duration, count: u64) -> Writer {
        Writer::start_from(addr, port, table, 1, limit, count)
    }

    /// [`Writer::start_into`] with ids from `first` on.
    pub fn start_from(
        addr: &str,
        port: u16,
        table: &str,
        first: u64,
        limit: Duration,
        count: u64,
    ) -> Writer {
        let table = table.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let count_live = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = count_live.clone();
        let addr = addr.to_string();
        let handle = std::thread::spawn(move || {
            let start = Instant::now();
            let mut w = Writes::default();
            let mut conn: Option<mysql::Conn> = None;
            let mut next = first;
            let mut last: Option<Instant> = None;
            while !flag.load(Ordering::Relaxed)
                && start.elapsed() < limit
                && next < first.saturating_add(count)
            {
                if conn.is_none() {
                    conn = app_conn(&addr, port, Duration::from_secs(2)).ok();
                    if conn.is_none() {
                        w.errors += 1;
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                }
                let r = conn
                    .as_mut()
                    .map(|c| c.query_drop(format!("INSERT INTO app.{table} (id) VALUES ({next})")));
                let ok = match r {
                    Some(Ok(())) => true,
                    // An earlier attempt whose answer was lost did commit: the row is there.
                    Some(Err(mysql::Error::MySqlError(e))) if e.code == 1062 => true,
                    _ => false,
                };
                if ok {
                    let now = Instant::now();
                    if let Some(l) = last {
                        if now - l > w.max_gap {
                            w.max_gap = now - l;
                            w.gap_from = Some(l);
                        }
                    }
                    last = Some(now);
                    w.acked.push((next, now));
                    counter.fetch_add(1, Ordering::Relaxed);
                    next += 1;
                } else {
                    w.errors += 1;
                    conn = None;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            w
        });
        Writer {
            stop,
            count: count_live,
            handle: Some(handle),
        }
    }

    /// Writes acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Wait (bounded) until `n` more writes are acknowledged than now: the application writes
    /// again.
    pub fn wait_more(&self, n: u64, within: Duration) {
        let from = self.acked();
        wait_for("acknowledged writes", within, || self.acked() >= from + n);
    }

    pub fn stop(mut self) -> Writes {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("running")
            .join()
            .expect("writer thread")
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Every id of app.seq on host K.
pub fn ids_on(h: &NsHost) -> BTreeSet<u64> {
    ids_in(h, "seq")
}

/// Every id of app.TABLE on host K.
pub fn ids_in(h: &NsHost, table: &str) -> BTreeSet<u64> {
    h.sql(&format!("SELECT id FROM app.{table}"))
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.trim().parse().expect("an id"))
        .collect()
}

/// Acknowledged ids missing from app.TABLE on `h`.
pub fn lost_on(w: &Writes, h: &NsHost, table: &str) -> Vec<u64> {
    let have = ids_in(h, table);
    w.ids().difference(&have).copied().collect()
}

/// Assert every acknowledged id is on host `h`; says how many.
pub fn all_acked_on(w: &Writes, h: &NsHost) {
    let have = ids_on(h);
    let lost: Vec<u64> = w.ids().difference(&have).copied().collect();
    assert!(
        lost.is_empty(),
        "{}: {} acknowledged write(s) missing, first {:?}",
        h.name,
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}

/// A command on HAProxy's admin socket for cluster `netns` on proxy `p`.
pub fn haproxy_socket(p: &NsHost, cmd: &str) -> String {
    p.sh(&format!(
        "printf '%s\\n' '{cmd}' | socat -t 2 stdio unix-connect:/run/haproxy/repltool-netns.sock"
    ))
}

/// The pid in a pid file on host `p` (None: no file).
pub fn pid_in(p: &NsHost, file: &str) -> Option<i32> {
    let out = p.sh(&format!("cat {file} 2>/dev/null | head -n 1 || true"));
    out.trim().parse().ok()
}

/// SIGKILL to the process a pid file names on host `p` (its own PID namespace), and wait
/// until it is gone.
pub fn kill_pidfile(p: &NsHost, file: &str) {
    let pid = pid_in(p, file).unwrap_or_else(|| panic!("{}: no pid in {file}", p.name));
    p.sh(&format!(
        "kill -9 {pid}; i=0; while kill -0 {pid} 2>/dev/null; do i=$((i+1)); [ $i -lt 200 ] || exit 1; sleep 0.05; done"
    ));
}

/// Whether host `p` holds `addr` on an interface.
pub fn holds(p: &NsHost, addr: &str) -> bool {
    p.sh("ip -o addr show")
        .lines()
        .any(|l| l.contains(&format!(" {addr}/")))
}

/// Wait until `f` is true (bounded); how long it took.
pub fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    loop {
        if f() {
            return t.elapsed();
        }
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
