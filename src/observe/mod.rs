//! Facts about a server, gathered before acting: flavor, variables, binlog coordinates, replica
//! status, users, and the host's config layout. Parsers live in `replica`.

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

/// Facts read over SQL.
#[derive(Debug, Clone)]
pub struct SqlFacts {
    pub flavor: Flavor,
    /// `@@version` as the server says it.
    pub version: String,
    pub server_id: u32,
    pub log_bin: bool,
    pub binlog_format: String,
    pub read_only: bool,
    pub log_slave_updates: bool,
    pub auto_increment_increment: u32,
    pub auto_increment_offset: u32,
    /// Replica status of the default channel; None when the server replicates from nobody.
    pub replica: Option<ReplicaStatus>,
    /// Own binary log coordinates; None with the binary log off.
    pub master_status: Option<MasterStatus>,
    /// MySQL @@gtid_executed / MariaDB @@gtid_binlog_pos.
    pub gtid_executed: String,
    /// MariaDB @@gtid_slave_pos (empty on MySQL).
    pub gtid_slave_pos: String,
    /// Hosts the replication user exists for (`user@host` rows of mysql.user).
    pub repl_user_hosts: Vec<String>,
    /// Hosts of the replication user whose password differs from the file's (MariaDB only).
    pub repl_password_mismatch: Vec<String>,
    /// Whether any database other than the system ones exists.
    pub has_user_data: bool,
    /// @@bind_address ("" when the server does not say).
    pub bind_address: String,
    /// @@log_error resolved against @@datadir.
    pub error_log: Option<PathBuf>,
    pub datadir: String,
    /// Server clock, seconds since the epoch (UNIX_TIMESTAMP()).
    pub clock: i64,
    /// Promotions recorded on this server by `repltool promote` (oldest first).
    pub promotions: Vec<Promotion>,
}

/// A promotion as `repltool promote` records it on the new master (table repltool.promotions):
/// the old master's binary log up to `old_pos` is contained in the new master's data at `new_pos`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub old_master: String,
    pub old_pos: (String, u64),
    /// Where the other slaves stood in the old master's log when `new_pos` was taken.
    pub slaves_pos: (String, u64),
    pub new_master: String,
    pub new_pos: (String, u64),
}

/// Facts about the host's configuration layout, read over its shell.
#[derive(Debug, Clone)]
pub struct ConfigFacts {
    pub target: ConfigTarget,
    /// Current content of the target file (None: it does not exist).
    pub current: Option<String>,
    /// How to restart the server (None: none found and the topology gives none).
    pub restart: Option<String>,
}

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use mysql::prelude::Queryable;

use crate::topology::{Host, Topology};
use crate::transport::HostSession;

/// Open an administrative SQL connection to `host` through its session's endpoint (SSH
/// port-forward, direct TCP, or the lab's loopback). `timeout` bounds the connect and every
/// read and write, so a partitioned host costs at most that. The session clears
/// NO_BACKSLASH_ESCAPES so `flavor::quote` is always right.
pub fn connect_sql(
    session: &mut dyn HostSession,
    host: &Host,
    timeout: Duration,
) -> Result<mysql::Conn> {
    connect_sql_io(session, host, timeout, timeout)
}

