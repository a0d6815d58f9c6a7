//! The programs repltool runs on hosts, in the flavor's names and options: the dump, the client
//! that loads it, the binary log reader. Credentials always come from a `--defaults-extra-file`
//! (mode 600), never from the command line.

use anyhow::{bail, Result};

use super::server::SYSTEM_SCHEMAS;
use super::Flavor;
use crate::transport::shell_quote;

impl Flavor {
    /// The dump tool and its options for a consistent seed, reading credentials from
    /// `--defaults-extra-file=FILE` (never on the command line): a prefix to which
    /// [`Flavor::dump_databases_command`] adds the databases.
    ///
    /// The snapshot point is set by repltool, not by the dump: another session holds FLUSH
    /// TABLES WITH READ LOCK and reads the coordinates, and `--single-transaction` opens the
    /// dump's consistent snapshot while that lock still stands, so the lock can be released as
    /// soon as the dump has started. Hence no `--master-data`/`--source-data` (it would take a
    /// second global lock) and no table locks. `--set-gtid-purged=OFF` (MySQL) because
    /// repltool seeds the GTID state itself ([`Flavor::seed_gtid`]); the dump's own SET
    /// @@GLOBAL.GTID_PURGED would fail on a replica with any GTID history. utf8mb4 because
    /// mysqldump 5.7 defaults to 3-byte utf8 and would mangle 4-byte characters; hex blobs so
    /// binary columns survive any client character set.
    pub fn dump_command(&self, defaults_file: &str) -> String {
        let tool = if self.mariadb_tools() {
            "mariadb-dump"
        } else {
            "mysqldump"
        };
        let mut cmd = format!(
            "{tool} --defaults-extra-file={} --single-transaction --skip-lock-tables \
             --routines --triggers --events --hex-blob --default-character-set=utf8mb4",
            shell_quote(defaults_file)
        );
        if self.is_mysql() {
            cmd.push_str(" --set-gtid-purged=OFF");
        }
        cmd
    }
    /// [`Flavor::dump_command`] for exactly these databases (never the `mysql` schema: loading
    /// it would overwrite the replica's own users). Errors on an empty list (nothing to copy)
    /// and on a name the dump tool would read as an option.
    ///
    /// The replica loading it must be writable for the load: super_read_only binds every
    /// account on MySQL, and on MariaDB 10.11 read_only binds SUPER too; turn read-only back
    /// on once loaded.
    pub fn dump_databases_command(&self, defaults_file: &str, dbs: &[String]) -> Result<String> {
        if dbs.is_empty() {
            bail!("no database to dump");
        }
        let mut cmd = self.dump_command(defaults_file);
        cmd.push_str(" --databases");
        for db in dbs {
            if db.starts_with('-') || db.is_empty() {
                bail!("cannot dump database {db:?}: the dump tool would read it as an option");
            }
            if SYSTEM_SCHEMAS.iter().any(|s| s.eq_ignore_ascii_case(db)) {
                bail!(
                    "refusing to dump system schema {db:?}: it would overwrite the replica's own"
                );
            }
            cmd.push(' ');
            cmd.push_str(&shell_quote(db));
        }
        Ok(cmd)
    }
    /// The command-line client, reading credentials from `--defaults-extra-file=FILE`.
    pub fn client_command(&self, defaults_file: &str) -> String {
        let tool = if self.mariadb_tools() {
            "mariadb"
        } else {
            "mysql"
        };
        format!(
            "{tool} --defaults-extra-file={}",
            shell_quote(defaults_file)
        )
    }
    /// The client that loads a seed dump on a replica. The load is kept out of the replica's
    /// binary log: it is a copy of the master's history, not new transactions, and logging it
    /// would mint GTIDs of the replica's own (errant transactions that break a later
    /// failover).
    pub fn load_command(&self, defaults_file: &str) -> String {
        format!(
            "{} {}",
            self.client_command(defaults_file),
            shell_quote("--init-command=SET SESSION sql_log_bin = 0")
        )
    }
    /// The binary log reader (mariadb-binlog / mysqlbinlog).
    pub fn binlog_tool(&self) -> &'static str {
        if self.mariadb_tools() {
            "mariadb-binlog"
        } else {
            "mysqlbinlog"
        }
    }

    /// The client on a replica's host logging in to its master with the credentials of the
    /// option file (the replication user): proves the account, the password and the network
    /// path from where the replica really runs.
    pub fn login_test_command(&self, defaults_file: &str, host: &str, port: u16) -> String {
        format!(
            "{} --host={} --port={port} --connect-timeout=5 -e {} 2>&1",
            self.client_command(defaults_file),
            shell_quote(host),
            shell_quote(Flavor::ping().text())
        )
    }
}
