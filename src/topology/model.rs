//! The validated topology: what every stage after loading sees. Roles are derived, ids checked.

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// One replication cluster, validated. Hosts keep the order of the file.
#[derive(Debug, Clone)]
pub struct Topology {
    pub name: String,
    /// The file it was loaded from (promote rewrites it).
    pub file: PathBuf,
    pub replication: Replication,
    pub hosts: Vec<Host>,
    /// A Galera cluster: every host without `master:` is a member (`galera:` in the file).
    pub galera: Option<Galera>,
    /// `watch:` (automatic failover), if the file has it.
    pub watch: Option<Watch>,
    /// Application endpoints (`proxies:`), in file order; empty when the file has none.
    pub proxies: Vec<Proxy>,
    /// The address keepalived moves between the proxies (`vip:`).
    pub vip: Option<Vip>,
}

/// The `galera:` block: the hosts without `master:` form one Galera cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Galera {
    /// wsrep_cluster_name (default: the file's name).
    pub cluster_name: String,
    /// How a joining member gets the data (wsrep_sst_method).
    pub sst: Sst,
}

/// State snapshot transfer methods repltool configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sst {
    /// mariadb-backup streamed with socat: the donor keeps serving (default).
    Mariabackup,
    /// rsync of the datadir: the donor is blocked for the copy, but it crosses major versions.
    Rsync,
}

impl Sst {
    pub fn as_str(self) -> &'static str {
        match self {
            Sst::Mariabackup => "mariabackup",
            Sst::Rsync => "rsync",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Replication {
    pub user: String,
    pub password: Secret,
    /// GTID auto-positioning (MySQL) / MASTER_USE_GTID=slave_pos (MariaDB).
    pub gtid: bool,
    /// Replication traffic over TLS.
    pub ssl: bool,
    /// How a new slave gets its first copy of the master's data.
    pub seed: SeedMethod,
}

/// `replication.seed`: how a new slave is given the master's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SeedMethod {
    /// Physical above the measured break-even size (when the hosts allow it), else logical.
    #[default]
    Auto,
    /// A dump (mariadb-dump / mysqldump) streamed into the slave's client.
    Logical,
    /// A physical copy: a mariabackup stream on MariaDB, the clone plugin on MySQL.
    Physical,
}

impl SeedMethod {
    /// The words of the file, in the order `seed:` accepts them.
    pub const WORDS: &'static [&'static str] = &["auto", "logical", "physical"];

    pub fn from_word(w: &str) -> Option<SeedMethod> {
        match w {
            "auto" => Some(SeedMethod::Auto),
            "logical" => Some(SeedMethod::Logical),
            "physical" => Some(SeedMethod::Physical),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SeedMethod::Auto => "auto",
            SeedMethod::Logical => "logical",
            SeedMethod::Physical => "physical",
        }
    }
}

/// How repltool reaches a host's shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// Over SSH (ssh2), with verified host keys.
    Ssh(Ssh),
    /// This machine, no SSH (the lab).
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    /// None: ssh-agent, then the usual ~/.ssh keys.
    pub identity_file: Option<PathBuf>,
    pub known_hosts: PathBuf,
    pub jump: Option<Jump>,
    /// Privileged steps run through `sudo -n`.
    pub sudo: bool,
    pub connect_timeout: Duration,
}

/// A ProxyJump host: `user@host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Jump {
    pub user: String,
    pub host: String,
    pub port: u16,
}

/// How SQL reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlRoute {
    /// Through an SSH port-forward (direct-tcpip) when the host is reached over SSH; this is the
    /// default, so servers in private subnets work.
    Forward,
    /// Direct TCP to `address:port`.
    Direct,
}

/// The administrative account repltool logs in with.
#[derive(Debug, Clone)]
pub struct Mysql {
    pub user: String,
    pub password: Secret,
    pub port: u16,
    pub route: SqlRoute,
}

/// The role of a host, derived from the `master:` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Replicates from nobody.
    Master,
    /// Replicates from a master; nobody replicates from it.
    Slave,
    /// Replicates from a master and has slaves of its own (chain).
    Relay,
    /// One of two hosts that name each other.
    MasterMaster,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Slave => "slave",
            Role::Relay => "relay",
            Role::MasterMaster => "master-master",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// IP or DNS name, used for SSH and by replicas to reach this server.
    pub address: String,
    /// The host it replicates from.
    pub master: Option<String>,
    /// Explicit or derived (stable under adding and reordering hosts).
    pub server_id: u32,
    /// `read_only: true` on a master-master member makes it the passive side.
    pub read_only: Option<bool>,
    pub transport: Transport,
    pub mysql: Mysql,
    /// Where the managed fragment goes; None: detected on the host.
    pub config_file: Option<PathBuf>,
    /// How to restart the server; None: detected on the host.
    pub restart: Option<String>,
    /// The server's error log, for showing its tail when a start fails; None: detected.
    pub error_log: Option<PathBuf>,
    pub role: Role,
    /// The other member of a master-master pair.
    pub peer: Option<String>,
    /// Hosts that replicate from this one, in file order.
    pub slaves: Vec<String>,
    /// Line of the host's entry in the file (1-based), for messages.
    pub line: usize,
}

