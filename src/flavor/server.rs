//! Server statements: what observe reads (variables, databases, users, grants), the session
//! setup, read-only and its deliberate write windows, dynamic settings, the replication user,
//! the snapshot lock and the cluster lock.

use anyhow::{bail, Result};

use super::sql::{quote, Sql, MASKED};
use super::{Flavor, Kind};
use crate::secret::Secret;

/// System schemas: never dumped, never counted as user data. `sys` exists on MySQL only, but a
/// MariaDB user database of that name would be very odd.
pub const SYSTEM_SCHEMAS: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

/// The column names of [`Flavor::variables_query`]'s one row.
pub struct ServerVars;

impl ServerVars {
    pub const VERSION: &'static str = "version";
    pub const SERVER_ID: &'static str = "server_id";
    pub const SERVER_UUID: &'static str = "server_uuid";
    pub const LOG_BIN: &'static str = "log_bin";
    pub const LOG_BIN_BASENAME: &'static str = "log_bin_basename";
    pub const BINLOG_FORMAT: &'static str = "binlog_format";
    pub const READ_ONLY: &'static str = "read_only";
    pub const SUPER_READ_ONLY: &'static str = "super_read_only";
    pub const LOG_SLAVE_UPDATES: &'static str = "log_slave_updates";
    pub const AUTO_INCREMENT_INCREMENT: &'static str = "auto_increment_increment";
    pub const AUTO_INCREMENT_OFFSET: &'static str = "auto_increment_offset";
    pub const GTID_EXECUTED: &'static str = "gtid_executed";
    pub const GTID_SLAVE_POS: &'static str = "gtid_slave_pos";
    pub const DATADIR: &'static str = "datadir";
    pub const LOG_ERROR: &'static str = "log_error";
    pub const BIND_ADDRESS: &'static str = "bind_address";
    pub const CLOCK: &'static str = "clock";
}

