//! The proxies in `status` (a table of every proxy and port with the servers it sends to,
//! their state, and the problems in plain words with the command that fixes them; the same as
//! JSON) and in `check` (reachable, package installed, config writable). The judgement is pure
//! ([`findings`], [`check_verdicts`]), unit-tested from facts.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use comfy_table::{presets::UTF8_HORIZONTAL_ONLY, Table};
use serde_json::{json, Value};

use super::observe::{live, LiveServer, ProxyFacts};
use super::{paths, reader_health, writer_of, Endpoint};
use crate::analysis::Finding;
use crate::check::{CheckRow, Verdict};
use crate::observe::Facts;
use crate::topology::{Proxy, ProxyKind, Topology};

fn endpoints(p: &Proxy) -> Vec<(Endpoint, u16)> {
    let mut v = vec![(Endpoint::Writer, p.writer)];
    if let Some(r) = p.reader {
        v.push((Endpoint::Reader, r));
    }
    v
}

fn kind_name(k: ProxyKind) -> &'static str {
    match k {
        ProxyKind::Haproxy => "HAProxy",
        ProxyKind::Nginx => "nginx",
    }
}

/// The hosts an endpoint sends to (every server that is on), in its order, without repeats.
fn reached(live: &[LiveServer]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for l in live.iter().filter(|l| l.on) {
        if !v.contains(&l.host) {
            v.push(l.host.clone());
        }
    }
    v
}

