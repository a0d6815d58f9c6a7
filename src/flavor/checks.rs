//! Read-only queries observe uses to compare a server with the file.

use super::{quote, Flavor, Kind, Sql};

impl Flavor {
    /// A query returning the Host of every `user` account whose stored password is not
    /// `password`, or None where the flavor cannot tell without logging in (MySQL 8's
    /// caching_sha2_password hashes are salted). MariaDB's mysql_native_password can.
    pub fn repl_password_mismatch_query(
        &self,
        user: &str,
        password: &crate::secret::Secret,
    ) -> Option<Sql> {
        match self.kind {
            Kind::MariaDB => {
                let q = |pw: &str| {
                    format!(
                        "SELECT Host FROM mysql.user WHERE User = {} AND plugin IN ('mysql_native_password', '') \
                         AND authentication_string <> PASSWORD({})",
                        quote(user),
                        pw
                    )
                };
                Some(Sql::masked(q(&quote(password.expose())), q("'***'")))
            }
            Kind::MySQL => None,
        }
    }
}

impl Flavor {
    /// The GTID position matching binlog coordinates, read on the master under the snapshot
    /// lock (MariaDB BINLOG_GTID_POS). None for MySQL, whose SHOW MASTER STATUS carries
    /// Executed_Gtid_Set already.
    pub fn gtid_at_query(&self, file: &str, pos: u64) -> Option<Sql> {
        match self.kind {
            Kind::MariaDB => Some(Sql::plain(format!(
                "SELECT BINLOG_GTID_POS({}, {pos})",
                quote(file)
            ))),
            Kind::MySQL => None,
        }
    }

    /// Tell a freshly seeded replica which GTIDs its copy already holds, before GTID
    /// auto-positioning starts (MariaDB gtid_slave_pos; MySQL adds to gtid_purged).
    pub fn seed_gtid(&self, gtid: &str) -> Vec<Sql> {
        match self.kind {
            Kind::MariaDB => vec![Sql::plain(format!(
                "SET GLOBAL gtid_slave_pos = {}",
                quote(gtid)
            ))],
            Kind::MySQL => vec![Sql::plain(format!(
                "SET GLOBAL gtid_purged = {}",
                quote(&format!("+{gtid}"))
            ))],
        }
    }
}
