//! The Galera commands: `init` for a file with `galera:` (build, grow, recover, then the
//! asynchronous replicas of members with the ordinary init plan), `promote` of a member after a
//! quorum loss, and `restart --rolling`. Each is observe -> pure planner (`plan::galera`) ->
//! executor (`exec`) under the cluster lock.

pub mod exec;

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::error::problem;
use crate::execute::Ctx;
use crate::observe::galera::{disk_all, recover_position, GaleraDisk};
use crate::observe::Facts;
use crate::plan::galera::{plan_galera, plan_promote, plan_rolling, GaleraInputs, GaleraOptions};
use crate::plan::init::InitOptions;
use crate::report::{outln, say, Progress};
use crate::topology::Topology;
use crate::transport::Sessions;

/// What was observed for a Galera command.
struct Observed {
    sessions: Sessions,
    facts: HashMap<String, Facts>,
    disk: HashMap<String, Result<GaleraDisk, String>>,
    unreachable: HashMap<String, String>,
}

impl Observed {
    fn inputs(&self) -> GaleraInputs<'_> {
        GaleraInputs {
            facts: &self.facts,
            disk: &self.disk,
            unreachable: &self.unreachable,
        }
    }
}

/// Sessions to every host (members that cannot be reached are recorded; any other host that
/// cannot be reached stops here, before anything changed), SQL facts, the members' host probes.
fn observe(
    topo: &Topology,
    progress: &Progress,
    connect_timeout: Option<Duration>,
    timeout: Duration,
    with_config: bool,
) -> Result<Observed> {
    for h in &topo.hosts {
        progress.step(&h.name, "connecting");
    }
    let (sessions, failed) = crate::transport::connect_all(topo, connect_timeout);
    let mut unreachable = HashMap::new();
    let mut fatal = Vec::new();
    for (name, e) in failed {
        if topo.host(&name).is_some_and(|h| topo.is_member(h)) {
            unreachable.insert(name, format!("{e:#}"));
        } else {
            fatal.push(format!("{e:#}"));
        }
    }
    if !fatal.is_empty() {
        progress.finish();
        bail!("{}\nnothing was changed.", fatal.join("\n"));
    }
    let facts = crate::observe::observe_all(topo, &sessions, &[], timeout, with_config);
    let disk = disk_all(topo, &sessions);
    Ok(Observed {
        sessions,
        facts,
        disk,
        unreachable,
    })
}

/// The cluster lock on every server that takes it: members outside the primary component
/// refuse statements (they hold no lock; the file lock still serializes runs from here).
fn lock(
    topo: &Topology,
    path: &Path,
    sessions: &Sessions,
    facts: &HashMap<String, Facts>,
    timeout: Duration,
) -> Result<crate::lock::ClusterLock> {
    let names: Vec<String> = topo
        .hosts
        .iter()
        .filter(|h| {
            !topo.is_member(h)
                || facts
                    .get(&h.name)
                    .and_then(|f| f.sql.as_ref())
                    .and_then(|s| s.galera.as_ref())
                    .is_none_or(|l| !l.enabled() || l.primary())
        })
        .map(|h| h.name.clone())
        .collect();
    crate::lock::ClusterLock::acquire(topo, Some(path), sessions, &names, timeout)
}