/// Every problem with the proxies and the VIP, against the file and the servers' state.
pub fn findings(
    topo: &Topology,
    db: &HashMap<String, Facts>,
    pf: &BTreeMap<String, ProxyFacts>,
    max_lag: u64,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut p_ = |host: &str, what: String, next: String| {
        out.push(Finding {
            host: host.to_string(),
            what,
            next,
        })
    };
    let writer = writer_of(topo);
    // Who may stand by behind the writer: the writable peer of a pair, or in a Galera cluster
    // the other members (as backups only).
    let standby: Vec<String> = match writer.as_deref().and_then(|w| topo.host(w)) {
        Some(w) if topo.is_member(w) => topo
            .members()
            .filter(|m| m.name != w.name)
            .map(|m| m.name.clone())
            .collect(),
        Some(w) => w
            .peer
            .as_deref()
            .and_then(|p| topo.host(p))
            .filter(|h| topo.writable(h))
            .map(|h| vec![h.name.clone()])
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let health = reader_health(topo, db, max_lag);
    for p in &topo.proxies {
        let Some(f) = pf.get(&p.name) else { continue };
        let kind = kind_name(p.kind);
        if let Some(e) = &f.error {
            p_(
                &p.name,
                format!("proxy unreachable: {e}"),
                "check that the host is up; `repltool check` tells which step fails".into(),
            );
            continue;
        }
        if !f.has(p.kind.as_str()) {
            p_(
                &p.name,
                format!("{kind} is not installed"),
                format!(
                    "apt-get install {} on it, then `repltool init`",
                    p.kind.as_str()
                ),
            );
            continue;
        }
        if !f.running {
            p_(
                &p.name,
                format!("{kind} is not running: applications reach no database through it"),
                "run `repltool init` (it starts it)".into(),
            );
            continue;
        }
        for (e, port) in endpoints(p) {
            let Some(l) = live(topo, p, f, e) else {
                let why = match (&p.kind, &f.stat) {
                    (ProxyKind::Haproxy, Some(Err(why))) => format!(" ({why})"),
                    _ => String::new(),
                };
                p_(
                    &p.name,
                    format!(
                        "{} :{port} is not configured in the running {kind}{why}",
                        e.as_str()
                    ),
                    "run `repltool init` (it writes and loads repltool's configuration)".into(),
                );
                continue;
            };
            let hosts = reached(&l);
            match e {
                Endpoint::Writer => {
                    let Some(w) = writer.as_deref() else { continue };
                    let galera = topo.host(w).is_some_and(|h| topo.is_member(h));
                    let allowed: Vec<&str> = std::iter::once(w)
                        .chain(standby.iter().map(String::as_str))
                        .collect();
                    // A Galera member beside the writer is fine as a backup, never as a
                    // second server taking writes at once.
                    let wrong: Vec<&String> = hosts
                        .iter()
                        .filter(|h| {
                            !allowed.contains(&h.as_str())
                                || (galera
                                    && h.as_str() != w
                                    && l.iter().any(|s| s.on && !s.backup && &s.host == *h))
                        })
                        .collect();
                    let fix = format!(
                        "run `repltool init`: it points the writer endpoint at {w} only, at runtime"
                    );
                    if hosts.is_empty() {
                        p_(
                            &p.name,
                            format!("writer :{port} sends to no server: applications cannot write"),
                            fix,
                        );
                    } else if !wrong.is_empty() && hosts.len() > 1 {
                        p_(
                            &p.name,
                            format!(
                                "writer :{port} sends to {}: {} servers take writes, and only {w} is the master",
                                hosts.join(" and "),
                                hosts.len()
                            ),
                            fix,
                        );
                    } else if !wrong.is_empty() {
                        p_(
                            &p.name,
                            format!(
                                "writer :{port} sends to {}, not to the master {w}",
                                hosts.join(", ")
                            ),
                            fix,
                        );
                    } else if let Some(m) = l.iter().find(|s| s.on && s.host == w && !s.backup) {
                        if m.health.starts_with("DOWN") && galera {
                            // A Galera cluster has no master to promote: HAProxy already sends
                            // the writes to the first backup member that is UP (`promote` would
                            // answer "nothing to do"); what helps is the dead member back.
                            let up = l.iter().find(|s| {
                                s.on && s.backup && s.host != w && s.health.starts_with("UP")
                            });
                            match up {
                                Some(b) => p_(
                                    &p.name,
                                    format!(
                                        "writer :{port}: HAProxy's check says {w} is DOWN: writes go to the backup member {}",
                                        b.host
                                    ),
                                    format!(
                                        "start {w} again: `repltool init` starts members that are down (they rejoin by IST or SST) and the writes return to {w}"
                                    ),
                                ),
                                None => p_(
                                    &p.name,
                                    format!(
                                        "writer :{port}: HAProxy's check says {w} and every backup member are DOWN: applications cannot write"
                                    ),
                                    "see the members' problems above; `repltool init` starts members that are down".into(),
                                ),
                            }
                        } else if m.health.starts_with("DOWN") {
                            p_(
                                &p.name,
                                format!("writer :{port}: HAProxy's check says the master {w} is DOWN"),
                                format!("check {w}'s server (the table above); if it is dead, `repltool promote` another host"),
                            );
                        }
                    }
                }
                Endpoint::Reader => {
                    for h in &hosts {
                        let is_writer_backup = Some(h.as_str()) == writer.as_deref()
                            && l.iter().any(|s| s.on && s.backup && &s.host == h);
                        if Some(h.as_str()) == writer.as_deref() {
                            if !is_writer_backup {
                                p_(
                                    &p.name,
                                    format!("reader :{port} sends reads to the master {h} beside the slaves"),
                                    "run `repltool init` (the master only takes reads when no slave is healthy)".into(),
                                );
                            }
                            continue;
                        }
                        if let Some(Err(why)) = health.get(h) {
                            p_(
                                &p.name,
                                format!("reader :{port} sends to {h}, which {why}"),
                                format!(
                                    "run `repltool init` (it takes {h} out until it is healthy; --max-lag sets the limit)"
                                ),
                            );
                        }
                    }
                    if hosts.is_empty() {
                        p_(
                            &p.name,
                            format!("reader :{port} sends to no server"),
                            "run `repltool init`".into(),
                        );
                    }
                }
            }
        }
        if topo.vip.is_some() && !f.keepalived_running {
            p_(
                &p.name,
                "keepalived is not running: this proxy cannot take the VIP".into(),
                "run `repltool init` (it starts keepalived)".into(),
            );
        }
    }
    if let Some(vip) = &topo.vip {
        let observed: Vec<&ProxyFacts> = pf.values().filter(|f| f.error.is_none()).collect();
        let holders: Vec<&str> = observed
            .iter()
            .filter(|f| f.holds(&vip.address))
            .map(|f| f.name.as_str())
            .collect();
        if holders.len() > 1 {
            p_(
                "vip",
                format!("{} are held by {} at once", vip.address, holders.join(" and ")),
                "their keepalived do not hear each other (firewall on VRRP, protocol 112? another cluster with the same vip.router_id?)".into(),
            );
        } else if holders.is_empty() && !observed.is_empty() {
            p_(
                "vip",
                format!("no proxy holds the VIP {}", vip.address),
                "check keepalived on the proxies (`repltool init` starts it) and their writer ports".into(),
            );
        }
    }
    out
}

/// Who holds the VIP (proxies that answered).
pub fn vip_holders(topo: &Topology, pf: &BTreeMap<String, ProxyFacts>) -> Vec<String> {
    match &topo.vip {
        None => Vec::new(),
        Some(v) => topo
            .proxies
            .iter()
            .filter(|p| pf.get(&p.name).is_some_and(|f| f.holds(&v.address)))
            .map(|p| p.name.clone())
            .collect(),
    }
}

fn server_text(l: &LiveServer) -> String {
    let mut s = l.host.clone();
    if l.backup {
        s.push_str(" (backup)");
    }
    if !l.health.is_empty() {
        s.push_str(&format!(" {}", l.health));
    } else {
        s.push_str(if l.on { " on" } else { " down" });
    }
    if let Some(n) = l.sessions.filter(|n| *n > 0) {
        s.push_str(&format!(" {n} conn"));
    }
    s
}

/// The proxies' table: one row per proxy and port.
pub fn table(topo: &Topology, pf: &BTreeMap<String, ProxyFacts>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_HORIZONTAL_ONLY);
    t.force_no_tty();
    t.set_header(vec!["proxy", "kind", "endpoint", "sends to", "off"]);
    let holders = vip_holders(topo, pf);
    for p in &topo.proxies {
        let f = pf.get(&p.name);
        let mut name = p.name.clone();
        if holders.contains(&p.name) {
            name.push_str(" [VIP]");
        }
        if let Some(e) = f.and_then(|f| f.error.as_ref()) {
            t.add_row(vec![
                name,
                p.kind.as_str().to_string(),
                String::new(),
                format!("unreachable: {}", e.chars().take(60).collect::<String>()),
                String::new(),
            ]);
            continue;
        }
        let running = f.is_some_and(|f| f.running);
        for (e, port) in endpoints(p) {
            let l = f.and_then(|f| live(topo, p, f, e));
            let (on, off) = match &l {
                None if !running => (
                    format!("({} not running)", kind_name(p.kind)),
                    String::new(),
                ),
                None => ("(not configured)".to_string(), String::new()),
                Some(l) => {
                    let on: Vec<String> = l.iter().filter(|s| s.on).map(server_text).collect();
                    let off: Vec<String> = l
                        .iter()
                        .filter(|s| !s.on)
                        .map(|s| {
                            if s.backup {
                                format!("{}:backup", s.host)
                            } else {
                                s.host.clone()
                            }
                        })
                        .collect();
                    (
                        if on.is_empty() {
                            "nobody".to_string()
                        } else {
                            on.join(", ")
                        },
                        off.join(", "),
                    )
                }
            };
            t.add_row(vec![
                name.clone(),
                p.kind.as_str().to_string(),
                format!("{} :{port}", e.as_str()),
                on,
                off,
            ]);
        }
    }
    t
}

