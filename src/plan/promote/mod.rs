//! The promote planner: the topology, what was observed of every host (SQL facts, how a failed
//! login failed, whether its SSH answered and whether a server still listens there) and the
//! target -> a [`PromotePlan`] (switchover, failover, the pair's writer switch, or the end of
//! an interrupted promote), or a refusal that says why and what `--force` would risk. Pure: no
//! I/O, so every decision (is the master dead, who is most advanced, what would be lost) is a
//! function of facts with golden cases (`tests/golden/promote/`).
//!
//! The executor (`crate::promote::exec`) runs the steps in order, each with its guard, and
//! `--dry-run` prints exactly these steps, in the verbs of each server.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anyhow::Result;

use crate::error::{input, problem};
use crate::flavor::{Flavor, PromotionRecord, Sql, Words};
use crate::observe::{Facts, SqlFacts};
use crate::topology::rewrite::HostEdit;
use crate::topology::{Host, Role, Topology};
use crate::transport::sql::Reach;

/// How a host's SSH answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shell {
    /// A session is open.
    Up,
    /// Nothing answered (connection refused, timed out, no route).
    Down(Reach),
    /// Something answered but the session failed (a changed host key, a refused key, ...):
    /// the machine is alive.
    Refused(String),
}

/// What promote knows of one host beyond its SQL facts.
#[derive(Debug, Clone)]
pub struct HostState {
    /// How the SQL login failed (None when it worked).
    pub sql_reach: Option<Reach>,
    pub sql_error: Option<String>,
    pub shell: Shell,
    /// With the shell up: whether anything listens on the server's SQL port.
    pub listening: Option<bool>,
}

/// Everything the planner reads.
pub struct PromoteFacts<'a> {
    pub facts: &'a HashMap<String, Facts>,
    pub hosts: &'a HashMap<String, HostState>,
    /// Proxies of the file (`proxies:`) whose shell could not be reached, with why; every
    /// other proxy takes part in the writer endpoint's move.
    pub proxies_down: &'a BTreeMap<String, String>,
}

impl PromoteFacts<'_> {
    fn sql(&self, name: &str) -> Option<&SqlFacts> {
        self.facts.get(name).and_then(|f| f.sql.as_ref())
    }
    fn state(&self, name: &str) -> Option<&HostState> {
        self.hosts.get(name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Switchover,
    Failover,
    /// A master-master pair: only the writer moves.
    PairSwitch,
    /// A master-master pair whose writer is down.
    PairFailover,
    /// An earlier promote to the same target stopped half-way: finish it.
    Resume,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Switchover => "switchover",
            Mode::Failover => "failover",
            Mode::PairSwitch => "writer switch",
            Mode::PairFailover => "writer failover",
            Mode::Resume => "resume",
        }
    }
}

/// How the old master is kept from taking writes in a failover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// Nothing answers on it: nothing to fence (its config says read_only=ON for when it comes
    /// back).
    Unreachable,
    /// Its machine answers and no server listens: confirmed stopped; its binary log on disk
    /// can be read.
    Stopped,
    /// A server still runs there (hung, or refusing our login): stop it over SSH and confirm
    /// before its binary log is read (only with --force).
    StopServer,
    /// A server may still run there and repltool cannot reach it to stop it (only with
    /// --force): nothing fences it.
    None,
}

/// A binary log coordinate.
pub type Coord = (String, u64);

/// Binlog file order: by the numeric suffix.
pub fn file_key(f: &str) -> (String, u64) {
    match f.rsplit_once('.') {
        Some((base, n)) => (base.to_string(), n.parse().unwrap_or(0)),
        None => (f.to_string(), 0),
    }
}

pub(crate) fn coord_key(c: &Coord) -> ((String, u64), u64) {
    (file_key(&c.0), c.1)
}

/// How far apart two coordinates of one log are, in words.
pub fn distance(old: &str, from: &Coord, to: &Coord) -> String {
    if from.0 == to.0 {
        format!(
            "{} bytes of {old}'s binary log ({}:{} .. {})",
            to.1.saturating_sub(from.1),
            from.0,
            from.1,
            to.1
        )
    } else {
        format!(
            "{old}'s binary log from {}:{} to {}:{}",
            from.0, from.1, to.0, to.1
        )
    }
}

/// Where each slave stands in the old master's log, and what that means for the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranking {
    /// Slave -> how far it has the old master's log (received, or applied once stopped).
    pub positions: BTreeMap<String, Coord>,
    pub best: String,
    /// What promoting the target loses against the best (None: the target is the best).
    pub target_loses: Option<String>,
    /// Slaves behind the target: they need the difference (from the old master's disk, or
    /// from the new master by GTID).
    pub behind: Vec<String>,
    /// Slaves ahead of the target (only with --force): re-pointing them leaves them
    /// inconsistent.
    pub ahead: Vec<String>,
}

