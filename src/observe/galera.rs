//! Galera facts of a member: what its server says (wsrep status and variables, the tables
//! Galera would not replicate, the SST account) over SQL, and what its host has (datadir,
//! grastate.dat, a running server process, the provider library, the SST programs, the
//! service commands, and `--wsrep-recover`'s answer when asked) over SSH.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::flavor::galera::{galera_probe_script, wsrep_recover_script};
use crate::flavor::{Flavor, PasswordCheck};
use crate::topology::{Host, Topology};
use crate::transport::sql::{Columns, SqlConn};
use crate::transport::HostSession;

use super::{column, parse_config_probe, ConfigProbe, CONFIG_PROBE};

/// wsrep_local_state of a member that is in sync with its cluster.
pub const SYNCED: u32 = 4;

/// What a member's server says about Galera.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WsrepLive {
    /// @@wsrep_on.
    pub wsrep_on: bool,
    /// @@wsrep_provider ("none" when no provider is loaded).
    pub provider: String,
    pub cluster_name: String,
    pub cluster_address: String,
    pub node_name: String,
    pub node_address: String,
    pub sst_method: String,
    /// wsrep_local_state: 1 Joining, 2 Donor/Desynced, 3 Joined, 4 Synced (0: none).
    pub state: u32,
    /// wsrep_local_state_comment: "Synced", "Donor/Desynced", "Joining", ...
    pub state_comment: String,
    /// wsrep_cluster_status: "Primary", "non-Primary" or "Disconnected".
    pub cluster_status: String,
    pub cluster_size: u32,
    /// wsrep_cluster_state_uuid: the history this member belongs to.
    pub state_uuid: String,
    /// wsrep_last_committed: the seqno of the last transaction committed here.
    pub last_committed: i64,
    /// wsrep_flow_control_paused: the fraction of time replication was paused by flow
    /// control since the status was last flushed.
    pub flow_control_paused: f64,
    /// wsrep_local_recv_queue: write sets received and not applied yet.
    pub recv_queue: u64,
    pub ready: bool,
    pub connected: bool,
    /// wsrep_provider_version ("26.4.23(rXXXX)").
    pub provider_version: String,
    /// User tables Galera does not replicate: `db.table (ENGINE)`.
    pub unreplicated_tables: Vec<String>,
    /// User InnoDB tables without a primary key: `db.table`.
    pub no_pk_tables: Vec<String>,
    /// The SST account: None when it does not exist here.
    pub sst_account: Option<PasswordCheck>,
}

impl WsrepLive {
    /// The member runs Galera (wsrep_on with a provider loaded).
    pub fn enabled(&self) -> bool {
        self.wsrep_on && !self.provider.is_empty() && self.provider != "none"
    }
    pub fn primary(&self) -> bool {
        self.enabled() && self.cluster_status == "Primary"
    }
    pub fn synced(&self) -> bool {
        self.enabled() && self.state == SYNCED
    }
    /// The state in words: `Synced`, `Donor/Desynced`, `Joining`, `Disconnected`, or `off`.
    pub fn state_text(&self) -> String {
        if !self.enabled() {
            "off".into()
        } else if self.state_comment.is_empty() {
            format!("state {}", self.state)
        } else {
            self.state_comment.clone()
        }
    }
}

/// `Variable_name -> Value` of SHOW STATUS / SHOW VARIABLES rows.
fn name_values(rows: &[Columns]) -> Result<HashMap<String, String>> {
    rows.iter()
        .map(|r| {
            let n = column(r, "Variable_name")?
                .unwrap_or("")
                .to_ascii_lowercase();
            let v = column(r, "Value")?.unwrap_or("").to_string();
            Ok((n, v))
        })
        .collect()
}