/// The proxies as JSON (`proxies` and `vip` of `status --format json`).
pub fn json(topo: &Topology, pf: &BTreeMap<String, ProxyFacts>) -> (Value, Value) {
    let holders = vip_holders(topo, pf);
    let proxies: Vec<Value> = topo
        .proxies
        .iter()
        .map(|p| {
            let f = pf.get(&p.name);
            let mut v = json!({
                "name": p.name, "address": p.address, "kind": p.kind.as_str(),
                "writer_port": p.writer, "reader_port": p.reader,
            });
            match f {
                Some(f) if f.error.is_none() => {
                    v["reachable"] = json!(true);
                    v["running"] = json!(f.running);
                    if topo.vip.is_some() {
                        v["holds_vip"] = json!(holders.contains(&p.name));
                        v["keepalived_running"] = json!(f.keepalived_running);
                    }
                    let eps: Vec<Value> = endpoints(p)
                        .into_iter()
                        .map(|(e, port)| {
                            let l = live(topo, p, f, e);
                            json!({
                                "role": e.as_str(), "port": port,
                                "configured": l.is_some(),
                                // Backup servers only take connections when no other is up.
                                "sends_to": l.as_ref().map(|l| reached(&l.iter().filter(|s| !s.backup).cloned().collect::<Vec<_>>())).unwrap_or_default(),
                                "fallback": l.as_ref().map(|l| reached(&l.iter().filter(|s| s.backup).cloned().collect::<Vec<_>>())).unwrap_or_default(),
                                "servers": l.unwrap_or_default().iter().map(|s| json!({
                                    "host": s.host, "address": s.address, "backup": s.backup,
                                    "on": s.on, "health": if s.health.is_empty() { Value::Null } else { json!(s.health) },
                                    "sessions": s.sessions,
                                })).collect::<Vec<_>>(),
                            })
                        })
                        .collect();
                    v["endpoints"] = json!(eps);
                }
                _ => {
                    v["reachable"] = json!(false);
                    v["error"] = json!(f.and_then(|f| f.error.clone()).unwrap_or_default());
                }
            }
            v
        })
        .collect();
    let vip = match &topo.vip {
        None => Value::Null,
        Some(v) => json!({
            "address": v.address, "prefix": v.prefix, "router_id": v.router_id,
            "held_by": holders,
        }),
    };
    (json!(proxies), vip)
}

/// What `check` judges of one proxy.
#[derive(Debug, Clone, Default)]
pub struct ProxyCheck {
    pub facts: ProxyFacts,
    /// How the shell was reached.
    pub shell: String,
    /// The directory of repltool's file (or the admin socket) is writable.
    pub writable: Option<Result<String, String>>,
}

