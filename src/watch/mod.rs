//! `repltool watch`: observe every host about once a second, detect a dead master holistically
//! (`detect`), and recover it automatically with the same plan as a manual failover
//! (`plan::promote` + `promote::exec`), under the cluster's etcd lock (`coord`, `etcd`) so that
//! any number of watchers, and people running `promote` or `init`, never act at once. Without
//! etcd (down, or in minority) it keeps observing and says so, and never acts: nothing healthy
//! is ever demoted because etcd is unavailable.
//!
//! Output: one line per event on stderr (or JSON lines on stdout with `--format json`), and a
//! Prometheus text endpoint with `--metrics ADDR`.

pub mod coord;
pub mod detect;
pub mod etcd;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use serde_json::json;

use crate::error::problem;
use crate::flavor::Flavor;
use crate::observe::{replica_status_from_columns, IoThread};
use crate::plan::promote::{plan_promote, rank, Fence, Mode, PlanOptions, PromoteFacts, Step};
use crate::topology::{Host, Topology};
use crate::transport::sql::{reach_of, SqlConn};
use crate::transport::HostSession;

use coord::{now_ms, Coordinator, Holder, Intent, Lock, LockToken, Recovery, Writer};
use detect::{judge, MasterProbe, Round, Verdict, Witness};

/// Bound on every etcd call.
const ETCD_TIMEOUT: Duration = Duration::from_millis(1500);

/// How `repltool watch` runs.
pub struct WatchOptions {
    pub once: bool,
    pub json: bool,
    pub metrics: Option<String>,
    pub ack: bool,
    pub id: Option<String>,
    /// Bound on every wait of a recovery.
    pub timeout: Duration,
    /// Lag (seconds) above which a slave is left out of the proxies' reader endpoints.
    pub max_lag: u64,
}

/// This process's name in etcd records: `<machine>:<pid>` unless `--id` says otherwise.
fn machine() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn default_id() -> String {
    format!("{}:{}", machine(), std::process::id())
}

/// A coordinator for the file's cluster, connected to its etcd.
pub fn connect(topo: &Topology) -> Result<Coordinator> {
    let w = topo
        .watch
        .as_ref()
        .ok_or_else(|| anyhow!("{}: no `watch:` block", topo.file.display()))?;
    let store = etcd::EtcdStore::connect(&w.etcd, ETCD_TIMEOUT)?;
    let mut c = Coordinator::new(Box::new(store), &w.prefix, &topo.name, w.lock_ttl);
    c.check()?;
    Ok(c)
}

/// The etcd lock a person's `promote` or `init` holds for its whole run (with `watch:`).
pub struct CommandLock {
    coord: Coordinator,
    token: LockToken,
}

impl Drop for CommandLock {
    fn drop(&mut self) {
        self.coord.unlock(&self.token);
    }
}

/// With `watch:`: take the cluster's etcd lock for a command a person runs, so that it never
/// runs while a watcher recovers the cluster. A watcher holding it: refuse, naming it. etcd
/// unreachable: say so and go on (watchers do not act without etcd, so nothing can race).
pub fn lock_for_command(topo: &Topology) -> Result<Option<CommandLock>> {
    if topo.watch.is_none() {
        return Ok(None);
    }
    let action: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .take(2)
        .collect();
    let me = Holder {
        id: default_id(),
        pid: std::process::id(),
        machine: machine(),
        action: format!("repltool {} (a person)", action.join(" ")),
        since_ms: now_ms(),
    };
    let taken = connect(topo).and_then(|mut c| Ok((c.try_lock(&me)?, c)));
    match taken {
        Ok((Lock::Held(token), coord)) => Ok(Some(CommandLock { coord, token })),
        Ok((Lock::Busy(h), _)) => Err(problem(format!(
            "{}: the cluster's etcd lock is held by {} on {} ({}, for {} s): a watcher is \
             recovering the cluster or another command runs. Wait for it (`repltool status` shows \
             the recoveries); nothing was changed",
            topo.name,
            h.id,
            h.machine,
            h.action,
            now_ms().saturating_sub(h.since_ms) / 1000
        ))),
        Err(e) => {
            crate::report::say(format!(
                "warning: {e:#}: the watchers' etcd lock is not taken (no watcher recovers \
                 without etcd, so none can act meanwhile)"
            ));
            Ok(None)
        }
    }
}

/// With `watch:`: publish `host` as the cluster's writer after a person's promote or init
/// (compare-and-swap on the revision read), so that watchers follow it. A line to show.
pub fn publish_after_command(topo: &Topology, host: &str, how: &str) -> Option<String> {
    topo.watch.as_ref()?;
    let r = (|| -> Result<String> {
        let mut c = connect(topo)?;
        let cur = c.writer()?;
        if cur.as_ref().is_some_and(|(w, _)| w.host == host) {
            return Ok(format!("etcd already names {host} the writer"));
        }
        let rev = cur.map(|(_, r)| r).unwrap_or(0);
        let w = Writer {
            host: host.to_string(),
            since_ms: now_ms(),
            by: default_id(),
            how: how.to_string(),
        };
        if c.publish_writer(&w, rev)? {
            Ok(format!("published {host} as the writer in etcd"))
        } else {
            bail!("the writer key changed meanwhile")
        }
    })();
    Some(match r {
        Ok(m) => m,
        Err(e) => format!(
            "warning: could not publish {host} as the writer in etcd ({e:#}); the watchers adopt \
             it once `repltool watch` publishes it"
        ),
    })
}