/// Rank the slaves by how much of the old master's log they have. Pure; used on the observed
/// (received) positions by the planner and on the stopped positions by the executor's guard.
pub fn rank(old: &str, target: &str, positions: &BTreeMap<String, Coord>) -> Option<Ranking> {
    let tpos = positions.get(target)?.clone();
    let (best, bpos) = positions
        .iter()
        // Ties go to the target: promoting it loses nothing.
        .max_by_key(|(n, p)| (coord_key(p), n.as_str() == target))
        .map(|(n, p)| (n.clone(), p.clone()))?;
    let target_loses = (coord_key(&tpos) < coord_key(&bpos)).then(|| distance(old, &tpos, &bpos));
    let behind = positions
        .iter()
        .filter(|(n, p)| n.as_str() != target && coord_key(p) < coord_key(&tpos))
        .map(|(n, _)| n.clone())
        .collect();
    let ahead = positions
        .iter()
        .filter(|(n, p)| n.as_str() != target && coord_key(p) > coord_key(&tpos))
        .map(|(n, _)| n.clone())
        .collect();
    Some(Ranking {
        positions: positions.clone(),
        best,
        target_loses,
        behind,
        ahead,
    })
}

/// One step: an action on one or more hosts (in parallel).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub hosts: Vec<String>,
    pub act: Act,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// The cluster lock on every reachable server and on the topology file.
    Lock,
    /// The replication user on the target for every future replica's address.
    EnsureUsers { user: String, replicas: Vec<String> },
    /// Guard + catch-up before any lock: each slave replicates from the old master and reaches
    /// its current position.
    CatchUp,
    /// On the old master: read_only=ON, FLUSH TABLES WITH READ LOCK, its coordinates (every
    /// lock wait bounded).
    Freeze,
    /// Each slave reaches the frozen coordinates; if any cannot: undo (old master writable
    /// again) and stop.
    WaitFrozen,
    /// Failover: stop the old master's server over SSH and confirm nothing listens on `port`.
    StopServer { port: u16 },
    /// Failover: stop the IO thread and wait until the SQL thread applied all it received.
    StopIo,
    /// Failover: re-rank on the stopped positions; refuse if the target is behind (unless
    /// --force).
    CheckRanking { force: bool },
    /// Apply to a lagging slave the part of the old master's log (read from its disk) it
    /// lacks, up to where the target stopped.
    CatchUpFromDisk,
    /// On the target: stop replication, note its coordinates, forget its master.
    Detach,
    /// Apply to the target what no slave received, from the old master's log on its disk.
    Salvage,
    /// read_only=OFF on the target (the pair: and ON on the other member first).
    MakeWritable,
    /// Record the promotion on the (now writable) target.
    Record,
    /// Point at the target, at its coordinates (or by GTID) and start.
    Repoint { gtid: bool },
    /// The old master: release its read lock (it stays read-only) and point it at the target.
    RepointOld { gtid: bool },
    /// The pair: read_only=ON on the other member.
    PairFence,
    /// The pair: the target reaches the other member's position.
    PairWait,
    /// The pair's failover: stop the IO thread, apply what was received.
    PairStopIo,
    /// Resume: the target stays writable only if the old master is not writable.
    ResumeCheckOld,
    /// Resume: point the remaining slaves at the recorded coordinates.
    ResumeRepoint { record: PromotionRecord },
    /// The proxies' writer endpoint reaches no server any more and the sessions it held are
    /// ended (HAProxy at runtime; nginx by a graceful reload): the old master keeps no
    /// application session.
    DrainWriter,
    /// The proxies' writer endpoint sends new connections to the target only.
    PointWriter,
    /// The proxies' configuration rewritten for the new topology (writer, reader endpoints
    /// over the slaves as they now are), so a reload keeps the promote.
    SyncProxies,
    /// Rewrite the topology file (backup kept).
    RewriteFile,
}

/// What promote will do.
#[derive(Debug, Clone)]
pub struct PromotePlan {
    pub mode: Mode,
    pub target: String,
    pub old: String,
    /// Why this mode: what was observed of the old master.
    pub reason: String,
    pub fence: Option<Fence>,
    pub steps: Vec<Step>,
    /// The old master's other direct slaves that answer (re-pointed at the target).
    pub others: Vec<String>,
    /// The old master's other slaves that do not answer (`init` re-points them later).
    pub unreachable: Vec<String>,
    /// Failover: the ranking on the observed positions.
    pub ranking: Option<Ranking>,
    /// Said before anything runs: what --force risks, what may be lost.
    pub warnings: Vec<String>,
    /// The file rewrite: host -> (line, edit).
    pub edits: BTreeMap<String, (usize, HostEdit)>,
    /// The old master's identity, for the promotion record: its server_id and (MySQL)
    /// server_uuid, from itself when it answers, else from what the target's replica status
    /// says of its master.
    pub old_server_id: u32,
    pub old_server_uuid: String,
    /// The flavor of each host that answers, for rendering its statements.
    flavors: BTreeMap<String, Flavor>,
    /// The bound on every wait, in seconds (rendered in the statements).
    timeout_secs: u64,
}

/// Options that change decisions.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    pub force: bool,
    /// The bound on every wait, in seconds.
    pub timeout_secs: u64,
}

pub(crate) fn received(s: &SqlFacts) -> Option<Coord> {
    s.replica
        .as_ref()
        .filter(|r| !r.master_log_file.is_empty())
        .map(|r| (r.master_log_file.clone(), r.read_master_log_pos))
}

