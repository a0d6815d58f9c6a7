//! Facts about a server, gathered before acting: flavor, variables, binlog coordinates, replica
//! status, users, and the host's config layout. Parsers live in `replica`.

pub mod galera;
#[cfg(test)]
mod golden;
pub mod replica;

pub use replica::*;

use std::path::PathBuf;

use crate::flavor::Flavor;

/// Where a server's managed configuration lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigTarget {
    /// A fragment file of its own in an include directory (Debian `mariadb.conf.d`, RHEL
    /// `my.cnf.d`, the lab's conf.d, or the topology's `config_file`).
    Fragment(PathBuf),
    /// A marked managed block inside a main file with no include directory (`/etc/my.cnf` on
    /// Amazon Linux).
    Block(PathBuf),
}

impl ConfigTarget {
    pub fn path(&self) -> &std::path::Path {
        match self {
            ConfigTarget::Fragment(p) | ConfigTarget::Block(p) => p,
        }
    }
}

/// What observe learned about one host. `sql` facts are None when the server did not answer.
#[derive(Debug, Clone)]
pub struct Facts {
    pub host: String,
    pub sql: Option<SqlFacts>,
    /// Why the server could not be asked (connection refused, wrong password, timeout...).
    pub sql_error: Option<String>,
    pub config: Option<ConfigFacts>,
}

impl Facts {
    /// Nothing observed yet on `host`.
    pub fn empty(host: &str) -> Facts {
        Facts {
            host: host.to_string(),
            sql: None,
            sql_error: None,
            config: None,
        }
    }

    /// `host` could not be observed, for this reason.
    pub fn failed(host: &str, e: &anyhow::Error) -> Facts {
        Facts {
            sql_error: Some(format!("{e:#}")),
            ..Facts::empty(host)
        }
    }
}

/// Facts read over SQL.
#[derive(Debug, Clone)]
pub struct SqlFacts {
    pub flavor: Flavor,
    /// `@@version` as the server says it.
    pub version: String,
    pub server_id: u32,
    /// MySQL @@server_uuid ("" on MariaDB).
    pub server_uuid: String,
    pub log_bin: bool,
    /// @@log_bin_basename: where the binary log really is ("" with the log off).
    pub log_bin_basename: String,
    pub binlog_format: String,
    pub read_only: bool,
    /// MySQL super_read_only (false on MariaDB, which has none).
    pub super_read_only: bool,
    pub log_slave_updates: bool,
    pub auto_increment_increment: u32,
    pub auto_increment_offset: u32,
    /// Replica status of the default channel; None when the server replicates from nobody.
    pub replica: Option<ReplicaStatus>,
    /// Own binary log coordinates; None with the binary log off.
    pub master_status: Option<MasterStatus>,
    /// The binary log files this server has, with their sizes (empty with the log off).
    pub binary_logs: Vec<(String, u64)>,
    /// MySQL @@gtid_executed / MariaDB @@gtid_binlog_pos.
    pub gtid_executed: String,
    /// MariaDB @@gtid_slave_pos (empty on MySQL).
    pub gtid_slave_pos: String,
    /// Hosts the replication user exists for (`user@host` rows of mysql.user).
    pub repl_user_hosts: Vec<String>,
    /// Hosts of the replication user whose password differs from the file's (decided on this
    /// side from the stored hash; MySQL's salted hashes cannot be compared and are not listed).
    pub repl_password_mismatch: Vec<String>,
    /// Every database but the system schemas (repltool's own included).
    pub databases: Vec<String>,
    /// Whether any database other than the system ones and repltool's own exists.
    pub has_user_data: bool,
    /// @@bind_address ("" when the server does not say).
    pub bind_address: String,
    /// @@log_error resolved against @@datadir.
    pub error_log: Option<PathBuf>,
    pub datadir: String,
    /// Server clock, seconds since the epoch (UNIX_TIMESTAMP()).
    pub clock: i64,
    /// Promotions recorded on this server by `repltool promote` (oldest first).
    pub promotions: Vec<PromotionRecord>,
    /// Galera status, for the members of a `galera:` topology (None otherwise).
    pub galera: Option<galera::WsrepLive>,
}

impl SqlFacts {
    /// Whether `file:pos` lies inside this server's binary logs.
    pub fn has_binlog_position(&self, file: &str, pos: u64) -> bool {
        self.binary_logs
            .iter()
            .any(|(f, size)| f == file && *size >= pos)
    }
}

