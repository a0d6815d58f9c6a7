//! The Galera planners: Topology + facts -> steps, pure, every refusal at once.
//!
//! - [`plan_galera`] (init): build a cluster (bootstrap the member that holds the data, the
//!   others join one at a time by SST), add members to a running cluster without restarting
//!   the others, recover from a full outage (bootstrap the most advanced member by
//!   grastate.dat or `--wsrep-recover`, only it marked safe_to_bootstrap), restart members
//!   that are down, and leave a converged cluster untouched.
//! - [`plan_promote`]: after a quorum loss, make a member's component primary, only when no
//!   primary component can exist elsewhere.
//! - [`plan_rolling`]: restart members one at a time, never below quorum.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

use crate::flavor::galera::{sst_password, GaleraSettings, SecretText, SST_USER};
use crate::flavor::{PasswordCheck, Sql};
use crate::observe::galera::{GaleraDisk, GaleraService, WsrepLive};
use crate::observe::{ConfigTarget, Facts, SqlFacts};
use crate::plan::init::{fragment_settings, MANAGED_MARKER};
use crate::topology::{Host, Sst, Topology};

/// What the planners see of the members.
pub struct GaleraInputs<'a> {
    /// SQL facts (with config facts for init) of every host that has a session.
    pub facts: &'a HashMap<String, Facts>,
    /// The host probe of every member with a session (Err: the probe failed).
    pub disk: &'a HashMap<String, Result<GaleraDisk, String>>,
    /// Members whose shell could not be reached, and why.
    pub unreachable: &'a HashMap<String, String>,
}

pub struct GaleraOptions {
    pub force: bool,
}

/// How a member joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// A full copy from a donor: the member's own datadir is replaced.
    Sst,
    /// A former member of this cluster: the write sets it missed (IST), or a full copy when
    /// the donor no longer has them.
    Rejoin,
    /// A member restarted in place (a rolling restart): it rejoins by IST.
    Restart,
}

#[derive(Debug, Clone)]
pub enum GAction {
    /// Write the member's managed fragment (mode 640, group mysql: it holds the SST
    /// password). Guard: the file still has `previous`.
    WriteConfig {
        target: ConfigTarget,
        contents: SecretText,
        previous: Option<String>,
    },
    /// Stop the server (a standalone server about to bootstrap the cluster).
    Stop { command: String },
    /// grastate.dat's safe_to_bootstrap. Guard: the file still names `uuid`.
    SafeToBootstrap {
        datadir: String,
        uuid: String,
        on: bool,
    },
    /// Start as the first member of the cluster (`--wsrep-new-cluster`); wait until it is
    /// Primary and Synced. Guard: no other member runs Galera.
    Bootstrap {
        command: String,
        error_log: Option<PathBuf>,
    },
    /// Start (or restart) the member so that it joins; wait until it is Synced in the cluster.
    Join {
        command: String,
        error_log: Option<PathBuf>,
        transfer: Transfer,
    },
    /// Statements on the member.
    Sql { what: String, stmts: Vec<Sql> },
    /// Every member Synced in one Primary component of `size`, in one state UUID, and a canary
    /// row written on `canary_from` read on every other member.
    Verify {
        members: Vec<String>,
        size: u32,
        canary_from: String,
    },
}

#[derive(Debug, Clone)]
pub struct GStep {
    pub host: String,
    pub action: GAction,
}

/// What init does to the Galera members: config writes first (all at once), then the other
/// steps one after another.
#[derive(Debug, Clone, Default)]
pub struct GaleraPlan {
    pub steps: Vec<GStep>,
    pub warnings: Vec<String>,
    /// What was found and decided, in words (the bootstrap choice, a recovery).
    pub notes: Vec<String>,
    /// Members to run `--wsrep-recover` on before planning again (a crash left seqno -1).
    pub recover: Vec<String>,
}

impl GaleraPlan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for n in &self.notes {
            let _ = writeln!(out, "  {n}");
        }
        for (i, s) in self.steps.iter().enumerate() {
            let _ = write!(out, "{:>2}. [{}] ", i + 1, s.host);
            match &s.action {
                GAction::WriteConfig {
                    target, contents, ..
                } => {
                    let _ = writeln!(
                        out,
                        "write {} (mode 640, group mysql):",
                        target.path().display()
                    );
                    for l in contents.shown.lines() {
                        let _ = writeln!(out, "      | {l}");
                    }
                }
                GAction::Stop { command } => {
                    let _ = writeln!(out, "stop the server: {command}");
                }
                GAction::SafeToBootstrap { datadir, uuid, on } => {
                    let _ = writeln!(
                        out,
                        "{datadir}/grastate.dat: safe_to_bootstrap: {} (if it still names {uuid})",
                        u8::from(*on)
                    );
                }
                GAction::Bootstrap { command, .. } => {
                    let _ = writeln!(
                        out,
                        "bootstrap the cluster: {command}, then wait until Primary and Synced"
                    );
                }
                GAction::Join {
                    command, transfer, ..
                } => {
                    let _ = writeln!(
                        out,
                        "join: {command}, then wait until Synced ({})",
                        match transfer {
                            Transfer::Sst => "full copy by SST: its datadir is replaced",
                            Transfer::Rejoin => "IST of what it missed, or SST",
                            Transfer::Restart => "restart in place, IST",
                        }
                    );
                }
                GAction::Sql { what, stmts } => {
                    let _ = writeln!(out, "{what}:");
                    for q in stmts {
                        let _ = writeln!(out, "      {};", q.shown());
                    }
                }
                GAction::Verify {
                    members,
                    size,
                    canary_from,
                } => {
                    let _ = writeln!(
                        out,
                        "verify: {} Synced in one Primary component of {size}, one state UUID; \
                         canary row from {canary_from} read on every other member",
                        members.join(", ")
                    );
                }
            }
        }
        out
    }
}

