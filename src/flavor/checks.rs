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
}