/// [`connect_sql`] with a longer bound on reads and writes, for statements that wait on purpose
/// (FLUSH TABLES WITH READ LOCK, MASTER_POS_WAIT).
pub fn connect_sql_io(
    session: &mut dyn HostSession,
    host: &Host,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> Result<mysql::Conn> {
    let (addr, port) = session.sql_endpoint(host.mysql.port)?;
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some(addr))
        .tcp_port(port)
        .user(Some(host.mysql.user.clone()))
        .pass(Some(host.mysql.password.expose().to_string()))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(connect_timeout))
        .read_timeout(Some(io_timeout))
        .write_timeout(Some(io_timeout))
        .init(vec![
            "SET SESSION sql_mode = REPLACE(@@SESSION.sql_mode, 'NO_BACKSLASH_ESCAPES', '')",
        ]);
    mysql::Conn::new(opts).map_err(|e| {
        // The forward's own thread records why it closed; give it a moment to say so.
        let mut far = session.endpoint_error(host.mysql.port);
        if far.is_none() && (addr_is_forward(host)) {
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(10));
                far = session.endpoint_error(host.mysql.port);
                if far.is_some() {
                    break;
                }
            }
        }
        let far = far
            .map(|r| format!(" (through SSH: {r})"))
            .unwrap_or_default();
        anyhow!(
            "{}: SQL login as {} on port {} failed: {}{far}",
            host.name,
            host.mysql.user,
            host.mysql.port,
            sql_error_text(&e)
        )
    })
}

fn addr_is_forward(host: &Host) -> bool {
    matches!(host.transport, crate::topology::Transport::Ssh(_))
        && host.mysql.route == crate::topology::SqlRoute::Forward
}

/// A server error without the crate's decoration, password never included.
pub fn sql_error_text(e: &mysql::Error) -> String {
    match e {
        mysql::Error::MySqlError(me) => format!("ERROR {}: {}", me.code, me.message),
        other => other.to_string(),
    }
}

/// One row as (column, value) pairs, NULL as None.
pub type Columns = Vec<(String, Option<String>)>;

/// Run a query and return its rows as (column, value) pairs, NULL as None.
pub fn query_columns(conn: &mut mysql::Conn, sql: &str) -> Result<Vec<Columns>> {
    let rows: Vec<mysql::Row> = conn
        .query(sql)
        .map_err(|e| anyhow!("{}", sql_error_text(&e)))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let cols = row.columns();
            cols.iter()
                .enumerate()
                .map(|(i, c)| {
                    let v = row.as_ref(i).and_then(value_text);
                    (c.name_str().into_owned(), v)
                })
                .collect()
        })
        .collect())
}