/// Parse SHOW GLOBAL STATUS/VARIABLES LIKE 'wsrep_%' rows. A server without Galera running
/// lacks most status rows (they read as empty); a value that is there must parse.
pub fn wsrep_from_rows(status: &[Columns], vars: &[Columns]) -> Result<WsrepLive> {
    let st = name_values(status)?;
    let vs = name_values(vars)?;
    let s = |k: &str| st.get(k).cloned().unwrap_or_default();
    let v = |k: &str| vs.get(k).cloned().unwrap_or_default();
    fn num<T: std::str::FromStr + Default>(m: &HashMap<String, String>, k: &str) -> Result<T> {
        match m.get(k).map(|x| x.trim()) {
            None | Some("") => Ok(T::default()),
            Some(x) => x.parse().map_err(|_| anyhow!("{k} is {x:?}, not a number")),
        }
    }
    let onoff = |m: &HashMap<String, String>, k: &str| -> Result<bool> {
        match m.get(k).map(|x| x.trim().to_ascii_uppercase()).as_deref() {
            None | Some("") | Some("OFF") | Some("0") => Ok(false),
            Some("ON") | Some("1") => Ok(true),
            Some(x) => bail!("{k} is {x:?}, not ON/OFF"),
        }
    };
    let live = WsrepLive {
        wsrep_on: onoff(&vs, "wsrep_on")?,
        provider: v("wsrep_provider"),
        cluster_name: v("wsrep_cluster_name"),
        cluster_address: v("wsrep_cluster_address"),
        node_name: v("wsrep_node_name"),
        node_address: v("wsrep_node_address"),
        sst_method: v("wsrep_sst_method"),
        state: num(&st, "wsrep_local_state")?,
        state_comment: s("wsrep_local_state_comment"),
        cluster_status: s("wsrep_cluster_status"),
        cluster_size: num(&st, "wsrep_cluster_size")?,
        state_uuid: s("wsrep_cluster_state_uuid"),
        last_committed: num(&st, "wsrep_last_committed")?,
        flow_control_paused: num(&st, "wsrep_flow_control_paused")?,
        recv_queue: num(&st, "wsrep_local_recv_queue")?,
        ready: onoff(&st, "wsrep_ready")?,
        connected: onoff(&st, "wsrep_connected")?,
        provider_version: s("wsrep_provider_version"),
        ..WsrepLive::default()
    };
    if live.enabled() && live.cluster_status.is_empty() {
        bail!("Galera is on but the server reports no wsrep_cluster_status");
    }
    Ok(live)
}

/// Read a member's Galera facts over its SQL connection; None for a flavor without Galera
/// (MySQL): the planner refuses it with the flavor's reason.
pub fn live_facts(
    conn: &mut dyn SqlConn,
    flavor: &Flavor,
    topo: &Topology,
) -> Result<Option<WsrepLive>> {
    if flavor.galera_support().is_err() {
        return Ok(None);
    }
    let status = conn.query(&flavor.wsrep_status_query())?;
    let vars = conn.query(&flavor.wsrep_variables_query())?;
    let mut live = wsrep_from_rows(&status, &vars).context("reading the wsrep status")?;
    for r in conn.query(&flavor.unreplicated_tables_query())? {
        live.unreplicated_tables.push(format!(
            "{}.{} ({})",
            column(&r, "TABLE_SCHEMA")?.unwrap_or(""),
            column(&r, "TABLE_NAME")?.unwrap_or(""),
            column(&r, "ENGINE")?.unwrap_or("no engine")
        ));
    }
    for r in conn.query(&flavor.tables_without_pk_query())? {
        live.no_pk_tables.push(format!(
            "{}.{}",
            column(&r, "TABLE_SCHEMA")?.unwrap_or(""),
            column(&r, "TABLE_NAME")?.unwrap_or("")
        ));
    }
    if let Some(g) = &topo.galera {
        let pw = crate::flavor::galera::sst_password(&g.cluster_name, &topo.replication.password);
        live.sst_account = sst_account(conn, flavor, &pw)?;
    }
    Ok(Some(live))
}

/// The SST account's state on a member, against the password the fragment carries.
pub fn sst_account(
    conn: &mut dyn SqlConn,
    flavor: &Flavor,
    password: &crate::secret::Secret,
) -> Result<Option<PasswordCheck>> {
    let rows = conn.query(&flavor.sst_account_query())?;
    Ok(match rows.first() {
        None => None,
        Some(r) => Some(flavor.password_check(
            column(r, "plugin")?.unwrap_or(""),
            column(r, "authentication_string")?.unwrap_or(""),
            password,
        )),
    })
}

/// grastate.dat: the member's last known cluster state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraState {
    pub uuid: String,
    /// -1: unknown (the server was running, or crashed).
    pub seqno: i64,
    pub safe_to_bootstrap: bool,
}

/// The all-zero UUID a member writes before it ever joined a cluster.
pub const NO_UUID: &str = "00000000-0000-0000-0000-000000000000";

impl GraState {
    /// It records membership of a real cluster (not the all-zero UUID of a fresh node).
    pub fn has_history(&self) -> bool {
        !self.uuid.is_empty() && self.uuid != NO_UUID
    }
}