/// Whether `s` replicates from `master` now.
fn follows(s: &SqlFacts, master: &Host) -> bool {
    s.replica
        .as_ref()
        .is_some_and(|r| r.master_host == master.address && r.master_port == master.mysql.port)
}

/// Describe how the old master answered, and decide: alive (switchover), positively dead
/// (failover, with or without its disk), or alive-but-unusable (refuse unless --force).
enum OldMaster {
    Alive,
    Dead {
        fence: Fence,
        why: String,
    },
    /// Something answers; a failover would risk two writable masters.
    Unusable {
        why: String,
        fence: Fence,
    },
}

fn judge_old(old: &Host, pf: &PromoteFacts) -> OldMaster {
    if pf.sql(&old.name).is_some() {
        return OldMaster::Alive;
    }
    let st = pf.state(&old.name);
    let sql_err = st
        .and_then(|s| s.sql_error.clone())
        .unwrap_or_else(|| "no answer".into());
    let reach = st.and_then(|s| s.sql_reach).unwrap_or(Reach::Other);
    let shell = st
        .map(|s| s.shell.clone())
        .unwrap_or(Shell::Down(Reach::Other));
    let listening = st.and_then(|s| s.listening);
    let sql_what = match reach {
        Reach::Refused => "SQL connection refused".to_string(),
        Reach::TimedOut => "SQL login timed out".to_string(),
        Reach::Answered(code) => format!("the server answers but refused the login (error {code})"),
        Reach::Other => "SQL login failed".to_string(),
    };
    match (&shell, listening) {
        // Its machine answers and nothing listens on the server's port: the server is down,
        // whatever the login said; its binary log on disk can be read.
        (Shell::Up, Some(false)) => OldMaster::Dead {
            fence: Fence::Stopped,
            why: format!(
                "{}: {sql_what}; its machine answers over SSH and no server listens on port {}: \
                 the server is down, its binary log on disk can be read",
                old.name, old.mysql.port
            ),
        },
        (Shell::Up, _) => OldMaster::Unusable {
            why: format!(
                "{}: {sql_what} ({sql_err}), but {} (hung, overloaded or refusing our account): \
                 it may still take writes",
                old.name,
                if listening == Some(true) {
                    format!("a server still listens on port {}", old.mysql.port)
                } else {
                    "its machine answers and whether a server listens could not be read".to_string()
                }
            ),
            fence: Fence::StopServer,
        },
        (Shell::Down(r), _) if r.is_down() && reach.is_down() => OldMaster::Dead {
            fence: Fence::Unreachable,
            why: format!(
                "{}: {sql_what} and SSH {} ({sql_err}): positively down",
                old.name,
                if *r == Reach::Refused {
                    "refused"
                } else {
                    "timed out"
                }
            ),
        },
        (Shell::Refused(e), _) => OldMaster::Unusable {
            why: format!(
                "{}: {sql_what} ({sql_err}), and its SSH server answers but refused us ({e}): \
                 the machine is up and its server may be too",
                old.name
            ),
            fence: Fence::None,
        },
        (Shell::Down(_), _) => OldMaster::Unusable {
            why: format!(
                "{}: {sql_what} ({sql_err}) and SSH does not connect either, but the server \
                 answered or the failure is not a clean refusal or timeout: it may be alive",
                old.name
            ),
            fence: Fence::None,
        },
    }
}

/// Plan `repltool promote TARGET`. `Ok(None)`: TARGET is already the master in the file and
/// nothing is half-done.
pub fn plan_promote(
    topo: &Topology,
    pf: &PromoteFacts,
    target: &str,
    opts: PlanOptions,
) -> Result<Option<PromotePlan>> {
    let Some(mut plan) = plan_servers(topo, pf, target, opts)? else {
        return Ok(None);
    };
    add_endpoint_steps(topo, pf, &mut plan, opts)?;
    Ok(Some(plan))
}

/// The application endpoints (`proxies:`) move with the master, in this order: switchover:
/// the old master fenced (read_only, the lock), the slaves caught up, then in one step per
/// proxy its sessions drained and the writer pointed at the target, then the target made
/// writable; failover: the writer drained first, pointed at the target just before it is made
/// writable. The writer endpoint never reaches two writable servers. Then the proxies' files
/// are rewritten for the new topology.
fn add_endpoint_steps(
    topo: &Topology,
    pf: &PromoteFacts,
    plan: &mut PromotePlan,
    opts: PlanOptions,
) -> Result<()> {
    if topo.proxies.is_empty() {
        return Ok(());
    }
    let up: Vec<String> = topo
        .proxies
        .iter()
        .filter(|p| !pf.proxies_down.contains_key(&p.name))
        .map(|p| p.name.clone())
        .collect();
    let failover = matches!(plan.mode, Mode::Failover | Mode::PairFailover);
    for (name, why) in pf.proxies_down {
        let what = format!(
            "proxy {name} does not answer ({why}): its writer endpoint keeps sending to {} (read-only once promoted away) until `repltool init` re-points it",
            plan.old
        );
        if failover || opts.force {
            plan.warnings.push(what);
        } else {
            return Err(problem(format!(
                "{what}. Bring it back, or pass --force to switch over without it"
            )));
        }
    }
    if up.is_empty() {
        return Ok(());
    }
    let at = |steps: &[Step], f: &dyn Fn(&Act) -> bool| steps.iter().position(|s| f(&s.act));
    let steps = &mut plan.steps;
    // A failover drains first: the old master is not fenced by a read lock, the proxies are
    // the applications' way to it. A switchover has fenced it (read_only, the lock) before the
    // writer moves, and the move itself drains it: its sessions end in the same step that
    // points the writer at the target, one round trip inside the write window instead of two.
    let drain_after = match plan.mode {
        Mode::Failover | Mode::PairFailover => at(steps, &|a| *a == Act::Lock),
        Mode::Switchover | Mode::PairSwitch | Mode::Resume => None,
    };
    if let Some(i) = drain_after {
        steps.insert(
            i + 1,
            Step {
                hosts: up.clone(),
                act: Act::DrainWriter,
            },
        );
    }
    if let Some(i) = at(steps, &|a| *a == Act::MakeWritable) {
        steps.insert(
            i,
            Step {
                hosts: up.clone(),
                act: Act::PointWriter,
            },
        );
    }
    if let Some(i) = at(steps, &|a| *a == Act::RewriteFile) {
        steps.insert(
            i,
            Step {
                hosts: up,
                act: Act::SyncProxies,
            },
        );
    }
    Ok(())
}

