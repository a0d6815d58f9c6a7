//! repltool's own schema on the servers: the canary that proves replication end to end, and the
//! record of promotions that lets `init` rejoin a former master at the right place.

use super::sql::{quote, Sql};
use super::Flavor;

/// repltool's own schema: replicated like user data, but not user data (it does not make a
/// server "hold data"; a seed copies it so that later rows land in existing tables).
pub const CANARY_SCHEMA: &str = "repltool";

/// A promotion as recorded on the new master (table `repltool.promotions`): the old master's
/// binary log up to `old_pos` is contained in the new master's data at `new_pos`. The old
/// master's identity (server_id, server_uuid on MySQL, and its GTID state at `old_pos`) binds
/// the record to that server: a machine rebuilt under the same name does not match and is
/// seeded instead of rejoined.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PromotionRecord {
    pub old_master: String,
    pub old_server_id: u32,
    /// MySQL @@server_uuid ("" on MariaDB, which has none).
    pub old_server_uuid: String,
    pub old_pos: (String, u64),
    /// The GTID position of the old master's log at `old_pos` ("" without GTIDs).
    pub old_gtid: String,
    /// Where the other slaves stood in the old master's log when `new_pos` was taken.
    pub slaves_pos: (String, u64),
    pub new_master: String,
    pub new_pos: (String, u64),
}

impl Flavor {
    /// The canary table (idempotent).
    pub fn canary_setup(&self) -> Vec<Sql> {
        vec![
            Sql::plain(format!("CREATE DATABASE IF NOT EXISTS {CANARY_SCHEMA}")),
            Sql::plain(format!(
                "CREATE TABLE IF NOT EXISTS {CANARY_SCHEMA}.canary (host VARCHAR(255) PRIMARY KEY, \
                 token VARCHAR(64) NOT NULL, written_at TIMESTAMP(6) NOT NULL) ENGINE=InnoDB"
            )),
        ]
    }
    /// Write a fresh canary token for `from` (the master writing it).
    pub fn canary_write(&self, from: &str, token: &str) -> Sql {
        Sql::plain(format!(
            "REPLACE INTO {CANARY_SCHEMA}.canary VALUES ({}, {}, NOW(6))",
            quote(from),
            quote(token)
        ))
    }
    /// Read the canary token written by `from` (no row: not arrived yet).
    pub fn canary_read(&self, from: &str) -> Sql {
        Sql::plain(format!(
            "SELECT token FROM {CANARY_SCHEMA}.canary WHERE host = {}",
            quote(from)
        ))
    }
    /// Whether the canary table exists yet (it arrives by replication too): one count.
    pub fn canary_exists(&self) -> Sql {
        Sql::plain(format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} \
             AND TABLE_NAME = 'canary'",
            quote(CANARY_SCHEMA)
        ))
    }
    /// Record a promotion on the new master (the row replicates to every slave).
    pub fn record_promotion(&self, r: &PromotionRecord) -> Vec<Sql> {
        vec![
            Sql::plain(format!("CREATE DATABASE IF NOT EXISTS {CANARY_SCHEMA}")),
            Sql::plain(format!(
                "CREATE TABLE IF NOT EXISTS {CANARY_SCHEMA}.promotions (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
                 old_master VARCHAR(255) NOT NULL, old_server_id INT UNSIGNED NOT NULL, \
                 old_server_uuid VARCHAR(64) NOT NULL, old_file VARCHAR(255) NOT NULL, \
                 old_pos BIGINT UNSIGNED NOT NULL, old_gtid TEXT NOT NULL, \
                 slaves_file VARCHAR(255) NOT NULL, slaves_pos BIGINT UNSIGNED NOT NULL, \
                 new_master VARCHAR(255) NOT NULL, new_file VARCHAR(255) NOT NULL, \
                 new_pos BIGINT UNSIGNED NOT NULL, promoted_at TIMESTAMP(6) NOT NULL) ENGINE=InnoDB"
            )),
            Sql::plain(format!(
                "INSERT INTO {CANARY_SCHEMA}.promotions (old_master, old_server_id, old_server_uuid, \
                 old_file, old_pos, old_gtid, slaves_file, slaves_pos, new_master, new_file, new_pos, \
                 promoted_at) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, NOW(6))",
                quote(&r.old_master),
                r.old_server_id,
                quote(&r.old_server_uuid),
                quote(&r.old_pos.0),
                r.old_pos.1,
                quote(&r.old_gtid),
                quote(&r.slaves_pos.0),
                r.slaves_pos.1,
                quote(&r.new_master),
                quote(&r.new_pos.0),
                r.new_pos.1
            )),
        ]
    }
    /// Every recorded promotion, oldest first (an error when the table does not exist: nothing
    /// was ever promoted here). Columns named as the fields of [`PromotionRecord`].
    pub fn promotions_query(&self) -> Sql {
        Sql::plain(format!(
            "SELECT old_master, old_server_id, old_server_uuid, old_file, old_pos, old_gtid, \
             slaves_file, slaves_pos, new_master, new_file, new_pos FROM {CANARY_SCHEMA}.promotions \
             ORDER BY id"
        ))
    }
    /// Whether the promotions table exists: one count.
    pub fn promotions_exist(&self) -> Sql {
        Sql::plain(format!(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} \
             AND TABLE_NAME = 'promotions'",
            quote(CANARY_SCHEMA)
        ))
    }
}
