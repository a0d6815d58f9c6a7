//! One function per subcommand: wires load -> observe -> plan -> execute -> report.

use std::path::{Path, PathBuf};

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::execute::{execute, Ctx};
use crate::observe::Facts;
use crate::plan::init::InitOptions;
use crate::report::Progress;
use crate::topology::Topology;
use crate::transport::Sessions;

use crate::cli::{Cli, Command, LabCommand};

/// Run a parsed command line; returns the exit code (errors map through `error::exit_code`).
pub fn run(cli: Cli) -> Result<i32> {
    let file = |own: Option<PathBuf>| -> PathBuf {
        own.or(cli.file.clone())
            .unwrap_or_else(|| PathBuf::from("topology.yaml"))
    };
    match cli.command {
        Command::Init(ref a) => init(&file(a.file.clone()), a),
        Command::Status(ref a) => status(&file(None), a),
        Command::Promote(ref a) => promote(&file(None), a),
        Command::Check(ref a) => check(&file(None), a),
        Command::Restart(ref a) => restart(&file(None), a),
        Command::Verify(ref a) => verify(&file(a.file.clone()), a),
        Command::Watch(ref a) => crate::watch::run(
            &file(a.file.clone()),
            &crate::watch::WatchOptions {
                once: a.once,
                json: a.format == crate::cli::Format::Json,
                metrics: a.metrics.clone(),
                ack: a.ack,
                id: a.id.clone(),
                timeout: Duration::from_secs(a.timeout.max(1)),
                max_lag: a.max_lag,
            },
        ),
        Command::Lab(LabCommand::Up(ref a)) => lab_up(a),
        Command::Lab(LabCommand::Status(ref a)) => lab_status(a),
        Command::Lab(LabCommand::Down(ref a)) => lab_down(a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut buf: Vec<u8> = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "repltool", &mut buf);
            crate::report::out(String::from_utf8_lossy(&buf));
            Ok(0)
        }
        Command::Man => {
            use clap::CommandFactory;
            let mut buf: Vec<u8> = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut buf)?;
            crate::report::out(String::from_utf8_lossy(&buf));
            Ok(0)
        }
    }
}

fn init(path: &Path, a: &crate::cli::InitArgs) -> Result<i32> {
    let topo = crate::topology::load(path)?;
    if topo.galera.is_some() {
        return crate::galera::init(path, &topo, a);
    }
    let progress = Progress::new(false);
    let timeout = Duration::from_secs(a.timeout.max(1));
    let started = Instant::now();
    let sessions = open_sessions(&topo, &progress, timeout)?;
    let short = timeout.min(Duration::from_secs(10));
    // Two runs never interleave (two seeds into one replica): the cluster lock before anything
    // is observed, for the whole run, released when this process ends. A dry run only checks it.
    let names: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
    let lock = crate::lock::ClusterLock::acquire(&topo, Some(path), &sessions, &names, short)
        .inspect_err(|_| progress.finish())?;
    let mut held = if a.dry_run {
        drop(lock);
        None
    } else {
        Some(lock)
    };
    // Observed on the lock's own connections: no second round of logins.
    let facts = match held.as_mut() {
        Some(l) => {
            let (facts, back) =
                crate::observe::observe_all_on(&topo, &sessions, &[], short, true, l.lend());
            l.give_back(back);
            facts
        }
        None => observe_all(&topo, &sessions, short, true),
    };
    let plan = crate::plan::init::plan_init(&topo, &facts, &InitOptions { force: a.force })?;
    // Warnings and the plan quote what the servers reported.
    for w in &plan.warnings {
        crate::report::say(format!("warning: {w}"));
    }
    // The proxies, planned from the servers as they are now: a missing package or a proxy
    // that does not answer stops init here, before anything is changed.
    let proxies = crate::proxy::connect_all(&topo, Some(short));
    let proxy_plans = if topo.proxies.is_empty() {
        Vec::new()
    } else {
        crate::proxy::exec::plan_now(
            &topo, &proxies.0, &proxies.1, &facts, a.max_lag, None, short,
        )
        .map_err(|e| {
            progress.finish();
            anyhow::anyhow!("{e:#}\nnothing was changed.")
        })?
    };
    let proxies_converged = proxy_plans.iter().all(|p| p.is_empty());
    if a.dry_run {
        progress.finish();
        if plan.is_empty() && proxies_converged {
            crate::report::outln(format!(
                "nothing to do: the cluster already matches {}",
                path.display()
            ));
        } else {
            let lines: Vec<String> = proxy_plans.iter().flat_map(|p| p.lines()).collect();
            crate::report::outln(format!(
                "plan for {} ({} steps; nothing was changed):",
                topo.name,
                plan.steps.len() + lines.len()
            ));
            if !plan.is_empty() {
                crate::report::out(crate::report::clean(&plan.render()));
            }
            if !lines.is_empty() {
                crate::report::outln(if plan.is_empty() {
                    "proxies:".to_string()
                } else {
                    "proxies (once the servers are done; reader endpoints judged from the servers as they are then):".to_string()
                });
                for l in lines {
                    crate::report::outln(format!("  {l}"));
                }
            }
        }
        return Ok(0);
    }
    if plan.is_empty() && proxies_converged {
        progress.finish();
        let proxies_note = if topo.proxies.is_empty() {
            String::new()
        } else {
            format!(", {} proxies (no reload)", topo.proxies.len())
        };
        crate::report::outln(format!(
            "nothing to do: the cluster already matches {} ({} hosts checked in {:.2}s{proxies_note}; no restart, no re-pointing, no copy)",
            path.display(),
            topo.hosts.len(),
            started.elapsed().as_secs_f64()
        ));
        return Ok(0);
    }
    let lock = held.map(std::sync::Mutex::new);
    let mut ctx = Ctx::new(&topo, &sessions, &progress, timeout);
    if let Some(l) = &lock {
        ctx = ctx.with_lock(l);
    }
    if !plan.is_empty() {
        let res = execute(&ctx, &plan);
        if let Err(e) = res {
            progress.finish();
            return Err(e);
        }
    }
    let facts = if plan.is_empty() {
        facts
    } else {
        observe_all(&topo, &sessions, short, false)
    };
    if !topo.proxies.is_empty() {
        // Now that replication runs as the file says: the endpoints, with the reader
        // endpoints judged on the servers as they are now.
        let res = crate::proxy::exec::converge(
            &topo, &proxies.0, &proxies.1, &facts, a.max_lag, None, &progress, timeout,
        );
        if let Err(e) = res {
            progress.finish();
            let changes = progress.changes();
            let mut msg = format!("{e:#}");
            if !changes.is_empty() {
                msg.push_str("\nalready changed (run init again once the cause is fixed):");
                for c in changes {
                    msg.push_str(&format!("\n  - {c}"));
                }
            }
            return Err(anyhow::anyhow!(msg));
        }
    }
    progress.finish();
    let changes = progress.changes();
    crate::report::outln(format!(
        "{}: done in {:.2}s, {} changes:",
        topo.name,
        started.elapsed().as_secs_f64(),
        changes.len()
    ));
    for c in &changes {
        crate::report::outln(format!("  - {}", crate::report::clean(c)));
    }
    if let Some(m) = topo.masters().next() {
        if let Some(line) = crate::watch::publish_after_command(&topo, &m.name, "init") {
            crate::report::outln(line);
        }
    }
    crate::report::outln(crate::report::summary_table(&topo, &facts));
    Ok(0)
}

