//! The only code that changes a proxy: runs the [`ProxyPlan`]s (files written and validated
//! before they replace the old ones, graceful reloads, HAProxy runtime commands), and moves
//! the writer endpoint for `promote` ([`drain_writer`], [`point_writer`]), a function a
//! watcher can call too. Every change is journaled; failures name the proxy and the step.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use super::observe::{self, parse_show_stat, ProxyFacts};
use super::plan::{self, service_command, PStep, ProxyPlan, Service, Validate};
use super::{paths, render, Endpoint, ProxySessions};
use crate::observe::Facts;
use crate::report::Progress;
use crate::topology::{Proxy, ProxyKind, Topology};
use crate::transport::{shell_quote, HostSession};

/// How long a proxy gets to show that a start or a reload took.
const SETTLE: Duration = Duration::from_secs(10);

fn with_session<R>(
    sessions: &ProxySessions,
    name: &str,
    f: impl FnOnce(&mut dyn HostSession) -> Result<R>,
) -> Result<R> {
    let m = sessions
        .get(name)
        .ok_or_else(|| anyhow!("{name}: no session (it could not be reached)"))?;
    let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
    f(s.as_mut())
}

/// Run a privileged script; its stdout, or an error with its output.
fn run(s: &mut dyn HostSession, script: &str, stdin: Option<&[u8]>, t: Duration) -> Result<String> {
    let out = s.run(script, stdin, true, t)?;
    if !out.ok() {
        let mut msg = out.stderr_str().trim().to_string();
        let o = out.stdout_str();
        if !o.trim().is_empty() {
            if !msg.is_empty() {
                msg.push_str("; ");
            }
            msg.push_str(o.trim());
        }
        bail!("exit {}: {}", out.status, msg);
    }
    Ok(out.stdout_str())
}

/// Commands on HAProxy's admin socket for `cluster`, in one connection (`;`-separated). Any
/// answer but silence is an error ("No such server.", "Require 'backend/server'."...).
pub fn haproxy_runtime(
    s: &mut dyn HostSession,
    cluster: &str,
    commands: &[String],
    t: Duration,
) -> Result<()> {
    if commands.is_empty() {
        return Ok(());
    }
    let line = commands.join("; ");
    let script = format!(
        "printf '%s\\n' {} | socat -t 2 stdio unix-connect:{}",
        shell_quote(&line),
        shell_quote(&paths::haproxy_socket(cluster))
    );
    let out = run(s, &script, None, t).context("HAProxy's admin socket")?;
    let answer: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    if !answer.is_empty() {
        bail!("HAProxy answered `{}` to `{line}`", answer.join(" / "));
    }
    Ok(())
}

/// HAProxy's `show stat` on repltool's socket.
fn haproxy_stat(
    s: &mut dyn HostSession,
    cluster: &str,
    t: Duration,
) -> Result<Vec<observe::StatRow>> {
    let script = format!(
        "echo 'show stat' | socat -t 2 stdio unix-connect:{}",
        shell_quote(&paths::haproxy_socket(cluster))
    );
    parse_show_stat(&run(s, &script, None, t)?)
}

