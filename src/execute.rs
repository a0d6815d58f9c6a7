//! Runs a Plan: the only code that changes a server. Waves run one after another; the steps of
//! a wave run in parallel across hosts. Each mutating step re-checks its guard just before
//! acting, every change is journaled, and the first failure stops the run with the host, the
//! step and the list of what was already changed.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::flavor::{Flavor, Sql, StartAt};
use crate::observe::{self, IoThread};
use crate::plan::init::downstream;
use crate::plan::{Action, LinkSlave, Plan, Seed, Step};
use crate::report::Progress;
use crate::topology::{Host, Topology};
use crate::transport::sql::SqlConn;
use crate::transport::{shell_quote, HostSession};

/// Everything a run needs: the topology, one open session per host, the reporter, the bound
/// on every wait, and the journal of changes made so far.
pub struct Ctx<'a> {
    pub topo: &'a Topology,
    pub sessions: &'a HashMap<String, Mutex<Box<dyn HostSession>>>,
    pub progress: &'a Progress,
    pub timeout: Duration,
    /// The run's cluster lock, given up on a server for its restart and taken back after.
    pub lock: Option<&'a Mutex<crate::lock::ClusterLock>>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        topo: &'a Topology,
        sessions: &'a HashMap<String, Mutex<Box<dyn HostSession>>>,
        progress: &'a Progress,
        timeout: Duration,
    ) -> Self {
        Ctx {
            topo,
            sessions,
            progress,
            timeout,
            lock: None,
        }
    }

    /// The run's cluster lock (see [`Ctx::lock`]).
    pub fn with_lock(mut self, lock: &'a Mutex<crate::lock::ClusterLock>) -> Self {
        self.lock = Some(lock);
        self
    }

    pub(crate) fn host(&self, name: &str) -> Result<&'a Host> {
        self.topo
            .host(name)
            .ok_or_else(|| anyhow!("{name}: not in the topology"))
    }

    pub(crate) fn session(
        &self,
        name: &str,
    ) -> Result<std::sync::MutexGuard<'_, Box<dyn HostSession>>> {
        let m = self
            .sessions
            .get(name)
            .ok_or_else(|| anyhow!("{name}: no session open"))?;
        Ok(m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn sql(&self, name: &str) -> Result<Box<dyn SqlConn>> {
        let host = self.host(name)?;
        let mut s = self.session(name)?;
        // Reads may wait on purpose (a read lock, a dump, a position wait): bound them by the
        // run's timeout plus a margin, so the server's own timeout answers first.
        s.sql_connect(
            host,
            self.timeout.min(Duration::from_secs(10)),
            self.timeout.saturating_add(Duration::from_secs(30)),
        )
    }

    fn note(&self, change: String) {
        self.progress.record(&change);
    }

    pub fn changes(&self) -> Vec<String> {
        self.progress.changes()
    }
}

/// Run every step of the plan; on failure the error lists what was already changed.
pub fn execute(ctx: &Ctx, plan: &Plan) -> Result<()> {
    for wave in plan.waves() {
        let mut groups: BTreeMap<&str, Vec<&Step>> = BTreeMap::new();
        for s in plan.steps.iter().filter(|s| s.wave == wave) {
            groups.entry(s.host.as_str()).or_default().push(s);
        }
        let groups: Vec<Vec<&Step>> = groups.into_values().collect();
        let only_verify = groups
            .iter()
            .flatten()
            .all(|s| matches!(s.action, Action::Verify { .. }));
        let failures = crate::par::errors(crate::par::each(&groups, |steps| {
            for st in steps {
                run_step(ctx, st).map_err(|e| anyhow!("{}: {}: {e:#}", st.host, step_name(st)))?;
            }
            Ok(())
        }));
        if !failures.is_empty() {
            let changes = ctx.changes();
            let mut msg = failures.join("\n");
            for l in crate::transport::link_problems(ctx.topo, ctx.sessions) {
                msg.push_str(&format!("\n{l}"));
            }
            let pending: Vec<&str> = plan
                .steps
                .iter()
                .filter(|s| s.wave > wave && matches!(s.action, Action::MakeWritable { .. }))
                .map(|s| s.host.as_str())
                .collect();
            if !pending.is_empty() {
                msg.push_str(&format!(
                    "\nleft read-only (fenced) until init completes: {}; applications cannot \
                     write there yet. Fix the cause and run init again",
                    pending.join(", ")
                ));
            }
            if changes.is_empty() {
                msg.push_str("\nnothing was changed yet.");
            } else {
                msg.push_str("\nalready changed (a re-run after fixing the cause converges):");
                for c in changes {
                    msg.push_str("\n  - ");
                    msg.push_str(&c);
                }
            }
            // Everything was built and only the final check failed: the run found a problem (1);
            // anything else could not run (2).
            if only_verify {
                return Err(crate::error::problem(msg));
            }
            bail!(msg);
        }
        crate::failpoint::hit(&format!("execute-after-wave-{wave}"));
    }
    Ok(())
}

