//! Physical copies of a server: the mariabackup programs (MariaDB: a `--stream=mbstream` backup
//! on the master, `mbstream -x` and `--prepare` on the slave) and the clone plugin (MySQL 8.0.17+:
//! `CLONE INSTANCE FROM` run on the recipient). Credentials come from a `--defaults-extra-file`
//! (mode 600) or travel masked in SQL, never on a command line.

use anyhow::{bail, Result};

use super::sql::{quote, Sql, MASKED};
use super::{Flavor, Kind};
use crate::secret::Secret;
use crate::transport::shell_quote;

/// Marks the lines of the backup's log that say when it took and released its locks; each is
/// written as `@repltool-t <unix time with nanoseconds> <the tool's line>`.
pub const STAGE_MARK: &str = "@repltool-t";

/// The physical copy a flavor makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhysicalCopy {
    /// mariabackup streamed from the master's host into the slave's (MariaDB).
    Mariabackup,
    /// The clone plugin: the recipient pulls the donor's files over the SQL port (MySQL).
    Clone,
}

impl Flavor {
    /// Which physical copy this flavor makes, or why none (MySQL before 8.0.17 has no clone).
    pub fn physical_copy(&self) -> Result<PhysicalCopy, String> {
        match self.kind {
            Kind::MariaDB => Ok(PhysicalCopy::Mariabackup),
            Kind::MySQL if self.at_least(8, 0, 17) => Ok(PhysicalCopy::Clone),
            Kind::MySQL => Err(format!(
                "{} has no clone plugin (MySQL 8.0.17 or later)",
                self.describe()
            )),
        }
    }

