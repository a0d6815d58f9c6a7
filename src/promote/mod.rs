//! `repltool promote HOST`: observe every host (SQL, and how a failed login failed; SSH, and
//! whether a server still listens on a master that does not answer) -> the pure planner
//! (`plan::promote`) -> confirmation -> the executor (`exec`) under the cluster lock -> the
//! topology file rewritten so a later `init` keeps the new master.

pub mod exec;

use std::collections::{BTreeMap, HashMap};
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::error::problem;
use crate::observe::{self, Facts};
use crate::plan::promote::{
    plan_promote, HostState, PlanOptions, PromoteFacts, PromotePlan, Shell,
};
use crate::report::Progress;
use crate::topology::rewrite;
use crate::topology::Topology;
use crate::transport::sql::{reach_of, Reach};
use crate::transport::Sessions;

pub use exec::errant_transactions;

pub struct PromoteOptions {
    pub dry_run: bool,
    pub yes: bool,
    pub force: bool,
    pub timeout: Duration,
    /// Lag above which a slave stays out of the proxies' reader endpoints.
    pub max_lag: u64,
}

/// Sessions to the proxies of the file, and why each one that could not be reached was not.
pub fn observe_proxies(
    topo: &Topology,
    timeout: Duration,
) -> (crate::proxy::ProxySessions, BTreeMap<String, String>) {
    if topo.proxies.is_empty() {
        return Default::default();
    }
    let (sessions, failed) = crate::proxy::connect_all(topo, Some(timeout));
    let down = failed
        .into_iter()
        .map(|(n, e)| (n, format!("{e:#}")))
        .collect();
    (sessions, down)
}

/// How an SSH connect failed: nothing answered (refused, timed out) or something did.
fn shell_state(e: &anyhow::Error) -> Shell {
    match reach_of(e) {
        Some(r) if r.is_down() => Shell::Down(r),
        Some(Reach::Other) => Shell::Down(Reach::Other),
        _ => Shell::Refused(format!("{e:#}")),
    }
}

/// Observe what promote decides from (the watcher's entry point; the command itself takes the
/// cluster lock between connecting and observing, see [`run`]): SQL facts of every host, how each failed login failed,
/// each host's SSH, and for hosts whose server does not answer but whose shell does, whether
/// a server still listens on the SQL port.
#[allow(dead_code)]
pub fn observe(
    topo: &Topology,
    timeout: Duration,
) -> (Sessions, HashMap<String, Facts>, HashMap<String, HostState>) {
    let (sessions, failed) = crate::transport::connect_all(topo, Some(timeout));
    let (facts, states) = observe_sessions(topo, &sessions, &failed, timeout);
    (sessions, facts, states)
}

/// [`observe`] over sessions already open (`failed`: the hosts whose SSH did not connect).
pub fn observe_sessions(
    topo: &Topology,
    sessions: &Sessions,
    failed: &[(String, anyhow::Error)],
    timeout: Duration,
) -> (HashMap<String, Facts>, HashMap<String, HostState>) {
    let (facts, states, _) = observe_sessions_on(topo, sessions, failed, timeout, Vec::new());
    (facts, states)
}

