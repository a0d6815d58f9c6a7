//! Runs a [`PromotePlan`]: the only code that changes servers during a promote. Steps run in
//! order (a step's hosts in parallel); each re-checks its guard just before acting. While the
//! old master is frozen and the target not yet writable, any failure undoes the freeze (the
//! old master writable again, read back and reported) so a failed switchover changes nothing.
//! Every change is journaled; a failure lists what was already changed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::error::problem;
use crate::execute::{master_status, replica_status, tail_log};
use crate::flavor::{ChangeMaster, Flavor, PromotionRecord, WaitOutcome};
use crate::lock::ClusterLock;
use crate::observe::{self, column};
use crate::plan::init::change_master_to;
use crate::plan::promote::{file_key, rank, Act, Coord, Fence, Mode, PromotePlan, Step};
use crate::report::Progress;
use crate::topology::{Host, Topology};
use crate::transport::sql::SqlConn;
use crate::transport::{shell_quote, Sessions};

/// One open connection per host for the whole run (the old master's read lock lives on its
/// connection), each usable from one thread at a time.
type Conns = HashMap<String, Mutex<(Box<dyn SqlConn>, Flavor)>>;

/// The executor's connections by host, with each server's flavor.
pub type OpenConns = Vec<(String, (Box<dyn SqlConn>, Flavor))>;

/// The read timeout of the executor's connections: the run's longest wait (a MASTER_POS_WAIT
/// of `timeout`) and a margin.
pub fn read_timeout(timeout: Duration) -> Duration {
    timeout.saturating_add(Duration::from_secs(30))
}

/// Open one connection to every server in `hosts` at once (connecting through an SSH forward
/// costs more than the statements), with a read timeout long enough for the longest wait of a
/// promote. A host that does not answer has none.
pub fn open_conns(
    topo: &Topology,
    sessions: &Sessions,
    hosts: &[String],
    timeout: Duration,
) -> OpenConns {
    let opened = crate::par::each(hosts, |n| {
        let h = topo
            .host(n)
            .ok_or_else(|| anyhow!("{n}: not in the file"))?;
        let m = sessions.get(n).ok_or_else(|| anyhow!("{n}: no session"))?;
        let mut c = {
            let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
            s.sql_connect(
                h,
                timeout.min(Duration::from_secs(5)),
                read_timeout(timeout),
            )?
        };
        let f = c.flavor()?;
        Ok((c, f))
    });
    hosts
        .iter()
        .zip(opened)
        .filter_map(|(n, r)| r.ok().map(|c| (n.clone(), c)))
        .collect()
}

/// A check run before every step (the watcher: do I still hold the etcd lock?).
pub type BeforeStep<'a> = &'a (dyn Fn(&Step) -> Result<()> + Sync);

/// What earlier steps learned, for later ones.
#[derive(Default)]
struct State {
    /// The old master's coordinates under its read lock (switchover) or read_only (pair).
    frozen: Option<Coord>,
    /// The old master's GTID position at `frozen` (MariaDB), for the promotion record.
    frozen_gtid: String,
    /// MySQL slaves whose applier checkpoint period this run lowered, with the previous value.
    checkpoints: BTreeMap<String, u64>,
    /// Failover: where each slave stopped in the old master's log.
    stopped: BTreeMap<String, Coord>,
    /// Failover: the target stopped behind another slave and the old master's log on disk
    /// gives it the difference: every slave is caught up to here (else to the target).
    lift_to: Option<Coord>,
    /// The target's own coordinates when it stopped replicating.
    new_pos: Option<Coord>,
    /// The target's GTID position of the old master's log when it stopped replicating.
    target_gtid: String,
    /// How far the target has the old master's log (after a salvage: the end of it).
    old_end: Option<Coord>,
    salvaged: u64,
    /// The old master is frozen (read_only + lock, or read_only for the pair) by this run.
    frozen_by_us: bool,
    target_writable: bool,
    blocked_since: Option<Instant>,
    blocked: Option<Duration>,
    summary: Vec<String>,
    /// The proxies' writer endpoint was drained (or pointed at the target) by this run: an
    /// undo points it back at the old master.
    writer_moved: bool,
}

pub struct Exec<'a> {
    pub topo: &'a Topology,
    pub sessions: &'a Sessions,
    pub timeout: Duration,
    pub progress: &'a Progress,
    /// The topology file (its lock, and the rewrite).
    pub file: &'a Path,
    conns: Conns,
    state: Mutex<State>,
    lock: Mutex<Option<ClusterLock>>,
    /// Called before every step; an error stops the run there (the watcher checks it still
    /// holds its etcd lock).
    before_step: Option<BeforeStep<'a>>,
    /// The caller (the watcher) already holds the cluster's etcd lock.
    etcd_held: bool,
    /// ... and finishes another watcher's recovery: a stale server-side lock is taken over.
    steal_stale: bool,
    /// Sessions to the proxies (`proxies:`), for the writer endpoint's moves.
    proxies: Option<&'a crate::proxy::ProxySessions>,
    max_lag: u64,
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs().max(1)).unwrap_or(u32::MAX)
}