impl Topology {
    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// Whether `host` is a member of the file's Galera cluster (a host without `master:` when
    /// the file has `galera:`).
    pub fn is_member(&self, host: &Host) -> bool {
        self.galera.is_some() && host.master.is_none()
    }

    /// The Galera members, in file order (none without `galera:`).
    pub fn members(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| self.is_member(h))
    }

    pub fn proxy(&self, name: &str) -> Option<&Proxy> {
        self.proxies.iter().find(|p| p.name == name)
    }

    /// Hosts that replicate from nobody, or the writable member(s) of a pair.
    pub fn masters(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| h.master.is_none())
    }

    /// Should this host be writable (read_only cleared at runtime)?
    /// Masters yes; master-master members yes unless they set `read_only: true`.
    pub fn writable(&self, host: &Host) -> bool {
        match host.role {
            Role::Master => host.read_only != Some(true),
            Role::MasterMaster => host.read_only != Some(true),
            Role::Slave | Role::Relay => false,
        }
    }
}

/// The default server_id for a host: a hash of its name, so it stays the same when hosts are
/// added or reordered. Never 0; fits in 1..=2^32-1.
pub fn default_server_id(name: &str) -> u32 {
    // FNV-1a, folded into 1..=4_000_000_000 so the ids stay readable-ish and never 0.
    let mut h: u32 = 0x811c_9dc5;
    for b in name.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    1 + (h % 4_000_000_000)
}

/// `watch:`: automatic failover by `repltool watch`, coordinated through etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    /// etcd client URLs (`http://host:2379`).
    pub etcd: Vec<String>,
    /// Where this cluster's keys live in etcd: `<prefix>/clusters/<name>/...`.
    pub prefix: String,
    /// How often every host is observed.
    pub interval: Duration,
    /// How long a dead master must stay dead (re-observed within this window) before recovery.
    pub confirm: Duration,
    /// No second automatic recovery of the cluster within this time unless acknowledged.
    pub anti_flap: Duration,
    /// The TTL of the etcd lease behind the cluster lock (etcd's minimum is 2 s): how long a
    /// dead watcher holds the lock before another takes over.
    pub lock_ttl: Duration,
    /// `slave_net_timeout` / `replica_net_timeout` that `init` sets on every server (seconds),
    /// with a 1 s heartbeat and a 1 s connect retry on every replica.
    pub net_timeout: u32,
    pub hooks: WatchHooks,
}

/// Commands run (with `sh -c`, on the watcher's machine) around an automatic recovery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchHooks {
    pub pre_failover: Option<String>,
    pub post_failover: Option<String>,
}

/// What a `proxies:` host runs for the application endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    /// HAProxy (`mode tcp`), switched at runtime over its stats socket.
    Haproxy,
    /// nginx's `stream` module (MySQL is TCP: never `http`), switched by a graceful reload.
    Nginx,
}

impl ProxyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Haproxy => "haproxy",
            ProxyKind::Nginx => "nginx",
        }
    }
}

/// An application endpoint host (`proxies:`): reached over SSH like a database host (the
/// `defaults.ssh` apply), it runs HAProxy or nginx with a writer port (every connection to the
/// current master) and an optional reader port (over the healthy slaves).
#[derive(Debug, Clone)]
pub struct Proxy {
    pub name: String,
    pub address: String,
    pub kind: ProxyKind,
    pub writer: u16,
    pub reader: Option<u16>,
    pub transport: Transport,
    /// Line of the proxy's entry in the file (1-based), for messages.
    pub line: usize,
}

/// The address keepalived holds on one proxy and moves when that proxy (or its HAProxy or
/// nginx) dies (`vip:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vip {
    /// An IP address, without the prefix.
    pub address: String,
    /// The prefix length it is added with (32 unless written as `ADDR/NN`).
    pub prefix: u8,
    /// The interface it goes on; None: the one holding each proxy's own address.
    pub interface: Option<String>,
    /// VRRP's virtual_router_id (1..255): written, or derived from the cluster's name.
    pub router_id: u8,
}

/// The default VRRP router id of a cluster: stable, in 1..=255.
pub fn default_router_id(cluster: &str) -> u8 {
    let id = default_server_id(cluster) % 255;
    u8::try_from(id).unwrap_or(0) + 1
}