/// [`observe_sessions`], reading on the connections of `open` (the cluster lock's) where there
/// is one instead of logging in again; they are given back.
pub fn observe_sessions_on(
    topo: &Topology,
    sessions: &Sessions,
    failed: &[(String, anyhow::Error)],
    timeout: Duration,
    open: observe::HostConns,
) -> (
    HashMap<String, Facts>,
    HashMap<String, HostState>,
    observe::HostConns,
) {
    let (facts, back) = observe::observe_all_on(topo, sessions, &[], timeout, false, open);
    let mut states: HashMap<String, HostState> = HashMap::new();
    // Hosts whose SSH did not connect: their SQL is reached through that same SSH (a forward),
    // so it is as down as the SSH is; with `connect: direct` it is tried on its own.
    let direct = crate::par::each(failed, |(name, e)| {
        let h = topo.host(name).ok_or_else(|| anyhow!("{name}?"))?;
        Ok(match h.mysql.route {
            crate::topology::SqlRoute::Direct => {
                match crate::transport::sql::connect_tcp(
                    &h.address,
                    h.mysql.port,
                    &h.mysql.user,
                    h.mysql.password.expose(),
                    timeout,
                ) {
                    Ok(_) => (None, None),
                    Err(ce) => (reach_of(&ce), Some(format!("{ce:#}"))),
                }
            }
            crate::topology::SqlRoute::Forward => {
                (reach_of(e).filter(|r| r.is_down()), Some(format!("{e:#}")))
            }
        })
    });
    for ((name, e), d) in failed.iter().zip(direct) {
        let (reach, err) = d.unwrap_or((None, None));
        states.insert(
            name.clone(),
            HostState {
                sql_reach: reach,
                sql_error: err.or_else(|| Some(format!("{e:#}"))),
                shell: shell_state(e),
                listening: None,
            },
        );
    }
    let down: Vec<String> = topo
        .hosts
        .iter()
        .filter(|h| sessions.contains_key(&h.name))
        .filter(|h| facts.get(&h.name).is_none_or(|f| f.sql.is_none()))
        .map(|h| h.name.clone())
        .collect();
    // Why each reachable host's login failed, and whether something listens there.
    let probes = crate::par::each(&down, |n| {
        let h = topo.host(n).ok_or_else(|| anyhow!("{n}?"))?;
        let m = sessions.get(n).ok_or_else(|| anyhow!("{n}: no session"))?;
        let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
        let reach = match s.sql_connect(h, timeout, timeout) {
            Ok(_) => None,
            Err(e) => Some((reach_of(&e).unwrap_or(Reach::Other), format!("{e:#}"))),
        };
        let out = s.run(
            &observe::listening_script(h.mysql.port),
            None,
            false,
            timeout,
        )?;
        let listening = match out.stdout_str().trim() {
            "LISTEN" => Some(true),
            "NONE" => Some(false),
            _ => None,
        };
        Ok((reach, listening))
    });
    for (n, r) in down.iter().zip(probes) {
        let (reach, listening) = r.unwrap_or_default();
        let err = facts.get(n).and_then(|f| f.sql_error.clone());
        states.insert(
            n.clone(),
            HostState {
                sql_reach: reach.as_ref().map(|(r, _)| *r).or(Some(Reach::Other)),
                sql_error: reach.map(|(_, e)| e).or(err),
                shell: Shell::Up,
                listening,
            },
        );
    }
    for h in &topo.hosts {
        states.entry(h.name.clone()).or_insert(HostState {
            sql_reach: None,
            sql_error: None,
            shell: Shell::Up,
            listening: None,
        });
    }
    (facts, states, back)
}