fn plan_servers(
    topo: &Topology,
    pf: &PromoteFacts,
    target: &str,
    opts: PlanOptions,
) -> Result<Option<PromotePlan>> {
    let names: Vec<&str> = topo.hosts.iter().map(|h| h.name.as_str()).collect();
    let t = topo.host(target).ok_or_else(|| {
        input(format!(
            "{}: no host named {target} (hosts: {})",
            topo.file.display(),
            names.join(", ")
        ))
    })?;
    let Some(old_name) = t.master.clone() else {
        return Ok(None);
    };
    let old = topo
        .host(&old_name)
        .ok_or_else(|| input(format!("{old_name}: not in the file")))?;
    let pair = t.role == Role::MasterMaster;
    if !pair && old.master.is_some() {
        return Err(problem(format!(
            "{target} replicates from {old_name}, which is itself a slave (a relay): promote \
             {old_name}'s master chain top-down, or change the file"
        )));
    }
    let Some(tsql) = pf.sql(target) else {
        let why = pf
            .state(target)
            .and_then(|s| s.sql_error.clone())
            .unwrap_or_default();
        return Err(problem(format!(
            "{target} does not answer ({why}); only a running server can become the master"
        )));
    };
    let mut flavors: BTreeMap<String, Flavor> = BTreeMap::new();
    for h in &topo.hosts {
        if let Some(s) = pf.sql(&h.name) {
            flavors.insert(h.name.clone(), s.flavor);
        }
    }
    let mut plan = PromotePlan {
        mode: Mode::Switchover,
        target: target.to_string(),
        old: old_name.clone(),
        reason: String::new(),
        fence: None,
        steps: Vec::new(),
        others: Vec::new(),
        unreachable: Vec::new(),
        ranking: None,
        warnings: Vec::new(),
        edits: file_edits(topo, t, old, pair),
        old_server_id: 0,
        old_server_uuid: String::new(),
        flavors,
        timeout_secs: opts.timeout_secs.max(1),
    };
    match (pf.sql(&old_name), tsql.replica.as_ref()) {
        (Some(o), _) => {
            plan.old_server_id = o.server_id;
            plan.old_server_uuid = o.server_uuid.clone();
        }
        (None, Some(r)) => {
            plan.old_server_id = r.master_server_id;
            plan.old_server_uuid = r.master_uuid.clone();
        }
        (None, None) => {}
    }
    let step = |hosts: Vec<String>, act: Act| Step { hosts, act };
    let t_ = || vec![target.to_string()];
    let o_ = || vec![old_name.clone()];
    let gtid = topo.replication.gtid;

    if pair {
        if !topo.writable(t) && !topo.writable(old) {
            return Err(problem(format!(
                "neither member of the pair {target}/{old_name} is writable in the file"
            )));
        }
        match judge_old(old, pf) {
            OldMaster::Alive => {
                plan.mode = Mode::PairSwitch;
                plan.reason = format!("{old_name} answers: the writer moves to {target}");
                plan.steps = vec![
                    step(vec![], Act::Lock),
                    step(o_(), Act::PairFence),
                    step(t_(), Act::PairWait),
                    step(t_(), Act::MakeWritable),
                    step(vec![], Act::RewriteFile),
                ];
            }
            OldMaster::Dead { why, fence } => {
                plan.mode = Mode::PairFailover;
                plan.reason = why;
                plan.fence = Some(fence);
                plan.steps = vec![
                    step(vec![], Act::Lock),
                    step(t_(), Act::PairStopIo),
                    step(t_(), Act::MakeWritable),
                    step(vec![], Act::RewriteFile),
                ];
            }
            OldMaster::Unusable { why, fence } => {
                if !opts.force {
                    return Err(problem(format!(
                        "{why}. Refusing to make {target} writable beside it (two writable \
                         members). Fix {old_name}'s login or stop it, or pass --force{}",
                        force_risk(&fence, &old_name)
                    )));
                }
                plan.warnings
                    .push(format!("--force: {why}{}", force_risk(&fence, &old_name)));
                plan.mode = Mode::PairFailover;
                plan.reason = why;
                let mut steps = vec![step(vec![], Act::Lock)];
                if fence == Fence::StopServer {
                    steps.push(step(
                        o_(),
                        Act::StopServer {
                            port: old.mysql.port,
                        },
                    ));
                }
                steps.extend([
                    step(t_(), Act::PairStopIo),
                    step(t_(), Act::MakeWritable),
                    step(vec![], Act::RewriteFile),
                ]);
                plan.fence = Some(fence);
                plan.steps = steps;
            }
        }
        return Ok(Some(plan));
    }

    for s in &old.slaves {
        if s == target {
            continue;
        }
        if pf.sql(s).is_some() {
            plan.others.push(s.clone());
        } else {
            plan.unreachable.push(s.clone());
        }
    }

    // An earlier promote to this target that stopped half-way: it no longer replicates and its
    // promotion is recorded.
    let record = tsql
        .promotions
        .iter()
        .rev()
        .find(|p| p.new_master == target && p.old_master == old_name)
        .filter(|_| tsql.replica.is_none());
    if let Some(rec) = record {
        plan.mode = Mode::Resume;
        plan.reason = format!(
            "{target} was already promoted by an earlier run (recorded: {old_name} up to {}:{} \
             = {target} at {}:{}); finishing it",
            rec.old_pos.0, rec.old_pos.1, rec.new_pos.0, rec.new_pos.1
        );
        let mut rest = plan.others.clone();
        if pf.sql(&old_name).is_some() {
            rest.push(old_name.clone());
        }
        plan.steps = vec![
            step(vec![], Act::Lock),
            step(o_(), Act::ResumeCheckOld),
            step(t_(), Act::MakeWritable),
            step(
                rest,
                Act::ResumeRepoint {
                    record: rec.clone(),
                },
            ),
            step(vec![], Act::RewriteFile),
        ];
        return Ok(Some(plan));
    }

    // Every server that will replicate from the target must be able to read its binary log
    // (a MySQL replica of a MariaDB master, or a replica older than its master, cannot).
    let mut incompatible = Vec::new();
    for n in plan.others.iter().chain(std::iter::once(&old_name)) {
        if let Some(s) = pf.sql(n) {
            if let Err(why) = s.flavor.can_replicate_from(&tsql.flavor) {
                incompatible.push(format!("{n}: {why}"));
            }
        }
    }
    if !incompatible.is_empty() {
        if !opts.force {
            return Err(problem(format!(
                "promoting {target} would leave servers replicating from a master they may not \
                 read: {}. Promote a server of the oldest version, upgrade these first, or pass \
                 --force",
                incompatible.join("; ")
            )));
        }
        plan.warnings.push(format!(
            "--force: {} (replication may stop on the first event they cannot read)",
            incompatible.join("; ")
        ));
    }
    let mut future = vec![old_name.clone()];
    future.extend(plan.others.iter().cloned());
    let slaves: Vec<String> = std::iter::once(target.to_string())
        .chain(plan.others.iter().cloned())
        .collect();

    let (fence, why) = match judge_old(old, pf) {
        OldMaster::Alive => {
            plan.mode = Mode::Switchover;
            plan.reason = format!("{old_name} answers: switchover (nothing acknowledged is lost)");
            // Guards that need no server: every slave follows the old master now.
            let mut wrong = Vec::new();
            for n in &slaves {
                if let Some(s) = pf.sql(n) {
                    if !follows(s, old) {
                        wrong.push(n.clone());
                    }
                }
            }
            if !wrong.is_empty() {
                return Err(problem(format!(
                    "{} do(es) not replicate from {old_name} now; a switchover needs every slave \
                     following it. Run `repltool status` and `repltool init` first",
                    wrong.join(", ")
                )));
            }
            plan.steps = vec![
                step(vec![], Act::Lock),
                step(
                    t_(),
                    Act::EnsureUsers {
                        user: topo.replication.user.clone(),
                        replicas: future.clone(),
                    },
                ),
                step(slaves.clone(), Act::CatchUp),
                step(o_(), Act::Freeze),
                step(slaves.clone(), Act::WaitFrozen),
                step(t_(), Act::Detach),
                step(t_(), Act::MakeWritable),
                step(t_(), Act::Record),
                step(plan.others.clone(), Act::Repoint { gtid }),
                step(o_(), Act::RepointOld { gtid }),
                step(vec![], Act::RewriteFile),
            ];
            plan.steps
                .retain(|s| !s.hosts.is_empty() || matches!(s.act, Act::Lock | Act::RewriteFile));
            return Ok(Some(plan));
        }
        OldMaster::Dead { fence, why } => (fence, why),
        OldMaster::Unusable { why, fence } => {
            if !opts.force {
                return Err(problem(format!(
                    "{why}. A failover now could leave two writable masters, and a switchover \
                     needs {old_name}'s login. Fix the login (or stop {old_name}) and run the \
                     promote again, or pass --force{}",
                    force_risk(&fence, &old_name)
                )));
            }
            plan.warnings
                .push(format!("--force: {why}{}", force_risk(&fence, &old_name)));
            (fence, why)
        }
    };
    plan.mode = Mode::Failover;
    plan.reason = why;
    plan.fence = Some(fence.clone());
    let disk = matches!(fence, Fence::Stopped | Fence::StopServer);

    // Rank on what each slave received (a dead master's slaves stopped receiving).
    let mut positions = BTreeMap::new();
    for n in &slaves {
        if let Some(p) = pf.sql(n).and_then(received) {
            positions.insert(n.clone(), p);
        }
    }
    if !positions.contains_key(target) {
        return Err(problem(format!(
            "{target} has no replication position from {old_name} (it does not replicate from \
             it); it cannot take over"
        )));
    }
    let ranking = rank(&old_name, target, &positions).expect("target ranked");
    if let Some(lost) = &ranking.target_loses {
        let best = &ranking.best;
        if disk {
            // The old master's log on its disk holds everything any slave received: the
            // target gets what it lacks from there before it takes over.
            plan.warnings.push(format!(
                "{target} received less than {best} ({lost}); it gets that part from \
                 {old_name}'s binary log on disk before it takes over (refused if that cannot \
                 be read)"
            ));
        } else if !opts.force {
            return Err(problem(format!(
                "{target} is behind {best}: promoting {target} would lose {lost} that {best} has. \
                 Promote {best} instead (`repltool promote {best}`), or pass --force to promote \
                 {target} anyway and lose them"
            )));
        } else {
            plan.warnings.push(format!(
                "--force: promoting {target} loses {lost} that {best} received"
            ));
        }
    }
    if !ranking.ahead.is_empty() && !disk {
        let list: Vec<String> = ranking
            .ahead
            .iter()
            .map(|n| {
                format!(
                    "{n} ({} that {target} lacks)",
                    distance(&old_name, &positions[target], &positions[n])
                )
            })
            .collect();
        plan.warnings.push(format!(
            "--force: {} stay(s) ahead of {target}; re-pointed, they keep transactions the new \
             master lacks: re-seed them after the promote",
            list.join(", ")
        ));
    }
    let behind = ranking.behind.clone();
    if !behind.is_empty() && !gtid && !disk {
        let list: Vec<String> = behind
            .iter()
            .map(|n| {
                format!(
                    "{n} ({})",
                    distance(&old_name, &positions[n], &positions[target])
                )
            })
            .collect();
        if !opts.force {
            return Err(problem(format!(
                "{} stopped behind {target}, and {old_name}'s binary log cannot be read (its \
                 machine does not answer): re-pointed at {target} they would miss {}. Re-seed \
                 them after the promote, or pass --force",
                behind.join(", "),
                list.join(", ")
            )));
        }
        plan.warnings.push(format!(
            "--force: {} stay inconsistent (they miss {}): re-seed them",
            behind.join(", "),
            list.join(", ")
        ));
    }
    if fence == Fence::Unreachable {
        plan.warnings.push(format!(
            "{old_name}'s machine does not answer: anything it wrote after what the slaves \
             received may be lost"
        ));
    }
    if fence == Fence::None {
        plan.warnings.push(format!(
            "{old_name} is not fenced: until it is stopped, applications that still reach it \
             can write there"
        ));
    }
    let mut steps = vec![step(vec![], Act::Lock)];
    if fence == Fence::StopServer {
        steps.push(step(
            o_(),
            Act::StopServer {
                port: old.mysql.port,
            },
        ));
    }
    steps.push(step(slaves.clone(), Act::StopIo));
    steps.push(step(t_(), Act::CheckRanking { force: opts.force }));
    if disk && !gtid {
        // Every slave reaches the most advanced one's position in the old master's log (from
        // its disk) before the target takes over: re-pointed at the target's own coordinates,
        // none may miss a transaction or get one twice. Which ones are behind is known only
        // once their IO threads stopped.
        steps.push(step(slaves.clone(), Act::CatchUpFromDisk));
    }
    steps.push(step(
        t_(),
        Act::EnsureUsers {
            user: topo.replication.user.clone(),
            replicas: future.clone(),
        },
    ));
    steps.push(step(t_(), Act::Detach));
    if disk {
        steps.push(step(t_(), Act::Salvage));
    }
    steps.push(step(t_(), Act::MakeWritable));
    steps.push(step(t_(), Act::Record));
    if !plan.others.is_empty() {
        steps.push(step(plan.others.clone(), Act::Repoint { gtid }));
    }
    steps.push(step(vec![], Act::RewriteFile));
    plan.steps = steps;
    plan.ranking = Some(ranking);
    Ok(Some(plan))
}