/// A member as observed.
enum Member<'a> {
    /// The shell could not be reached.
    Unreachable(&'a str),
    /// The server answers and runs Galera.
    Galera(&'a SqlFacts, &'a WsrepLive),
    /// The server answers without Galera (a standalone server).
    Standalone(&'a SqlFacts),
    /// The server does not answer but a server process runs (an SST, a recovery, a hang).
    Busy(String),
    /// The server does not answer and no server process runs.
    Down,
}

fn member<'a>(h: &Host, inp: &'a GaleraInputs) -> Member<'a> {
    if let Some(e) = inp.unreachable.get(&h.name) {
        return Member::Unreachable(e);
    }
    let f = inp.facts.get(&h.name);
    if let Some(s) = f.and_then(|f| f.sql.as_ref()) {
        return match &s.galera {
            Some(l) if l.enabled() => Member::Galera(s, l),
            _ => Member::Standalone(s),
        };
    }
    let err = f
        .and_then(|f| f.sql_error.clone())
        .unwrap_or_else(|| "not observed".into());
    match inp.disk.get(&h.name) {
        Some(Ok(d)) if !d.running.is_empty() => Member::Busy(err),
        _ => Member::Down,
    }
}

fn disk<'a>(h: &Host, inp: &'a GaleraInputs) -> Option<&'a GaleraDisk> {
    inp.disk.get(&h.name).and_then(|d| d.as_ref().ok())
}

fn databases(s: &SqlFacts) -> String {
    let dbs: Vec<&str> = s
        .databases
        .iter()
        .filter(|d| d.as_str() != crate::flavor::CANARY_SCHEMA)
        .map(String::as_str)
        .collect();
    if dbs.is_empty() {
        "user data".into()
    } else {
        format!("databases {}", dbs.join(", "))
    }
}

/// The fragment a member should have.
fn desired_fragment(
    topo: &Topology,
    h: &Host,
    inp: &GaleraInputs,
) -> std::result::Result<SecretText, String> {
    let g = topo.galera.as_ref().ok_or("no galera block")?;
    let d = disk(h, inp).ok_or_else(|| format!("{}: its host was not probed", h.name))?;
    let provider = d.providers.first().ok_or_else(|| {
        format!(
            "{}: no Galera provider library (looked in {}): install galera-4",
            h.name,
            crate::flavor::galera::PROVIDER_PATHS.join(", ")
        )
    })?;
    let sql = inp.facts.get(&h.name).and_then(|f| f.sql.as_ref());
    let datadir = sql
        .map(|s| s.datadir.clone())
        .unwrap_or_else(|| d.datadir.clone());
    let current = inp
        .facts
        .get(&h.name)
        .and_then(|f| f.config.as_ref())
        .and_then(|c| c.current.as_deref());
    let bind = sql.map(|s| s.bind_address.as_str()).unwrap_or("");
    let mut base = fragment_settings(topo, h, &datadir, needs_listen_all(h, bind, current));
    // Writes through any member reach an asynchronous replica only if the member it reads
    // from logs what it applies; every member, so a replica can be re-pointed to any of them.
    base.log_slave_updates = topo.hosts.iter().any(|x| {
        x.master
            .as_ref()
            .is_some_and(|m| topo.host(m).is_some_and(|mh| topo.is_member(mh)))
    });
    let settings = GaleraSettings {
        provider: provider.clone(),
        cluster_name: g.cluster_name.clone(),
        addresses: topo.members().map(|m| m.address.clone()).collect(),
        node_address: h.address.clone(),
        node_name: h.name.clone(),
        sst: g.sst,
        sst_password: Some(sst_password(&g.cluster_name, &topo.replication.password)),
    };
    let flavor = sql
        .map(|s| s.flavor)
        .unwrap_or_else(|| crate::flavor::Flavor {
            kind: crate::flavor::Kind::MariaDB,
            major: 10,
            minor: 11,
            patch: 0,
        });
    flavor
        .galera_fragment(&base, &settings)
        .map_err(|e| format!("{}: {e:#}", h.name))
}

fn is_loopback(a: &str) -> bool {
    let a = a.trim();
    a == "localhost" || a == "::1" || a.starts_with("127.")
}

/// Clients, proxies and the SST reach a member at its address: listen beyond loopback when
/// the server listens on loopback only, and keep doing so once the fragment says it.
fn needs_listen_all(h: &Host, bind: &str, current: Option<&str>) -> bool {
    if is_loopback(&h.address) {
        return false;
    }
    let loopback_only = !bind.trim().is_empty() && bind.split(',').all(is_loopback);
    loopback_only || current.is_some_and(|c| c.contains("bind_address = 0.0.0.0"))
}

fn service<'a>(
    h: &Host,
    inp: &'a GaleraInputs,
    refusals: &mut Vec<String>,
) -> Option<&'a GaleraService> {
    let s = disk(h, inp).and_then(|d| d.service.as_ref());
    if s.is_none() {
        refusals.push(format!(
            "{}: no service manager to start and stop the server with (systemd is not PID 1 \
             and no /etc/init.d/mariadb): Galera members are started through it",
            h.name
        ));
    }
    s
}

fn error_log(h: &Host, inp: &GaleraInputs) -> Option<PathBuf> {
    h.error_log.clone().or_else(|| {
        inp.facts
            .get(&h.name)
            .and_then(|f| f.sql.as_ref())
            .and_then(|s| s.error_log.clone())
    })
}

