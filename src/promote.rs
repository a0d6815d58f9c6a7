//! `repltool promote HOST`: switchover when the master answers, failover when it does not,
//! following the manual (6-9): block writes only while the slaves catch up, never lose an
//! acknowledged transaction that could be kept, never leave two writable masters, and leave the
//! file so that a later `init` keeps the new master.

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use mysql::prelude::Queryable;

use crate::error::{input, problem};
use crate::execute::{flavor_of, remove_file, replica_status, run_sql, write_defaults};
use crate::flavor::{ChangeMaster, Flavor, Sql};
use crate::observe::{self, query_columns, query_one, Facts};
use crate::plan::CANARY_SCHEMA;
use crate::topology::rewrite::{self, HostEdit};
use crate::topology::{Host, Role, Topology};
use crate::transport::{shell_quote, HostSession};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Switchover,
    Failover,
}

/// What promote will do, decided from the file and what was observed. Pure.
#[derive(Debug, Clone)]
pub struct PromotePlan {
    pub target: String,
    pub old: String,
    pub mode: Mode,
    /// A master-master pair: only the active writer changes.
    pub pair: bool,
    /// The old master's other direct slaves that answer (re-pointed at the target).
    pub others: Vec<String>,
    /// The old master's other slaves that do not answer (`init` re-points them later).
    pub unreachable: Vec<String>,
    /// The file rewrite: host -> (line, edit).
    pub edits: BTreeMap<String, (usize, HostEdit)>,
}

pub struct PromoteOptions {
    pub dry_run: bool,
    pub yes: bool,
    pub force: bool,
    pub timeout: Duration,
}

/// Decide switchover or failover and the new shape of the file.
pub fn plan_promote(
    topo: &Topology,
    facts: &HashMap<String, Facts>,
    target: &str,
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
        .ok_or_else(|| anyhow!("{old_name}: not in the file"))?;
    let pair = t.role == Role::MasterMaster;
    if !pair && old.master.is_some() {
        return Err(problem(format!(
            "{target} replicates from {old_name}, which is itself a slave (a relay): promote \
             {old_name}'s master chain top-down, or change the file"
        )));
    }
    let up = |n: &str| facts.get(n).map(|f| f.sql.is_some()).unwrap_or(false);
    if !up(target) {
        let why = facts
            .get(target)
            .and_then(|f| f.sql_error.clone())
            .unwrap_or_default();
        return Err(problem(format!(
            "{target} does not answer ({why}); only a running server can become the master"
        )));
    }
    if pair && !topo.writable(t) && !topo.writable(old) {
        return Err(problem(format!(
            "neither member of the pair {target}/{old_name} is writable in the file"
        )));
    }
    let mode = if up(&old_name) {
        Mode::Switchover
    } else {
        Mode::Failover
    };
    let mut others = Vec::new();
    let mut unreachable = Vec::new();
    if !pair {
        for s in &old.slaves {
            if s == target {
                continue;
            }
            if up(s) {
                others.push(s.clone());
            } else {
                unreachable.push(s.clone());
            }
        }
    }
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
    } else {
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
                    master: Some(Some(target.to_string())),
                    read_only: None,
                },
            ),
        );
        for s in old.slaves.iter().filter(|s| s.as_str() != target) {
            if let Some(sh) = topo.host(s) {
                edits.insert(
                    s.clone(),
                    (
                        sh.line,
                        HostEdit {
                            master: Some(Some(target.to_string())),
                            read_only: None,
                        },
                    ),
                );
            }
        }
    }
    Ok(Some(PromotePlan {
        target: target.to_string(),
        old: old_name,
        mode,
        pair,
        others,
        unreachable,
        edits,
    }))
}