/// Wait until the running HAProxy serves repltool's endpoints with every server `want`
/// names (it loaded the new file: a reload whose new process could not bind leaves the old
/// one running).
fn wait_haproxy(
    s: &mut dyn HostSession,
    cluster: &str,
    want: &[String],
    t: Duration,
) -> Result<()> {
    let end = Instant::now() + SETTLE;
    loop {
        let last = match haproxy_stat(s, cluster, t) {
            Ok(rows) => {
                let have: Vec<String> = rows
                    .iter()
                    .map(|r| format!("{}/{}", r.backend, r.server))
                    .collect();
                let missing: Vec<&String> = want.iter().filter(|w| !have.contains(w)).collect();
                if missing.is_empty() {
                    return Ok(());
                }
                format!(
                    "it does not serve {} yet",
                    missing
                        .iter()
                        .map(|m| m.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= end {
            bail!(
                "HAProxy did not take the new configuration within {}s ({last}); see its log and `haproxy -c -f {}`",
                SETTLE.as_secs(),
                paths::HAPROXY_CFG
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every server name repltool's HAProxy block declares for `topo` on `p`.
fn haproxy_servers(topo: &Topology, p: &Proxy) -> Vec<String> {
    let mut v = Vec::new();
    let mut eps = vec![Endpoint::Writer];
    if p.reader.is_some() {
        eps.push(Endpoint::Reader);
    }
    for e in eps {
        let b = render::haproxy_backend(&topo.name, e);
        for backup in [false, true] {
            for h in &topo.hosts {
                v.push(if backup {
                    format!("{b}/{}:backup", h.name)
                } else {
                    format!("{b}/{}", h.name)
                });
            }
        }
    }
    v
}

/// Write `content` to `path`: the candidate next to it, checked by `check` (with `{}` the
/// candidate's path) when given, then moved over the old file, the previous kept as
/// `PATH.bak` (a stale `.bak` of a file that did not exist is removed, so a restore is right).
fn write_file(
    s: &mut dyn HostSession,
    path: &str,
    content: &str,
    mode: u32,
    check: Option<&str>,
    t: Duration,
) -> Result<()> {
    let p = shell_quote(path);
    let dir = shell_quote(
        std::path::Path::new(path)
            .parent()
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".into())
            .as_str(),
    );
    let check = match check {
        Some(c) => format!(
            "if ! out=$({} 2>&1); then printf '%s\\n' \"$out\" >&2; exit 9; fi; ",
            c.replace("{}", "\"$t\"")
        ),
        None => String::new(),
    };
    let script = format!(
        "set -e; umask 022; mkdir -p {dir}; t={p}.repltool-new; trap 'rm -f \"$t\"' EXIT; \
         cat > \"$t\"; chmod {mode:o} \"$t\"; set +e; {check}set -e; \
         if [ -e {p} ]; then cp -p {p} {p}.bak; else rm -f {p}.bak; fi; mv -f \"$t\" {p}; trap - EXIT"
    );
    let out = s.run(&script, Some(content.as_bytes()), true, t)?;
    match out.status {
        0 => Ok(()),
        9 => bail!(
            "the new {path} was refused by its check, so the old one stays: {}",
            out.stderr_str().trim()
        ),
        n => bail!(
            "writing {path} failed (exit {n}): {}",
            out.stderr_str().trim()
        ),
    }
}

/// Put back what [`write_file`] replaced.
fn restore(s: &mut dyn HostSession, paths: &[String], t: Duration) -> Result<()> {
    let mut script = String::new();
    for p in paths {
        let q = shell_quote(p);
        script.push_str(&format!(
            "if [ -e {q}.bak ]; then mv -f {q}.bak {q}; else rm -f {q}; fi; "
        ));
    }
    run(s, &script, None, t).map(|_| ())
}

/// nginx: reload by SIGHUP to the master whose pid is in the file `pf` (a shell word), wait
/// until a new generation of workers runs, and with `drain` end the previous generation at
/// once (its sessions to the server the writer left). The workers are the master's children:
/// found by parent pid, never by name.
fn nginx_reload_script(pf: &str, drain: bool) -> String {
    format!(
        "m=$(head -n 1 {pf} 2>/dev/null); [ -n \"$m\" ] && kill -0 \"$m\" 2>/dev/null || {{ echo \"nginx is not running (no live pid in {pf})\" >&2; exit 1; }}; \
         old=$(ps -o pid= --ppid \"$m\" | tr -d ' '); kill -HUP \"$m\"; i=0; \
         while :; do new=''; for c in $(ps -o pid= --ppid \"$m\" | tr -d ' '); do case \" $(echo $old) \" in *\" $c \"*) ;; *) new=$c ;; esac; done; \
         [ -n \"$new\" ] && break; i=$((i+1)); if [ $i -ge 500 ]; then echo 'nginx started no new workers after the reload: see /var/log/nginx/error.log' >&2; exit 1; fi; sleep 0.01; done; \
         {}",
        if drain {
            "for c in $old; do kill -TERM \"$c\" 2>/dev/null || true; done"
        } else {
            "true"
        }
    )
}

fn nginx_reload(s: &mut dyn HostSession, pid_file: &str, drain: bool, t: Duration) -> Result<()> {
    run(
        s,
        &nginx_reload_script(&shell_quote(pid_file), drain),
        None,
        t,
    )
    .map(|_| ())
}

/// The whole nginx writer move in one round trip: repltool's file rewritten so the writer
/// upstream sends to `to` only (None: nobody), the previous file kept as `.bak`, a graceful
/// reload, and with `end_previous` the previous workers ended.
pub fn nginx_move_script(cluster: &str, to: Option<&str>, end_previous: bool) -> String {
    let f = shell_quote(&paths::nginx_file(cluster));
    format!(
        "set -e; f={f}; [ -e \"$f\" ] || {{ echo \"$f does not exist: run repltool init first\" >&2; exit 1; }}; \
         pf=$(awk '/^[[:space:]]*pid[[:space:]]/ {{ v = $2; sub(/;$/, \"\", v); print v; exit }}' {conf} 2>/dev/null || true); [ -n \"$pf\" ] || pf={pid}; \
         t=\"$f.repltool-new\"; trap 'rm -f \"$t\"' EXIT; \
         if ! {awk} < \"$f\" > \"$t\"; then echo \"$f has no writer upstream for {cluster}: run repltool init\" >&2; exit 1; fi; \
         cp -p \"$f\" \"$f.bak\"; mv -f \"$t\" \"$f\"; trap - EXIT; set +e; {reload}",
        conf = paths::NGINX_CONF,
        pid = paths::NGINX_PID,
        awk = render::nginx_writer_awk(cluster, to),
        reload = nginx_reload_script("\"$pf\"", end_previous),
    )
}

/// Wait until the pid file names a live process.
fn wait_pid(s: &mut dyn HostSession, pid_file: &str, what: &str, t: Duration) -> Result<()> {
    let script = format!(
        "i=0; while :; do p=$(head -n 1 {pf} 2>/dev/null); if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then exit 0; fi; \
         i=$((i+1)); [ $i -lt {n} ] || {{ echo '{what} did not start (no live pid in {pf})' >&2; exit 1; }}; sleep 0.05; done",
        pf = shell_quote(pid_file),
        n = SETTLE.as_millis() / 50
    );
    run(s, &script, None, t.max(SETTLE + Duration::from_secs(2))).map(|_| ())
}

/// Run one proxy's plan.
fn execute_one(
    topo: &Topology,
    p: &Proxy,
    plan: &ProxyPlan,
    s: &mut dyn HostSession,
    progress: &Progress,
    t: Duration,
) -> Result<()> {
    let mut nginx_written: Vec<String> = Vec::new();
    for (step, line) in plan.steps.iter().zip(plan.lines()) {
        match step {
            PStep::Write {
                path,
                content,
                mode,
                validate,
                ..
            } => {
                let check = match validate {
                    Validate::Haproxy => Some("haproxy -c -q -f {}"),
                    Validate::Keepalived => Some("keepalived -t -f {}"),
                    Validate::Nginx | Validate::Nothing => None,
                };
                write_file(s, path, content, *mode, check, t)?;
                if *validate == Validate::Nginx {
                    nginx_written.push(path.clone());
                }
            }
            PStep::NginxTest => {
                if let Err(e) = run(s, "nginx -t", None, t) {
                    let back = restore(s, &nginx_written, t);
                    bail!(
                        "nginx -t refused the new configuration ({e:#}); {}",
                        match back {
                            Ok(()) => "the previous files are back, nothing was reloaded".into(),
                            Err(r) => format!(
                                "putting the previous files back failed too ({r:#}): check {}",
                                nginx_written.join(", ")
                            ),
                        }
                    );
                }
            }
            PStep::Start(svc) => {
                run(
                    s,
                    &service_command(plan.systemd, *svc, "start"),
                    None,
                    t.max(SETTLE),
                )?;
                match svc {
                    Service::Haproxy => wait_haproxy(s, &topo.name, &haproxy_servers(topo, p), t)?,
                    Service::Nginx => wait_pid(s, &plan.nginx_pid_file, "nginx", t)?,
                    Service::Keepalived => wait_pid(s, paths::KEEPALIVED_PID, "keepalived", t)?,
                }
            }
            PStep::Reload { service, drain } => match service {
                Service::Nginx => nginx_reload(s, &plan.nginx_pid_file, *drain, t)?,
                Service::Haproxy => {
                    run(
                        s,
                        &service_command(plan.systemd, *service, "reload"),
                        None,
                        t.max(SETTLE),
                    )?;
                    wait_haproxy(s, &topo.name, &haproxy_servers(topo, p), t)?;
                }
                Service::Keepalived => {
                    run(
                        s,
                        &service_command(plan.systemd, *service, "reload"),
                        None,
                        t,
                    )?;
                }
            },
            PStep::Runtime { commands, .. } => haproxy_runtime(s, &topo.name, commands, t)?,
        }
        progress.record(&line);
    }
    Ok(())
}

/// Run every proxy's plan, proxies in parallel; every failure, each naming its proxy.
pub fn execute(
    topo: &Topology,
    sessions: &ProxySessions,
    plans: &[ProxyPlan],
    progress: &Progress,
    t: Duration,
) -> Result<()> {
    let errors = crate::par::errors(crate::par::each(plans, |pl| {
        if pl.is_empty() {
            return Ok(());
        }
        let p = topo
            .proxy(&pl.proxy)
            .ok_or_else(|| anyhow!("{}: not in the file", pl.proxy))?;
        with_session(sessions, &pl.proxy, |s| {
            execute_one(topo, p, pl, s, progress, t)
        })
        .with_context(|| pl.proxy.clone())
    }));
    if errors.is_empty() {
        Ok(())
    } else {
        bail!(errors.join("\n"))
    }
}

/// Observe the proxies, plan them against the routing of `topo` with the servers' `facts`
/// and run the plans: what `init` does after the database side, and `promote` at its end.
/// Returns the plans that ran (empty ones included).
#[allow(clippy::too_many_arguments)]
pub fn converge(
    topo: &Topology,
    sessions: &ProxySessions,
    failed: &[(String, anyhow::Error)],
    facts: &HashMap<String, Facts>,
    max_lag: u64,
    only: Option<&[String]>,
    progress: &Progress,
    t: Duration,
) -> Result<Vec<ProxyPlan>> {
    let plans = plan_now(topo, sessions, failed, facts, max_lag, only, t)?;
    execute(topo, sessions, &plans, progress, t)?;
    Ok(plans)
}

/// The plans [`converge`] would run, from a fresh observation of the proxies (all of them,
/// or those in `only`).
pub fn plan_now(
    topo: &Topology,
    sessions: &ProxySessions,
    failed: &[(String, anyhow::Error)],
    facts: &HashMap<String, Facts>,
    max_lag: u64,
    only: Option<&[String]>,
    t: Duration,
) -> Result<Vec<ProxyPlan>> {
    let writer = super::writer_of(topo).ok_or_else(|| {
        anyhow!("no writable master in the file: the writer endpoint would have nowhere to go")
    })?;
    let health = super::reader_health(topo, facts, max_lag);
    let want = super::routing(topo, &writer, &health);
    let pf: BTreeMap<String, ProxyFacts> = observe::observe_all(topo, sessions, failed, t);
    plan::plan_all(topo, &want, &pf, only).map_err(|e| anyhow!(e.join("\n")))
}

/// What one proxy did in a writer move.
pub type Moved = Vec<(String, Result<String>)>;

/// A promote's first endpoint move: the writer endpoint of every proxy in `proxies` reaches
/// no server any more and the sessions it holds are ended (HAProxy: every writer server in
/// maintenance and its sessions shut, at runtime; nginx: the writer upstream all `down`, a
/// graceful reload, the previous workers ended). Proxies in parallel.
pub fn drain_writer(
    topo: &Topology,
    sessions: &ProxySessions,
    proxies: &[String],
    t: Duration,
) -> Moved {
    move_writer(topo, sessions, proxies, None, true, t)
}

/// A promote's second endpoint move: the writer endpoint sends new connections to `to` only,
/// the sessions it held elsewhere ended (HAProxy: every other writer server in maintenance and
/// its sessions shut, then `to` ready, in one admin-socket connection; nginx with
/// `end_previous`: the workers of the previous configuration are ended once the new ones run).
pub fn point_writer(
    topo: &Topology,
    sessions: &ProxySessions,
    proxies: &[String],
    to: &str,
    end_previous: bool,
    t: Duration,
) -> Moved {
    move_writer(topo, sessions, proxies, Some(to), end_previous, t)
}

fn move_writer(
    topo: &Topology,
    sessions: &ProxySessions,
    proxies: &[String],
    to: Option<&str>,
    end_previous: bool,
    t: Duration,
) -> Moved {
    let res = crate::par::each(proxies, |name| {
        let p = topo
            .proxy(name)
            .ok_or_else(|| anyhow!("{name}: not in the file"))?;
        with_session(sessions, name, |s| match p.kind {
            ProxyKind::Haproxy => {
                let b = render::haproxy_backend(&topo.name, Endpoint::Writer);
                // Every other writer server out and its sessions shut, then `to` in: one
                // admin-socket connection, so the endpoint never reaches two servers.
                let mut cmds: Vec<String> = topo
                    .hosts
                    .iter()
                    .flat_map(|h| [h.name.clone(), format!("{}:backup", h.name)])
                    .filter(|sv| Some(sv.as_str()) != to)
                    .flat_map(|sv| {
                        [
                            format!("set server {b}/{sv} state maint"),
                            format!("shutdown sessions server {b}/{sv}"),
                        ]
                    })
                    .collect();
                if let Some(to) = to {
                    cmds.push(format!("set server {b}/{to} state ready"));
                }
                haproxy_runtime(s, &topo.name, &cmds, t)?;
                Ok(match to {
                    None => "writer endpoint drained (every server in maintenance, sessions shut)"
                        .to_string(),
                    Some(to) => format!(
                        "writer endpoint sends to {to} only (every other writer server in maintenance, sessions shut)"
                    ),
                })
            }
            ProxyKind::Nginx => {
                run(s, &nginx_move_script(&topo.name, to, end_previous), None, t)?;
                Ok(match (to, end_previous) {
                    (None, _) => "writer endpoint drained (its upstream all down, nginx reloaded, previous workers ended)".to_string(),
                    (Some(to), true) => format!("writer endpoint sends to {to} (nginx reloaded, previous workers ended)"),
                    (Some(to), false) => format!("writer endpoint sends to {to} (nginx reloaded)"),
                })
            }
        })
    });
    proxies.iter().cloned().zip(res).collect()
}
