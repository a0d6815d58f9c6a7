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
    /// Whether any database other than the system ones exists.
    pub has_user_data: bool,
    /// @@log_error resolved against @@datadir.
    pub error_log: Option<PathBuf>,
    pub datadir: String,
    /// Server clock, seconds since the epoch (UNIX_TIMESTAMP()).
    pub clock: i64,
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
