//! Detected MySQL/MariaDB flavor + version -> every SQL statement repltool sends. Nothing outside
//! this module tests "is this MariaDB". See `dialects.md` in the design notes.

mod checks;

use anyhow::Result;

use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Kind {
    MySQL,
    MariaDB,
}

/// A server flavor and version, detected before any version number is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    pub kind: Kind,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// One SQL statement, with the text to send and the text to show (secrets masked as `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Sql {
    text: String,
    shown: String,
}

impl Sql {
    /// A statement with no secret in it.
    pub fn plain(text: impl Into<String>) -> Sql {
        let text = text.into();
        Sql {
            shown: text.clone(),
            text,
        }
    }
    /// A statement and its masked form.
    pub fn masked(text: String, shown: String) -> Sql {
        Sql { text, shown }
    }
    /// The text to send to the server. Only the executor and observe call this.
    pub fn text(&self) -> &str {
        &self.text
    }
    /// The text to print (secrets masked).
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Where a replica starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartAt {
    /// Binary log file and position.
    Position { file: String, pos: u64 },
    /// GTID auto-positioning (MySQL SOURCE_AUTO_POSITION=1, MariaDB MASTER_USE_GTID=slave_pos).
    Gtid,
}

/// Everything CHANGE MASTER TO / CHANGE REPLICATION SOURCE TO needs.
#[derive(Debug, Clone)]
pub struct ChangeMaster {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: Secret,
    pub start: StartAt,
    pub ssl: bool,
    /// Seconds between reconnect attempts.
    pub connect_retry: u32,
}

/// What goes into a server's managed configuration fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentSettings {
    pub host_name: String,
    pub server_id: u32,
    /// `report-host`: the address replicas and status tools see.
    pub report_host: String,
    /// `log-bin` base name (also `relay-log` gets `<base>-relay`): e.g. "mysql-bin".
    pub log_bin: String,
    pub relay_log: String,
    /// log_slave_updates / log_replica_updates (relays and master-master members).
    pub log_slave_updates: bool,
    /// (increment, offset) for master-master.
    pub auto_increment: Option<(u32, u32)>,
    /// GTID on (MySQL: gtid_mode=ON + enforce_gtid_consistency=ON; MariaDB: gtid_strict_mode=ON).
    pub gtid: bool,
}

impl Flavor {
    /// From `SELECT @@version, @@version_comment`. MariaDB is recognised by "MariaDB" in either
    /// string, before any number is compared (MariaDB 11.4 is not MySQL 8.0.23).
    pub fn detect(version: &str, version_comment: &str) -> Result<Flavor> {
        let _ = (version, version_comment);
        todo!()
    }

    /// Compare with a version of the same flavor: `self.at_least(8, 0, 23)`.
    pub fn at_least(&self, major: u32, minor: u32, patch: u32) -> bool {
        (self.major, self.minor, self.patch) >= (major, minor, patch)
    }

    /// Human form: "MariaDB 10.11.6", "MySQL 8.0.36".
    pub fn describe(&self) -> String {
        let k = match self.kind {
            Kind::MySQL => "MySQL",
            Kind::MariaDB => "MariaDB",
        };
        format!("{k} {}.{}.{}", self.major, self.minor, self.patch)
    }

    /// SHOW SLAVE STATUS / SHOW REPLICA STATUS.
    pub fn show_replica_status(&self) -> Sql {
        todo!()
    }
    /// SHOW MASTER STATUS / SHOW BINARY LOG STATUS (8.4).
    pub fn show_master_status(&self) -> Sql {
        todo!()
    }
    /// START SLAVE / START REPLICA.
    pub fn start_replica(&self) -> Sql {
        todo!()
    }
    /// STOP SLAVE / STOP REPLICA.
    pub fn stop_replica(&self) -> Sql {
        todo!()
    }
    /// STOP SLAVE IO_THREAD / STOP REPLICA IO_THREAD.
    pub fn stop_io_thread(&self) -> Sql {
        todo!()
    }
    /// START SLAVE SQL_THREAD / START REPLICA SQL_THREAD.
    pub fn start_sql_thread(&self) -> Sql {
        todo!()
    }
    /// RESET SLAVE ALL / RESET REPLICA ALL.
    pub fn reset_replica_all(&self) -> Sql {
        todo!()
    }
    /// CHANGE MASTER TO ... / CHANGE REPLICATION SOURCE TO ... (password masked in `shown`).
    pub fn change_master(&self, cm: &ChangeMaster) -> Sql {
        let _ = cm;
        todo!()
    }
    /// The replication user on a master, least privilege (REPLICATION SLAVE only), restricted to
    /// one replica address: idempotent (CREATE USER IF NOT EXISTS, then ALTER USER to set the
    /// password, then GRANT). MySQL 8 users get mysql_native_password where available? No:
    /// they keep the server default; the replica side handles caching_sha2 (see change_master).
    pub fn create_repl_user(&self, user: &str, host: &str, password: &Secret) -> Vec<Sql> {
        let _ = (user, host, password);
        todo!()
    }
    /// read_only on or off (MySQL also super_read_only).
    pub fn set_read_only(&self, on: bool) -> Vec<Sql> {
        let _ = on;
        todo!()
    }
    /// `SELECT MASTER_POS_WAIT(file, pos, timeout)` (SOURCE_POS_WAIT on MySQL 8.0.26+).
    pub fn pos_wait(&self, file: &str, pos: u64, timeout_secs: u32) -> Sql {
        let _ = (file, pos, timeout_secs);
        todo!()
    }
    /// Wait for a GTID set/position (MySQL WAIT_FOR_EXECUTED_GTID_SET, MariaDB MASTER_GTID_WAIT).
    pub fn gtid_wait(&self, gtid: &str, timeout_secs: u32) -> Sql {
        let _ = (gtid, timeout_secs);
        todo!()
    }
    /// The variable holding this server's executed GTIDs: @@gtid_executed / @@gtid_binlog_pos.
    pub fn gtid_executed_var(&self) -> &'static str {
        todo!()
    }
    /// The dump tool, its arguments for a consistent seed dump of all user databases (no
    /// coordinates: repltool takes them under its own lock), reading credentials from
    /// `--defaults-extra-file=FILE` (never on the command line).
    pub fn dump_command(&self, defaults_file: &str) -> String {
        let _ = defaults_file;
        todo!()
    }
    /// The dump of exactly `dbs` for seeding (see `dump_command`).
    pub fn dump_databases_command(&self, defaults_file: &str, dbs: &[String]) -> String {
        let _ = (defaults_file, dbs);
        todo!()
    }
    /// The command-line client, reading credentials from `--defaults-extra-file=FILE`.
    pub fn client_command(&self, defaults_file: &str) -> String {
        let _ = defaults_file;
        todo!()
    }
    /// The binary log reader (mariadb-binlog / mysqlbinlog).
    pub fn binlog_tool(&self) -> &'static str {
        todo!()
    }
    /// The managed fragment: a header saying repltool owns it, then `[mysqld]` settings,
    /// read_only=ON always (fencing: masters are made writable at runtime only).
    pub fn fragment(&self, s: &FragmentSettings) -> String {
        let _ = s;
        todo!()
    }
    /// Name of the log_slave_updates variable for this flavor/version.
    pub fn log_slave_updates_var(&self) -> &'static str {
        todo!()
    }
}

/// Quote a string as an SQL literal: `'...'` with `\` and `'` escaped. repltool's sessions clear
/// NO_BACKSLASH_ESCAPES from their sql_mode so this is always right.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x1a' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}
