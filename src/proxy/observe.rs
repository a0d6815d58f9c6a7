//! What a proxy says about itself, in one shell round trip: which programs are installed, the
//! files repltool manages (whole), whether HAProxy/nginx/keepalived run, HAProxy's live server
//! states (`show stat` on repltool's admin socket), what `nginx -T` says about `stream {}`
//! blocks, and the addresses on its interfaces (who holds the VIP). The parsers are pure and
//! fail loudly on an answer they cannot read.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use super::render::{haproxy_backend, nginx_upstream};
use super::{paths, Endpoint, Slot};
use crate::topology::{Proxy, ProxyKind, Topology};
use crate::transport::{shell_quote, HostSession};

/// One server row of HAProxy's `show stat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatRow {
    pub backend: String,
    pub server: String,
    /// `UP`, `DOWN`, `MAINT`, `DRAIN`, `no check`, `UP 1/2`...
    pub status: String,
    pub backup: bool,
    /// Current sessions.
    pub sessions: u64,
    /// `10.0.1.10:3306`.
    pub addr: String,
}

impl StatRow {
    /// Not in maintenance (it may still be down by its health check).
    pub fn enabled(&self) -> bool {
        !self.status.starts_with("MAINT")
    }
}

/// A server of an endpoint as the proxy runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveServer {
    pub host: String,
    pub address: String,
    pub backup: bool,
    /// Takes connections (HAProxy: not in maintenance; nginx: not `down`).
    pub on: bool,
    /// HAProxy's view of it (`UP`, `DOWN`, `MAINT`...); empty for nginx (no active checks).
    pub health: String,
    pub sessions: Option<u64>,
}

/// Everything observed on one proxy.
#[derive(Debug, Clone, Default)]
pub struct ProxyFacts {
    pub name: String,
    /// Why the proxy could not be observed (SSH, or the probe failed).
    pub error: Option<String>,
    /// systemd is PID 1 (then `systemctl`, else `service`).
    pub systemd: bool,
    /// Programs found on PATH: haproxy, nginx, socat, keepalived, bash, timeout, ps.
    pub bins: BTreeMap<String, bool>,
    /// nginx's stream module is there (the dynamic module file, or built in).
    pub stream_module: bool,
    /// The files repltool reads or writes, with their text (None: absent).
    pub files: BTreeMap<String, Option<String>>,
    /// HAProxy or nginx runs (its pid file names a live process).
    pub running: bool,
    pub keepalived_running: bool,
    /// HAProxy: the rows of `show stat` for this cluster's endpoints; Err: the admin socket
    /// did not answer (or is absent: the running HAProxy has not loaded repltool's block).
    pub stat: Option<Result<Vec<StatRow>, String>>,
    /// nginx: where `nginx -T` shows `stream {` blocks (`file:line`), repltool's own included.
    pub nginx_streams: Vec<String>,
    /// nginx: some `include` of /etc/nginx/repltool/ is in the configuration.
    pub nginx_includes_ours: bool,
    /// nginx: `nginx -T` failed (the configuration on disk is invalid), with its message.
    pub nginx_t_error: Option<String>,
    /// nginx: its pid file (the `pid` directive).
    pub nginx_pid_file: String,
    /// `ip -o addr`: (interface, address/prefix).
    pub addrs: Vec<(String, String)>,
    /// nginx: something listens on the writer port.
    pub writer_listening: bool,
}

impl ProxyFacts {
    pub fn has(&self, bin: &str) -> bool {
        self.bins.get(bin).copied().unwrap_or(false)
    }
    pub fn file(&self, path: &str) -> Option<&str> {
        self.files.get(path).and_then(|f| f.as_deref())
    }
    /// The interface holding `address` (an IP), if any.
    pub fn interface_of(&self, address: &str) -> Option<&str> {
        self.addrs
            .iter()
            .find(|(_, a)| a.split('/').next() == Some(address))
            .map(|(i, _)| i.as_str())
    }
    /// Whether `address` is on one of its interfaces.
    pub fn holds(&self, address: &str) -> bool {
        self.interface_of(address).is_some()
    }
}

