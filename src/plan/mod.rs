//! Pure planners: Topology + observed facts -> Plan (a list of steps, each with the guard the
//! executor re-checks). No I/O here; `--dry-run` prints a Plan and stops.

pub mod galera;
pub mod init;
pub mod promote;

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::flavor::{ChangeMaster, Sql};
use crate::observe::ConfigTarget;

/// A plan: steps in waves. Steps of one wave run in parallel across hosts (in order for one
/// host); a wave starts when the previous one is done.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// Hosts or links already as the file says, for the "nothing to do" summary.
    pub unchanged: Vec<String>,
    /// Things worth knowing that do not stop the plan.
    pub warnings: Vec<String>,
    /// Each server's statement words, for rendering in its own dialect.
    pub words: std::collections::BTreeMap<String, crate::flavor::Words>,
}

#[derive(Debug, Clone)]
pub struct Step {
    pub wave: u32,
    /// The host the step changes (for a link: the master).
    pub host: String,
    pub action: Action,
}

/// A new replica of a master, set up in a [`Action::Link`].
#[derive(Debug, Clone)]
pub struct LinkSlave {
    pub host: String,
    /// CHANGE MASTER TO with `start` filled from the snapshot at execution time.
    pub change: ChangeMaster,
    /// Guard: the slave must still replicate from nobody or from this (host, port) at execution
    /// time, unless the plan was made with --force.
    pub allowed_master: Option<(String, u16)>,
    /// It replicates from somewhere else now and --force said to rewire it.
    pub rewire: bool,
}

/// A copy of the master's user databases, streamed into new slaves.
#[derive(Debug, Clone)]
pub struct Seed {
    /// `replication.seed`: auto decides at execution time, from the master's data size and
    /// what the hosts allow.
    pub method: crate::topology::SeedMethod,
    pub databases_hint: Vec<String>,
    /// Hold the read lock for the whole dump (non-transactional tables present).
    pub hold_lock: bool,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Write the managed config (whole new file content). Guard: the file still has `previous`.
    WriteConfig {
        target: ConfigTarget,
        contents: String,
        previous: Option<String>,
    },
    /// Restart the server, wait for it, then read back the variables the config sets.
    Restart {
        command: String,
        error_log: Option<PathBuf>,
        expect: Vec<(String, String)>,
        config_file: PathBuf,
    },
    /// Statements run in order on the host (dynamic settings, users). `writes`: they write
    /// rows (accounts), so a fenced MySQL server (super_read_only) gets a deliberate write
    /// window around them.
    Sql {
        what: String,
        stmts: Vec<Sql>,
        writes: bool,
    },
    /// Make a master writable (read_only stays ON in its config: fencing).
    MakeWritable { stmts: Vec<Sql> },
    /// Take a consistent snapshot of the master (FTWRL + SHOW MASTER STATUS), seed the new
    /// slaves from it if needed, point them at it and start them.
    Link {
        slaves: Vec<LinkSlave>,
        seed: Option<Seed>,
    },
    /// Rejoin a former master under the new one at the position recorded by promote, after
    /// checking (guard) that it has no transactions past `from` the new master lacks.
    Rejoin {
        slave: String,
        change: ChangeMaster,
        from: (String, u64),
    },
    /// START SLAVE on a replica already pointed at the right master.
    StartReplica { stmt: Sql },
    /// Wait for both threads on these slaves, then write a canary on each master of `canary_from`
    /// and wait for it on every host downstream.
    Verify {
        slaves: Vec<String>,
        canary_from: Vec<String>,
    },
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    pub fn waves(&self) -> Vec<u32> {
        let mut w: Vec<u32> = self.steps.iter().map(|s| s.wave).collect();
        w.sort_unstable();
        w.dedup();
        w
    }

    fn w(&self, host: &str) -> crate::flavor::Words {
        self.words
            .get(host)
            .copied()
            .unwrap_or_else(crate::flavor::Words::unknown)
    }

