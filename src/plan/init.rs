//! The init planner: what to change so the servers match the file. Pure: Topology + facts ->
//! Plan, or every refusal at once.

use std::collections::{BTreeSet, HashMap};

use anyhow::Result;

use super::{Action, LinkSlave, Plan, Seed, Step};
use crate::flavor::{ChangeMaster, FragmentSettings, Sql, StartAt};
use crate::observe::{ConfigTarget, Facts, IoThread, SqlFacts};
use crate::topology::{Host, Role, Topology};

/// The marker every file repltool writes carries; a file without it is not ours.
pub const MANAGED_MARKER: &str = "Managed by repltool";
pub const BLOCK_BEGIN: &str = "# BEGIN repltool managed block (Managed by repltool: do not edit)";
pub const BLOCK_END: &str = "# END repltool managed block";

/// Wave numbers: config and restarts, then dynamic settings and users, then links by depth,
/// then making masters writable, then verification.
pub const WAVE_CONFIG: u32 = 0;
pub const WAVE_SETTINGS: u32 = 1;
/// Masters that nothing is copied into: writable as soon as their restart and users are done,
/// so applications are not refused for the length of a seed.
pub const WAVE_EARLY_WRITABLE: u32 = 2;
pub const WAVE_LINKS: u32 = 10;
pub const WAVE_WRITABLE: u32 = 100;
pub const WAVE_VERIFY: u32 = 101;

pub struct InitOptions {
    pub force: bool,
}

/// The fragment settings the file implies for `host`. The binary log gets an absolute path in
/// the server's datadir so that a failover can find it on disk from the fragment alone when the
/// server is dead.
pub fn fragment_settings(
    topo: &Topology,
    host: &Host,
    datadir: &str,
    listen_all: bool,
) -> FragmentSettings {
    let auto_increment = if host.role == Role::MasterMaster {
        Some((2, pair_offset(topo, host)))
    } else {
        None
    };
    FragmentSettings {
        host_name: host.name.clone(),
        server_id: host.server_id,
        report_host: host.address.clone(),
        log_bin: if datadir.is_empty() {
            "mysql-bin".into()
        } else {
            format!("{}/mysql-bin", datadir.trim_end_matches('/'))
        },
        relay_log: "relay-bin".into(),
        log_slave_updates: matches!(host.role, Role::Relay | Role::MasterMaster)
            || (topo.replication.gtid && host.master.is_some()),
        auto_increment,
        gtid: topo.replication.gtid,
        bind_address: listen_all.then(|| "0.0.0.0".to_string()),
        net_timeout: topo.watch.as_ref().map(|w| w.net_timeout),
    }
}

/// The bind_address repltool writes when a server listens on loopback only.
const LISTEN_ALL: &str = "bind_address = 0.0.0.0";

fn is_loopback(a: &str) -> bool {
    let a = a.trim();
    a == "localhost" || a == "::1" || a.starts_with("127.")
}

/// Must the server listen beyond loopback? When replicas (or, after a promote, any host) reach
/// it at a non-loopback address and it listens on loopback only (Debian's default
/// `bind-address = 127.0.0.1`); and, once repltool wrote that, for as long as it is in the
/// fragment (the observed value is then no longer loopback).
fn needs_listen_all(host: &Host, bind: &str, current: Option<&str>) -> bool {
    if is_loopback(&host.address) {
        return false;
    }
    let loopback_only = !bind.trim().is_empty() && bind.split(',').all(is_loopback);
    loopback_only || current.map(|c| c.contains(LISTEN_ALL)).unwrap_or(false)
}

/// auto_increment_offset of a master-master member: 1 for the first in file order, 2 for the other.
fn pair_offset(topo: &Topology, host: &Host) -> u32 {
    match &host.peer {
        Some(peer) => {
            let me = topo.hosts.iter().position(|h| h.name == host.name);
            let other = topo.hosts.iter().position(|h| &h.name == peer);
            if me < other {
                1
            } else {
                2
            }
        }
        None => 1,
    }
}

/// Put `block` (a `[mysqld]` fragment) into a main config file as a marked block, replacing an
/// earlier block, keeping everything else as it is.
pub fn splice_block(current: &str, fragment: &str) -> String {
    let mut kept = String::new();
    let mut inside = false;
    for line in current.lines() {
        if line.trim_end() == BLOCK_BEGIN {
            inside = true;
            continue;
        }
        if inside {
            if line.trim_end() == BLOCK_END {
                inside = false;
            }
            continue;
        }
        kept.push_str(line);
        kept.push('\n');
    }
    let kept = kept.trim_end_matches('\n');
    let mut out = String::from(kept);
    if !out.is_empty() {
        out.push_str("\n\n");
    }
    out.push_str(BLOCK_BEGIN);
    out.push('\n');
    // The fragment's own header comments are redundant inside the block.
    for line in fragment.lines().skip_while(|l| l.starts_with('#')) {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(BLOCK_END);
    out.push('\n');
    out
}

enum LinkState<'a> {
    New,
    Existing(&'a crate::observe::ReplicaStatus),
    Elsewhere(&'a crate::observe::ReplicaStatus),
}

fn link_state<'a>(sql: &'a SqlFacts, master: &Host) -> LinkState<'a> {
    match &sql.replica {
        None => LinkState::New,
        Some(r) if r.master_host.is_empty() => LinkState::New,
        Some(r) if r.master_host == master.address && r.master_port == master.mysql.port => {
            LinkState::Existing(r)
        }
        Some(r) => LinkState::Elsewhere(r),
    }
}