    /// The backup program: `mariadb-backup` from MariaDB 10.5 (`mariabackup` is a symlink),
    /// `mariabackup` before.
    pub fn backup_tool(&self) -> &'static str {
        if self.mariadb_tools() {
            "mariadb-backup"
        } else {
            "mariabackup"
        }
    }

    /// The programs a physical copy needs on the master's host and on a slave's host.
    pub fn backup_programs(&self) -> (&'static [&'static str], &'static [&'static str]) {
        match self.kind {
            Kind::MariaDB if self.mariadb_tools() => {
                (&["mariadb-backup"], &["mariadb-backup", "mbstream"])
            }
            Kind::MariaDB => (&["mariabackup"], &["mariabackup", "mbstream"]),
            Kind::MySQL => (&[], &[]),
        }
    }

    /// The full backup of the server on this host as an mbstream on stdout (run as root: it
    /// reads the datadir). Its log goes to `log`, the lines that take and release the backup
    /// locks marked with [`STAGE_MARK`] and the time, so the run can say how long writes were
    /// blocked. `datadir` is the server's own (`@@datadir`), so a host whose my.cnf describes
    /// another server copies the right files; `tmpdir` takes the tool's scratch files.
    ///
    /// MariaDB 10.4+ takes BACKUP STAGE locks: commits are blocked only during BLOCK_COMMIT, at
    /// the very end, while the tool reads the binary log position and the last of the redo log;
    /// DDL is blocked from BLOCK_DDL on (the copy of non-InnoDB files).
    pub fn backup_stream_command(
        &self,
        defaults_file: &str,
        datadir: &str,
        tmpdir: &str,
        log: &str,
    ) -> String {
        // stdout (fd 1) is the stream; the tool's stderr goes through a filter that timestamps
        // the stage lines (dash has no process substitution: fd 3 carries the stream past it).
        format!(
            "{{ {tool} --defaults-extra-file={def} --backup --stream=mbstream --datadir={dd} \
             --target-dir={tmp} 2>&1 1>&3 3>&- | while IFS= read -r l; do case \"$l\" in \
             *'BACKUP STAGE BLOCK_DDL'*|*'BACKUP STAGE BLOCK_COMMIT'*|*'BACKUP STAGE END'*|\
             *'All tables unlocked'*) printf '{STAGE_MARK} %s %s\\n' \"$(date +%s.%N)\" \"$l\";; \
             esac; printf '%s\\n' \"$l\"; done > {log}; }} 3>&1",
            tool = self.backup_tool(),
            def = shell_quote(defaults_file),
            dd = shell_quote(datadir),
            tmp = shell_quote(tmpdir),
            log = shell_quote(log),
        )
    }

    /// What the backup tool prints last when the backup is whole.
    pub fn backup_succeeded(&self, log: &str) -> bool {
        log.lines().any(|l| l.trim_end().ends_with("completed OK!"))
    }

    /// Unpack an mbstream read on stdin into `dir` (which must exist).
    pub fn backup_extract_command(&self, dir: &str) -> String {
        format!("mbstream -x -C {}", shell_quote(dir))
    }

    /// Make a copied backup consistent (apply its redo log): it can then be a datadir.
    pub fn backup_prepare_command(&self, dir: &str) -> String {
        format!(
            "{} --prepare --target-dir={}",
            self.backup_tool(),
            shell_quote(dir)
        )
    }

    /// The files of a backup that hold the master's binary log coordinates and GTID at the
    /// backup's consistent point (`FILE<TAB>POS<TAB>GTID`): MariaDB 10.11 writes the
    /// xtrabackup_ name, later versions the mariadb_backup_ one.
    pub fn backup_binlog_info_files(&self) -> &'static [&'static str] {
        &["mariadb_backup_binlog_info", "xtrabackup_binlog_info"]
    }

    /// Files a physical copy carries over from the master that must not reach a slave: the
    /// master's own replica configuration (a relay's master.info would make the new slave
    /// replicate from the relay's master at startup).
    pub fn backup_foreign_files(&self) -> &'static [&'static str] {
        &[
            "master.info",
            "relay-log.info",
            "multi-master.info",
            "master-*.info",
            "relay-log-*.info",
        ]
    }

    /// Files of the slave's own datadir a physical copy keeps: its identity (MySQL's
    /// auto.cnf holds server_uuid) and its own TLS keys.
    pub fn datadir_identity_files(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::MySQL => &[
                "auto.cnf",
                "ca-key.pem",
                "ca.pem",
                "client-cert.pem",
                "client-key.pem",
                "private_key.pem",
                "public_key.pem",
                "server-cert.pem",
                "server-key.pem",
            ],
            Kind::MariaDB => &[],
        }
    }

    /// Where the InnoDB files live, relative to the datadir: a physical copy replaces the
    /// datadir only, so any of them elsewhere refuses it. Columns: data_home, log_home,
    /// undo_dir (NULL or './' for "in the datadir").
    pub fn innodb_dirs_query(&self) -> Sql {
        Sql::plain(
            "SELECT @@GLOBAL.innodb_data_home_dir AS data_home, \
             @@GLOBAL.innodb_log_group_home_dir AS log_home, \
             @@GLOBAL.innodb_undo_directory AS undo_dir",
        )
    }

    // --- MySQL: the clone plugin ------------------------------------------------------------

    /// Whether the clone plugin is active: one row with `ACTIVE` when it is.
    pub fn clone_plugin_query(&self) -> Sql {
        Sql::plain(
            "SELECT PLUGIN_STATUS FROM information_schema.PLUGINS WHERE PLUGIN_NAME = 'clone'",
        )
    }

    /// Load the clone plugin (once per server; it stays registered in mysql.plugin). Kept out
    /// of the binary log: every server gets it from repltool itself.
    pub fn install_clone_plugin(&self) -> Vec<Sql> {
        vec![
            self.session_binlog(false),
            Sql::plain("INSTALL PLUGIN clone SONAME 'mysql_clone.so'"),
            self.session_binlog(true),
        ]
    }

    /// The one-time donor account a recipient clones with: BACKUP_ADMIN only, from the
    /// recipient's address only, kept out of the binary log (the donor's other replicas never
    /// see it). Dropped with [`Flavor::drop_clone_user`] when the clone is done.
    pub fn create_clone_user(&self, user: &str, host: &str, password: &Secret) -> Vec<Sql> {
        let account = format!("{}@{}", quote(user), quote(host));
        vec![
            self.session_binlog(false),
            Sql::plain(format!("DROP USER IF EXISTS {account}")),
            Sql::masked(
                format!(
                    "CREATE USER {account} IDENTIFIED BY {}",
                    quote(password.expose())
                ),
                format!("CREATE USER {account} IDENTIFIED BY {MASKED}"),
            ),
            Sql::plain(format!("GRANT BACKUP_ADMIN ON *.* TO {account}")),
            self.session_binlog(true),
        ]
    }

    /// Remove the one-time clone account (on the donor, and on the recipient, which got a copy
    /// of the donor's accounts).
    pub fn drop_clone_user(&self, user: &str, host: &str) -> Vec<Sql> {
        vec![
            self.session_binlog(false),
            Sql::plain(format!(
                "DROP USER IF EXISTS {}@{}",
                quote(user),
                quote(host)
            )),
            self.session_binlog(true),
        ]
    }

    /// The donors a recipient may clone from (`host:port`).
    pub fn set_clone_donor(&self, host: &str, port: u16) -> Sql {
        Sql::plain(format!(
            "SET GLOBAL clone_valid_donor_list = {}",
            quote(&format!("{host}:{port}"))
        ))
    }

    /// Clone the donor's data into `data_dir` on the recipient (a new directory: the
    /// recipient keeps running on its own data until repltool swaps the directories), or with
    /// `None` in place (the recipient's data is dropped and replaced, then the server restarts
    /// itself or, without a supervisor, stops: error 3707), without TLS unless asked (the
    /// donor's data then crosses the network in clear, as replication without `ssl:` does).
    pub fn clone_instance(
        &self,
        user: &str,
        host: &str,
        port: u16,
        password: &Secret,
        data_dir: Option<&str>,
        ssl: bool,
    ) -> Result<Sql> {
        let require = if ssl { "REQUIRE SSL" } else { "REQUIRE NO SSL" };
        let head = format!("CLONE INSTANCE FROM {}@{}:{port}", quote(user), quote(host));
        let tail = match data_dir {
            Some(d) if !d.starts_with('/') => {
                bail!("the clone's data directory must be an absolute path, not {d:?}")
            }
            Some(d) => format!("DATA DIRECTORY = {} {require}", quote(d)),
            None => require.to_string(),
        };
        Ok(Sql::masked(
            format!("{head} IDENTIFIED BY {} {tail}", quote(password.expose())),
            format!("{head} IDENTIFIED BY {MASKED} {tail}"),
        ))
    }

    /// The error an in-place clone ends with when no supervisor restarts the server: the
    /// clone completed and the server stops ("Restart server failed (mysqld is not managed by
    /// supervisor process)").
    pub const CLONE_NO_RESTART: u16 = 3707;

    /// Bytes the running clone has copied so far (its stages' DATA, summed).
    pub fn clone_progress_query(&self) -> Sql {
        Sql::plain("SELECT COALESCE(SUM(DATA), 0) FROM performance_schema.clone_progress")
    }

    /// The last clone's outcome on the recipient: STATE, ERROR_NO, ERROR_MESSAGE, and the
    /// donor's binary log coordinates and GTIDs at the clone's consistent point.
    pub fn clone_status_query(&self) -> Sql {
        Sql::plain(
            "SELECT STATE, ERROR_NO, ERROR_MESSAGE, BINLOG_FILE, BINLOG_POSITION, \
             GTID_EXECUTED, BEGIN_TIME, END_TIME FROM performance_schema.clone_status",
        )
    }
}
