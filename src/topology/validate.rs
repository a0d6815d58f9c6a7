//! From the mirror to the model: defaults merged into hosts, the master graph checked (unknown
//! names, self-replication, rings), roles derived, addresses and server_ids checked for clashes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::model::{
    default_server_id, Host, Jump, Mysql, Replication, Role, SeedMethod, SqlRoute, Ssh, Topology,
    Transport,
};
use super::problems::did_you_mean;
use super::raw::{At, Ctx, RawCommon, RawFile, RawHost, TransportKind};
use super::tree::Pos;
use crate::secret::Secret;

const DEFAULT_SSH_PORT: u16 = 22;
const DEFAULT_MYSQL_PORT: u16 = 3306;
const DEFAULT_CONNECT_TIMEOUT: u64 = 10;

/// The host's value if set, else the default's.
fn pick<'a, T>(host: &'a Option<At<T>>, def: &'a Option<At<T>>) -> Option<&'a At<T>> {
    host.as_ref().or(def.as_ref())
}

/// Build the model, adding every cross-host problem to `ctx`. None when anything was wrong.
pub fn build(raw: RawFile, path: &Path, ctx: &mut Ctx) -> Option<Topology> {
    let name = match &raw.name {
        Some(n) => n.v.clone(),
        None => path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "topology".to_string()),
    };

    let replication = build_replication(&raw, ctx);
    let defaults = &raw.defaults;

    let user_default = (ctx.env)("USER")
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "root".to_string());
    let mut known_hosts_default: Option<Result<PathBuf, String>> = None;

    let mut missing_password: Vec<&RawHost> = Vec::new();
    let mut hosts: Vec<Host> = Vec::with_capacity(raw.hosts.len());
    for rh in &raw.hosts {
        let c = &rh.common;
        let transport = transport(c, defaults, &user_default, &mut known_hosts_default, ctx);
        let password = match pick(&c.mysql.password, &defaults.mysql.password) {
            Some(p) => p.v.clone(),
            None => {
                // A password that was written but was bad is already reported.
                if !rh.mysql_password_given && !raw.defaults_mysql_password_given {
                    missing_password.push(rh);
                }
                Secret::default()
            }
        };
        let mysql = Mysql {
            user: pick(&c.mysql.user, &defaults.mysql.user)
                .map_or_else(|| "root".to_string(), |a| a.v.clone()),
            password,
            port: pick(&c.mysql.port, &defaults.mysql.port).map_or(DEFAULT_MYSQL_PORT, |a| a.v),
            route: pick(&c.mysql.route, &defaults.mysql.route).map_or(SqlRoute::Forward, |a| a.v),
        };
        hosts.push(Host {
            name: rh.name.clone(),
            address: rh.address.as_ref().map(|a| a.v.clone()).unwrap_or_default(),
            master: rh.master.as_ref().map(|a| a.v.clone()),
            server_id: rh
                .server_id
                .as_ref()
                .map_or_else(|| default_server_id(&rh.name), |a| a.v),
            read_only: rh.read_only.as_ref().map(|a| a.v),
            transport,
            mysql,
            config_file: pick(&c.config_file, &defaults.config_file).map(|a| a.v.clone()),
            restart: pick(&c.restart, &defaults.restart).map(|a| a.v.clone()),
            error_log: pick(&c.error_log, &defaults.error_log).map(|a| a.v.clone()),
            // Filled in by derive_roles.
            role: Role::Master,
            peer: None,
            slaves: Vec::new(),
            line: rh.pos.line,
        });
    }
    report_missing_mysql_password(&raw, &missing_password, ctx);

    derive_roles(&raw.hosts, &mut hosts, ctx);
    check_read_only(&raw.hosts, &hosts, ctx);
    check_addresses(&raw, &hosts, ctx);
    check_server_ids(&raw.hosts, &hosts, ctx);
    let galera = super::galera::build(&raw, &name, &hosts, ctx);
    let (proxies, vip) = super::proxies::build(
        &raw,
        &hosts,
        &name,
        &mut |c: &RawCommon, ctx: &mut Ctx| {
            transport(c, defaults, &user_default, &mut known_hosts_default, ctx)
        },
        ctx,
    );

    let replication = replication?;
    if !ctx.problems.is_empty() {
        return None;
    }
    Some(Topology {
        name,
        file: path.to_path_buf(),
        replication,
        hosts,
        galera,
        watch: raw.watch.clone(),
        proxies,
        vip,
    })
}

