//! Galera (MariaDB Galera Cluster with galera-4): what observe reads (wsrep status and
//! variables, the tables Galera does not replicate), the SST account, the primary-component
//! bootstrap, the Galera part of the managed fragment, and the shell side on the hosts
//! (grastate.dat, the provider library, the SST programs, `--wsrep-recover`, the port probes).
//!
//! MySQL has no Galera of its own (Percona XtraDB Cluster is another product): every method
//! here is for MariaDB, and [`Flavor::galera_support`] says so before anything is sent.

use anyhow::{bail, Result};

use super::checks::native_hash;
use super::config::FragmentSettings;
use super::sql::{quote, Sql, MASKED};
use super::{Flavor, Kind};
use crate::secret::Secret;
use crate::topology::Sst;
use crate::transport::shell_quote;

/// The account the donor's mariadb-backup logs in with during an SST (`wsrep_sst_auth`).
pub const SST_USER: &str = "repltool_sst";

/// The Galera settings of one member's fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GaleraSettings {
    /// wsrep_provider: the library's path on this host (Debian and RHEL differ).
    pub provider: String,
    pub cluster_name: String,
    /// Every member's address, in file order (`gcomm://a,b,c`).
    pub addresses: Vec<String>,
    /// This member's address (wsrep_node_address).
    pub node_address: String,
    /// This member's name (wsrep_node_name): its host name in the file, unique per host.
    pub node_name: String,
    pub sst: Sst,
    /// The SST account's password (mariabackup only; rsync needs no account).
    pub sst_password: Option<Secret>,
}

/// A managed fragment that may hold a secret: the text written and the text shown.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretText {
    pub text: String,
    pub shown: String,
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// An address as Galera's URLs want it: IPv6 in brackets.
fn url_host(a: &str) -> String {
    if a.contains(':') && !a.starts_with('[') {
        format!("[{a}]")
    } else {
        a.to_string()
    }
}

/// The SST account's password: derived from the replication password and the cluster name
/// (SHA-256), so every member and every run agree on it without another secret to keep; it is
/// written only into the members' fragments (mode 640, group mysql).
pub fn sst_password(cluster_name: &str, replication_password: &Secret) -> Secret {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"repltool galera sst\0");
    h.update(cluster_name.as_bytes());
    h.update(b"\0");
    h.update(replication_password.expose().as_bytes());
    let d = h.finalize();
    Secret::new(
        d.iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    )
}

impl Flavor {
    /// Whether repltool can build a Galera cluster of this server: MariaDB 10.4 or later
    /// (galera-4). MySQL has no Galera.
    pub fn galera_support(&self) -> Result<(), String> {
        match self.kind {
            Kind::MySQL => Err(format!(
                "{} has no Galera replication (that is MariaDB Galera Cluster or Percona XtraDB \
                 Cluster): a `galera:` topology needs MariaDB servers",
                self.describe()
            )),
            Kind::MariaDB if !self.at_least(10, 4, 0) => Err(format!(
                "{} ships galera-3; repltool builds galera-4 clusters (MariaDB 10.4 or later)",
                self.describe()
            )),
            Kind::MariaDB => Ok(()),
        }
    }

    /// Let this session read on a member outside the primary component (observe only).
    pub fn wsrep_dirty_reads(&self) -> Sql {
        Sql::plain("SET SESSION wsrep_dirty_reads = ON")
    }

    /// Every wsrep status variable: Variable_name, Value.
    pub fn wsrep_status_query(&self) -> Sql {
        Sql::plain("SHOW GLOBAL STATUS LIKE 'wsrep\\_%'")
    }

    /// Every wsrep variable: Variable_name, Value (the server masks wsrep_sst_auth).
    pub fn wsrep_variables_query(&self) -> Sql {
        Sql::plain("SHOW GLOBAL VARIABLES LIKE 'wsrep\\_%'")
    }