/// Names a dynamic variable may have in `SELECT @@GLOBAL.name`: letters, digits, `_`.
fn valid_var(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl Flavor {
    /// The query whose two columns [`Flavor::detect`] reads (before the flavor is known).
    pub fn detect_query() -> Sql {
        Sql::plain("SELECT @@version, @@version_comment")
    }

    /// Run first in each of repltool's sessions: [`super::quote`] escapes with backslashes,
    /// which NO_BACKSLASH_ESCAPES would turn into literal characters.
    pub fn session_setup() -> Sql {
        Sql::plain(
            "SET SESSION sql_mode = TRIM(BOTH ',' FROM REPLACE(CONCAT(',', @@SESSION.sql_mode, ','), \
             ',NO_BACKSLASH_ESCAPES,', ','))",
        )
    }

    /// A query that proves a login works and the server answers.
    pub fn ping() -> Sql {
        Sql::plain("SELECT 1")
    }

    /// One row of the variables observe reads, by the column names of [`ServerVars`]. MariaDB
    /// has no super_read_only and no server_uuid; MySQL has no gtid_slave_pos (returned as '').
    pub fn variables_query(&self) -> Sql {
        let (super_ro, uuid, slave_pos) = match self.kind {
            Kind::MySQL => ("@@GLOBAL.super_read_only", "@@GLOBAL.server_uuid", "''"),
            Kind::MariaDB => ("0", "''", "@@GLOBAL.gtid_slave_pos"),
        };
        Sql::plain(format!(
            "SELECT @@version AS version, @@version_comment AS version_comment, \
             @@GLOBAL.server_id AS server_id, {uuid} AS server_uuid, @@GLOBAL.log_bin AS log_bin, \
             @@GLOBAL.log_bin_basename AS log_bin_basename, \
             @@GLOBAL.binlog_format AS binlog_format, @@GLOBAL.read_only AS read_only, \
             {super_ro} AS super_read_only, @@GLOBAL.{} AS log_slave_updates, \
             @@GLOBAL.auto_increment_increment AS auto_increment_increment, \
             @@GLOBAL.auto_increment_offset AS auto_increment_offset, \
             {} AS gtid_executed, {slave_pos} AS gtid_slave_pos, \
             @@GLOBAL.datadir AS datadir, @@GLOBAL.log_error AS log_error, \
             @@GLOBAL.bind_address AS bind_address, UNIX_TIMESTAMP() AS clock",
            self.log_slave_updates_var(),
            self.gtid_executed_var(),
        ))
    }

    /// `SELECT @@GLOBAL.<name>`: one variable read back after a restart. Errors on a name that
    /// is not a plain variable name.
    pub fn global_var(&self, name: &str) -> Result<Sql> {
        if !valid_var(name) {
            bail!("not a variable name: {name:?}");
        }
        Ok(Sql::plain(format!("SELECT @@GLOBAL.{name}")))
    }

    /// Name of the log_slave_updates variable for this flavor/version.
    pub fn log_slave_updates_var(&self) -> &'static str {
        if self.is_mysql() && self.at_least(8, 0, 26) {
            "log_replica_updates"
        } else {
            "log_slave_updates"
        }
    }

    /// Every database but the system schemas (repltool's own included: a seed copies it, so
    /// the canary and promotion rows that follow replicate into existing tables): one
    /// `SCHEMA_NAME` column, sorted.
    pub fn databases_query(&self) -> Sql {
        let list: Vec<String> = SYSTEM_SCHEMAS.iter().map(|s| quote(s)).collect();
        // `#mysql50#.repltool-…`: the directories a physical seed keeps in a datadir (see
        // `physical`), which MariaDB lists as databases.
        Sql::plain(format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({}) \
             AND SCHEMA_NAME NOT LIKE '#mysql50#.repltool-%' ORDER BY SCHEMA_NAME",
            list.join(", ")
        ))
    }

    /// How many user tables are not transactional (a copy of them is consistent only under
    /// the read lock). Aria is crash-safe and MariaDB's own system tables use it.
    pub fn non_transactional_tables_query(&self) -> Sql {
        let list: Vec<String> = SYSTEM_SCHEMAS.iter().map(|s| quote(s)).collect();
        Sql::plain(format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_TYPE = 'BASE TABLE' \
             AND TABLE_SCHEMA NOT IN ({}) AND ENGINE NOT IN ('InnoDB', 'Aria')",
            list.join(", ")
        ))
    }

    /// Bytes of user data and indexes (what a seed copies, roughly).
    ///
    /// MySQL 8.0+ caches information_schema.TABLES' sizes and refreshes them only when a
    /// table's statistics are: freshly loaded tables read about 1 MiB for 256 MiB of data on
    /// MySQL 9.7, even with information_schema_stats_expiry = 0, so `seed: auto` chose a dump.
    /// There the size of the tables' own InnoDB files counts too (the larger of the two).
    pub fn data_size_query(&self) -> Sql {
        let list: Vec<String> = SYSTEM_SCHEMAS.iter().map(|s| quote(s)).collect();
        let tables = format!(
            "SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA NOT IN ({})",
            list.join(", ")
        );
        if self.is_mysql() && self.at_least(8, 0, 0) {
            return Sql::plain(format!(
                "SELECT GREATEST(({tables}), (SELECT COALESCE(SUM(FILE_SIZE), 0) FROM \
                 information_schema.INNODB_TABLESPACES WHERE SPACE_TYPE = 'Single' \
                 AND SUBSTRING_INDEX(NAME, '/', 1) NOT IN ({})))",
                list.join(", ")
            ));
        }
        Sql::plain(tables)
    }

    /// Hosts the replication user exists for: one `Host` column, sorted.
    pub fn repl_user_hosts_query(&self, user: &str) -> Sql {
        Sql::plain(format!(
            "SELECT Host FROM mysql.user WHERE User = {} ORDER BY Host",
            quote(user)
        ))
    }

    /// The grants of the account repltool logs in with.
    pub fn show_own_grants(&self) -> Sql {
        Sql::plain("SHOW GRANTS FOR CURRENT_USER()")
    }

    /// The global privileges the administrative account needs on this flavor, as SHOW GRANTS
    /// names them: each need is met by any one of its alternatives (all privileges of it),
    /// with what it is for. `ALL PRIVILEGES` meets every need; the account also needs WITH
    /// GRANT OPTION (it grants REPLICATION SLAVE to the replication user).
    pub fn admin_privileges(&self) -> Vec<(&'static [&'static [&'static str]], &'static str)> {
        let mut v: Vec<(&'static [&'static [&'static str]], &'static str)> = vec![
            (
                &[&["RELOAD"]],
                "FLUSH TABLES WITH READ LOCK for a consistent snapshot",
            ),
            (&[&["SELECT"]], "reading the data a seed copies"),
            (&[&["CREATE USER"]], "the replication user"),
            (
                &[&["PROCESS"]],
                "the seed dump and naming the holder of the cluster lock",
            ),
            (
                &[&["REPLICATION SLAVE"]],
                "granting it to the replication user",
            ),
        ];
        match self.kind {
            Kind::MySQL => {
                v.push((
                    &[
                        &["SUPER"],
                        &["SYSTEM_VARIABLES_ADMIN", "REPLICATION_SLAVE_ADMIN"],
                    ],
                    "read_only, super_read_only, CHANGE REPLICATION SOURCE, START/STOP REPLICA",
                ));
                v.push((
                    &[&["REPLICATION CLIENT"]],
                    "SHOW BINARY LOG STATUS and SHOW REPLICA STATUS",
                ));
            }
            Kind::MariaDB if self.at_least(10, 5, 2) => {
                v.push((
                    &[&["READ_ONLY ADMIN"]],
                    "repltool's own writes into a read-only server (read_only binds every \
                     other account from 10.11)",
                ));
                v.push((
                    &[&["SUPER"], &["REPLICATION SLAVE ADMIN"]],
                    "CHANGE MASTER, START/STOP SLAVE",
                ));
                v.push((
                    &[&["SUPER"], &["BINLOG MONITOR"]],
                    "SHOW MASTER STATUS and SHOW BINARY LOGS",
                ));
                v.push((&[&["SUPER"]], "SET GLOBAL read_only and the other settings"));
            }
            Kind::MariaDB => {
                v.push((&[&["SUPER"]], "read_only and replication"));
                v.push((&[&["REPLICATION CLIENT"]], "SHOW MASTER/SLAVE STATUS"));
            }
        }
        v
    }

    /// read_only on or off (MySQL also super_read_only).
    pub fn set_read_only(&self, on: bool) -> Vec<Sql> {
        let v = if on { "ON" } else { "OFF" };
        if self.is_mysql() {
            // super_read_only=ON implies read_only=ON and read_only=OFF implies
            // super_read_only=OFF; naming both in this order makes each statement's effect
            // explicit and leaves no window where SUPER users can write while turning on.
            if on {
                vec![
                    Sql::plain("SET GLOBAL read_only = ON"),
                    Sql::plain("SET GLOBAL super_read_only = ON"),
                ]
            } else {
                vec![
                    Sql::plain("SET GLOBAL super_read_only = OFF"),
                    Sql::plain("SET GLOBAL read_only = OFF"),
                ]
            }
        } else {
            vec![Sql::plain(format!("SET GLOBAL read_only = {v}"))]
        }
    }

    /// Open (`true`) or close a deliberate write window on a fenced server, for repltool's own
    /// writes (users, its schema, a seed load): MySQL's super_read_only binds every account,
    /// so it is lifted while read_only stays on (ordinary accounts stay fenced; only accounts
    /// with SUPER/CONNECTION_ADMIN could write meanwhile). MariaDB needs none: repltool's
    /// account has READ_ONLY ADMIN (`check` requires it).
    pub fn write_window(&self, open: bool) -> Vec<Sql> {
        match self.kind {
            Kind::MySQL => vec![Sql::plain(format!(
                "SET GLOBAL super_read_only = {}",
                if open { "OFF" } else { "ON" }
            ))],
            Kind::MariaDB => Vec::new(),
        }
    }

    /// Bound every lock wait of this session (FLUSH TABLES WITH READ LOCK, SET GLOBAL
    /// read_only, DDL): the server default is a year.
    pub fn lock_wait_timeout(&self, secs: u64) -> Sql {
        Sql::plain(format!(
            "SET SESSION lock_wait_timeout = {}",
            secs.clamp(1, 31_536_000)
        ))
    }

    /// Keep this session's writes out of the binary log (`false`) or log them again.
    pub fn session_binlog(&self, on: bool) -> Sql {
        Sql::plain(format!("SET SESSION sql_log_bin = {}", u8::from(on)))
    }

    /// server_id at runtime.
    pub fn set_server_id(&self, id: u32) -> Sql {
        Sql::plain(format!("SET GLOBAL server_id = {id}"))
    }

    /// binlog_format = ROW at runtime (new sessions).
    pub fn set_binlog_format_row(&self) -> Sql {
        Sql::plain("SET GLOBAL binlog_format = 'ROW'")
    }

    /// auto_increment_increment / auto_increment_offset (master-master), at runtime.
    pub fn set_auto_increment(&self, increment: u32, offset: u32) -> Vec<Sql> {
        vec![
            Sql::plain(format!("SET GLOBAL auto_increment_increment = {increment}")),
            Sql::plain(format!("SET GLOBAL auto_increment_offset = {offset}")),
        ]
    }

    /// The replication user on a master, least privilege (REPLICATION SLAVE only), restricted to
    /// one replica address: idempotent (CREATE USER IF NOT EXISTS, then ALTER USER to set the
    /// password, then GRANT). Kept out of the binary log: the statements carry the password in
    /// clear on MariaDB, and every server gets its own account from repltool anyway. MySQL 8
    /// users keep the server's default plugin (caching_sha2_password): the replica side copes
    /// with it (see `change_master`), and 8.4 disables mysql_native_password anyway.
    pub fn create_repl_user(&self, user: &str, host: &str, password: &Secret) -> Vec<Sql> {
        let account = format!("{}@{}", quote(user), quote(host));
        let pw = quote(password.expose());
        // ALTER USER after CREATE USER IF NOT EXISTS: the create is a no-op for an existing
        // account, so a changed password in the topology would otherwise never reach it.
        vec![
            self.session_binlog(false),
            Sql::masked(
                format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {pw}"),
                format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {MASKED}"),
            ),
            Sql::masked(
                format!("ALTER USER {account} IDENTIFIED BY {pw}"),
                format!("ALTER USER {account} IDENTIFIED BY {MASKED}"),
            ),
            Sql::plain(format!("GRANT REPLICATION SLAVE ON *.* TO {account}")),
            self.session_binlog(true),
        ]
    }

    /// Blocks every write and commit, server-wide, for as long as the issuing session holds it:
    /// the snapshot point of a seed and of a switchover. Release with [`Flavor::unlock_tables`]
    /// in the same session.
    pub fn flush_tables_with_read_lock(&self) -> Sql {
        Sql::plain("FLUSH TABLES WITH READ LOCK")
    }

    /// Releases [`Flavor::flush_tables_with_read_lock`].
    pub fn unlock_tables(&self) -> Sql {
        Sql::plain("UNLOCK TABLES")
    }

    /// Take the named cluster lock without waiting: 1 taken, 0 held by another session. It is
    /// released by [`Flavor::release_lock`] or when the session ends (a killed run included).
    pub fn get_lock(&self, name: &str) -> Sql {
        Sql::plain(format!("SELECT GET_LOCK({}, 0)", quote(name)))
    }

    /// Release the named lock.
    pub fn release_lock(&self, name: &str) -> Sql {
        Sql::plain(format!("SELECT RELEASE_LOCK({})", quote(name)))
    }

    /// Who holds the named lock: connection id, its user@host and for how long (no row: nobody,
    /// or the holder left meanwhile).
    pub fn lock_holder_query(&self, name: &str) -> Sql {
        Sql::plain(format!(
            "SELECT ID, USER, HOST, TIME FROM information_schema.PROCESSLIST \
             WHERE ID = IS_USED_LOCK({})",
            quote(name)
        ))
    }

    /// Sessions of application accounts on this server (not repltool's own, not replication
    /// threads): Id, User, Host.
    pub fn client_sessions_query(&self, own_user: &str) -> Sql {
        Sql::plain(format!(
            "SELECT ID, USER, HOST FROM information_schema.PROCESSLIST WHERE ID <> \
             CONNECTION_ID() AND USER NOT IN ({}, 'system user', 'event_scheduler') \
             AND COMMAND NOT IN ('Binlog Dump', 'Binlog Dump GTID', 'Daemon')",
            quote(own_user)
        ))
    }

    /// End one client session.
    pub fn kill_connection(&self, id: u64) -> Sql {
        Sql::plain(format!("KILL CONNECTION {id}"))
    }
}