const MARK: &str = "@@repltool:";

/// The probe for proxy `p` of `topo`.
pub fn probe_script(topo: &Topology, p: &Proxy) -> String {
    let mut s =
        String::from("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH\n");
    s.push_str(&format!(
        "echo \"{MARK}PID1 $(cat /proc/1/comm 2>/dev/null)\"\n"
    ));
    for b in [
        "haproxy",
        "nginx",
        "socat",
        "keepalived",
        "bash",
        "timeout",
        "ps",
    ] {
        s.push_str(&format!(
            "if command -v {b} >/dev/null 2>&1; then echo \"{MARK}BIN {b} 1\"; else echo \"{MARK}BIN {b} 0\"; fi\n"
        ));
    }
    let file = |path: &str| {
        let q = shell_quote(path);
        format!("if [ -e {q} ]; then echo \"{MARK}FILE {path}\"; cat {q}; echo; echo \"{MARK}EOF\"; else echo \"{MARK}NOFILE {path}\"; fi\n")
    };
    let alive = |tag: &str, pidfile: &str| {
        format!(
            "p=$(head -n 1 {pidfile} 2>/dev/null); if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then echo \"{MARK}{tag} 1\"; else echo \"{MARK}{tag} 0\"; fi\n"
        )
    };
    match p.kind {
        ProxyKind::Haproxy => {
            s.push_str(&file(paths::HAPROXY_CFG));
            s.push_str(&alive("RUNNING", paths::HAPROXY_PID));
            let sock = shell_quote(&paths::haproxy_socket(&topo.name));
            s.push_str(&format!(
                "if [ -S {sock} ] && command -v socat >/dev/null 2>&1; then echo \"{MARK}STAT\"; echo 'show stat' | socat -t 2 stdio unix-connect:{sock} 2>&1 || echo \"{MARK}STATFAIL $?\"; echo \"{MARK}EOF\"; else echo \"{MARK}NOSTAT\"; fi\n"
            ));
        }
        ProxyKind::Nginx => {
            s.push_str(&format!(
                "if [ -e {m} ] || nginx -V 2>&1 | grep -q -- '--with-stream\\( \\|$\\)'; then echo \"{MARK}STREAM 1\"; else echo \"{MARK}STREAM 0\"; fi\n",
                m = paths::NGINX_STREAM_MODULE
            ));
            s.push_str(&file(paths::NGINX_CONF));
            s.push_str(&file(&paths::nginx_file(&topo.name)));
            // `nginx -T` prints every file of the configuration; only the lines that matter.
            s.push_str(&format!(
                "if command -v nginx >/dev/null 2>&1; then t=$(nginx -T 2>&1); rc=$?; if [ $rc -ne 0 ]; then echo \"{MARK}NGINXT_FAIL\"; printf '%s\\n' \"$t\" | tail -n 5; echo \"{MARK}EOF\"; else printf '%s\\n' \"$t\" | awk '/^# configuration file / {{ f = $4; sub(/:$/, \"\", f); n = 0; next }} {{ n++ }} /^[[:space:]]*stream[[:space:]]*\\{{/ {{ print \"{MARK}STREAMAT \" f \":\" n }} /^[[:space:]]*include[[:space:]]+\\/etc\\/nginx\\/repltool\\// {{ print \"{MARK}INCLUDED\" }} /^[[:space:]]*pid[[:space:]]/ {{ v = $2; sub(/;$/, \"\", v); print \"{MARK}PIDFILE \" v }}'; fi; fi\n"
            ));
            // Running: the pid file nginx -T named (Debian's by default) holds a live pid.
            s.push_str(&format!(
                "pf=$(printf '%s\\n' \"$t\" | awk '/^[[:space:]]*pid[[:space:]]/ {{ v = $2; sub(/;$/, \"\", v); print v; exit }}'); [ -n \"$pf\" ] || pf={}\n",
                paths::NGINX_PID
            ));
            s.push_str(&alive("RUNNING", "\"$pf\""));
            // What the running nginx serves: a port repltool configured that nobody listens on
            // means the files were never loaded (a reload that failed).
            s.push_str(&format!(
                "if {}; then echo \"{MARK}LISTENING 1\"; else echo \"{MARK}LISTENING 0\"; fi\n",
                listening_test(p.writer)
            ));
        }
    }
    if topo.vip.is_some() {
        s.push_str(&file(paths::KEEPALIVED_CONF));
        s.push_str(&file(&paths::keepalived_check(&topo.name)));
        s.push_str(&alive("KEEPALIVED", paths::KEEPALIVED_PID));
    }
    s.push_str(&format!(
        "echo \"{MARK}ADDR\"; ip -o addr show 2>/dev/null | awk '{{ print $2, $4 }}'; echo \"{MARK}EOF\"\n"
    ));
    s
}