/// How a host (or a proxy) is reached: its own `transport`/`ssh` keys over the defaults'.
pub(super) fn transport(
    c: &RawCommon,
    defaults: &RawCommon,
    user_default: &str,
    known_hosts_default: &mut Option<Result<PathBuf, String>>,
    ctx: &mut Ctx,
) -> Transport {
    match pick(&c.transport, &defaults.transport).map(|a| a.v) {
        Some(TransportKind::Local) => Transport::Local,
        Some(TransportKind::Ssh) | None => {
            let user = pick(&c.ssh.user, &defaults.ssh.user)
                .map(|a| a.v.clone())
                .unwrap_or_else(|| user_default.to_string());
            let known_hosts = match pick(&c.ssh.known_hosts, &defaults.ssh.known_hosts) {
                Some(a) => a.v.clone(),
                None => {
                    let d = known_hosts_default.get_or_insert_with(|| {
                        super::env::expand_home("~/.ssh/known_hosts", ctx.env)
                    });
                    match d {
                        Ok(p) => p.clone(),
                        Err(e) => {
                            let e = format!("{e} (needed for the default ~/.ssh/known_hosts)");
                            ctx.problems
                                .add(defaults.pos, "defaults.ssh.known_hosts", e);
                            PathBuf::new()
                        }
                    }
                }
            };
            let jump = pick(&c.ssh.jump, &defaults.ssh.jump).map(|a| Jump {
                user: a.v.user.clone().unwrap_or_else(|| user.clone()),
                host: a.v.host.clone(),
                port: a.v.port,
            });
            Transport::Ssh(Ssh {
                port: pick(&c.ssh.port, &defaults.ssh.port).map_or(DEFAULT_SSH_PORT, |a| a.v),
                identity_file: pick(&c.ssh.identity_file, &defaults.ssh.identity_file)
                    .map(|a| a.v.clone()),
                known_hosts,
                jump,
                sudo: pick(&c.ssh.sudo, &defaults.ssh.sudo).is_some_and(|a| a.v),
                connect_timeout: Duration::from_secs(
                    pick(&c.ssh.connect_timeout, &defaults.ssh.connect_timeout)
                        .map_or(DEFAULT_CONNECT_TIMEOUT, |a| a.v),
                ),
                user,
            })
        }
    }
}

fn build_replication(raw: &RawFile, ctx: &mut Ctx) -> Option<Replication> {
    let r = &raw.replication;
    let password = match &r.password {
        Some(p) => Some(p.v.clone()),
        None => {
            if !r.password_given {
                let pos = if r.pos == Pos::default() {
                    Pos { line: 1, col: 1 }
                } else {
                    r.pos
                };
                ctx.problems.add(
                    pos,
                    "replication.password",
                    "missing: the replication user needs a password \
                     (password: ${REPL_PASSWORD} or password_file: PATH)",
                );
            }
            None
        }
    };
    Some(Replication {
        user: r
            .user
            .as_ref()
            .map_or_else(|| "repl".to_string(), |a| a.v.clone()),
        password: password?,
        gtid: r.gtid.as_ref().is_some_and(|a| a.v),
        ssl: r.ssl.as_ref().is_some_and(|a| a.v),
        seed: r
            .seed
            .as_ref()
            .and_then(|a| SeedMethod::from_word(&a.v))
            .unwrap_or_default(),
    })
}

fn report_missing_mysql_password(raw: &RawFile, missing: &[&RawHost], ctx: &mut Ctx) {
    if missing.is_empty() {
        return;
    }
    let how = "repltool logs in with it (password: ${MYSQL_ADMIN_PASSWORD}, \
               password_file: PATH, or password: \"\" for an empty password)";
    if missing.len() == raw.hosts.len() {
        let d = &raw.defaults;
        let pos = d
            .mysql_pos
            .or((d.pos != Pos::default()).then_some(d.pos))
            .unwrap_or(Pos { line: 1, col: 1 });
        ctx.problems
            .add(pos, "defaults.mysql.password", format!("missing: {how}"));
        return;
    }
    for h in missing {
        let pos = h.common.mysql_pos.unwrap_or(h.pos);
        ctx.problems.add(
            pos,
            format!("hosts.{}.mysql.password", h.name),
            format!("missing (and no defaults.mysql.password): {how}"),
        );
    }
}

