//! Replication statements: the replica verbs (SLAVE / REPLICA), CHANGE MASTER TO / CHANGE
//! REPLICATION SOURCE TO, binary log coordinates, position and GTID waits.

use super::sql::{quote, Sql, MASKED};
use super::{Flavor, Kind};
use crate::secret::Secret;

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
    /// Heartbeat period in seconds (None: the server's default), so a replica notices a dead
    /// master within `slave_net_timeout` (set by `init` for `watch:`).
    pub heartbeat: Option<f64>,
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

impl Flavor {
    /// SHOW SLAVE STATUS / SHOW REPLICA STATUS.
    pub fn show_replica_status(&self) -> Sql {
        Sql::plain(self.words().show_status)
    }
    /// SHOW MASTER STATUS / SHOW BINARY LOG STATUS (8.2+).
    pub fn show_master_status(&self) -> Sql {
        Sql::plain(self.words().show_master)
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
    /// STOP SLAVE SQL_THREAD / STOP REPLICA SQL_THREAD.
    pub fn stop_sql_thread(&self) -> Sql {
        Sql::plain(format!("STOP {} SQL_THREAD", self.replica_word()))
    }
    /// START SLAVE SQL_THREAD / START REPLICA SQL_THREAD.
    pub fn start_sql_thread(&self) -> Sql {
        Sql::plain(format!("START {} SQL_THREAD", self.replica_word()))
    }
    /// START SLAVE UNTIL / START REPLICA UNTIL the given coordinates of the master's log (both
    /// threads; the SQL thread stops exactly there).
    pub fn start_replica_until(&self, file: &str, pos: u64) -> Sql {
        let p = if self.source_syntax() {
            "SOURCE"
        } else {
            "MASTER"
        };
        Sql::plain(format!(
            "START {} UNTIL {p}_LOG_FILE = {}, {p}_LOG_POS = {pos}",
            self.replica_word(),
            quote(file)
        ))
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
        // Said both ways so that turning TLS off in the topology converges too (MySQL 8.4+ and
        // MariaDB 11.x default it to 1, and Debian 12's MariaDB 10.11 offers no TLS).
        o.push(&format!("{p}_SSL"), u8::from(cm.ssl));
        if self.is_mysql() && self.major >= 8 && !cm.ssl {
            // caching_sha2_password (MySQL 8's default) needs TLS or the source's RSA key for a
            // replica that never logged in before; without it the IO thread fails with 2061.
            // Fetching the key unverified is open to a man in the middle on the replication
            // network: `replication.ssl: true` avoids it (README, Security).
            if source {
                o.push("GET_SOURCE_PUBLIC_KEY", 1);
            } else {
                o.push("GET_MASTER_PUBLIC_KEY", 1);
            }
        }
        o.push(&format!("{p}_CONNECT_RETRY"), cm.connect_retry);
        if let Some(hb) = cm.heartbeat {
            o.push(&format!("{p}_HEARTBEAT_PERIOD"), format!("{hb:.3}"));
        }
        let head = if source {
            "CHANGE REPLICATION SOURCE TO"
        } else {
            "CHANGE MASTER TO"
        };
        o.into_sql(head)
    }
    /// MySQL's multi-threaded applier (the default since 8.0.27) moves the position that
    /// SOURCE_POS_WAIT watches only at its checkpoints, every `replica_checkpoint_period`
    /// (300 ms by default): a switchover's wait for the frozen position took that long (330 ms
    /// of blocked writes measured on MySQL 9.7, 12 ms on MariaDB). The variable, to read and
    /// lower for the switchover; None on MariaDB (its position moves at each commit).
    pub fn checkpoint_period_var(&self) -> Option<&'static str> {
        match self.kind {
            Kind::MariaDB => None,
            Kind::MySQL if self.at_least(8, 0, 26) => Some("replica_checkpoint_period"),
            Kind::MySQL => Some("slave_checkpoint_period"),
        }
    }
    /// `SET GLOBAL replica_checkpoint_period = MS` (see [`Flavor::checkpoint_period_var`]).
    pub fn set_checkpoint_period(&self, ms: u64) -> Option<Sql> {
        let v = self.checkpoint_period_var()?;
        Some(Sql::plain(format!("SET GLOBAL {v} = {}", ms.max(1))))
    }
    /// `SELECT MASTER_POS_WAIT(file, pos, timeout)` (SOURCE_POS_WAIT on MySQL 8.0.26+).
    pub fn pos_wait(&self, file: &str, pos: u64, timeout_secs: u32) -> Sql {
        // A timeout of 0 means "wait forever" to some versions: every wait has a limit.
        let t = timeout_secs.max(1);
        Sql::plain(format!(
            "SELECT {}({}, {pos}, {t})",
            self.words().pos_wait,
            quote(file)
        ))
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
    pub(super) fn gtid_executed_var(&self) -> &'static str {
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
    /// SHOW BINARY LOGS (every version; the MASTER LOGS synonym is gone in 8.4): Log_name and
    /// File_size.
    pub fn show_binary_logs(&self) -> Sql {
        Sql::plain("SHOW BINARY LOGS")
    }
    /// The events of one binary log file from a position on.
    pub fn show_binlog_events(&self, file: &str, from: u64) -> Sql {
        Sql::plain(format!("SHOW BINLOG EVENTS IN {} FROM {from}", quote(file)))
    }
    /// SHOW SLAVE HOSTS / SHOW REPLICAS (MySQL 8.0.22+): replicas registered on this source.
    pub fn show_replicas(&self) -> Sql {
        if self.is_mysql() && self.at_least(8, 0, 22) {
            Sql::plain("SHOW REPLICAS")
        } else {
            Sql::plain("SHOW SLAVE HOSTS")
        }
    }
    /// Before a former master replicates by GTID: make it start after its own transactions.
    /// MariaDB keeps them in gtid_binlog_pos, not in the gtid_slave_pos replication reads;
    /// MySQL's auto-positioning reads gtid_executed, which already has them.
    pub fn adopt_own_gtids(&self) -> Vec<Sql> {
        match self.kind {
            Kind::MariaDB => vec![Sql::plain(
                "SET GLOBAL gtid_slave_pos = @@GLOBAL.gtid_binlog_pos",
            )],
            Kind::MySQL => Vec::new(),
        }
    }
    /// How fast a replica notices a dead master: the seconds without data after which its IO
    /// thread reconnects (slave_net_timeout / replica_net_timeout).
    pub fn set_net_timeout(&self, secs: u32) -> Sql {
        Sql::plain(format!(
            "SET GLOBAL {} = {}",
            self.net_timeout_var(),
            secs.max(1)
        ))
    }
    /// slave_net_timeout / replica_net_timeout (MySQL 8.0.26+).
    pub fn net_timeout_var(&self) -> &'static str {
        if self.is_mysql() && self.at_least(8, 0, 26) {
            "replica_net_timeout"
        } else {
            "slave_net_timeout"
        }
    }
    /// Only the reconnect delay and the heartbeat of an existing replication link (its
    /// coordinates kept); the replica threads must be stopped around it.
    pub fn change_master_timing(&self, connect_retry: u32, heartbeat: f64) -> Sql {
        let p = if self.source_syntax() {
            "SOURCE"
        } else {
            "MASTER"
        };
        let head = if self.source_syntax() {
            "CHANGE REPLICATION SOURCE TO"
        } else {
            "CHANGE MASTER TO"
        };
        Sql::plain(format!(
            "{head} {p}_CONNECT_RETRY={connect_retry}, {p}_HEARTBEAT_PERIOD={heartbeat:.3}"
        ))
    }
}