/// One session per host, opened in parallel; any failure names the host and stops here,
/// before anything was changed. `--timeout` caps each connect (ssh-agent included) when it is
/// shorter than the file's `ssh.connect_timeout`.
fn open_sessions(topo: &Topology, progress: &Progress, timeout: Duration) -> Result<Sessions> {
    for h in &topo.hosts {
        progress.step(&h.name, "connecting");
    }
    let (sessions, failed) = crate::transport::connect_all(topo, Some(timeout));
    if !failed.is_empty() {
        progress.finish();
        let errors: Vec<String> = failed.iter().map(|(_, e)| format!("{e:#}")).collect();
        anyhow::bail!("{}\nnothing was changed.", errors.join("\n"));
    }
    Ok(sessions)
}

/// Observe every host in parallel over the open sessions.
pub fn observe_all(
    topo: &Topology,
    sessions: &Sessions,
    timeout: Duration,
    with_config: bool,
) -> HashMap<String, Facts> {
    crate::observe::observe_all(topo, sessions, &[], timeout, with_config)
}

fn status(path: &Path, a: &crate::cli::StatusArgs) -> Result<i32> {
    let topo = crate::topology::load(path)?;
    let timeout = Duration::from_secs(a.timeout.max(1));
    loop {
        // The servers and the proxies at once: a dead proxy costs no more than a dead host.
        let (facts, pf) = std::thread::scope(|s| {
            let proxies = s.spawn(|| observe_proxies_bounded(&topo, timeout));
            let facts = observe_bounded(&topo, timeout);
            (facts, proxies.join().unwrap_or_default())
        });
        let mut problems = crate::report::status::problems(&topo, &facts, a.max_lag);
        problems.extend(crate::proxy::report::findings(
            &topo, &facts, &pf, a.max_lag,
        ));
        // With `watch:`: the writer etcd names and the recoveries it recorded.
        let watch = crate::watch::status_section(&topo);
        let mut out = String::new();
        match a.format {
            crate::cli::Format::Json => {
                let mut v = crate::report::status::json(&topo, &facts, &problems);
                if let Some((_, w)) = &watch {
                    v["watch"] = w.clone();
                }
                if !topo.proxies.is_empty() {
                    let (proxies, vip) = crate::proxy::report::json(&topo, &pf);
                    v["proxies"] = proxies;
                    v["vip"] = vip;
                }
                out.push_str(&serde_json::to_string_pretty(&v)?);
                out.push('\n');
            }
            crate::cli::Format::Table => {
                let color =
                    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
                out.push_str(&crate::report::status::tree(&topo, &facts));
                out.push('\n');
                out.push_str(
                    &crate::report::status::table(&topo, &facts, a.max_lag, color).to_string(),
                );
                out.push('\n');
                if topo.galera.is_some() {
                    out.push_str(
                        &crate::report::status::galera_table(&topo, &facts, color).to_string(),
                    );
                    out.push('\n');
                }
                if !topo.proxies.is_empty() {
                    out.push_str(&crate::proxy::report::table(&topo, &pf).to_string());
                    out.push('\n');
                }
                if problems.is_empty() {
                    let proxies = if topo.proxies.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; {} proxies send writes to {}",
                            topo.proxies.len(),
                            crate::proxy::writer_of(&topo).unwrap_or_default()
                        )
                    };
                    out.push_str(&format!(
                        "healthy: {} hosts, {}every slave replicating as {} says{proxies}\n",
                        topo.hosts.len(),
                        if topo.galera.is_some() {
                            "every Galera member Synced in one primary component, "
                        } else {
                            ""
                        },
                        path.display()
                    ));
                } else {
                    out.push_str(&format!("{} problem(s):\n", problems.len()));
                    for p in &problems {
                        out.push_str(&format!(
                            "  {}: {}\n      -> {}\n",
                            p.host,
                            crate::report::clean(&p.what),
                            crate::report::clean(&p.next)
                        ));
                    }
                }
                if let Some((w, _)) = &watch {
                    out.push_str(w);
                }
            }
        }
        match a.watch {
            None => {
                crate::report::out(&out);
                return Ok(if problems.is_empty() { 0 } else { 1 });
            }
            Some(secs) => {
                // Clear the screen and redraw in place until Ctrl-C.
                crate::report::out(format!("\x1b[2J\x1b[H{out}"));
                let _ = std::io::stdout().flush();
                std::thread::sleep(Duration::from_secs(secs.max(1)));
            }
        }
    }
}