/// Parse grastate.dat ("uuid: ...", "seqno: ...", "safe_to_bootstrap: 0|1").
pub fn parse_grastate(text: &str) -> Result<GraState> {
    let mut uuid = None;
    let mut seqno = None;
    let mut safe = false;
    for l in text.lines() {
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k.trim() {
            "uuid" => uuid = Some(v.to_string()),
            "seqno" => {
                seqno = Some(
                    v.parse::<i64>()
                        .map_err(|_| anyhow!("grastate.dat: seqno is {v:?}, not a number"))?,
                )
            }
            "safe_to_bootstrap" => safe = v == "1",
            _ => {}
        }
    }
    Ok(GraState {
        uuid: uuid.ok_or_else(|| anyhow!("grastate.dat has no uuid line"))?,
        seqno: seqno.ok_or_else(|| anyhow!("grastate.dat has no seqno line"))?,
        safe_to_bootstrap: safe,
    })
}

/// How the host's service manager starts, stops and bootstraps the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaleraService {
    pub start: String,
    pub stop: String,
    pub restart: String,
    /// Start as the first member of a new cluster (`--wsrep-new-cluster`): Debian's init
    /// script `bootstrap`, or `galera_new_cluster` with systemd. None: neither exists.
    pub bootstrap: Option<String>,
}

/// The service commands: systemctl when systemd is PID 1 (with `galera_new_cluster`), else
/// `service` with an init script (Debian's has `bootstrap`).
pub fn galera_service(probe: &ConfigProbe, extra: &GaleraProbe) -> Option<GaleraService> {
    if probe.pid1 == "systemd" {
        if let Some(u) = probe.units.first() {
            return Some(GaleraService {
                start: format!("systemctl start {u}"),
                stop: format!("systemctl stop {u}"),
                restart: format!("systemctl restart {u}"),
                bootstrap: extra.new_cluster.clone(),
            });
        }
    }
    if probe.has_service {
        if let Some(s) = probe.init_scripts.first() {
            return Some(GaleraService {
                start: format!("service {s} start"),
                stop: format!("service {s} stop"),
                restart: format!("service {s} restart"),
                bootstrap: extra
                    .bootstrap_initd
                    .iter()
                    .any(|b| b == s)
                    .then(|| format!("service {s} bootstrap")),
            });
        }
    }
    None
}

/// What the Galera probe printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GaleraProbe {
    pub datadir: String,
    pub grastate: Option<String>,
    pub running: Vec<(u32, String)>,
    pub providers: Vec<String>,
    pub package: Option<String>,
    pub tools: Vec<(String, String)>,
    pub server_bin: Option<String>,
    pub bootstrap_initd: Vec<String>,
    pub new_cluster: Option<String>,
}

pub fn parse_galera_probe(out: &str) -> GaleraProbe {
    let mut p = GaleraProbe::default();
    let mut gra: Option<String> = None;
    for line in out.lines() {
        if let Some(g) = gra.as_mut() {
            if line == "@@END" {
                p.grastate = gra.take();
            } else {
                g.push_str(line);
                g.push('\n');
            }
            continue;
        }
        let Some(rest) = line.strip_prefix("@@") else {
            continue;
        };
        let (tag, val) = rest.split_once(' ').unwrap_or((rest, ""));
        let val = val.trim();
        match tag {
            "DATADIR" => p.datadir = val.to_string(),
            "GRASTATE" => gra = Some(String::new()),
            "RUNNING" => {
                let (pid, name) = val.split_once(' ').unwrap_or((val, ""));
                if let Ok(pid) = pid.parse() {
                    p.running.push((pid, name.to_string()));
                }
            }
            "PROVIDER" => p.providers.push(val.to_string()),
            "PKG" => p.package = Some(val.to_string()),
            "TOOL" => {
                let (n, w) = val.split_once(' ').unwrap_or((val, ""));
                p.tools.push((n.to_string(), w.to_string()));
            }
            "SERVER" => p.server_bin = Some(val.to_string()),
            "BOOTSTRAP_INITD" => p.bootstrap_initd.push(val.to_string()),
            "NEW_CLUSTER" => p.new_cluster = Some(val.to_string()),
            _ => {}
        }
    }
    p
}

