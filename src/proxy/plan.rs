//! What `init` (and the end of `promote`) changes on each proxy to reach the routing (pure):
//! files to write (validated before they replace the old ones), a start or a graceful reload
//! only when the configuration's shape changed, and HAProxy runtime commands when only which
//! servers are on changed. A converged proxy gets no step at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::observe::{haproxy_live, nginx_live, slot_on, ProxyFacts};
use super::render::{self, Found};
use super::{paths, Endpoint, Routing};
use crate::topology::{Proxy, ProxyKind, Topology};

/// How a written file is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validate {
    /// Nothing to check (a script).
    Nothing,
    /// `haproxy -c -f CANDIDATE` before it replaces the file.
    Haproxy,
    /// `keepalived -t -f CANDIDATE` before it replaces the file.
    Keepalived,
    /// Checked by the [`PStep::NginxTest`] that follows (nginx reads it through includes).
    Nginx,
}

/// The services repltool starts and reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Haproxy,
    Nginx,
    Keepalived,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Haproxy => "haproxy",
            Service::Nginx => "nginx",
            Service::Keepalived => "keepalived",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PStep {
    /// Replace a file, the previous one kept as `PATH.bak`.
    Write {
        path: String,
        content: String,
        mode: u32,
        validate: Validate,
        why: String,
    },
    /// `nginx -t`; on failure every file written in this run is put back.
    NginxTest,
    Start(Service),
    /// A graceful reload. nginx with `drain`: the previous generation of workers is ended once
    /// the new one runs, so no session stays on a server the writer left.
    Reload {
        service: Service,
        drain: bool,
    },
    /// HAProxy's admin socket: servers out (maintenance, sessions shut) then servers in.
    Runtime {
        commands: Vec<String>,
        why: Vec<String>,
    },
}

/// The steps of one proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyPlan {
    pub proxy: String,
    pub kind: ProxyKind,
    pub systemd: bool,
    pub nginx_pid_file: String,
    pub steps: Vec<PStep>,
}

/// HAProxy runtime commands that bring `rows` (its `show stat`) to `want` for the endpoints
/// `eps`: every slot that must go off first (maintenance, then its sessions shut: an
/// application never stays on a server the endpoint left), then every slot that must come on;
/// and why, per slot. None when a server of `want` is missing from the running HAProxy (it
/// runs another configuration: reload).
pub fn haproxy_commands(
    cluster: &str,
    want: &Routing,
    rows: &[super::observe::StatRow],
    eps: &[Endpoint],
) -> Option<(Vec<String>, Vec<String>)> {
    let mut off = Vec::new();
    let mut on = Vec::new();
    let mut why = Vec::new();
    for &e in eps {
        let live = haproxy_live(cluster, e, rows);
        let b = render::haproxy_backend(cluster, e);
        for s in want.slots(e) {
            let now = slot_on(&live, s)?;
            let name = s.server_name();
            if now && !s.on {
                off.push(format!("set server {b}/{name} state maint"));
                off.push(format!("shutdown sessions server {b}/{name}"));
                why.push(format!("{} {name} out", e.as_str()));
            } else if !now && s.on {
                on.push(format!("set server {b}/{name} state ready"));
                why.push(format!("{} {name} in", e.as_str()));
            }
        }
    }
    off.extend(on);
    Some((off, why))
}

/// The endpoints a proxy serves.
pub fn endpoints(p: &Proxy) -> Vec<Endpoint> {
    let mut v = vec![Endpoint::Writer];
    if p.reader.is_some() {
        v.push(Endpoint::Reader);
    }
    v
}

fn describe(r: &Routing, p: &Proxy) -> String {
    let list = |e: Endpoint| -> String {
        let on: Vec<String> = r
            .slots(e)
            .iter()
            .filter(|s| s.on)
            .map(|s| s.server_name())
            .collect();
        if on.is_empty() {
            "nobody".into()
        } else {
            on.join(", ")
        }
    };
    let mut s = format!("writer :{} -> {}", p.writer, list(Endpoint::Writer));
    if let Some(port) = p.reader {
        let _ = write!(s, "; reader :{port} -> {}", list(Endpoint::Reader));
    }
    s
}