fn value_text(v: &mysql::Value) -> Option<String> {
    match v {
        mysql::Value::NULL => None,
        mysql::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        mysql::Value::Int(i) => Some(i.to_string()),
        mysql::Value::UInt(u) => Some(u.to_string()),
        mysql::Value::Float(f) => Some(f.to_string()),
        mysql::Value::Double(f) => Some(f.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// One value of a one-row query.
pub fn query_one(conn: &mut mysql::Conn, sql: &str) -> Result<Option<String>> {
    let rows = query_columns(conn, sql)?;
    Ok(rows
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next())
        .and_then(|(_, v)| v))
}

use crate::flavor::SYSTEM_SCHEMAS;

/// The databases a seed dump copies: everything but the system schemas.
pub fn user_databases(conn: &mut mysql::Conn) -> Result<Vec<String>> {
    let rows = query_columns(conn, "SHOW DATABASES")?;
    Ok(rows
        .into_iter()
        .filter_map(|r| r.into_iter().next().and_then(|(_, v)| v))
        .filter(|d| !SYSTEM_SCHEMAS.contains(&d.as_str()))
        .collect())
}

/// Whether any user table is not transactional (its copy is consistent only under the lock).
pub fn has_non_transactional_tables(conn: &mut mysql::Conn) -> Result<bool> {
    let n = query_one(
        conn,
        "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
         AND TABLE_SCHEMA NOT IN ('mysql','information_schema','performance_schema','sys') \
         AND ENGINE NOT IN ('InnoDB','Aria')",
    )?;
    Ok(n.as_deref().unwrap_or("0") != "0")
}

/// Read the SQL facts of a server.
pub fn sql_facts(conn: &mut mysql::Conn, topo: &Topology) -> Result<SqlFacts> {
    let row = query_columns(
        conn,
        "SELECT @@version AS v, @@version_comment AS c, @@server_id AS sid, @@log_bin AS lb, \
         @@binlog_format AS bf, @@read_only AS ro, @@log_slave_updates AS lsu, \
         @@auto_increment_increment AS aii, @@auto_increment_offset AS aio, @@datadir AS dd, \
         @@log_error AS le, @@bind_address AS ba, UNIX_TIMESTAMP() AS now",
    )?
    .into_iter()
    .next()
    .ok_or_else(|| anyhow!("the server returned no row for its variables"))?;
    let get = |k: &str| -> String {
        row.iter()
            .find(|(c, _)| c == k)
            .and_then(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let version = get("v");
    let flavor = Flavor::detect(&version, &get("c"))?;
    let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
    let replica = query_columns(conn, flavor.show_replica_status().text())?
        .into_iter()
        .next()
        .map(|cols| replica_status_from_columns(&cols))
        .transpose()?;
    let log_bin = num("lb") == 1;
    let master_status = if log_bin {
        query_columns(conn, flavor.show_master_status().text())?
            .into_iter()
            .next()
            .map(|cols| master_status_from_columns(&cols))
            .transpose()?
    } else {
        None
    };
    let gtid_executed =
        query_one(conn, &format!("SELECT {}", flavor.gtid_executed_var()))?.unwrap_or_default();
    let gtid_slave_pos = if flavor.kind == crate::flavor::Kind::MariaDB {
        query_one(conn, "SELECT @@gtid_slave_pos")?.unwrap_or_default()
    } else {
        String::new()
    };
    let repl_user_hosts = query_columns(
        conn,
        &format!(
            "SELECT Host FROM mysql.user WHERE User = {}",
            crate::flavor::quote(&topo.replication.user)
        ),
    )?
    .into_iter()
    .filter_map(|r| r.into_iter().next().and_then(|(_, v)| v))
    .collect();
    let repl_password_mismatch = match flavor
        .repl_password_mismatch_query(&topo.replication.user, &topo.replication.password)
    {
        Some(q) => query_columns(conn, q.text())?
            .into_iter()
            .filter_map(|r| r.into_iter().next().and_then(|(_, v)| v))
            .collect(),
        None => Vec::new(),
    };
    let has_user_data = !user_databases(conn)?
        .iter()
        .all(|d| d == crate::plan::CANARY_SCHEMA);
    // No table: nothing was ever promoted here.
    let promotions = query_columns(
        conn,
        "SELECT old_master, old_file, old_pos, new_master, new_file, new_pos, slaves_file, \
         slaves_pos FROM repltool.promotions ORDER BY id",
    )
    .map(|rows| {
        rows.into_iter()
            .map(|r| {
                let g = |i: usize| r.get(i).and_then(|(_, v)| v.clone()).unwrap_or_default();
                Promotion {
                    old_master: g(0),
                    old_pos: (g(1), g(2).parse().unwrap_or(0)),
                    new_master: g(3),
                    new_pos: (g(4), g(5).parse().unwrap_or(0)),
                    slaves_pos: (g(6), g(7).parse().unwrap_or(0)),
                }
            })
            .collect()
    })
    .unwrap_or_default();
    let datadir = get("dd");
    let le = get("le");
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
        server_id: num("sid") as u32,
        log_bin,
        binlog_format: get("bf"),
        read_only: num("ro") == 1,
        log_slave_updates: num("lsu") == 1,
        auto_increment_increment: num("aii") as u32,
        auto_increment_offset: num("aio") as u32,
        replica,
        master_status,
        gtid_executed,
        gtid_slave_pos,
        repl_user_hosts,
        repl_password_mismatch,
        has_user_data,
        error_log,
        bind_address: get("ba"),
        datadir,
        clock: get("now").parse().unwrap_or(0),
        promotions,
    })
}

/// The shell side of observe: one command that prints the main config files, PID 1's name and
/// the service managers found, in marked sections parsed by [`parse_config_probe`].
pub const CONFIG_PROBE: &str = r#"for f in /etc/mysql/my.cnf /etc/my.cnf; do
  if [ -r "$f" ]; then echo "@@FILE $f"; cat "$f"; echo; fi
done
echo "@@PID1 $(cat /proc/1/comm 2>/dev/null)"
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
    pub pid1: String,
    pub init_scripts: Vec<String>,
    pub units: Vec<String>,
    pub has_service: bool,
}

pub fn parse_config_probe(out: &str) -> ConfigProbe {
    let mut p = ConfigProbe::default();
    let mut current: Option<(PathBuf, String)> = None;
    for line in out.lines() {
        if let Some(rest) = line.strip_prefix("@@") {
            if let Some(f) = current.take() {
                p.files.push(f);
            }
            let (tag, val) = rest.split_once(' ').unwrap_or((rest, ""));
            match tag {
                "FILE" => current = Some((PathBuf::from(val), String::new())),
                "PID1" => p.pid1 = val.trim().to_string(),
                "INITD" => p.init_scripts.push(val.trim().to_string()),
                "UNIT" => p.units.push(val.trim().to_string()),
                "SERVICE" => p.has_service = true,
                _ => {}
            }
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    if let Some(f) = current.take() {
        p.files.push(f);
    }
    p
}

/// The file name of repltool's fragment in an include directory: after Debian's 50-server.cnf so
/// it wins, and before anything a DBA numbered 90+ on purpose.
pub const FRAGMENT_NAME: &str = "60-repltool.cnf";

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
        Some(d) => Some(ConfigTarget::Fragment(PathBuf::from(d).join(FRAGMENT_NAME))),
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
    let reachable: Vec<&Host> = topo
        .hosts
        .iter()
        .filter(|h| sessions.contains_key(&h.name))
        .collect();
    let observed = crate::par::each(&reachable, |h| {
        let m = sessions
            .get(&h.name)
            .ok_or_else(|| anyhow!("{}: no session", h.name))?;
        let mut sess = m.lock().unwrap_or_else(|e| e.into_inner());
        Ok(observe_host(topo, h, sess.as_mut(), timeout, with_config))
    });
    let mut facts: std::collections::HashMap<String, Facts> = reachable
        .iter()
        .zip(observed)
        .map(|(h, r)| {
            let f = r.unwrap_or_else(|e| Facts {
                host: h.name.clone(),
                sql: None,
                sql_error: Some(format!("{e:#}")),
                config: None,
            });
            (h.name.clone(), f)
        })
        .collect();
    for (name, e) in unreachable {
        facts.insert(
            name.clone(),
            Facts {
                host: name.clone(),
                sql: None,
                sql_error: Some(format!("{e:#}")),
                config: None,
            },
        );
    }
    facts
}

/// Observe one host: config facts over its shell, SQL facts over its server. A failure to reach
/// the server is recorded, not returned, so callers see every host.
pub fn observe_host(
    topo: &Topology,
    host: &Host,
    session: &mut dyn HostSession,
    timeout: Duration,
    with_config: bool,
) -> Facts {
    let mut facts = Facts {
        host: host.name.clone(),
        sql: None,
        sql_error: None,
        config: None,
    };
    if with_config {
        match config_facts(session, host) {
            Ok(c) => facts.config = Some(c),
            Err(e) => facts.sql_error = Some(format!("{e:#}")),
        }
    }
    match connect_sql(session, host, timeout).and_then(|mut c| sql_facts(&mut c, topo)) {
        Ok(s) => facts.sql = Some(s),
        Err(e) => {
            let prev = facts.sql_error.take();
            facts.sql_error = Some(match prev {
                Some(p) => format!("{p}; {e:#}"),
                None => format!("{e:#}"),
            })
        }
    }
    facts
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
    fn no_config_file_at_all() {
        assert_eq!(config_target(&parse_config_probe("@@PID1 bash\n")), None);
    }
}