fn force_risk(fence: &Fence, old: &str) -> String {
    match fence {
        Fence::StopServer => format!(
            " (with --force, repltool stops the server on {old} over SSH and confirms it is \
             down before anything else)"
        ),
        Fence::None => format!(
            " (with --force nothing can fence {old}: if its server is alive, applications that \
             still reach it can write there, and those writes are lost)"
        ),
        _ => String::new(),
    }
}

/// The file afterwards: the target has no master; the old master and the other slaves
/// replicate from it (the pair: only read_only moves).
pub(crate) fn file_edits(
    topo: &Topology,
    t: &Host,
    old: &Host,
    pair: bool,
) -> BTreeMap<String, (usize, HostEdit)> {
    let mut edits = BTreeMap::new();
    if pair {
        edits.insert(
            old.name.clone(),
            (
                old.line,
                HostEdit {
                    master: None,
                    read_only: Some(Some(true)),
                },
            ),
        );
        edits.insert(
            t.name.clone(),
            (
                t.line,
                HostEdit {
                    master: None,
                    read_only: Some(None),
                },
            ),
        );
        return edits;
    }
    edits.insert(
        t.name.clone(),
        (
            t.line,
            HostEdit {
                master: Some(None),
                read_only: None,
            },
        ),
    );
    edits.insert(
        old.name.clone(),
        (
            old.line,
            HostEdit {
                master: Some(Some(t.name.clone())),
                read_only: None,
            },
        ),
    );
    for s in old.slaves.iter().filter(|s| **s != t.name) {
        if let Some(sh) = topo.host(s) {
            edits.insert(
                s.clone(),
                (
                    sh.line,
                    HostEdit {
                        master: Some(Some(t.name.clone())),
                        read_only: None,
                    },
                ),
            );
        }
    }
    edits
}