/// Connect to and observe every proxy in parallel, each bounded by `timeout`.
pub(crate) fn observe_proxies_bounded(
    topo: &Topology,
    timeout: Duration,
) -> std::collections::BTreeMap<String, crate::proxy::observe::ProxyFacts> {
    if topo.proxies.is_empty() {
        return Default::default();
    }
    let (sessions, failed) = crate::proxy::connect_all(topo, Some(timeout));
    crate::proxy::observe::observe_all(topo, &sessions, &failed, timeout)
}

/// Connect to and observe every host in parallel, each bounded by `timeout` (SSH connect, SQL
/// connect): an unreachable host becomes a row, never a hang.
pub fn observe_bounded(topo: &Topology, timeout: Duration) -> HashMap<String, Facts> {
    let (sessions, failed) = crate::transport::connect_all(topo, Some(timeout));
    crate::observe::observe_all(topo, &sessions, &failed, timeout, false)
}

fn promote(path: &Path, a: &crate::cli::PromoteArgs) -> Result<i32> {
    let topo = crate::topology::load(path)?;
    let opts = crate::promote::PromoteOptions {
        dry_run: a.dry_run,
        yes: a.yes,
        force: a.force,
        timeout: Duration::from_secs(a.timeout.max(1)),
        max_lag: a.max_lag,
    };
    if topo.host(&a.host).is_some_and(|h| topo.is_member(h)) {
        return crate::galera::promote(path, &topo, &a.host, &opts);
    }
    crate::promote::run(path, &topo, &a.host, &opts)
}

fn restart(path: &Path, a: &crate::cli::RestartArgs) -> Result<i32> {
    let topo = crate::topology::load(path)?;
    crate::galera::rolling(path, &topo, a)
}

fn check(path: &Path, a: &crate::cli::CheckArgs) -> Result<i32> {
    let topo = crate::topology::load(path)?;
    let mut rows = crate::check::run_checks(&topo, Duration::from_secs(a.timeout.max(1)));
    // Details quote servers and remote commands.
    for r in &mut rows {
        r.detail = crate::report::clean(&r.detail).into_owned();
    }
    crate::report::out(crate::check::render(
        &rows,
        a.format == crate::cli::Format::Json,
    ));
    let failed = rows
        .iter()
        .any(|r| r.verdict == crate::check::Verdict::Fail);
    Ok(if failed { 1 } else { 0 })
}

fn verify(path: &Path, a: &crate::cli::VerifyArgs) -> Result<i32> {
    let topo = crate::topology::load(path)?;
    if !(a.chunk_time > 0.0 && a.chunk_time <= 60.0) {
        return Err(crate::error::input(format!(
            "--chunk-time {}: expected seconds between 0 and 60",
            a.chunk_time
        )));
    }
    crate::verify::run(
        path,
        &topo,
        &crate::verify::VerifyOptions {
            json: a.format == crate::cli::Format::Json,
            chunk_time: Duration::from_secs_f64(a.chunk_time),
            timeout: Duration::from_secs(a.timeout.max(1)),
        },
    )
}

fn lab_up(a: &crate::cli::LabUpArgs) -> Result<i32> {
    crate::lab::up(a)
}

fn lab_status(a: &crate::cli::LabDirArgs) -> Result<i32> {
    crate::lab::status(a)
}

fn lab_down(a: &crate::cli::LabDirArgs) -> Result<i32> {
    crate::lab::down(a)
}