/// A shell test: something listens on TCP `port` (from /proc/net/tcp and tcp6).
fn listening_test(port: u16) -> String {
    format!(
        "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$2 ~ /:{port:04X}$/ && $4 == \"0A\" {{ f = 1 }} END {{ exit !f }}'"
    )
}

/// Parse the probe's output. Runtime state (`show stat`) must parse, or the answer is an
/// error naming what could not be read.
pub fn parse_probe(name: &str, out: &str) -> Result<ProxyFacts> {
    let mut f = ProxyFacts {
        name: name.to_string(),
        nginx_pid_file: paths::NGINX_PID.to_string(),
        ..ProxyFacts::default()
    };
    let mut block: Option<(String, String)> = None;
    for line in out.lines() {
        if let Some((tag, body)) = block.as_mut() {
            if line == format!("{MARK}EOF") {
                let (tag, body) = (tag.clone(), std::mem::take(body));
                block = None;
                match tag.split_once(' ') {
                    Some(("FILE", path)) => {
                        // The probe adds a newline after the file so the marker starts a line.
                        let text = body.strip_suffix('\n').unwrap_or(&body).to_string();
                        f.files.insert(path.to_string(), Some(text));
                    }
                    _ if tag == "STAT" => {
                        f.stat = Some(match body.lines().find(|l| l.starts_with(MARK)) {
                            Some(fail) => Err(format!(
                                "the admin socket did not answer ({})",
                                fail.trim_start_matches(MARK)
                            )),
                            None => parse_show_stat(&body).map_err(|e| format!("{e:#}")),
                        });
                    }
                    _ if tag == "NGINXT_FAIL" => {
                        f.nginx_t_error = Some(body.trim().to_string());
                    }
                    _ if tag == "ADDR" => {
                        for l in body.lines() {
                            if let Some((i, a)) = l.split_once(' ') {
                                f.addrs.push((i.to_string(), a.trim().to_string()));
                            }
                        }
                    }
                    _ => {}
                }
                continue;
            }
            body.push_str(line);
            body.push('\n');
            continue;
        }
        let Some(rest) = line.strip_prefix(MARK) else {
            continue;
        };
        let (tag, val) = rest.split_once(' ').unwrap_or((rest, ""));
        match tag {
            "PID1" => f.systemd = val.trim() == "systemd",
            "BIN" => {
                if let Some((b, v)) = val.split_once(' ') {
                    f.bins.insert(b.to_string(), v.trim() == "1");
                }
            }
            "STREAM" => f.stream_module = val.trim() == "1",
            "FILE" => block = Some((format!("FILE {val}"), String::new())),
            "NOFILE" => {
                f.files.insert(val.to_string(), None);
            }
            "RUNNING" => f.running = val.trim() == "1",
            "KEEPALIVED" => f.keepalived_running = val.trim() == "1",
            "STAT" | "NGINXT_FAIL" | "ADDR" => block = Some((tag.to_string(), String::new())),
            "NOSTAT" => f.stat = Some(Err("repltool's admin socket is not there".into())),
            "STREAMAT" => f.nginx_streams.push(val.trim().to_string()),
            "INCLUDED" => f.nginx_includes_ours = true,
            "PIDFILE" => f.nginx_pid_file = val.trim().to_string(),
            "LISTENING" => f.writer_listening = val.trim() == "1",
            _ => {}
        }
    }
    if let Some((tag, _)) = block {
        bail!("{name}: the probe's output ends inside its {tag} section (cut short?)");
    }
    Ok(f)
}