/// Facts about the host's configuration layout, read over its shell.
#[derive(Debug, Clone)]
pub struct ConfigFacts {
    pub target: ConfigTarget,
    /// Current content of the target file (None: it does not exist).
    pub current: Option<String>,
    /// How to restart the server (None: none found and the topology gives none).
    pub restart: Option<String>,
    /// How to stop it (None: no service manager found).
    pub stop: Option<String>,
}

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::flavor::{PasswordCheck, PromotionRecord, ServerVars, CANARY_SCHEMA};
use crate::topology::{Host, Topology};
use crate::transport::sql::{Columns, SqlConn};
use crate::transport::HostSession;

/// Open an administrative SQL connection to `host`, `timeout` bounding the login and every
/// read and write (see [`crate::transport::sql::connect`]).
pub fn connect_sql(
    session: &mut dyn HostSession,
    host: &Host,
    timeout: Duration,
) -> Result<Box<dyn SqlConn>> {
    session.sql_connect(host, timeout, timeout)
}

/// A column of a row by name (case-insensitive); `Ok(None)` for NULL, an error naming the
/// column when the row has no such column.
pub fn column<'a>(row: &'a Columns, name: &str) -> Result<Option<&'a str>> {
    row.iter()
        .find(|(c, _)| c.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_deref())
        .ok_or_else(|| anyhow!("the server's answer has no column {name}"))
}

/// A column that must hold a number: an error names the column and the value, never a silent 0.
pub fn number<T: std::str::FromStr>(row: &Columns, name: &str) -> Result<T> {
    let v = column(row, name)?.unwrap_or("");
    v.trim()
        .parse()
        .map_err(|_| anyhow!("{name} is {v:?}, not a number"))
}

/// A 0/1 (or ON/OFF) column.
pub fn flag(row: &Columns, name: &str) -> Result<bool> {
    match column(row, name)?.unwrap_or("").trim() {
        "1" | "ON" | "on" => Ok(true),
        "0" | "OFF" | "off" => Ok(false),
        v => bail!("{name} is {v:?}, not 0/1"),
    }
}

