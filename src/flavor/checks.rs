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