/// Plan proxy `p`. `Err`: what stops it (a missing package, broken markers, a `stream {}`
/// block of the user's), in plain words with what to do.
pub fn plan_proxy(
    topo: &Topology,
    p: &Proxy,
    want: &Routing,
    f: &ProxyFacts,
) -> Result<ProxyPlan, String> {
    if let Some(e) = &f.error {
        return Err(format!("{}: cannot be observed: {e}", p.name));
    }
    let mut plan = ProxyPlan {
        proxy: p.name.clone(),
        kind: p.kind,
        systemd: f.systemd,
        nginx_pid_file: f.nginx_pid_file.clone(),
        steps: Vec::new(),
    };
    let missing = |bin: &str, package: &str, why: &str| -> Result<(), String> {
        if f.has(bin) {
            Ok(())
        } else {
            Err(format!(
                "{}: `{bin}` is not installed: install the `{package}` package (apt-get install {package}){why}",
                p.name
            ))
        }
    };
    let what = describe(want, p);
    match p.kind {
        ProxyKind::Haproxy => {
            missing("haproxy", "haproxy", "")?;
            missing(
                "socat",
                "socat",
                "; repltool switches HAProxy's servers through its admin socket with it",
            )?;
            let cfg = f.file(paths::HAPROXY_CFG).ok_or_else(|| {
                format!(
                    "{}: {} does not exist; reinstall the haproxy package or create it",
                    p.name,
                    paths::HAPROXY_CFG
                )
            })?;
            let (begin, end) = render::markers(&topo.name);
            let block = render::haproxy_block(topo, p, want);
            let current = match render::find_block(cfg, &begin, &end) {
                Found::Broken(why) => {
                    return Err(format!(
                        "{}: {} has a damaged repltool block ({why}): restore both marker lines or remove the block, then run init again",
                        p.name,
                        paths::HAPROXY_CFG
                    ))
                }
                Found::Absent => None,
                Found::Block(b) => Some(b),
            };
            let live_rows = match &f.stat {
                Some(Ok(rows)) if f.running => Some(rows.as_slice()),
                _ => None,
            };
            let commands =
                live_rows.and_then(|rows| haproxy_commands(&topo.name, want, rows, &endpoints(p)));
            let same_block = current.as_deref() == Some(block.as_str());
            let same_shape = current
                .as_deref()
                .is_some_and(|c| render::haproxy_shape(c) == render::haproxy_shape(&block));
            if !same_block {
                let new = render::splice(cfg, &begin, &end, &block)
                    .map_err(|e| format!("{}: {e}", p.name))?;
                plan.steps.push(PStep::Write {
                    path: paths::HAPROXY_CFG.into(),
                    content: new,
                    mode: 0o644,
                    validate: Validate::Haproxy,
                    why: format!("repltool's block for {}: {what}", topo.name),
                });
            }
            match (f.running, &commands) {
                (false, _) => plan.steps.push(PStep::Start(Service::Haproxy)),
                // The running HAProxy has these servers: only their states move, at runtime
                // (the file above says the same, for the next reload).
                (true, Some((cmds, why))) if same_block || same_shape => {
                    if !cmds.is_empty() {
                        plan.steps.push(PStep::Runtime {
                            commands: cmds.clone(),
                            why: why.clone(),
                        });
                    }
                }
                (true, _) => plan.steps.push(PStep::Reload {
                    service: Service::Haproxy,
                    drain: false,
                }),
            }
        }
        ProxyKind::Nginx => {
            missing("nginx", "nginx", "")?;
            if !f.stream_module {
                return Err(format!(
                    "{}: nginx has no stream module (MySQL is TCP: the `http` module cannot proxy it): install the `libnginx-mod-stream` package (apt-get install libnginx-mod-stream)",
                    p.name
                ));
            }
            if let Some(e) = &f.nginx_t_error {
                return Err(format!(
                    "{}: `nginx -T` fails on the configuration as it is, before any change: {e}. Fix it first",
                    p.name
                ));
            }
            if f.running && !f.has("ps") {
                missing(
                    "ps",
                    "procps",
                    "; repltool follows nginx's worker generations with it",
                )?;
            }
            let conf = f.file(paths::NGINX_CONF).ok_or_else(|| {
                format!(
                    "{}: {} does not exist; reinstall the nginx package",
                    p.name,
                    paths::NGINX_CONF
                )
            })?;
            let mut wrote = false;
            match render::find_block(conf, render::NGINX_BEGIN, render::NGINX_END) {
                Found::Broken(why) => {
                    return Err(format!(
                        "{}: {} has a damaged repltool block ({why}): restore both marker lines or remove the block, then run init again",
                        p.name,
                        paths::NGINX_CONF
                    ))
                }
                Found::Block(b) if b == render::nginx_conf_block() => {}
                Found::Block(_) => {
                    let new = render::splice(
                        conf,
                        render::NGINX_BEGIN,
                        render::NGINX_END,
                        &render::nginx_conf_block(),
                    )
                    .map_err(|e| format!("{}: {e}", p.name))?;
                    plan.steps.push(PStep::Write {
                        path: paths::NGINX_CONF.into(),
                        content: new,
                        mode: 0o644,
                        validate: Validate::Nginx,
                        why: "repltool's `stream {}` block".into(),
                    });
                    wrote = true;
                }
                Found::Absent if f.nginx_includes_ours => {}
                Found::Absent => {
                    if let Some(at) = f.nginx_streams.first() {
                        return Err(format!(
                            "{}: nginx already has a `stream {{}}` block ({at}) and nginx allows only one: add `include {}/*.conf;` inside it, then run init again",
                            p.name,
                            paths::NGINX_DIR
                        ));
                    }
                    let new = render::splice(
                        conf,
                        render::NGINX_BEGIN,
                        render::NGINX_END,
                        &render::nginx_conf_block(),
                    )
                    .map_err(|e| format!("{}: {e}", p.name))?;
                    plan.steps.push(PStep::Write {
                        path: paths::NGINX_CONF.into(),
                        content: new,
                        mode: 0o644,
                        validate: Validate::Nginx,
                        why: "a `stream {}` block including repltool's files".into(),
                    });
                    wrote = true;
                }
            }
            let file = paths::nginx_file(&topo.name);
            let text = render::nginx_file(topo, p, want);
            let current = f.file(&file);
            if current != Some(text.as_str()) {
                plan.steps.push(PStep::Write {
                    path: file.clone(),
                    content: text,
                    mode: 0o644,
                    validate: Validate::Nginx,
                    why: what.clone(),
                });
                wrote = true;
            }
            if wrote {
                plan.steps.push(PStep::NginxTest);
            }
            // A writer that moves must leave no session on the server it left.
            let writer_moved = current
                .and_then(|c| nginx_live(&topo.name, Endpoint::Writer, c))
                .is_some_and(|live| {
                    want.writer
                        .iter()
                        .filter(|s| !s.backup)
                        .any(|s| slot_on(&live, s) == Some(true) && !s.on)
                });
            if !f.running {
                plan.steps.push(PStep::Start(Service::Nginx));
            } else if wrote || !f.writer_listening {
                // Files never loaded (nobody listens on the writer port) count as changed.
                plan.steps.push(PStep::Reload {
                    service: Service::Nginx,
                    drain: writer_moved,
                });
            }
        }
    }
    if let Some(vip) = &topo.vip {
        missing("keepalived", "keepalived", "")?;
        missing("bash", "bash", "; keepalived's check script uses it")?;
        missing("timeout", "coreutils", "")?;
        let iface = match &vip.interface {
            Some(i) => i.clone(),
            None => f.interface_of(&p.address).map(str::to_string).ok_or_else(|| {
                format!(
                    "{}: no interface holds {}: set `vip.interface` (the interface the VIP goes on)",
                    p.name, p.address
                )
            })?,
        };
        let script = render::keepalived_check_script(p);
        let check = paths::keepalived_check(&topo.name);
        let mut wrote = false;
        if f.file(&check) != Some(script.as_str()) {
            plan.steps.push(PStep::Write {
                path: check,
                content: script,
                mode: 0o755,
                validate: Validate::Nothing,
                why: "keepalived's check of this proxy's writer port".into(),
            });
            wrote = true;
        }
        let conf = f.file(paths::KEEPALIVED_CONF).unwrap_or("");
        let (begin, end) = render::markers(&topo.name);
        let block = render::keepalived_block(topo, p, vip, &iface);
        match render::find_block(conf, &begin, &end) {
            Found::Block(b) if b == block => {}
            Found::Broken(why) => {
                return Err(format!(
                    "{}: {} has a damaged repltool block ({why}): restore both marker lines or remove the block, then run init again",
                    p.name,
                    paths::KEEPALIVED_CONF
                ))
            }
            _ => {
                let new = render::splice(conf, &begin, &end, &block)
                    .map_err(|e| format!("{}: {e}", p.name))?;
                plan.steps.push(PStep::Write {
                    path: paths::KEEPALIVED_CONF.into(),
                    content: new,
                    mode: 0o644,
                    validate: Validate::Keepalived,
                    why: format!(
                        "the VIP {}/{} on {iface} (router id {})",
                        vip.address, vip.prefix, vip.router_id
                    ),
                });
                wrote = true;
            }
        }
        if !f.keepalived_running {
            plan.steps.push(PStep::Start(Service::Keepalived));
        } else if wrote {
            plan.steps.push(PStep::Reload {
                service: Service::Keepalived,
                drain: false,
            });
        }
    }
    Ok(plan)
}