/// HAProxy's `show stat` (CSV with a `# pxname,svname,...` header): the server rows.
pub fn parse_show_stat(text: &str) -> Result<Vec<StatRow>> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .ok_or_else(|| anyhow!("`show stat` answered nothing"))?;
    let header = header.strip_prefix("# ").ok_or_else(|| {
        anyhow!(
            "`show stat` answered {:?}, not its CSV header",
            shorten(header)
        )
    })?;
    let cols: Vec<&str> = header.split(',').collect();
    let col = |name: &str| -> Result<usize> {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| anyhow!("`show stat` has no `{name}` column"))
    };
    let (px, sv, st, bck, scur, addr) = (
        col("pxname")?,
        col("svname")?,
        col("status")?,
        col("bck")?,
        col("scur")?,
        col("addr").ok(),
    );
    let mut rows = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        let get = |i: usize| -> Result<&str> {
            f.get(i)
                .copied()
                .ok_or_else(|| anyhow!("`show stat` row {:?} is short", shorten(l)))
        };
        let server = get(sv)?;
        if server == "FRONTEND" || server == "BACKEND" {
            continue;
        }
        let num = |i: usize, what: &str| -> Result<u64> {
            let v = get(i)?;
            if v.is_empty() {
                return Ok(0);
            }
            v.parse()
                .map_err(|_| anyhow!("`show stat`: {what} of {server} is {v:?}, not a number"))
        };
        rows.push(StatRow {
            backend: get(px)?.to_string(),
            server: server.to_string(),
            status: get(st)?.to_string(),
            backup: num(bck, "bck")? == 1,
            sessions: num(scur, "scur")?,
            addr: addr.and_then(|i| f.get(i)).unwrap_or(&"").to_string(),
        });
    }
    Ok(rows)
}

fn shorten(s: &str) -> String {
    s.chars().take(60).collect()
}

/// The servers of one endpoint as HAProxy runs them (its rows of `show stat`).
pub fn haproxy_live(cluster: &str, e: Endpoint, rows: &[StatRow]) -> Vec<LiveServer> {
    let b = haproxy_backend(cluster, e);
    rows.iter()
        .filter(|r| r.backend == b)
        .map(|r| LiveServer {
            host: r
                .server
                .strip_suffix(":backup")
                .unwrap_or(&r.server)
                .to_string(),
            address: r.addr.clone(),
            backup: r.backup,
            on: r.enabled(),
            health: r.status.clone(),
            sessions: Some(r.sessions),
        })
        .collect()
}