impl PromotePlan {
    /// The plan in words, for --dry-run and the confirmation.
    pub fn render(&self) -> String {
        let (t, o) = (&self.target, &self.old);
        let mut v: Vec<String> = Vec::new();
        match (self.pair, self.mode) {
            (true, Mode::Switchover) => {
                v.push(format!(
                    "{o}: SET GLOBAL read_only = ON (writes stop on {o})"
                ));
                v.push(format!(
                    "{t}: wait until it has applied everything {o} wrote (MASTER_POS_WAIT)"
                ));
                v.push(format!("{t}: SET GLOBAL read_only = OFF ({t} takes the writes; auto_increment untouched)"));
            }
            (true, Mode::Failover) => {
                v.push(format!("{o} does not answer: failover inside the pair"));
                v.push(format!(
                    "{t}: STOP SLAVE IO_THREAD, wait until the SQL thread applied all it received"
                ));
                v.push(format!("{t}: SET GLOBAL read_only = OFF"));
            }
            (false, Mode::Switchover) => {
                let all: Vec<&str> = std::iter::once(t.as_str())
                    .chain(self.others.iter().map(|s| s.as_str()))
                    .collect();
                v.push(format!(
                    "{t}: make sure the replication user exists for the slaves' addresses"
                ));
                v.push(format!(
                    "{}: catch up with {o} before any lock (MASTER_POS_WAIT)",
                    all.join(", ")
                ));
                v.push(format!("{o}: SET GLOBAL read_only = ON; FLUSH TABLES WITH READ LOCK; SHOW MASTER STATUS  (writes blocked from here)"));
                v.push(format!("{}: MASTER_POS_WAIT(file, pos, timeout); abort and make {o} writable again if any cannot catch up", all.join(", ")));
                v.push(format!("{t}: STOP SLAVE; SHOW MASTER STATUS; RESET SLAVE ALL; SET GLOBAL read_only = OFF  (writes resume on {t})"));
                for s in &self.others {
                    v.push(format!(
                        "{s}: STOP SLAVE; CHANGE MASTER TO {t} at its coordinates; START SLAVE"
                    ));
                }
                v.push(format!("{o}: UNLOCK TABLES; CHANGE MASTER TO {t} at its coordinates; START SLAVE (stays read-only)"));
            }
            (false, Mode::Failover) => {
                let all: Vec<&str> = std::iter::once(t.as_str())
                    .chain(self.others.iter().map(|s| s.as_str()))
                    .collect();
                v.push(format!("{o} does not answer: failover"));
                v.push(format!("{}: STOP SLAVE IO_THREAD; wait until the SQL thread applied everything received", all.join(", ")));
                v.push(format!("compare where each stopped; refuse if {t} is behind another slave (--force overrides)"));
                v.push(format!("if {o}'s machine still answers over SSH: read its binary logs from disk past that point and apply them to {t}"));
                v.push(format!("{t}: STOP SLAVE; SHOW MASTER STATUS; RESET SLAVE ALL; SET GLOBAL read_only = OFF"));
                for s in &self.others {
                    v.push(format!(
                        "{s}: STOP SLAVE; CHANGE MASTER TO {t} at its coordinates; START SLAVE"
                    ));
                }
            }
        }
        for s in &self.unreachable {
            v.push(format!(
                "{s}: does not answer; `repltool init` re-points it at {t} when it is back"
            ));
        }
        let edits: Vec<String> = self
            .edits
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
            .collect();
        v.push(format!(
            "rewrite the topology file (backup kept): {}",
            edits.join("; ")
        ));
        let mut out = format!(
            "{} {} -> {}:\n",
            match self.mode {
                Mode::Switchover => "switchover",
                Mode::Failover => "failover",
            },
            self.old,
            self.target
        );
        for (i, l) in v.iter().enumerate() {
            out.push_str(&format!("{:>2}. {l}\n", i + 1));
        }
        out
    }
}

type Sessions = HashMap<String, Mutex<Box<dyn HostSession>>>;

struct Run<'a> {
    topo: &'a Topology,
    sessions: Sessions,
    timeout: Duration,
    log: Mutex<Vec<String>>,
    started: Instant,
}

impl Run<'_> {
    fn sql(&self, name: &str) -> Result<mysql::Conn> {
        let host = self
            .topo
            .host(name)
            .ok_or_else(|| anyhow!("{name}: not in the file"))?;
        let m = self
            .sessions
            .get(name)
            .ok_or_else(|| anyhow!("{name}: no session"))?;
        let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
        observe::connect_sql_io(
            s.as_mut(),
            host,
            self.timeout.min(Duration::from_secs(10)),
            self.timeout.saturating_add(Duration::from_secs(30)),
        )
    }
    fn note(&self, s: String) {
        eprintln!("[{:>6.3}s] {s}", self.started.elapsed().as_secs_f64());
        self.log.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }
    /// Progress that is not a change (stderr only, with the time since the start).
    fn trace(&self, s: &str) {
        eprintln!("[{:>6.3}s] {s}", self.started.elapsed().as_secs_f64());
    }
    fn changes(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// `f` on several hosts at once, each result with its host's name.
fn parallel<T: Send>(
    names: &[String],
    f: impl Fn(&str) -> Result<T> + Sync,
) -> Vec<(String, Result<T>)> {
    let results = crate::par::each(names, |n| f(n));
    names.iter().cloned().zip(results).collect()
}

fn master_status(conn: &mut mysql::Conn, f: &Flavor) -> Result<(String, u64)> {
    let ms = query_columns(conn, f.show_master_status().text())?
        .into_iter()
        .next()
        .map(|c| observe::master_status_from_columns(&c))
        .transpose()?
        .ok_or_else(|| anyhow!("SHOW MASTER STATUS returned nothing: the binary log is off"))?;
    Ok((ms.file, ms.position))
}

fn pos_wait(conn: &mut mysql::Conn, f: &Flavor, file: &str, pos: u64, secs: u32) -> Result<()> {
    let r = query_one(conn, f.pos_wait(file, pos, secs).text())?;
    match r.as_deref().and_then(|v| v.parse::<i64>().ok()) {
        Some(n) if n >= 0 => Ok(()),
        Some(-1) => bail!("did not reach {file}:{pos} within {secs}s"),
        _ => bail!("is not replicating (MASTER_POS_WAIT returned NULL)"),
    }
}

/// Binlog file order: by the numeric suffix.
fn file_key(f: &str) -> (String, u64) {
    match f.rsplit_once('.') {
        Some((base, n)) => (base.to_string(), n.parse().unwrap_or(0)),
        None => (f.to_string(), 0),
    }
}

fn change_to(topo: &Topology, target: &Host, file: &str, pos: u64) -> ChangeMaster {
    crate::plan::init::change_master_to(topo, target, file, pos)
}

/// Record a promotion on the new master, so that `init` can rejoin the old master at the right
/// place later (the row replicates to every slave with the rest).
/// `old_pos`: the end of what the new master has of the old master's log (for the rejoin);
/// `slaves_pos`: where the slaves stood in that log when `new_pos` was taken (for a resume).
fn record_promotion(
    conn: &mut mysql::Conn,
    old: &str,
    old_pos: &(String, u64),
    slaves_pos: &(String, u64),
    new: &str,
    new_pos: &(String, u64),
) -> Result<()> {
    let q = crate::flavor::quote;
    run_sql(
        conn,
        &[
            Sql::plain(format!("CREATE DATABASE IF NOT EXISTS {CANARY_SCHEMA}")),
            Sql::plain(format!(
                "CREATE TABLE IF NOT EXISTS {CANARY_SCHEMA}.promotions (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
                 old_master VARCHAR(255) NOT NULL, old_file VARCHAR(255) NOT NULL, old_pos BIGINT UNSIGNED NOT NULL, \
                 slaves_file VARCHAR(255) NOT NULL, slaves_pos BIGINT UNSIGNED NOT NULL, \
                 new_master VARCHAR(255) NOT NULL, new_file VARCHAR(255) NOT NULL, new_pos BIGINT UNSIGNED NOT NULL, \
                 promoted_at TIMESTAMP(6) NOT NULL) ENGINE=InnoDB"
            )),
            Sql::plain(format!(
                "INSERT INTO {CANARY_SCHEMA}.promotions (old_master, old_file, old_pos, slaves_file, slaves_pos, new_master, new_file, new_pos, promoted_at) \
                 VALUES ({}, {}, {}, {}, {}, {}, {}, {}, NOW(6))",
                q(old), q(&old_pos.0), old_pos.1, q(&slaves_pos.0), slaves_pos.1, q(new), q(&new_pos.0), new_pos.1
            )),
        ],
    )
}