/// For `repltool status`: the writer etcd names and the recoveries it recorded.
pub fn status_section(topo: &Topology) -> Option<(String, serde_json::Value)> {
    let w = topo.watch.as_ref()?;
    let got = connect(topo).and_then(|mut c| {
        let writer = c.writer()?;
        let history = c.history()?;
        let blocking = c.blocking(now_ms(), w.anti_flap)?;
        let lock = c.lock_holder()?;
        Ok((writer, history, blocking, lock))
    });
    let mut text = String::new();
    let value = match got {
        Err(e) => {
            text.push_str(&format!(
                "watch: etcd unavailable ({e:#}): no automatic failover until it is back\n"
            ));
            json!({ "etcd": false, "error": format!("{e:#}") })
        }
        Ok((writer, history, blocking, lock)) => {
            match &writer {
                Some((wr, _)) => text.push_str(&format!(
                    "watch: etcd names {} the writer ({} by {}, {})\n",
                    wr.host,
                    wr.how,
                    wr.by,
                    ago(wr.since_ms)
                )),
                None => text.push_str("watch: no writer published in etcd yet\n"),
            }
            if let Some(h) = &lock {
                text.push_str(&format!(
                    "watch: cluster lock held by {} ({})\n",
                    h.id, h.action
                ));
            }
            if let Some(b) = &blocking {
                text.push_str(&format!(
                    "watch: automatic recovery blocked (anti-flap) after the recovery {} -> {} {}; \
                     `repltool watch --ack` allows the next one\n",
                    b.failed,
                    b.new_master,
                    ago(b.at_ms)
                ));
            }
            if !history.is_empty() {
                text.push_str("recoveries (newest last):\n");
                for r in history.iter().rev().take(10).rev() {
                    text.push_str(&format!("  {}\n", recovery_line(r)));
                }
            }
            json!({
                "etcd": true,
                "writer": writer.map(|(w, rev)| json!({"host": w.host, "how": w.how, "by": w.by, "since_ms": w.since_ms, "revision": rev})),
                "lock": lock,
                "blocked": blocking.is_some(),
                "recoveries": history,
            })
        }
    };
    Some((text, value))
}

fn ago(ms: u64) -> String {
    let s = now_ms().saturating_sub(ms) / 1000;
    if s < 120 {
        format!("{s} s ago")
    } else if s < 7200 {
        format!("{} min ago", s / 60)
    } else {
        format!("{} h ago", s / 3600)
    }
}

fn recovery_line(r: &Recovery) -> String {
    let lost = match r.lost {
        Some(n) => format!("{n} lost"),
        None => "loss unknown (the dead master's host did not answer)".into(),
    };
    format!(
        "{} {} {} -> {}: {} by {} in {:.2}s; {lost}, {} recovered{}",
        iso(r.at_ms),
        "failover",
        r.failed,
        if r.new_master.is_empty() {
            "-"
        } else {
            &r.new_master
        },
        r.outcome,
        r.watcher,
        r.took_ms as f64 / 1000.0,
        r.salvaged,
        if r.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.detail)
        }
    )
}