/// The servers of one endpoint in repltool's nginx file (`server ADDR [down|backup|...]; #
/// HOST` inside `upstream repltool_<cluster>_<endpoint> { }`). None: no such upstream.
pub fn nginx_live(cluster: &str, e: Endpoint, text: &str) -> Option<Vec<LiveServer>> {
    let up = nginx_upstream(cluster, e);
    let mut inside = false;
    let mut found = false;
    let mut out = Vec::new();
    for l in text.lines() {
        let t = l.trim();
        if !inside {
            if t.strip_prefix("upstream ")
                .and_then(|r| r.strip_suffix('{'))
                .map(str::trim)
                == Some(up.as_str())
            {
                inside = true;
                found = true;
            }
            continue;
        }
        if t.starts_with('}') {
            break;
        }
        let Some(rest) = t.strip_prefix("server ") else {
            continue;
        };
        let (decl, host) = match rest.split_once('#') {
            Some((d, h)) => (d.trim(), h.trim().to_string()),
            None => (rest.trim(), String::new()),
        };
        let decl = decl.trim_end_matches(';');
        let mut words = decl.split_whitespace();
        let address = words.next().unwrap_or("").to_string();
        let params: Vec<&str> = words.collect();
        let down = params.contains(&"down");
        let backup = params.contains(&"backup");
        out.push(LiveServer {
            host: if host.is_empty() {
                address.clone()
            } else {
                host
            },
            address,
            backup,
            on: !down,
            health: String::new(),
            sessions: None,
        });
    }
    found.then_some(out)
}

/// The endpoint's live servers, whichever the kind (None: not configured or not observable).
pub fn live(topo: &Topology, p: &Proxy, f: &ProxyFacts, e: Endpoint) -> Option<Vec<LiveServer>> {
    match p.kind {
        ProxyKind::Haproxy => match &f.stat {
            Some(Ok(rows)) => {
                let v = haproxy_live(&topo.name, e, rows);
                (!v.is_empty()).then_some(v)
            }
            _ => None,
        },
        ProxyKind::Nginx => f
            .file(&paths::nginx_file(&topo.name))
            .and_then(|t| nginx_live(&topo.name, e, t)),
    }
}

/// Whether a live server list is on where `want` says (per slot, by HAProxy server name or
/// nginx line).
pub fn slot_on(live: &[LiveServer], s: &Slot) -> Option<bool> {
    live.iter()
        .find(|l| l.host == s.host && l.backup == s.backup)
        .map(|l| l.on)
}

/// Observe proxy `p` over its session (privileged: HAProxy's socket and the pid files are
/// root's).
pub fn observe_proxy(
    topo: &Topology,
    p: &Proxy,
    session: &mut dyn HostSession,
    timeout: Duration,
) -> ProxyFacts {
    let r = session
        .run(
            &probe_script(topo, p),
            None,
            true,
            timeout.max(Duration::from_secs(5)),
        )
        .and_then(|out| {
            if !out.ok() {
                bail!(
                    "the probe failed (exit {}): {}",
                    out.status,
                    out.stderr_str().trim()
                );
            }
            parse_probe(&p.name, &out.stdout_str())
        });
    match r {
        Ok(f) => f,
        Err(e) => ProxyFacts {
            name: p.name.clone(),
            error: Some(format!("{e:#}")),
            ..ProxyFacts::default()
        },
    }
}

/// Observe every proxy at once; those without a session are recorded with why.
pub fn observe_all(
    topo: &Topology,
    sessions: &super::ProxySessions,
    failed: &[(String, anyhow::Error)],
    timeout: Duration,
) -> BTreeMap<String, ProxyFacts> {
    let results = crate::par::each(&topo.proxies, |p| {
        let Some(m) = sessions.get(&p.name) else {
            let why = failed
                .iter()
                .find(|(n, _)| n == &p.name)
                .map(|(_, e)| format!("{e:#}"))
                .unwrap_or_else(|| "no session".into());
            return Ok(ProxyFacts {
                name: p.name.clone(),
                error: Some(why),
                ..ProxyFacts::default()
            });
        };
        let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
        Ok(observe_proxy(topo, p, s.as_mut(), timeout))
    });
    topo.proxies
        .iter()
        .zip(results)
        .map(|(p, r)| {
            (
                p.name.clone(),
                r.unwrap_or_else(|e| ProxyFacts {
                    name: p.name.clone(),
                    error: Some(format!("{e:#}")),
                    ..ProxyFacts::default()
                }),
            )
        })
        .collect()
}