/// Plans for every proxy (or those in `only`); every refusal at once.
pub fn plan_all(
    topo: &Topology,
    want: &Routing,
    facts: &BTreeMap<String, ProxyFacts>,
    only: Option<&[String]>,
) -> Result<Vec<ProxyPlan>, Vec<String>> {
    let mut plans = Vec::new();
    let mut errors = Vec::new();
    for p in topo
        .proxies
        .iter()
        .filter(|p| only.is_none_or(|o| o.contains(&p.name)))
    {
        let r = match facts.get(&p.name) {
            Some(f) => plan_proxy(topo, p, want, f),
            None => Err(format!("{}: not observed", p.name)),
        };
        match r {
            Ok(pl) => plans.push(pl),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(errors)
    }
}

/// The shell command that starts or reloads a service the way the host does it.
pub fn service_command(systemd: bool, s: Service, verb: &str) -> String {
    if systemd {
        format!("systemctl {verb} {}", s.as_str())
    } else {
        format!("service {} {verb}", s.as_str())
    }
}

impl ProxyPlan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// One line per step, for `--dry-run` and the journal.
    pub fn lines(&self) -> Vec<String> {
        let n = &self.proxy;
        self.steps
            .iter()
            .map(|s| match s {
                PStep::Write {
                    path,
                    validate,
                    why,
                    ..
                } => {
                    let check = match validate {
                        Validate::Haproxy => " (checked with `haproxy -c` before it replaces the old one)",
                        Validate::Keepalived => " (checked with `keepalived -t` before it replaces the old one)",
                        Validate::Nginx => "",
                        Validate::Nothing => "",
                    };
                    format!("{n}: write {path}: {why}{check}; previous kept as {path}.bak")
                }
                PStep::NginxTest => format!(
                    "{n}: nginx -t (on failure the previous files are put back and nothing is reloaded)"
                ),
                PStep::Start(svc) => {
                    format!("{n}: {}", service_command(self.systemd, *svc, "start"))
                }
                PStep::Reload { service, drain } => match service {
                    Service::Nginx => format!(
                        "{n}: reload nginx gracefully (SIGHUP to the pid in {}){}",
                        self.nginx_pid_file,
                        if *drain {
                            "; then end the previous workers: no session stays on the server the writer left"
                        } else {
                            ""
                        }
                    ),
                    _ => format!("{n}: {}", service_command(self.systemd, *service, "reload")),
                },
                PStep::Runtime { commands, why } => format!(
                    "{n}: HAProxy at runtime, no reload ({}): {}",
                    why.join(", "),
                    commands.join("; ")
                ),
            })
            .collect()
    }
}