/// A short name of a step for messages.
pub fn step_name(st: &Step) -> String {
    match &st.action {
        Action::WriteConfig { target, .. } => format!("writing {}", target.path().display()),
        Action::Restart { command, .. } => format!("restarting the server ({command})"),
        Action::Sql { what, .. } => what.clone(),
        Action::MakeWritable { .. } => "making the master writable".into(),
        Action::Link { slaves, .. } => format!(
            "snapshot and replication to {}",
            slaves
                .iter()
                .map(|l| l.host.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Action::StartReplica { .. } => "starting replication".into(),
        Action::Rejoin { change, .. } => format!("rejoining under {}:{}", change.host, change.port),
        Action::Verify { .. } => "verifying replication".into(),
    }
}

fn run_step(ctx: &Ctx, st: &Step) -> Result<()> {
    match &st.action {
        Action::WriteConfig {
            target,
            contents,
            previous,
        } => {
            let host = &st.host;
            ctx.progress
                .step(host, &format!("writing {}", target.path().display()));
            let mut s = ctx.session(host)?;
            // Guard: nobody changed the file since we looked.
            let now = s
                .read_file(target.path(), true)?
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            if &now != previous {
                bail!(
                    "{} changed since it was read; nothing written. Run init again",
                    target.path().display()
                );
            }
            s.write_file_atomic(
                target.path(),
                contents.as_bytes(),
                0o644,
                previous.is_some(),
                true,
            )?;
            ctx.note(format!(
                "{host}: wrote {}{}",
                target.path().display(),
                if previous.is_some() {
                    " (previous version kept as .bak)"
                } else {
                    ""
                }
            ));
            Ok(())
        }
        Action::Restart {
            command,
            error_log,
            expect,
            config_file,
        } => restart(
            ctx,
            &st.host,
            command,
            error_log.as_deref(),
            expect,
            config_file,
        ),
        Action::Sql {
            what,
            stmts,
            writes,
        } => {
            ctx.progress.step(&st.host, what);
            let mut conn = ctx.sql(&st.host)?;
            if *writes {
                let f = conn.flavor()?;
                with_write_window(conn.as_mut(), &f, |c| c.run(stmts))?;
            } else {
                conn.run(stmts)?;
            }
            ctx.note(format!("{}: {what}", st.host));
            Ok(())
        }
        Action::MakeWritable { stmts } => {
            ctx.progress.step(&st.host, "making the master writable");
            let mut conn = ctx.sql(&st.host)?;
            conn.run(stmts)?;
            ctx.note(format!(
                "{}: writable (read_only stays ON in its config: fencing)",
                st.host
            ));
            Ok(())
        }
        Action::StartReplica { stmt } => {
            ctx.progress.step(&st.host, "starting replication");
            let mut conn = ctx.sql(&st.host)?;
            // Stop first: an IO thread waiting out its retry interval after an error (a user
            // created just now) reconnects at once.
            let f = conn.flavor()?;
            conn.run(&[f.stop_replica(), stmt.clone()])?;
            ctx.note(format!("{}: started replication", st.host));
            Ok(())
        }
        Action::Link { slaves, seed } => link(ctx, &st.host, slaves, seed.as_ref()),
        Action::Rejoin {
            slave,
            change,
            from,
        } => rejoin(ctx, slave, change, from),
        Action::Verify {
            slaves,
            canary_from,
        } => verify(ctx, slaves, canary_from),
    }
}

pub(crate) fn tail_log(s: &mut dyn HostSession, log: Option<&Path>) -> String {
    let Some(p) = log else {
        return String::new();
    };
    match s.run(
        &format!("tail -n 15 {}", shell_quote(&p.to_string_lossy())),
        None,
        true,
        Duration::from_secs(10),
    ) {
        Ok(out) if out.ok() => format!(
            "\nlast lines of {}:\n{}",
            p.display(),
            out.stdout_str().trim_end()
        ),
        _ => String::new(),
    }
}

/// Wait until the server accepts a login, bounded by the context's timeout.
fn wait_sql_up(ctx: &Ctx, name: &str) -> Result<Box<dyn SqlConn>> {
    let deadline = Instant::now() + ctx.timeout;
    loop {
        match ctx.sql(name) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "the server did not accept logins within {}s",
                    ctx.timeout.as_secs()
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn restart(
    ctx: &Ctx,
    name: &str,
    command: &str,
    error_log: Option<&Path>,
    expect: &[(String, String)],
    config_file: &Path,
) -> Result<()> {
    ctx.progress.step(name, &format!("restarting ({command})"));
    // An idle session on the server (the lock's) would hold its shutdown up.
    if let Some(l) = ctx.lock {
        l.lock().unwrap_or_else(|e| e.into_inner()).suspend(name);
    }
    let out = {
        let mut s = ctx.session(name)?;
        s.run(command, None, true, ctx.timeout)?
    };
    if !out.ok() {
        let mut s = ctx.session(name)?;
        let tail = tail_log(s.as_mut(), error_log);
        bail!(
            "`{command}` failed (exit {}): {}{tail}",
            out.status,
            (out.stderr_str() + &out.stdout_str()).trim()
        );
    }
    ctx.note(format!("{name}: restarted the server"));
    let mut conn = match wait_sql_up(ctx, name) {
        Ok(c) => c,
        Err(e) => {
            let mut s = ctx.session(name)?;
            let tail = tail_log(s.as_mut(), error_log);
            return Err(anyhow!("{e:#}{tail}"));
        }
    };
    if let Some(l) = ctx.lock {
        let h = ctx.host(name)?;
        let mut s = ctx.session(name)?;
        l.lock().unwrap_or_else(|e| e.into_inner()).resume(
            h,
            s.as_mut(),
            ctx.timeout.min(Duration::from_secs(10)),
        )?;
    }
    // Another file later in the include order may override ours: read the values back.
    let f = conn.flavor()?;
    let mut wrong = Vec::new();
    for (var, want) in expect {
        let got = conn.one(&f.global_var(var)?)?.unwrap_or_default();
        if !got.eq_ignore_ascii_case(want) {
            wrong.push(format!(
                "{var} is {got}, {} says {want}",
                config_file.display()
            ));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "after the restart the server does not run with repltool's settings: {}. Another \
             option file read after {} (or a command-line option) overrides them: remove the \
             setting there and run init again",
            wrong.join("; "),
            config_file.display()
        );
    }
    Ok(())
}

/// A client option file with the admin credentials, for the dump tool and the client on the
/// host: secrets go through a private file, never the command line. A shim over
/// [`crate::transport::optfile::write`] (private from creation, swept, removed on signals).
pub(crate) fn write_defaults(s: &mut dyn HostSession, host: &Host) -> Result<PathBuf> {
    crate::transport::optfile::write(s, &host.mysql.user, &host.mysql.password, host.mysql.port)
}

/// Remove an option file made by [`write_defaults`] (and its private directory). A shim over
/// [`crate::transport::optfile::remove`].
pub(crate) fn remove_file(s: &mut dyn HostSession, p: &Path) {
    crate::transport::optfile::remove(s, p)
}

pub(crate) fn replica_status(
    conn: &mut dyn SqlConn,
    flavor: &Flavor,
) -> Result<Option<observe::ReplicaStatus>> {
    conn.query(&flavor.show_replica_status())?
        .into_iter()
        .next()
        .map(|c| observe::replica_status_from_columns(&c))
        .transpose()
}

/// Run `f` inside a deliberate write window when the server is fenced in a way that binds
/// repltool's own account (MySQL's super_read_only): lifted for `f` only, and restored even
/// when `f` fails. A server that is not fenced so is left alone.
pub(crate) fn with_write_window<R>(
    conn: &mut dyn SqlConn,
    f: &Flavor,
    body: impl FnOnce(&mut dyn SqlConn) -> Result<R>,
) -> Result<R> {
    let open = f.write_window(true);
    if open.is_empty() {
        return body(conn);
    }
    let fenced = conn.one(&f.global_var("super_read_only")?)?.as_deref() == Some("1");
    if !fenced {
        return body(conn);
    }
    conn.run(&open)?;
    let r = body(conn);
    let closed = conn.run(&f.write_window(false));
    let r = r?;
    closed.context("closing the write window (super_read_only back ON)")?;
    Ok(r)
}

/// SHOW MASTER STATUS / SHOW BINARY LOG STATUS; an error when the binary log is off.
pub(crate) fn master_status(conn: &mut dyn SqlConn, f: &Flavor) -> Result<observe::MasterStatus> {
    conn.query(&f.show_master_status())?
        .into_iter()
        .next()
        .map(|c| observe::master_status_from_columns(&c))
        .transpose()?
        .ok_or_else(|| {
            anyhow!(
                "{} returned nothing: is the binary log on?",
                f.words().show_master
            )
        })
}

/// Rejoin a former master: only when its binary log has nothing past `from` (the point up to
/// which the new master has its data); otherwise refuse and reset nothing.
fn rejoin(
    ctx: &Ctx,
    slave: &str,
    change: &crate::flavor::ChangeMaster,
    from: &(String, u64),
) -> Result<()> {
    ctx.progress
        .step(slave, "checking for transactions the new master lacks");
    let mut conn = ctx.sql(slave)?;
    let f = conn.flavor()?;
    let errant = crate::promote::errant_transactions(conn.as_mut(), &f, from)?;
    if !errant.is_empty() {
        let shown: Vec<&String> = errant.iter().take(5).collect();
        bail!(
            "{slave} has {} event(s) in its binary log after {}:{} that the new master never \
             received (errant transactions, written before it went down or while it was \
             writable): {}{}. Nothing was reset. Save what you need from {slave}, then re-seed it \
             from the new master (`repltool init --force` after emptying it)",
            errant.len(),
            from.0,
            from.1,
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            if errant.len() > 5 { "; ..." } else { "" }
        );
    }
    let mut stmts = Vec::new();
    if replica_status(conn.as_mut(), &f)?.is_some() {
        stmts.push(f.stop_replica());
        stmts.push(f.reset_replica_all());
    }
    if change.start == StartAt::Gtid {
        stmts.extend(f.adopt_own_gtids());
    }
    stmts.push(f.change_master(change));
    stmts.push(f.start_replica());
    conn.run(&stmts)?;
    if let StartAt::Position { file, pos } = &change.start {
        ctx.note(format!(
            "{slave}: rejoined as a slave of {}:{} (from {file}:{pos})",
            change.host, change.port
        ));
    }
    Ok(())
}

/// Snapshot the master, seed the new slaves if needed, point them at it and start them. A
/// fenced MySQL slave (super_read_only) gets a deliberate write window for the copy and its
/// GTID state, closed again whatever happens.
fn link(ctx: &Ctx, master: &str, slaves: &[LinkSlave], seed: Option<&Seed>) -> Result<()> {
    if seed.is_some() {
        let mhost = ctx.host(master)?;
        let mut mconn = ctx.sql(master)?;
        let mflavor = mconn.flavor()?;
        guard_slaves(ctx, slaves)?;
        if let Some(choice) = crate::physical::choose(ctx, mhost, mconn.as_mut(), &mflavor, slaves)?
        {
            return link_physical(ctx, master, &mflavor, slaves, &choice);
        }
    }
    let mut windows: Vec<(String, Box<dyn SqlConn>, Flavor)> = Vec::new();
    for l in slaves {
        let mut c = ctx.sql(&l.host)?;
        let f = c.flavor()?;
        if !f.write_window(true).is_empty()
            && c.one(&f.global_var("super_read_only")?)?.as_deref() == Some("1")
        {
            windows.push((l.host.clone(), c, f));
        }
    }
    for (h, c, f) in windows.iter_mut() {
        c.run(&f.write_window(true))
            .with_context(|| format!("{h}: opening a write window for the copy"))?;
    }
    let r = link_inner(ctx, master, slaves, seed);
    let mut close_errors = Vec::new();
    for (h, c, f) in windows.iter_mut() {
        if let Err(e) = c.run(&f.write_window(false)) {
            close_errors.push(format!(
                "{h}: super_read_only could not be set back ON: {e:#}"
            ));
        }
    }
    r?;
    if !close_errors.is_empty() {
        bail!(close_errors.join("\n"));
    }
    Ok(())
}

/// Guards of a link: each slave still replicates from nobody or from this master (unless the
/// plan was made with --force). Returns a connection and the flavor of each.
fn guard_slaves(ctx: &Ctx, slaves: &[LinkSlave]) -> Result<Vec<(Box<dyn SqlConn>, Flavor)>> {
    let mut sconns: Vec<(Box<dyn SqlConn>, Flavor)> = Vec::new();
    for l in slaves {
        let mut c = ctx.sql(&l.host).with_context(|| l.host.clone())?;
        let f = c.flavor()?;
        if let (Some((mh, mp)), Some(r)) = (&l.allowed_master, replica_status(c.as_mut(), &f)?) {
            if !r.master_host.is_empty() && (&r.master_host != mh || r.master_port != *mp) {
                bail!(
                    "{} started replicating from {}:{} since it was observed; nothing changed on it",
                    l.host,
                    r.master_host,
                    r.master_port
                );
            }
        }
        sconns.push((c, f));
    }
    Ok(sconns)
}

/// A physical seed: copy the master into the slaves (their previous datadirs kept aside),
/// start replication at the copy's coordinates, and only once both threads run drop the
/// previous datadirs; a slave whose replication does not start is put back on its own.
fn link_physical(
    ctx: &Ctx,
    master: &str,
    mflavor: &Flavor,
    slaves: &[LinkSlave],
    choice: &crate::physical::Choice,
) -> Result<()> {
    let mhost = ctx.host(master)?;
    let names: Vec<&str> = choice.targets.iter().map(|t| t.host.as_str()).collect();
    ctx.progress.step(
        master,
        &format!(
            "physical copy for {} ({} MiB)",
            names.join(", "),
            choice.size >> 20
        ),
    );
    let outcome = crate::physical::copy(ctx, mhost, mflavor, choice)?;
    ctx.note(outcome.describe(master, &names.join(", ")));
    let errors = crate::par::errors(crate::par::each(&choice.targets, |t| {
        let l = slaves
            .iter()
            .find(|l| l.host == t.host)
            .ok_or_else(|| anyhow!("{}: not a slave of this link", t.host))?;
        let r = (|| -> Result<()> {
            let c = &crate::physical::coords_of(t, &outcome);
            let mut conn = wait_sql_up(ctx, &t.host)?;
            let f = conn.flavor()?;
            point_slave(ctx, l, conn.as_mut(), &f, master, &c.file, c.pos, &c.gtid)?;
            wait_threads(conn.as_mut(), &f, &t.host, ctx.timeout)
        })();
        match r {
            Ok(()) => crate::physical::discard_previous(ctx, t),
            Err(e) if t.in_place => Err(e.context(format!(
                "{}: replication did not start on the copy, cloned in place over a server \
                 that held no user data (nothing of its own is gone); run init again",
                t.host
            ))),
            Err(e) => match crate::physical::restore(ctx, t) {
                Ok(()) => Err(e.context(format!(
                    "{}: replication did not start on the copy; the slave was put back on its \
                     previous datadir (nothing of its own is gone)",
                    t.host
                ))),
                Err(e2) => Err(anyhow!("{e:#}\n{e2:#}")),
            },
        }
    }));
    if !errors.is_empty() {
        bail!(errors.join("\n"));
    }
    Ok(())
}

/// Both replication threads running on a slave, within `timeout` (an error reported after
/// a reconnect's grace fails at once).
fn wait_threads(conn: &mut dyn SqlConn, f: &Flavor, host: &str, timeout: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let r =
            replica_status(conn, f)?.ok_or_else(|| anyhow!("{host}: no replication configured"))?;
        if r.io_running == Some(IoThread::Yes) && r.sql_running {
            return Ok(());
        }
        let err = format!("{}{}", r.last_io_error, r.last_sql_error);
        if (!err.is_empty() && started.elapsed() > Duration::from_secs(12))
            || started.elapsed() >= timeout
        {
            bail!(
                "{host}: replication is not running: {}",
                if err.is_empty() {
                    "no error reported yet (timed out)".to_string()
                } else {
                    err
                }
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// CHANGE MASTER TO the link's master at (file, pos), or by GTID, then START SLAVE.
#[allow(clippy::too_many_arguments)]
fn point_slave(
    ctx: &Ctx,
    l: &LinkSlave,
    conn: &mut dyn SqlConn,
    f: &Flavor,
    master: &str,
    file: &str,
    pos: u64,
    gtid: &Option<String>,
) -> Result<()> {
    ctx.progress.step(
        &l.host,
        &format!("{} {master} at {file}:{pos}", f.words().change),
    );
    let mut stmts: Vec<Sql> = Vec::new();
    if replica_status(conn, f)?.is_some() {
        stmts.push(f.stop_replica());
        stmts.push(f.reset_replica_all());
    }
    let mut cm = l.change.clone();
    match cm.start {
        StartAt::Gtid => {
            if let Some(g) = gtid {
                stmts.extend(f.seed_gtid(g));
            }
        }
        StartAt::Position { .. } => {
            cm.start = StartAt::Position {
                file: file.to_string(),
                pos,
            }
        }
    }
    stmts.push(f.change_master(&cm));
    stmts.push(f.start_replica());
    conn.run(&stmts).with_context(|| l.host.clone())?;
    ctx.note(format!(
        "{}: replicates from {master} (from {file}:{pos})",
        l.host
    ));
    Ok(())
}

fn link_inner(ctx: &Ctx, master: &str, slaves: &[LinkSlave], seed: Option<&Seed>) -> Result<()> {
    let names: Vec<&str> = slaves.iter().map(|l| l.host.as_str()).collect();
    let sconns = guard_slaves(ctx, slaves)?;
    let mhost = ctx.host(master)?;
    let mut mconn = ctx.sql(master)?;
    let mflavor = mconn.flavor()?;
    let secs = ctx.timeout.as_secs().max(1);
    ctx.progress.step(
        master,
        &format!(
            "{} for {}",
            mflavor.flush_tables_with_read_lock().shown(),
            names.join(", ")
        ),
    );
    // A read lock that waits behind a long query would block every writer too: bound it.
    mconn.run(&[
        mflavor.lock_wait_timeout(secs),
        mflavor.flush_tables_with_read_lock(),
    ])?;
    let locked_at = Instant::now();
    let result = (|| -> Result<(String, u64, Option<String>, Option<SeedStats>)> {
        let ms = master_status(mconn.as_mut(), &mflavor)?;
        let gtid = match mflavor.binlog_gtid_pos(&ms.file, ms.position) {
            Some(q) => mconn.one(&q)?,
            None => ms.executed_gtid_set.clone(),
        };
        let mut stats = None;
        if let Some(sd) = seed {
            stats = Some(stream_seed(
                ctx,
                mhost,
                mconn.as_mut(),
                &mflavor,
                slaves,
                sd,
                locked_at,
            )?);
        }
        Ok((ms.file, ms.position, gtid, stats))
    })();
    // Always release the lock, whatever happened (a no-op when the seed released it already).
    let unlock = mconn.exec(&mflavor.unlock_tables());
    let (file, pos, gtid, stats) = result?;
    let held = stats
        .as_ref()
        .and_then(|s| s.lock_held)
        .unwrap_or_else(|| locked_at.elapsed());
    unlock?;
    ctx.progress.step(
        master,
        &format!(
            "snapshot at {file}:{pos} (lock held {} ms)",
            held.as_millis()
        ),
    );
    if let Some(st) = stats.filter(|s| s.bytes > 0) {
        let secs = st.elapsed.as_secs_f64().max(1e-6);
        ctx.note(format!(
            "{}: seeded from {master} ({} bytes in {:.2}s, {:.1} MiB/s; lock held {} ms)",
            names.join(", "),
            st.bytes,
            secs,
            st.bytes as f64 / secs / 1048576.0,
            held.as_millis()
        ));
    }
    // Every slave at once: each has its own connection.
    let (file, gtid) = (&file, &gtid);
    type Work<'a> = (&'a LinkSlave, (Box<dyn SqlConn>, Flavor));
    let mut work: Vec<Work> = slaves.iter().zip(sconns).collect();
    let errors = crate::par::errors(crate::par::each_mut(&mut work, |(l, (conn, f))| {
        point_slave(ctx, l, conn.as_mut(), f, master, file, pos, gtid)
    }));
    if !errors.is_empty() {
        bail!(errors.join("\n"));
    }
    Ok(())
}

/// What a seed copy took.
struct SeedStats {
    bytes: u64,
    elapsed: Duration,
    /// How long the read lock was held, when the copy released it early.
    lock_held: Option<Duration>,
}

/// Stream a dump of the master's user databases into every new slave's client at once.
/// The read lock (held by `mconn`) is released as soon as the dump's consistent snapshot is
/// open, unless the seed says to hold it for the whole copy. Returns the bytes copied.
fn stream_seed(
    ctx: &Ctx,
    mhost: &Host,
    mconn: &mut dyn SqlConn,
    mflavor: &Flavor,
    slaves: &[LinkSlave],
    seed: &Seed,
    locked_at: Instant,
) -> Result<SeedStats> {
    let started = Instant::now();
    let dbs = mconn.column(&mflavor.databases_query())?;
    if dbs.is_empty() {
        return Ok(SeedStats {
            bytes: 0,
            elapsed: started.elapsed(),
            lock_held: None,
        });
    }
    let hold = seed.hold_lock
        || mconn
            .one(&mflavor.non_transactional_tables_query())?
            .is_some_and(|n| n.trim() != "0");
    let size_hint = mconn
        .one(&mflavor.data_size_query())?
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64);

    // Credentials files first, so a failure leaves no process running.
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    let cleanup = |files: &[(String, PathBuf)]| {
        for (h, p) in files {
            if let Ok(mut s) = ctx.session(h) {
                remove_file(s.as_mut(), p);
            }
        }
    };
    let mut lock_held = None;
    let res = (|| -> Result<u64> {
        let mdef = {
            let mut s = ctx.session(&mhost.name)?;
            write_defaults(s.as_mut(), mhost)?
        };
        files.push((mhost.name.clone(), mdef.clone()));
        let mut clients = Vec::new();
        for l in slaves {
            let sh = ctx.host(&l.host)?;
            let mut s = ctx.session(&l.host)?;
            let def = write_defaults(s.as_mut(), sh)?;
            files.push((l.host.clone(), def.clone()));
            let f = {
                let mut c = s.sql_connect(sh, ctx.timeout, ctx.timeout)?;
                c.flavor()?
            };
            // The copy must not enter the slave's own binary log: its peer in a master-master
            // pair (or its own slaves) would apply it a second time.
            let cmd = f.load_command(&def.to_string_lossy());
            clients.push((l.host.clone(), s.spawn(&cmd, false)?));
        }
        let dump_cmd = mflavor.dump_databases_command(&mdef.to_string_lossy(), &dbs)?;
        let mut dump = {
            let mut s = ctx.session(&mhost.name)?;
            s.spawn(&dump_cmd, false)?
        };
        let mut bytes = ctx.progress.bytes(
            &mhost.name,
            &format!("seeding {}", dbs.join(",")),
            size_hint,
        );
        let mut buf = vec![0u8; 256 * 1024];
        let mut unlocked = hold;
        let mut tail: Vec<u8> = Vec::new();
        const SNAPSHOT_OPEN: &[u8] = b"-- Current Database:";
        // A copy that stops moving (a lock wait on either side) is ended after `stall`: every
        // process of this copy is found by its own option file, unique to this run.
        // REPLTOOL_COPY_STALL_SECS: a shorter bound, for the tests that stall a copy on purpose.
        let stall = std::env::var("REPLTOOL_COPY_STALL_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or_else(|| ctx.timeout.max(Duration::from_secs(60)));
        let started = Instant::now();
        let last_progress = std::sync::atomic::AtomicU64::new(0);
        let done = std::sync::atomic::AtomicBool::new(false);
        let stalled = std::sync::atomic::AtomicBool::new(false);
        let ms = |d: Duration| d.as_millis() as u64;
        let files_ref = &files;
        let copy_result = std::thread::scope(|scope| {
            scope.spawn(|| {
                use std::sync::atomic::Ordering::Relaxed;
                while !done.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if ms(started.elapsed()).saturating_sub(last_progress.load(Relaxed)) > ms(stall)
                    {
                        stalled.store(true, Relaxed);
                        for (h, f) in files_ref.iter() {
                            if let Ok(mut s) = ctx.session(h) {
                                let _ = s.run(
                                    &format!(
                                        "pkill -f -- {}",
                                        shell_quote(&format!(
                                            "--defaults-extra-file={}",
                                            f.display()
                                        ))
                                    ),
                                    None,
                                    false,
                                    Duration::from_secs(10),
                                );
                            }
                        }
                        return;
                    }
                }
            });
            let r = (|| -> Result<()> {
                loop {
                    let n = dump.stdout().read(&mut buf).context("reading the dump")?;
                    last_progress
                        .store(ms(started.elapsed()), std::sync::atomic::Ordering::Relaxed);
                    if n == 0 {
                        break;
                    }
                    if !unlocked {
                        // The dump prints "Current Database" only after START TRANSACTION WITH
                        // CONSISTENT SNAPSHOT: from then on its view is fixed and writes may resume.
                        tail.extend_from_slice(&buf[..n]);
                        if tail
                            .windows(SNAPSHOT_OPEN.len())
                            .any(|w| w == SNAPSHOT_OPEN)
                        {
                            mconn.exec(&mflavor.unlock_tables())?;
                            lock_held = Some(locked_at.elapsed());
                            unlocked = true;
                            tail.clear();
                        } else if tail.len() > 64 * 1024 {
                            let keep = tail.len() - SNAPSHOT_OPEN.len();
                            tail.drain(..keep);
                        }
                    }
                    for (h, c) in clients.iter_mut() {
                        c.stdin()
                            .write_all(&buf[..n])
                            .with_context(|| format!("{h}: writing the copy into the client"))?;
                    }
                    bytes.add(n as u64);
                    last_progress
                        .store(ms(started.elapsed()), std::sync::atomic::Ordering::Relaxed);
                }
                Ok(())
            })();
            // The tail is watched too: the dump may end while a client still applies what
            // the pipes held, and a lock wait on a slave there is a stall like any other.
            let tail = (|| -> Result<_> {
                let dump_out = dump.wait()?;
                let mut outs = Vec::new();
                for (h, mut c) in clients {
                    let _ = c.close_stdin();
                    outs.push((h, c.wait()?));
                }
                Ok((dump_out, outs))
            })();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            (r, tail)
        });
        if stalled.load(std::sync::atomic::Ordering::Relaxed) {
            bail!(
                "the copy from {} made no progress for {}s (a lock wait on the master or a \
                 slave?); it was stopped",
                mhost.name,
                stall.as_secs()
            );
        }
        let (copy_result, tail) = copy_result;
        let (dump_out, outs) = tail?;
        let mut client_errors = Vec::new();
        for (h, out) in outs {
            if !out.ok() {
                client_errors.push(format!(
                    "{h}: the client loading the copy failed (exit {}): {}",
                    out.status,
                    out.stderr_str().trim()
                ));
            }
        }
        bytes.finish();
        if !dump_out.ok() {
            // A lost connection usually means the server itself went away: show its log.
            let tail = match ctx.session(&mhost.name) {
                Ok(mut s) => tail_log(s.as_mut(), mhost.error_log.as_deref()),
                Err(_) => String::new(),
            };
            bail!(
                "{}: the dump failed (exit {}): {}{tail}",
                mhost.name,
                dump_out.status,
                dump_out.stderr_str().trim()
            );
        }
        copy_result?;
        if !client_errors.is_empty() {
            bail!(client_errors.join("\n"));
        }
        Ok(bytes.done)
    })();
    cleanup(&files);
    Ok(SeedStats {
        bytes: res?,
        elapsed: started.elapsed(),
        lock_held,
    })
}

/// Both threads running on every slave, then a canary row from each master on every host
/// downstream of it, each within the timeout.
fn verify(ctx: &Ctx, slaves: &[String], canary_from: &[String]) -> Result<()> {
    let deadline = Instant::now() + ctx.timeout;
    let errors = crate::par::errors(crate::par::each(slaves, |s| {
        ctx.progress.step(s, "waiting for both replication threads");
        let mut conn = ctx.sql(s)?;
        let f = conn.flavor()?;
        let started = Instant::now();
        loop {
            let r = replica_status(conn.as_mut(), &f)?
                .ok_or_else(|| anyhow!("{s}: no replication configured"))?;
            if r.io_running == Some(IoThread::Yes) && r.sql_running {
                return Ok(());
            }
            let err = format!("{}{}", r.last_io_error, r.last_sql_error);
            // Grace of one reconnect interval: the IO thread reports a transient error while
            // its master restarts, and retries every 10 s.
            if (!err.is_empty() && started.elapsed() > Duration::from_secs(12))
                || Instant::now() >= deadline
            {
                bail!(
                    "{s}: replication is not running (IO thread {:?} \"{}\", SQL thread {}): {}",
                    r.io_running.unwrap_or(IoThread::No),
                    r.io_state,
                    if r.sql_running { "Yes" } else { "No" },
                    if err.is_empty() {
                        "no error reported yet (timed out)".to_string()
                    } else {
                        err
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }));
    if !errors.is_empty() {
        bail!(errors.join("\n"));
    }
    let token = format!(
        "{:x}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
        std::process::id()
    );
    for m in canary_from {
        ctx.progress.step(m, "writing the canary row");
        let mut conn = ctx.sql(m)?;
        let f = conn.flavor()?;
        let mut stmts = f.canary_setup();
        stmts.push(f.canary_write(m, &token));
        conn.run(&stmts)?;
    }
    let checks: Vec<(String, String)> = canary_from
        .iter()
        .flat_map(|m| {
            downstream(ctx.topo, m)
                .into_iter()
                .map(move |d| (m.clone(), d))
        })
        .collect();
    let errors = crate::par::errors(crate::par::each(&checks, |(m, d)| {
        let mut conn = ctx.sql(d)?;
        let f = conn.flavor()?;
        loop {
            // The table itself arrives by replication too: until it exists, "not yet"; any
            // other error is an error.
            if conn.one(&f.canary_exists())?.as_deref() != Some("0") {
                if let Some(t) = conn.one(&f.canary_read(m))? {
                    if t == token {
                        ctx.progress.step(d, &format!("canary from {m} arrived"));
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "{d}: the canary row written on {m} did not arrive within {}s",
                    ctx.timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }));
    if !errors.is_empty() {
        bail!(errors.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::fake::{FakeConn, FakeServer, Reply};

    fn repl_user(f: &Flavor) -> Sql {
        f.create_repl_user("repl", "10.0.0.2", &crate::secret::Secret::new("pw"))[1].clone()
    }

    fn run_window(version: &str, super_ro: &str, body_fails: bool) -> (Result<()>, Vec<String>) {
        let f = Flavor::detect(version, "").unwrap();
        let user = repl_user(&f);
        let server = FakeServer::shared();
        {
            let mut g = server.lock().unwrap();
            g.on("@@GLOBAL.super_read_only", Reply::value(super_ro));
            for q in f.write_window(true).iter().chain(&f.write_window(false)) {
                g.on(q.text(), Reply::Ok);
            }
            g.on(
                user.text(),
                if body_fails {
                    Reply::Err(1290, "read only".into())
                } else {
                    Reply::Ok
                },
            );
        }
        let mut conn = FakeConn(server.clone());
        let r = with_write_window(&mut conn, &f, |c| c.exec(&user));
        let log = server.lock().unwrap().log.clone();
        (r, log)
    }

    #[test]
    fn a_fenced_mysql_server_gets_a_window_that_is_closed_even_on_failure() {
        let f = Flavor::detect("9.7.4", "").unwrap();
        let (open, close) = (&f.write_window(true)[0], &f.write_window(false)[0]);
        let (r, log) = run_window("9.7.4", "1", false);
        assert!(r.is_ok());
        assert_eq!(log.len(), 4, "{log:?}");
        assert_eq!(log[1], open.text());
        assert_eq!(log[2], repl_user(&f).text());
        assert_eq!(log[3], close.text());
        let (r, log) = run_window("9.7.4", "1", true);
        assert!(format!("{:#}", r.unwrap_err()).contains("1290"));
        assert_eq!(log.last().unwrap(), close.text());
        // A writable MySQL master is left alone: no window, nothing turned ON behind its back.
        let (_, log) = run_window("9.7.4", "0", false);
        assert!(
            !log.iter().any(|l| l == open.text() || l == close.text()),
            "{log:?}"
        );
        // MariaDB: repltool's account has READ_ONLY ADMIN; no window at all.
        let (_, log) = run_window("10.11.6-MariaDB", "1", false);
        assert_eq!(log.len(), 1, "{log:?}");
    }
}
