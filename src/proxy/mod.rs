//! The application endpoints (`proxies:` and `vip:` in the topology file): HAProxy or nginx's
//! `stream` module on hosts of their own, with a writer port that reaches the one master and
//! an optional reader port over the healthy slaves, and keepalived moving a VIP between them.
//!
//! Same pipeline as the database side: [`routing`] (pure: who should get connections, from
//! the topology and what was observed of the servers) -> `render` (pure: the configuration
//! text) -> `observe` (each proxy over its shell: what is installed, the managed file or
//! block, HAProxy's live server states) -> `plan` (pure: what to change, nothing when
//! converged) -> `exec` (the only code here that changes a proxy). `promote` moves the writer
//! through [`exec::drain_writer`] and [`exec::point_writer`], which a watcher can call as well.
//!
//! Every proxy lists every database host in two slots per endpoint, `NAME` and `NAME:backup`
//! (a `backup` server): which slots are on is all that changes when the master moves or a
//! slave falls behind, so HAProxy switches at runtime (`set server ... state`), never by a
//! reload, and its file is rewritten to the same states so a later reload keeps them.

pub mod exec;
pub mod observe;
pub mod plan;
pub mod render;
pub mod report;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::observe::{Facts, IoThread};
use crate::topology::{Proxy, Role, Topology, Transport};
use crate::transport::HostSession;

/// The two ports of a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Writer,
    Reader,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Writer => "writer",
            Endpoint::Reader => "reader",
        }
    }
}

/// One server line of an endpoint: a database host in its normal slot or its `backup` slot,
/// on (takes connections) or off (HAProxy: maintenance; nginx: `down`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    pub host: String,
    pub address: String,
    pub port: u16,
    pub backup: bool,
    pub on: bool,
}