    /// User tables Galera does not replicate (only InnoDB is): TABLE_SCHEMA, TABLE_NAME, ENGINE.
    pub fn unreplicated_tables_query(&self) -> Sql {
        let list = system_list();
        Sql::plain(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ({list}) \
             AND ENGINE <> 'InnoDB' ORDER BY TABLE_SCHEMA, TABLE_NAME"
        ))
    }

    /// User InnoDB tables without a primary key (Galera replicates them, but every row change
    /// is then applied by a full scan, and DELETEs of duplicate rows can diverge):
    /// TABLE_SCHEMA, TABLE_NAME.
    pub fn tables_without_pk_query(&self) -> Sql {
        let list = system_list();
        Sql::plain(format!(
            "SELECT t.TABLE_SCHEMA, t.TABLE_NAME FROM information_schema.TABLES t \
             LEFT JOIN information_schema.TABLE_CONSTRAINTS c ON c.TABLE_SCHEMA = t.TABLE_SCHEMA \
             AND c.TABLE_NAME = t.TABLE_NAME AND c.CONSTRAINT_TYPE = 'PRIMARY KEY' \
             WHERE t.TABLE_TYPE = 'BASE TABLE' AND t.ENGINE = 'InnoDB' \
             AND t.TABLE_SCHEMA NOT IN ({list}) AND c.CONSTRAINT_NAME IS NULL \
             ORDER BY t.TABLE_SCHEMA, t.TABLE_NAME"
        ))
    }

    /// The SST account's stored credential on this member: plugin, authentication_string (no
    /// row: it does not exist).
    pub fn sst_account_query(&self) -> Sql {
        Sql::plain(format!(
            "SELECT plugin, authentication_string FROM mysql.user WHERE User = {} AND Host = 'localhost'",
            quote(SST_USER)
        ))
    }

    /// The SST account, least privilege: what mariadb-backup needs on the donor (RELOAD,
    /// PROCESS, LOCK TABLES and BINLOG MONITOR, called REPLICATION CLIENT before 10.5), from
    /// localhost only. Given by its mysql_native_password hash, so the password itself is in no
    /// statement, binary log or write set; the statements replicate to every member.
    pub fn create_sst_user(&self, password: &Secret) -> Vec<Sql> {
        let account = format!("{}@'localhost'", quote(SST_USER));
        let hash = quote(&native_hash(password.expose()));
        let monitor = if self.at_least(10, 5, 0) {
            "BINLOG MONITOR"
        } else {
            "REPLICATION CLIENT"
        };
        vec![
            Sql::masked(
                format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY PASSWORD {hash}"),
                format!("CREATE USER IF NOT EXISTS {account} IDENTIFIED BY PASSWORD {MASKED}"),
            ),
            Sql::masked(
                format!("ALTER USER {account} IDENTIFIED BY PASSWORD {hash}"),
                format!("ALTER USER {account} IDENTIFIED BY PASSWORD {MASKED}"),
            ),
            Sql::plain(format!(
                "GRANT RELOAD, PROCESS, LOCK TABLES, {monitor} ON *.* TO {account}"
            )),
        ]
    }

    /// The SST credentials of a running member (read when it next donates); the same value
    /// its fragment gives it at its next start.
    pub fn set_sst_auth(&self, user: &str, password: &Secret) -> Sql {
        Sql::masked(
            format!(
                "SET GLOBAL wsrep_sst_auth = {}",
                quote(&format!("{user}:{}", password.expose()))
            ),
            format!("SET GLOBAL wsrep_sst_auth = '{user}:***'"),
        )
    }

    /// Make this member's component the primary one (after a quorum loss): the other
    /// components must be known dead first.
    pub fn pc_bootstrap(&self) -> Sql {
        Sql::plain("SET GLOBAL wsrep_provider_options = 'pc.bootstrap=YES'")
    }

    /// The SST method at runtime (it is read when a member next donates or joins).
    pub fn set_sst_method(&self, sst: Sst) -> Sql {
        Sql::plain(format!(
            "SET GLOBAL wsrep_sst_method = {}",
            quote(sst.as_str())
        ))
    }

    /// A member's managed fragment: the `[mysqld]` settings of [`Flavor::fragment`] with
    /// `read_only = OFF` (Galera fences by quorum: a member outside the primary component
    /// refuses queries, so every member takes writes, also right after a restart), what Galera
    /// requires, and the `[galera]` group. The SST password, if any, is masked in `shown`.
    pub fn galera_fragment(
        &self,
        base: &FragmentSettings,
        g: &GaleraSettings,
    ) -> Result<SecretText> {
        if let Err(why) = self.galera_support() {
            bail!(why);
        }
        let mut out = self.fragment_with(base, false);
        let mut line = |l: String| {
            out.push_str(&l);
            out.push('\n');
        };
        // Galera replicates InnoDB only, and certifies row events: interleaved auto-increment
        // locks would deadlock appliers.
        line("default_storage_engine = InnoDB".into());
        line("innodb_autoinc_lock_mode = 2".into());
        line("[galera]".into());
        line("wsrep_on = ON".into());
        line(format!("wsrep_provider = {}", g.provider));
        line(format!("wsrep_cluster_name = \"{}\"", g.cluster_name));
        let urls: Vec<String> = g.addresses.iter().map(|a| url_host(a)).collect();
        line(format!(
            "wsrep_cluster_address = \"gcomm://{}\"",
            urls.join(",")
        ));
        line(format!(
            "wsrep_node_address = {}",
            url_host(&g.node_address)
        ));
        line(format!("wsrep_node_name = {}", g.node_name));
        line(format!("wsrep_sst_method = {}", g.sst.as_str()));
        let shown_base = out.clone();
        let mut text = out;
        let mut shown = shown_base;
        if let Some(pw) = g
            .sst_password
            .as_ref()
            .filter(|_| g.sst == Sst::Mariabackup)
        {
            text.push_str(&format!("wsrep_sst_auth = {SST_USER}:{}\n", pw.expose()));
            shown.push_str(&format!("wsrep_sst_auth = {SST_USER}:***\n"));
        }
        Ok(SecretText { text, shown })
    }
}