/// Plan `repltool init`. Every refusal is collected; any refusal fails the whole plan.
pub fn plan_init(
    topo: &Topology,
    facts: &HashMap<String, Facts>,
    opts: &InitOptions,
) -> Result<Plan> {
    let mut plan = Plan::default();
    let mut refusals: Vec<String> = Vec::new();
    let sqlf = |name: &str| facts.get(name).and_then(|f| f.sql.as_ref());
    for (n, f) in facts {
        if let Some(s) = &f.sql {
            plan.words.insert(n.clone(), s.flavor.words());
        }
    }

    for h in &topo.hosts {
        if sqlf(&h.name).is_none() {
            let why = facts
                .get(&h.name)
                .and_then(|f| f.sql_error.clone())
                .unwrap_or_else(|| "not observed".into());
            refusals.push(format!("{}: could not observe the server: {why}", h.name));
        }
    }
    if !refusals.is_empty() {
        return Err(crate::error::input(refusals.join("\n")));
    }

    // Which member of each master-master pair holds the data the other is seeded from.
    let mut seed_side: HashMap<String, bool> = HashMap::new();
    for h in topo.hosts.iter().filter(|h| h.role == Role::MasterMaster) {
        let peer = h.peer.as_deref().unwrap_or_default();
        let (Some(me), Some(other)) = (sqlf(&h.name), sqlf(peer)) else {
            continue;
        };
        let mine = match (me.has_user_data, other.has_user_data) {
            (true, false) => true,
            (false, true) => false,
            _ => {
                let a = topo.hosts.iter().position(|x| x.name == h.name);
                let b = topo.hosts.iter().position(|x| x.name == peer);
                a < b
            }
        };
        seed_side.insert(h.name.clone(), mine);
        if me.has_user_data && other.has_user_data && mine {
            let converged = matches!(link_state(other, h), LinkState::Existing(_))
                || matches!(
                    link_state(me, topo.host(peer).unwrap_or(h)),
                    LinkState::Existing(_)
                );
            if !converged {
                refusals.push(format!(
                    "{} and {}: both members of the master-master pair already hold data; repltool \
                     will not merge two data sets. Empty one of them (or make it a copy of the other) \
                     and run init again",
                    h.name, peer
                ));
            }
        }
    }

    // Depth of each host along the replication edges (the pair's way back is one deeper).
    let mut depth: HashMap<String, u32> = HashMap::new();
    fn depth_of(
        topo: &Topology,
        name: &str,
        seed_side: &HashMap<String, bool>,
        seen: &mut Vec<String>,
    ) -> u32 {
        let Some(h) = topo.host(name) else { return 0 };
        if seen.iter().any(|s| s == name) {
            return 0;
        }
        seen.push(name.to_string());
        let d = match (&h.master, h.role) {
            (None, _) => 0,
            (Some(_), Role::MasterMaster) if seed_side.get(name) == Some(&true) => {
                // The seed side replicates from its peer last, after the peer is seeded.
                2
            }
            (Some(_), Role::MasterMaster) => 1,
            (Some(m), _) => depth_of(topo, m, seed_side, seen) + 1,
        };
        seen.pop();
        d
    }
    for h in &topo.hosts {
        depth.insert(
            h.name.clone(),
            depth_of(topo, &h.name, &seed_side, &mut Vec::new()),
        );
    }

    // Will the host hold user data once its own seeding (if any) is done?
    let mut new_links: HashMap<String, bool> = HashMap::new(); // slave -> seeded
    let mut restarted: BTreeSet<String> = BTreeSet::new();

    // Config, restarts, dynamic settings, users. A Galera member's configuration, restarts and
    // writability are the Galera plan's (plan::galera); here only its asynchronous replicas.
    for h in &topo.hosts {
        let member = topo.is_member(h);
        let f = &facts[&h.name];
        let sql = sqlf(&h.name).expect("checked above");
        let listen_all = needs_listen_all(
            h,
            &sql.bind_address,
            f.config.as_ref().and_then(|c| c.current.as_deref()),
        );
        let settings = fragment_settings(topo, h, &sql.datadir, listen_all);
        let bind_change = listen_all && sql.bind_address.split(',').all(is_loopback) && !member;
        if bind_change {
            plan.warnings.push(format!(
                "{}: the server listens on {} only, so no replica could reach it at {}; repltool \
                 sets bind_address = 0.0.0.0 (a restart). Keep port {} firewalled to your hosts",
                h.name, sql.bind_address, h.address, h.mysql.port
            ));
        }
        let fragment = sql.flavor.fragment(&settings);
        let Some(cfg) = f.config.as_ref() else {
            refusals.push(format!("{}: the configuration layout was not read", h.name));
            continue;
        };
        let new_content = match &cfg.target {
            ConfigTarget::Fragment(_) => fragment.clone(),
            ConfigTarget::Block(_) => splice_block(cfg.current.as_deref().unwrap_or(""), &fragment),
        };
        // With `watch:`, the first time the fragment gets the net timeout: apply it now, and
        // give the host's existing replication link the watcher's heartbeat and retry.
        let retune = settings.net_timeout.is_some_and(|t| {
            let line = format!("{} = {t}", sql.flavor.net_timeout_var());
            !cfg.current.as_deref().is_some_and(|c| c.contains(&line))
        });
        if cfg.current.as_deref() != Some(new_content.as_str()) && !member {
            if let (ConfigTarget::Fragment(p), Some(cur)) = (&cfg.target, &cfg.current) {
                if !cur.contains(MANAGED_MARKER) {
                    refusals.push(format!(
                        "{}: {} exists and was not written by repltool; it is never overwritten \
                         silently. Move it away or set `config_file:` to another path",
                        h.name,
                        p.display()
                    ));
                }
            }
            plan.steps.push(Step {
                wave: WAVE_CONFIG,
                host: h.name.clone(),
                action: Action::WriteConfig {
                    target: cfg.target.clone(),
                    contents: new_content,
                    previous: cfg.current.clone(),
                },
            });
        }
        let lsu_missing = settings.effective_log_slave_updates() && !sql.log_slave_updates;
        // MySQL 8+ logs by default, as `binlog.*`: the fragment's `log_bin` (an absolute base
        // that a failover reads from disk when the server is down) takes effect only after a
        // restart.
        let moved_log = sql.log_bin
            && !sql.log_bin_basename.is_empty()
            && settings.log_bin.starts_with('/')
            && sql.log_bin_basename != settings.log_bin;
        let need_restart = (!sql.log_bin || lsu_missing || bind_change || moved_log) && !member;
        if need_restart {
            match &cfg.restart {
                Some(cmd) => {
                    let mut expect = vec![
                        ("server_id".to_string(), h.server_id.to_string()),
                        ("log_bin".to_string(), "1".to_string()),
                        ("binlog_format".to_string(), "ROW".to_string()),
                    ];
                    if settings.effective_log_slave_updates() {
                        expect.push((sql.flavor.log_slave_updates_var().to_string(), "1".into()));
                    }
                    if let Some(b) = &settings.bind_address {
                        expect.push(("bind_address".to_string(), b.clone()));
                    }
                    plan.steps.push(Step {
                        wave: WAVE_CONFIG,
                        host: h.name.clone(),
                        action: Action::Restart {
                            command: cmd.clone(),
                            error_log: h.error_log.clone().or_else(|| sql.error_log.clone()),
                            expect,
                            config_file: cfg.target.path().to_path_buf(),
                        },
                    });
                    restarted.insert(h.name.clone());
                }
                None => refusals.push(format!(
                    "{}: {} needs a server restart and no restart command was found (systemd is not \
                     PID 1 and no service script exists); set `restart:` for this host",
                    h.name,
                    if !sql.log_bin {
                        "enabling the binary log"
                    } else if bind_change {
                        "listening beyond 127.0.0.1"
                    } else {
                        "enabling log_slave_updates"
                    }
                )),
            }
        }

        let mut dynamic: Vec<Sql> = Vec::new();
        if !need_restart && !member {
            if sql.server_id != h.server_id {
                dynamic.push(sql.flavor.set_server_id(h.server_id));
            }
            if !sql.binlog_format.eq_ignore_ascii_case("ROW") {
                dynamic.push(sql.flavor.set_binlog_format_row());
            }
            if let Some((inc, off)) = settings.auto_increment {
                if sql.auto_increment_increment != inc || sql.auto_increment_offset != off {
                    dynamic.extend(sql.flavor.set_auto_increment(inc, off));
                }
            }
            if !topo.writable(h) && !sql.read_only {
                dynamic.extend(sql.flavor.set_read_only(true));
            }
        }
        if let (true, Some(t)) = (retune, settings.net_timeout) {
            dynamic.push(sql.flavor.set_net_timeout(t));
            let linked = h
                .master
                .as_ref()
                .and_then(|m| topo.host(m))
                .is_some_and(|m| matches!(link_state(sql, m), LinkState::Existing(_)));
            if linked {
                dynamic.push(sql.flavor.stop_replica());
                dynamic.push(sql.flavor.change_master_timing(1, 1.0));
                dynamic.push(sql.flavor.start_replica());
            }
        }
        if !dynamic.is_empty() {
            plan.steps.push(Step {
                wave: WAVE_SETTINGS,
                host: h.name.clone(),
                action: Action::Sql {
                    what: "apply dynamic settings".into(),
                    stmts: dynamic,
                    writes: false,
                },
            });
        }

        // The replication user, once per distinct replica address.
        let mut addrs: Vec<&str> = Vec::new();
        for s in &h.slaves {
            if let Some(sh) = topo.host(s) {
                if !addrs.contains(&sh.address.as_str()) {
                    addrs.push(&sh.address);
                }
            }
        }
        let mut users: Vec<Sql> = Vec::new();
        for a in addrs {
            let exists = sql.repl_user_hosts.iter().any(|x| x == a);
            let wrong_pw = sql.repl_password_mismatch.iter().any(|x| x == a);
            if !exists || wrong_pw {
                users.extend(sql.flavor.create_repl_user(
                    &topo.replication.user,
                    a,
                    &topo.replication.password,
                ));
            }
        }
        if !users.is_empty() {
            plan.steps.push(Step {
                wave: WAVE_SETTINGS,
                host: h.name.clone(),
                action: Action::Sql {
                    what: format!(
                        "replication user {} (REPLICATION SLAVE only, per replica address)",
                        topo.replication.user
                    ),
                    stmts: users,
                    writes: true,
                },
            });
        }
    }

    // Links, master by master, in depth order.
    let mut links: HashMap<(String, u32), Vec<LinkSlave>> = HashMap::new();
    let mut seeds: HashMap<(String, u32), bool> = HashMap::new();
    let mut verify_slaves: Vec<String> = Vec::new();
    let mut hosts_by_depth: Vec<&Host> = topo.hosts.iter().collect();
    hosts_by_depth.sort_by_key(|h| depth[&h.name]);
    for s in hosts_by_depth {
        let Some(mname) = &s.master else { continue };
        let Some(m) = topo.host(mname) else { continue };
        let ssql = sqlf(&s.name).expect("checked");
        let msql = sqlf(mname).expect("checked");
        let d = depth[&s.name];
        let wave = WAVE_LINKS + d;
        let state = link_state(ssql, m);
        let rewire = match state {
            LinkState::Existing(r) => {
                if r.io_running == Some(IoThread::Yes) && r.sql_running {
                    plan.unchanged.push(format!(
                        "{} replicates from {} (both threads running)",
                        s.name, m.name
                    ));
                } else {
                    if !r.last_io_error.is_empty() || !r.last_sql_error.is_empty() {
                        plan.warnings.push(format!(
                            "{}: replication from {} is stopped with an error: {}{}",
                            s.name, m.name, r.last_io_error, r.last_sql_error
                        ));
                    }
                    plan.steps.push(Step {
                        wave,
                        host: s.name.clone(),
                        action: Action::StartReplica {
                            stmt: ssql.flavor.start_replica(),
                        },
                    });
                    verify_slaves.push(s.name.clone());
                }
                continue;
            }
            LinkState::Elsewhere(r) => {
                if !opts.force {
                    refusals.push(format!(
                        "{}: replicates from {}:{} now, but the file says {} ({}:{}); repltool does not \
                         rewire running replication silently. Check the file, or run with --force to \
                         stop that replication and re-seed {} from {}",
                        s.name, r.master_host, r.master_port, m.name, m.address, m.mysql.port, s.name, m.name
                    ));
                    continue;
                }
                true
            }
            LinkState::New => false,
        };
        // A server that cannot read its master's binary log (MySQL from MariaDB, a replica
        // older than its master) is refused before anything changes.
        if let Err(why) = ssql.flavor.can_replicate_from(&msql.flavor) {
            let mariadb_master = ssql.flavor.cannot_read(&msql.flavor);
            if mariadb_master || !opts.force {
                refusals.push(format!(
                    "{}: {why}{}",
                    s.name,
                    if mariadb_master {
                        ""
                    } else {
                        " (--force to link them anyway)"
                    }
                ));
                continue;
            }
            plan.warnings.push(format!("--force: {}: {why}", s.name));
        }
        // A former master demoted by promote: rejoin at the recorded position, never re-seed,
        // but only if it is the same server with the same binary log (a machine rebuilt under
        // the same name has neither: it is seeded like any new slave).
        let record = msql
            .promotions
            .iter()
            .rev()
            .find(|p| p.old_master == s.name && p.new_master == m.name);
        let record = match record {
            Some(pr) => match rejoin_mismatch(pr, ssql) {
                None => Some(pr),
                Some(why) => {
                    plan.warnings.push(format!(
                        "{}: a promotion to {} is recorded for it, but it is not the server that \
                         was promoted away ({why}): it is seeded as a new slave, not rejoined",
                        s.name, m.name
                    ));
                    None
                }
            },
            None => None,
        };
        if let Some(pr) = record {
            if !rewire {
                plan.steps.push(Step {
                    wave,
                    host: s.name.clone(),
                    action: Action::Rejoin {
                        slave: s.name.clone(),
                        change: change_master_to(topo, m, &pr.new_pos.0, pr.new_pos.1),
                        from: pr.old_pos.clone(),
                    },
                });
                verify_slaves.push(s.name.clone());
                new_links.insert(s.name.clone(), ssql.has_user_data);
                continue;
            }
        }
        // Seed when the master holds (or will hold) data, except the pair's way back.
        let back_edge = s.role == Role::MasterMaster && seed_side.get(&s.name) == Some(&true);
        // A Galera member always holds repltool's schema (its canary): a new replica gets a
        // copy of it, since the statements that created it are not in the binary log it reads.
        let galera_schema = topo.is_member(m)
            && msql
                .databases
                .iter()
                .any(|d| d == crate::flavor::CANARY_SCHEMA)
            && !ssql
                .databases
                .iter()
                .any(|d| d == crate::flavor::CANARY_SCHEMA);
        let master_has_data =
            msql.has_user_data || new_links.get(mname).copied().unwrap_or(false) || galera_schema;
        let seed = master_has_data && !back_edge;
        if seed && ssql.has_user_data && !opts.force {
            refusals.push(format!(
                "{}: already holds databases of its own; seeding it from {} would overwrite them. \
                 Empty it, or run with --force",
                s.name, m.name
            ));
            continue;
        }
        new_links.insert(s.name.clone(), seed || ssql.has_user_data);
        // The coordinates come from the snapshot at execution time.
        let change = change_master_to(topo, m, "", 0);
        let key = (m.name.clone(), wave);
        links.entry(key.clone()).or_default().push(LinkSlave {
            host: s.name.clone(),
            change,
            allowed_master: if rewire {
                None
            } else {
                Some((m.address.clone(), m.mysql.port))
            },
            rewire,
        });
        *seeds.entry(key).or_insert(false) |= seed;
        verify_slaves.push(s.name.clone());
    }
    let mut link_keys: Vec<(String, u32)> = links.keys().cloned().collect();
    link_keys.sort_by_key(|(m, w)| (*w, topo.hosts.iter().position(|h| &h.name == m)));
    for key in link_keys {
        let slaves = links.remove(&key).unwrap_or_default();
        let seed = if seeds.get(&key).copied().unwrap_or(false) {
            Some(Seed {
                method: topo.replication.seed,
                databases_hint: Vec::new(),
                hold_lock: false,
            })
        } else {
            None
        };
        plan.steps.push(Step {
            wave: key.1,
            host: key.0,
            action: Action::Link { slaves, seed },
        });
    }

    // Masters writable once restarted and given their users; a pair member that is seeded
    // now only at the end, so it never takes writes before it holds its peer's data.
    let linked: BTreeSet<String> = plan
        .steps
        .iter()
        .flat_map(|st| match &st.action {
            Action::Link {
                slaves,
                seed: Some(_),
            } => slaves.iter().map(|l| l.host.clone()).collect(),
            _ => Vec::new(),
        })
        .collect();
    for h in topo
        .hosts
        .iter()
        .filter(|h| topo.writable(h) && !topo.is_member(h))
    {
        let sql = sqlf(&h.name).expect("checked");
        if sql.read_only || restarted.contains(&h.name) {
            plan.steps.push(Step {
                wave: if linked.contains(&h.name) {
                    WAVE_WRITABLE
                } else {
                    WAVE_EARLY_WRITABLE
                },
                host: h.name.clone(),
                action: Action::MakeWritable {
                    stmts: sql.flavor.set_read_only(false),
                },
            });
        }
    }

    if !refusals.is_empty() {
        // A refusal: the command ran and found the cluster not safe to change (exit 1).
        return Err(crate::error::problem(refusals.join("\n")));
    }
    if !plan.steps.is_empty() {
        let touched: BTreeSet<&str> = plan.steps.iter().map(|s| s.host.as_str()).collect();
        // Verify every slave whose link or server changed, with a canary from each writable
        // master upstream of one.
        let mut slaves: Vec<String> = verify_slaves;
        for h in &topo.hosts {
            if h.master.is_some() && touched.contains(h.name.as_str()) && !slaves.contains(&h.name)
            {
                slaves.push(h.name.clone());
            }
        }
        let canary_from: Vec<String> = topo
            .hosts
            .iter()
            .filter(|h| topo.writable(h))
            .filter(|h| downstream(topo, &h.name).iter().any(|d| slaves.contains(d)))
            .map(|h| h.name.clone())
            .collect();
        if !slaves.is_empty() {
            plan.steps.push(Step {
                wave: WAVE_VERIFY,
                host: topo.hosts[0].name.clone(),
                action: Action::Verify {
                    slaves,
                    canary_from,
                },
            });
        }
    }
    Ok(plan)
}

