//! Detected MySQL/MariaDB flavor + version -> every SQL statement repltool sends. Nothing outside
//! this module tests "is this MariaDB". See `dialects.md` in the design notes.

mod checks;

use anyhow::{bail, Result};

use crate::secret::Secret;
use crate::transport::shell_quote;

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
    /// `bind_address`, when the server must listen beyond loopback (Debian's default is
    /// 127.0.0.1, which no replica on another host can reach).
    pub bind_address: Option<String>,
}

/// How a MASTER_POS_WAIT / SOURCE_POS_WAIT / GTID wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    /// The position was reached.
    Reached,
    /// The timeout passed first.
    TimedOut,
    /// NULL: the replica's SQL thread is not running, or it replicates from nobody (or an
    /// argument was NULL); waiting longer would not help.
    NotReplicating,
}

/// System schemas: never dumped, never counted as user data. `sys` exists on MySQL only, but a
/// MariaDB user database of that name would be very odd.
pub const SYSTEM_SCHEMAS: [&str; 4] = ["mysql", "information_schema", "performance_schema", "sys"];

/// repltool's own schema (the canary table): replicated like user data, but not user data
/// (it does not make a server "hold data", and a seed does not need it).
pub const CANARY_SCHEMA: &str = "repltool";

/// The first line of every managed fragment: how `init` and a human recognise the file.
pub const FRAGMENT_HEADER: &str =
    "# Managed by repltool: do not edit; `repltool init` rewrites this file.";

impl FragmentSettings {
    /// Whether the fragment turns log_slave_updates on: when asked, and whenever GTID is on, so
    /// that a promoted replica's binary log holds the transactions its new replicas ask for by
    /// GTID (MariaDB answers error 1236 "GTID not in the master's binlog" otherwise).
    pub fn effective_log_slave_updates(&self) -> bool {
        self.log_slave_updates || self.gtid
    }
}

/// Builds the option list of CHANGE MASTER TO / CHANGE REPLICATION SOURCE TO twice: the text
/// to send and the text to show, which differ only in the password.
struct Options {
    text: Vec<String>,
    shown: Vec<String>,
}

impl Options {
    fn new() -> Options {
        Options {
            text: Vec::new(),
            shown: Vec::new(),
        }
    }
    fn push(&mut self, key: &str, value: impl std::fmt::Display) {
        let o = format!("{key}={value}");
        self.shown.push(o.clone());
        self.text.push(o);
    }
    fn push_secret(&mut self, key: &str, secret: &Secret) {
        self.text.push(format!("{key}={}", quote(secret.expose())));
        self.shown.push(format!("{key}={MASKED}"));
    }
    fn into_sql(self, head: &str) -> Sql {
        Sql::masked(
            format!("{head} {}", self.text.join(", ")),
            format!("{head} {}", self.shown.join(", ")),
        )
    }
}

/// How a password appears in shown SQL.
const MASKED: &str = "'***'";

/// `major.minor.patch` at the start of `s` ("10.11.6-MariaDB-0+deb12u1" -> (10, 11, 6)).
fn leading_version(s: &str) -> Option<(u32, u32, u32)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let mut parts = s[..end].split('.');
    let mut next = || -> Option<u32> {
        let p = parts.next()?;
        if p.is_empty() {
            return None;
        }
        p.parse().ok()
    };
    let v = (next()?, next()?, next()?);
    match parts.next() {
        None => Some(v),
        Some(_) => None,
    }
}

impl Flavor {
    /// From `SELECT @@version, @@version_comment`. MariaDB is recognised by "MariaDB" in either
    /// string, before any number is compared (MariaDB 11.4 is not MySQL 8.0.23).
    pub fn detect(version: &str, version_comment: &str) -> Result<Flavor> {
        let v = version.trim();
        let mariadb = v.to_ascii_lowercase().contains("mariadb")
            || version_comment.to_ascii_lowercase().contains("mariadb");
        // MariaDB 10.x before 11.0 reported "5.5.5-10.x.y-MariaDB" over the protocol so old
        // MySQL replicas would accept it; some proxies still pass that through as @@version.
        let numbers = match v.strip_prefix("5.5.5-") {
            Some(rest) if mariadb && rest.starts_with(|c: char| c.is_ascii_digit()) => rest,
            _ => v,
        };
        let Some((major, minor, patch)) = leading_version(numbers) else {
            bail!(
                "cannot read the server version from @@version {version:?} \
                 (@@version_comment {version_comment:?}): expected MAJOR.MINOR.PATCH"
            );
        };
        let kind = if mariadb { Kind::MariaDB } else { Kind::MySQL };
        Ok(Flavor {
            kind,
            major,
            minor,
            patch,
        })
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

    /// The query whose two columns [`Flavor::detect`] reads.
    pub fn detect_query() -> Sql {
        Sql::plain("SELECT @@version, @@version_comment")
    }

    /// Refuse versions whose SQL this module does not speak: MySQL before 5.7 (no
    /// super_read_only, no CREATE USER IF NOT EXISTS) and MariaDB before 10.2 (no ALTER USER).
    pub fn check_supported(&self) -> Result<()> {
        let ok = match self.kind {
            Kind::MySQL => self.at_least(5, 7, 8),
            Kind::MariaDB => self.at_least(10, 2, 0),
        };
        if !ok {
            bail!(
                "{} is not supported: repltool needs MySQL 5.7.8 or later, or MariaDB 10.2 or later",
                self.describe()
            );
        }
        Ok(())
    }

    fn is_mysql(&self) -> bool {
        self.kind == Kind::MySQL
    }

    /// REPLICA verbs (START/STOP/RESET/SHOW REPLICA) exist on MySQL 8.0.22+; 8.4 has no other.
    /// MariaDB keeps SLAVE: every 10.x understands it, REPLICA only from 10.5.1.
    fn replica_word(&self) -> &'static str {
        if self.is_mysql() && self.at_least(8, 0, 22) {
            "REPLICA"
        } else {
            "SLAVE"
        }
    }