/// What a member's host has, read over SSH.
#[derive(Debug, Clone, Default)]
pub struct GaleraDisk {
    pub datadir: String,
    /// None: no grastate.dat (never a Galera member); Err: it does not parse.
    pub grastate: Option<Result<GraState, String>>,
    /// A server process runs (pid, name): a member that does not answer but runs may be in
    /// an SST, or hung.
    pub running: Vec<(u32, String)>,
    /// Provider libraries found (first: the one to configure).
    pub providers: Vec<String>,
    /// The galera-4 package's version.
    pub package: Option<String>,
    /// Programs found: (name, path).
    pub tools: Vec<(String, String)>,
    /// The server binary (for `--wsrep-recover`).
    pub server_bin: Option<String>,
    pub service: Option<GaleraService>,
    /// `--wsrep-recover`'s answer (uuid, seqno), when it was run.
    pub recovered: Option<Result<(String, i64), String>>,
}

impl GaleraDisk {
    /// The grastate, when it parsed.
    pub fn state(&self) -> Option<&GraState> {
        self.grastate.as_ref().and_then(|g| g.as_ref().ok())
    }
}

/// Probe a member's host (one shell run, privileged: grastate.dat is mode 660).
pub fn disk_facts(session: &mut dyn HostSession, host: &Host) -> Result<GaleraDisk> {
    let script = format!("{CONFIG_PROBE}{}", galera_probe_script());
    let out = session
        .run(&script, None, true, Duration::from_secs(20))
        .context("probing the host for Galera")?;
    if !out.ok() {
        bail!(
            "{}: the Galera probe failed (exit {}): {}",
            host.name,
            out.status,
            out.stderr_str().trim()
        );
    }
    let text = out.stdout_str();
    let probe = parse_config_probe(&text);
    let g = parse_galera_probe(&text);
    Ok(GaleraDisk {
        datadir: g.datadir.clone(),
        grastate: g
            .grastate
            .as_deref()
            .map(|t| parse_grastate(t).map_err(|e| format!("{e:#}"))),
        running: g.running.clone(),
        providers: g.providers.clone(),
        package: g.package.clone(),
        tools: g.tools.clone(),
        server_bin: g.server_bin.clone(),
        service: galera_service(&probe, &g),
        recovered: None,
    })
}

/// Run `--wsrep-recover` on a stopped member: its last committed position.
pub fn recover_position(
    session: &mut dyn HostSession,
    disk: &GaleraDisk,
    timeout: Duration,
) -> Result<(String, i64), String> {
    let bin = disk.server_bin.as_deref().unwrap_or("/usr/sbin/mariadbd");
    let out = session
        .run(&wsrep_recover_script(bin), None, true, timeout)
        .map_err(|e| format!("{e:#}"))?;
    let text = out.stdout_str();
    for l in text.lines() {
        if let Some(pos) = l.strip_prefix("@@RECOVERED ") {
            return parse_position(pos.trim());
        }
    }
    Err(format!(
        "`{bin} --wsrep-recover` found no position: {}",
        text.replace("@@FAILED", "exit").trim()
    ))
}

/// `uuid:seqno` (as wsrep prints positions); a MariaDB GTID suffix (`,0-1-5`) is ignored.
pub fn parse_position(pos: &str) -> Result<(String, i64), String> {
    let pos = pos.split(',').next().unwrap_or(pos);
    let (u, s) = pos
        .rsplit_once(':')
        .ok_or_else(|| format!("{pos:?} is not uuid:seqno"))?;
    let seqno = s
        .trim()
        .parse::<i64>()
        .map_err(|_| format!("{pos:?}: seqno {s:?} is not a number"))?;
    Ok((u.trim().to_string(), seqno))
}