/// Why a server is not the former master a promotion record names (None: it is): another
/// server_id or server_uuid, or a binary log without the recorded position (a rebuilt machine
/// starts a fresh `mysql-bin.000001`; purged logs cannot be checked for errant transactions
/// either).
pub fn rejoin_mismatch(pr: &crate::flavor::PromotionRecord, s: &SqlFacts) -> Option<String> {
    if pr.old_server_id != 0 && pr.old_server_id != s.server_id {
        return Some(format!(
            "server_id {} now, {} when it was promoted away",
            s.server_id, pr.old_server_id
        ));
    }
    if !pr.old_server_uuid.is_empty() && pr.old_server_uuid != s.server_uuid {
        return Some(format!(
            "server_uuid {} now, {} then",
            s.server_uuid, pr.old_server_uuid
        ));
    }
    if !s.has_binlog_position(&pr.old_pos.0, pr.old_pos.1) {
        let logs: Vec<String> = s
            .binary_logs
            .iter()
            .map(|(f, n)| format!("{f} ({n} bytes)"))
            .collect();
        return Some(format!(
            "its binary log has no {}:{} (it has {})",
            pr.old_pos.0,
            pr.old_pos.1,
            if logs.is_empty() {
                "none".to_string()
            } else {
                logs.join(", ")
            }
        ));
    }
    None
}