    /// The plan as text: every file write with its content, every restart, every statement with
    /// secrets masked.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, s) in self.steps.iter().enumerate() {
            let _ = write!(out, "{:>2}. [{}] ", i + 1, s.host);
            match &s.action {
                Action::WriteConfig {
                    target, contents, ..
                } => {
                    let _ = writeln!(out, "write {}:", target.path().display());
                    for l in contents.lines() {
                        let _ = writeln!(out, "      | {l}");
                    }
                }
                Action::Restart {
                    command, expect, ..
                } => {
                    let vars: Vec<String> =
                        expect.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = writeln!(
                        out,
                        "restart the server: {command}\n      then check {}",
                        vars.join(", ")
                    );
                }
                Action::MakeWritable { stmts } => {
                    let _ = writeln!(
                        out,
                        "make the master writable (read_only stays ON in its config: fencing):"
                    );
                    for q in stmts {
                        let _ = writeln!(out, "      {};", q.shown());
                    }
                }
                Action::Sql { what, stmts, .. } => {
                    let _ = writeln!(out, "{what}:");
                    for q in stmts {
                        let _ = writeln!(out, "      {};", q.shown());
                    }
                }
                Action::Link { slaves, seed } => {
                    let names: Vec<&str> = slaves.iter().map(|l| l.host.as_str()).collect();
                    let physical = seed
                        .as_ref()
                        .is_some_and(|sd| sd.method == crate::topology::SeedMethod::Physical);
                    if physical {
                        let _ = writeln!(out, "seed {} from {}:", names.join(", "), s.host);
                    } else {
                        let _ = writeln!(
                            out,
                            "snapshot for {}: {}; {}",
                            names.join(", "),
                            self.w(&s.host).read_lock,
                            self.w(&s.host).show_master
                        );
                    }
                    match seed {
                        Some(sd) if sd.method != crate::topology::SeedMethod::Logical => {
                            let _ = writeln!(
                                out,
                                "      {}copy {} physically into {} (MariaDB: a mariabackup \
                                 stream, prepared there; MySQL: the clone plugin), their \
                                 datadirs replaced (each previous one kept until replication \
                                 runs), replication from the copy's own coordinates{}",
                                if sd.method == crate::topology::SeedMethod::Auto {
                                    format!(
                                        "seed auto: from {} MiB of data and when the hosts \
                                         allow it, ",
                                        crate::physical::AUTO_PHYSICAL_FROM >> 20
                                    )
                                } else {
                                    String::new()
                                },
                                s.host,
                                names.join(", "),
                                if sd.method == crate::topology::SeedMethod::Auto {
                                    "; otherwise, from the snapshot above:"
                                } else {
                                    ""
                                }
                            );
                            if sd.method == crate::topology::SeedMethod::Auto {
                                let _ = writeln!(
                                    out,
                                    "      stream a dump of the user databases into {} (lock \
                                     released once the dump's snapshot is open)",
                                    names.join(", ")
                                );
                            }
                        }
                        Some(sd) => {
                            let _ = writeln!(
                                out,
                                "      stream a dump of {} into {} ({}), then {}",
                                if sd.databases_hint.is_empty() {
                                    "the user databases".to_string()
                                } else {
                                    sd.databases_hint.join(", ")
                                },
                                names.join(", "),
                                if sd.hold_lock {
                                    "lock held for the whole dump: non-transactional tables"
                                } else {
                                    "lock released once the dump's snapshot is open"
                                },
                                self.w(&s.host).unlock
                            );
                        }
                        None => {
                            let _ =
                                writeln!(out, "      {} (no data to copy)", self.w(&s.host).unlock);
                        }
                    }
                    for l in slaves {
                        let w = self.w(&l.host);
                        let _ = writeln!(
                            out,
                            "      on {}: {}; (coordinates from the {}) {}",
                            l.host,
                            if l.rewire {
                                format!("{}; {}; {}", w.stop(), w.reset_all(), w.change)
                            } else {
                                w.change.to_string()
                            },
                            if physical { "copy" } else { "snapshot" },
                            w.start()
                        );
                    }
                }
                Action::StartReplica { stmt } => {
                    let _ = writeln!(out, "{};", stmt.shown());
                }
                Action::Rejoin {
                    slave,
                    change,
                    from,
                } => {
                    let w = self.w(slave);
                    let _ = writeln!(
                        out,
                        "rejoin former master {slave}: check it has no transactions after {}:{} \
                         (refuse if it has), then {} {}:{} at the position recorded by the \
                         promote; {}",
                        from.0,
                        from.1,
                        w.change,
                        change.host,
                        change.port,
                        w.start()
                    );
                }
                Action::Verify {
                    slaves,
                    canary_from,
                } => {
                    let _ = writeln!(
                        out,
                        "verify: IO and SQL threads running on {}; canary row from {} arrives on every slave",
                        slaves.join(", "),
                        canary_from.join(", ")
                    );
                }
            }
        }
        out
    }
}