/// Warnings about tables Galera does not replicate well, from the member holding the data.
fn table_warnings(name: &str, l: &WsrepLive, out: &mut Vec<String>) {
    if !l.unreplicated_tables.is_empty() {
        out.push(format!(
            "{name}: Galera replicates InnoDB tables only; these are not replicated and stay \
             on the member that writes them: {}. Convert them (ALTER TABLE ... ENGINE=InnoDB)",
            l.unreplicated_tables.join(", ")
        ));
    }
    if !l.no_pk_tables.is_empty() {
        out.push(format!(
            "{name}: tables without a primary key (every replicated row change scans the whole \
             table, and rows that are not unique can differ between members): {}. Add a \
             primary key",
            l.no_pk_tables.join(", ")
        ));
    }
}

/// Plan `repltool init` for the Galera members. Any refusal fails the whole plan (exit 1 for
/// a data-safety refusal, 2 for what could not be observed).
pub fn plan_galera(
    topo: &Topology,
    inp: &GaleraInputs,
    opts: &GaleraOptions,
) -> Result<GaleraPlan> {
    let Some(g) = &topo.galera else {
        return Ok(GaleraPlan::default());
    };
    let mut plan = GaleraPlan::default();
    let mut refusals: Vec<String> = Vec::new();
    let mut blocked: Vec<String> = Vec::new();
    let members: Vec<&Host> = topo.members().collect();
    let states: Vec<(&Host, Member)> = members.iter().map(|h| (*h, member(h, inp))).collect();
    if members.len() == 2 {
        plan.warnings.push(format!(
            "a Galera cluster of 2 ({} and {}) loses quorum when either member fails: add a \
             third member (or a garbd arbitrator)",
            members[0].name, members[1].name
        ));
    }

    // A full outage words its own refusal for members it cannot reach (they may be the most
    // advanced).
    let outage = !states
        .iter()
        .any(|(_, st)| matches!(st, Member::Galera(..)))
        && states.iter().any(|(h, st)| {
            matches!(st, Member::Down)
                && disk(h, inp)
                    .and_then(|d| d.state())
                    .is_some_and(|g| g.has_history())
        });
    // What cannot be observed or used at all.
    let mut skipped: BTreeSet<String> = BTreeSet::new();
    for (h, st) in &states {
        match st {
            Member::Unreachable(e) => {
                if opts.force {
                    skipped.insert(h.name.clone());
                    plan.warnings.push(format!(
                        "--force: {} could not be reached ({e}); it is left out and joins when \
                         it is back and init runs again",
                        h.name
                    ));
                } else if !outage {
                    blocked.push(format!(
                        "{}: could not be reached: {e}. Bring it back, or run with --force to \
                         build the cluster without it",
                        h.name
                    ));
                }
                continue;
            }
            Member::Galera(s, _) | Member::Standalone(s) => {
                if let Err(why) = s.flavor.galera_support() {
                    blocked.push(format!("{}: {why}", h.name));
                }
            }
            _ => {}
        }
        if let Some(Err(e)) = inp.disk.get(&h.name) {
            blocked.push(format!("{}: {e}", h.name));
        }
        if let Some(c) = inp.facts.get(&h.name).and_then(|f| f.config.as_ref()) {
            if let ConfigTarget::Block(p) = &c.target {
                blocked.push(format!(
                    "{}: {} has no include directory; a Galera member's settings (with the SST \
                     password) go into a fragment of their own: set `config_file:` to a path in \
                     a directory that {} includes",
                    h.name,
                    p.display(),
                    p.display()
                ));
            }
        }
    }
    if !blocked.is_empty() {
        return Err(crate::error::input(blocked.join("\n")));
    }

    // The fragments.
    let mut changed_config: BTreeSet<String> = BTreeSet::new();
    for (h, _) in states
        .iter()
        .filter(|(h, st)| !skipped.contains(&h.name) && !matches!(st, Member::Unreachable(_)))
    {
        let Some(cfg) = inp.facts.get(&h.name).and_then(|f| f.config.as_ref()) else {
            refusals.push(format!("{}: the configuration layout was not read", h.name));
            continue;
        };
        let want = match desired_fragment(topo, h, inp) {
            Ok(w) => w,
            Err(e) => {
                refusals.push(e);
                continue;
            }
        };
        if cfg.current.as_deref() == Some(want.text.as_str()) {
            continue;
        }
        if let Some(cur) = &cfg.current {
            if !cur.contains(MANAGED_MARKER) {
                refusals.push(format!(
                    "{}: {} exists and was not written by repltool; it is never overwritten \
                     silently. Move it away or set `config_file:` to another path",
                    h.name,
                    cfg.target.path().display()
                ));
                continue;
            }
        }
        changed_config.insert(h.name.clone());
        plan.steps.push(GStep {
            host: h.name.clone(),
            action: GAction::WriteConfig {
                target: cfg.target.clone(),
                contents: want,
                previous: cfg.current.clone(),
            },
        });
    }

    let primaries: Vec<(&Host, &SqlFacts, &WsrepLive)> = states
        .iter()
        .filter_map(|(h, st)| match st {
            Member::Galera(s, l) if l.primary() => Some((*h, *s, *l)),
            _ => None,
        })
        .collect();
    let uuids: BTreeSet<&str> = primaries
        .iter()
        .map(|(_, _, l)| l.state_uuid.as_str())
        .collect();
    if uuids.len() > 1 {
        let groups: Vec<String> = uuids
            .iter()
            .map(|u| {
                let names: Vec<&str> = primaries
                    .iter()
                    .filter(|(_, _, l)| l.state_uuid == *u)
                    .map(|(h, _, _)| h.name.as_str())
                    .collect();
                format!("{} in cluster state {u}", names.join(", "))
            })
            .collect();
        refusals.push(format!(
            "the members form more than one primary component (a split cluster): {}. Decide \
             which data to keep, stop the other members, and let init join them (it replaces \
             their data)",
            groups.join("; ")
        ));
        return Err(crate::error::problem(refusals.join("\n")));
    }
    let sst_pw = sst_password(&g.cluster_name, &topo.replication.password);
    let size = (members.len() - skipped.len()) as u32;

    if let Some((_, _, l0)) = primaries.first() {
        plan_running(
            topo,
            inp,
            opts,
            &states,
            &skipped,
            l0,
            &changed_config,
            &mut plan,
            &mut refusals,
        );
    } else if let Some((h, l)) = states.iter().find_map(|(h, st)| match st {
        Member::Galera(_, l) => Some((*h, *l)),
        _ => None,
    }) {
        // Members run Galera, none in a primary component: quorum is lost.
        let best = states
            .iter()
            .filter_map(|(h, st)| match st {
                Member::Galera(_, l) => Some((*h, l.last_committed)),
                _ => None,
            })
            .max_by_key(|(_, s)| *s)
            .map(|(h, _)| h.name.clone())
            .unwrap_or_else(|| h.name.clone());
        let down: Vec<&str> = states
            .iter()
            .filter(|(_, st)| !matches!(st, Member::Galera(..)))
            .map(|(h, _)| h.name.as_str())
            .collect();
        refusals.push(format!(
            "quorum lost: {} is in a non-primary component (size {} of {}): the cluster takes \
             no reads or writes. {}If {} down for good, make the survivors' component \
             primary with `repltool promote {best}`; members that come back rejoin when init \
             runs",
            h.name,
            l.cluster_size,
            members.len(),
            if down.is_empty() {
                String::new()
            } else {
                format!(
                    "{} {} not in it. ",
                    down.join(", "),
                    if down.len() == 1 { "is" } else { "are" }
                )
            },
            if down.is_empty() {
                "the other components are".to_string()
            } else {
                format!(
                    "{} {}",
                    down.join(", "),
                    if down.len() == 1 { "is" } else { "are" }
                )
            }
        ));
    } else {
        plan_stopped(topo, inp, opts, &states, &skipped, &mut plan, &mut refusals);
    }

    if !refusals.is_empty() {
        return Err(crate::error::problem(refusals.join("\n")));
    }
    if !plan.recover.is_empty() {
        return Ok(plan);
    }
    // The SST account (mariabackup only): created on the member that is Primary first, before
    // any member joins (a joiner's donor logs in with it); members that keep running learn the
    // password at runtime (their fragment is read at their next start).
    let needs_restart_or_join = plan
        .steps
        .iter()
        .any(|s| matches!(s.action, GAction::Bootstrap { .. } | GAction::Join { .. }));
    if g.sst == Sst::Mariabackup {
        let default_flavor = crate::flavor::Flavor {
            kind: crate::flavor::Kind::MariaDB,
            major: 10,
            minor: 11,
            patch: 0,
        };
        let mut early: Vec<GStep> = Vec::new();
        let bootstrapped = plan.steps.iter().find_map(|s| match s.action {
            GAction::Bootstrap { .. } => Some(s.host.clone()),
            _ => None,
        });
        let account_ok = !primaries.is_empty()
            && primaries
                .iter()
                .all(|(_, _, l)| l.sst_account == Some(PasswordCheck::Matches));
        let on = bootstrapped.or_else(|| primaries.first().map(|(h, _, _)| h.name.clone()));
        if let Some(on) = on.filter(|_| !account_ok) {
            let flavor = inp
                .facts
                .get(&on)
                .and_then(|f| f.sql.as_ref())
                .map(|s| s.flavor)
                .unwrap_or(default_flavor);
            early.push(GStep {
                host: on,
                action: GAction::Sql {
                    what: format!(
                        "the SST account {SST_USER}@localhost (RELOAD, PROCESS, LOCK TABLES, \
                         BINLOG MONITOR; replicates to every member)"
                    ),
                    stmts: flavor.create_sst_user(&sst_pw),
                },
            });
        }
        for (h, s, _) in &primaries {
            if changed_config.contains(&h.name) || !account_ok {
                early.push(GStep {
                    host: h.name.clone(),
                    action: GAction::Sql {
                        what: "the SST account's password for this running member".into(),
                        stmts: vec![s.flavor.set_sst_auth(SST_USER, &sst_pw)],
                    },
                });
            }
        }
        let at = match plan
            .steps
            .iter()
            .position(|s| matches!(s.action, GAction::Bootstrap { .. }))
        {
            Some(i) => i + 1,
            None => plan
                .steps
                .iter()
                .position(|s| matches!(s.action, GAction::Join { .. }))
                .unwrap_or(plan.steps.len()),
        };
        for (k, st) in early.into_iter().enumerate() {
            plan.steps.insert(at + k, st);
        }
    }
    if !plan.steps.is_empty() {
        let live: Vec<String> = members
            .iter()
            .filter(|h| !skipped.contains(&h.name))
            .map(|h| h.name.clone())
            .collect();
        let canary_from = plan
            .steps
            .iter()
            .find_map(|s| match s.action {
                GAction::Bootstrap { .. } => Some(s.host.clone()),
                _ => None,
            })
            .or_else(|| primaries.first().map(|(h, _, _)| h.name.clone()))
            .unwrap_or_else(|| live[0].clone());
        let only_config = !needs_restart_or_join
            && plan
                .steps
                .iter()
                .all(|s| matches!(s.action, GAction::WriteConfig { .. }));
        if !only_config || primaries.len() < live.len() {
            plan.steps.push(GStep {
                host: canary_from.clone(),
                action: GAction::Verify {
                    members: live,
                    size,
                    canary_from,
                },
            });
        }
    }
    Ok(plan)
}