/// Masters, slaves, relays and master-master pairs, from the `master:` lines alone.
fn derive_roles(raw: &[RawHost], hosts: &mut [Host], ctx: &mut Ctx) {
    let index: HashMap<&str, usize> = raw
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.as_str(), i))
        .collect();
    let names: Vec<&str> = raw.iter().map(|h| h.name.as_str()).collect();
    let mut master: Vec<Option<usize>> = vec![None; raw.len()];
    for (i, h) in raw.iter().enumerate() {
        let Some(m) = &h.master else { continue };
        if m.v == h.name {
            ctx.problems.add(
                m.pos,
                &m.key,
                format!(
                    "`{}` names itself: a host cannot replicate from itself",
                    h.name
                ),
            );
            continue;
        }
        match index.get(m.v.as_str()) {
            Some(&j) => master[i] = Some(j),
            None => {
                let mut msg = format!("no host named `{}`", m.v);
                let others = names.iter().copied().filter(|n| *n != h.name);
                if let Some(near) = did_you_mean(&m.v, others) {
                    msg.push_str(&format!("; did you mean `{near}`?"));
                } else {
                    msg.push_str(&format!(" (hosts: {})", names.join(", ")));
                }
                ctx.problems.add(m.pos, &m.key, msg);
            }
        }
    }

    // Each host has at most one master, so every cycle is found by walking master links.
    let mut state = vec![0u8; raw.len()]; // 0 new, 1 on the current walk, 2 done
    let mut cycles: Vec<Vec<usize>> = Vec::new();
    for start in 0..raw.len() {
        let mut walk = Vec::new();
        let mut cur = Some(start);
        while let Some(i) = cur {
            if state[i] == 2 {
                break;
            }
            if state[i] == 1 {
                if let Some(p) = walk.iter().position(|&w| w == i) {
                    cycles.push(walk[p..].to_vec());
                }
                break;
            }
            state[i] = 1;
            walk.push(i);
            cur = master[i];
        }
        for w in walk {
            state[w] = 2;
        }
    }
    let mut peer: Vec<Option<usize>> = vec![None; raw.len()];
    for cycle in &cycles {
        if let [a, b] = cycle[..] {
            peer[a] = Some(b);
            peer[b] = Some(a);
            continue;
        }
        // Name the ring from its first host in file order, following master links.
        let Some(first) = cycle.iter().copied().min() else {
            continue;
        };
        let mut ring = vec![first];
        let mut cur = master[first];
        while let Some(c) = cur {
            if c == first || ring.len() > cycle.len() {
                break;
            }
            ring.push(c);
            cur = master[c];
        }
        let steps: Vec<String> = ring
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                let m = ring[(k + 1) % ring.len()];
                format!("{} replicates from {}", names[i], names[m])
            })
            .collect();
        if let Some(m) = &raw[first].master {
            ctx.problems.add(
                m.pos,
                &m.key,
                format!(
                    "replication cycle of {} hosts ({}): only two hosts may name each other \
                     (master-master)",
                    ring.len(),
                    steps.join(", ")
                ),
            );
        }
    }

    // Slaves of each host in file order, built in one pass (not one scan per host).
    let mut slaves: Vec<Vec<String>> = vec![Vec::new(); raw.len()];
    for (j, m) in master.iter().enumerate() {
        if let Some(i) = *m {
            slaves[i].push(names[j].to_string());
        }
    }
    for (i, h) in hosts.iter_mut().enumerate() {
        h.slaves = std::mem::take(&mut slaves[i]);
        h.peer = peer[i].map(|p| names[p].to_string());
        h.role = if peer[i].is_some() {
            Role::MasterMaster
        } else if raw[i].master.is_none() {
            Role::Master
        } else if h.slaves.is_empty() {
            Role::Slave
        } else {
            Role::Relay
        };
    }
}

