//! Read-only comparisons observe makes: whether the replication user's stored password is the
//! file's, decided on this side (the password never travels as SQL text, so it never shows in
//! a processlist, a general log or an audit plugin).

use sha1::{Digest, Sha1};

use super::sql::{quote, Sql};
use super::Flavor;
use crate::secret::Secret;

/// Whether a stored credential matches a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCheck {
    Matches,
    Differs,
    /// The plugin's hash is salted or unknown (MySQL's caching_sha2_password): only a login
    /// tells.
    Unknown,
}

/// mysql_native_password's stored form: `*` and the upper-case hex of SHA1(SHA1(password)).
pub(super) fn native_hash(password: &str) -> String {
    let inner = Sha1::digest(password.as_bytes());
    let outer = Sha1::digest(inner);
    let mut s = String::with_capacity(41);
    s.push('*');
    for b in outer {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

impl Flavor {
    /// The replication user's accounts: Host, plugin, authentication_string.
    pub fn repl_accounts_query(&self, user: &str) -> Sql {
        Sql::plain(format!(
            "SELECT Host, plugin, authentication_string FROM mysql.user WHERE User = {} ORDER BY Host",
            quote(user)
        ))
    }

    /// Compare one account's stored credential with `password`.
    pub fn password_check(&self, plugin: &str, stored: &str, password: &Secret) -> PasswordCheck {
        match plugin {
            // MariaDB shows '' for the old default.
            "mysql_native_password" | "" => {
                if stored.eq_ignore_ascii_case(&native_hash(password.expose())) {
                    PasswordCheck::Matches
                } else {
                    PasswordCheck::Differs
                }
            }
            _ => PasswordCheck::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_hash_is_the_servers() {
        // SELECT PASSWORD('secret') on MariaDB 10.11.
        assert_eq!(
            native_hash("secret"),
            "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7"
        );
        let f = Flavor::detect("10.11.6-MariaDB", "").unwrap();
        let pw = Secret::new("secret");
        assert_eq!(
            f.password_check(
                "mysql_native_password",
                "*14E65567ABDB5135D0CFD9A70B3032C179A49EE7",
                &pw
            ),
            PasswordCheck::Matches
        );
        assert_eq!(
            f.password_check("", "*0000000000000000000000000000000000000000", &pw),
            PasswordCheck::Differs
        );
        assert_eq!(
            f.password_check("caching_sha2_password", "$A$005$xyz", &pw),
            PasswordCheck::Unknown
        );
        // The query never carries the password.
        assert!(!f.repl_accounts_query("repl").text().contains("secret"));
    }
}
