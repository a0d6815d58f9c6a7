//! Test fixtures shared by the unit tests of the planners, the checks and the status
//! analysis: topologies and observed facts built in code (no server).

use std::collections::HashMap;
use std::path::PathBuf;

use crate::flavor::{Flavor, Kind};
use crate::observe::{ConfigFacts, ConfigTarget, Facts, IoThread, ReplicaStatus, SqlFacts};
use crate::plan::init::fragment_settings;
use crate::secret::Secret;
use crate::topology::{Host, Mysql, Replication, Role, SqlRoute, Topology, Transport};

pub const PW: &str = "s3cr'et \"pw\"";

pub fn topo(spec: &[(&str, Option<&str>)]) -> Topology {
    let mut hosts: Vec<Host> = spec
        .iter()
        .enumerate()
        .map(|(i, (n, m))| Host {
            name: n.to_string(),
            address: "127.0.0.1".into(),
            master: m.map(|s| s.to_string()),
            server_id: i as u32 + 1,
            read_only: None,
            transport: Transport::Local,
            mysql: Mysql {
                user: "admin".into(),
                password: Secret::new("adminpw"),
                port: 3306 + i as u16,
                route: SqlRoute::Direct,
            },
            config_file: Some(PathBuf::from(format!("/lab/{n}/60-repltool.cnf"))),
            restart: Some(format!("/lab/{n}/ctl restart")),
            error_log: None,
            role: Role::Master,
            peer: None,
            slaves: vec![],
            line: i + 1,
        })
        .collect();
    let names: Vec<(String, Option<String>)> = hosts
        .iter()
        .map(|h| (h.name.clone(), h.master.clone()))
        .collect();
    for h in hosts.iter_mut() {
        h.slaves = names
            .iter()
            .filter(|(_, m)| m.as_deref() == Some(h.name.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        let peer = h.master.clone().filter(|m| h.slaves.contains(m));
        h.role = match (&h.master, h.slaves.is_empty(), &peer) {
            (Some(_), _, Some(_)) => Role::MasterMaster,
            (None, _, _) => Role::Master,
            (Some(_), true, _) => Role::Slave,
            (Some(_), false, _) => Role::Relay,
        };
        h.peer = peer;
    }
    Topology {
        name: "t".into(),
        file: PathBuf::from("t.yaml"),
        replication: Replication {
            user: "repl".into(),
            password: Secret::new(PW),
            gtid: false,
            ssl: false,
            seed: crate::topology::SeedMethod::Auto,
        },
        hosts,
        galera: None,
        watch: None,
        proxies: Vec::new(),
        vip: None,
    }
}

pub fn maria() -> Flavor {
    Flavor {
        kind: Kind::MariaDB,
        major: 10,
        minor: 11,
        patch: 6,
    }
}

/// A fresh server as the lab makes it: binary log off, no data, nothing configured.
pub fn fresh(t: &Topology) -> HashMap<String, Facts> {
    t.hosts
        .iter()
        .map(|h| {
            (
                h.name.clone(),
                Facts {
                    host: h.name.clone(),
                    sql: Some(SqlFacts {
                        flavor: maria(),
                        version: "10.11.6-MariaDB".into(),
                        server_id: 1,
                        server_uuid: String::new(),
                        log_bin: false,
                        log_bin_basename: String::new(),
                        binlog_format: "MIXED".into(),
                        read_only: false,
                        super_read_only: false,
                        log_slave_updates: false,
                        auto_increment_increment: 1,
                        auto_increment_offset: 1,
                        replica: None,
                        master_status: None,
                        binary_logs: vec![],
                        gtid_executed: String::new(),
                        gtid_slave_pos: String::new(),
                        repl_user_hosts: vec![],
                        repl_password_mismatch: vec![],
                        databases: vec![],
                        has_user_data: false,
                        error_log: None,
                        bind_address: "127.0.0.1".into(),
                        datadir: "/lab".into(),
                        clock: 0,
                        promotions: vec![],
                        galera: None,
                    }),
                    sql_error: None,
                    config: Some(ConfigFacts {
                        target: ConfigTarget::Fragment(
                            h.config_file.clone().unwrap_or_else(|| {
                                PathBuf::from("/etc/mysql/conf.d/60-repltool.cnf")
                            }),
                        ),
                        current: None,
                        restart: h.restart.clone(),
                        stop: None,
                    }),
                },
            )
        })
        .collect()
}

/// The facts of a cluster init already built.
pub fn converged(t: &Topology) -> HashMap<String, Facts> {
    let mut f = fresh(t);
    for h in &t.hosts {
        let e = f.get_mut(&h.name).unwrap();
        let s = e.sql.as_mut().unwrap();
        s.log_bin = true;
        s.log_bin_basename = "/lab/mysql-bin".into();
        s.server_id = h.server_id;
        s.binlog_format = "ROW".into();
        s.read_only = !t.writable(h);
        s.log_slave_updates = matches!(h.role, Role::Relay | Role::MasterMaster);
        if let Some((i, o)) = fragment_settings(t, h, "/lab", false).auto_increment {
            s.auto_increment_increment = i;
            s.auto_increment_offset = o;
        }
        s.repl_user_hosts = vec!["127.0.0.1".into()];
        if let Some(m) = &h.master {
            let mh = t.host(m).unwrap();
            s.replica = Some(ReplicaStatus {
                master_host: mh.address.clone(),
                master_port: mh.mysql.port,
                io_running: Some(IoThread::Yes),
                sql_running: true,
                ..Default::default()
            });
        }
        e.config.as_mut().unwrap().current =
            Some(maria().fragment(&fragment_settings(t, h, "/lab", false)));
    }
    f
}