/// `check`'s rows for the proxies. Pure.
pub fn check_verdicts(topo: &Topology, checks: &BTreeMap<String, ProxyCheck>) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    let mut row = |check: &'static str, host: &str, verdict: Verdict, detail: String| {
        rows.push(CheckRow {
            check,
            host: host.to_string(),
            verdict,
            detail,
        })
    };
    for p in &topo.proxies {
        let Some(c) = checks.get(&p.name) else {
            continue;
        };
        if let Some(e) = &c.facts.error {
            row("proxy reachable", &p.name, Verdict::Fail, e.clone());
            continue;
        }
        row("proxy reachable", &p.name, Verdict::Pass, c.shell.clone());
        let f = &c.facts;
        let mut missing: Vec<&str> = Vec::new();
        match p.kind {
            ProxyKind::Haproxy => {
                if !f.has("haproxy") {
                    missing.push("haproxy");
                }
                if !f.has("socat") {
                    missing.push("socat");
                }
            }
            ProxyKind::Nginx => {
                if !f.has("nginx") {
                    missing.push("nginx");
                }
                if !f.stream_module {
                    missing.push("libnginx-mod-stream");
                }
                if !f.has("ps") {
                    missing.push("procps");
                }
            }
        }
        if topo.vip.is_some() && !f.has("keepalived") {
            missing.push("keepalived");
        }
        let what = match (p.kind, topo.vip.is_some()) {
            (ProxyKind::Haproxy, false) => "haproxy, socat",
            (ProxyKind::Haproxy, true) => "haproxy, socat, keepalived",
            (ProxyKind::Nginx, false) => "nginx, libnginx-mod-stream",
            (ProxyKind::Nginx, true) => "nginx, libnginx-mod-stream, keepalived",
        };
        if missing.is_empty() {
            row(
                "proxy packages",
                &p.name,
                Verdict::Pass,
                format!("{what} installed"),
            );
        } else {
            row(
                "proxy packages",
                &p.name,
                Verdict::Fail,
                format!("missing: apt-get install {}", missing.join(" ")),
            );
        }
        match &c.writable {
            Some(Ok(d)) => row("proxy config writable", &p.name, Verdict::Pass, d.clone()),
            Some(Err(e)) => row("proxy config writable", &p.name, Verdict::Fail, e.clone()),
            None => {}
        }
    }
    rows
}

/// Observe what `check` judges of the proxies (changes nothing).
pub fn observe_checks(topo: &Topology, timeout: Duration) -> BTreeMap<String, ProxyCheck> {
    let (sessions, failed) = super::connect_all(topo, Some(timeout));
    let facts = super::observe::observe_all(topo, &sessions, &failed, timeout);
    let writable = crate::par::each(&topo.proxies, |p| {
        let Some(m) = sessions.get(&p.name) else {
            return Ok(None);
        };
        let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
        let (dir, sock) = match p.kind {
            ProxyKind::Haproxy => (
                "/etc/haproxy".to_string(),
                Some(paths::haproxy_socket(&topo.name)),
            ),
            ProxyKind::Nginx => ("/etc/nginx".to_string(), None),
        };
        let mut script = format!(
            "test -d {dir} && test -w {dir} || {{ echo \"{dir} is not writable\"; exit 1; }}; "
        );
        if let Some(sock) = &sock {
            script.push_str(&format!(
                "if [ -e {sock} ] && ! [ -w {sock} ]; then echo \"{sock} is not writable\"; exit 1; fi; "
            ));
        }
        if topo.vip.is_some() {
            script.push_str(
                "test -w /etc/keepalived || { echo '/etc/keepalived is not writable'; exit 1; }; ",
            );
        }
        let out = s.run(&script, None, true, timeout.max(Duration::from_secs(5)))?;
        Ok(Some(if out.ok() {
            let mut d = format!("{dir} writable");
            if let Some(sock) = sock {
                d.push_str(&format!("; admin socket {sock}"));
            }
            Ok(d)
        } else {
            Err(out.stdout_str().trim().to_string())
        }))
    });
    topo.proxies
        .iter()
        .zip(writable)
        .map(|(p, w)| {
            let shell = match &p.transport {
                crate::topology::Transport::Ssh(s) => format!(
                    "{}@{}:{} (host key verified against {})",
                    s.user,
                    p.address,
                    s.port,
                    s.known_hosts.display()
                ),
                crate::topology::Transport::Local => "local transport (this machine)".into(),
            };
            (
                p.name.clone(),
                ProxyCheck {
                    facts: facts.get(&p.name).cloned().unwrap_or_default(),
                    shell,
                    writable: w.unwrap_or_else(|e| Some(Err(format!("{e:#}")))),
                },
            )
        })
        .collect()
}