    /// CHANGE REPLICATION SOURCE TO with SOURCE_* options: MySQL 8.0.23+ (8.4: the only form).
    fn source_syntax(&self) -> bool {
        self.is_mysql() && self.at_least(8, 0, 23)
    }

    /// MySQL 8.2 added the BINARY LOG forms of SHOW MASTER STATUS and RESET MASTER; 8.4
    /// removed the old ones.
    fn binary_log_syntax(&self) -> bool {
        self.is_mysql() && self.at_least(8, 2, 0)
    }

    /// MariaDB 10.5 made `mariadb*` the real program names (`mysql*` are symlinks that 11.x
    /// warns about); older MariaDB and every MySQL ship `mysql*`.
    fn mariadb_tools(&self) -> bool {
        self.kind == Kind::MariaDB && self.at_least(10, 5, 0)
    }

    /// SHOW SLAVE STATUS / SHOW REPLICA STATUS.
    pub fn show_replica_status(&self) -> Sql {
        Sql::plain(format!("SHOW {} STATUS", self.replica_word()))
    }
    /// SHOW MASTER STATUS / SHOW BINARY LOG STATUS (8.4).
    pub fn show_master_status(&self) -> Sql {
        if self.binary_log_syntax() {
            Sql::plain("SHOW BINARY LOG STATUS")
        } else {
            Sql::plain("SHOW MASTER STATUS")
        }
    }
    /// START SLAVE / START REPLICA.
    pub fn start_replica(&self) -> Sql {
        Sql::plain(format!("START {}", self.replica_word()))
    }
    /// STOP SLAVE / STOP REPLICA.
    pub fn stop_replica(&self) -> Sql {
        Sql::plain(format!("STOP {}", self.replica_word()))
    }
    /// STOP SLAVE IO_THREAD / STOP REPLICA IO_THREAD.
    pub fn stop_io_thread(&self) -> Sql {
        Sql::plain(format!("STOP {} IO_THREAD", self.replica_word()))
    }
    /// START SLAVE SQL_THREAD / START REPLICA SQL_THREAD.
    pub fn start_sql_thread(&self) -> Sql {
        Sql::plain(format!("START {} SQL_THREAD", self.replica_word()))
    }
    /// RESET SLAVE ALL / RESET REPLICA ALL.
    pub fn reset_replica_all(&self) -> Sql {
        Sql::plain(format!("RESET {} ALL", self.replica_word()))
    }
    /// CHANGE MASTER TO ... / CHANGE REPLICATION SOURCE TO ... (password masked in `shown`).
    pub fn change_master(&self, cm: &ChangeMaster) -> Sql {
        let source = self.source_syntax();
        let p = if source { "SOURCE" } else { "MASTER" };
        let mut o = Options::new();
        o.push(&format!("{p}_HOST"), quote(&cm.host));
        o.push(&format!("{p}_PORT"), cm.port);
        o.push(&format!("{p}_USER"), quote(&cm.user));
        o.push_secret(&format!("{p}_PASSWORD"), &cm.password);
        match (&cm.start, self.kind) {
            (StartAt::Position { file, pos }, Kind::MySQL) => {
                o.push(&format!("{p}_LOG_FILE"), quote(file));
                o.push(&format!("{p}_LOG_POS"), pos);
                // A channel that used auto-positioning refuses a file/position unless the same
                // statement turns it off (ER_BAD_REPLICA_AUTO_POSITION).
                o.push(&format!("{p}_AUTO_POSITION"), 0);
            }
            (StartAt::Position { file, pos }, Kind::MariaDB) => {
                o.push("MASTER_LOG_FILE", quote(file));
                o.push("MASTER_LOG_POS", pos);
                // 10.10+ defaults a fresh replica to slave_pos and would ignore the coordinates
                // (MDEV-19801); older versions accept the explicit `no` as well.
                o.push("MASTER_USE_GTID", "no");
            }
            (StartAt::Gtid, Kind::MySQL) => o.push(&format!("{p}_AUTO_POSITION"), 1),
            (StartAt::Gtid, Kind::MariaDB) => o.push("MASTER_USE_GTID", "slave_pos"),
        }
        // Said both ways so that turning TLS off in the topology converges too (and MariaDB
        // versions that default MASTER_SSL to 1 do not try TLS against a server without it).
        o.push(&format!("{p}_SSL"), u8::from(cm.ssl));
        if self.is_mysql() && self.major >= 8 && !cm.ssl {
            // caching_sha2_password (MySQL 8's default) needs TLS or the source's RSA key for a
            // replica that never logged in before; without it the IO thread fails with 2061.
            if source {
                o.push("GET_SOURCE_PUBLIC_KEY", 1);
            } else {
                o.push("GET_MASTER_PUBLIC_KEY", 1);
            }
        }
        o.push(&format!("{p}_CONNECT_RETRY"), cm.connect_retry);
        let head = if source {
            "CHANGE REPLICATION SOURCE TO"
        } else {
            "CHANGE MASTER TO"
        };
        o.into_sql(head)
    }
    /// The replication user on a master, least privilege (REPLICATION SLAVE only), restricted to
    /// one replica address: idempotent (CREATE USER IF NOT EXISTS, then ALTER USER to set the
    /// password, then GRANT). MySQL 8 users keep the server's default plugin
    /// (caching_sha2_password): the replica side copes with it (see `change_master`), and
    /// 8.4 disables mysql_native_password anyway.
    pub fn create_repl_user(&self, user: &str, host: &str, password: &Secret) -> Vec<Sql> {
        let account = format!("{}@{}", quote(user), quote(host));
        let pw = quote(password.expose());
        // ALTER USER after CREATE USER IF NOT EXISTS: the create is a no-op for an existing
        // account, so a changed password in the topology would otherwise never reach it.
        vec![
            Sql::masked(
                format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {pw}"),
                format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY {MASKED}"),
            ),
            Sql::masked(
                format!("ALTER USER {account} IDENTIFIED BY {pw}"),
                format!("ALTER USER {account} IDENTIFIED BY {MASKED}"),
            ),
            Sql::plain(format!("GRANT REPLICATION SLAVE ON *.* TO {account}")),
        ]
    }
    /// Hosts the replication user exists for: one `Host` column, sorted.
    pub fn repl_user_hosts_query(&self, user: &str) -> Sql {
        Sql::plain(format!(
            "SELECT Host FROM mysql.user WHERE User = {} ORDER BY Host",
            quote(user)
        ))
    }
    /// read_only on or off (MySQL also super_read_only).
    pub fn set_read_only(&self, on: bool) -> Vec<Sql> {
        let v = if on { "ON" } else { "OFF" };
        if self.is_mysql() && self.at_least(5, 7, 8) {
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
    /// `SELECT MASTER_POS_WAIT(file, pos, timeout)` (SOURCE_POS_WAIT on MySQL 8.0.26+).
    pub fn pos_wait(&self, file: &str, pos: u64, timeout_secs: u32) -> Sql {
        let f = if self.is_mysql() && self.at_least(8, 0, 26) {
            "SOURCE_POS_WAIT"
        } else {
            "MASTER_POS_WAIT"
        };
        // A timeout of 0 means "wait forever" to some versions: every wait has a limit.
        let t = timeout_secs.max(1);
        Sql::plain(format!("SELECT {f}({}, {pos}, {t})", quote(file)))
    }
    /// Wait for a GTID set/position (MySQL WAIT_FOR_EXECUTED_GTID_SET, MariaDB MASTER_GTID_WAIT).
    pub fn gtid_wait(&self, gtid: &str, timeout_secs: u32) -> Sql {
        let f = match self.kind {
            Kind::MySQL => "WAIT_FOR_EXECUTED_GTID_SET",
            Kind::MariaDB => "MASTER_GTID_WAIT",
        };
        let t = timeout_secs.max(1);
        Sql::plain(format!("SELECT {f}({}, {t})", quote(gtid)))
    }
    /// Read the single value [`Flavor::pos_wait`] returns: the number of events waited for
    /// (>= 0), -1 on timeout, NULL when not replicating.
    pub fn pos_wait_outcome(&self, value: Option<i64>) -> WaitOutcome {
        match value {
            None => WaitOutcome::NotReplicating,
            Some(v) if v >= 0 => WaitOutcome::Reached,
            Some(_) => WaitOutcome::TimedOut,
        }
    }
    /// Read the single value [`Flavor::gtid_wait`] returns: 0 when reached; a timeout is 1 on
    /// MySQL and -1 on MariaDB.
    pub fn gtid_wait_outcome(&self, value: Option<i64>) -> WaitOutcome {
        match value {
            None => WaitOutcome::NotReplicating,
            Some(0) => WaitOutcome::Reached,
            Some(_) => WaitOutcome::TimedOut,
        }
    }
    /// The variable holding this server's executed GTIDs: @@gtid_executed / @@gtid_binlog_pos.
    pub fn gtid_executed_var(&self) -> &'static str {
        match self.kind {
            Kind::MySQL => "@@GLOBAL.gtid_executed",
            Kind::MariaDB => "@@GLOBAL.gtid_binlog_pos",
        }
    }
    /// Make a freshly seeded replica start after the GTIDs its data already contains (the
    /// master's executed set read under the snapshot lock). MySQL needs an empty gtid_executed
    /// for that, hence the reset of the replica's own binary logs first (with super_read_only
    /// off: both write mysql.gtid_executed); MariaDB needs the replica threads stopped.
    pub fn seed_gtid(&self, gtid: &str) -> Vec<Sql> {
        match self.kind {
            Kind::MySQL => vec![
                self.reset_binary_logs(),
                Sql::plain(format!("SET GLOBAL gtid_purged = {}", quote(gtid))),
            ],
            Kind::MariaDB => vec![Sql::plain(format!(
                "SET GLOBAL gtid_slave_pos = {}",
                quote(gtid)
            ))],
        }
    }
    /// MariaDB: the GTID position matching binary log coordinates (`BINLOG_GTID_POS`); MySQL
    /// has no such function (None).
    pub fn binlog_gtid_pos(&self, file: &str, pos: u64) -> Option<Sql> {
        match self.kind {
            Kind::MySQL => None,
            Kind::MariaDB => Some(Sql::plain(format!(
                "SELECT BINLOG_GTID_POS({}, {pos})",
                quote(file)
            ))),
        }
    }
    /// RESET MASTER / RESET BINARY LOGS AND GTIDS (MySQL 8.2+): wipes this server's binary
    /// logs. Only for a server being seeded as a fresh replica.
    pub fn reset_binary_logs(&self) -> Sql {
        if self.binary_log_syntax() {
            Sql::plain("RESET BINARY LOGS AND GTIDS")
        } else {
            Sql::plain("RESET MASTER")
        }
    }
    /// SHOW BINARY LOGS (every version; the MASTER LOGS synonym is gone in 8.4).
    pub fn show_binary_logs(&self) -> Sql {
        Sql::plain("SHOW BINARY LOGS")
    }
    /// SHOW SLAVE HOSTS / SHOW REPLICAS (MySQL 8.0.22+): replicas registered on this source.
    pub fn show_replicas(&self) -> Sql {
        if self.is_mysql() && self.at_least(8, 0, 22) {
            Sql::plain("SHOW REPLICAS")
        } else {
            Sql::plain("SHOW SLAVE HOSTS")
        }
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
    /// Run first in each of repltool's sessions: [`quote`] escapes with backslashes, which
    /// NO_BACKSLASH_ESCAPES would turn into literal characters.
    pub fn session_setup(&self) -> Sql {
        Sql::plain(
            "SET SESSION sql_mode = TRIM(BOTH ',' FROM REPLACE(CONCAT(',', @@SESSION.sql_mode, ','), \
             ',NO_BACKSLASH_ESCAPES,', ','))",
        )
    }
    /// The dynamic settings a fragment change can apply without a restart.
    pub fn set_server_id(&self, id: u32) -> Sql {
        Sql::plain(format!("SET GLOBAL server_id = {id}"))
    }
    /// auto_increment_increment / auto_increment_offset (master-master), at runtime.
    pub fn set_auto_increment(&self, increment: u32, offset: u32) -> Vec<Sql> {
        vec![
            Sql::plain(format!("SET GLOBAL auto_increment_increment = {increment}")),
            Sql::plain(format!("SET GLOBAL auto_increment_offset = {offset}")),
        ]
    }
    /// One row of the variables observe reads, by column name. MariaDB has no super_read_only
    /// and no gtid_executed; MySQL has no gtid_slave_pos (returned as '').
    pub fn variables_query(&self) -> Sql {
        let (super_ro, slave_pos) = match self.kind {
            Kind::MySQL => ("@@GLOBAL.super_read_only", "''"),
            Kind::MariaDB => ("0", "@@GLOBAL.gtid_slave_pos"),
        };
        Sql::plain(format!(
            "SELECT @@version AS version, @@version_comment AS version_comment, \
             @@GLOBAL.server_id AS server_id, @@GLOBAL.log_bin AS log_bin, \
             @@GLOBAL.binlog_format AS binlog_format, @@GLOBAL.read_only AS read_only, \
             {super_ro} AS super_read_only, @@GLOBAL.{} AS log_slave_updates, \
             @@GLOBAL.auto_increment_increment AS auto_increment_increment, \
             @@GLOBAL.auto_increment_offset AS auto_increment_offset, \
             {} AS gtid_executed, {slave_pos} AS gtid_slave_pos, \
             @@GLOBAL.datadir AS datadir, @@GLOBAL.log_error AS log_error, \
             UNIX_TIMESTAMP() AS clock",
            self.log_slave_updates_var(),
            self.gtid_executed_var(),
        ))
    }
    /// The databases a seed copies and whose presence means "this server holds data" (neither
    /// system schemas nor [`CANARY_SCHEMA`]): one `SCHEMA_NAME` column, sorted.
    pub fn user_databases_query(&self) -> Sql {
        let list: Vec<String> = SYSTEM_SCHEMAS
            .iter()
            .chain(std::iter::once(&CANARY_SCHEMA))
            .map(|s| quote(s))
            .collect();
        Sql::plain(format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME NOT IN ({}) \
             ORDER BY SCHEMA_NAME",
            list.join(", ")
        ))
    }
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
    /// The managed fragment: a header saying repltool owns it, then `[mysqld]` settings,
    /// read_only=ON always (fencing: masters are made writable at runtime only).
    pub fn fragment(&self, s: &FragmentSettings) -> String {
        let mut out = String::new();
        let mut line = |l: String| {
            out.push_str(&l);
            out.push('\n');
        };
        line(FRAGMENT_HEADER.to_string());
        line(format!("# host: {}", s.host_name));
        line("[mysqld]".to_string());
        line(format!("server_id = {}", s.server_id));
        if !s.log_bin.is_empty() {
            line(format!("log_bin = {}", s.log_bin));
        }
        // MariaDB defaults to MIXED; ROW everywhere makes replicas apply exactly what ran.
        line("binlog_format = ROW".to_string());
        if !s.relay_log.is_empty() {
            line(format!("relay_log = {}", s.relay_log));
        }
        if !s.report_host.is_empty() {
            line(format!("report_host = {}", s.report_host));
        }
        if let Some(b) = &s.bind_address {
            line(format!("bind_address = {b}"));
        }
        // Fencing: a server that restarts (a master that died and came back included) must
        // not take writes until repltool says so. skip_slave_start is deliberately NOT set: a
        // read-only replica that restarts should resume replicating on its own.
        line("read_only = ON".to_string());
        if self.is_mysql() && self.at_least(5, 7, 8) {
            // read_only alone lets SUPER accounts write, and applications do use them.
            line("super_read_only = ON".to_string());
        }
        if s.effective_log_slave_updates() {
            line(format!("{} = ON", self.log_slave_updates_var()));
        }
        if let Some((increment, offset)) = s.auto_increment {
            line(format!("auto_increment_increment = {increment}"));
            line(format!("auto_increment_offset = {offset}"));
        }
        if s.gtid {
            match self.kind {
                Kind::MySQL => {
                    line("gtid_mode = ON".to_string());
                    line("enforce_gtid_consistency = ON".to_string());
                }
                Kind::MariaDB => {
                    line("gtid_strict_mode = ON".to_string());
                    if s.auto_increment.is_some() {
                        // Two writable masters in one GTID domain produce out-of-order sequence
                        // numbers, which strict mode stops replication on: each writer gets a
                        // domain of its own.
                        line(format!("gtid_domain_id = {}", s.server_id));
                    }
                }
            }
        }
        if self.is_mysql() && !self.at_least(8, 0, 0) {
            // 5.7 keeps replica positions in files by default, which a crash leaves behind the
            // data; 8.0 defaults to TABLE and 8.4 refuses to start with these options at all.
            line("master_info_repository = TABLE".to_string());
            line("relay_log_info_repository = TABLE".to_string());
        }
        out
    }
    /// Name of the log_slave_updates variable for this flavor/version.
    pub fn log_slave_updates_var(&self) -> &'static str {
        if self.is_mysql() && self.at_least(8, 0, 26) {
            "log_replica_updates"
        } else {
            "log_slave_updates"
        }
    }
    /// The canary proving replication end to end: written on the master, read on each replica.
    pub fn canary_setup(&self) -> Vec<Sql> {
        vec![
            Sql::plain(format!("CREATE DATABASE IF NOT EXISTS {CANARY_SCHEMA}")),
            Sql::plain(format!(
                "CREATE TABLE IF NOT EXISTS {CANARY_SCHEMA}.canary (id INT PRIMARY KEY, \
                 token VARCHAR(64) NOT NULL, written_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) \
                 ENGINE=InnoDB"
            )),
        ]
    }
    /// Write a fresh canary token on the master.
    pub fn canary_write(&self, token: &str) -> Sql {
        Sql::plain(format!(
            "REPLACE INTO {CANARY_SCHEMA}.canary (id, token) VALUES (1, {})",
            quote(token)
        ))
    }
    /// Read the canary token on a replica (no row: not arrived yet).
    pub fn canary_read(&self) -> Sql {
        Sql::plain(format!(
            "SELECT token FROM {CANARY_SCHEMA}.canary WHERE id = 1"
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn f(version: &str, comment: &str) -> Flavor {
        Flavor::detect(version, comment).unwrap()
    }

    #[test]
    fn detect_mariadb_before_numbers() {
        for (v, c, want) in [
            ("10.11.6-MariaDB-0+deb12u1", "Debian 12", (10, 11, 6)),
            (
                "5.5.5-10.11.6-MariaDB",
                "mariadb.org binary distribution",
                (10, 11, 6),
            ),
            ("11.4.2-MariaDB", "MariaDB Server", (11, 4, 2)),
            ("5.5.68-MariaDB", "MariaDB Server", (5, 5, 68)),
            // A build whose version string lost the suffix is still recognised by its comment.
            ("10.6.16", "MariaDB Server", (10, 6, 16)),
        ] {
            let fl = f(v, c);
            assert_eq!(fl.kind, Kind::MariaDB, "{v}");
            assert_eq!((fl.major, fl.minor, fl.patch), want, "{v}");
        }
        // MariaDB 11.4 must not take MySQL 8.0.23+ paths.
        let m = f("11.4.2-MariaDB", "");
        assert_eq!(m.show_replica_status().shown(), "SHOW SLAVE STATUS");
        assert_eq!(m.log_slave_updates_var(), "log_slave_updates");
    }

    #[test]
    fn detect_mysql_and_refuse_garbage() {
        let m = f("8.0.36", "MySQL Community Server - GPL");
        assert_eq!((m.kind, m.major, m.minor, m.patch), (Kind::MySQL, 8, 0, 36));
        let m = f("8.4.0-commercial", "MySQL Enterprise Server - Commercial");
        assert_eq!((m.kind, m.major, m.minor, m.patch), (Kind::MySQL, 8, 4, 0));
        let m = f("5.7.44-log", "MySQL Community Server (GPL)");
        assert_eq!(m.describe(), "MySQL 5.7.44");
        // The 5.5.5- prefix is only MariaDB's: a MySQL 5.5.5 stays 5.5.5.
        assert_eq!(f("5.5.5-log", "MySQL").describe(), "MySQL 5.5.5");
        for bad in [
            "",
            "garbage",
            "8",
            "8.0",
            "8.0.",
            "8.x.1",
            "1.2.3.4",
            "99999999999.0.0",
        ] {
            assert!(Flavor::detect(bad, "MySQL").is_err(), "{bad:?}");
        }
        assert!(Flavor::detect("MariaDB", "MariaDB").is_err());
    }

    #[test]
    fn supported_versions() {
        assert!(f("5.7.44", "").check_supported().is_ok());
        assert!(f("5.6.51", "").check_supported().is_err());
        assert!(f("10.1.48-MariaDB", "").check_supported().is_err());
        assert!(f("10.11.6-MariaDB", "").check_supported().is_ok());
    }

    #[test]
    fn quote_escapes_what_would_end_or_bend_the_literal() {
        assert_eq!(quote("plain"), "'plain'");
        assert_eq!(quote(r#"p'a"s;s \w rd"#), r#"'p\'a"s;s \\w rd'"#);
        assert_eq!(quote("a\nb\0c\r\x1a"), r"'a\nb\0c\r\Z'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn verbs_follow_versions() {
        let v57 = f("5.7.44", "");
        let v22 = f("8.0.22", "");
        let v23 = f("8.0.23", "");
        let v84 = f("8.4.0", "");
        assert_eq!(v57.start_replica().text(), "START SLAVE");
        assert_eq!(v22.start_replica().text(), "START REPLICA");
        assert_eq!(v22.show_master_status().text(), "SHOW MASTER STATUS");
        assert_eq!(v84.show_master_status().text(), "SHOW BINARY LOG STATUS");
        assert_eq!(
            v84.reset_binary_logs().text(),
            "RESET BINARY LOGS AND GTIDS"
        );
        assert!(v23.pos_wait("b.1", 4, 5).text().contains("MASTER_POS_WAIT"));
        assert!(f("8.0.26", "")
            .pos_wait("b.1", 4, 5)
            .text()
            .contains("SOURCE_POS_WAIT"));
        // Every wait has a limit: 0 would mean forever on some versions.
        assert!(v57.pos_wait("b.1", 4, 0).text().ends_with(", 4, 1)"));
        assert_eq!(f("8.0.25", "").log_slave_updates_var(), "log_slave_updates");
        assert_eq!(
            f("8.0.26", "").log_slave_updates_var(),
            "log_replica_updates"
        );
    }

    fn cm(start: StartAt, ssl: bool) -> ChangeMaster {
        ChangeMaster {
            host: "127.0.0.1".into(),
            port: 3306,
            user: "repl".into(),
            password: Secret::new(r#"p'a"s;s \w rd"#),
            start,
            ssl,
            connect_retry: 10,
        }
    }

    #[test]
    fn change_master_masks_and_escapes_the_password() {
        let pos = StartAt::Position {
            file: "mysql-bin.000002".into(),
            pos: 1234,
        };
        for v in ["5.7.44", "8.0.22", "8.0.36", "8.4.0", "10.11.6-MariaDB"] {
            let s = f(v, "").change_master(&cm(pos.clone(), false));
            assert!(
                s.text().contains(r#"PASSWORD='p\'a"s;s \\w rd'"#),
                "{v}: {}",
                s.text()
            );
            assert!(!s.shown().contains("s;s"), "{v}: {}", s.shown());
            assert!(s.shown().contains("PASSWORD='***'"), "{v}");
            assert!(!format!("{s} {s:?}").contains("s;s"));
        }
    }

    #[test]
    fn change_master_per_version() {
        let pos = StartAt::Position {
            file: "mysql-bin.000002".into(),
            pos: 1234,
        };
        let maria = f("10.11.6-MariaDB", "").change_master(&cm(pos.clone(), false));
        assert!(maria
            .text()
            .starts_with("CHANGE MASTER TO MASTER_HOST='127.0.0.1'"));
        assert!(maria.text().contains("MASTER_USE_GTID=no"));
        assert!(!maria.text().contains("PUBLIC_KEY"));
        let maria = f("10.11.6-MariaDB", "").change_master(&cm(StartAt::Gtid, true));
        assert!(maria.text().contains("MASTER_USE_GTID=slave_pos"));
        assert!(maria.text().contains("MASTER_SSL=1"));
        assert!(!maria.text().contains("LOG_FILE"));

        let v22 = f("8.0.22", "").change_master(&cm(StartAt::Gtid, false));
        assert!(v22.text().starts_with("CHANGE MASTER TO"));
        assert!(v22.text().contains("MASTER_AUTO_POSITION=1"));
        assert!(v22.text().contains("GET_MASTER_PUBLIC_KEY=1"));

        let v23 = f("8.0.23", "").change_master(&cm(pos.clone(), false));
        assert!(v23
            .text()
            .starts_with("CHANGE REPLICATION SOURCE TO SOURCE_HOST="));
        assert!(v23.text().contains("GET_SOURCE_PUBLIC_KEY=1"));
        assert!(v23.text().contains("SOURCE_AUTO_POSITION=0"));
        assert!(!v23.text().contains("MASTER_"));

        let v84 = f("8.4.0", "").change_master(&cm(StartAt::Gtid, true));
        assert!(v84.text().contains("SOURCE_SSL=1"));
        assert!(!v84.text().contains("PUBLIC_KEY"));
        assert!(!v84.text().contains("MASTER"));

        let v57 = f("5.7.44", "").change_master(&cm(pos, false));
        assert!(!v57.text().contains("PUBLIC_KEY"));
        assert!(v57.text().contains("MASTER_CONNECT_RETRY=10"));
    }

    #[test]
    fn repl_user_is_idempotent_least_privilege_and_masked() {
        let sqls = f("8.0.36", "").create_repl_user("repl", "10.0.0.%", &Secret::new("x'y"));
        assert_eq!(sqls.len(), 3);
        assert_eq!(
            sqls[0].text(),
            r"CREATE USER IF NOT EXISTS 'repl'@'10.0.0.%' IDENTIFIED BY 'x\'y'"
        );
        assert_eq!(
            sqls[1].shown(),
            "ALTER USER 'repl'@'10.0.0.%' IDENTIFIED BY '***'"
        );
        assert_eq!(
            sqls[2].text(),
            "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'10.0.0.%'"
        );
    }

    #[test]
    fn read_only_order() {
        let on: Vec<String> = f("8.0.36", "")
            .set_read_only(true)
            .iter()
            .map(|s| s.text().to_string())
            .collect();
        assert_eq!(
            on,
            [
                "SET GLOBAL read_only = ON",
                "SET GLOBAL super_read_only = ON"
            ]
        );
        let off: Vec<String> = f("5.7.44", "")
            .set_read_only(false)
            .iter()
            .map(|s| s.text().to_string())
            .collect();
        assert_eq!(
            off,
            [
                "SET GLOBAL super_read_only = OFF",
                "SET GLOBAL read_only = OFF"
            ]
        );
        let maria = f("10.11.6-MariaDB", "").set_read_only(false);
        assert_eq!(maria.len(), 1);
        assert_eq!(maria[0].text(), "SET GLOBAL read_only = OFF");
    }

    #[test]
    fn wait_outcomes() {
        let my = f("8.0.36", "");
        let ma = f("10.11.6-MariaDB", "");
        assert_eq!(my.pos_wait_outcome(Some(0)), WaitOutcome::Reached);
        assert_eq!(my.pos_wait_outcome(Some(-1)), WaitOutcome::TimedOut);
        assert_eq!(my.pos_wait_outcome(None), WaitOutcome::NotReplicating);
        assert_eq!(my.gtid_wait_outcome(Some(1)), WaitOutcome::TimedOut);
        assert_eq!(ma.gtid_wait_outcome(Some(-1)), WaitOutcome::TimedOut);
        assert_eq!(ma.gtid_wait_outcome(Some(0)), WaitOutcome::Reached);
    }

    #[test]
    fn dump_never_takes_system_schemas_and_quotes_names() {
        let ma = f("10.11.6-MariaDB", "");
        let cmd = ma
            .dump_databases_command("/tmp/my defaults.cnf", &["shop".into(), "a b".into()])
            .unwrap();
        assert!(
            cmd.starts_with("mariadb-dump --defaults-extra-file='/tmp/my defaults.cnf' "),
            "{cmd}"
        );
        assert!(cmd.ends_with(" --databases shop 'a b'"), "{cmd}");
        assert!(!cmd.contains("master-data"));
        assert!(ma.dump_databases_command("/f", &[]).is_err());
        assert!(ma.dump_databases_command("/f", &["mysql".into()]).is_err());
        assert!(ma
            .dump_databases_command("/f", &["--all-databases".into()])
            .is_err());
        let my = f("5.7.44", "").dump_command("/f");
        assert!(
            my.starts_with("mysqldump --defaults-extra-file=/f "),
            "{my}"
        );
        assert!(my.contains("--set-gtid-purged=OFF"));
        assert!(f("10.4.30-MariaDB", "")
            .client_command("/f")
            .starts_with("mysql "));
        assert_eq!(f("11.4.2-MariaDB", "").binlog_tool(), "mariadb-binlog");
        assert!(ma
            .load_command("/f")
            .contains("'--init-command=SET SESSION sql_log_bin = 0'"));
    }

    fn settings() -> FragmentSettings {
        FragmentSettings {
            host_name: "db2".into(),
            server_id: 2,
            report_host: "127.0.0.2".into(),
            log_bin: "mysql-bin".into(),
            relay_log: "mysql-relay".into(),
            log_slave_updates: false,
            auto_increment: None,
            gtid: false,
            bind_address: None,
        }
    }

    #[test]
    fn fragment_fences_and_never_skips_slave_start() {
        for v in ["5.7.44", "8.0.36", "8.4.0", "10.11.6-MariaDB"] {
            let text = f(v, "").fragment(&settings());
            assert!(text.starts_with(FRAGMENT_HEADER), "{v}");
            assert!(text.contains("\n[mysqld]\n"), "{v}");
            assert!(text.contains("\nread_only = ON\n"), "{v}");
            assert!(!text.contains("skip_"), "{v}");
            assert!(text.contains("\nserver_id = 2\n"), "{v}");
        }
        let v84 = f("8.4.0", "").fragment(&settings());
        assert!(!v84.contains("_repository"));
        let v57 = f("5.7.44", "").fragment(&settings());
        assert!(v57.contains("master_info_repository = TABLE"));
    }

    #[test]
    fn fragment_gtid_and_master_master() {
        let mut s = settings();
        s.gtid = true;
        let v57 = f("5.7.44", "").fragment(&s);
        assert!(v57.contains("gtid_mode = ON\nenforce_gtid_consistency = ON"));
        assert!(v57.contains("log_slave_updates = ON"));
        s.auto_increment = Some((2, 2));
        let maria = f("10.11.6-MariaDB", "").fragment(&s);
        assert!(maria.contains("gtid_strict_mode = ON"));
        assert!(maria.contains("gtid_domain_id = 2"));
        assert!(maria.contains("auto_increment_increment = 2\nauto_increment_offset = 2"));
        assert!(!maria.contains("gtid_mode"));
    }
}