/// Transactions in `conn`'s binary logs after (file, pos): events a new master does not have.
pub fn errant_transactions(conn: &mut mysql::Conn, from: &(String, u64)) -> Result<Vec<String>> {
    let files: Vec<String> = query_columns(conn, "SHOW BINARY LOGS")?
        .into_iter()
        .filter_map(|r| r.into_iter().next().and_then(|(_, v)| v))
        .filter(|f| file_key(f) >= file_key(&from.0))
        .collect();
    let mut found = Vec::new();
    for f in files {
        let start = if f == from.0 { from.1 } else { 4 };
        let rows = query_columns(
            conn,
            &format!(
                "SHOW BINLOG EVENTS IN {} FROM {start}",
                crate::flavor::quote(&f)
            ),
        )?;
        for r in rows {
            let get = |k: &str| {
                r.iter()
                    .find(|(c, _)| c == k)
                    .and_then(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
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
                found.push(format!("{f}:{} {ty} {}", get("Pos"), get("Info")));
            }
        }
    }
    Ok(found)
}

/// `repltool promote`.
pub fn run(path: &Path, topo: &Topology, target: &str, opts: &PromoteOptions) -> Result<i32> {
    let started = Instant::now();
    // Sessions and facts, each host bounded; a dead master is a fact, not an error.
    let conn_timeout = opts.timeout.min(Duration::from_secs(5));
    let (sessions, failed) = crate::transport::connect_all(topo, Some(conn_timeout));
    let ssh_up: HashMap<String, bool> = topo
        .hosts
        .iter()
        .map(|h| (h.name.clone(), sessions.contains_key(&h.name)))
        .collect();
    let facts = observe::observe_all(topo, &sessions, &failed, conn_timeout, false);
    eprintln!(
        "[{:>6.3}s] observed {} hosts",
        started.elapsed().as_secs_f64(),
        topo.hosts.len()
    );
    let Some(plan) = plan_promote(topo, &facts, target)? else {
        println!(
            "{target} is already the master in {}; nothing to do",
            path.display()
        );
        return Ok(0);
    };
    // A file promote could not rewrite safely stops it before anything changes.
    rewrite::check_file(path, &plan.edits).map_err(|e| {
        crate::error::input(format!(
            "{e:#}\npromote {target} refused: nothing was changed."
        ))
    })?;
    println!("{}", plan.render());
    if opts.dry_run {
        println!("(dry run: nothing was changed)");
        return Ok(0);
    }
    if !opts.yes {
        if !std::io::stdin().is_terminal() {
            return Err(problem(
                "promote changes the cluster: run it on a terminal to confirm, or pass --yes",
            ));
        }
        eprint!("Proceed? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("not confirmed; nothing was changed");
            return Ok(1);
        }
    }
    let run = Run {
        topo,
        sessions,
        timeout: opts.timeout,
        log: Mutex::new(Vec::new()),
        started,
    };
    // An earlier promote to the same host that stopped half-way: the target is promoted (its
    // promotion is recorded) but the file was not rewritten. Finish the job.
    let resume_from = facts
        .get(target)
        .and_then(|f| f.sql.as_ref())
        .filter(|s| {
            s.replica
                .as_ref()
                .map(|r| r.master_host.is_empty())
                .unwrap_or(true)
        })
        .and_then(|s| {
            s.promotions
                .iter()
                .rev()
                .find(|p| p.new_master == target && p.old_master == plan.old)
                .cloned()
        });
    let result = match (plan.pair, plan.mode) {
        (false, _) if resume_from.is_some() => {
            resume(&run, &plan, resume_from.as_ref().expect("checked"))
        }
        (true, _) => pair_switch(&run, &plan),
        (false, Mode::Switchover) => switchover(&run, &plan),
        (false, Mode::Failover) => failover(
            &run,
            &plan,
            opts.force,
            ssh_up.get(&plan.old).copied().unwrap_or(false),
        ),
    };
    match result {
        Ok(summary) => {
            rewrite_file(path, topo, &plan)?;
            println!("{summary}");
            println!(
                "promoted {} in {:.3}s; {} rewritten (previous kept as {}.bak)",
                plan.target,
                started.elapsed().as_secs_f64(),
                path.display(),
                path.display()
            );
            Ok(0)
        }
        Err(e) => {
            let refused = matches!(
                e.downcast_ref::<crate::error::Failure>(),
                Some(crate::error::Failure::Problem(_))
            );
            let changes = run.changes();
            let mut msg = format!("promote {} failed: {e:#}", plan.target);
            for l in crate::transport::link_problems(topo, &run.sessions) {
                msg.push_str(&format!("\n{l}"));
            }
            if changes.is_empty() {
                msg.push_str("\nnothing was changed.");
            } else {
                msg.push_str("\nalready changed (run the same promote again to finish the job):");
                for c in changes {
                    msg.push_str(&format!("\n  - {c}"));
                }
            }
            // A refusal stays a refusal (exit 1); anything else could not run (exit 2).
            Err(if refused { problem(msg) } else { anyhow!(msg) })
        }
    }
}

fn rewrite_file(path: &Path, topo: &Topology, plan: &PromotePlan) -> Result<()> {
    // Checked again (the file may have changed during the promote), backup and new file
    // written with the file's own mode.
    let bak = rewrite::rewrite_file(path, &plan.edits).map_err(|e| {
        anyhow!(
            "the cluster was promoted but {} could not be rewritten: {e:#}. Edit it by hand so that {} has no master{}",
            path.display(),
            plan.target,
            if plan.pair { String::new() } else { format!(" and {} replicates from {}", plan.old, plan.target) }
        )
    })?;
    let _ = topo;
    // The rewritten file must load, or the next init could not keep the promote.
    crate::topology::load(path).with_context(|| {
        format!(
            "{} was rewritten but no longer loads; the previous version is {}",
            path.display(),
            bak.display()
        )
    })?;
    Ok(())
}

/// Finish a promote that stopped after the target was promoted: the target writable, every
/// other slave and the old master (if it answers) re-pointed at the recorded position, each
/// only if it stands exactly where the old master's log ended (or already follows the target).
fn resume(run: &Run, plan: &PromotePlan, rec: &observe::Promotion) -> Result<String> {
    let (t, o) = (plan.target.as_str(), plan.old.as_str());
    let target = run.topo.host(t).ok_or_else(|| anyhow!("{t}?"))?;
    eprintln!(
        "{t} was already promoted by an earlier run (recorded: {o} up to {}:{} = {t} at {}:{}); finishing",
        rec.old_pos.0, rec.old_pos.1, rec.new_pos.0, rec.new_pos.1
    );
    let mut tc = run.sql(t)?;
    let tf = flavor_of(&mut tc)?;
    run_sql(&mut tc, &tf.set_read_only(false))?;
    let mut rest: Vec<String> = plan.others.clone();
    if plan.mode == Mode::Switchover {
        rest.push(o.to_string());
    }
    let mut errors = Vec::new();
    for (n, r) in parallel(&rest, |n| -> Result<bool> {
        let mut c = run.sql(n)?;
        let f = flavor_of(&mut c)?;
        let st = replica_status(&mut c, &f)?;
        if let Some(r) = &st {
            if r.master_host == target.address && r.master_port == target.mysql.port {
                return Ok(false);
            }
        }
        if n == o {
            let errant = errant_transactions(&mut c, &rec.old_pos)?;
            if !errant.is_empty() {
                bail!(
                    "has {} event(s) after {}:{} that {t} lacks; not re-pointed (see `repltool init`)",
                    errant.len(), rec.old_pos.0, rec.old_pos.1
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
        if n == o && run.topo.replication.gtid {
            stmts.extend(f.adopt_own_gtids());
        }
        stmts.push(f.change_master(&change_to(run.topo, target, &rec.new_pos.0, rec.new_pos.1)));
        stmts.push(f.start_replica());
        run_sql(&mut c, &stmts)?;
        Ok(true)
    }) {
        match r {
            Ok(true) => run.note(format!(
                "{n}: replicates from {t} (from {}:{})",
                rec.new_pos.0, rec.new_pos.1
            )),
            Ok(false) => {}
            Err(e) => errors.push(format!("{n}: {e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{t} is the master, but: {}", errors.join("; "));
    }
    Ok(format!("finished the interrupted promote {o} -> {t}"))
}

/// Make sure the target has the replication user for every address that will replicate from it.
fn ensure_users(run: &Run, conn: &mut mysql::Conn, target: &str, from: &[String]) -> Result<()> {
    let f = flavor_of(conn)?;
    let have: Vec<String> = query_columns(
        conn,
        &format!(
            "SELECT Host FROM mysql.user WHERE User = {}",
            crate::flavor::quote(&run.topo.replication.user)
        ),
    )?
    .into_iter()
    .filter_map(|r| r.into_iter().next().and_then(|(_, v)| v))
    .collect();
    let mut stmts = Vec::new();
    let mut done: Vec<&str> = Vec::new();
    for h in from {
        let Some(host) = run.topo.host(h) else {
            continue;
        };
        let a = host.address.as_str();
        if have.iter().any(|x| x == a) || done.contains(&a) {
            continue;
        }
        done.push(a);
        stmts.extend(f.create_repl_user(
            &run.topo.replication.user,
            a,
            &run.topo.replication.password,
        ));
    }
    if !stmts.is_empty() {
        // Not in the binary log: the slaves have their own, and this is not application data.
        let mut all = vec![Sql::plain("SET SESSION sql_log_bin = 0")];
        all.extend(stmts);
        all.push(Sql::plain("SET SESSION sql_log_bin = 1"));
        run_sql(conn, &all)?;
        run.note(format!(
            "{target}: created the replication user for {}",
            done.join(", ")
        ));
    }
    Ok(())
}

fn pair_switch(run: &Run, plan: &PromotePlan) -> Result<String> {
    let (t, o) = (&plan.target, &plan.old);
    let secs = run.timeout.as_secs().max(1) as u32;
    let mut tc = run.sql(t)?;
    let tf = flavor_of(&mut tc)?;
    match plan.mode {
        Mode::Switchover => {
            let mut oc = run.sql(o)?;
            let of = flavor_of(&mut oc)?;
            let t0 = Instant::now();
            run_sql(&mut oc, &of.set_read_only(true))?;
            run.note(format!("{o}: read_only = ON"));
            let (file, pos) = master_status(&mut oc, &of)?;
            if let Err(e) = pos_wait(&mut tc, &tf, &file, pos, secs) {
                run_sql(&mut oc, &of.set_read_only(false))?;
                return Err(problem(format!(
                    "{t} {e}; {o} is writable again and nothing else changed"
                )));
            }
            run_sql(&mut tc, &tf.set_read_only(false))?;
            run.note(format!("{t}: read_only = OFF (the active writer)"));
            Ok(format!(
                "writes moved from {o} to {t}; blocked {:.1} ms",
                t0.elapsed().as_secs_f64() * 1000.0
            ))
        }
        Mode::Failover => {
            wait_applied(run, t)?;
            run_sql(&mut tc, &tf.set_read_only(false))?;
            run.note(format!(
                "{t}: read_only = OFF (the active writer; {o} is down)"
            ));
            Ok(format!("{o} is down; {t} takes the writes"))
        }
    }
}

fn switchover(run: &Run, plan: &PromotePlan) -> Result<String> {
    let (t, o) = (plan.target.as_str(), plan.old.as_str());
    let secs = run.timeout.as_secs().max(1) as u32;
    let target = run.topo.host(t).ok_or_else(|| anyhow!("{t}?"))?;
    let old_host = run.topo.host(o).ok_or_else(|| anyhow!("{o}?"))?;
    // One connection per host, opened at once and kept for every step: connecting through an
    // SSH forward costs more than the statements themselves.
    let mut names: Vec<String> = vec![t.to_string()];
    names.extend(plan.others.iter().cloned());
    names.push(o.to_string());
    let opened = crate::par::each(&names, |n| {
        let mut c = run.sql(n)?;
        let f = flavor_of(&mut c)?;
        Ok((n.clone(), c, f))
    });
    let mut conns: Vec<(String, mysql::Conn, Flavor)> = Vec::new();
    for r in opened {
        conns.push(r.map_err(|e| problem(format!("{e:#}; nothing was changed")))?);
    }
    let (_, mut oc, of) = conns.pop().ok_or_else(|| anyhow!("{o}?"))?;
    run.trace("connected to every server");
    // Every replica of the target-to-be needs the replication user there.
    let mut future: Vec<String> = vec![o.to_string()];
    future.extend(plan.others.iter().cloned());
    ensure_users(run, &mut conns[0].1, t, &future)?;

    // Guard: every slave replicates from the old master now; then it catches up before any
    // lock, so the blocked window only covers the last few events.
    let (f0, p0) = master_status(&mut oc, &of)?;
    let ready = crate::par::each_mut(&mut conns, |(n, c, f)| {
        let r = replica_status(c, f)?.ok_or_else(|| anyhow!("{n} is not replicating"))?;
        if r.master_host != old_host.address || r.master_port != old_host.mysql.port {
            bail!(
                "{n} replicates from {}:{}, not from {o}",
                r.master_host,
                r.master_port
            );
        }
        if !r.sql_running {
            bail!(
                "{n}: its SQL thread is stopped ({}); it could not catch up",
                r.last_sql_error
            );
        }
        pos_wait(c, f, &f0, p0, secs).map_err(|e| anyhow!("{n} {e:#} (before any lock)"))
    });
    for r in ready {
        r.map_err(|e| problem(format!("{e:#}; nothing was changed")))?;
    }
    run.trace("every slave caught up before the lock");
    let t_block = Instant::now();
    run_sql(&mut oc, &of.set_read_only(true))?;
    let undo = |oc: &mut mysql::Conn| {
        let _ = oc.query_drop("UNLOCK TABLES");
        let _ = run_sql(oc, &of.set_read_only(false));
    };
    if let Err(e) = oc.query_drop("FLUSH TABLES WITH READ LOCK") {
        undo(&mut oc);
        return Err(problem(format!(
            "{o}: FLUSH TABLES WITH READ LOCK: {}; {o} is writable again, nothing changed",
            observe::sql_error_text(&e)
        )));
    }
    let (file, pos) = match master_status(&mut oc, &of) {
        Ok(x) => x,
        Err(e) => {
            undo(&mut oc);
            return Err(e);
        }
    };
    let waits = crate::par::each_mut(&mut conns, |(n, c, f)| {
        pos_wait(c, f, &file, pos, secs).map_err(|e| anyhow!("{n} {e:#}"))
    });
    for r in waits {
        if let Err(e) = r {
            undo(&mut oc);
            return Err(problem(format!(
                "{e:#}; aborted: {o} is writable again and nothing else changed"
            )));
        }
    }
    // From here on the target is the master.
    let (_, tc, tf) = &mut conns[0];
    let promote_res = (|| -> Result<(String, u64)> {
        run_sql(tc, &[tf.stop_replica()])?;
        let np = master_status(tc, tf)?;
        run_sql(tc, &[tf.reset_replica_all()])?;
        record_promotion(tc, o, &(file.clone(), pos), &(file.clone(), pos), t, &np)?;
        run_sql(tc, &tf.set_read_only(false))?;
        Ok(np)
    })();
    let (nf, np) = match promote_res {
        Ok(x) => x,
        Err(e) => {
            undo(&mut oc);
            return Err(anyhow!(
                "{t}: promoting failed: {e:#}; {o} was made writable again. Check {t}'s replication \
                 (it may be stopped) and run the promote again"
            ));
        }
    };
    let blocked = t_block.elapsed();
    run.note(format!(
        "{t}: is the master (writable; binary log at {nf}:{np})"
    ));
    crate::failpoint::hit("promote-after-target");
    // Re-point the others and the old master (its read lock released first), in parallel.
    let _ = oc.query_drop("UNLOCK TABLES");
    let mut rest: Vec<(String, mysql::Conn, Flavor)> = conns.split_off(1);
    rest.push((o.to_string(), oc, of));
    let results = crate::par::each_mut(&mut rest, |(n, c, f)| {
        let mut stmts = Vec::new();
        if replica_status(c, f)?.is_some() {
            stmts.push(f.stop_replica());
            stmts.push(f.reset_replica_all());
        }
        if n == o && run.topo.replication.gtid {
            stmts.extend(f.adopt_own_gtids());
        }
        stmts.push(f.change_master(&change_to(run.topo, target, &nf, np)));
        stmts.push(f.start_replica());
        run_sql(c, &stmts)
    });
    let mut errors = Vec::new();
    for ((n, _, _), r) in rest.iter().zip(results) {
        match r {
            Ok(()) => run.note(format!("{n}: replicates from {t} (from {nf}:{np})")),
            Err(e) => errors.push(format!("{n}: {e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "{t} is the master, but re-pointing failed on: {}",
            errors.join("; ")
        );
    }
    Ok(format!(
        "switchover {o} -> {t}: writes blocked for {:.1} ms (from read_only on {o} to writable {t})",
        blocked.as_secs_f64() * 1000.0
    ))
}

/// STOP SLAVE IO_THREAD, then wait until the SQL thread applied all that was received.
/// Returns where it stopped in the old master's binary log.
fn wait_applied(run: &Run, n: &str) -> Result<(String, u64)> {
    let mut c = run.sql(n)?;
    let f = flavor_of(&mut c)?;
    run_sql(&mut c, &[f.stop_io_thread()])?;
    let deadline = Instant::now() + run.timeout;
    loop {
        let r = replica_status(&mut c, &f)?.ok_or_else(|| anyhow!("is not replicating"))?;
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
                run.timeout.as_secs(),
                r.relay_master_log_file,
                r.exec_master_log_pos,
                r.master_log_file,
                r.read_master_log_pos
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn failover(run: &Run, plan: &PromotePlan, force: bool, old_ssh_up: bool) -> Result<String> {
    let (t, o) = (plan.target.as_str(), plan.old.as_str());
    let target = run.topo.host(t).ok_or_else(|| anyhow!("{t}?"))?;
    let mut slaves: Vec<String> = vec![t.to_string()];
    slaves.extend(plan.others.iter().cloned());
    let mut stopped: HashMap<String, (String, u64)> = HashMap::new();
    for (n, r) in parallel(&slaves, |n| wait_applied(run, n)) {
        let p = r.map_err(|e| anyhow!("{n}: {e:#}"))?;
        run.note(format!(
            "{n}: IO thread stopped; applied {o}'s log up to {}:{}",
            p.0, p.1
        ));
        stopped.insert(n, p);
    }
    let key = |p: &(String, u64)| (file_key(&p.0), p.1);
    let tpos = stopped[t].clone();
    let (best_name, best) = stopped
        .iter()
        .max_by_key(|(_, p)| key(p))
        .map(|(n, p)| (n.clone(), p.clone()))
        .ok_or_else(|| anyhow!("no slave answered"))?;
    let behind = |p: &(String, u64), q: &(String, u64)| -> String {
        if p.0 == q.0 {
            format!(
                "{} bytes of {o}'s binary log ({}:{} .. {})",
                q.1.saturating_sub(p.1),
                p.0,
                p.1,
                q.1
            )
        } else {
            format!("{o}'s binary log from {}:{} to {}:{}", p.0, p.1, q.0, q.1)
        }
    };
    if key(&tpos) < key(&best) {
        let lost = behind(&tpos, &best);
        if !force {
            return Err(problem(format!(
                "{t} is behind {best_name}: promoting {t} would lose {lost} that {best_name} has. \
                 Promote {best_name} instead (`repltool promote {best_name}`), or pass --force to \
                 promote {t} anyway and lose them. The slaves' IO threads are stopped; `repltool \
                 promote {best_name}` continues from here"
            )));
        }
        eprintln!("--force: promoting {t} loses {lost} that {best_name} received");
    }
    let lagging: Vec<(String, String)> = stopped
        .iter()
        .filter(|(n, p)| n.as_str() != t && key(p) != key(&tpos))
        .map(|(n, p)| {
            (
                n.clone(),
                if key(p) < key(&tpos) {
                    behind(p, &tpos)
                } else {
                    format!("{} that {t} lacks", behind(&tpos, p))
                },
            )
        })
        .collect();
    // Slaves that stopped behind the target get the difference from the old master's binary
    // log on its disk (MHA's differential recovery); without that disk they would miss it.
    let mut behind_target: Vec<String> = lagging
        .iter()
        .filter(|(n, _)| key(&stopped[n]) < key(&tpos))
        .map(|(n, _)| n.clone())
        .collect();
    if run.topo.replication.gtid {
        // The new master logs what it replicated (log_slave_updates is on with GTID): a slave
        // behind it fetches the difference from it once re-pointed by GTID.
        for n in &behind_target {
            run.note(format!("{n}: behind {t}; it catches up from {t} by GTID"));
        }
        behind_target.clear();
    }
    if !behind_target.is_empty() && old_ssh_up {
        let tool = flavor_of(&mut run.sql(t)?)?.binlog_tool();
        let mut still = Vec::new();
        for n in behind_target {
            let res = read_old_binlog(run, o, tool, &stopped[&n], Some(&tpos))
                .and_then(|(script, txns, _)| apply_script(run, &n, &script, false).map(|_| txns));
            match res {
                Ok(txns) => run.note(format!(
                    "{n}: applied {txns} transaction(s) it had not received, from {o}'s binary log on disk (up to {}:{})",
                    tpos.0, tpos.1
                )),
                Err(e) => {
                    eprintln!("{n}: catching up from {o}'s binary log failed: {e:#}");
                    still.push(n);
                }
            }
        }
        behind_target = still;
    }
    let ahead: Vec<&(String, String)> = lagging
        .iter()
        .filter(|(n, _)| key(&stopped[n]) > key(&tpos))
        .collect();
    if (!behind_target.is_empty() || !ahead.is_empty()) && !force {
        let list: Vec<String> = lagging
            .iter()
            .filter(|(n, _)| behind_target.contains(n) || ahead.iter().any(|(a, _)| a == n))
            .map(|(n, d)| format!("{n} ({d})"))
            .collect();
        return Err(problem(format!(
            "these slaves did not stop where {t} did, {o}'s binary log could not fill the gap, and \
             re-pointing them at {t} would leave them inconsistent: {}. Re-seed them after the \
             promote, or --force",
            list.join(", ")
        )));
    }
    // Every replica of the new master, the old one when it comes back included, needs the
    // replication user there.
    let mut future: Vec<String> = vec![o.to_string()];
    future.extend(plan.others.iter().cloned());
    ensure_users(run, &mut run.sql(t)?, t, &future)?;
    // Promote the target.
    let mut tc = run.sql(t)?;
    let tf = flavor_of(&mut tc)?;
    run_sql(&mut tc, &[tf.stop_replica()])?;
    let np = master_status(&mut tc, &tf)?;
    run_sql(&mut tc, &[tf.reset_replica_all()])?;
    run.note(format!(
        "{t}: replication from {o} removed (RESET SLAVE ALL)"
    ));
    // Salvage what no slave received, from the dead master's disk.
    let salvage_note;
    let mut old_end = tpos.clone();
    if old_ssh_up {
        match salvage(run, o, t, &tpos) {
            Ok((txns, end)) => {
                if txns > 0 {
                    run.note(format!("{t}: applied {txns} transaction(s) recovered from {o}'s binary log on disk"));
                }
                salvage_note =
                    format!("; recovered {txns} transaction(s) from {o}'s binary log on disk");
                old_end = end;
            }
            Err(e) => {
                salvage_note = format!("; could not read {o}'s binary log on disk ({e:#}): anything {o} wrote after {}:{} may be lost", tpos.0, tpos.1);
            }
        }
    } else {
        salvage_note = format!(
            "; {o}'s machine does not answer either: the slaves got its binary log up to {}:{}; anything written after that may be lost",
            tpos.0, tpos.1
        );
    }
    record_promotion(&mut tc, o, &old_end, &tpos, t, &np)?;
    run_sql(&mut tc, &tf.set_read_only(false))?;
    run.note(format!(
        "{t}: is the master (writable; binary log at {}:{})",
        np.0, np.1
    ));
    crate::failpoint::hit("promote-after-target");
    let mut errors = Vec::new();
    for (n, r) in parallel(&plan.others, |n| {
        let mut c = run.sql(n)?;
        let f = flavor_of(&mut c)?;
        run_sql(
            &mut c,
            &[
                f.stop_replica(),
                f.reset_replica_all(),
                f.change_master(&change_to(run.topo, target, &np.0, np.1)),
                f.start_replica(),
            ],
        )
    }) {
        match r {
            Ok(()) => run.note(format!("{n}: replicates from {t} (from {}:{})", np.0, np.1)),
            Err(e) => errors.push(format!("{n}: {e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "{t} is the master, but re-pointing failed on: {}",
            errors.join("; ")
        );
    }
    Ok(format!("failover {o} -> {t}{salvage_note}"))
}

/// The dead master's binary log on its own disk: the absolute `log_bin` path repltool's fragment
/// gives (readable while the server is down).
fn old_binlog_files(run: &Run, old: &str) -> Result<(PathBuf, Vec<String>)> {
    let oh = run.topo.host(old).ok_or_else(|| anyhow!("{old}?"))?;
    let osess = run
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

/// The events of the old master's binary log from `from` up to `stop` (or its end), as the SQL
/// script the server's binlog tool prints, with the number of transactions in it and the end
/// position read.
fn read_old_binlog(
    run: &Run,
    old: &str,
    tool: &str,
    from: &(String, u64),
    stop: Option<&(String, u64)>,
) -> Result<(Vec<u8>, u64, (String, u64))> {
    let (dir, all) = old_binlog_files(run, old)?;
    let files: Vec<String> = all
        .into_iter()
        .filter(|f| file_key(f) >= file_key(&from.0))
        .filter(|f| stop.map(|s| file_key(f) <= file_key(&s.0)).unwrap_or(true))
        .collect();
    let Some(last) = files.last().cloned() else {
        return Ok((Vec::new(), 0, from.clone()));
    };
    let osess = run
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
            size.stdout_str().trim().parse().unwrap_or(0)
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
    let out = os.run(&cmd, None, true, run.timeout)?;
    if !out.ok() {
        bail!("{tool} failed: {}", out.stderr_str().trim());
    }
    let txns = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("COMMIT") || l.contains(" Xid = "))
        .count() as u64;
    Ok((out.stdout, txns, (last, end_pos)))
}

/// Apply a binlog tool's SQL script on `host` through its client; `log` keeps it in the host's
/// own binary log (the new master: its slaves must get it too).
fn apply_script(run: &Run, host: &str, script: &[u8], log: bool) -> Result<()> {
    let h = run.topo.host(host).ok_or_else(|| anyhow!("{host}?"))?;
    let f = {
        let mut c = run.sql(host)?;
        flavor_of(&mut c)?
    };
    let sess = run
        .sessions
        .get(host)
        .ok_or_else(|| anyhow!("no session to {host}"))?;
    let mut s = sess.lock().unwrap_or_else(|e| e.into_inner());
    let def = write_defaults(s.as_mut(), h)?;
    let cmd = if log {
        f.client_command(&def.to_string_lossy())
    } else {
        f.load_command(&def.to_string_lossy())
    };
    let res = s.run(&cmd, Some(script), false, run.timeout);
    remove_file(s.as_mut(), &def);
    let res = res?;
    if !res.ok() {
        bail!(
            "applying events on {host} failed: {}",
            res.stderr_str().trim()
        );
    }
    Ok(())
}

/// Read the dead master's binary logs from its disk, from `from` on, with the server's own
/// binlog tool, and apply them to the new master. Returns (transactions applied, end position
/// in the old master's log).
fn salvage(
    run: &Run,
    old: &str,
    target: &str,
    from: &(String, u64),
) -> Result<(u64, (String, u64))> {
    // The old server's flavor is unknown while it is down; the target's (same family in one
    // cluster) names the tool.
    let tool = {
        let mut c = run.sql(target)?;
        flavor_of(&mut c)?.binlog_tool()
    };
    let (script, txns, end) = read_old_binlog(run, old, tool, from, None)?;
    if txns > 0 {
        apply_script(run, target, &script, true)?;
    }
    Ok((txns, end))
}