impl Slot {
    /// The server's name in HAProxy (`db1`, `db1:backup`: host names have no `:`).
    pub fn server_name(&self) -> String {
        if self.backup {
            format!("{}:backup", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// Where each endpoint should send connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routing {
    /// The host the writer endpoint sends to.
    pub writer_host: String,
    pub writer: Vec<Slot>,
    pub reader: Vec<Slot>,
    /// Hosts kept out of the reader endpoint, and why.
    pub reader_out: BTreeMap<String, String>,
}

impl Routing {
    pub fn slots(&self, e: Endpoint) -> &[Slot] {
        match e {
            Endpoint::Writer => &self.writer,
            Endpoint::Reader => &self.reader,
        }
    }
}

/// The host the writer endpoint sends to: the master (a host with no master that is
/// writable), or the writable member of a master-master pair; the first in file order.
pub fn writer_of(topo: &Topology) -> Option<String> {
    topo.hosts
        .iter()
        .find(|h| h.master.is_none() && topo.writable(h))
        .or_else(|| {
            topo.hosts
                .iter()
                .find(|h| h.role == Role::MasterMaster && topo.writable(h))
        })
        .map(|h| h.name.clone())
}

/// Whether each host can serve reads: it answers, both replication threads run, it
/// replicates from a host of the file, and it is at most `max_lag` seconds behind. `Err` says
/// why not.
pub fn reader_health(
    topo: &Topology,
    facts: &std::collections::HashMap<String, Facts>,
    max_lag: u64,
) -> BTreeMap<String, Result<(), String>> {
    topo.hosts
        .iter()
        .map(|h| {
            let verdict = match facts.get(&h.name).and_then(|f| f.sql.as_ref()) {
                None => Err("does not answer".to_string()),
                // A Galera member serves reads when it is Synced in the primary component.
                Some(s) if topo.is_member(h) => match &s.galera {
                    Some(g) if g.primary() && g.synced() => Ok(()),
                    Some(g) if !g.primary() => Err(format!(
                        "its component is not primary ({})",
                        if g.cluster_status.is_empty() {
                            "no cluster"
                        } else {
                            &g.cluster_status
                        }
                    )),
                    Some(g) => Err(format!("it is {}, not Synced", g.state_comment)),
                    None => Err("its Galera state is unknown".to_string()),
                },
                Some(s) => match &s.replica {
                    None => Err("does not replicate".to_string()),
                    Some(r) if r.master_host.is_empty() => Err("does not replicate".to_string()),
                    Some(r) => {
                        if r.io_running != Some(IoThread::Yes) {
                            Err("its IO thread is not running".to_string())
                        } else if !r.sql_running {
                            Err("its SQL thread is stopped".to_string())
                        } else if crate::analysis::master_name(topo, r).is_none() {
                            Err(format!(
                                "replicates from {}:{}, not from a host of the file",
                                r.master_host, r.master_port
                            ))
                        } else {
                            match r.seconds_behind_master {
                                None => Err("its lag is unknown (NULL)".to_string()),
                                Some(l) if l > max_lag => {
                                    Err(format!("{l}s behind its master (limit {max_lag}s)"))
                                }
                                Some(_) => Ok(()),
                            }
                        }
                    }
                },
            };
            (h.name.clone(), verdict)
        })
        .collect()
}

/// Where connections should go with `writer` the master and `health` the slaves' state.
/// Writer: only `writer`'s slot is on, plus the backup slot of the other member of a pair
/// whose members are both writable in the file (its own auto_increment offset keeps their
/// ids apart), or, in a Galera cluster, the backup slots of the other members (one member
/// takes the writes, so they never race certification; the proxy's health checks move them
/// to a backup when it dies). Reader: every healthy host but the writer, and the writer's backup slot (used
/// by HAProxy and nginx only when no slave is up).
pub fn routing(
    topo: &Topology,
    writer: &str,
    health: &BTreeMap<String, Result<(), String>>,
) -> Routing {
    let writer_peer = topo.host(writer).and_then(|w| w.peer.clone());
    let mut r = Routing {
        writer_host: writer.to_string(),
        writer: Vec::new(),
        reader: Vec::new(),
        reader_out: BTreeMap::new(),
    };
    let slot = |h: &crate::topology::Host, backup: bool, on: bool| Slot {
        host: h.name.clone(),
        address: h.address.clone(),
        port: h.mysql.port,
        backup,
        on,
    };
    for backup in [false, true] {
        for h in &topo.hosts {
            let standby = (h.peer.is_some()
                && writer_peer.as_deref() == Some(h.name.as_str())
                && topo.writable(h))
                || (topo.is_member(h)
                    && h.name != writer
                    && topo.host(writer).is_some_and(|w| topo.is_member(w)));
            r.writer.push(slot(
                h,
                backup,
                if backup { standby } else { h.name == writer },
            ));
        }
    }
    for backup in [false, true] {
        for h in &topo.hosts {
            let on = if backup {
                h.name == writer
            } else {
                h.name != writer && matches!(health.get(&h.name), Some(Ok(())))
            };
            r.reader.push(slot(h, backup, on));
        }
    }
    for h in &topo.hosts {
        if h.name == writer {
            continue;
        }
        match health.get(&h.name) {
            Some(Ok(())) => {}
            Some(Err(why)) => {
                r.reader_out.insert(h.name.clone(), why.clone());
            }
            None => {
                r.reader_out.insert(h.name.clone(), "not observed".into());
            }
        }
    }
    r
}

/// The topology as a promote leaves it (the file's edits applied, roles derived again), for
/// routing the endpoints before the file itself is rewritten.
pub fn topology_after(
    topo: &Topology,
    edits: &BTreeMap<String, (usize, crate::topology::rewrite::HostEdit)>,
) -> Topology {
    let mut t = topo.clone();
    for h in &mut t.hosts {
        if let Some((_, e)) = edits.get(&h.name) {
            if let Some(m) = &e.master {
                h.master = m.clone();
            }
            if let Some(ro) = e.read_only {
                h.read_only = ro;
            }
        }
    }
    let links: Vec<(String, Option<String>)> = t
        .hosts
        .iter()
        .map(|h| (h.name.clone(), h.master.clone()))
        .collect();
    for h in &mut t.hosts {
        h.slaves = links
            .iter()
            .filter(|(_, m)| m.as_deref() == Some(h.name.as_str()))
            .map(|(n, _)| n.clone())
            .collect();
        h.peer = h.master.clone().filter(|m| h.slaves.contains(m));
        h.role = match (&h.master, &h.peer, h.slaves.is_empty()) {
            (Some(_), Some(_), _) => Role::MasterMaster,
            (None, _, _) => Role::Master,
            (Some(_), None, true) => Role::Slave,
            (Some(_), None, false) => Role::Relay,
        };
    }
    t
}

/// A cluster's name as it goes into file names and HAProxy/nginx section names.
pub fn slug(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() {
        "cluster".into()
    } else {
        s
    }
}

/// Where things live on a proxy (Debian's layout).
pub mod paths {
    pub const HAPROXY_CFG: &str = "/etc/haproxy/haproxy.cfg";
    pub const HAPROXY_PID: &str = "/run/haproxy.pid";
    pub const NGINX_CONF: &str = "/etc/nginx/nginx.conf";
    pub const NGINX_DIR: &str = "/etc/nginx/repltool";
    pub const NGINX_PID: &str = "/run/nginx.pid";
    pub const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";
    pub const KEEPALIVED_CONF: &str = "/etc/keepalived/keepalived.conf";
    pub const KEEPALIVED_PID: &str = "/run/keepalived.pid";

    /// HAProxy's admin socket for one cluster's block (root only).
    pub fn haproxy_socket(cluster: &str) -> String {
        format!("/run/haproxy/repltool-{}.sock", super::slug(cluster))
    }
    /// repltool's nginx file for one cluster (included from the `stream {}` block).
    pub fn nginx_file(cluster: &str) -> String {
        format!("{NGINX_DIR}/{}.conf", super::slug(cluster))
    }
    /// keepalived's check of this proxy's endpoint.
    pub fn keepalived_check(cluster: &str) -> String {
        format!("/etc/keepalived/repltool-{}-check", super::slug(cluster))
    }
}

/// One session per proxy, like [`crate::transport::Sessions`] for the database hosts.
pub type ProxySessions = crate::transport::Sessions;

/// Open a session to a proxy the way its entry asks (SSH with verified host keys, or local).
pub fn connect(p: &Proxy, timeout: Option<Duration>) -> Result<Box<dyn HostSession>> {
    match &p.transport {
        Transport::Local => Ok(Box::new(crate::transport::local::LocalSession::new(
            &p.name, &p.address,
        ))),
        Transport::Ssh(cfg) => {
            let mut cfg = cfg.clone();
            if let Some(t) = timeout {
                cfg.connect_timeout = cfg.connect_timeout.min(t);
            }
            let s = crate::transport::ssh::SshSession::connect(
                &p.name,
                &p.address,
                &cfg,
                crate::topology::SqlRoute::Direct,
            )
            .with_context(|| format!("{}: SSH connection to {}", p.name, p.address))?;
            Ok(Box::new(s))
        }
    }
}

/// Sessions to every proxy at once; those that could not be opened, with why.
pub fn connect_all(
    topo: &Topology,
    timeout: Option<Duration>,
) -> (ProxySessions, Vec<(String, anyhow::Error)>) {
    let results = crate::par::each(&topo.proxies, |p| Ok(connect(p, timeout)));
    let mut sessions = ProxySessions::new();
    let mut failed = Vec::new();
    for (p, r) in topo.proxies.iter().zip(results) {
        match r.and_then(|x| x) {
            Ok(s) => {
                sessions.insert(p.name.clone(), std::sync::Mutex::new(s));
            }
            Err(e) => failed.push((p.name.clone(), e)),
        }
    }
    (sessions, failed)
}

#[cfg(test)]
mod tests;
