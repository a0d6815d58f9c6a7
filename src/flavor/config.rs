//! The managed configuration fragment: `[mysqld]` settings repltool owns, read_only=ON always
//! (fencing: masters are made writable at runtime only).

use super::{Flavor, Kind};

/// What goes into a server's managed configuration fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FragmentSettings {
    pub host_name: String,
    pub server_id: u32,
    /// `report-host`: the address replicas and status tools see.
    pub report_host: String,
    /// `log-bin` base name (also `relay-log` gets `<base>-relay`): e.g. "mysql-bin".
    pub log_bin: String,
    pub relay_log: String,
    /// log_slave_updates / log_replica_updates (relays and master-master members).
    pub log_slave_updates: bool,
    /// (increment, offset) for master-master.
    pub auto_increment: Option<(u32, u32)>,
    /// GTID on (MySQL: gtid_mode=ON + enforce_gtid_consistency=ON; MariaDB: gtid_strict_mode=ON).
    pub gtid: bool,
    /// `bind_address`, when the server must listen beyond loopback (Debian's default is
    /// 127.0.0.1, which no replica on another host can reach).
    pub bind_address: Option<String>,
    /// `slave_net_timeout` / `replica_net_timeout` in seconds (with `watch:`: replicas notice
    /// a dead master within it, their heartbeat being 1 s).
    pub net_timeout: Option<u32>,
}

/// The first line of every managed fragment: how `init` and a human recognise the file.
pub const FRAGMENT_HEADER: &str =
    "# Managed by repltool: do not edit; `repltool init` rewrites this file.";

impl FragmentSettings {
    /// Whether the fragment turns log_slave_updates on: when asked, and whenever GTID is on, so
    /// that a promoted replica's binary log holds the transactions its new replicas ask for by
    /// GTID (MariaDB answers error 1236 "GTID not in the master's binlog" otherwise).
    pub fn effective_log_slave_updates(&self) -> bool {
        self.log_slave_updates || self.gtid
    }
}

impl Flavor {
    /// The managed fragment: a header saying repltool owns it, then `[mysqld]` settings,
    /// read_only=ON always (fencing: masters are made writable at runtime only).
    pub fn fragment(&self, s: &FragmentSettings) -> String {
        self.fragment_with(s, true)
    }

    /// [`Flavor::fragment`]; `fenced: false` writes `read_only = OFF` instead of the fencing
    /// lines (Galera members: the cluster fences by quorum).
    pub(super) fn fragment_with(&self, s: &FragmentSettings, fenced: bool) -> String {
        let mut out = String::new();
        let mut line = |l: String| {
            out.push_str(&l);
            out.push('\n');
        };
        line(FRAGMENT_HEADER.to_string());
        line(format!("# host: {}", s.host_name));
        line("[mysqld]".to_string());
        line(format!("server_id = {}", s.server_id));
        if !s.log_bin.is_empty() {
            line(format!("log_bin = {}", s.log_bin));
        }
        // MariaDB defaults to MIXED; ROW everywhere makes replicas apply exactly what ran.
        // MySQL 8.0.34+ deprecates the variable (ROW is its default and only future) and warns
        // at every start when it is set.
        if !(self.is_mysql() && self.at_least(8, 0, 34)) {
            line("binlog_format = ROW".to_string());
        }
        if !s.relay_log.is_empty() {
            line(format!("relay_log = {}", s.relay_log));
        }
        if !s.report_host.is_empty() {
            line(format!("report_host = {}", s.report_host));
        }
        if let Some(b) = &s.bind_address {
            line(format!("bind_address = {b}"));
        }
        // Fencing: a server that restarts (a master that died and came back included) must
        // not take writes until repltool says so. skip_slave_start is deliberately NOT set: a
        // read-only replica that restarts should resume replicating on its own.
        if fenced {
            line("read_only = ON".to_string());
            if self.is_mysql() && self.at_least(5, 7, 8) {
                // read_only alone lets SUPER accounts write, and applications do use them.
                line("super_read_only = ON".to_string());
            }
        } else {
            line("read_only = OFF".to_string());
        }
        if s.effective_log_slave_updates() {
            line(format!("{} = ON", self.log_slave_updates_var()));
        }
        if let Some(t) = s.net_timeout {
            line(format!("{} = {t}", self.net_timeout_var()));
        }
        if let Some((increment, offset)) = s.auto_increment {
            line(format!("auto_increment_increment = {increment}"));
            line(format!("auto_increment_offset = {offset}"));
        }
        if s.gtid {
            match self.kind {
                Kind::MySQL => {
                    line("gtid_mode = ON".to_string());
                    line("enforce_gtid_consistency = ON".to_string());
                }
                Kind::MariaDB => {
                    line("gtid_strict_mode = ON".to_string());
                    if s.auto_increment.is_some() {
                        // Two writable masters in one GTID domain produce out-of-order sequence
                        // numbers, which strict mode stops replication on: each writer gets a
                        // domain of its own.
                        line(format!("gtid_domain_id = {}", s.server_id));
                    }
                }
            }
        }
        if self.is_mysql() && !self.at_least(8, 0, 0) {
            // 5.7 keeps replica positions in files by default, which a crash leaves behind the
            // data; 8.0 defaults to TABLE and 8.4 refuses to start with these options at all.
            line("master_info_repository = TABLE".to_string());
            line("relay_log_info_repository = TABLE".to_string());
        }
        out
    }

    /// What a lab server of this flavor needs in its own config besides the common settings:
    /// a small redo log (MySQL 8.0.30 replaced `innodb_log_file_size` with
    /// `innodb_redo_log_capacity`, and 9.x refuses the old name); MySQL opens its X Protocol
    /// port 33060 by default (two lab servers would collide) and refuses to start when
    /// `secure_file_priv` names a directory that does not exist.
    pub fn lab_settings(&self) -> String {
        if self.is_mysql() && self.at_least(8, 0, 30) {
            "innodb_redo_log_capacity=16M\nmysqlx=OFF\nsecure-file-priv=NULL\n".to_string()
        } else if self.is_mysql() && self.at_least(8, 0, 0) {
            "innodb_log_file_size=8M\nmysqlx=OFF\nsecure-file-priv=NULL\n".to_string()
        } else {
            "innodb_log_file_size=8M\n".to_string()
        }
    }
}