fn system_list() -> String {
    super::server::SYSTEM_SCHEMAS
        .iter()
        .map(|s| quote(s))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where Debian/Ubuntu (`galera-4`) and RHEL/Fedora/SUSE put the provider library, most
/// common first.
pub const PROVIDER_PATHS: &[&str] = &[
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib64/galera-4/libgalera_smm.so",
    "/usr/lib64/galera/libgalera_smm.so",
    "/usr/lib/galera-4/libgalera_smm.so",
    "/usr/lib/libgalera_smm.so",
];

/// The programs each SST method runs on donor and joiner.
pub fn sst_programs(sst: Sst) -> &'static [&'static [&'static str]] {
    match sst {
        // Either name of the backup tool (mariabackup is a symlink on 10.5+, gone in 11.x).
        Sst::Mariabackup => &[
            &["mariadb-backup", "mariabackup"],
            &["socat"],
            &["wsrep_sst_mariabackup"],
        ],
        Sst::Rsync => &[&["rsync"], &["wsrep_sst_rsync"]],
    }
}

/// The shell probe of a member: datadir, grastate.dat, whether a server process runs, the
/// provider library and its package version, the SST programs, in `@@TAG value` lines
/// (parsed by `observe::galera`). Reads only; run privileged (grastate.dat is mode 660).
pub fn galera_probe_script() -> String {
    let mut s = String::new();
    s.push_str(
        "d=$(my_print_defaults --mysqld 2>/dev/null | sed -n 's/^--datadir=//p' | tail -n 1)\n\
         [ -n \"$d\" ] || d=/var/lib/mysql\n\
         echo \"@@DATADIR $d\"\n\
         if [ -r \"$d/grastate.dat\" ]; then echo '@@GRASTATE'; cat \"$d/grastate.dat\"; echo '@@END'; fi\n\
         for p in /proc/[0-9]*; do c=$(cat \"$p/comm\" 2>/dev/null) || continue; \
         case \"$c\" in mariadbd|mysqld) echo \"@@RUNNING ${p#/proc/} $c\";; esac; done\n",
    );
    for p in PROVIDER_PATHS {
        s.push_str(&format!(
            "[ -e {p} ] && echo \"@@PROVIDER {p}\"\n",
            p = shell_quote(p)
        ));
    }
    s.push_str(
        "v=$(dpkg-query -W -f='${Version}' galera-4 2>/dev/null || rpm -q --qf '%{VERSION}-%{RELEASE}' galera-4 2>/dev/null || rpm -q --qf '%{VERSION}-%{RELEASE}' galera 2>/dev/null) && [ -n \"$v\" ] && echo \"@@PKG $v\"\n",
    );
    let mut tools: Vec<&str> = Vec::new();
    for sst in [Sst::Mariabackup, Sst::Rsync] {
        for alts in sst_programs(sst) {
            tools.extend(alts.iter());
        }
    }
    s.push_str(&format!(
        "for t in {}; do w=$(command -v \"$t\" 2>/dev/null) && echo \"@@TOOL $t $w\"; done\n",
        tools.join(" ")
    ));
    s.push_str(
        "for i in mariadb mysql; do [ -e \"/etc/init.d/$i\" ] && grep -q bootstrap \"/etc/init.d/$i\" && echo \"@@BOOTSTRAP_INITD $i\"; done\n\
         w=$(command -v galera_new_cluster 2>/dev/null) && echo \"@@NEW_CLUSTER $w\"\n",
    );
    s.push_str(
        "for b in mariadbd mysqld; do w=$(command -v $b 2>/dev/null || ls /usr/sbin/$b 2>/dev/null) && { echo \"@@SERVER $w\"; break; }; done\n",
    );
    s
}

/// Run the server once with `--wsrep-recover` (it recovers InnoDB, prints the last committed
/// position of the cluster state and exits) and print `@@RECOVERED uuid:seqno`, or the tail of
/// what it said. Only for a stopped server (the datadir lock makes it fail otherwise). As
/// `galera_recovery` does it.
pub fn wsrep_recover_script(server: &str) -> String {
    format!(
        "log=$(mktemp /tmp/repltool-wsrep-recover.XXXXXX) || exit 1\n\
         {} --user=mysql --wsrep-recover --disable-log-error 2> \"$log\"; rc=$?\n\
         pos=$(grep -a 'WSREP: Recovered position:' \"$log\" | tail -n 1 | sed 's/.*Recovered position:[[:space:]]*//')\n\
         if [ -n \"$pos\" ]; then echo \"@@RECOVERED $pos\"; else echo \"@@FAILED $rc\"; tail -n 15 \"$log\"; fi\n\
         rm -f \"$log\"\n",
        shell_quote(server)
    )
}

/// Set `safe_to_bootstrap` in grastate.dat, only if the file still names `uuid` (the guard:
/// the state it was chosen for). Prints `@@DONE` or `@@CHANGED <its uuid line>`.
pub fn set_safe_to_bootstrap_script(datadir: &str, uuid: &str, on: bool) -> String {
    let f = shell_quote(&format!("{}/grastate.dat", datadir.trim_end_matches('/')));
    format!(
        "f={f}\n\
         u=$(sed -n 's/^uuid:[[:space:]]*//p' \"$f\")\n\
         if [ \"$u\" != {uuid} ]; then echo \"@@CHANGED $u\"; exit 0; fi\n\
         sed -i 's/^safe_to_bootstrap:.*/safe_to_bootstrap: {v}/' \"$f\" && echo @@DONE\n",
        uuid = shell_quote(uuid),
        v = u8::from(on)
    )
}

/// A short-lived listener on `addr:port` (socat, ended after `secs` at the latest), for the
/// port check when nothing listens there yet; prints `@@PID pid`.
pub fn port_listener_script(addr: &str, port: u16, secs: u32) -> String {
    format!(
        "command -v socat >/dev/null 2>&1 || {{ echo '@@NOSOCAT'; exit 0; }}\n\
         timeout {secs} socat -u TCP-LISTEN:{port},bind={},reuseaddr,fork OPEN:/dev/null,wronly </dev/null >/dev/null 2>&1 &\n\
         echo \"@@PID $!\"\n",
        shell_quote(addr)
    )
}

/// Connect from this host to each `addr:port` (3 s each), printing `@@PORT addr port ok|fail`.
pub fn port_probe_script(targets: &[(String, u16)]) -> String {
    let mut s = String::from(
        "probe() { if command -v socat >/dev/null 2>&1; then socat -u OPEN:/dev/null TCP:\"$1\":\"$2\",connect-timeout=3 >/dev/null 2>&1; \
         else timeout 3 bash -c \"exec 3<>/dev/tcp/$1/$2\" >/dev/null 2>&1; fi; }\n",
    );
    for (a, p) in targets {
        s.push_str(&format!(
            "if probe {a} {p}; then echo \"@@PORT {a} {p} ok\"; else echo \"@@PORT {a} {p} fail\"; fi\n",
            a = shell_quote(a)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maria() -> Flavor {
        Flavor::detect("10.11.6-MariaDB-0+deb12u1", "Debian 12").unwrap()
    }

    #[test]
    fn the_sst_password_is_stable_and_per_cluster() {
        let a = sst_password("shop", &Secret::new("x"));
        assert_eq!(a, sst_password("shop", &Secret::new("x")));
        assert_ne!(a, sst_password("shop2", &Secret::new("x")));
        assert_ne!(a, sst_password("shop", &Secret::new("y")));
        assert_eq!(a.expose().len(), 32);
        assert!(a.expose().bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn the_fragment_masks_the_sst_password_and_brackets_ipv6() {
        let base = FragmentSettings {
            host_name: "g1".into(),
            server_id: 1,
            report_host: "fd00::1".into(),
            log_bin: "/var/lib/mysql/mysql-bin".into(),
            relay_log: "relay-bin".into(),
            log_slave_updates: true,
            auto_increment: None,
            gtid: false,
            bind_address: None,
            net_timeout: None,
        };
        let g = GaleraSettings {
            provider: "/usr/lib/galera/libgalera_smm.so".into(),
            cluster_name: "shop".into(),
            addresses: vec!["fd00::1".into(), "10.0.0.2".into()],
            node_address: "fd00::1".into(),
            node_name: "g1".into(),
            sst: Sst::Mariabackup,
            sst_password: Some(Secret::new("abcdef")),
        };
        let t = maria().galera_fragment(&base, &g).unwrap();
        assert!(t.text.contains("wsrep_sst_auth = repltool_sst:abcdef\n"));
        assert!(!t.shown.contains("abcdef") && t.shown.contains("repltool_sst:***"));
        assert!(t.text.contains("gcomm://[fd00::1],10.0.0.2"));
        assert!(t.text.contains("read_only = OFF") && !t.text.contains("read_only = ON"));
        let rsync = GaleraSettings {
            sst: Sst::Rsync,
            ..g
        };
        let t = maria().galera_fragment(&base, &rsync).unwrap();
        assert!(!t.text.contains("wsrep_sst_auth"));
        let mysql = Flavor::detect("8.0.36", "MySQL Community Server - GPL").unwrap();
        assert!(mysql.galera_fragment(&base, &rsync).is_err());
    }
}