/// Read the SQL facts of a server.
pub fn sql_facts(conn: &mut dyn SqlConn, topo: &Topology) -> Result<SqlFacts> {
    let flavor = conn.flavor()?;
    let row = conn
        .query(&flavor.variables_query())?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("the server returned no row for its variables"))?;
    let text = |k: &str| -> Result<String> { Ok(column(&row, k)?.unwrap_or("").to_string()) };
    let version = text(ServerVars::VERSION)?;
    let replica = conn
        .query(&flavor.show_replica_status())?
        .into_iter()
        .next()
        .map(|cols| replica_status_from_columns(&cols))
        .transpose()?;
    let log_bin = flag(&row, ServerVars::LOG_BIN)?;
    let (master_status, binary_logs) = if log_bin {
        let ms = conn
            .query(&flavor.show_master_status())?
            .into_iter()
            .next()
            .map(|cols| master_status_from_columns(&cols))
            .transpose()?;
        let logs = conn
            .query(&flavor.show_binary_logs())?
            .iter()
            .map(|r| -> Result<(String, u64)> {
                Ok((
                    column(r, "Log_name")?.unwrap_or("").to_string(),
                    number(r, "File_size")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        (ms, logs)
    } else {
        (None, Vec::new())
    };
    let mut repl_user_hosts = Vec::new();
    let mut repl_password_mismatch = Vec::new();
    for r in conn.query(&flavor.repl_accounts_query(&topo.replication.user))? {
        let host = column(&r, "Host")?.unwrap_or("").to_string();
        let plugin = column(&r, "plugin")?.unwrap_or("");
        let stored = column(&r, "authentication_string")?.unwrap_or("");
        if flavor.password_check(plugin, stored, &topo.replication.password)
            == PasswordCheck::Differs
        {
            repl_password_mismatch.push(host.clone());
        }
        repl_user_hosts.push(host);
    }
    let databases = conn.column(&flavor.databases_query())?;
    let has_user_data = databases.iter().any(|d| d != CANARY_SCHEMA);
    let promotions = if databases.iter().any(|d| d == CANARY_SCHEMA)
        && conn.one(&flavor.promotions_exist())?.as_deref() != Some("0")
    {
        conn.query(&flavor.promotions_query())?
            .iter()
            .map(promotion_from_row)
            .collect::<Result<Vec<_>>>()
            .context("reading repltool.promotions")?
    } else {
        Vec::new()
    };
    let datadir = text(ServerVars::DATADIR)?;
    let le = text(ServerVars::LOG_ERROR)?;
    let error_log = if le.is_empty() || le == "stderr" {
        None
    } else if le.starts_with('/') {
        Some(PathBuf::from(le))
    } else {
        Some(PathBuf::from(&datadir).join(le.trim_start_matches("./")))
    };
    Ok(SqlFacts {
        flavor,
        version,
        server_id: number(&row, ServerVars::SERVER_ID)?,
        server_uuid: text(ServerVars::SERVER_UUID)?,
        log_bin,
        log_bin_basename: text(ServerVars::LOG_BIN_BASENAME)?,
        binlog_format: text(ServerVars::BINLOG_FORMAT)?,
        read_only: flag(&row, ServerVars::READ_ONLY)?,
        super_read_only: flag(&row, ServerVars::SUPER_READ_ONLY)?,
        log_slave_updates: flag(&row, ServerVars::LOG_SLAVE_UPDATES)?,
        auto_increment_increment: number(&row, ServerVars::AUTO_INCREMENT_INCREMENT)?,
        auto_increment_offset: number(&row, ServerVars::AUTO_INCREMENT_OFFSET)?,
        replica,
        master_status,
        binary_logs,
        gtid_executed: text(ServerVars::GTID_EXECUTED)?,
        gtid_slave_pos: text(ServerVars::GTID_SLAVE_POS)?,
        repl_user_hosts,
        repl_password_mismatch,
        databases,
        has_user_data,
        error_log,
        bind_address: text(ServerVars::BIND_ADDRESS)?,
        datadir,
        clock: number(&row, ServerVars::CLOCK)?,
        promotions,
        galera: None,
    })
}

fn promotion_from_row(r: &Columns) -> Result<PromotionRecord> {
    let t = |k: &str| -> Result<String> { Ok(column(r, k)?.unwrap_or("").to_string()) };
    Ok(PromotionRecord {
        old_master: t("old_master")?,
        old_server_id: number(r, "old_server_id")?,
        old_server_uuid: t("old_server_uuid")?,
        old_pos: (t("old_file")?, number(r, "old_pos")?),
        old_gtid: t("old_gtid")?,
        slaves_pos: (t("slaves_file")?, number(r, "slaves_pos")?),
        new_master: t("new_master")?,
        new_pos: (t("new_file")?, number(r, "new_pos")?),
    })
}

/// The shell side of observe: one command that prints the main config files, PID 1's name and
/// the service managers found, in marked sections parsed by [`parse_config_probe`]. The
/// included files go through one `awk` (at most 64 KiB of each), not a process per file: on
/// a Debian host that is 4 processes instead of 14.
pub const CONFIG_PROBE: &str = r#"for f in /etc/mysql/my.cnf /etc/my.cnf; do
  if [ -r "$f" ]; then echo "@@FILE $f"; cat "$f"; echo; fi
done
set --
for d in $(cat /etc/mysql/my.cnf /etc/my.cnf 2>/dev/null | sed -n 's/^[[:space:]]*!includedir[[:space:]]*//p'); do
  for f in "$d"/*.cnf; do
    if [ -r "$f" ]; then set -- "$@" "$f"; fi
  done
done
[ $# -eq 0 ] || awk 'BEGIN { for (i = 1; i < ARGC; i++) { f = ARGV[i]; print "@@INC " f; n = 0; while ((getline l < f) > 0) { n += length(l) + 1; if (n <= 65536) print l } close(f); print "" } }' "$@"
p1=
read -r p1 2>/dev/null < /proc/1/comm
echo "@@PID1 $p1"
for s in mariadb mysql mysqld; do
  if [ -e "/etc/init.d/$s" ]; then echo "@@INITD $s"; fi
  if command -v systemctl >/dev/null 2>&1 && systemctl cat "$s.service" >/dev/null 2>&1; then echo "@@UNIT $s"; fi
done
if command -v service >/dev/null 2>&1; then echo "@@SERVICE"; fi
"#;

/// What the config probe found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigProbe {
    /// Main config files and their text, in the order read.
    pub files: Vec<(PathBuf, String)>,
    /// The `.cnf` files of the include directories and their text.
    pub included: Vec<(PathBuf, String)>,
    pub pid1: String,
    pub init_scripts: Vec<String>,
    pub units: Vec<String>,
    pub has_service: bool,
}

pub fn parse_config_probe(out: &str) -> ConfigProbe {
    let mut p = ConfigProbe::default();
    // (path, text, is an included file)
    let mut current: Option<(PathBuf, String, bool)> = None;
    let done = |p: &mut ConfigProbe, f: Option<(PathBuf, String, bool)>| {
        if let Some((path, text, inc)) = f {
            if inc {
                p.included.push((path, text));
            } else {
                p.files.push((path, text));
            }
        }
    };
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("@@") {
            done(&mut p, current.take());
            let (tag, val) = rest.split_once(' ').unwrap_or((rest, ""));
            match tag {
                "FILE" => current = Some((PathBuf::from(val), String::new(), false)),
                // `"$d"/*.cnf` with a trailing slash in $d: one path, one spelling.
                "INC" => {
                    current = Some((PathBuf::from(val.replace("//", "/")), String::new(), true))
                }
                "PID1" => p.pid1 = val.trim().to_string(),
                "INITD" => p.init_scripts.push(val.trim().to_string()),
                "UNIT" => p.units.push(val.trim().to_string()),
                "SERVICE" => p.has_service = true,
                _ => {}
            }
        } else if let Some((_, text, _)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    done(&mut p, current.take());
    p
}

/// The settings repltool's fragment owns, as option names with `_` (the server reads `-` and
/// `_` alike).
const MANAGED_KEYS: &[&str] = &[
    "server_id",
    "log_bin",
    "binlog_format",
    "relay_log",
    "report_host",
    "bind_address",
    "read_only",
    "super_read_only",
    "log_slave_updates",
    "log_replica_updates",
    "auto_increment_increment",
    "auto_increment_offset",
    "gtid_mode",
    "enforce_gtid_consistency",
    "gtid_strict_mode",
    "gtid_domain_id",
];

/// Whether an option file's text sets one of the settings repltool's fragment owns.
fn sets_managed_key(text: &str) -> bool {
    text.lines().any(|l| {
        let l = l.trim();
        if l.starts_with('#') || l.starts_with(';') || l.starts_with('[') {
            return false;
        }
        let key = l.split('=').next().unwrap_or("").trim().replace('-', "_");
        MANAGED_KEYS.contains(&key.as_str())
    })
}

/// The fragment's file name in `dir`: the one repltool wrote before (any name), else
/// [`FRAGMENT_NAME`], unless a file read after that name sets one of repltool's settings (MySQL's
/// Debian package ships `mysql.conf.d/mysqld.cnf` with `bind-address = 127.0.0.1`, which sorts
/// after `60-repltool.cnf`): then a name read after it.
fn fragment_in(dir: &std::path::Path, probe: &ConfigProbe) -> PathBuf {
    let here: Vec<&(PathBuf, String)> = probe
        .included
        .iter()
        .filter(|(p, _)| p.parent() == Some(dir))
        .collect();
    if let Some((p, _)) = here
        .iter()
        .find(|(_, t)| t.contains(crate::plan::init::MANAGED_MARKER))
    {
        return p.clone();
    }
    let later = here.iter().any(|(p, t)| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n > FRAGMENT_NAME)
            && sets_managed_key(t)
    });
    dir.join(if later {
        FRAGMENT_NAME_LAST
    } else {
        FRAGMENT_NAME
    })
}

/// The file name of repltool's fragment in an include directory: after Debian's 50-server.cnf so
/// it wins, and before anything a DBA numbered 90+ on purpose.
pub const FRAGMENT_NAME: &str = "60-repltool.cnf";

/// The fragment's name when a package file read after [`FRAGMENT_NAME`] sets the same options.
pub const FRAGMENT_NAME_LAST: &str = "zz-repltool.cnf";

/// Where the managed configuration goes: the last `!includedir` of the first main file (read
/// last, so it overrides earlier ones), else a managed block inside the main file.
pub fn config_target(probe: &ConfigProbe) -> Option<ConfigTarget> {
    let (main, text) = probe.files.first()?;
    let dirs: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("!includedir"))
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
        .collect();
    match dirs.last() {
        Some(d) => Some(ConfigTarget::Fragment(fragment_in(
            &PathBuf::from(d.trim_end_matches('/')),
            probe,
        ))),
        None => Some(ConfigTarget::Block(main.clone())),
    }
}

/// How to restart the server: the topology's `restart` wins; then systemctl, only when systemd
/// really is PID 1 (containers often have the binary but not the daemon); then `service`.
pub fn restart_command(host: &Host, probe: &ConfigProbe) -> Option<String> {
    if let Some(r) = &host.restart {
        return Some(r.clone());
    }
    if probe.pid1 == "systemd" {
        if let Some(u) = probe.units.first() {
            return Some(format!("systemctl restart {u}"));
        }
    }
    if probe.has_service {
        if let Some(s) = probe.init_scripts.first() {
            return Some(format!("service {s} restart"));
        }
    }
    None
}

/// How to stop the server, for fencing a master that must not come back during a failover:
/// the service manager's stop (systemctl only when systemd is PID 1, else `service`). None
/// when only a custom `restart:` is known: the caller falls back to killing what listens.
pub fn stop_command(probe: &ConfigProbe) -> Option<String> {
    if probe.pid1 == "systemd" {
        if let Some(u) = probe.units.first() {
            return Some(format!("systemctl stop {u}"));
        }
    }
    if probe.has_service {
        if let Some(s) = probe.init_scripts.first() {
            return Some(format!("service {s} stop"));
        }
    }
    None
}

/// A shell script printing `LISTEN` when a socket listens on TCP `port` in the host's network
/// namespace, `NONE` otherwise (from /proc/net/tcp and tcp6: no ss or netstat needed).
pub fn listening_script(port: u16) -> String {
    format!(
        "for f in /proc/net/tcp /proc/net/tcp6; do [ -r \"$f\" ] || continue; \
         if awk '$2 ~ /:{port:04X}$/ && $4 == \"0A\" {{ found = 1 }} END {{ exit !found }}' \"$f\"; \
         then echo LISTEN; exit 0; fi; done; echo NONE"
    )
}

/// A shell script printing the pids of the processes holding the socket that listens on TCP
/// `port` (its inode found in /proc/net/tcp*, then among every process's descriptors).
pub fn listener_pids_script(port: u16) -> String {
    format!(
        "ino=$(awk '$2 ~ /:{port:04X}$/ && $4 == \"0A\" {{ print $10; exit }}' /proc/net/tcp /proc/net/tcp6 2>/dev/null | head -n 1); \
         [ -n \"$ino\" ] || exit 0; \
         for d in /proc/[0-9]*; do \
         if ls -l \"$d/fd\" 2>/dev/null | grep -q \"socket:\\[$ino\\]\"; then echo \"${{d#/proc/}}\"; fi; \
         done"
    )
}

/// Read the host's config layout and the current content of repltool's target file.
pub fn config_facts(session: &mut dyn HostSession, host: &Host) -> Result<ConfigFacts> {
    let out = session
        .run(CONFIG_PROBE, None, false, Duration::from_secs(15))
        .context("reading the server's configuration layout")?;
    let probe = parse_config_probe(&out.stdout_str());
    let target = match &host.config_file {
        Some(p) => ConfigTarget::Fragment(p.clone()),
        None => config_target(&probe).ok_or_else(|| {
            anyhow!(
                "{}: no /etc/mysql/my.cnf or /etc/my.cnf found; set `config_file:` for this host",
                host.name
            )
        })?,
    };
    let current = session
        .read_file(target.path(), true)?
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    Ok(ConfigFacts {
        target,
        current,
        restart: restart_command(host, &probe),
        stop: stop_command(&probe),
    })
}

/// Observe every host at once: those with a session over it, the others recorded with the
/// reason they could not be reached.
pub fn observe_all(
    topo: &Topology,
    sessions: &crate::transport::Sessions,
    unreachable: &[(String, anyhow::Error)],
    timeout: Duration,
    with_config: bool,
) -> std::collections::HashMap<String, Facts> {
    observe_all_on(
        topo,
        sessions,
        unreachable,
        timeout,
        with_config,
        Vec::new(),
    )
    .0
}

/// A connection to a host's server, by host name.
pub type HostConns = Vec<(String, Box<dyn SqlConn>)>;

/// [`observe_all`], reading on the connections of `open` (the cluster lock's) where there is
/// one instead of logging in again; they are given back.
pub fn observe_all_on(
    topo: &Topology,
    sessions: &crate::transport::Sessions,
    unreachable: &[(String, anyhow::Error)],
    timeout: Duration,
    with_config: bool,
    open: HostConns,
) -> (std::collections::HashMap<String, Facts>, HostConns) {
    let reachable: Vec<&Host> = topo
        .hosts
        .iter()
        .filter(|h| sessions.contains_key(&h.name))
        .collect();
    let slots: std::collections::HashMap<String, std::sync::Mutex<Option<Box<dyn SqlConn>>>> = open
        .into_iter()
        .map(|(h, c)| (h, std::sync::Mutex::new(Some(c))))
        .collect();
    let take = |h: &str| {
        slots
            .get(h)
            .and_then(|m| m.lock().unwrap_or_else(|e| e.into_inner()).take())
    };
    let observed = crate::par::each(&reachable, |h| {
        let m = sessions
            .get(&h.name)
            .ok_or_else(|| anyhow!("{}: no session", h.name))?;
        let conn = take(&h.name);
        // Reading on an open connection without the configuration needs no shell: the host's
        // session stays free for others (promote opens its own connections meanwhile).
        let (f, back) = match conn {
            Some(c) if !with_config => observe_sql_on(topo, h, c),
            conn => {
                let mut sess = m.lock().unwrap_or_else(|e| e.into_inner());
                observe_host_on(topo, h, sess.as_mut(), timeout, with_config, conn)
            }
        };
        if let (Some(c), Some(slot)) = (back, slots.get(&h.name)) {
            *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
        }
        Ok(f)
    });
    let mut facts: std::collections::HashMap<String, Facts> = reachable
        .iter()
        .zip(observed)
        .map(|(h, r)| {
            let f = r.unwrap_or_else(|e| Facts::failed(&h.name, &e));
            (h.name.clone(), f)
        })
        .collect();
    for (name, e) in unreachable {
        facts.insert(name.clone(), Facts::failed(name, e));
    }
    let back = slots
        .into_iter()
        .filter_map(|(h, m)| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .map(|c| (h, c))
        })
        .collect();
    (facts, back)
}

/// Observe one host: config facts over its shell, SQL facts over its server. A failure to reach
/// the server is recorded, not returned, so callers see every host. Read on `conn` when one is
/// open to the server already (the cluster lock's), which is given back.
pub fn observe_host_on(
    topo: &Topology,
    host: &Host,
    session: &mut dyn HostSession,
    timeout: Duration,
    with_config: bool,
    conn: Option<Box<dyn SqlConn>>,
) -> (Facts, Option<Box<dyn SqlConn>>) {
    let mut facts = Facts::empty(&host.name);
    if with_config {
        match config_facts(session, host) {
            Ok(c) => facts.config = Some(c),
            Err(e) => facts.sql_error = Some(format!("{e:#}")),
        }
    }
    let (res, back) = match conn {
        Some(mut c) => {
            let r = read_sql(topo, host, c.as_mut());
            (r, Some(c))
        }
        None => (
            connect_sql(session, host, timeout).and_then(|mut c| read_sql(topo, host, c.as_mut())),
            None,
        ),
    };
    record_sql(&mut facts, res);
    (facts, back)
}

/// Observe one host's server only (no configuration), on a connection already open; it is
/// given back.
pub fn observe_sql_on(
    topo: &Topology,
    host: &Host,
    mut conn: Box<dyn SqlConn>,
) -> (Facts, Option<Box<dyn SqlConn>>) {
    let mut facts = Facts::empty(&host.name);
    let res = read_sql(topo, host, conn.as_mut());
    record_sql(&mut facts, res);
    (facts, Some(conn))
}

/// A host's SQL facts (and a Galera member's live state).
fn read_sql(topo: &Topology, host: &Host, c: &mut dyn SqlConn) -> Result<SqlFacts> {
    if topo.is_member(host) {
        // A member outside the primary component refuses ordinary reads (error 1047):
        // this session reads what it has, which is what status must show.
        let f = c.flavor()?;
        if f.galera_support().is_ok() {
            let _ = c.exec(&f.wsrep_dirty_reads());
        }
    }
    let mut s = sql_facts(c, topo)?;
    if topo.is_member(host) {
        s.galera = galera::live_facts(c, &s.flavor, topo)?;
    }
    Ok(s)
}

fn record_sql(facts: &mut Facts, res: Result<SqlFacts>) {
    match res {
        Ok(s) => facts.sql = Some(s),
        Err(e) => {
            let prev = facts.sql_error.take();
            facts.sql_error = Some(match prev {
                Some(p) => format!("{p}; {e:#}"),
                None => format!("{e:#}"),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "@@FILE /etc/mysql/my.cnf\n[client-server]\nsocket = /run/mysqld/mysqld.sock\n!includedir /etc/mysql/conf.d/\n!includedir /etc/mysql/mariadb.conf.d/\n\n@@PID1 bash\n@@INITD mariadb\n@@SERVICE\n";

    #[test]
    fn debian_layout_uses_the_last_includedir_and_service() {
        let p = parse_config_probe(DEBIAN);
        assert_eq!(p.files.len(), 1);
        assert_eq!(
            config_target(&p),
            Some(ConfigTarget::Fragment(PathBuf::from(
                "/etc/mysql/mariadb.conf.d/60-repltool.cnf"
            )))
        );
        assert_eq!(p.pid1, "bash");
        assert!(p.has_service);
        assert_eq!(p.init_scripts, vec!["mariadb".to_string()]);
    }

    #[test]
    fn rhel_layout_uses_my_cnf_d() {
        let p = parse_config_probe(
            "@@FILE /etc/my.cnf\n[mysqld]\ndatadir=/var/lib/mysql\n!includedir /etc/my.cnf.d\n@@PID1 systemd\n@@UNIT mysqld\n",
        );
        assert_eq!(
            config_target(&p),
            Some(ConfigTarget::Fragment(PathBuf::from(
                "/etc/my.cnf.d/60-repltool.cnf"
            )))
        );
    }

    #[test]
    fn amazon_linux_without_includedir_gets_a_managed_block() {
        let p = parse_config_probe(
            "@@FILE /etc/my.cnf\n[mysqld]\ndatadir=/var/lib/mysql\n@@PID1 systemd\n",
        );
        assert_eq!(
            config_target(&p),
            Some(ConfigTarget::Block(PathBuf::from("/etc/my.cnf")))
        );
    }

    #[test]
    fn mysql_debian_layout_reads_the_fragment_after_mysqld_cnf() {
        let probe = "@@FILE /etc/mysql/my.cnf\n!includedir /etc/mysql/conf.d/\n!includedir /etc/mysql/mysql.conf.d/\n\
                     @@INC /etc/mysql/conf.d/mysql.cnf\n[mysql]\n\
                     @@INC /etc/mysql/mysql.conf.d/mysql.cnf\n[mysql]\n\
                     @@INC /etc/mysql/mysql.conf.d/mysqld.cnf\n[mysqld]\nbind-address\t= 127.0.0.1\nlog_error = /var/log/mysql/error.log\n\
                     @@PID1 bash\n@@SERVICE\n";
        let p = parse_config_probe(probe);
        assert_eq!(p.included.len(), 3);
        assert_eq!(
            config_target(&p),
            Some(ConfigTarget::Fragment(PathBuf::from(
                "/etc/mysql/mysql.conf.d/zz-repltool.cnf"
            )))
        );
        // A fragment repltool wrote earlier keeps its name.
        let again = format!(
            "{probe}@@INC /etc/mysql/mysql.conf.d/60-repltool.cnf\n# Managed by repltool: do not edit\n[mysqld]\n"
        );
        assert_eq!(
            config_target(&parse_config_probe(&again)),
            Some(ConfigTarget::Fragment(PathBuf::from(
                "/etc/mysql/mysql.conf.d/60-repltool.cnf"
            )))
        );
        // A later file that sets nothing of ours does not move it.
        let harmless = probe.replace("bind-address\t= 127.0.0.1\n", "");
        assert_eq!(
            config_target(&parse_config_probe(&harmless)),
            Some(ConfigTarget::Fragment(PathBuf::from(
                "/etc/mysql/mysql.conf.d/60-repltool.cnf"
            )))
        );
    }

    #[test]
    fn no_config_file_at_all() {
        assert_eq!(config_target(&parse_config_probe("@@PID1 bash\n")), None);
    }
}

#[cfg(test)]
mod fake_tests {
    //! observe against a scripted server (no server needed).
    use super::*;
    use crate::transport::fake::{FakeConn, FakeServer, Reply};

    fn mysql97_flavor() -> Flavor {
        Flavor::detect("9.7.4", "MySQL Community Server - GPL").unwrap()
    }

    fn mysql97(server: &mut FakeServer, server_id: &str) {
        let f = mysql97_flavor();
        server
            .on(
                "SELECT @@version, @@version_comment",
                Reply::row(&[
                    ("v", Some("9.7.4")),
                    ("c", Some("MySQL Community Server - GPL")),
                ]),
            )
            .on(
                "AS version",
                Reply::row(&[
                    ("version", Some("9.7.4")),
                    ("version_comment", Some("MySQL Community Server - GPL")),
                    ("server_id", Some(server_id)),
                    ("server_uuid", Some("17995cd3-ecc4-11f1-ace9-e3954288e3db")),
                    ("log_bin", Some("1")),
                    ("log_bin_basename", Some("/var/lib/mysql/binlog")),
                    ("binlog_format", Some("ROW")),
                    ("read_only", Some("1")),
                    ("super_read_only", Some("1")),
                    ("log_slave_updates", Some("1")),
                    ("auto_increment_increment", Some("1")),
                    ("auto_increment_offset", Some("1")),
                    (
                        "gtid_executed",
                        Some("17995cd3-ecc4-11f1-ace9-e3954288e3db:1-5"),
                    ),
                    ("gtid_slave_pos", Some("")),
                    ("datadir", Some("/var/lib/mysql/")),
                    ("log_error", Some("/var/log/mysql/error.log")),
                    ("bind_address", Some("0.0.0.0")),
                    ("clock", Some("1764500000")),
                ]),
            )
            .on(f.show_replica_status().text(), Reply::empty())
            .on(
                f.show_master_status().text(),
                Reply::row(&[
                    ("File", Some("mysql-bin.000003")),
                    ("Position", Some("1234")),
                ]),
            )
            .on(
                f.show_binary_logs().text(),
                Reply::Rows(vec![
                    vec![
                        ("Log_name".into(), Some("mysql-bin.000002".into())),
                        ("File_size".into(), Some("900".into())),
                    ],
                    vec![
                        ("Log_name".into(), Some("mysql-bin.000003".into())),
                        ("File_size".into(), Some("1234".into())),
                    ],
                ]),
            )
            .on(
                "FROM mysql.user",
                Reply::row(&[
                    ("Host", Some("10.0.0.2")),
                    ("plugin", Some("caching_sha2_password")),
                    ("authentication_string", Some("$A$005$salted")),
                ]),
            )
            .on(
                "information_schema.SCHEMATA",
                Reply::Rows(vec![vec![("SCHEMA_NAME".into(), Some("shop".into()))]]),
            );
    }

    #[test]
    fn a_mysql_9_7_server_is_asked_in_its_own_dialect_and_parsed() {
        let server = FakeServer::shared();
        mysql97(&mut server.lock().unwrap(), "7");
        let topo = crate::testing::topo(&[("db1", None)]);
        let mut conn = FakeConn(server.clone());
        let f = sql_facts(&mut conn, &topo).unwrap();
        assert_eq!(f.flavor.describe(), "MySQL 9.7.4");
        assert_eq!(f.server_id, 7);
        assert!(f.read_only && f.super_read_only && f.log_slave_updates);
        assert_eq!(f.master_status.as_ref().unwrap().position, 1234);
        assert!(f.has_binlog_position("mysql-bin.000002", 900));
        assert!(!f.has_binlog_position("mysql-bin.000002", 901));
        // MySQL's salted hashes cannot be compared: never reported as a mismatch.
        assert_eq!(f.repl_user_hosts, vec!["10.0.0.2".to_string()]);
        assert!(f.repl_password_mismatch.is_empty());
        assert!(f.has_user_data);
        let log = server.lock().unwrap().log.join("\n");
        assert!(log.contains("@@GLOBAL.log_replica_updates"), "{log}");
        assert!(log.contains("@@GLOBAL.super_read_only"), "{log}");
        // Nothing of the older dialect (a MariaDB's statements).
        let old = Flavor::detect("10.11.6-MariaDB", "").unwrap();
        for gone in [
            old.show_replica_status().text(),
            old.show_master_status().text(),
            "log_slave_updates AS",
            "PASSWORD(",
        ] {
            assert!(!log.contains(gone), "{gone}: {log}");
        }
    }

    #[test]
    fn a_value_that_does_not_parse_is_an_error_naming_it_never_a_zero() {
        let server = FakeServer::shared();
        mysql97(&mut server.lock().unwrap(), "seven");
        let topo = crate::testing::topo(&[("db1", None)]);
        let mut conn = FakeConn(server);
        let e = sql_facts(&mut conn, &topo).unwrap_err();
        assert_eq!(format!("{e:#}"), "server_id is \"seven\", not a number");
    }
}