/// CHANGE MASTER TO `master` with the file's replication account: at (file, pos), or by GTID
/// when the file says `gtid: true` (every server then logs what it replicates, so any master's
/// log has every slave's position).
pub fn change_master_to(topo: &Topology, master: &Host, file: &str, pos: u64) -> ChangeMaster {
    ChangeMaster {
        host: master.address.clone(),
        port: master.mysql.port,
        user: topo.replication.user.clone(),
        password: topo.replication.password.clone(),
        start: if topo.replication.gtid {
            StartAt::Gtid
        } else {
            StartAt::Position {
                file: file.to_string(),
                pos,
            }
        },
        ssl: topo.replication.ssl,
        // Seconds between reconnects: short, so a replica recovers quickly from a restart.
        // With `watch:`, 1 s and a 1 s heartbeat: replicas notice a dead master within
        // slave_net_timeout and reconnect to a restarted one at once (orchestrator's advice).
        connect_retry: if topo.watch.is_some() { 1 } else { 10 },
        heartbeat: topo.watch.as_ref().map(|_| 1.0),
    }
}

/// Every host that replicates, directly or through relays, from `name` (not `name` itself).
pub fn downstream(topo: &Topology, name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut todo: Vec<String> = vec![name.to_string()];
    while let Some(n) = todo.pop() {
        if let Some(h) = topo.host(&n) {
            for s in &h.slaves {
                if s != name && !out.contains(s) {
                    out.push(s.clone());
                    todo.push(s.clone());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::observe::ReplicaStatus;

    use crate::testing::{converged, fresh, maria, topo};

    fn plan(t: &Topology, f: &HashMap<String, Facts>, force: bool) -> Result<Plan> {
        plan_init(t, f, &InitOptions { force })
    }

    fn links(p: &Plan) -> Vec<(u32, String, Vec<String>, bool)> {
        p.steps
            .iter()
            .filter_map(|s| match &s.action {
                Action::Link { slaves, seed } => Some((
                    s.wave,
                    s.host.clone(),
                    slaves.iter().map(|l| l.host.clone()).collect(),
                    seed.is_some(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn fresh_master_with_two_slaves() {
        let t = topo(&[("db1", None), ("db2", Some("db1")), ("db3", Some("db1"))]);
        let p = plan(&t, &fresh(&t), false).unwrap();
        let count = |f: &dyn Fn(&Action) -> bool| p.steps.iter().filter(|s| f(&s.action)).count();
        assert_eq!(count(&|a| matches!(a, Action::WriteConfig { .. })), 3);
        assert_eq!(count(&|a| matches!(a, Action::Restart { .. })), 3);
        assert_eq!(
            links(&p),
            vec![(
                WAVE_LINKS + 1,
                "db1".into(),
                vec!["db2".into(), "db3".into()],
                false
            )]
        );
        // One user for the one replica address, only on the master.
        let users: Vec<&Step> = p
            .steps
            .iter()
            .filter(|s| matches!(&s.action, Action::Sql { what, .. } if what.starts_with("replication user")))
            .collect();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].host, "db1");
        // The master becomes writable right after its restart and users (nothing is copied
        // into it), before any link; everything is verified last.
        let last = p.steps.last().unwrap();
        assert!(
            matches!(&last.action, Action::Verify { slaves, canary_from }
            if slaves.len() == 2 && canary_from == &vec!["db1".to_string()])
        );
        let writable: Vec<(u32, &str)> = p
            .steps
            .iter()
            .filter(|s| matches!(s.action, Action::MakeWritable { .. }))
            .map(|s| (s.wave, s.host.as_str()))
            .collect();
        assert_eq!(writable, vec![(WAVE_EARLY_WRITABLE, "db1")]);
        const { assert!(WAVE_EARLY_WRITABLE < WAVE_LINKS) };
    }

    fn watched(t: &mut Topology) {
        t.watch = Some(crate::topology::Watch {
            etcd: vec!["http://127.0.0.1:2379".into()],
            prefix: "/repltool/v1".into(),
            interval: Duration::from_secs(1),
            confirm: Duration::from_millis(500),
            anti_flap: Duration::from_secs(3600),
            lock_ttl: Duration::from_secs(3),
            net_timeout: 4,
            hooks: Default::default(),
        });
    }

    #[test]
    fn with_watch_replicas_get_a_heartbeat_a_fast_retry_and_a_short_net_timeout() {
        let mut t = topo(&[("db1", None), ("db2", Some("db1"))]);
        let plain = plan(&t, &converged(&t), false).unwrap();
        assert!(plain.is_empty());
        watched(&mut t);
        // New links: CHANGE MASTER with the watcher's timing.
        let p = plan(&t, &fresh(&t), false).unwrap();
        let link = p
            .steps
            .iter()
            .find_map(|s| match &s.action {
                Action::Link { slaves, .. } => Some(slaves[0].change.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!((link.connect_retry, link.heartbeat), (1, Some(1.0)));
        // A cluster converged before `watch:` was added: the fragment gains the timeout, it is
        // set at runtime, and the existing link is retuned (not re-seeded).
        let before = {
            let mut u = t.clone();
            u.watch = None;
            converged(&u)
        };
        let p = plan(&t, &before, false).unwrap();
        let sql: Vec<String> = p
            .steps
            .iter()
            .filter(|s| s.host == "db2")
            .filter_map(|s| match &s.action {
                Action::Sql { stmts, .. } => Some(stmts.iter().map(|x| x.shown().to_string())),
                _ => None,
            })
            .flatten()
            .collect();
        let flavor = before["db2"].sql.as_ref().unwrap().flavor;
        assert!(
            sql.iter().any(|x| x == flavor.set_net_timeout(4).shown()),
            "{sql:?}"
        );
        assert!(
            sql.iter()
                .any(|x| x.contains("MASTER_CONNECT_RETRY=1, MASTER_HEARTBEAT_PERIOD=1.000")),
            "{sql:?}"
        );
        assert!(links(&p).is_empty(), "no re-seed");
        assert!(p.steps.iter().any(|s| matches!(&s.action, Action::WriteConfig { contents, .. } if contents.contains("slave_net_timeout = 4"))));
    }

    #[test]
    fn converged_cluster_plans_nothing() {
        let t = topo(&[("db1", None), ("db2", Some("db1")), ("db3", Some("db1"))]);
        let p = plan(&t, &converged(&t), false).unwrap();
        assert!(p.is_empty(), "{}", p.render());
        assert_eq!(p.unchanged.len(), 2);
    }

    #[test]
    fn adding_a_host_touches_only_that_host_and_its_master_user() {
        let t = topo(&[("db1", None), ("db2", Some("db1")), ("db3", Some("db1"))]);
        let mut f = converged(&t);
        // db3 is new: fresh server.
        f.insert("db3".into(), fresh(&t).remove("db3").unwrap());
        let p = plan(&t, &f, false).unwrap();
        let hosts: BTreeSet<&str> = p
            .steps
            .iter()
            .filter(|s| !matches!(s.action, Action::Verify { .. }))
            .map(|s| s.host.as_str())
            .collect();
        // db1 appears only as the master of the new link (no restart, no config, no user: the
        // address already has one).
        assert_eq!(hosts, ["db1", "db3"].into_iter().collect());
        assert!(p
            .steps
            .iter()
            .filter(|s| s.host == "db1")
            .all(|s| matches!(s.action, Action::Link { .. } | Action::Verify { .. })));
        assert_eq!(
            links(&p),
            vec![(WAVE_LINKS + 1, "db1".into(), vec!["db3".into()], false)]
        );
    }

    #[test]
    fn a_slave_of_another_master_is_not_rewired_without_force() {
        let t = topo(&[("db1", None), ("db2", Some("db1"))]);
        let mut f = converged(&t);
        f.get_mut("db2").unwrap().sql.as_mut().unwrap().replica = Some(ReplicaStatus {
            master_host: "127.0.0.9".into(),
            master_port: 3306,
            io_running: Some(IoThread::Yes),
            sql_running: true,
            ..Default::default()
        });
        let err = plan(&t, &f, false).unwrap_err().to_string();
        assert!(err.contains("db2: replicates from 127.0.0.9:3306"), "{err}");
        assert!(err.contains("--force"), "{err}");
        let p = plan(&t, &f, true).unwrap();
        assert!(
            matches!(&p.steps.iter().find(|s| matches!(s.action, Action::Link{..})).unwrap().action,
            Action::Link { slaves, .. } if slaves[0].rewire)
        );
    }

    #[test]
    fn data_on_the_master_is_copied_but_never_over_a_slaves_own_data() {
        let t = topo(&[("db1", None), ("db2", Some("db1"))]);
        let mut f = fresh(&t);
        f.get_mut("db1")
            .unwrap()
            .sql
            .as_mut()
            .unwrap()
            .has_user_data = true;
        let p = plan(&t, &f, false).unwrap();
        assert_eq!(
            links(&p),
            vec![(WAVE_LINKS + 1, "db1".into(), vec!["db2".into()], true)]
        );
        f.get_mut("db2")
            .unwrap()
            .sql
            .as_mut()
            .unwrap()
            .has_user_data = true;
        let err = plan(&t, &f, false).unwrap_err().to_string();
        assert!(err.contains("db2: already holds databases"), "{err}");
    }

    #[test]
    fn the_plan_says_how_the_seed_is_copied() {
        let mut t = topo(&[("db1", None), ("db2", Some("db1"))]);
        let mut f = fresh(&t);
        f.get_mut("db1")
            .unwrap()
            .sql
            .as_mut()
            .unwrap()
            .has_user_data = true;
        let text = plan(&t, &f, false).unwrap().render();
        // auto: physical from the break-even size when the hosts allow it, else the dump.
        assert!(text.contains("seed auto: from 64 MiB of data"), "{text}");
        assert!(text.contains("copy db1 physically into db2"), "{text}");
        let read_lock = f["db1"].sql.as_ref().unwrap().flavor.words().read_lock;
        assert!(text.contains(read_lock), "{text}");
        t.replication.seed = crate::topology::SeedMethod::Physical;
        let text = plan(&t, &f, false).unwrap().render();
        assert!(text.contains("seed db2 from db1:"), "{text}");
        assert!(!text.contains(read_lock), "{text}");
        assert!(text.contains("(coordinates from the copy)"), "{text}");
        t.replication.seed = crate::topology::SeedMethod::Logical;
        let text = plan(&t, &f, false).unwrap().render();
        assert!(!text.contains("physically"), "{text}");
        assert!(
            text.contains("stream a dump of the user databases into db2"),
            "{text}"
        );
    }

    #[test]
    fn master_master_seeds_from_the_side_with_data() {
        let t = topo(&[("m1", Some("m2")), ("m2", Some("m1"))]);
        let mut f = fresh(&t);
        f.get_mut("m2").unwrap().sql.as_mut().unwrap().has_user_data = true;
        let p = plan(&t, &f, false).unwrap();
        // m1 is seeded from m2 first; m2 replicates from m1 afterwards, without a copy.
        assert_eq!(
            links(&p),
            vec![
                (WAVE_LINKS + 1, "m2".into(), vec!["m1".into()], true),
                (WAVE_LINKS + 2, "m1".into(), vec!["m2".into()], false),
            ]
        );
        let frag = |n: &str| {
            p.steps
                .iter()
                .find_map(|s| match &s.action {
                    Action::WriteConfig { contents, .. } if s.host == n => Some(contents.clone()),
                    _ => None,
                })
                .unwrap()
        };
        assert!(frag("m1").contains("auto_increment_offset"));
        assert!(frag("m1").contains("auto_increment_increment"));
        assert_ne!(frag("m1"), frag("m2"));
        // Both members are writable: m2 (the one with the data) at once, m1 once seeded.
        let mut writable: Vec<(u32, &str)> = p
            .steps
            .iter()
            .filter(|s| matches!(s.action, Action::MakeWritable { .. }))
            .map(|s| (s.wave, s.host.as_str()))
            .collect();
        writable.sort();
        assert_eq!(
            writable,
            vec![(WAVE_EARLY_WRITABLE, "m2"), (WAVE_WRITABLE, "m1")]
        );
        f.get_mut("m1").unwrap().sql.as_mut().unwrap().has_user_data = true;
        let err = plan(&t, &f, false).unwrap_err().to_string();
        assert!(
            err.contains("both members of the master-master pair already hold data"),
            "{err}"
        );
    }

    #[test]
    fn chain_links_level_by_level_and_seeds_through_the_relay() {
        let t = topo(&[("db1", None), ("db2", Some("db1")), ("db3", Some("db2"))]);
        let mut f = fresh(&t);
        f.get_mut("db1")
            .unwrap()
            .sql
            .as_mut()
            .unwrap()
            .has_user_data = true;
        let p = plan(&t, &f, false).unwrap();
        assert_eq!(
            links(&p),
            vec![
                (WAVE_LINKS + 1, "db1".into(), vec!["db2".into()], true),
                (WAVE_LINKS + 2, "db2".into(), vec!["db3".into()], true),
            ]
        );
        assert_eq!(t.host("db2").unwrap().role, Role::Relay);
        let v = p.steps.last().unwrap();
        // db1's canary must reach db3 through the relay.
        assert!(
            matches!(&v.action, Action::Verify { canary_from, .. } if canary_from == &vec!["db1".to_string()])
        );
        assert!(downstream(&t, "db1").contains(&"db3".to_string()));
    }

    #[test]
    fn a_file_repltool_did_not_write_is_never_overwritten() {
        let t = topo(&[("db1", None), ("db2", Some("db1"))]);
        let mut f = fresh(&t);
        f.get_mut("db2").unwrap().config.as_mut().unwrap().current =
            Some("[mysqld]\nserver_id=7\n".into());
        let err = plan(&t, &f, false).unwrap_err().to_string();
        assert!(err.contains("was not written by repltool"), "{err}");
        assert!(err.contains("/lab/db2/60-repltool.cnf"), "{err}");
    }

    #[test]
    fn a_restart_without_a_restart_command_is_refused_before_anything_changes() {
        let t = topo(&[("db1", None), ("db2", Some("db1"))]);
        let mut f = fresh(&t);
        f.get_mut("db2").unwrap().config.as_mut().unwrap().restart = None;
        let err = plan(&t, &f, false).unwrap_err().to_string();
        assert!(
            err.contains("db2: enabling the binary log needs a server restart"),
            "{err}"
        );
    }

    #[test]
    fn an_unreachable_server_is_named() {
        let t = topo(&[("db1", None), ("db2", Some("db1"))]);
        let mut f = fresh(&t);
        let e = f.get_mut("db2").unwrap();
        e.sql = None;
        e.sql_error = Some("connection refused".into());
        let err = plan(&t, &f, false).unwrap_err().to_string();
        assert!(
            err.contains("db2: could not observe the server: connection refused"),
            "{err}"
        );
    }

    #[test]
    fn the_plan_never_shows_a_password() {
        let t = topo(&[("db1", None), ("db2", Some("db1"))]);
        let p = plan(&t, &fresh(&t), false).unwrap();
        let text = p.render();
        assert!(!text.contains("s3cr"), "{text}");
        assert!(text.contains("***"), "{text}");
        let _ = Duration::from_secs(1);
    }

    #[test]
    fn a_server_on_loopback_only_is_made_to_listen_and_then_left_alone() {
        let mut t = topo(&[("db1", None), ("db2", Some("db1"))]);
        for (i, h) in t.hosts.iter_mut().enumerate() {
            h.address = format!("10.231.77.{}", 11 + i);
        }
        let mut f = converged(&t);
        for h in &t.hosts {
            let e = f.get_mut(&h.name).unwrap();
            let s = e.sql.as_mut().unwrap();
            s.bind_address = "127.0.0.1".into();
            s.repl_user_hosts = vec!["10.231.77.12".into()];
        }
        let p = plan(&t, &f, false).unwrap();
        assert!(
            p.warnings
                .iter()
                .any(|w| w.contains("db1: the server listens on 127.0.0.1 only")),
            "{:?}",
            p.warnings
        );
        let restarts = p
            .steps
            .iter()
            .filter(|s| {
                matches!(&s.action, Action::Restart { expect, .. }
            if expect.iter().any(|(k, v)| k == "bind_address" && v == "0.0.0.0"))
            })
            .count();
        assert_eq!(restarts, 2, "{}", p.render());
        assert!(p.render().contains("bind_address = 0.0.0.0"));
        // Once done: the fragment says so and the server listens everywhere: nothing to do.
        for h in &t.hosts {
            let e = f.get_mut(&h.name).unwrap();
            e.sql.as_mut().unwrap().bind_address = "0.0.0.0".into();
            e.config.as_mut().unwrap().current =
                Some(maria().fragment(&fragment_settings(&t, h, "/lab", true)));
        }
        let p = plan(&t, &f, false).unwrap();
        assert!(p.is_empty(), "{}", p.render());
    }

    #[test]
    fn managed_block_replaces_itself_and_keeps_the_rest() {
        let main = "[mysqld]\ndatadir=/var/lib/mysql\n";
        let frag = "# Managed by repltool\n[mysqld]\nserver_id = 5\n";
        let once = splice_block(main, frag);
        assert!(once.starts_with(main));
        assert!(once.contains(BLOCK_BEGIN) && once.contains("server_id = 5"));
        let twice = splice_block(&once, "# Managed by repltool\n[mysqld]\nserver_id = 6\n");
        assert_eq!(twice.matches(BLOCK_BEGIN).count(), 1);
        assert!(twice.contains("server_id = 6") && !twice.contains("server_id = 5"));
        assert!(twice.contains("datadir=/var/lib/mysql"));
    }
}