/// Disk facts of every member with a session, in parallel; a failure is recorded per host.
pub fn disk_all(
    topo: &Topology,
    sessions: &crate::transport::Sessions,
) -> HashMap<String, Result<GaleraDisk, String>> {
    let members: Vec<&Host> = topo
        .members()
        .filter(|h| sessions.contains_key(&h.name))
        .collect();
    let res = crate::par::each(&members, |h| {
        let m = sessions
            .get(&h.name)
            .ok_or_else(|| anyhow!("{}: no session", h.name))?;
        let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
        disk_facts(s.as_mut(), h)
    });
    members
        .iter()
        .zip(res)
        .map(|(h, r)| (h.name.clone(), r.map_err(|e| format!("{e:#}"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(pairs: &[(&str, &str)]) -> Vec<Columns> {
        pairs
            .iter()
            .map(|(n, v)| {
                vec![
                    ("Variable_name".to_string(), Some(n.to_string())),
                    ("Value".to_string(), Some(v.to_string())),
                ]
            })
            .collect()
    }

    #[test]
    fn a_synced_member_parses() {
        let st = rows(&[
            ("wsrep_local_state", "4"),
            ("wsrep_local_state_comment", "Synced"),
            ("wsrep_cluster_status", "Primary"),
            ("wsrep_cluster_size", "3"),
            (
                "wsrep_cluster_state_uuid",
                "08927047-ecc9-11f1-a8e6-4740c38c4e4c",
            ),
            ("wsrep_last_committed", "11"),
            ("wsrep_flow_control_paused", "0.125"),
            ("wsrep_local_recv_queue", "2"),
            ("wsrep_ready", "ON"),
            ("wsrep_connected", "ON"),
        ]);
        let vs = rows(&[
            ("wsrep_on", "ON"),
            ("wsrep_provider", "/usr/lib/galera/libgalera_smm.so"),
            ("wsrep_cluster_name", "shop"),
        ]);
        let l = wsrep_from_rows(&st, &vs).unwrap();
        assert!(l.enabled() && l.primary() && l.synced());
        assert_eq!((l.cluster_size, l.last_committed, l.recv_queue), (3, 11, 2));
        assert!((l.flow_control_paused - 0.125).abs() < 1e-9);
        assert_eq!(l.state_text(), "Synced");
    }

    #[test]
    fn a_standalone_server_is_off_and_bad_values_fail_loudly() {
        let vs = rows(&[("wsrep_on", "OFF"), ("wsrep_provider", "none")]);
        let l = wsrep_from_rows(&rows(&[("wsrep_ready", "OFF")]), &vs).unwrap();
        assert!(!l.enabled() && !l.primary());
        assert_eq!(l.state_text(), "off");
        let e = wsrep_from_rows(&rows(&[("wsrep_cluster_size", "three")]), &vs).unwrap_err();
        assert!(
            e.to_string().contains("wsrep_cluster_size is \"three\""),
            "{e}"
        );
    }

    #[test]
    fn grastate_and_positions() {
        let g = parse_grastate(
            "# GALERA saved state\nversion: 2.1\nuuid:    08927047-ecc9-11f1-a8e6-4740c38c4e4c\nseqno:   -1\nsafe_to_bootstrap: 0\n",
        )
        .unwrap();
        assert_eq!(g.seqno, -1);
        assert!(!g.safe_to_bootstrap && g.has_history());
        assert!(parse_grastate("uuid: x\nseqno: many\n").is_err());
        assert_eq!(
            parse_position("08927047-ecc9-11f1-a8e6-4740c38c4e4c:11").unwrap(),
            ("08927047-ecc9-11f1-a8e6-4740c38c4e4c".into(), 11)
        );
        assert_eq!(parse_position("u-u:7,0-1-7").unwrap().1, 7);
        assert!(parse_position("garbage").is_err());
    }

    #[test]
    fn the_probe_parses_and_finds_the_debian_service() {
        let out = "@@FILE /etc/mysql/my.cnf\n!includedir /etc/mysql/mariadb.conf.d/\n@@PID1 bash\n@@INITD mariadb\n@@SERVICE\n\
                   @@DATADIR /var/lib/mysql\n@@GRASTATE\nuuid: abc\nseqno: 5\nsafe_to_bootstrap: 1\n@@END\n\
                   @@RUNNING 77 mariadbd\n@@PROVIDER /usr/lib/galera/libgalera_smm.so\n@@PKG 26.4.23-0+deb12u1\n\
                   @@TOOL socat /usr/bin/socat\n@@SERVER /usr/sbin/mariadbd\n@@BOOTSTRAP_INITD mariadb\n";
        let g = parse_galera_probe(out);
        assert_eq!(
            g.grastate.as_deref(),
            Some("uuid: abc\nseqno: 5\nsafe_to_bootstrap: 1\n")
        );
        assert_eq!(g.running, vec![(77, "mariadbd".to_string())]);
        let svc = galera_service(&parse_config_probe(out), &g).unwrap();
        assert_eq!(svc.bootstrap.as_deref(), Some("service mariadb bootstrap"));
        assert_eq!(svc.start, "service mariadb start");
        let sysd = "@@PID1 systemd\n@@UNIT mariadb\n@@NEW_CLUSTER /usr/bin/galera_new_cluster\n";
        let svc = galera_service(&parse_config_probe(sysd), &parse_galera_probe(sysd)).unwrap();
        assert_eq!(svc.restart, "systemctl restart mariadb");
        assert_eq!(
            svc.bootstrap.as_deref(),
            Some("/usr/bin/galera_new_cluster")
        );
    }
}