/// The cluster runs (some members are Primary): members that are not in it join, one at a
/// time; the others are left running (their new fragments take effect at their next restart).
#[allow(clippy::too_many_arguments)]
fn plan_running(
    topo: &Topology,
    inp: &GaleraInputs,
    opts: &GaleraOptions,
    states: &[(&Host, Member)],
    skipped: &BTreeSet<String>,
    l0: &WsrepLive,
    changed_config: &BTreeSet<String>,
    plan: &mut GaleraPlan,
    refusals: &mut Vec<String>,
) {
    let uuid = l0.state_uuid.as_str();
    let primary_names: Vec<&str> = states
        .iter()
        .filter(|(_, st)| matches!(st, Member::Galera(_, l) if l.primary()))
        .map(|(h, _)| h.name.as_str())
        .collect();
    let mut warned_tables = false;
    for (h, st) in states {
        if skipped.contains(&h.name) {
            continue;
        }
        match st {
            Member::Galera(s, l) if l.primary() => {
                if !warned_tables {
                    table_warnings(&h.name, l, &mut plan.warnings);
                    warned_tables = true;
                }
                if s.read_only {
                    plan.steps.push(GStep {
                        host: h.name.clone(),
                        action: GAction::Sql {
                            what: "every Galera member takes writes".into(),
                            stmts: s.flavor.set_read_only(false),
                        },
                    });
                }
                let sst = topo
                    .galera
                    .as_ref()
                    .map(|g| g.sst)
                    .unwrap_or(Sst::Mariabackup);
                if l.sst_method != sst.as_str() {
                    plan.steps.push(GStep {
                        host: h.name.clone(),
                        action: GAction::Sql {
                            what: format!("SST method {}", sst.as_str()),
                            stmts: vec![s.flavor.set_sst_method(sst)],
                        },
                    });
                }
                if changed_config.contains(&h.name) {
                    let mut later: Vec<&str> = Vec::new();
                    if l.node_name != h.name {
                        later.push("wsrep_node_name");
                    }
                    if !s.log_bin {
                        later.push("log_bin");
                    }
                    if topo
                        .galera
                        .as_ref()
                        .is_some_and(|g| g.cluster_name != l.cluster_name)
                    {
                        later.push("wsrep_cluster_name");
                    }
                    if !later.is_empty() {
                        plan.warnings.push(format!(
                            "{}: {} change only when the server restarts: run `repltool restart \
                             --rolling` after init",
                            h.name,
                            later.join(", ")
                        ));
                    }
                }
            }
            Member::Galera(_, l) => refusals.push(format!(
                "{}: in a non-primary component (size {}, {}) while {} form the primary \
                 component: it cannot reach them. Check the network between them (`repltool \
                 check` tests ports 4567, 4568 and 4444), then restart it to rejoin",
                h.name,
                l.cluster_size,
                l.state_text(),
                primary_names.join(", ")
            )),
            Member::Standalone(s) => {
                if s.has_user_data && !opts.force {
                    refusals.push(format!(
                        "{}: holds data of its own ({}); joining the cluster replaces it with \
                         a copy of the cluster's (SST). Empty it, or run with --force to replace \
                         it",
                        h.name,
                        databases(s)
                    ));
                    continue;
                }
                if let Some(svc) = service(h, inp, refusals) {
                    plan.notes.push(format!(
                        "{} joins the running cluster by SST ({}); the other members keep running",
                        h.name,
                        if s.has_user_data {
                            format!("--force: its {} are replaced", databases(s))
                        } else {
                            "it holds no user data".into()
                        }
                    ));
                    plan.steps.push(GStep {
                        host: h.name.clone(),
                        action: GAction::Join {
                            command: svc.restart.clone(),
                            error_log: error_log(h, inp),
                            transfer: Transfer::Sst,
                        },
                    });
                }
            }
            Member::Busy(e) => refusals.push(format!(
                "{}: its server runs but does not answer ({e}): a state transfer may be in \
                 progress. Wait for it and run init again",
                h.name
            )),
            Member::Down => {
                let d = disk(h, inp);
                let gs = d.and_then(|d| d.state());
                let transfer = match gs {
                    Some(gs) if gs.has_history() && gs.uuid == uuid => Transfer::Rejoin,
                    Some(gs) if gs.has_history() => {
                        if !opts.force {
                            refusals.push(format!(
                                "{}: is down and holds the state of another cluster ({} at \
                                 seqno {}); joining replaces it. Run with --force to replace it",
                                h.name, gs.uuid, gs.seqno
                            ));
                            continue;
                        }
                        Transfer::Sst
                    }
                    _ => {
                        if !opts.force {
                            refusals.push(format!(
                                "{}: its server is down and it was never a Galera member, so \
                                 repltool cannot see whether it holds data. Start it (so init \
                                 can look), or run with --force to join it (its datadir is \
                                 replaced)",
                                h.name
                            ));
                            continue;
                        }
                        Transfer::Sst
                    }
                };
                if let Some(svc) = service(h, inp, refusals) {
                    plan.steps.push(GStep {
                        host: h.name.clone(),
                        action: GAction::Join {
                            command: svc.start.clone(),
                            error_log: error_log(h, inp),
                            transfer,
                        },
                    });
                }
            }
            Member::Unreachable(_) => {}
        }
    }
}