/// `2026-11-30T14:00:00.123Z`.
fn iso(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// One line per event: stderr text, or JSON lines on stdout.
struct Events {
    json: bool,
    cluster: String,
    id: String,
}

impl Events {
    fn emit(&self, kind: &str, host: Option<&str>, msg: &str, extra: serde_json::Value) {
        let at = now_ms();
        if self.json {
            let mut v = json!({
                "time": iso(at), "cluster": self.cluster, "watcher": self.id,
                "event": kind, "message": msg,
            });
            if let Some(h) = host {
                v["host"] = json!(h);
            }
            if let (Some(o), serde_json::Value::Object(e)) = (v.as_object_mut(), extra) {
                o.extend(e);
            }
            crate::report::outln(v.to_string());
        } else {
            let h = host.map(|h| format!(" {h}")).unwrap_or_default();
            crate::report::say(format!("{} {} {kind}{h}: {msg}", iso(at), self.cluster));
        }
    }
}

/// What the watcher keeps per host between rounds: its shell and an open SQL connection.
#[derive(Default)]
struct Probe {
    session: Option<Box<dyn HostSession>>,
    conn: Option<(Box<dyn SqlConn>, Flavor)>,
}

/// What one host showed this round (for the metrics and the witnesses).
#[derive(Debug, Clone, Default)]
struct Seen {
    answered: bool,
    error: String,
    read_only: Option<bool>,
    /// (master address, port, io, sql, lag) when it replicates.
    replica: Option<(String, u16, IoThread, bool, Option<u64>)>,
    /// The greeting probe from this host's shell to the master.
    reaches_master: Option<bool>,
}

struct Metrics {
    text: Mutex<String>,
}

fn serve_metrics(addr: &str, m: Arc<Metrics>) -> Result<()> {
    let l = std::net::TcpListener::bind(addr)
        .map_err(|e| problem(format!("--metrics {addr}: cannot listen: {e}")))?;
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let body = m.text.lock().map(|t| t.clone()).unwrap_or_default();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(())
}

/// The file's topology with `new_master` made the master the way promote rewrites the file;
/// the text and the topology.
fn retarget(text: &str, topo: &Topology, new_master: &str) -> Result<(String, Topology)> {
    let t = topo.host(new_master).ok_or_else(|| {
        anyhow!("etcd names {new_master} the writer, but the file has no such host")
    })?;
    let Some(old_name) = t.master.clone() else {
        return Ok((text.to_string(), topo.clone()));
    };
    let old = topo
        .host(&old_name)
        .ok_or_else(|| anyhow!("{old_name}: not in the file"))?;
    let pair = t.role == crate::topology::Role::MasterMaster;
    let edits = crate::plan::promote::file_edits(topo, t, old, pair);
    let new = crate::topology::rewrite::apply(text, &edits)
        .map_err(|e| anyhow!("cannot make {new_master} the master of the file's text: {e}"))?;
    let topo2 = crate::topology::load_str(&new, &topo.file, &|n| std::env::var(n).ok())?;
    Ok((new, topo2))
}

/// The host that takes writes: the file's master, or the writable member of a pair.
fn master_of(topo: &Topology) -> Result<String> {
    let ms: Vec<&Host> = topo.masters().collect();
    match ms.as_slice() {
        [m] => Ok(m.name.clone()),
        [] => {
            let w: Vec<&Host> = topo
                .hosts
                .iter()
                .filter(|h| h.role == crate::topology::Role::MasterMaster && topo.writable(h))
                .collect();
            match w.as_slice() {
                [m] => Ok(m.name.clone()),
                _ => Err(problem(format!(
                    "{}: watch needs one master (or a master-master pair with one writable member)",
                    topo.file.display()
                ))),
            }
        }
        _ => Err(problem(format!(
            "{}: watch needs one master per file; this one has {}",
            topo.file.display(),
            ms.iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The greeting probe a replica's own host runs against the master: a TCP connection to its
/// SQL port that reads the first bytes of the server's greeting, bounded to 1 s.
fn greeting_script(addr: &str, port: u16) -> String {
    let inner = format!("exec 3<>/dev/tcp/{addr}/{port} && head -c 4 <&3 | wc -c");
    format!(
        "timeout 1 bash -c {} 2>/dev/null || true",
        crate::transport::shell_quote(&inner)
    )
}

struct Watcher {
    path: PathBuf,
    text: String,
    topo: Topology,
    cfg: crate::topology::Watch,
    id: String,
    opts_timeout: Duration,
    max_lag: u64,
    coord: Option<Coordinator>,
    etcd_error: Option<String>,
    probes: BTreeMap<String, Mutex<Probe>>,
    rounds: Vec<Round>,
    last: String,
    alerted: Option<String>,
    events: Events,
    metrics: Arc<Metrics>,
    recoveries: BTreeMap<String, u64>,
    last_seen: HashMap<String, Seen>,
}

/// `repltool watch`.
pub fn run(path: &Path, opts: &WatchOptions) -> Result<i32> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::error::input(format!("{}: cannot read: {e}", path.display())))?;
    let topo = crate::topology::load(path)?;
    let cfg = topo.watch.clone().ok_or_else(|| {
        crate::error::input(format!(
            "{}: no `watch:` block; add one with the etcd endpoints (see README, Automatic failover)",
            path.display()
        ))
    })?;
    let id = opts.id.clone().unwrap_or_else(default_id);
    if opts.ack {
        let mut c = connect(&topo).map_err(|e| problem(format!("{e:#}: cannot acknowledge")))?;
        let a = c.ack(&id)?;
        crate::report::outln(format!(
            "{}: acknowledged at {} by {}: the next dead master is recovered automatically again",
            topo.name,
            iso(a.at_ms),
            a.by
        ));
        return Ok(0);
    }
    master_of(&topo)?;
    let metrics = Arc::new(Metrics {
        text: Mutex::new(String::new()),
    });
    if let Some(addr) = &opts.metrics {
        serve_metrics(addr, metrics.clone())?;
    }
    let mut w = Watcher {
        path: path.to_path_buf(),
        text,
        probes: topo
            .hosts
            .iter()
            .map(|h| (h.name.clone(), Mutex::new(Probe::default())))
            .collect(),
        events: Events {
            json: opts.json,
            cluster: topo.name.clone(),
            id: id.clone(),
        },
        topo,
        cfg,
        id,
        opts_timeout: opts.timeout,
        max_lag: opts.max_lag,
        coord: None,
        etcd_error: None,
        rounds: Vec::new(),
        last: String::new(),
        alerted: None,
        metrics,
        recoveries: BTreeMap::new(),
        last_seen: HashMap::new(),
    };
    w.events.emit(
        "start",
        None,
        &format!(
            "watching {} hosts every {:?} (etcd {})",
            w.topo.hosts.len(),
            w.cfg.interval,
            w.cfg.etcd.join(", ")
        ),
        json!({}),
    );
    loop {
        let started = Instant::now();
        let verdict = w.round()?;
        if opts.once {
            // One round, its confirmation included.
            let mut v = verdict;
            while let Verdict::Suspect { .. } = v {
                std::thread::sleep(w.cfg.confirm.min(Duration::from_millis(500)));
                v = w.round()?;
            }
            return Ok(match v {
                Verdict::Healthy { read_only: false } => 0,
                _ => 1,
            });
        }
        let pause = match verdict {
            // Re-observe soon: a death is confirmed within the window, not a whole interval later.
            Verdict::Suspect { .. } => w.cfg.confirm.min(w.cfg.interval),
            _ => w.cfg.interval,
        };
        if let Some(rest) = pause.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

impl Watcher {
    fn probe_timeout(&self) -> Duration {
        self.cfg
            .interval
            .clamp(Duration::from_millis(500), Duration::from_secs(2))
    }

    /// Connect to etcd when not connected; adopt the writer it names. Errors are kept, never
    /// returned: without etcd the watcher observes and says so.
    fn sync_etcd(&mut self) {
        if self.coord.is_none() {
            match connect(&self.topo) {
                Ok(c) => self.coord = Some(c),
                Err(e) => {
                    self.etcd_down(format!("{e:#}"));
                    return;
                }
            }
        }
        let got = self.coord.as_mut().map(|c| c.writer());
        match got {
            Some(Ok(Some((w, _)))) => {
                self.etcd_up();
                let cur = master_of(&self.topo).unwrap_or_default();
                if w.host != cur {
                    match retarget(&self.text, &self.topo, &w.host) {
                        Ok((text, topo)) => {
                            self.events.emit(
                                "adopt",
                                Some(&w.host),
                                &format!(
                                    "etcd names {} the writer ({} by {}): watching it as the master instead of {cur}",
                                    w.host, w.how, w.by
                                ),
                                json!({"writer": w.host}),
                            );
                            self.text = text;
                            self.topo = topo;
                            self.rounds.clear();
                            self.rewrite_file();
                        }
                        Err(e) => self.alert(&format!("cannot follow etcd's writer: {e:#}")),
                    }
                }
            }
            Some(Ok(None)) => {
                self.etcd_up();
            }
            Some(Err(e)) => self.etcd_down(format!("{e:#}")),
            None => {}
        }
    }

    fn etcd_up(&mut self) {
        if let Some(was) = self.etcd_error.take() {
            self.events.emit(
                "etcd-up",
                None,
                &format!("etcd answers again (was: {was}): automatic failover enabled"),
                json!({}),
            );
        }
    }

    fn etcd_down(&mut self, why: String) {
        if self.etcd_error.is_none() {
            self.events.emit(
                "etcd-down",
                None,
                &format!(
                    "etcd unavailable ({why}): NO automatic failover (it cannot be coordinated); \
                     monitoring goes on and nothing is demoted"
                ),
                json!({"error": why}),
            );
        }
        self.coord = None;
        self.etcd_error = Some(why);
    }

    /// A problem a person must see: said once until it changes.
    fn alert(&mut self, msg: &str) {
        if self.alerted.as_deref() != Some(msg) {
            self.events.emit("alert", None, msg, json!({}));
            self.alerted = Some(msg.to_string());
        }
    }

    /// Rewrite the local topology file to the current master (as promote does), keeping the
    /// previous version as `.bak`. A failure is said, not fatal.
    fn rewrite_file(&mut self) {
        let r = (|| -> Result<()> {
            let cur = std::fs::read_to_string(&self.path)?;
            if cur == self.text {
                return Ok(());
            }
            let bak = PathBuf::from(format!("{}.bak", self.path.display()));
            std::fs::write(&bak, &cur)?;
            let dir = self
                .path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            tmp.write_all(self.text.as_bytes())?;
            if let Ok(m) = std::fs::metadata(&self.path) {
                let _ = tmp.as_file().set_permissions(m.permissions());
            }
            tmp.persist(&self.path)
                .map_err(|e| anyhow!("{}", e.error))?;
            Ok(())
        })();
        if let Err(e) = r {
            self.alert(&format!(
                "could not rewrite {} to the new master: {e:#}; edit it by hand",
                self.path.display()
            ));
        }
    }

    /// Observe once; judge; act on a confirmed death. The verdict.
    fn round(&mut self) -> Result<Verdict> {
        self.sync_etcd();
        let master = master_of(&self.topo)?;
        let now = self.observe(&master);
        let verdict = judge(&self.rounds, &now, self.cfg.confirm);
        self.rounds.push(now);
        if self.rounds.len() > 30 {
            self.rounds.remove(0);
        }
        self.report(&master, &verdict);
        if let Verdict::Dead { since_ms, .. } = &verdict {
            self.recover(&master, *since_ms);
        }
        self.render_metrics(&master, &verdict);
        Ok(verdict)
    }

    fn report(&mut self, master: &str, v: &Verdict) {
        let line = match v {
            Verdict::Healthy { read_only: false } => format!("{master} answers and takes writes"),
            Verdict::Healthy { read_only: true } => format!(
                "{master} answers but is read-only (restarted fenced?): writes are refused until \
                 `repltool init` or `promote` makes it writable; no automatic failover of a master \
                 that answers"
            ),
            Verdict::CutOff { by, error } => format!(
                "this watcher cannot reach {master} ({error}) but {} still reach(es) it: a \
                 partition on the watcher's side, no failover",
                by.join(", ")
            ),
            Verdict::Suspect { error, .. } => {
                format!("{master} does not answer ({error}) and no replica reaches it: confirming")
            }
            Verdict::Dead {
                error,
                witnesses,
                since_ms,
                ..
            } => format!(
                "{master} is dead: {error}; {} lost it too (for {} ms)",
                witnesses.join(", "),
                now_ms().saturating_sub(*since_ms)
            ),
            Verdict::Isolated { error } => format!(
                "this watcher reaches neither {master} ({error}) nor any of its replicas: it \
                 cannot tell a dead master from its own isolation; no failover"
            ),
        };
        let key = format!("{}:{}", v.name(), master);
        if key != self.last {
            self.events
                .emit(v.name(), Some(master), &line, json!({"verdict": v.name()}));
            self.last = key;
        }
    }

    /// One round of observation: every host at once (SQL on an open connection, opened again
    /// when lost); when the master does not answer, every replica's host probes it too.
    fn observe(&mut self, master: &str) -> Round {
        let pt = self.probe_timeout();
        let topo = &self.topo;
        let names: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
        let probes = &self.probes;
        let seen: Vec<Seen> = crate::par::each(&names, |n| {
            let h = topo.host(n).ok_or_else(|| anyhow!("{n}?"))?;
            let m = probes.get(n).ok_or_else(|| anyhow!("{n}?"))?;
            let mut p = m.lock().unwrap_or_else(|e| e.into_inner());
            Ok(probe_host(&mut p, h, pt))
        })
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|e| Seen {
                error: format!("{e:#}"),
                ..Seen::default()
            })
        })
        .collect();
        let mut seen: HashMap<String, Seen> = names.into_iter().zip(seen).collect();
        let mh = topo.host(master).cloned();
        let mseen = seen.get(master).cloned().unwrap_or_default();
        let probe = if mseen.answered {
            MasterProbe::Answered {
                read_only: mseen.read_only.unwrap_or(false),
            }
        } else {
            MasterProbe::Failed {
                reach: None,
                error: mseen.error.clone(),
            }
        };
        let replicas: Vec<String> = topo
            .hosts
            .iter()
            .filter(|h| h.master.as_deref() == Some(master))
            .map(|h| h.name.clone())
            .collect();
        if !mseen.answered {
            if let Some(mh) = &mh {
                let script = greeting_script(&mh.address, mh.mysql.port);
                let got = crate::par::each(&replicas, |n| {
                    let m = probes.get(n).ok_or_else(|| anyhow!("{n}?"))?;
                    let mut p = m.lock().unwrap_or_else(|e| e.into_inner());
                    let Some(s) = p.session.as_mut() else {
                        return Ok(None);
                    };
                    match s.run(&script, None, false, Duration::from_secs(3)) {
                        Ok(out) => Ok(Some(
                            out.stdout_str().trim().parse::<u32>().unwrap_or(0) > 0,
                        )),
                        Err(_) => {
                            p.session = None;
                            p.conn = None;
                            Ok(None)
                        }
                    }
                });
                for (n, r) in replicas.iter().zip(got) {
                    if let Some(s) = seen.get_mut(n) {
                        s.reaches_master = r.ok().flatten();
                    }
                }
            }
        }
        let witnesses = replicas
            .iter()
            .map(|n| {
                let s = seen.get(n).cloned().unwrap_or_default();
                let io_connected = match (&s.replica, &mh) {
                    (Some((addr, port, io, _, _)), Some(mh))
                        if *addr == mh.address && *port == mh.mysql.port =>
                    {
                        Some(*io == IoThread::Yes)
                    }
                    _ => None,
                };
                Witness {
                    host: n.clone(),
                    answered: s.answered,
                    io_connected,
                    host_reaches: s.reaches_master,
                }
            })
            .collect();
        self.last_seen = seen;
        Round {
            at_ms: now_ms(),
            master: master.to_string(),
            probe,
            witnesses,
        }
    }

    fn render_metrics(&self, master: &str, v: &Verdict) {
        let c = &self.topo.name;
        let mut t = String::new();
        t.push_str("# HELP repltool_host_reachable The server answered the watcher's last probe.\n# TYPE repltool_host_reachable gauge\n");
        for h in &self.topo.hosts {
            let s = self.last_seen.get(&h.name).cloned().unwrap_or_default();
            t.push_str(&format!(
                "repltool_host_reachable{{cluster=\"{c}\",host=\"{}\"}} {}\n",
                h.name,
                u8::from(s.answered)
            ));
        }
        t.push_str("# HELP repltool_replica_io_running The replica's IO thread is connected (1), connecting (0.5) or stopped (0).\n# TYPE repltool_replica_io_running gauge\n");
        let mut sql = String::from("# HELP repltool_replica_sql_running The replica's SQL thread runs.\n# TYPE repltool_replica_sql_running gauge\n");
        let mut lag = String::from("# HELP repltool_replica_lag_seconds Seconds_Behind_Master.\n# TYPE repltool_replica_lag_seconds gauge\n");
        for h in &self.topo.hosts {
            if let Some(Seen {
                replica: Some((_, _, io, s, l)),
                ..
            }) = self.last_seen.get(&h.name)
            {
                let iov = match io {
                    IoThread::Yes => "1",
                    IoThread::Connecting => "0.5",
                    IoThread::No => "0",
                };
                t.push_str(&format!(
                    "repltool_replica_io_running{{cluster=\"{c}\",host=\"{}\"}} {iov}\n",
                    h.name
                ));
                sql.push_str(&format!(
                    "repltool_replica_sql_running{{cluster=\"{c}\",host=\"{}\"}} {}\n",
                    h.name,
                    u8::from(*s)
                ));
                if let Some(l) = l {
                    lag.push_str(&format!(
                        "repltool_replica_lag_seconds{{cluster=\"{c}\",host=\"{}\"}} {l}\n",
                        h.name
                    ));
                }
            }
        }
        t.push_str(&sql);
        t.push_str(&lag);
        t.push_str(&format!(
            "# HELP repltool_master The host watched as the master.\n# TYPE repltool_master gauge\nrepltool_master{{cluster=\"{c}\",host=\"{master}\"}} 1\n"
        ));
        t.push_str(&format!(
            "# HELP repltool_watch_verdict The last verdict about the master.\n# TYPE repltool_watch_verdict gauge\nrepltool_watch_verdict{{cluster=\"{c}\",verdict=\"{}\"}} 1\n",
            v.name()
        ));
        t.push_str(&format!(
            "# HELP repltool_etcd_up etcd answered with a quorum in the last round.\n# TYPE repltool_etcd_up gauge\nrepltool_etcd_up{{cluster=\"{c}\"}} {}\n",
            u8::from(self.etcd_error.is_none() && self.coord.is_some())
        ));
        t.push_str("# HELP repltool_recoveries_total Automatic recoveries attempted by this watcher, by outcome.\n# TYPE repltool_recoveries_total counter\n");
        for outcome in ["done", "refused", "failed", "interrupted"] {
            t.push_str(&format!(
                "repltool_recoveries_total{{cluster=\"{c}\",outcome=\"{outcome}\"}} {}\n",
                self.recoveries.get(outcome).copied().unwrap_or(0)
            ));
        }
        if let Ok(mut g) = self.metrics.text.lock() {
            *g = t;
        }
    }

    fn count(&mut self, outcome: &str) {
        *self.recoveries.entry(outcome.to_string()).or_insert(0) += 1;
    }

    /// Recover a confirmed dead master, if etcd allows it and this watcher wins the lock.
    fn recover(&mut self, dead: &str, since_ms: u64) {
        let Some(mut coord) = self.coord.take() else {
            self.alert(&format!(
                "{dead} is dead, but etcd is unavailable ({}): no automatic failover without \
                 coordination. Recover by hand (`repltool promote HOST`) or bring etcd back",
                self.etcd_error.clone().unwrap_or_default()
            ));
            return;
        };
        let r = self.recover_with(&mut coord, dead, since_ms);
        match r {
            Ok(()) => self.coord = Some(coord),
            Err(e) => {
                // An etcd error: reconnect next round.
                self.etcd_down(format!("{e:#}"));
            }
        }
    }

    fn recover_with(&mut self, coord: &mut Coordinator, dead: &str, since_ms: u64) -> Result<()> {
        // Another watcher already replaced it: follow (next round), neither block nor act.
        if let Some((w, _)) = coord.writer()? {
            if w.host != dead {
                self.events.emit(
                    "already-recovered",
                    Some(&w.host),
                    &format!("{} already replaced {dead} (by {})", w.host, w.by),
                    json!({}),
                );
                return Ok(());
            }
        }
        if let Some(b) = coord.blocking(now_ms(), self.cfg.anti_flap)? {
            self.alert(&format!(
                "{dead} is dead, but automatic recovery is blocked: {} -> {} was recovered {} \
                 (anti_flap {:?}). A person decides: `repltool promote HOST`, or `repltool watch \
                 --ack -f {}` to allow the next automatic recovery",
                b.failed,
                b.new_master,
                ago(b.at_ms),
                self.cfg.anti_flap,
                self.path.display()
            ));
            return Ok(());
        }
        let me = Holder {
            id: self.id.clone(),
            pid: std::process::id(),
            machine: machine(),
            action: format!("recovery of {dead}"),
            since_ms: now_ms(),
        };
        let token = match coord.try_lock(&me)? {
            Lock::Busy(h) => {
                self.alert(&format!(
                    "{dead} is dead; the cluster lock is held by {} ({}): that one acts, this \
                     watcher takes over if it dies",
                    h.id, h.action
                ));
                return Ok(());
            }
            Lock::Held(t) => t,
        };
        let res = self.recover_locked(coord, &token, dead, since_ms);
        coord.unlock(&token);
        res
    }

    fn recover_locked(
        &mut self,
        coord: &mut Coordinator,
        token: &LockToken,
        dead: &str,
        since_ms: u64,
    ) -> Result<()> {
        let t0 = Instant::now();
        // Someone recovered it while we waited for the lock: follow.
        let writer = coord.writer()?;
        if let Some((w, _)) = &writer {
            if w.host != dead {
                self.events.emit(
                    "already-recovered",
                    Some(&w.host),
                    &format!("{} already replaced {dead} (by {})", w.host, w.by),
                    json!({}),
                );
                return Ok(());
            }
        }
        let rev = writer.map(|(_, r)| r).unwrap_or(0);
        let intent = coord.intent()?.filter(|(i, _)| i.from == dead);
        self.events.emit(
            "recovering",
            Some(dead),
            &match &intent {
                Some((i, _)) => format!(
                    "cluster lock taken; finishing the recovery {} -> {} that {} started",
                    i.from, i.to, i.by
                ),
                None => "cluster lock taken; re-observing every host".to_string(),
            },
            json!({}),
        );
        let pt = self.probe_timeout();
        // The proxies (`proxies:`) with the hosts: the recovery moves the writer endpoint.
        let ((sessions, facts, states), (proxy_sessions, proxies_down)) = std::thread::scope(|s| {
            let p = s.spawn(|| crate::promote::observe_proxies(&self.topo, pt));
            let o = crate::promote::observe(&self.topo, pt);
            (o, p.join().unwrap_or_default())
        });
        let old = self
            .topo
            .host(dead)
            .ok_or_else(|| anyhow!("{dead}: not in the file"))?
            .clone();
        let target = match &intent {
            Some((i, _)) => i.to.clone(),
            None => {
                let mut positions = BTreeMap::new();
                for n in &old.slaves {
                    let f = facts.get(n).and_then(|f| f.sql.as_ref());
                    if let Some(p) = f.and_then(crate::plan::promote::received) {
                        positions.insert(n.clone(), p);
                    }
                }
                if let Some(peer) = &old.peer {
                    positions.entry(peer.clone()).or_insert(("".into(), 0));
                }
                let any = positions.keys().next().cloned();
                match any.and_then(|a| rank(dead, &a, &positions)) {
                    Some(r) => r.best,
                    None => {
                        let msg = format!(
                            "{dead} is dead but no replica that answers has a position from it: \
                             no candidate. A person must decide"
                        );
                        self.refused(coord, dead, "", &msg, t0, since_ms)?;
                        return Ok(());
                    }
                }
            }
        };
        let pf = PromoteFacts {
            facts: &facts,
            hosts: &states,
            proxies_down: &proxies_down,
        };
        let plan = match plan_promote(
            &self.topo,
            &pf,
            &target,
            PlanOptions {
                force: false,
                timeout_secs: self.opts_timeout.as_secs(),
            },
        ) {
            Ok(Some(p)) => p,
            Ok(None) => {
                return Ok(());
            }
            Err(e) => {
                let msg = format!(
                    "{dead} is dead but the failover to {target} is refused: {e:#}. Automatic \
                     recovery never loses data nor fails over a master that answers: a person \
                     must decide (`repltool promote HOST --force` after reading the above)"
                );
                self.refused(coord, dead, &target, &msg, t0, since_ms)?;
                return Ok(());
            }
        };
        if !matches!(
            plan.mode,
            Mode::Failover | Mode::PairFailover | Mode::Resume
        ) {
            self.events.emit(
                "recovered-by-itself",
                Some(dead),
                &format!("{dead} answers again ({}): no failover", plan.mode.as_str()),
                json!({}),
            );
            return Ok(());
        }
        coord.set_intent(&Intent {
            from: dead.to_string(),
            to: target.clone(),
            by: self.id.clone(),
            since_ms: now_ms(),
        })?;
        let lost_known = !matches!(plan.fence, Some(Fence::Unreachable));
        if let Some(cmd) = self.cfg.hooks.pre_failover.clone() {
            if let Err(e) = run_hook(&cmd, &self.topo.name, dead, &target, None, "pre") {
                let msg =
                    format!("pre_failover hook failed: {e:#}; recovery of {dead} not started");
                self.record(coord, dead, &target, "failed", None, 0, t0, since_ms, &msg)?;
                self.count("failed");
                self.alert(&msg);
                coord.clear_intent()?;
                return Ok(());
            }
        }
        self.events.emit(
            "failover",
            Some(&target),
            &format!("{} {dead} -> {target}: {}", plan.mode.as_str(), plan.reason),
            json!({"from": dead, "to": target}),
        );
        let progress = crate::report::Progress::new(true);
        let hosts: Vec<String> = self
            .topo
            .hosts
            .iter()
            .filter(|h| facts.get(&h.name).is_some_and(|f| f.sql.is_some()))
            .map(|h| h.name.clone())
            .collect();
        let cm = Mutex::new(&mut *coord);
        let check = |s: &Step| -> Result<()> {
            let mut c = cm.lock().unwrap_or_else(|e| e.into_inner());
            if !c.holds(token) {
                bail!(
                    "this watcher lost its etcd lock before the step {:?}: stopping here (another \
                     watcher finishes the recovery)",
                    s.act
                );
            }
            crate::failpoint::hit("watch-before-step");
            Ok(())
        };
        let mut ex = crate::promote::exec::Exec::new(
            &self.topo,
            &sessions,
            self.opts_timeout,
            &progress,
            &self.path,
            &hosts,
        )
        .with_before_step(&check)
        .with_etcd_lock_held()
        .with_proxies(&proxy_sessions, self.max_lag);
        if intent.as_ref().is_some_and(|(i, _)| i.by != self.id) {
            ex = ex.with_stale_lock_takeover();
        }
        let result = ex.run(&plan);
        let salvaged = ex.salvaged();
        drop(ex);
        let coord = cm.into_inner().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(summary) => {
                let lost = lost_known.then_some(0);
                let published = coord.publish_writer(
                    &Writer {
                        host: target.clone(),
                        since_ms: now_ms(),
                        by: self.id.clone(),
                        how: "failover".into(),
                    },
                    rev,
                );
                let detail = match &published {
                    Ok(true) => summary.clone(),
                    Ok(false) => format!(
                        "{summary}; WARNING: the writer key changed during the recovery (another \
                         actor): check `repltool status`"
                    ),
                    Err(e) => format!("{summary}; WARNING: could not publish the writer: {e:#}"),
                };
                self.record(
                    coord, dead, &target, "done", lost, salvaged, t0, since_ms, &detail,
                )?;
                coord.clear_intent()?;
                self.count("done");
                self.events.emit(
                    "recovered",
                    Some(&target),
                    &format!(
                        "{target} is the master ({:.2}s after the death was first seen); {}; lost: {}",
                        now_ms().saturating_sub(since_ms) as f64 / 1000.0,
                        detail,
                        match lost {
                            Some(n) => n.to_string(),
                            None => "unknown (the dead master's host did not answer)".into(),
                        }
                    ),
                    json!({"from": dead, "to": target, "lost": lost, "salvaged": salvaged}),
                );
                if let Ok((text, topo)) = retarget(&self.text, &self.topo, &target) {
                    self.text = text;
                    self.topo = topo;
                    self.rounds.clear();
                    self.rewrite_file();
                }
                self.alerted = None;
                if let Some(cmd) = self.cfg.hooks.post_failover.clone() {
                    if let Err(e) = run_hook(&cmd, &self.topo.name, dead, &target, lost, "post") {
                        self.alert(&format!("post_failover hook failed: {e:#}"));
                    }
                }
            }
            Err(e) => {
                let lost_lock = format!("{e:#}").contains("lost its etcd lock");
                let outcome = if lost_lock { "interrupted" } else { "failed" };
                let changes = progress.changes();
                let msg = format!(
                    "recovery {dead} -> {target} {outcome}: {e:#}{}",
                    if changes.is_empty() {
                        "; nothing was changed".to_string()
                    } else {
                        format!("; already changed: {}", changes.join("; "))
                    }
                );
                // The same failure round after round is one record and one alert.
                if self.alerted.as_deref() != Some(msg.as_str()) {
                    self.record(
                        coord, dead, &target, outcome, None, salvaged, t0, since_ms, &msg,
                    )?;
                    self.count(outcome);
                }
                self.alert(&msg);
            }
        }
        Ok(())
    }

    fn refused(
        &mut self,
        coord: &mut Coordinator,
        dead: &str,
        target: &str,
        msg: &str,
        t0: Instant,
        since_ms: u64,
    ) -> Result<()> {
        if self.alerted.as_deref() != Some(msg) {
            self.record(coord, dead, target, "refused", None, 0, t0, since_ms, msg)?;
            self.count("refused");
        }
        self.alert(msg);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        coord: &mut Coordinator,
        dead: &str,
        target: &str,
        outcome: &str,
        lost: Option<u64>,
        salvaged: u64,
        t0: Instant,
        since_ms: u64,
        detail: &str,
    ) -> Result<()> {
        let _ = t0;
        coord.record(&Recovery {
            at_ms: now_ms(),
            watcher: self.id.clone(),
            failed: dead.to_string(),
            new_master: target.to_string(),
            outcome: outcome.to_string(),
            lost,
            salvaged,
            took_ms: now_ms().saturating_sub(since_ms),
            detail: detail.to_string(),
        })
    }
}

/// Probe one host: its server (an open connection, opened again when lost: read_only and the
/// replica status), opening its shell first when it has none.
fn probe_host(p: &mut Probe, h: &Host, timeout: Duration) -> Seen {
    let mut seen = Seen::default();
    if p.session.is_none() {
        let mut h2 = h.clone();
        if let crate::topology::Transport::Ssh(ssh) = &mut h2.transport {
            ssh.connect_timeout = ssh.connect_timeout.min(timeout);
        }
        match crate::transport::connect(&h2) {
            Ok(s) => p.session = Some(s),
            Err(e) => {
                seen.error = format!("{e:#}");
                return seen;
            }
        }
    }
    let query = |c: &mut dyn SqlConn,
                 f: &Flavor|
     -> Result<(bool, Option<crate::observe::ReplicaStatus>)> {
        let ro = c.one(&f.global_var("read_only")?)?.as_deref() == Some("1");
        let rs = c
            .query(&f.show_replica_status())?
            .into_iter()
            .next()
            .map(|cols| replica_status_from_columns(&cols))
            .transpose()?;
        Ok((ro, rs))
    };
    let mut got = None;
    if let Some((c, f)) = p.conn.as_mut() {
        match query(c.as_mut(), f) {
            Ok(v) => got = Some(v),
            Err(_) => p.conn = None,
        }
    }
    if got.is_none() {
        let Some(s) = p.session.as_mut() else {
            return seen;
        };
        let opened = s.sql_connect(h, timeout, timeout).and_then(|mut c| {
            let f = c.flavor()?;
            Ok((c, f))
        });
        match opened {
            Ok((mut c, f)) => match query(c.as_mut(), &f) {
                Ok(v) => {
                    got = Some(v);
                    p.conn = Some((c, f));
                }
                Err(e) => seen.error = format!("{e:#}"),
            },
            Err(e) => {
                seen.error = match reach_of(&e) {
                    Some(r) => format!("{e:#} ({r:?})"),
                    None => format!("{e:#}"),
                };
                // A shell that cannot even forward any more: open it again next round.
                if s.endpoint_error(h.mysql.port).is_some() || reach_of(&e).is_none() {
                    let alive = s
                        .run("true", None, false, timeout)
                        .map(|o| o.ok())
                        .unwrap_or(false);
                    if !alive {
                        p.session = None;
                    }
                }
            }
        }
    }
    if let Some((ro, rs)) = got {
        seen.answered = true;
        seen.read_only = Some(ro);
        seen.replica = rs.map(|r| {
            (
                r.master_host,
                r.master_port,
                r.io_running.unwrap_or_default(),
                r.sql_running,
                r.seconds_behind_master,
            )
        });
    }
    seen
}

/// Run a hook with `sh -c` on this machine, the recovery in its environment, bounded to 60 s.
fn run_hook(
    cmd: &str,
    cluster: &str,
    failed: &str,
    new_master: &str,
    lost: Option<u64>,
    phase: &str,
) -> Result<()> {
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("REPLTOOL_CLUSTER", cluster)
        .env("REPLTOOL_FAILED_HOST", failed)
        .env("REPLTOOL_NEW_MASTER", new_master)
        .env(
            "REPLTOOL_LOST_EVENTS",
            lost.map(|n| n.to_string())
                .unwrap_or_else(|| "unknown".into()),
        )
        .env("REPLTOOL_PHASE", phase)
        .stdin(std::process::Stdio::null())
        .spawn()
        .map_err(|e| anyhow!("`{cmd}`: cannot run: {e}"))?;
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(st) = child.try_wait()? {
            if st.success() {
                return Ok(());
            }
            bail!("`{cmd}` exited with {st}");
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            bail!("`{cmd}` did not finish within 60 s (killed)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_780_000_000_123), "2026-05-28T20:26:40.123Z");
    }

    #[test]
    fn the_greeting_probe_is_bounded_and_quoted() {
        let s = greeting_script("10.0.0.1", 3306);
        assert!(s.starts_with("timeout 1 bash -c '"), "{s}");
        assert!(s.contains("/dev/tcp/10.0.0.1/3306"), "{s}");
    }

    #[test]
    fn hooks_get_the_recovery_in_their_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let cmd = format!(
            "echo \"$REPLTOOL_FAILED_HOST $REPLTOOL_NEW_MASTER $REPLTOOL_LOST_EVENTS $REPLTOOL_PHASE\" > {}",
            out.display()
        );
        run_hook(&cmd, "shop", "db1", "db2", Some(0), "post").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "db1 db2 0 post"
        );
        run_hook(&cmd, "shop", "db1", "db2", None, "pre").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "db1 db2 unknown pre"
        );
        let e = run_hook("exit 3", "shop", "db1", "db2", None, "pre").unwrap_err();
        assert!(format!("{e:#}").contains("exit"), "{e:#}");
    }

    #[test]
    fn a_file_is_retargeted_as_promote_rewrites_it() {
        let text = "name: t\ndefaults:\n  mysql: { password: x }\nreplication: { password: y }\nhosts:\n  db1: { address: 10.0.0.1 }\n  db2: { address: 10.0.0.2, master: db1 }\n  db3: { address: 10.0.0.3, master: db1 }\n";
        let path = PathBuf::from("/tmp/t.yaml");
        let topo = crate::topology::load_str(text, &path, &|_| Some("/root".into())).unwrap();
        let (new, t2) = retarget(text, &topo, "db2").unwrap();
        assert_eq!(master_of(&t2).unwrap(), "db2");
        assert_eq!(t2.host("db1").unwrap().master.as_deref(), Some("db2"));
        assert_eq!(t2.host("db3").unwrap().master.as_deref(), Some("db2"));
        // Idempotent, and a name etcd gives that the file lacks is an error.
        let (again, _) = retarget(&new, &t2, "db2").unwrap();
        assert_eq!(again, new);
        assert!(retarget(&new, &t2, "db9").is_err());
    }
}