/// `repltool init` on a file with `galera:`.
pub fn init(path: &Path, topo: &Topology, a: &crate::cli::InitArgs) -> Result<i32> {
    let progress = Progress::new(false);
    let timeout = Duration::from_secs(a.timeout.max(1));
    let obs_timeout = timeout.min(Duration::from_secs(10));
    let started = Instant::now();
    let mut o = observe(topo, &progress, None, obs_timeout, true)?;
    let opts = GaleraOptions { force: a.force };
    let mut gplan = plan_galera(topo, &o.inputs(), &opts).inspect_err(|_| progress.finish())?;
    let mut held = None;
    if !gplan.recover.is_empty() {
        if a.dry_run {
            progress.finish();
            for n in &gplan.notes {
                outln(n);
            }
            outln(format!(
                "full outage: every member is down and {} crashed (seqno -1 in grastate.dat): \
                 their last committed positions are read with `mariadbd --wsrep-recover` before \
                 the most advanced member is chosen. --dry-run does not run it; init does",
                gplan.recover.join(", ")
            ));
            return Ok(0);
        }
        held = Some(
            lock(topo, path, &o.sessions, &o.facts, obs_timeout)
                .inspect_err(|_| progress.finish())?,
        );
        let names = gplan.recover.clone();
        let results = crate::par::each(&names, |n| {
            progress.step(n, "reading the last committed position (--wsrep-recover)");
            let d = match o.disk.get(n) {
                Some(Ok(d)) => d.clone(),
                _ => bail!("{n}: not probed"),
            };
            let m = o
                .sessions
                .get(n)
                .ok_or_else(|| anyhow!("{n}: no session"))?;
            let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
            Ok(recover_position(s.as_mut(), &d, timeout))
        });
        for (n, r) in names.iter().zip(results) {
            let r = r.map_err(|e| anyhow!("{e:#}"))?;
            if let Ok((u, s)) = &r {
                progress.note(n, &format!("--wsrep-recover: last committed {u}:{s}"));
            }
            if let Some(Ok(d)) = o.disk.get_mut(n) {
                d.recovered = Some(r);
            }
        }
        gplan = plan_galera(topo, &o.inputs(), &opts).inspect_err(|_| progress.finish())?;
        if !gplan.recover.is_empty() {
            progress.finish();
            bail!(
                "the last committed position of {} could not be read",
                gplan.recover.join(", ")
            );
        }
    }
    for w in &gplan.warnings {
        say(format!("warning: {w}"));
    }
    if a.dry_run {
        progress.finish();
        if gplan.is_empty() {
            let plan =
                crate::plan::init::plan_init(topo, &o.facts, &InitOptions { force: a.force })?;
            for w in &plan.warnings {
                say(format!("warning: {w}"));
            }
            if plan.is_empty() {
                outln(format!(
                    "nothing to do: the cluster already matches {}",
                    path.display()
                ));
            } else {
                outln(format!(
                    "plan for {} ({} steps; nothing was changed):",
                    topo.name,
                    plan.steps.len()
                ));
                crate::report::out(plan.render());
            }
        } else {
            outln(format!(
                "plan for the Galera cluster {} ({} steps; nothing was changed):",
                topo.galera
                    .as_ref()
                    .map(|g| g.cluster_name.as_str())
                    .unwrap_or(""),
                gplan.steps.len()
            ));
            crate::report::out(gplan.render());
            let replicas: Vec<&str> = topo
                .hosts
                .iter()
                .filter(|h| !topo.is_member(h))
                .map(|h| h.name.as_str())
                .collect();
            if !replicas.is_empty() {
                outln(format!(
                    "then the asynchronous replicas ({}) are planned as usual, once the cluster runs",
                    replicas.join(", ")
                ));
            }
        }
        return Ok(0);
    }
    for n in &gplan.notes {
        say(n);
    }
    let ctx = Ctx::new(topo, &o.sessions, &progress, timeout);
    if !gplan.is_empty() {
        if held.is_none() {
            held = Some(
                lock(topo, path, &o.sessions, &o.facts, obs_timeout)
                    .inspect_err(|_| progress.finish())?,
            );
        }
        if let Err(e) = exec::execute(&ctx, &gplan) {
            progress.finish();
            return Err(e);
        }
        // What the asynchronous replicas are planned from: the cluster as it now runs.
        o.facts = crate::observe::observe_all(topo, &o.sessions, &[], obs_timeout, true);
    }
    let plan = crate::plan::init::plan_init(topo, &o.facts, &InitOptions { force: a.force })
        .inspect_err(|_| progress.finish())?;
    for w in &plan.warnings {
        say(format!("warning: {w}"));
    }
    // The application's endpoints (`proxies:`): planned from the cluster as it runs now; a
    // missing package or a proxy that does not answer stops init before they change.
    let proxies = crate::proxy::connect_all(topo, Some(obs_timeout));
    let proxies_converged = topo.proxies.is_empty()
        || crate::proxy::exec::plan_now(
            topo,
            &proxies.0,
            &proxies.1,
            &o.facts,
            a.max_lag,
            None,
            obs_timeout,
        )
        .inspect_err(|_| progress.finish())?
        .iter()
        .all(|p| p.is_empty());
    if gplan.is_empty() && plan.is_empty() && proxies_converged {
        progress.finish();
        outln(format!(
            "nothing to do: the cluster already matches {} ({} members Synced in one primary \
             component, {} hosts checked in {:.2}s; no restart, no state transfer)",
            path.display(),
            topo.members().count(),
            topo.hosts.len(),
            started.elapsed().as_secs_f64()
        ));
        return Ok(0);
    }
    if !plan.is_empty() {
        if held.is_none() {
            held = Some(
                lock(topo, path, &o.sessions, &o.facts, obs_timeout)
                    .inspect_err(|_| progress.finish())?,
            );
        }
        let res = crate::execute::execute(&ctx, &plan);
        if let Err(e) = res {
            progress.finish();
            return Err(e);
        }
    }
    if !topo.proxies.is_empty() {
        if held.is_none() {
            held = Some(
                lock(topo, path, &o.sessions, &o.facts, obs_timeout)
                    .inspect_err(|_| progress.finish())?,
            );
        }
        let facts = crate::observe::observe_all(topo, &o.sessions, &[], obs_timeout, false);
        crate::proxy::exec::converge(
            topo, &proxies.0, &proxies.1, &facts, a.max_lag, None, &progress, timeout,
        )
        .inspect_err(|_| progress.finish())?;
    }
    drop(held);
    progress.finish();
    let changes = ctx.changes();
    outln(format!(
        "{}: done in {:.2}s, {} changes:",
        topo.name,
        started.elapsed().as_secs_f64(),
        changes.len()
    ));
    for c in &changes {
        outln(format!("  - {c}"));
    }
    let facts = crate::observe::observe_all(topo, &o.sessions, &[], obs_timeout, false);
    outln(crate::report::summary_table(topo, &facts));
    outln(crate::report::status::galera_table(topo, &facts, false));
    Ok(0)
}