fn check_read_only(raw: &[RawHost], hosts: &[Host], ctx: &mut Ctx) {
    for (rh, h) in raw.iter().zip(hosts) {
        let Some(ro) = &rh.read_only else { continue };
        match h.role {
            Role::Slave | Role::Relay if !ro.v => ctx.problems.add(
                ro.pos,
                &ro.key,
                "`read_only: false` on a host with a master: slaves are always read-only",
            ),
            Role::MasterMaster if ro.v => {
                let Some(peer) = h.peer.as_deref() else {
                    continue;
                };
                let peer_ro = hosts
                    .iter()
                    .find(|p| p.name == peer)
                    .and_then(|p| p.read_only);
                // Report once, on the second member of the pair.
                let first_of_pair = hosts.iter().position(|x| x.name == h.name)
                    < hosts.iter().position(|x| x.name == peer);
                if peer_ro == Some(true) && !first_of_pair {
                    ctx.problems.add(
                        ro.pos,
                        &ro.key,
                        format!(
                            "both `{}` and `{}` are read_only: a master-master pair needs one \
                             writable member",
                            peer, h.name
                        ),
                    );
                }
            }
            _ => {}
        }
    }
}

/// Two entries that reach the same server would fight over it.
fn check_addresses(raw: &RawFile, hosts: &[Host], ctx: &mut Ctx) {
    if raw.defaults_broken {
        return;
    }
    type Place = (String, u16, Option<(u16, Option<(String, u16)>)>);
    let mut seen: HashMap<Place, usize> = HashMap::new();
    for (i, (rh, h)) in raw.hosts.iter().zip(hosts).enumerate() {
        let Some(addr) = &rh.address else { continue };
        if rh.place_unsure {
            continue;
        }
        // SQL through an SSH forward lands on whatever machine that SSH endpoint is, so the
        // ssh port (and jump host) is part of the identity; direct SQL and the lab are not.
        let via = match (&h.transport, h.mysql.route) {
            (Transport::Ssh(s), SqlRoute::Forward) => Some((
                s.port,
                s.jump
                    .as_ref()
                    .map(|j| (j.host.to_ascii_lowercase(), j.port)),
            )),
            _ => None,
        };
        let place = (h.address.to_ascii_lowercase(), h.mysql.port, via);
        match seen.get(&place) {
            Some(&j) => ctx.problems.add(
                addr.pos,
                &addr.key,
                format!(
                    "`{}` has the same address and ports as `{}` (line {}): two entries for \
                     one server",
                    h.name, hosts[j].name, hosts[j].line
                ),
            ),
            None => {
                seen.insert(place, i);
            }
        }
    }
}

fn check_server_ids(raw: &[RawHost], hosts: &[Host], ctx: &mut Ctx) {
    let mut seen: HashMap<u32, usize> = HashMap::new();
    for (i, (rh, h)) in raw.iter().zip(hosts).enumerate() {
        // A server_id that failed to parse would look derived: skip, it is reported already.
        if rh.server_id_bad {
            continue;
        }
        let Some(&j) = seen.get(&h.server_id) else {
            seen.insert(h.server_id, i);
            continue;
        };
        let other = &hosts[j];
        let (ours, theirs) = (&rh.server_id, &raw[j].server_id);
        match (ours, theirs) {
            (Some(a), Some(_)) => ctx.problems.add(
                a.pos,
                &a.key,
                format!(
                    "server_id {} is already used by `{}` (line {}); server_ids must be unique",
                    h.server_id, other.name, other.line
                ),
            ),
            (Some(a), None) => ctx.problems.add(
                a.pos,
                &a.key,
                format!(
                    "server_id {} is the default server_id of `{}` (line {}); pick another",
                    h.server_id, other.name, other.line
                ),
            ),
            (None, Some(b)) => ctx.problems.add(
                b.pos,
                &b.key,
                format!(
                    "server_id {} is the default server_id of `{}` (line {}); pick another",
                    h.server_id, h.name, h.line
                ),
            ),
            (None, None) => ctx.problems.add(
                rh.pos,
                format!("hosts.{}.server_id", h.name),
                format!(
                    "the default server_ids of `{}` and `{}` collide; set server_id on one",
                    other.name, h.name
                ),
            ),
        }
    }
}