/// Statements as shown, joined.
fn shown(stmts: &[Sql]) -> String {
    stmts
        .iter()
        .map(|s| s.shown().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

impl PromotePlan {
    fn w(&self, host: &str) -> Words {
        self.flavors
            .get(host)
            .map(|f| f.words())
            .unwrap_or_else(Words::unknown)
    }
    /// The host's flavor, when it answered.
    pub fn flavor(&self, host: &str) -> Option<Flavor> {
        self.flavors.get(host).copied()
    }

    /// One line per host group of a step, in the verbs of the servers it runs on.
    fn lines(&self, s: &Step) -> Vec<String> {
        let (t, o) = (self.target.as_str(), self.old.as_str());
        let list = s.hosts.join(", ");
        let wt = self.w(t);
        let wo = self.w(o);
        let each = |f: &dyn Fn(&str, Words) -> String| -> Vec<String> {
            s.hosts.iter().map(|h| f(h, self.w(h))).collect()
        };
        match &s.act {
            Act::Lock => vec![
                "take the cluster lock (a named lock on every server that answers, and the topology file); another repltool run holding it: refuse".to_string(),
            ],
            Act::EnsureUsers { user, replicas } => vec![format!(
                "{t}: replication user {user} for the addresses of {} (REPLICATION SLAVE only; kept out of the binary log)",
                replicas.join(", ")
            )],
            Act::CatchUp => vec![format!(
                "{list}: check each replicates from {o}, then catch up with {o} before any lock ({}){}",
                wt.pos_wait,
                match self.flavor(t).and_then(|f| f.checkpoint_period_var()) {
                    Some(v) => format!(
                        "; {v} = 1 ms until the switchover ends (the multi-threaded applier's position moves at its checkpoints)"
                    ),
                    None => String::new(),
                }
            )],
            Act::Freeze => vec![match self.flavor(o) {
                Some(f) => {
                    let mut st = vec![f.lock_wait_timeout(self.timeout_secs)];
                    st.extend(f.set_read_only(true));
                    st.push(f.flush_tables_with_read_lock());
                    st.push(f.show_master_status());
                    format!("{o}: {}  (writes blocked from here)", shown(&st))
                }
                None => format!("{o}: {}; {}", wo.read_only_on, wo.read_lock),
            }],
            Act::WaitFrozen => vec![format!(
                "{list}: {}(file, pos, timeout) at those coordinates; if any cannot: {} and read_only = OFF on {o} (read back), nothing else changed",
                wt.pos_wait, wo.unlock
            )],
            Act::StopServer { port } => vec![format!(
                "{o}: stop the server over SSH (its service's stop command, then SIGKILL of what listens on port {port}), and confirm nothing listens before its binary log is read"
            )],
            Act::StopIo => each(&|h, w| {
                format!(
                    "{h}: {} IO_THREAD; wait until the SQL thread applied everything received (coordinates)",
                    w.stop()
                )
            }),
            Act::CheckRanking { force } => vec![format!(
                "compare where each stopped in {o}'s log; {}",
                if *force {
                    format!("--force: promote {t} even if another slave is ahead")
                } else if self.steps.iter().any(|s| s.act == Act::Salvage) {
                    format!(
                        "if {t} is behind another slave, it gets what it lacks from {o}'s binary log on disk; refuse if that cannot be read"
                    )
                } else {
                    format!("refuse if {t} is behind another slave")
                }
            )],
            Act::CatchUpFromDisk => vec![format!(
                "{list}: each that stopped behind the most advanced of them applies the part of {o}'s binary log it lacks (read from its disk), up to there"
            )],
            Act::Detach => vec![format!(
                "{t}: {}; {}; {}",
                wt.stop(),
                wt.show_master,
                wt.reset_all()
            )],
            Act::Salvage => vec![format!(
                "{t}: apply what no slave received, read from {o}'s binary log on its disk (once its server is confirmed down)"
            )],
            Act::MakeWritable => {
                let off = self
                    .flavor(t)
                    .map(|f| shown(&f.set_read_only(false)))
                    .unwrap_or_else(|| wt.read_only_off.to_string());
                vec![match self.mode {
                    Mode::PairSwitch | Mode::PairFailover => format!(
                        "{t}: {off}  ({t} takes the writes; auto_increment untouched)"
                    ),
                    Mode::Resume => format!(
                        "{t}: {off}  (only once {o} is confirmed read-only or down)"
                    ),
                    _ => format!("{t}: {off}  (writes resume on {t})"),
                }]
            }
            Act::Record => vec![format!(
                "{t}: record the promotion in repltool.promotions ({o}'s identity and position), so `init` rejoins {o} at the right place"
            )],
            Act::Repoint { gtid } => each(&|h, w| {
                format!(
                    "{h}: {}; {}; {} {t} {}; {}",
                    w.stop(),
                    w.reset_all(),
                    w.change,
                    if *gtid { "by GTID" } else { "at its coordinates" },
                    w.start()
                )
            }),
            Act::RepointOld { gtid } => vec![format!(
                "{o}: {}; {}; {} {t} {}; {}  (stays read-only)",
                wo.unlock,
                wo.reset_all(),
                wo.change,
                if *gtid { "by GTID" } else { "at its coordinates" },
                wo.start()
            )],
            Act::PairFence => vec![match self.flavor(o) {
                Some(f) => {
                    let mut st = vec![f.lock_wait_timeout(self.timeout_secs)];
                    st.extend(f.set_read_only(true));
                    st.push(f.show_master_status());
                    format!("{o}: {}  (writes stop on {o})", shown(&st))
                }
                None => format!("{o}: read_only = ON"),
            }],
            Act::PairWait => vec![format!(
                "{t}: wait until it has applied everything {o} wrote ({})",
                wt.pos_wait
            )],
            Act::PairStopIo => vec![format!(
                "{t}: {} IO_THREAD; wait until the SQL thread applied all it received",
                wt.stop()
            )],
            Act::ResumeCheckOld => vec![format!(
                "{o}: if it answers, it must be read-only (made so if writable) before {t} is made writable"
            )],
            Act::ResumeRepoint { record } => each(&|h, w| {
                format!(
                    "{h}: if it stands where {t} took over ({}:{} of {o}'s log): {}; {}; {} {t} at {}:{}; {}",
                    record.slaves_pos.0,
                    record.slaves_pos.1,
                    w.stop(),
                    w.reset_all(),
                    w.change,
                    record.new_pos.0,
                    record.new_pos.1,
                    w.start()
                )
            }),
            Act::DrainWriter => vec![if matches!(self.fence, Some(Fence::None | Fence::StopServer)) {
                format!(
                    "{list}: writer endpoint to no server, its sessions ended (HAProxy: every writer server in maintenance and `shutdown sessions`; nginx: writer upstream down, graceful reload, previous workers ended): no application reaches {o} through them"
                )
            } else {
                format!(
                    "{list}: HAProxy's writer endpoint to no server, its sessions ended (every writer server in maintenance and `shutdown sessions`): no application reaches {o} through it (nginx: at the reload that points it)"
                )
            }],
            Act::PointWriter => vec![format!(
                "{list}: writer endpoint to {t} only, the sessions it held on {o} ended (HAProxy: every other writer server in maintenance and `shutdown sessions`, then {t} ready, one admin-socket command; nginx: one graceful reload, then the previous workers end){}",
                if matches!(self.mode, Mode::Failover | Mode::PairFailover) {
                    "; a proxy that fails is reported, the promote goes on"
                } else {
                    ""
                }
            )],
            Act::SyncProxies => vec![format!(
                "{list}: configuration rewritten for the new topology (writer {t}; reader endpoints over the slaves that replicate), at runtime where HAProxy allows, so a reload keeps it"
            )],
            Act::RewriteFile => vec![format!(
                "rewrite the topology file (backup kept): {}",
                self.edits
                    .iter()
                    .map(|(h, (_, e))| {
                        let mut parts = Vec::new();
                        match &e.master {
                            Some(Some(m)) => parts.push(format!("master: {m}")),
                            Some(None) => parts.push("no master".to_string()),
                            None => {}
                        }
                        match &e.read_only {
                            Some(Some(b)) => parts.push(format!("read_only: {b}")),
                            Some(None) => parts.push("writable".to_string()),
                            None => {}
                        }
                        format!("{h} ({})", parts.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            )],
        }
    }

    /// The plan as text: for `--dry-run`, the confirmation and the golden cases.
    pub fn render(&self) -> String {
        let mut out = format!("{} {} -> {}\n", self.mode.as_str(), self.old, self.target);
        let _ = writeln!(out, "why: {}", self.reason);
        if let Some(r) = &self.ranking {
            let pos: Vec<String> = r
                .positions
                .iter()
                .map(|(n, (f, p))| format!("{n} {f}:{p}"))
                .collect();
            let _ = writeln!(
                out,
                "received from {}: {} (most advanced: {})",
                self.old,
                pos.join(", "),
                r.best
            );
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let mut i = 0;
        for s in &self.steps {
            for l in self.lines(s) {
                i += 1;
                let _ = writeln!(out, "{i:>2}. {l}");
            }
        }
        for s in &self.unreachable {
            let _ = writeln!(
                out,
                "    {s}: does not answer; `repltool init` re-points it at {} when it is back",
                self.target
            );
        }
        out
    }
}

#[cfg(test)]
mod tests;