/// Ask on a terminal; `--yes` answers; no terminal and no `--yes`: refuse.
fn confirm(yes: bool, what: &str) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(problem(format!(
            "{what} changes the cluster: run it on a terminal to confirm, or pass --yes"
        )));
    }
    crate::report::ask("Proceed? [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `repltool promote MEMBER` on a Galera cluster: make its component primary after a quorum
/// loss, once no primary component can exist elsewhere.
pub fn promote(
    path: &Path,
    topo: &Topology,
    target: &str,
    opts: &crate::promote::PromoteOptions,
) -> Result<i32> {
    let progress = Progress::new(false);
    let t = opts.timeout.min(Duration::from_secs(5));
    let o = observe(topo, &progress, Some(t), t, false)?;
    let Some(p) =
        plan_promote(topo, &o.inputs(), target, opts.force).inspect_err(|_| progress.finish())?
    else {
        progress.finish();
        outln(format!(
            "{target} is already in the primary component of {}; nothing to do",
            topo.name
        ));
        return Ok(0);
    };
    progress.finish();
    crate::report::out(p.render());
    if opts.dry_run {
        outln("(dry run: nothing was changed)");
        return Ok(0);
    }
    if !confirm(opts.yes, "promote")? {
        outln("not confirmed; nothing was changed");
        return Ok(1);
    }
    let _lock = lock(topo, path, &o.sessions, &o.facts, t)?;
    let ctx = Ctx::new(topo, &o.sessions, &progress, opts.timeout);
    let started = Instant::now();
    let run = || -> Result<()> {
        let mut conn = ctx.sql(target)?;
        // Guard: still non-primary (the others may have come back meanwhile).
        let l = exec::status(conn.as_mut())?;
        if l.primary() {
            return Ok(());
        }
        conn.exec(&p.stmt)?;
        progress.note(
            target,
            "its component was made the primary component (pc.bootstrap)",
        );
        let deadline = started + opts.timeout;
        loop {
            let l = exec::status(conn.as_mut())?;
            if l.primary() && l.synced() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "{target}: not Primary and Synced within {}s ({}, {})",
                    opts.timeout.as_secs(),
                    l.cluster_status,
                    l.state_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        exec::canary(&ctx, &[target.to_string()], target, deadline)?;
        Ok(())
    };
    match run() {
        Ok(()) => {
            progress.finish();
            outln(format!(
                "{target}: its component is the primary component in {:.2}s; writes work again. \
                 The members that are down rejoin (IST or SST) when they are back and `repltool \
                 init` runs",
                progress.elapsed().as_secs_f64()
            ));
            Ok(0)
        }
        Err(e) => {
            progress.finish();
            let changes = progress.changes();
            let mut msg = format!("promote {target} failed: {e:#}");
            if changes.is_empty() {
                msg.push_str("\nnothing was changed.");
            } else {
                msg.push_str("\nalready changed:");
                for c in changes {
                    msg.push_str(&format!("\n  - {c}"));
                }
            }
            Err(anyhow!(msg))
        }
    }
}

/// `repltool restart --rolling`: every member restarted in turn, each Synced again before the
/// next, the cluster never below quorum.
pub fn rolling(path: &Path, topo: &Topology, a: &crate::cli::RestartArgs) -> Result<i32> {
    let progress = Progress::new(false);
    let timeout = Duration::from_secs(a.timeout.max(1));
    let t = timeout.min(Duration::from_secs(10));
    let o = observe(topo, &progress, Some(t), t, false)?;
    let r = plan_rolling(topo, &o.inputs()).inspect_err(|_| progress.finish())?;
    if a.dry_run {
        progress.finish();
        outln(format!(
            "rolling restart of {} ({} members; nothing was changed):",
            topo.name,
            r.order.len()
        ));
        crate::report::out(r.render());
        return Ok(0);
    }
    let _lock = lock(topo, path, &o.sessions, &o.facts, t).inspect_err(|_| progress.finish())?;
    let ctx = Ctx::new(topo, &o.sessions, &progress, timeout);
    let members: Vec<String> = topo.members().map(|h| h.name.clone()).collect();
    for (host, cmd) in &r.order {
        // Guard: the whole cluster Synced in one primary component before each restart, so
        // the member that leaves never takes it below quorum.
        let all = members
            .iter()
            .map(|m| {
                let l = exec::status(ctx.sql(m)?.as_mut())?;
                if l.primary() && l.synced() && l.cluster_size == r.size {
                    Ok(())
                } else {
                    Err(anyhow!(
                        "{m}: {}, {} component of {}",
                        l.state_text(),
                        if l.primary() {
                            "Primary"
                        } else {
                            "non-Primary"
                        },
                        l.cluster_size
                    ))
                }
            })
            .filter_map(|r| r.err().map(|e| format!("{e:#}")))
            .collect::<Vec<_>>();
        if !all.is_empty() {
            progress.finish();
            return Err(problem(format!(
                "stopped before restarting {host}: the cluster is not healthy ({}); nothing more \
                 is restarted. Already restarted: {}",
                all.join("; "),
                progress.changes().join("; ")
            )));
        }
        let step = crate::plan::galera::GStep {
            host: host.clone(),
            action: crate::plan::galera::GAction::Join {
                command: cmd.clone(),
                error_log: topo
                    .host(host)
                    .and_then(|h| h.error_log.clone())
                    .or_else(|| {
                        o.facts
                            .get(host)
                            .and_then(|f| f.sql.as_ref())
                            .and_then(|s| s.error_log.clone())
                    }),
                transfer: crate::plan::galera::Transfer::Restart,
            },
        };
        let plan = crate::plan::galera::GaleraPlan {
            steps: vec![step],
            ..Default::default()
        };
        if let Err(e) = exec::execute(&ctx, &plan) {
            progress.finish();
            return Err(e);
        }
    }
    // Back to full size everywhere, and a canary through the cluster.
    let first = members.first().cloned().unwrap_or_default();
    if let Err(e) = exec::verify(&ctx, &members, r.size, &first) {
        progress.finish();
        return Err(problem(format!("after the rolling restart: {e:#}")));
    }
    progress.finish();
    outln(format!(
        "{}: rolling restart of {} members done in {:.2}s, each Synced again before the next",
        topo.name,
        r.order.len(),
        progress.elapsed().as_secs_f64()
    ));
    Ok(0)
}