/// `repltool promote`.
pub fn run(path: &Path, topo: &Topology, target: &str, opts: &PromoteOptions) -> Result<i32> {
    let progress = Progress::new(false);
    let conn_timeout = opts.timeout.min(Duration::from_secs(5));
    // The proxies are connected to while the servers are observed (a dead proxy costs no
    // more time than a dead host).
    let (host_side, (proxy_sessions, proxies_down)) = std::thread::scope(|s| {
        let p = s.spawn(|| observe_proxies(topo, conn_timeout));
        let o = (|| -> Result<_> {
            let (sessions, failed) = crate::transport::connect_all(topo, Some(conn_timeout));
            // The cluster lock before anything is observed: a plan made while another run is
            // changing the servers would be made from facts that are about to change. A dry
            // run only checks it.
            let names: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
            // Its connections read with the run's longest wait: once the hosts are observed
            // on them, the executor works on them too (no second round of logins).
            let lock = crate::lock::ClusterLock::acquire_to_work(
                topo,
                Some(path),
                &sessions,
                &names,
                conn_timeout,
                exec::read_timeout(opts.timeout),
            )?;
            let mut lock = if opts.dry_run {
                drop(lock);
                None
            } else {
                Some(lock)
            };
            let (facts, states, opened) = match lock.as_mut() {
                Some(l) => observe_sessions_on(topo, &sessions, &failed, conn_timeout, l.lend()),
                None => {
                    let (facts, states) = observe_sessions(topo, &sessions, &failed, conn_timeout);
                    (facts, states, Vec::new())
                }
            };
            Ok((sessions, lock, facts, states, opened))
        })();
        (o, p.join().unwrap_or_default())
    });
    let (sessions, lock, facts, states, opened) = host_side?;
    progress.step(target, &format!("observed {} hosts", topo.hosts.len()));
    let pf = PromoteFacts {
        facts: &facts,
        hosts: &states,
        proxies_down: &proxies_down,
    };
    let Some(plan) = plan_promote(
        topo,
        &pf,
        target,
        PlanOptions {
            force: opts.force,
            timeout_secs: opts.timeout.as_secs(),
        },
    )?
    else {
        progress.finish();
        crate::report::outln(format!(
            "{target} is already the master in {}; nothing to do",
            path.display()
        ));
        return Ok(0);
    };
    progress.finish();
    // A file promote could not rewrite safely stops it before anything changes.
    rewrite::check_file(path, &plan.edits).map_err(|e| {
        crate::error::input(format!(
            "{e:#}\npromote {target} refused: nothing was changed."
        ))
    })?;
    // The plan quotes what the servers reported.
    crate::report::out(crate::report::clean(&plan.render()));
    if opts.dry_run {
        crate::report::outln("(dry run: nothing was changed)");
        return Ok(0);
    }
    if !opts.yes {
        if !std::io::stdin().is_terminal() {
            return Err(problem(
                "promote changes the cluster: run it on a terminal to confirm, or pass --yes",
            ));
        }
        crate::report::ask("Proceed? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            crate::report::outln("not confirmed; nothing was changed");
            return Ok(1);
        }
    }
    let hosts: Vec<String> = topo
        .hosts
        .iter()
        .filter(|h| facts.get(&h.name).is_some_and(|f| f.sql.is_some()))
        .map(|h| h.name.clone())
        .collect();
    // The lock's connections to the servers promote works on go to the executor (dropped with
    // it, when the lock ends too); the others go back to the lock.
    let (work, rest): (Vec<_>, Vec<_>) = opened.into_iter().partition(|(n, _)| hosts.contains(n));
    let mut lock = lock;
    if let Some(l) = lock.as_mut() {
        l.give_back(rest);
    }
    let work = work
        .into_iter()
        .filter_map(|(n, mut c)| c.flavor().ok().map(|f| (n, (c, f))))
        .collect();
    let ex = exec::Exec::with_conns(topo, &sessions, opts.timeout, &progress, path, &hosts, work)
        .with_proxies(&proxy_sessions, opts.max_lag);
    ex.hold(lock);
    match ex.run(&plan) {
        Ok(summary) => {
            // With `watch:`: the watchers follow the new master (still under the lock).
            if let Some(line) = crate::watch::publish_after_command(topo, &plan.target, "promote") {
                crate::report::say(line);
            }
            rewrite_file(path, &plan)?;
            progress.finish();
            crate::report::outln(crate::report::clean(&summary));
            crate::report::outln(format!(
                "promoted {} in {:.3}s; {} rewritten (previous kept as {}.bak)",
                plan.target,
                progress.elapsed().as_secs_f64(),
                path.display(),
                path.display()
            ));
            Ok(0)
        }
        Err(e) => {
            progress.finish();
            let refused = matches!(
                e.downcast_ref::<crate::error::Failure>(),
                Some(crate::error::Failure::Problem(_))
            );
            let changes = progress.changes();
            let mut msg = format!("promote {} failed: {e:#}", plan.target);
            for l in crate::transport::link_problems(topo, &sessions) {
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

fn rewrite_file(path: &Path, plan: &PromotePlan) -> Result<()> {
    // Checked again (the file may have changed during the promote), backup and new file
    // written with the file's own mode.
    let bak = rewrite::rewrite_file(path, &plan.edits).map_err(|e| {
        anyhow!(
            "the cluster was promoted but {} could not be rewritten: {e:#}. Edit it by hand so that {} has no master{}",
            path.display(),
            plan.target,
            if matches!(plan.mode, crate::plan::promote::Mode::PairSwitch | crate::plan::promote::Mode::PairFailover) {
                String::new()
            } else {
                format!(" and {} replicates from {}", plan.old, plan.target)
            }
        )
    })?;
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
