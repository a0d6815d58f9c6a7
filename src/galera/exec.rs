//! Runs Galera plans: the only code that starts, stops and bootstraps Galera members. Config
//! writes first (all members at once), then every other step in order, each re-checking its
//! guard; every change is journaled so a failure lists what was already changed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::execute::{tail_log, Ctx};
use crate::flavor::galera::set_safe_to_bootstrap_script;
use crate::flavor::Sql;
use crate::observe::galera::{wsrep_from_rows, WsrepLive};
use crate::plan::galera::{GAction, GStep, GaleraPlan, Transfer};
use crate::transport::shell_quote;
use crate::transport::sql::SqlConn;

/// Every result, or every error joined.
fn all_ok<R>(results: Vec<Result<R>>) -> Result<Vec<R>> {
    let mut ok = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(v) => ok.push(v),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if errors.is_empty() {
        Ok(ok)
    } else {
        Err(anyhow!(errors.join("\n")))
    }
}

/// The Galera status of a member's server (status and variables only).
pub fn status(conn: &mut dyn SqlConn) -> Result<WsrepLive> {
    let f = conn.flavor()?;
    let st = conn.query(&f.wsrep_status_query())?;
    let vs = conn.query(&f.wsrep_variables_query())?;
    wsrep_from_rows(&st, &vs)
}

/// A short SQL connection for polling (bounded by a few seconds, not the run's timeout).
fn poll_conn(ctx: &Ctx, name: &str) -> Result<Box<dyn SqlConn>> {
    let host = ctx
        .topo
        .host(name)
        .ok_or_else(|| anyhow!("{name}: not in the topology"))?;
    let m = ctx
        .sessions
        .get(name)
        .ok_or_else(|| anyhow!("{name}: no session open"))?;
    let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
    s.sql_connect(host, Duration::from_secs(3), Duration::from_secs(10))
}

/// Run a shell command on a host, privileged, bounded.
fn sh(
    ctx: &Ctx,
    name: &str,
    script: &str,
    timeout: Duration,
) -> Result<crate::transport::CmdOutput> {
    let m = ctx
        .sessions
        .get(name)
        .ok_or_else(|| anyhow!("{name}: no session open"))?;
    let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
    s.run(script, None, true, timeout)
}

fn log_tail(ctx: &Ctx, name: &str, log: Option<&Path>) -> String {
    match ctx.sessions.get(name) {
        Some(m) => {
            let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
            tail_log(s.as_mut(), log)
        }
        None => String::new(),
    }
}

/// A service command, run so that what it leaves running is independent of this SSH command:
/// in a session of its own (a timeout here kills this command's process group, and must never
/// take a starting server or its state transfer with it), and with its output in a temporary
/// file, so that the background children (mysqld_safe and the `logger` Debian's init script
/// pipes it into) do not keep the SSH channel open. The output is shown when it ends.
fn detached(command: &str) -> String {
    format!(
        "t=$(mktemp /tmp/repltool-service.XXXXXX) || exit 1\n\
         setsid -w sh -c {} </dev/null >\"$t\" 2>&1; rc=$?\n\
         cat \"$t\"; rm -f \"$t\"; exit $rc\n",
        shell_quote(command)
    )
}

/// Whether a server process runs on the host (an SST can outlast the service script's wait).
fn server_runs(ctx: &Ctx, name: &str) -> bool {
    sh(
        ctx,
        name,
        "for p in /proc/[0-9]*; do c=$(cat \"$p/comm\" 2>/dev/null) || continue; case \"$c\" in mariadbd|mysqld) echo RUNNING; exit 0;; esac; done",
        Duration::from_secs(10),
    )
    .is_ok_and(|o| o.stdout_str().contains("RUNNING"))
}

