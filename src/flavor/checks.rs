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
fn native_hash(password: &str) -> String {
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

/// The global privileges a SHOW GRANTS listing gives (upper case), and whether they come WITH
/// GRANT OPTION. `ALL PRIVILEGES` is returned as itself.
fn global_privileges(grants: &[String]) -> (Vec<String>, bool) {
    let mut privs = Vec::new();
    let mut grant_option = false;
    for g in grants {
        let u = g.to_uppercase();
        let Some(rest) = u.strip_prefix("GRANT ") else {
            continue;
        };
        let Some(on) = rest.find(" ON *.* TO ") else {
            continue;
        };
        if u.contains("WITH GRANT OPTION") {
            grant_option = true;
        }
        for p in rest[..on].split(',') {
            let p = p.trim();
            if !p.is_empty() {
                privs.push(p.to_string());
            }
        }
    }
    (privs, grant_option)
}

impl Flavor {
    /// The privileges the account lacks on this flavor, in words (empty: enough), from its SHOW
    /// GRANTS rows.
    pub fn missing_privileges(&self, grants: &[String]) -> Vec<String> {
        let f = self;
        let (have, grant_option) = global_privileges(grants);
        let all = have.iter().any(|p| p == "ALL PRIVILEGES" || p == "ALL");
        let mut missing = Vec::new();
        if !all {
            for (alternatives, why) in f.admin_privileges() {
                let met = alternatives
                    .iter()
                    .any(|alt| alt.iter().all(|p| have.iter().any(|h| h == p)));
                if !met {
                    let names: Vec<String> = alternatives.iter().map(|a| a.join(" + ")).collect();
                    missing.push(format!("{} ({why})", names.join(" or ")));
                }
            }
        }
        if !grant_option {
            missing.push(
                "WITH GRANT OPTION (to grant REPLICATION SLAVE to the replication user)".into(),
            );
        }
        missing
    }

    /// The simplest grant that gives the administrative account everything it needs.
    pub fn grant_all_advice(&self, user: &str) -> String {
        format!(
            "GRANT ALL PRIVILEGES ON *.* TO {}@... WITH GRANT OPTION",
            quote(user)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_are_matched_exactly_per_flavor() {
        let maria = Flavor::detect("10.11.6-MariaDB", "").unwrap();
        let all = vec!["GRANT ALL PRIVILEGES ON *.* TO `admin`@`127.0.0.1` IDENTIFIED BY PASSWORD '*X' WITH GRANT OPTION".to_string()];
        assert!(maria.missing_privileges(&all).is_empty());
        // Everything but READ_ONLY ADMIN: named (10.11's read_only binds every other account).
        let some = vec!["GRANT SELECT, RELOAD, PROCESS, CREATE USER, SUPER, REPLICATION SLAVE, BINLOG MONITOR, REPLICATION SLAVE ADMIN ON *.* TO `a`@`h` WITH GRANT OPTION".to_string()];
        let m = maria.missing_privileges(&some);
        assert_eq!(m.len(), 1, "{m:?}");
        assert!(m[0].starts_with("READ_ONLY ADMIN"), "{m:?}");
        // No grant option: named too.
        let no_go = vec![all[0].replace(" WITH GRANT OPTION", "")];
        assert!(maria.missing_privileges(&no_go)[0].starts_with("WITH GRANT OPTION"));
        // MySQL: dynamic privileges on their own line stand in for SUPER.
        let my = Flavor::detect("9.7.4", "").unwrap();
        let dynamic = vec![
            "GRANT SELECT, RELOAD, PROCESS, REPLICATION SLAVE, REPLICATION CLIENT, CREATE USER ON *.* TO `a`@`%` WITH GRANT OPTION".to_string(),
            "GRANT REPLICATION_SLAVE_ADMIN,SYSTEM_VARIABLES_ADMIN ON *.* TO `a`@`%` WITH GRANT OPTION".to_string(),
        ];
        assert!(
            my.missing_privileges(&dynamic).is_empty(),
            "{:?}",
            my.missing_privileges(&dynamic)
        );
        assert_eq!(my.missing_privileges(&dynamic[..1]).len(), 1);
        // Grants on one schema are not global.
        let schema =
            vec!["GRANT ALL PRIVILEGES ON `app`.* TO `a`@`%` WITH GRANT OPTION".to_string()];
        assert!(!my.missing_privileges(&schema).is_empty());
    }

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
