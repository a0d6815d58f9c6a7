//! Detected MySQL/MariaDB flavor + version -> every SQL statement repltool sends, and every verb
//! it shows people. Nothing outside this module tests "is this MariaDB", and nothing outside it
//! can build a [`Sql`]. See `dialects.md` in the design notes.
//!
//! - `sql`: the statement type and quoting;
//! - `replication`: replica verbs, CHANGE MASTER / CHANGE REPLICATION SOURCE, waits, GTID;
//! - `server`: what observe reads, read-only, users, locks, sessions;
//! - `schema`: repltool's own schema (canary, promotions);
//! - `config`: the managed configuration fragment;
//! - `tools`: the dump, client and binary log programs;
//! - `checks`: read-only comparisons (the replication password);
//! - `galera`: Galera's status, SST account, bootstrap, fragment and host probes;
//! - `backup`: physical copies (mariabackup, the clone plugin);
//! - `verify`: the consistent point and the chunk checksums of `repltool verify`.

mod backup;
mod checks;
mod config;
pub mod galera;
mod replication;
mod schema;
mod server;
mod sql;
mod tools;
mod verify;

use anyhow::{bail, Result};

pub use backup::{PhysicalCopy, STAGE_MARK};
pub use checks::PasswordCheck;
pub use config::FragmentSettings;
pub use replication::{ChangeMaster, StartAt, WaitOutcome};
pub use schema::{PromotionRecord, CANARY_SCHEMA};
pub use server::ServerVars;
#[cfg(test)]
pub use sql::quote;
pub use sql::Sql;
pub use verify::{differs_across_flavors, is_binary_type, ChunkTable, KeyColumn, KeyValue};

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
        format!(
            "{} {}.{}.{}",
            self.family(),
            self.major,
            self.minor,
            self.patch
        )
    }

    /// "MySQL" or "MariaDB".
    pub fn family(&self) -> &'static str {
        match self.kind {
            Kind::MySQL => "MySQL",
            Kind::MariaDB => "MariaDB",
        }
    }

    /// Refuse versions whose SQL this module does not speak: MySQL before 5.7.8 (no
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

    /// Whether a server of this flavor can replicate from `master`, and if not, why. A MySQL
    /// replica cannot parse a MariaDB master's binary log (its relay log fails); a replica
    /// older than its master may not understand the newer log format (the manual: a replica
    /// must be the same release series or newer). MariaDB replicates from MySQL.
    pub fn can_replicate_from(&self, master: &Flavor) -> Result<(), String> {
        if self.cannot_read(master) {
            return Err(format!(
                "a {} replica cannot replicate from a {} master: MySQL cannot read MariaDB's \
                 binary log (its relay log fails to parse)",
                self.describe(),
                master.describe()
            ));
        }
        if self.kind == master.kind && (self.major, self.minor) < (master.major, master.minor) {
            return Err(format!(
                "{} would replicate from a newer {}: a replica must be the same version or \
                 newer than its master",
                self.describe(),
                master.describe()
            ));
        }
        Ok(())
    }

    /// A replica of this flavor can never read `master`'s binary log (no `--force` helps):
    /// MySQL cannot parse MariaDB's.
    pub fn cannot_read(&self, master: &Flavor) -> bool {
        self.kind == Kind::MySQL && master.kind == Kind::MariaDB
    }

    /// How a fresh datadir is made: `mariadb-install-db` (MariaDB, which also needs `FLUSH
    /// PRIVILEGES` first in its bootstrap SQL) or `mysqld --initialize-insecure` (MySQL).
    pub fn datadir_by_install_db(&self) -> bool {
        self.kind == Kind::MariaDB
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

    /// Words for people, in this server's dialect: "SLAVE"/"REPLICA", "master"/"source".
    pub fn words(&self) -> Words {
        let new = self.is_mysql() && self.at_least(8, 0, 22);
        Words {
            replica: self.replica_word(),
            change: if self.source_syntax() {
                "CHANGE REPLICATION SOURCE TO"
            } else {
                "CHANGE MASTER TO"
            },
            show_status: if new {
                "SHOW REPLICA STATUS"
            } else {
                "SHOW SLAVE STATUS"
            },
            show_master: if self.binary_log_syntax() {
                "SHOW BINARY LOG STATUS"
            } else {
                "SHOW MASTER STATUS"
            },
            pos_wait: if self.is_mysql() && self.at_least(8, 0, 26) {
                "SOURCE_POS_WAIT"
            } else {
                "MASTER_POS_WAIT"
            },
            skip_counter: if self.is_mysql() && self.at_least(8, 0, 26) {
                "sql_replica_skip_counter"
            } else {
                "sql_slave_skip_counter"
            },
            read_lock: "FLUSH TABLES WITH READ LOCK",
            unlock: "UNLOCK TABLES",
            read_only_on: if self.is_mysql() {
                "SET GLOBAL read_only = ON; SET GLOBAL super_read_only = ON"
            } else {
                "SET GLOBAL read_only = ON"
            },
            read_only_off: if self.is_mysql() {
                "SET GLOBAL super_read_only = OFF; SET GLOBAL read_only = OFF"
            } else {
                "SET GLOBAL read_only = OFF"
            },
        }
    }
}

/// Statement words for messages and plans (`--dry-run`, diagnoses, advice), in the dialect of
/// the server they are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Words {
    /// "SLAVE" or "REPLICA" (START/STOP/RESET ...).
    pub replica: &'static str,
    /// "CHANGE MASTER TO" or "CHANGE REPLICATION SOURCE TO".
    pub change: &'static str,
    /// "SHOW SLAVE STATUS" or "SHOW REPLICA STATUS".
    pub show_status: &'static str,
    /// "SHOW MASTER STATUS" or "SHOW BINARY LOG STATUS".
    pub show_master: &'static str,
    /// "MASTER_POS_WAIT" or "SOURCE_POS_WAIT".
    pub pos_wait: &'static str,
    /// "sql_slave_skip_counter" or "sql_replica_skip_counter".
    pub skip_counter: &'static str,
    /// The global read lock of a snapshot, and its release.
    pub read_lock: &'static str,
    pub unlock: &'static str,
    /// Fencing a server, and lifting it (MySQL: both read-only flags).
    pub read_only_on: &'static str,
    pub read_only_off: &'static str,
}

impl Words {
    /// The words of a server whose flavor is not known (it does not answer): the oldest forms,
    /// which every MariaDB and MySQL before 8.4 accept.
    pub fn unknown() -> Words {
        Flavor {
            kind: Kind::MariaDB,
            major: 10,
            minor: 11,
            patch: 0,
        }
        .words()
    }
    pub fn start(&self) -> String {
        format!("START {}", self.replica)
    }
    pub fn stop(&self) -> String {
        format!("STOP {}", self.replica)
    }
    pub fn reset_all(&self) -> String {
        format!("RESET {} ALL", self.replica)
    }
    /// Skipping one replicated event (what the manual suggests, and what loses it).
    pub fn skip_one(&self) -> String {
        format!("SET GLOBAL {} = 1", self.skip_counter)
    }
}

#[cfg(test)]
mod golden;
#[cfg(test)]
mod tests;