/// No member runs Galera: build the cluster (fresh servers, or one holding the data), or
/// recover it after a full outage.
fn plan_stopped(
    topo: &Topology,
    inp: &GaleraInputs,
    opts: &GaleraOptions,
    states: &[(&Host, Member)],
    skipped: &BTreeSet<String>,
    plan: &mut GaleraPlan,
    refusals: &mut Vec<String>,
) {
    for (h, st) in states {
        if let Member::Busy(e) = st {
            refusals.push(format!(
                "{}: its server runs but does not answer ({e}); stop it (or wait for it) and \
                 run init again",
                h.name
            ));
        }
    }
    if !refusals.is_empty() {
        return;
    }
    // Members that were in a cluster and are down: a full outage.
    let history: Vec<(&Host, &crate::observe::galera::GraState)> = states
        .iter()
        .filter(|(h, st)| matches!(st, Member::Down) && !skipped.contains(&h.name))
        .filter_map(|(h, _)| {
            disk(h, inp)
                .and_then(|d| d.state())
                .filter(|g| g.has_history())
                .map(|g| (*h, g))
        })
        .collect();
    let bootstrap: &Host;
    if !history.is_empty() {
        let uuids: BTreeSet<&str> = history.iter().map(|(_, g)| g.uuid.as_str()).collect();
        if uuids.len() > 1 {
            let each: Vec<String> = history
                .iter()
                .map(|(h, g)| format!("{} {} (seqno {})", h.name, g.uuid, g.seqno))
                .collect();
            refusals.push(format!(
                "the members disagree about the cluster they belonged to ({}): they are not \
                 one cluster's history. Decide which to keep; move the others' grastate.dat \
                 away (they then join by SST) and run init again",
                each.join("; ")
            ));
            return;
        }
        // Every member's last committed seqno: grastate.dat after a clean shutdown,
        // `--wsrep-recover` after a crash (-1).
        let mut seqnos: Vec<(&Host, i64, bool)> = Vec::new();
        for (h, gs) in &history {
            if gs.seqno >= 0 {
                seqnos.push((h, gs.seqno, gs.safe_to_bootstrap));
                continue;
            }
            match disk(h, inp).and_then(|d| d.recovered.as_ref()) {
                None => plan.recover.push(h.name.clone()),
                Some(Err(e)) => refusals.push(format!(
                    "{}: its last committed position could not be recovered: {e}",
                    h.name
                )),
                Some(Ok((u, s))) => {
                    if u != &gs.uuid && *s >= 0 {
                        refusals.push(format!(
                            "{}: --wsrep-recover reports cluster state {u}, grastate.dat says {}",
                            h.name, gs.uuid
                        ));
                    } else {
                        seqnos.push((h, *s, gs.safe_to_bootstrap));
                    }
                }
            }
        }
        if !plan.recover.is_empty() || !refusals.is_empty() {
            return;
        }
        let Some(&(best, best_seqno, _)) = seqnos.iter().max_by(|a, b| {
            (a.1, a.2)
                .cmp(&(b.1, b.2))
                // Ties go to the first in file order.
                .then_with(|| {
                    let pa = topo.hosts.iter().position(|x| x.name == a.0.name);
                    let pb = topo.hosts.iter().position(|x| x.name == b.0.name);
                    pb.cmp(&pa)
                })
        }) else {
            return;
        };
        let lost: Vec<&str> = skipped.iter().map(String::as_str).collect();
        let unreachable: Vec<&str> = states
            .iter()
            .filter(|(_, st)| matches!(st, Member::Unreachable(_)))
            .map(|(h, _)| h.name.as_str())
            .collect();
        if !unreachable.is_empty() && !opts.force {
            refusals.push(format!(
                "full outage: {} could not be reached and may have committed transactions after \
                 seqno {best_seqno} (the highest of the others, on {}). Bring {} back, or run with \
                 --force to bootstrap from {} (what only {} committed would be lost)",
                unreachable.join(", "),
                best.name,
                if unreachable.len() == 1 { "it" } else { "them" },
                best.name,
                unreachable.join(", ")
            ));
            return;
        }
        let each: Vec<String> = seqnos
            .iter()
            .map(|(h, s, _)| format!("{} {s}", h.name))
            .collect();
        plan.notes.push(format!(
            "full outage: every member is down; last committed seqno per member: {}; {} is the \
             most advanced and bootstraps the cluster{}",
            each.join(", "),
            best.name,
            if lost.is_empty() {
                String::new()
            } else {
                format!(
                    " (--force: {} not reached; its transactions after seqno {best_seqno}, if any, are lost)",
                    lost.join(", ")
                )
            }
        ));
        for (h, gs) in &history {
            let want = h.name == best.name;
            if gs.safe_to_bootstrap != want {
                let Some(d) = disk(h, inp) else { continue };
                plan.steps.push(GStep {
                    host: h.name.clone(),
                    action: GAction::SafeToBootstrap {
                        datadir: d.datadir.clone(),
                        uuid: gs.uuid.clone(),
                        on: want,
                    },
                });
            }
        }
        bootstrap = best;
    } else {
        // A new cluster: the one server that holds data, else the first member.
        let with_data: Vec<(&Host, &SqlFacts)> = states
            .iter()
            .filter_map(|(h, st)| match st {
                Member::Standalone(s) if s.has_user_data => Some((*h, *s)),
                _ => None,
            })
            .collect();
        if with_data.len() > 1 {
            let each: Vec<String> = with_data
                .iter()
                .map(|(h, s)| format!("{} ({})", h.name, databases(s)))
                .collect();
            refusals.push(format!(
                "more than one member holds data: {}. A Galera cluster starts from one data set \
                 and the others get a copy of it (SST), which would replace theirs; repltool \
                 does not merge them. Empty all but one and run init again",
                each.join(", ")
            ));
            return;
        }
        let first_up = states
            .iter()
            .find(|(h, st)| matches!(st, Member::Standalone(_)) && !skipped.contains(&h.name));
        bootstrap = match (with_data.first(), first_up) {
            (Some((h, s)), _) => {
                plan.notes.push(format!(
                    "{} holds the data ({}): it bootstraps the cluster and every other member \
                     gets a copy by SST",
                    h.name,
                    databases(s)
                ));
                if let Some(l) = &s.galera {
                    table_warnings(&h.name, l, &mut plan.warnings);
                }
                h
            }
            (None, Some((h, _))) => {
                plan.notes.push(format!(
                    "no member holds data: {} bootstraps the cluster, the others join by SST",
                    h.name
                ));
                h
            }
            (None, None) => {
                let Some((h, _)) = states.iter().find(|(h, _)| !skipped.contains(&h.name)) else {
                    return;
                };
                if !opts.force {
                    refusals.push(format!(
                        "every member's server is down and none was ever a Galera member, so \
                         repltool cannot see which holds data: start them (so init can look), \
                         or run with --force to bootstrap {} and replace the others' data",
                        h.name
                    ));
                    return;
                }
                h
            }
        };
        if let Some((h, Member::Standalone(_))) =
            states.iter().find(|(h, _)| h.name == bootstrap.name)
        {
            if let Some(svc) = service(h, inp, refusals) {
                plan.steps.push(GStep {
                    host: h.name.clone(),
                    action: GAction::Stop {
                        command: svc.stop.clone(),
                    },
                });
            }
        }
    }
    let Some(svc) = service(bootstrap, inp, refusals) else {
        return;
    };
    let Some(cmd) = svc.bootstrap.clone() else {
        refusals.push(format!(
            "{}: no way to start the server as a new cluster here (no `bootstrap` in its init \
             script, no galera_new_cluster)",
            bootstrap.name
        ));
        return;
    };
    plan.steps.push(GStep {
        host: bootstrap.name.clone(),
        action: GAction::Bootstrap {
            command: cmd,
            error_log: error_log(bootstrap, inp),
        },
    });
    let uuid = history.first().map(|(_, g)| g.uuid.clone());
    // The others, one at a time, in file order.
    for (h, st) in states {
        if h.name == bootstrap.name || skipped.contains(&h.name) {
            continue;
        }
        let Some(svc) = service(h, inp, refusals) else {
            continue;
        };
        let (command, transfer) = match st {
            Member::Standalone(s) => {
                if s.has_user_data && !opts.force {
                    refusals.push(format!(
                        "{}: holds data of its own ({}) and is not the member the cluster starts \
                         from ({}); joining replaces it (SST). Empty it, or run with --force",
                        h.name,
                        databases(s),
                        bootstrap.name
                    ));
                    continue;
                }
                (svc.restart.clone(), Transfer::Sst)
            }
            Member::Down => {
                let gs = disk(h, inp).and_then(|d| d.state());
                match gs {
                    Some(gs) if gs.has_history() && Some(&gs.uuid) == uuid.as_ref() => {
                        (svc.start.clone(), Transfer::Rejoin)
                    }
                    _ => {
                        if !opts.force {
                            refusals.push(format!(
                                "{}: its server is down and it was never a member of this \
                                 cluster, so repltool cannot see whether it holds data. Start \
                                 it (so init can look), or run with --force to join it (its \
                                 datadir is replaced)",
                                h.name
                            ));
                            continue;
                        }
                        (svc.start.clone(), Transfer::Sst)
                    }
                }
            }
            _ => continue,
        };
        plan.steps.push(GStep {
            host: h.name.clone(),
            action: GAction::Join {
                command,
                error_log: error_log(h, inp),
                transfer,
            },
        });
    }
}