impl<'a> Exec<'a> {
    /// The executor, with a connection to every server in `hosts` ([`open_conns`]).
    pub fn new(
        topo: &'a Topology,
        sessions: &'a Sessions,
        timeout: Duration,
        progress: &'a Progress,
        file: &'a Path,
        hosts: &[String],
    ) -> Exec<'a> {
        let conns = open_conns(topo, sessions, hosts, timeout);
        Self::with_conns(topo, sessions, timeout, progress, file, hosts, conns)
    }

    /// [`Exec::new`] with connections opened beforehand ([`open_conns`], while the hosts were
    /// observed): those of `hosts` are kept, the others dropped, and a host of `hosts` without
    /// one gets it now.
    pub fn with_conns(
        topo: &'a Topology,
        sessions: &'a Sessions,
        timeout: Duration,
        progress: &'a Progress,
        file: &'a Path,
        hosts: &[String],
        mut opened: OpenConns,
    ) -> Exec<'a> {
        opened.retain(|(n, _)| hosts.contains(n));
        let missing: Vec<String> = hosts
            .iter()
            .filter(|h| !opened.iter().any(|(n, _)| n == *h))
            .cloned()
            .collect();
        opened.extend(open_conns(topo, sessions, &missing, timeout));
        let conns = opened
            .into_iter()
            .map(|(n, c)| (n, Mutex::new(c)))
            .collect();
        Exec {
            topo,
            sessions,
            timeout,
            progress,
            file,
            conns,
            state: Mutex::new(State::default()),
            lock: Mutex::new(None),
            proxies: None,
            max_lag: 60,
            before_step: None,
            etcd_held: false,
            steal_stale: false,
        }
    }

    /// `f` runs before every step; its error stops the run before that step (as a failed step
    /// does: undo, then the error).
    pub fn with_before_step(mut self, f: BeforeStep<'a>) -> Self {
        self.before_step = Some(f);
        self
    }

    /// The caller holds the cluster's etcd lock already: the Lock step takes the servers' and
    /// the file's only.
    pub fn with_etcd_lock_held(mut self) -> Self {
        self.etcd_held = true;
        self
    }

    /// With the etcd lock held, finishing the recovery another watcher started: a session that
    /// still holds a server's lock is that watcher's (paused) and is ended.
    pub fn with_stale_lock_takeover(mut self) -> Self {
        self.steal_stale = true;
        self
    }

    /// Transactions recovered from the old master's binary log on its disk.
    pub fn salvaged(&self) -> u64 {
        self.st().salvaged
    }

    /// The cluster lock, when the caller took it already (before observing).
    pub fn hold(&self, lock: Option<ClusterLock>) {
        *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = lock;
    }

    /// The proxies' sessions: the endpoint steps (`DrainWriter`, `PointWriter`,
    /// `SyncProxies`) act through them; `max_lag` judges the reader endpoints afterwards.
    pub fn with_proxies(mut self, sessions: &'a crate::proxy::ProxySessions, max_lag: u64) -> Self {
        self.proxies = Some(sessions);
        self.max_lag = max_lag;
        self
    }

    /// Move the writer endpoint of `proxies`: drain it (`to` None) or point it at `to`. In a
    /// failover a proxy that fails is reported and the promote goes on (the old master is
    /// dead or fenced; the new one must take the writes); otherwise the step fails.
    ///
    /// nginx has no runtime switch: each move is a graceful reload. Unless the old master may
    /// still take writes, nginx is not drained by a reload of its own: the reload that points
    /// it at the target ends the previous workers and their sessions instead, one reload
    /// instead of two inside the write window.
    fn move_writer(&self, plan: &PromotePlan, proxies: &[String], to: Option<&str>) -> Result<()> {
        let ps = self
            .proxies
            .ok_or_else(|| anyhow!("no sessions to the proxies"))?;
        let failover = matches!(plan.mode, Mode::Failover | Mode::PairFailover);
        // A reload of nginx's own to drain it only when its old master may still take writes
        // (a forced failover); otherwise the old master is read-only or down, and the reload
        // that points nginx at the target ends the previous workers and their sessions.
        let old_may_write = matches!(plan.fence, Some(Fence::None | Fence::StopServer));
        let moved = match to {
            None => {
                let drained: Vec<String> = proxies
                    .iter()
                    .filter(|p| {
                        old_may_write
                            || self
                                .topo
                                .proxy(p)
                                .is_some_and(|x| x.kind == crate::topology::ProxyKind::Haproxy)
                    })
                    .cloned()
                    .collect();
                crate::proxy::exec::drain_writer(self.topo, ps, &drained, self.timeout)
            }
            Some(t) => {
                crate::proxy::exec::point_writer(self.topo, ps, proxies, t, true, self.timeout)
            }
        };
        self.st().writer_moved = true;
        let mut errors = Vec::new();
        for (p, r) in moved {
            match r {
                Ok(what) => self.progress.note(&p, &what),
                Err(e) => errors.push(format!("{p}: {e:#}")),
            }
        }
        if errors.is_empty() {
            return Ok(());
        }
        if failover {
            let msg = format!(
                "the writer endpoint could not be moved on {}: run `repltool init` once it answers",
                errors.join("; ")
            );
            self.progress.record(&msg);
            self.st().summary.push(msg);
            return Ok(());
        }
        bail!("writer endpoint: {}", errors.join("; "))
    }

    /// The proxies rewritten for the topology as this promote leaves it, the reader endpoints
    /// judged on the servers as they now replicate (re-pointed slaves get a moment to report
    /// their lag).
    fn sync_proxies(&self, plan: &PromotePlan, proxies: &[String]) -> Result<()> {
        let ps = self
            .proxies
            .ok_or_else(|| anyhow!("no sessions to the proxies"))?;
        let after = crate::proxy::topology_after(self.topo, &plan.edits);
        let readers: Vec<String> = after
            .hosts
            .iter()
            .filter(|h| h.name != plan.target && self.conns.contains_key(&h.name))
            .map(|h| h.name.clone())
            .collect();
        let end = Instant::now() + Duration::from_secs(3).min(self.timeout);
        let t = self.timeout.min(Duration::from_secs(5));
        let facts = loop {
            let facts = observe::observe_all(&after, self.sessions, &[], t, false);
            let health = crate::proxy::reader_health(&after, &facts, self.max_lag);
            let ready = readers
                .iter()
                .all(|h| matches!(health.get(h), Some(Ok(()))));
            if ready || Instant::now() >= end {
                break facts;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let r = crate::proxy::exec::converge(
            &after,
            ps,
            &[],
            &facts,
            self.max_lag,
            Some(proxies),
            self.progress,
            self.timeout,
        );
        if let Err(e) = r {
            // The promote is done: the endpoints already send writes to the target.
            let msg = format!(
                "the proxies' files could not be brought up to date ({e:#}): run `repltool init`"
            );
            self.progress.record(&msg);
            self.st().summary.push(msg);
        }
        Ok(())
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `f` with the host's connection.
    fn with<R>(
        &self,
        host: &str,
        f: impl FnOnce(&mut dyn SqlConn, &Flavor) -> Result<R>,
    ) -> Result<R> {
        let m = self
            .conns
            .get(host)
            .ok_or_else(|| anyhow!("{host}: its server does not answer"))?;
        let mut g = m.lock().unwrap_or_else(|e| e.into_inner());
        let (c, fl) = &mut *g;
        f(c.as_mut(), fl).with_context(|| host.to_string())
    }

    fn host(&self, name: &str) -> Result<&'a Host> {
        self.topo
            .host(name)
            .ok_or_else(|| anyhow!("{name}: not in the file"))
    }

    /// `f` on every host at once; all errors, each with its host.
    fn each(&self, hosts: &[String], f: impl Fn(&str) -> Result<()> + Sync) -> Result<()> {
        let errors = crate::par::errors(crate::par::each(hosts, |h| f(h)));
        if errors.is_empty() {
            Ok(())
        } else {
            bail!(errors.join("; "))
        }
    }

    /// Run every step; the summary line on success.
    pub fn run(&self, plan: &PromotePlan) -> Result<String> {
        for s in &self.steps_of(plan) {
            let r = match self.before_step {
                Some(f) => f(s).and_then(|_| self.step(plan, s)),
                None => self.step(plan, s),
            };
            if let Err(e) = r {
                let refused = matches!(
                    e.downcast_ref::<crate::error::Failure>(),
                    Some(crate::error::Failure::Problem(_))
                );
                let undo = self.undo(plan);
                let mut msg = format!("{e:#}");
                if let Some(u) = undo {
                    msg.push_str(&format!("; {u}"));
                }
                if let Some(c) = self.restore_checkpoints() {
                    msg.push_str(&format!("; {c}"));
                }
                return Err(if refused { problem(msg) } else { anyhow!(msg) });
            }
        }
        if let Some(c) = self.restore_checkpoints() {
            self.st().summary.push(c);
        }
        let st = self.st();
        let mut summary = format!("{} {} -> {}", plan.mode.as_str(), plan.old, plan.target);
        if let Some(b) = st.blocked {
            summary.push_str(&format!(
                ": writes blocked for {:.1} ms (from read_only on {} to writable {})",
                b.as_secs_f64() * 1000.0,
                plan.old,
                plan.target
            ));
        }
        for s in &st.summary {
            summary.push_str("; ");
            summary.push_str(s);
        }
        Ok(summary)
    }

    /// The checkpoint periods lowered for the switchover, put back. Returns what could not be.
    fn restore_checkpoints(&self) -> Option<String> {
        let lowered = std::mem::take(&mut self.st().checkpoints);
        let mut failed = Vec::new();
        for (n, was) in lowered {
            let r = self.with(&n, |c, f| match f.set_checkpoint_period(was) {
                Some(q) => c.exec(&q),
                None => Ok(()),
            });
            if let Err(e) = r {
                failed.push(format!("{n} ({e:#})"));
            }
        }
        (!failed.is_empty()).then(|| {
            format!(
                "the applier's checkpoint period (lowered to 1 ms for the switchover) could not be put back on {}: set replica_checkpoint_period again there",
                failed.join(", ")
            )
        })
    }

    fn steps_of(&self, plan: &PromotePlan) -> Vec<Step> {
        plan.steps.clone()
    }

    /// While the old master is frozen by this run and the target is not writable: make the old
    /// master writable again and say what it really is now (read back).
    fn undo(&self, plan: &PromotePlan) -> Option<String> {
        let (frozen, writable) = {
            let st = self.st();
            (st.frozen_by_us, st.target_writable)
        };
        if !frozen || writable {
            return None;
        }
        let o = &plan.old;
        let words = plan
            .flavor(o)
            .map(|f| f.words())
            .unwrap_or_else(crate::flavor::Words::unknown);
        let endpoint = self.undo_endpoint(plan);
        let r = self.with(o, |c, f| {
            let unlock = c.exec(&f.unlock_tables());
            let ro = c.run(&f.set_read_only(false));
            let now = c.one(&f.global_var("read_only")?)?;
            Ok((unlock.err(), ro.err(), now))
        });
        self.st().frozen_by_us = false;
        let r = match r {
            Ok((None, None, Some(v))) if v == "0" => {
                format!("aborted: {o} is writable again (read back: read_only = OFF) and nothing else changed")
            }
            Ok((u, ro, now)) => format!(
                "aborted, but {o} could not be made writable again: {}{}read_only is {} now. \
                 Check it, then `{}` on {o} if it must take the writes",
                u.map(|e| format!("{}: {e:#}; ", words.unlock))
                    .unwrap_or_default(),
                ro.map(|e| format!("{e:#}; ")).unwrap_or_default(),
                now.unwrap_or_else(|| "unknown".into()),
                words.read_only_off
            ),
            Err(e) => format!(
                "aborted, but {o} could not be reached to make it writable again ({e:#}): it \
                 stays read-only until you `SET GLOBAL read_only = OFF` on it"
            ),
        };
        Some(match endpoint {
            None => r,
            Some(ep) => format!("{r}; {ep}"),
        })
    }

    /// Undo of the writer endpoint's move: pointed back at the old master, every other server
    /// out (before the old master is made writable again). What happened, when anything moved.
    fn undo_endpoint(&self, plan: &PromotePlan) -> Option<String> {
        if !std::mem::take(&mut self.st().writer_moved) {
            return None;
        }
        let ps = self.proxies?;
        let proxies: Vec<String> = plan
            .steps
            .iter()
            .find(|s| s.act == Act::PointWriter)
            .map(|s| s.hosts.clone())
            .unwrap_or_default();
        let o = plan.old.as_str();
        let mut failed = Vec::new();
        let back = crate::proxy::exec::point_writer(self.topo, ps, &proxies, o, true, self.timeout);
        for (p, r) in back {
            if let Err(e) = r {
                failed.push(format!("{p}: {e:#}"));
            }
        }
        Some(if failed.is_empty() {
            format!("the writer endpoint sends to {o} again")
        } else {
            format!(
                "the writer endpoint could not be pointed back at {o} on {}: run `repltool init`",
                failed.join("; ")
            )
        })
    }

    fn step(&self, plan: &PromotePlan, s: &Step) -> Result<()> {
        let (t, o) = (plan.target.as_str(), plan.old.as_str());
        match &s.act {
            Act::Lock => {
                let held = self
                    .lock
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_ref()
                    .map(|l| l.hosts());
                if let Some(h) = held {
                    self.progress
                        .step("lock", &format!("cluster lock held on {}", h.join(", ")));
                    return Ok(());
                }
                let hosts: Vec<String> = self.topo.hosts.iter().map(|h| h.name.clone()).collect();
                let l = ClusterLock::acquire_with(
                    self.topo,
                    Some(self.file),
                    self.sessions,
                    &hosts,
                    self.timeout.min(Duration::from_secs(5)),
                    self.etcd_held,
                    self.steal_stale,
                )?;
                self.progress.step(
                    "lock",
                    &format!("cluster lock held on {}", l.hosts().join(", ")),
                );
                *self.lock.lock().unwrap_or_else(|e| e.into_inner()) = Some(l);
                Ok(())
            }
            Act::EnsureUsers { user, replicas } => self.ensure_users(t, user, replicas),
            Act::CatchUp => {
                let old = self.host(o)?;
                let (f0, p0) = self.with(o, |c, f| {
                    let m = master_status(c, f)?;
                    Ok((m.file, m.position))
                })?;
                let secs = secs(self.timeout);
                self.each(&s.hosts, |n| {
                    self.with(n, |c, f| {
                        self.check_catching_up(n, old, o, c, f)?;
                        pos_wait(c, f, &f0, p0, secs)
                            .map_err(|e| anyhow!("{e:#} (before any lock)"))
                    })
                })
                .map_err(|e| problem(format!("{e:#}; nothing was changed")))?;
                self.progress
                    .step(t, "every slave caught up before the lock");
                Ok(())
            }
            Act::Freeze => {
                let secs = self.timeout.as_secs().max(1);
                self.st().blocked_since = Some(Instant::now());
                self.st().frozen_by_us = true;
                // A lock that cannot be had within the timeout (a long write, a table lock)
                // aborts the switchover: a refusal (exit 1), undone by the caller.
                let (coord, gtid) = self
                    .with(o, |c, f| {
                        c.exec(&f.lock_wait_timeout(secs))?;
                        c.run(&f.set_read_only(true))?;
                        c.exec(&f.flush_tables_with_read_lock())?;
                        let m = master_status(c, f)?;
                        let gtid = match f.binlog_gtid_pos(&m.file, m.position) {
                            Some(q) => c.one(&q)?.unwrap_or_default(),
                            None => String::new(),
                        };
                        Ok(((m.file, m.position), gtid))
                    })
                    .map_err(|e| problem(format!("{e:#}")))?;
                self.progress.note(
                    o,
                    &format!(
                        "read_only = ON and read lock held; writes blocked at {}:{}",
                        coord.0, coord.1
                    ),
                );
                let mut st = self.st();
                st.frozen = Some(coord);
                st.frozen_gtid = gtid;
                Ok(())
            }
            // Every slave (the pair: the target) reaches the old master's last position.
            Act::WaitFrozen | Act::PairWait => {
                let (file, pos) = self
                    .st()
                    .frozen
                    .clone()
                    .ok_or_else(|| anyhow!("the old master was not frozen"))?;
                let secs = secs(self.timeout);
                self.each(&s.hosts, |n| {
                    self.with(n, |c, f| pos_wait(c, f, &file, pos, secs))
                })
                .map_err(|e| problem(format!("{e:#}")))
            }
            Act::StopServer { .. } => self.stop_server(o),
            Act::StopIo => {
                let got = crate::par::each(&s.hosts, |n| self.wait_applied(n));
                let mut errors = Vec::new();
                for (n, r) in s.hosts.iter().zip(got) {
                    match r {
                        Ok(p) => {
                            self.progress.note(
                                n,
                                &format!(
                                    "IO thread stopped; applied {o}'s log up to {}:{}",
                                    p.0, p.1
                                ),
                            );
                            self.st().stopped.insert(n.clone(), p);
                        }
                        Err(e) => errors.push(format!("{n}: {e:#}")),
                    }
                }
                if !errors.is_empty() {
                    bail!(errors.join("; "));
                }
                Ok(())
            }
            Act::CheckRanking { force } => {
                let stopped = self.st().stopped.clone();
                let r = rank(o, t, &stopped).ok_or_else(|| anyhow!("{t} did not stop"))?;
                let disk = plan.steps.iter().any(|s| s.act == Act::Salvage);
                if let (Some(lost), true) = (&r.target_loses, disk) {
                    // The old master's log on its disk gives the target what it lacks (the
                    // disk catch-up, or the salvage by GTID): read it now, before anything
                    // changes, so a log that cannot be read refuses here.
                    let tool = self.with(t, |_, f| Ok(f.binlog_tool()))?;
                    let (tpos, bpos) = (&stopped[t], &stopped[&r.best]);
                    match self.read_old_binlog(o, tool, tpos, Some(bpos)) {
                        Ok(_) => {
                            self.st().lift_to = Some(bpos.clone());
                            self.progress.note(
                                t,
                                &format!(
                                    "stopped behind {} ({lost}); it gets them from {o}'s binary log on disk",
                                    r.best
                                ),
                            );
                            return Ok(());
                        }
                        Err(e) if !force => {
                            return Err(problem(format!(
                                "{t} is behind {}: promoting {t} would lose {lost} that {} has, and \
                                 {o}'s binary log on disk cannot be read ({e:#}). Promote {} instead \
                                 (`repltool promote {}`), or pass --force. The slaves' IO threads \
                                 are stopped; that promote continues from here",
                                r.best, r.best, r.best, r.best
                            )));
                        }
                        Err(_) => {}
                    }
                }
                if let Some(lost) = &r.target_loses {
                    if !force {
                        return Err(problem(format!(
                            "{t} is behind {}: promoting {t} would lose {lost} that {} has. Promote {} \
                             instead (`repltool promote {}`), or pass --force. The slaves' IO threads \
                             are stopped; that promote continues from here",
                            r.best, r.best, r.best, r.best
                        )));
                    }
                    self.progress.record(&format!(
                        "--force: promoting {t} loses {lost} that {} received",
                        r.best
                    ));
                }
                Ok(())
            }
            Act::CatchUpFromDisk => {
                // Up to the target, or to the most advanced slave when the target is lifted
                // there too: afterwards every slave that was behind stands at the same place
                // in the old master's log. (One ahead of an unlifted target: --force said so.)
                let (stopped, lift_to) = {
                    let st = self.st();
                    (st.stopped.clone(), st.lift_to.clone())
                };
                let top = match lift_to {
                    Some(p) => p,
                    None => stopped
                        .get(t)
                        .cloned()
                        .ok_or_else(|| anyhow!("{t} did not stop"))?,
                };
                let key = crate::plan::promote::coord_key;
                let tool = self.with(t, |_, f| Ok(f.binlog_tool()))?;
                for n in &s.hosts {
                    let from = stopped
                        .get(n)
                        .cloned()
                        .ok_or_else(|| anyhow!("{n} did not stop"))?;
                    if key(&from) >= key(&top) {
                        continue;
                    }
                    let (script, txns, _) = self
                        .read_old_binlog(o, tool, &from, Some(&top))
                        .with_context(|| format!("{n}: reading {o}'s binary log on disk"))?;
                    self.apply_script(n, &script, false)?;
                    self.progress.note(
                        n,
                        &format!(
                            "applied {txns} transaction(s) it had not received, from {o}'s binary log on disk (up to {}:{})",
                            top.0, top.1
                        ),
                    );
                    self.st().stopped.insert(n.clone(), top.clone());
                }
                Ok(())
            }
            Act::Detach => {
                let (np, gtid) = self.with(t, |c, f| {
                    c.exec(&f.stop_replica())?;
                    let m = master_status(c, f)?;
                    // MariaDB: what the target applied of the old master, as GTIDs.
                    let g = c
                        .query(&f.variables_query())?
                        .into_iter()
                        .next()
                        .map(|r| {
                            column(&r, "gtid_slave_pos")
                                .ok()
                                .flatten()
                                .unwrap_or("")
                                .to_string()
                        })
                        .unwrap_or_default();
                    c.exec(&f.reset_replica_all())?;
                    Ok(((m.file, m.position), g))
                })?;
                let w = self.with(t, |_, f| Ok(f.words()))?;
                self.progress.note(
                    t,
                    &format!(
                        "replication from {o} removed ({}); its binary log at {}:{}",
                        w.reset_all(),
                        np.0,
                        np.1
                    ),
                );
                let mut st = self.st();
                st.new_pos = Some(np);
                st.target_gtid = gtid;
                let end = st.frozen.clone().or_else(|| st.stopped.get(t).cloned());
                st.old_end = end;
                Ok(())
            }
            Act::Salvage => {
                let from = self
                    .st()
                    .stopped
                    .get(t)
                    .cloned()
                    .ok_or_else(|| anyhow!("{t} did not stop"))?;
                let tool = self.with(t, |_, f| Ok(f.binlog_tool()))?;
                match self.read_old_binlog(o, tool, &from, None) {
                    Ok((script, txns, end)) => {
                        if txns > 0 {
                            self.apply_script(t, &script, true)?;
                            self.progress.note(
                                t,
                                &format!("applied {txns} transaction(s) recovered from {o}'s binary log on disk"),
                            );
                        }
                        let mut st = self.st();
                        if let Some(g) = last_gtid(&script) {
                            st.target_gtid = merge_gtid(&st.target_gtid, &g);
                        }
                        st.old_end = Some(end);
                        st.salvaged = txns;
                        st.summary.push(format!(
                            "recovered {txns} transaction(s) from {o}'s binary log on disk"
                        ));
                    }
                    Err(e) => {
                        self.st().summary.push(format!(
                            "could not read {o}'s binary log on disk ({e:#}): anything {o} wrote after {}:{} may be lost",
                            from.0, from.1
                        ));
                    }
                }
                Ok(())
            }
            Act::MakeWritable => {
                if matches!(plan.mode, Mode::PairSwitch | Mode::PairFailover) {
                    // Never two writable members: the other one is read-only first when it
                    // answers (PairFence did it in a switch).
                }
                crate::failpoint::hit("promote-before-writable");
                self.with(t, |c, f| c.run(&f.set_read_only(false)))?;
                let mut st = self.st();
                st.target_writable = true;
                if let Some(since) = st.blocked_since.take() {
                    st.blocked = Some(since.elapsed());
                }
                let np = st.new_pos.clone();
                drop(st);
                self.progress.note(
                    t,
                    &match np {
                        Some(np) => {
                            format!("is the master (writable; binary log at {}:{})", np.0, np.1)
                        }
                        None => "is the writer (read_only = OFF)".to_string(),
                    },
                );
                if !plan.steps.iter().any(|s| s.act == Act::Record) {
                    crate::failpoint::hit("promote-after-target");
                }
                Ok(())
            }
            Act::Record => {
                let rec = {
                    let st = self.st();
                    let np = st
                        .new_pos
                        .clone()
                        .ok_or_else(|| anyhow!("{t} not detached"))?;
                    let old_end = st.old_end.clone().unwrap_or_else(|| np.clone());
                    let slaves_pos = st
                        .frozen
                        .clone()
                        .or_else(|| st.stopped.get(t).cloned())
                        .unwrap_or_else(|| old_end.clone());
                    PromotionRecord {
                        old_master: o.to_string(),
                        old_server_id: plan.old_server_id,
                        old_server_uuid: plan.old_server_uuid.clone(),
                        old_pos: old_end,
                        old_gtid: if st.frozen_gtid.is_empty() {
                            st.target_gtid.clone()
                        } else {
                            st.frozen_gtid.clone()
                        },
                        slaves_pos,
                        new_master: t.to_string(),
                        new_pos: np,
                    }
                };
                // After the target is writable: no write into a fenced server (MySQL's
                // super_read_only binds every account). A failure does not undo the promote.
                if let Err(e) = self.with(t, |c, f| c.run(&f.record_promotion(&rec))) {
                    self.st().summary.push(format!(
                        "could not record the promotion on {t} ({e:#}): `repltool init` will not \
                         rejoin {o} by itself; re-seed it when it is back"
                    ));
                }
                crate::failpoint::hit("promote-after-target");
                Ok(())
            }
            Act::Repoint { gtid } => {
                let target = self.host(t)?;
                let np = self
                    .st()
                    .new_pos
                    .clone()
                    .ok_or_else(|| anyhow!("{t} not detached"))?;
                self.each(&s.hosts, |n| {
                    self.with(n, |c, f| {
                        let cm = change_master_to(self.topo, target, &np.0, np.1);
                        let mut stmts = vec![f.stop_replica(), f.reset_replica_all()];
                        stmts.push(f.change_master(&cm));
                        stmts.push(f.start_replica());
                        c.run(&stmts)
                    })?;
                    self.progress.note(
                        n,
                        &if *gtid {
                            format!("replicates from {t} (by GTID)")
                        } else {
                            format!("replicates from {t} (from {}:{})", np.0, np.1)
                        },
                    );
                    Ok(())
                })
                .map_err(|e| anyhow!("{t} is the master, but re-pointing failed on: {e:#}"))
            }
            Act::RepointOld { gtid } => {
                let target = self.host(t)?;
                let np = self
                    .st()
                    .new_pos
                    .clone()
                    .ok_or_else(|| anyhow!("{t} not detached"))?;
                self.with(o, |c, f| {
                    c.exec(&f.unlock_tables())?;
                    let mut stmts = Vec::new();
                    if replica_status(c, f)?.is_some() {
                        stmts.push(f.stop_replica());
                        stmts.push(f.reset_replica_all());
                    }
                    if *gtid {
                        // Writes into the fenced old master: a deliberate window on MySQL.
                        stmts.extend(f.write_window(true));
                        stmts.extend(f.adopt_own_gtids());
                        stmts.extend(f.write_window(false));
                    }
                    stmts.push(f.change_master(&change_master_to(self.topo, target, &np.0, np.1)));
                    stmts.push(f.start_replica());
                    c.run(&stmts)
                })
                .map_err(|e| anyhow!("{t} is the master, but re-pointing {o} failed: {e:#}"))?;
                self.st().frozen_by_us = false;
                self.progress.note(
                    o,
                    &format!("read lock released; replicates from {t} (stays read-only)"),
                );
                Ok(())
            }
            Act::PairFence => {
                let secs = self.timeout.as_secs().max(1);
                self.st().blocked_since = Some(Instant::now());
                self.st().frozen_by_us = true;
                let coord = self.with(o, |c, f| {
                    c.exec(&f.lock_wait_timeout(secs))?;
                    c.run(&f.set_read_only(true))?;
                    let m = master_status(c, f)?;
                    Ok((m.file, m.position))
                })?;
                self.progress.note(o, "read_only = ON");
                self.st().frozen = Some(coord);
                Ok(())
            }
            Act::PairStopIo => {
                let p = self.wait_applied(t)?;
                self.progress.note(
                    t,
                    &format!("IO thread stopped; applied {o}'s log up to {}:{}", p.0, p.1),
                );
                Ok(())
            }
            Act::ResumeCheckOld => {
                if !self.conns.contains_key(o) {
                    return Ok(());
                }
                let writable = self.with(o, |c, f| {
                    Ok(c.one(&f.global_var("read_only")?)?.as_deref() == Some("0"))
                })?;
                if writable {
                    self.with(o, |c, f| c.run(&f.set_read_only(true)))?;
                    self.progress.note(
                        o,
                        "was writable: read_only = ON (fenced) before the target is made writable",
                    );
                }
                Ok(())
            }
            Act::ResumeRepoint { record } => self.resume_repoint(plan, &s.hosts, record),
            Act::DrainWriter => self.move_writer(plan, &s.hosts, None),
            Act::PointWriter => self.move_writer(plan, &s.hosts, Some(t)),
            Act::SyncProxies => self.sync_proxies(plan, &s.hosts),
            // The wiring rewrites the file once the servers are done.
            Act::RewriteFile => Ok(()),
        }
    }

    /// The replication user on the target for every future replica's address (a deliberate
    /// write window on a fenced MySQL target; kept out of the binary log).
    /// Before the first catch-up: `n` replicates from the old master `o` with its SQL thread
    /// running; on MySQL, its applier's checkpoint period is lowered to 1 ms (its position
    /// moves at checkpoints only; put back when the switchover ends).
    fn check_catching_up(
        &self,
        n: &str,
        old: &Host,
        o: &str,
        c: &mut dyn SqlConn,
        f: &Flavor,
    ) -> Result<()> {
        let r = replica_status(c, f)?.ok_or_else(|| anyhow!("is not replicating"))?;
        if r.master_host != old.address || r.master_port != old.mysql.port {
            bail!(
                "replicates from {}:{}, not from {o}",
                r.master_host,
                r.master_port
            );
        }
        if !r.sql_running {
            bail!(
                "its SQL thread is stopped ({}); it could not catch up",
                r.last_sql_error
            );
        }
        if let (Some(var), Some(set)) = (f.checkpoint_period_var(), f.set_checkpoint_period(1)) {
            let was = c.one(&f.global_var(var)?)?;
            if let Some(was) = was.and_then(|v| v.trim().parse::<u64>().ok()) {
                if was > 1 {
                    c.exec(&set)?;
                    self.st().checkpoints.insert(n.to_string(), was);
                }
            }
        }
        Ok(())
    }

    fn ensure_users(&self, t: &str, user: &str, replicas: &[String]) -> Result<()> {
        let mut addrs: Vec<String> = Vec::new();
        for h in replicas {
            if let Some(host) = self.topo.host(h) {
                if !addrs.contains(&host.address) {
                    addrs.push(host.address.clone());
                }
            }
        }
        let created = self.with(t, |c, f| {
            let have = c.column(&f.repl_user_hosts_query(user))?;
            let missing: Vec<String> = addrs
                .iter()
                .filter(|a| !have.contains(a))
                .cloned()
                .collect();
            if missing.is_empty() {
                return Ok(missing);
            }
            let mut stmts = f.write_window(true);
            for a in &missing {
                stmts.extend(f.create_repl_user(user, a, &self.topo.replication.password));
            }
            let close = f.write_window(false);
            let r = c.run(&stmts);
            // Close the window whatever happened.
            let closed = c.run(&close);
            r?;
            closed?;
            Ok(missing)
        })?;
        if !created.is_empty() {
            self.progress.note(
                t,
                &format!("created the replication user for {}", created.join(", ")),
            );
        }
        Ok(())
    }

    /// STOP SLAVE IO_THREAD, then wait until the SQL thread applied all that was received.
    /// Returns where it stopped in the old master's binary log.
    fn wait_applied(&self, n: &str) -> Result<Coord> {
        let deadline = Instant::now() + self.timeout;
        self.with(n, |c, f| {
            c.exec(&f.stop_io_thread())?;
            loop {
                let r = replica_status(c, f)?.ok_or_else(|| anyhow!("is not replicating"))?;
                // Compare coordinates, not the state text (it changed across versions).
                if r.relay_master_log_file == r.master_log_file
                    && r.exec_master_log_pos == r.read_master_log_pos
                {
                    return Ok((r.relay_master_log_file, r.exec_master_log_pos));
                }
                if !r.sql_running {
                    bail!(
                        "its SQL thread stopped before applying everything received: {} {}",
                        r.last_sql_errno,
                        r.last_sql_error
                    );
                }
                if Instant::now() >= deadline {
                    bail!(
                        "did not apply everything received within {}s (at {}:{}, received up to {}:{})",
                        self.timeout.as_secs(),
                        r.relay_master_log_file,
                        r.exec_master_log_pos,
                        r.master_log_file,
                        r.read_master_log_pos
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    }

    /// Fence a master whose server still runs: its service's stop command, then SIGKILL of
    /// whatever still listens on its port; confirmed when nothing listens any more.
    fn stop_server(&self, o: &str) -> Result<()> {
        let h = self.host(o)?;
        let m = self
            .sessions
            .get(o)
            .ok_or_else(|| anyhow!("{o}: no SSH session to stop its server"))?;
        let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
        let listening = |s: &mut Box<dyn crate::transport::HostSession>| -> Result<bool> {
            let out = s.run(
                &observe::listening_script(h.mysql.port),
                None,
                false,
                Duration::from_secs(10),
            )?;
            Ok(out.stdout_str().contains("LISTEN"))
        };
        let cfg = observe::config_facts(s.as_mut(), h).ok();
        if let Some(stop) = cfg.as_ref().and_then(|c| c.stop.clone()) {
            let out = s.run(&stop, None, true, self.timeout)?;
            self.progress
                .note(o, &format!("`{stop}` (exit {})", out.status));
        }
        let deadline = Instant::now() + self.timeout.min(Duration::from_secs(30));
        let mut killed = false;
        loop {
            if !listening(&mut s)? {
                self.progress.note(
                    o,
                    &format!("server stopped: nothing listens on port {}", h.mysql.port),
                );
                return Ok(());
            }
            if !killed
                && (cfg.as_ref().and_then(|c| c.stop.as_ref()).is_none()
                    || Instant::now() + self.timeout / 2 >= deadline)
            {
                let pids = s.run(
                    &observe::listener_pids_script(h.mysql.port),
                    None,
                    true,
                    Duration::from_secs(20),
                )?;
                let pids: Vec<String> = pids
                    .stdout_str()
                    .split_whitespace()
                    .filter(|p| p.chars().all(|c| c.is_ascii_digit()))
                    .map(str::to_string)
                    .collect();
                if !pids.is_empty() {
                    let _ = s.run(
                        &format!("kill -9 {}", pids.join(" ")),
                        None,
                        true,
                        Duration::from_secs(10),
                    )?;
                    self.progress
                        .note(o, &format!("killed the server (pid {})", pids.join(", ")));
                }
                killed = true;
            }
            if Instant::now() >= deadline {
                bail!(
                    "its server still listens on port {} after the stop command and SIGKILL: not \
                     fenced, nothing else changed",
                    h.mysql.port
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The dead master's binary log on its own disk: the absolute `log_bin` path repltool's
    /// fragment gives (readable while the server is down).
    fn old_binlog_files(&self, old: &str) -> Result<(std::path::PathBuf, Vec<String>)> {
        let oh = self.host(old)?;
        let osess = self
            .sessions
            .get(old)
            .ok_or_else(|| anyhow!("no session to {old}"))?;
        let mut os = osess.lock().unwrap_or_else(|e| e.into_inner());
        let cfg = observe::config_facts(os.as_mut(), oh)?;
        let text = cfg
            .current
            .ok_or_else(|| anyhow!("{} is missing on {old}", cfg.target.path().display()))?;
        let base = text
            .lines()
            .filter_map(|l| {
                let (k, v) = l.trim().split_once('=')?;
                let k = k.trim().replace('-', "_");
                (k == "log_bin").then(|| v.trim().trim_matches('"').to_string())
            })
            .next_back()
            .filter(|b| b.starts_with('/'))
            .ok_or_else(|| anyhow!("no absolute log_bin in {}", cfg.target.path().display()))?;
        let dir = Path::new(&base)
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default();
        let index = format!("{base}.index");
        let out = os.run(
            &format!("cat {}", shell_quote(&index)),
            None,
            true,
            Duration::from_secs(10),
        )?;
        if !out.ok() {
            bail!("cannot read {index}: {}", out.stderr_str().trim());
        }
        let files = out
            .stdout_str()
            .lines()
            .map(|l| l.trim().rsplit('/').next().unwrap_or("").to_string())
            .filter(|f| !f.is_empty())
            .collect();
        Ok((dir, files))
    }

    /// The events of the old master's binary log from `from` up to `stop` (or its end), as the
    /// SQL script the server's binlog tool prints, with the number of transactions in it and
    /// the end position read.
    fn read_old_binlog(
        &self,
        old: &str,
        tool: &str,
        from: &Coord,
        stop: Option<&Coord>,
    ) -> Result<(Vec<u8>, u64, Coord)> {
        let (dir, all) = self.old_binlog_files(old)?;
        let files: Vec<String> = all
            .into_iter()
            .filter(|f| file_key(f) >= file_key(&from.0))
            .filter(|f| stop.map(|s| file_key(f) <= file_key(&s.0)).unwrap_or(true))
            .collect();
        let Some(last) = files.last().cloned() else {
            return Ok((Vec::new(), 0, from.clone()));
        };
        let osess = self
            .sessions
            .get(old)
            .ok_or_else(|| anyhow!("no session to {old}"))?;
        let mut os = osess.lock().unwrap_or_else(|e| e.into_inner());
        let end_pos = match stop {
            Some(s) => s.1,
            None => {
                let size = os.run(
                    &format!(
                        "stat -c %s {}",
                        shell_quote(&dir.join(&last).to_string_lossy())
                    ),
                    None,
                    true,
                    Duration::from_secs(10),
                )?;
                let t = size.stdout_str();
                t.trim().parse().map_err(|_| {
                    anyhow!("size of {last} on {old}: {:?} is not a number", t.trim())
                })?
            }
        };
        let paths: Vec<String> = files
            .iter()
            .map(|f| shell_quote(&dir.join(f).to_string_lossy()))
            .collect();
        let stop_arg = stop
            .map(|s| format!(" --stop-position={}", s.1))
            .unwrap_or_default();
        let cmd = format!(
            "{tool} --start-position={}{stop_arg} {}",
            from.1,
            paths.join(" ")
        );
        let out = os.run(&cmd, None, true, self.timeout)?;
        if !out.ok() {
            bail!("{tool} failed: {}", out.stderr_str().trim());
        }
        // Every transaction of a row-based log ends in one `COMMIT/*!*/;` line in both tools'
        // output (the Xid event's comment line is not counted: its spacing differs).
        let txns = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("COMMIT"))
            .count() as u64;
        Ok((out.stdout, txns, (last, end_pos)))
    }

    /// Apply a binlog tool's SQL script on `host` through its client; `log` keeps it in the
    /// host's own binary log (the new master: its slaves must get it too). A fenced MySQL host
    /// gets a deliberate write window for it.
    fn apply_script(&self, host: &str, script: &[u8], log: bool) -> Result<()> {
        let h = self.host(host)?;
        let (f, window) = self.with(host, |c, f| {
            let ro = c.one(&f.global_var("read_only")?)?.as_deref() == Some("1");
            Ok((*f, ro && !f.write_window(true).is_empty()))
        })?;
        if window {
            self.with(host, |c, f| c.run(&f.write_window(true)))?;
        }
        let res = (|| -> Result<()> {
            let sess = self
                .sessions
                .get(host)
                .ok_or_else(|| anyhow!("no session to {host}"))?;
            let mut s = sess.lock().unwrap_or_else(|e| e.into_inner());
            let def = crate::execute::write_defaults(s.as_mut(), h)?;
            let cmd = if log {
                f.client_command(&def.to_string_lossy())
            } else {
                f.load_command(&def.to_string_lossy())
            };
            let res = s.run(&cmd, Some(script), false, self.timeout);
            crate::execute::remove_file(s.as_mut(), &def);
            let res = res?;
            if !res.ok() {
                let tail = tail_log(s.as_mut(), h.error_log.as_deref());
                bail!(
                    "applying events on {host} failed: {}{tail}",
                    res.stderr_str().trim()
                );
            }
            Ok(())
        })();
        if window {
            self.with(host, |c, f| c.run(&f.write_window(false)))?;
        }
        res
    }

    /// Finish a promote that stopped after the target was promoted: every other slave and the
    /// old master (if it answers) re-pointed at the recorded position, each only if it stands
    /// exactly where the old master's log ended (or already follows the target).
    fn resume_repoint(
        &self,
        plan: &PromotePlan,
        hosts: &[String],
        rec: &PromotionRecord,
    ) -> Result<()> {
        let (t, o) = (plan.target.as_str(), plan.old.as_str());
        let target = self.host(t)?;
        let gtid = self.topo.replication.gtid;
        self.each(hosts, |n| {
            let changed = self.with(n, |c, f| -> Result<bool> {
                let st = replica_status(c, f)?;
                if let Some(r) = &st {
                    if r.master_host == target.address && r.master_port == target.mysql.port {
                        return Ok(false);
                    }
                }
                if n == o {
                    let errant = errant_transactions(c, f, &rec.old_pos)?;
                    if !errant.is_empty() {
                        bail!(
                            "has {} event(s) after {}:{} that {t} lacks; not re-pointed (see `repltool init`)",
                            errant.len(),
                            rec.old_pos.0,
                            rec.old_pos.1
                        );
                    }
                } else if let Some(r) = &st {
                    if (r.relay_master_log_file.as_str(), r.exec_master_log_pos)
                        != (rec.slaves_pos.0.as_str(), rec.slaves_pos.1)
                    {
                        bail!(
                            "stopped at {}:{} of {o}'s log, not where {t} took over ({}:{}); re-seed it",
                            r.relay_master_log_file,
                            r.exec_master_log_pos,
                            rec.slaves_pos.0,
                            rec.slaves_pos.1
                        );
                    }
                }
                let mut stmts = Vec::new();
                if st.is_some() {
                    stmts.push(f.stop_replica());
                    stmts.push(f.reset_replica_all());
                }
                if n == o && gtid {
                    stmts.extend(f.write_window(true));
                    stmts.extend(f.adopt_own_gtids());
                    stmts.extend(f.write_window(false));
                }
                let cm: ChangeMaster = change_master_to(self.topo, target, &rec.new_pos.0, rec.new_pos.1);
                stmts.push(f.change_master(&cm));
                stmts.push(f.start_replica());
                c.run(&stmts)?;
                Ok(true)
            })?;
            if changed {
                self.progress.note(
                    n,
                    &format!("replicates from {t} (from {}:{})", rec.new_pos.0, rec.new_pos.1),
                );
            }
            Ok(())
        })
        .map_err(|e| anyhow!("{t} is the master, but: {e:#}"))?;
        self.st()
            .summary
            .push(format!("finished the interrupted promote {o} -> {t}"));
        Ok(())
    }
}

/// `MASTER_POS_WAIT` / `SOURCE_POS_WAIT`, bounded.
fn pos_wait(c: &mut dyn SqlConn, f: &Flavor, file: &str, pos: u64, secs: u32) -> Result<()> {
    let v = c.one(&f.pos_wait(file, pos, secs))?;
    let n = match v.as_deref() {
        None => None,
        Some(s) => Some(
            s.trim()
                .parse::<i64>()
                .map_err(|_| anyhow!("{} answered {s:?}", f.words().pos_wait))?,
        ),
    };
    match f.pos_wait_outcome(n) {
        WaitOutcome::Reached => Ok(()),
        WaitOutcome::TimedOut => bail!("did not reach {file}:{pos} within {secs}s"),
        WaitOutcome::NotReplicating => {
            bail!("is not replicating ({} returned NULL)", f.words().pos_wait)
        }
    }
}

/// Transactions in a server's binary logs after (file, pos): events a new master does not
/// have. The recorded file must exist on the server (a rebuilt machine's fresh log is not the
/// old master's), else an error.
pub fn errant_transactions(c: &mut dyn SqlConn, f: &Flavor, from: &Coord) -> Result<Vec<String>> {
    let logs = c.query(&f.show_binary_logs())?;
    let mut files = Vec::new();
    for r in &logs {
        files.push(column(r, "Log_name")?.unwrap_or("").to_string());
    }
    if !files.iter().any(|x| x == &from.0) {
        bail!(
            "its binary logs ({}) do not include {}, where the promotion left it: it is not \
             the server that was promoted away (rebuilt?), or its logs were purged",
            files.join(", "),
            from.0
        );
    }
    let mut found = Vec::new();
    for file in files
        .into_iter()
        .filter(|x| file_key(x) >= file_key(&from.0))
    {
        let start = if file == from.0 { from.1 } else { 4 };
        for r in c.query(&f.show_binlog_events(&file, start))? {
            let get = |k: &str| column(&r, k).ok().flatten().unwrap_or("").to_string();
            let ty = get("Event_type");
            if matches!(
                ty.as_str(),
                "Xid"
                    | "Query"
                    | "Write_rows_v1"
                    | "Update_rows_v1"
                    | "Delete_rows_v1"
                    | "Write_rows"
                    | "Update_rows"
                    | "Delete_rows"
            ) && !get("Info").trim_start().starts_with("BEGIN")
            {
                found.push(format!("{file}:{} {ty} {}", get("Pos"), get("Info")));
            }
        }
    }
    Ok(found)
}

/// The last GTID a MariaDB binlog tool's script carries (`GTID D-S-N` in its comments).
fn last_gtid(script: &[u8]) -> Option<String> {
    String::from_utf8_lossy(script)
        .lines()
        .filter_map(|l| {
            let i = l.find(" GTID ")?;
            l[i + 6..].split_whitespace().next().map(str::to_string)
        })
        .rfind(|g| {
            g.split('-').count() == 3 && g.split('-').all(|p| p.chars().all(|c| c.is_ascii_digit()))
        })
}

/// A MariaDB GTID position with one domain's entry replaced by `gtid`.
pub fn merge_gtid(pos: &str, gtid: &str) -> String {
    let domain = gtid.split('-').next().unwrap_or("");
    let mut out: Vec<String> = pos
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty() && p.split('-').next() != Some(domain))
        .map(str::to_string)
        .collect();
    out.push(gtid.to_string());
    out.sort();
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::promote::distance;

    #[test]
    fn gtid_positions_merge_by_domain() {
        assert_eq!(merge_gtid("0-1-5,1-2-9", "0-1-7"), "0-1-7,1-2-9");
        assert_eq!(merge_gtid("", "0-1-7"), "0-1-7");
        let script = b"#241130 server id 1 end_log_pos 100 GTID 0-1-5 trans\nBEGIN\n#2411 GTID 0-1-6 trans\nCOMMIT\n";
        assert_eq!(last_gtid(script).as_deref(), Some("0-1-6"));
        assert_eq!(last_gtid(b"no gtids here"), None);
    }

    #[test]
    fn distance_in_words() {
        assert_eq!(
            distance("db1", &("b.1".into(), 100), &("b.1".into(), 350)),
            "250 bytes of db1's binary log (b.1:100 .. 350)"
        );
    }
}

#[cfg(test)]
mod fake_tests {
    //! The executor against scripted servers: what runs, in which order, and what an abort
    //! undoes (no server needed).
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::plan::promote::{plan_promote, HostState, PlanOptions, PromoteFacts, Shell};
    use crate::transport::fake::{FakeServer, FakeSession, Reply, Shared};
    use crate::transport::HostSession;

    fn replica_row(master_port: u16) -> Reply {
        let port = master_port.to_string();
        Reply::row(&[
            ("Master_Host", Some("127.0.0.1")),
            ("Master_Port", Some(port.as_str())),
            ("Master_User", Some("repl")),
            ("Slave_IO_Running", Some("Yes")),
            ("Slave_SQL_Running", Some("Yes")),
            ("Master_Log_File", Some("mysql-bin.000003")),
            ("Read_Master_Log_Pos", Some("1000")),
            ("Relay_Master_Log_File", Some("mysql-bin.000003")),
            ("Exec_Master_Log_Pos", Some("1000")),
        ])
    }

    /// The fake servers' flavor (what the version query below answers).
    fn maria() -> Flavor {
        Flavor::detect("10.11.6-MariaDB", "Debian 12").unwrap()
    }

    fn server(slave_of: Option<u16>) -> Shared {
        let s = FakeServer::shared();
        let f = maria();
        {
            let mut g = s.lock().unwrap();
            g.on(
                "SELECT @@version, @@version_comment",
                Reply::row(&[("v", Some("10.11.6-MariaDB")), ("c", Some("Debian 12"))]),
            )
            .on("GET_LOCK", Reply::value("1"))
            .on("RELEASE_LOCK", Reply::value("1"))
            .on(
                "SELECT Host FROM mysql.user",
                Reply::Rows(vec![vec![("Host".into(), Some("127.0.0.1".into()))]]),
            )
            .on(
                f.show_master_status().text(),
                Reply::row(&[
                    ("File", Some("mysql-bin.000003")),
                    ("Position", Some("1000")),
                ]),
            )
            .on(
                f.show_replica_status().text(),
                match slave_of {
                    Some(p) => replica_row(p),
                    None => Reply::empty(),
                },
            );
        }
        s
    }

    /// A switchover db1 -> db2 (db3 the other slave) on these fake servers; its error.
    fn switchover_error(
        topo: &Topology,
        (s1, s2, s3): (&Shared, &Shared, &Shared),
    ) -> anyhow::Error {
        let mut sessions: crate::transport::Sessions = HashMap::new();
        for (n, s) in [("db1", s1), ("db2", s2), ("db3", s3)] {
            let b: Box<dyn HostSession> = Box::new(FakeSession::new(n, s.clone()));
            sessions.insert(n.to_string(), Mutex::new(b));
        }
        let mut facts = crate::testing::converged(topo);
        for (n, f) in facts.iter_mut() {
            let s = f.sql.as_mut().unwrap();
            if n != "db1" {
                s.replica.as_mut().unwrap().master_log_file = "mysql-bin.000003".into();
            }
        }
        let states: HashMap<String, HostState> = topo
            .hosts
            .iter()
            .map(|h| {
                (
                    h.name.clone(),
                    HostState {
                        sql_reach: None,
                        sql_error: None,
                        shell: Shell::Up,
                        listening: None,
                    },
                )
            })
            .collect();
        let plan = plan_promote(
            topo,
            &PromoteFacts {
                facts: &facts,
                hosts: &states,
                proxies_down: &Default::default(),
            },
            "db2",
            PlanOptions {
                force: false,
                timeout_secs: 5,
            },
        )
        .unwrap()
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.yaml");
        std::fs::write(&file, "x").unwrap();
        let progress = Progress::new(true);
        let names: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
        let ex = Exec::new(
            topo,
            &sessions,
            Duration::from_secs(5),
            &progress,
            &file,
            &names,
        );
        ex.run(&plan).unwrap_err()
    }

    /// db1's rules for a switchover that is undone after the lock.
    fn frozen_then_undone(s1: &Shared, f: &Flavor) {
        let mut g = s1.lock().unwrap();
        g.on("lock_wait_timeout", Reply::Ok);
        for q in f.set_read_only(true).iter().chain(&f.set_read_only(false)) {
            g.on(q.text(), Reply::Ok);
        }
        g.on(f.flush_tables_with_read_lock().text(), Reply::Ok)
            .on("BINLOG_GTID_POS", Reply::value("0-1-5"))
            .on(f.unlock_tables().text(), Reply::Ok)
            .on("@@GLOBAL.read_only", Reply::value("0"));
    }

    #[test]
    fn a_switchover_whose_slave_cannot_catch_up_is_undone_and_read_back() {
        let topo =
            crate::testing::topo(&[("db1", None), ("db2", Some("db1")), ("db3", Some("db1"))]);
        let p1 = topo.host("db1").unwrap().mysql.port;
        let (s1, s2, s3) = (server(None), server(Some(p1)), server(Some(p1)));
        let f = maria();
        let w = f.words();
        let (ro_on, ro_off) = (f.set_read_only(true), f.set_read_only(false));
        frozen_then_undone(&s1, &f);
        // db2 catches up before the lock, then cannot reach the frozen position in time.
        s2.lock()
            .unwrap()
            .on_times(w.pos_wait, 1, Reply::value("0"))
            .on(w.pos_wait, Reply::value("-1"));
        s3.lock().unwrap().on(w.pos_wait, Reply::value("0"));
        let e = switchover_error(&topo, (&s1, &s2, &s3));
        let msg = format!("{e:#}");
        assert_eq!(crate::error::exit_code(&e), 1, "{msg}");
        assert!(msg.contains("did not reach mysql-bin.000003:1000"), "{msg}");
        assert!(
            msg.contains("aborted: db1 is writable again (read back: read_only = OFF)"),
            "{msg}"
        );
        let l1 = s1.lock().unwrap().log.clone();
        let at = |needle: &str| {
            l1.iter()
                .position(|l| l.contains(needle))
                .unwrap_or(usize::MAX)
        };
        let (lock, unlock) = (f.flush_tables_with_read_lock(), f.unlock_tables());
        assert!(at(ro_on[0].text()) < at(lock.text()));
        assert!(at(lock.text()) < at(unlock.text()));
        assert!(at(unlock.text()) < at(ro_off[0].text()));
        assert!(at(ro_off[0].text()) < at("SELECT @@GLOBAL.read_only"));
        // Nothing was done to the target or the other slave beyond waiting.
        let reset = format!("RESET {}", w.replica);
        for s in [&s2, &s3] {
            let log = s.lock().unwrap().log.join("\n");
            for never in [w.stop().as_str(), &reset, w.change, "read_only = OFF"] {
                assert!(!log.contains(never), "{never}: {log}");
            }
        }
    }
}