/// Wait until `name` is Synced in a Primary component (in state `uuid`, when given), bounded
/// by `deadline`. While its server does not answer, a server process must keep running (an
/// SST in progress); a server that is gone fails at once with its log.
fn wait_synced(
    ctx: &Ctx,
    name: &str,
    uuid: Option<&str>,
    deadline: Instant,
    log: Option<&Path>,
) -> Result<WsrepLive> {
    let mut last;
    let mut last_check = Instant::now();
    loop {
        match poll_conn(ctx, name).and_then(|mut c| status(c.as_mut())) {
            Ok(l) if l.primary() && l.synced() && uuid.is_none_or(|u| u == l.state_uuid) => {
                return Ok(l)
            }
            Ok(l) => {
                last = format!(
                    "{} in a {} component of {}{}",
                    l.state_text(),
                    if l.primary() {
                        "Primary"
                    } else {
                        "non-Primary"
                    },
                    l.cluster_size,
                    if uuid.is_some_and(|u| u != l.state_uuid) {
                        format!(", state {} (expected {})", l.state_uuid, uuid.unwrap_or(""))
                    } else {
                        String::new()
                    }
                )
            }
            Err(e) => {
                last = format!("{e:#}");
                // Every few seconds: a server that died (a failed SST) will not come back.
                if last_check.elapsed() > Duration::from_secs(3) {
                    last_check = Instant::now();
                    if !server_runs(ctx, name) {
                        bail!(
                            "the server stopped before it was Synced ({last}){}",
                            log_tail(ctx, name, log)
                        );
                    }
                }
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "not Synced in the cluster within the timeout: {last}{}. A large state \
                 transfer needs a longer --timeout",
                log_tail(ctx, name, log)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Guard of a bootstrap: no member runs Galera in a primary component (someone else may have
/// started the cluster since the plan was made).
fn no_primary_elsewhere(ctx: &Ctx, except: &str) -> Result<()> {
    let names: Vec<String> = ctx
        .topo
        .members()
        .filter(|h| h.name != except)
        .map(|h| h.name.clone())
        .collect();
    let found = crate::par::each(&names, |n| {
        Ok(poll_conn(ctx, n)
            .and_then(|mut c| status(c.as_mut()))
            .ok()
            .filter(|l| l.primary())
            .map(|l| format!("{n} (size {})", l.cluster_size)))
    });
    let primaries: Vec<String> = found.into_iter().filter_map(|r| r.ok().flatten()).collect();
    if !primaries.is_empty() {
        bail!(
            "a primary component already runs on {}: bootstrapping would split the cluster; \
             nothing was started. Run init again",
            primaries.join(", ")
        );
    }
    Ok(())
}

/// The state UUID of the cluster as any member in a primary component reports it.
fn cluster_uuid(ctx: &Ctx) -> Option<String> {
    let names: Vec<String> = ctx.topo.members().map(|h| h.name.clone()).collect();
    crate::par::each(&names, |n| {
        Ok(poll_conn(ctx, n)
            .and_then(|mut c| status(c.as_mut()))
            .ok()
            .filter(|l| l.primary())
            .map(|l| l.state_uuid))
    })
    .into_iter()
    .find_map(|r| r.ok().flatten())
}

fn step_name(st: &GStep) -> String {
    match &st.action {
        GAction::WriteConfig { target, .. } => format!("writing {}", target.path().display()),
        GAction::Stop { command } => format!("stopping the server ({command})"),
        GAction::SafeToBootstrap { .. } => "setting safe_to_bootstrap in grastate.dat".into(),
        GAction::Bootstrap { command, .. } => format!("bootstrapping the cluster ({command})"),
        GAction::Join { command, .. } => format!("joining the cluster ({command})"),
        GAction::Sql { what, .. } => what.clone(),
        GAction::Verify { .. } => "verifying the cluster".into(),
    }
}

/// Run a Galera plan. On failure the error names the host and the step and lists what was
/// already changed.
pub fn execute(ctx: &Ctx, plan: &GaleraPlan) -> Result<()> {
    let (configs, rest): (Vec<&GStep>, Vec<&GStep>) = plan
        .steps
        .iter()
        .partition(|s| matches!(s.action, GAction::WriteConfig { .. }));
    let fail = |errors: Vec<String>, verify_only: bool| -> anyhow::Error {
        let mut msg = errors.join("\n");
        let changes = ctx.changes();
        if changes.is_empty() {
            msg.push_str("\nnothing was changed yet.");
        } else {
            msg.push_str("\nalready changed (a re-run after fixing the cause converges):");
            for c in changes {
                msg.push_str("\n  - ");
                msg.push_str(&c);
            }
        }
        if verify_only {
            crate::error::problem(msg)
        } else {
            anyhow!(msg)
        }
    };
    let errors = crate::par::errors(crate::par::each(&configs, |st| {
        run_step(ctx, st).map_err(|e| anyhow!("{}: {}: {e:#}", st.host, step_name(st)))
    }));
    if !errors.is_empty() {
        return Err(fail(errors, false));
    }
    for st in rest {
        if let Err(e) = run_step(ctx, st) {
            let verify = matches!(st.action, GAction::Verify { .. });
            return Err(fail(
                vec![format!("{}: {}: {e:#}", st.host, step_name(st))],
                verify,
            ));
        }
    }
    Ok(())
}

fn run_step(ctx: &Ctx, st: &GStep) -> Result<()> {
    let host = st.host.as_str();
    match &st.action {
        GAction::WriteConfig {
            target,
            contents,
            previous,
        } => {
            ctx.progress
                .step(host, &format!("writing {}", target.path().display()));
            let m = ctx
                .sessions
                .get(host)
                .ok_or_else(|| anyhow!("{host}: no session open"))?;
            let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
            let now = s
                .read_file(target.path(), true)?
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            if &now != previous {
                bail!(
                    "{} changed since it was read; nothing written. Run init again",
                    target.path().display()
                );
            }
            // Mode 640, group mysql: the server (and its SST scripts) read it, other users
            // do not see the SST password.
            s.write_file_atomic(
                target.path(),
                contents.text.as_bytes(),
                0o640,
                previous.is_some(),
                true,
            )?;
            let p = shell_quote(&target.path().to_string_lossy());
            let out = s.run(
                &format!(
                    "if getent group mysql >/dev/null 2>&1; then chgrp mysql {p}; fi; \
                     if [ -e {p}.bak ]; then chmod 600 {p}.bak; fi"
                ),
                None,
                true,
                Duration::from_secs(10),
            )?;
            if !out.ok() {
                bail!(
                    "chgrp mysql {}: {}",
                    target.path().display(),
                    out.stderr_str().trim()
                );
            }
            ctx.progress.note(
                host,
                &format!(
                    "wrote {}{}",
                    target.path().display(),
                    if previous.is_some() {
                        " (previous version kept as .bak)"
                    } else {
                        ""
                    }
                ),
            );
            Ok(())
        }
        GAction::Stop { command } => {
            ctx.progress.step(host, &format!("stopping ({command})"));
            let out = sh(ctx, host, &detached(command), ctx.timeout)?;
            if !out.ok() {
                bail!(
                    "`{command}` failed (exit {}): {}",
                    out.status,
                    (out.stderr_str() + &out.stdout_str()).trim()
                );
            }
            ctx.progress.note(host, "stopped the server");
            Ok(())
        }
        GAction::SafeToBootstrap { datadir, uuid, on } => {
            let out = sh(
                ctx,
                host,
                &set_safe_to_bootstrap_script(datadir, uuid, *on),
                Duration::from_secs(15),
            )?;
            let text = out.stdout_str();
            if let Some(u) = text.lines().find_map(|l| l.strip_prefix("@@CHANGED")) {
                bail!(
                    "grastate.dat now names {} (it named {uuid} when the plan was made); nothing \
                     changed. Run init again",
                    u.trim()
                );
            }
            if !text.contains("@@DONE") {
                bail!(
                    "could not edit {datadir}/grastate.dat: {}",
                    out.stderr_str().trim()
                );
            }
            ctx.progress.note(
                host,
                &format!("grastate.dat: safe_to_bootstrap: {}", u8::from(*on)),
            );
            Ok(())
        }
        GAction::Bootstrap { command, error_log } => {
            no_primary_elsewhere(ctx, host)?;
            let started = Instant::now();
            ctx.progress
                .step(host, &format!("bootstrapping ({command})"));
            let out = sh(ctx, host, &detached(command), ctx.timeout)?;
            if !out.ok() && !server_runs(ctx, host) {
                bail!(
                    "`{command}` failed (exit {}): {}{}",
                    out.status,
                    (out.stderr_str() + &out.stdout_str()).trim(),
                    log_tail(ctx, host, error_log.as_deref())
                );
            }
            ctx.progress
                .note(host, "bootstrapped the cluster (--wsrep-new-cluster)");
            let l = wait_synced(ctx, host, None, started + ctx.timeout, error_log.as_deref())?;
            ctx.progress.step(
                host,
                &format!("Primary, Synced, cluster state {}", l.state_uuid),
            );
            Ok(())
        }
        GAction::Join {
            command,
            error_log,
            transfer,
        } => {
            let uuid = cluster_uuid(ctx).ok_or_else(|| {
                anyhow!("no member is in a primary component to join; run init again")
            })?;
            let started = Instant::now();
            ctx.progress.step(
                host,
                &format!(
                    "joining ({command}; {})",
                    match transfer {
                        Transfer::Sst => "SST",
                        Transfer::Rejoin => "IST or SST",
                        Transfer::Restart => "restart",
                    }
                ),
            );
            let out = sh(ctx, host, &detached(command), ctx.timeout)?;
            // Debian's script gives up waiting after 30 s while a long SST goes on: what
            // counts is the server reaching Synced.
            if !out.ok() && !server_runs(ctx, host) {
                bail!(
                    "`{command}` failed (exit {}): {}{}",
                    out.status,
                    (out.stderr_str() + &out.stdout_str()).trim(),
                    log_tail(ctx, host, error_log.as_deref())
                );
            }
            ctx.progress.note(
                host,
                match transfer {
                    Transfer::Sst => {
                        "started with Galera (its data replaced by a copy of the cluster's)"
                    }
                    Transfer::Rejoin => "started with Galera (rejoining)",
                    Transfer::Restart => "restarted",
                },
            );
            let l = wait_synced(
                ctx,
                host,
                Some(&uuid),
                started + ctx.timeout,
                error_log.as_deref(),
            )?;
            ctx.progress.step(
                host,
                &format!(
                    "Synced (cluster size {}) in {:.1}s",
                    l.cluster_size,
                    started.elapsed().as_secs_f64()
                ),
            );
            Ok(())
        }
        GAction::Sql { what, stmts } => {
            ctx.progress.step(host, what);
            let mut conn = ctx.sql(host)?;
            conn.run(stmts)?;
            ctx.progress.note(host, what);
            Ok(())
        }
        GAction::Verify {
            members,
            size,
            canary_from,
        } => verify(ctx, members, *size, canary_from),
    }
}

/// Every member Synced in one Primary component of `size` with one state UUID, then a canary
/// row from `from` read on every other member; bounded by the run's timeout.
pub fn verify(ctx: &Ctx, members: &[String], size: u32, from: &str) -> Result<()> {
    let deadline = Instant::now() + ctx.timeout;
    let uuids = all_ok(crate::par::each(members, |m| {
        ctx.progress.step(m, "waiting for Synced");
        let mut last;
        loop {
            match poll_conn(ctx, m).and_then(|mut c| status(c.as_mut())) {
                Ok(l) if l.primary() && l.synced() && l.cluster_size == size => {
                    return Ok(l.state_uuid)
                }
                Ok(l) => {
                    last = format!(
                        "{}, {} component of {} (expected Synced, Primary, {size})",
                        l.state_text(),
                        if l.primary() {
                            "Primary"
                        } else {
                            "non-Primary"
                        },
                        l.cluster_size
                    )
                }
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() >= deadline {
                bail!("{m}: {last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }))?;
    let distinct: std::collections::BTreeSet<&String> = uuids.iter().collect();
    if distinct.len() > 1 {
        let each: Vec<String> = members
            .iter()
            .zip(&uuids)
            .map(|(m, u)| format!("{m} {u}"))
            .collect();
        bail!(
            "the members report different cluster states: {}",
            each.join(", ")
        );
    }
    canary(ctx, members, from, deadline)
}

/// Write a canary row on `from`; wait until every other member reads it.
pub fn canary(ctx: &Ctx, members: &[String], from: &str, deadline: Instant) -> Result<()> {
    let token = format!(
        "g{:x}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        std::process::id()
    );
    {
        ctx.progress.step(from, "writing the canary row");
        let mut conn = ctx.sql(from)?;
        let f = conn.flavor()?;
        let mut stmts: Vec<Sql> = f.canary_setup();
        stmts.push(f.canary_write(from, &token));
        conn.run(&stmts).context("writing the canary row")?;
    }
    let others: Vec<&String> = members.iter().filter(|m| m.as_str() != from).collect();
    all_ok(crate::par::each(&others, |m| {
        let mut conn = ctx.sql(m)?;
        let f = conn.flavor()?;
        loop {
            if conn.one(&f.canary_exists())?.as_deref() != Some("0")
                && conn.one(&f.canary_read(from))?.as_deref() == Some(token.as_str())
            {
                ctx.progress.step(m, &format!("canary from {from} arrived"));
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{m}: the canary row written on {from} did not arrive within the timeout");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }))?;
    Ok(())
}