/// A Galera promote: make `target`'s component primary after a quorum loss.
#[derive(Debug, Clone)]
pub struct GaleraPromote {
    pub target: String,
    /// Members that are in a non-primary component too (they become primary with the target
    /// if they are in its component).
    pub with: Vec<String>,
    /// Members known dead (shell answers, no server runs).
    pub dead: Vec<String>,
    pub warnings: Vec<String>,
    pub stmt: Sql,
}

impl GaleraPromote {
    pub fn render(&self) -> String {
        let mut out = format!(
            "galera promote {}: its component becomes the primary component (quorum lost)\n",
            self.target
        );
        if !self.dead.is_empty() {
            let _ = writeln!(out, "  down (no server runs): {}", self.dead.join(", "));
        }
        if !self.with.is_empty() {
            let _ = writeln!(
                out,
                "  also in a non-primary component: {}",
                self.with.join(", ")
            );
        }
        for w in &self.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
        let _ = writeln!(
            out,
            " 1. [{}] {};\n 2. [{}] wait until Primary and Synced; write a canary row\n \
             the members that are down rejoin (IST or SST) when they are back and `repltool init` runs",
            self.target,
            self.stmt.shown(),
            self.target
        );
        out
    }
}

/// Plan a Galera promote. None: `target` is already in the primary component.
pub fn plan_promote(
    topo: &Topology,
    inp: &GaleraInputs,
    target: &str,
    force: bool,
) -> Result<Option<GaleraPromote>> {
    let Some(t) = topo.host(target).filter(|h| topo.is_member(h)) else {
        let members: Vec<&str> = topo.members().map(|h| h.name.as_str()).collect();
        return Err(crate::error::input(format!(
            "{target} is not a member of the Galera cluster (members: {})",
            members.join(", ")
        )));
    };
    let (ts, tl) = match member(t, inp) {
        Member::Galera(s, l) => (s, l),
        Member::Standalone(_) => {
            return Err(crate::error::problem(format!(
                "{target}: runs without Galera; there is no component to make primary"
            )))
        }
        Member::Unreachable(e) => {
            return Err(crate::error::input(format!(
                "{target}: could not be reached: {e}"
            )))
        }
        Member::Busy(e) => {
            return Err(crate::error::problem(format!(
                "{target}: its server runs but does not answer ({e}): promote a member that \
                 answers"
            )))
        }
        Member::Down => {
            return Err(crate::error::problem(format!(
                "{target}: its server is down: promote a member that runs; if every member is \
                 down, `repltool init` recovers the cluster"
            )))
        }
    };
    if tl.primary() {
        return Ok(None);
    }
    let mut refusals = Vec::new();
    let mut unsure = Vec::new();
    let mut out = GaleraPromote {
        target: target.to_string(),
        with: Vec::new(),
        dead: Vec::new(),
        warnings: Vec::new(),
        stmt: ts.flavor.pc_bootstrap(),
    };
    for h in topo.members().filter(|h| h.name != target) {
        match member(h, inp) {
            Member::Galera(_, l) if l.primary() => refusals.push(format!(
                "{}: is in a primary component (size {}): the cluster has quorum there. \
                 Bootstrapping {target} would split it into two clusters taking writes; restart \
                 {target} instead so it rejoins",
                h.name, l.cluster_size
            )),
            Member::Galera(_, l) => {
                if l.state_uuid != tl.state_uuid {
                    out.warnings.push(format!(
                        "{} is in another cluster state ({}); it stays out",
                        h.name, l.state_uuid
                    ));
                }
                out.with.push(h.name.clone())
            }
            Member::Standalone(_) => out.dead.push(format!("{} (runs without Galera)", h.name)),
            Member::Down => out.dead.push(h.name.clone()),
            Member::Busy(e) => unsure.push(format!(
                "{}: its server runs but does not answer ({e}): it may be in a primary component \
                 with members repltool cannot reach",
                h.name
            )),
            Member::Unreachable(e) => unsure.push(format!(
                "{}: could not be reached ({e}): it may be up in another network partition, \
                 where it could form a primary component",
                h.name
            )),
        }
    }
    if !refusals.is_empty() {
        return Err(crate::error::problem(refusals.join("\n")));
    }
    if !unsure.is_empty() {
        if !force {
            return Err(crate::error::problem(format!(
                "{}\nrepltool cannot prove that no primary component exists elsewhere: make sure \
                 those members are down (or their machines off), or run with --force if you know \
                 they are",
                unsure.join("\n")
            )));
        }
        for u in unsure {
            out.warnings.push(format!("--force: {u}"));
        }
    }
    Ok(Some(out))
}

/// A rolling restart: members in order, each back to Synced before the next.
#[derive(Debug, Clone)]
pub struct Rolling {
    pub order: Vec<(String, String)>,
    pub size: u32,
}

impl Rolling {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, (h, cmd)) in self.order.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:>2}. [{h}] check every member Synced in one Primary component of {}; {cmd}; \
                 wait until {h} is Synced again",
                i + 1,
                self.size
            );
        }
        out
    }
}

/// Plan a rolling restart: only a healthy cluster (every member Synced, one Primary component
/// of every member), so that no restart takes it below quorum.
pub fn plan_rolling(topo: &Topology, inp: &GaleraInputs) -> Result<Rolling> {
    if topo.galera.is_none() {
        return Err(crate::error::input(
            "restart --rolling restarts the members of a Galera cluster: the file has no \
             `galera:` block",
        ));
    }
    let members: Vec<&Host> = topo.members().collect();
    let n = members.len() as u32;
    let mut problems = Vec::new();
    if n < 2 {
        problems.push(format!(
            "a cluster of {n} member cannot restart without stopping: restart it with the \
             service manager"
        ));
    }
    let mut uuid: Option<&str> = None;
    let mut order = Vec::new();
    for h in &members {
        match member(h, inp) {
            Member::Galera(_, l) if l.primary() && l.synced() && l.cluster_size == n => {
                if uuid.is_some_and(|u| u != l.state_uuid) {
                    problems.push(format!(
                        "{}: in another cluster state ({})",
                        h.name, l.state_uuid
                    ));
                }
                uuid = Some(&l.state_uuid);
                let mut r = Vec::new();
                match service(h, inp, &mut r) {
                    Some(s) => order.push((h.name.clone(), s.restart.clone())),
                    None => problems.extend(r),
                }
            }
            Member::Galera(_, l) => problems.push(format!(
                "{}: {} in a {} component of {} (expected Synced, Primary, {n})",
                h.name,
                l.state_text(),
                if l.primary() {
                    "primary"
                } else {
                    "non-primary"
                },
                l.cluster_size
            )),
            Member::Standalone(_) => problems.push(format!("{}: runs without Galera", h.name)),
            Member::Busy(e) => problems.push(format!("{}: does not answer ({e})", h.name)),
            Member::Down => problems.push(format!("{}: its server is down", h.name)),
            Member::Unreachable(e) => {
                problems.push(format!("{}: could not be reached: {e}", h.name))
            }
        }
    }
    if !problems.is_empty() {
        return Err(crate::error::problem(format!(
            "a rolling restart needs every member Synced in one primary component, so that \
             restarting one never takes the cluster below quorum:\n{}\n`repltool init` repairs \
             what it can",
            problems.join("\n")
        )));
    }
    Ok(Rolling { order, size: n })
}

#[cfg(test)]
mod tests;
