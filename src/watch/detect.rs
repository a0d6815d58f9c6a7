//! Holistic detection, pure: what one round of observation saw (the watcher's own probe of the
//! master, and for every replica of it whether its IO thread still holds the master and whether
//! its own host can open a connection to the master's port) plus the rounds before -> a
//! [`Verdict`]. A master is dead only when the watcher cannot reach it AND no replica that
//! answers can (orchestrator's DeadMaster, with MHA's secondary check from the replicas' side),
//! seen so in consecutive rounds spanning the confirmation window. A watcher cut off from the
//! master alone, or from everything, never acts.

use std::time::Duration;

use crate::transport::sql::Reach;

/// The watcher's own probe of the master's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterProbe {
    Answered { read_only: bool },
    Failed { reach: Option<Reach>, error: String },
}

/// One replica of the master, as a witness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    pub host: String,
    /// Its server answered the watcher this round.
    pub answered: bool,
    /// Its IO thread is connected to the master (None: it does not replicate from the master,
    /// or its status could not be read).
    pub io_connected: Option<bool>,
    /// Its own host opened a connection to the master's port and read the server's greeting
    /// (None: not asked, or its shell did not answer).
    pub host_reaches: Option<bool>,
}

impl Witness {
    /// Some(true): it still reaches the master; Some(false): it lost it; None: no evidence.
    pub fn reaches(&self) -> Option<bool> {
        if !self.answered && self.host_reaches.is_none() {
            return None;
        }
        match (self.io_connected, self.host_reaches) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), _) | (None, Some(true)) => Some(true),
            (None, None) => None,
        }
    }
}

/// Everything one round saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub at_ms: u64,
    pub master: String,
    pub probe: MasterProbe,
    pub witnesses: Vec<Witness>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The master answers (read-only when it restarted fenced: an alert, never a failover).
    Healthy { read_only: bool },
    /// The watcher cannot reach the master but these replicas can: a partition on the
    /// watcher's side. Report only.
    CutOff { by: Vec<String>, error: String },
    /// Nobody that answers reaches the master; not yet confirmed.
    Suspect { since_ms: u64, error: String },
    /// Confirmed dead: recover.
    Dead {
        since_ms: u64,
        error: String,
        witnesses: Vec<String>,
    },
    /// The watcher reaches neither the master nor any replica: it cannot tell a dead master
    /// from its own isolation. Report only.
    Isolated { error: String },
}

impl Verdict {
    pub fn name(&self) -> &'static str {
        match self {
            Verdict::Healthy { .. } => "healthy",
            Verdict::CutOff { .. } => "cut-off-from-master",
            Verdict::Suspect { .. } => "suspect",
            Verdict::Dead { .. } => "dead",
            Verdict::Isolated { .. } => "isolated",
        }
    }
}

/// How one round reads on its own: None when the master answered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Alone {
    Answered(bool),
    ReachedBy(Vec<String>),
    Lost(Vec<String>),
    NoWitness,
}

fn alone(r: &Round) -> Alone {
    if let MasterProbe::Answered { read_only } = r.probe {
        return Alone::Answered(read_only);
    }
    let mut reached = Vec::new();
    let mut lost = Vec::new();
    for w in &r.witnesses {
        match w.reaches() {
            Some(true) => reached.push(w.host.clone()),
            Some(false) => lost.push(w.host.clone()),
            None => {}
        }
    }
    if !reached.is_empty() {
        Alone::ReachedBy(reached)
    } else if !lost.is_empty() {
        Alone::Lost(lost)
    } else {
        Alone::NoWitness
    }
}

fn error_of(r: &Round) -> String {
    match &r.probe {
        MasterProbe::Failed { error, .. } => error.clone(),
        MasterProbe::Answered { .. } => String::new(),
    }
}

/// The verdict for `now`, given the earlier rounds (oldest first). Dead needs at least two
/// consecutive rounds in which nobody reached the master, the first at least `confirm` before
/// `now`: one lost probe, or a master that comes back within the window, is not a death.
pub fn judge(earlier: &[Round], now: &Round, confirm: Duration) -> Verdict {
    match alone(now) {
        Alone::Answered(read_only) => Verdict::Healthy { read_only },
        Alone::ReachedBy(by) => Verdict::CutOff {
            by,
            error: error_of(now),
        },
        Alone::NoWitness => Verdict::Isolated {
            error: error_of(now),
        },
        Alone::Lost(witnesses) => {
            let mut since = now.at_ms;
            let mut rounds = 1;
            for r in earlier.iter().rev() {
                if r.master != now.master || !matches!(alone(r), Alone::Lost(_)) {
                    break;
                }
                since = r.at_ms;
                rounds += 1;
            }
            let error = error_of(now);
            if rounds >= 2 && now.at_ms.saturating_sub(since) >= confirm.as_millis() as u64 {
                Verdict::Dead {
                    since_ms: since,
                    error,
                    witnesses,
                }
            } else {
                Verdict::Suspect {
                    since_ms: since,
                    error,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIRM: Duration = Duration::from_millis(500);

    fn w(host: &str, answered: bool, io: Option<bool>, reach: Option<bool>) -> Witness {
        Witness {
            host: host.into(),
            answered,
            io_connected: io,
            host_reaches: reach,
        }
    }

    fn failed() -> MasterProbe {
        MasterProbe::Failed {
            reach: Some(Reach::Refused),
            error: "connection refused".into(),
        }
    }

    fn round(at: u64, probe: MasterProbe, witnesses: Vec<Witness>) -> Round {
        Round {
            at_ms: at,
            master: "db1".into(),
            probe,
            witnesses,
        }
    }

    /// A SIGKILLed master: refused to the watcher, replicas' IO threads reconnecting, their
    /// hosts refused.
    fn killed(at: u64) -> Round {
        round(
            at,
            failed(),
            vec![
                w("db2", true, Some(false), Some(false)),
                w("db3", true, Some(false), Some(false)),
            ],
        )
    }

    #[test]
    fn a_master_that_answers_is_healthy_even_read_only() {
        let r = round(0, MasterProbe::Answered { read_only: true }, vec![]);
        assert_eq!(
            judge(&[], &r, CONFIRM),
            Verdict::Healthy { read_only: true }
        );
    }

    #[test]
    fn a_killed_master_is_suspect_then_dead_after_the_window() {
        let r1 = killed(1_000);
        assert!(matches!(
            judge(&[], &r1, CONFIRM),
            Verdict::Suspect {
                since_ms: 1_000,
                ..
            }
        ));
        // A second round too soon: still suspect.
        let r2 = killed(1_200);
        assert!(matches!(
            judge(std::slice::from_ref(&r1), &r2, CONFIRM),
            Verdict::Suspect { .. }
        ));
        let r3 = killed(1_600);
        match judge(&[r1, r2], &r3, CONFIRM) {
            Verdict::Dead {
                since_ms,
                witnesses,
                ..
            } => {
                assert_eq!(since_ms, 1_000);
                assert_eq!(witnesses, vec!["db2".to_string(), "db3".to_string()]);
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn a_watcher_cut_off_from_the_master_alone_does_nothing() {
        // The replicas still replicate and their hosts reach the master.
        let r = |at| {
            round(
                at,
                MasterProbe::Failed {
                    reach: Some(Reach::TimedOut),
                    error: "timed out".into(),
                },
                vec![
                    w("db2", true, Some(true), Some(true)),
                    w("db3", true, Some(true), Some(true)),
                ],
            )
        };
        let rounds: Vec<Round> = (0..10).map(|i| r(i * 1000)).collect();
        for i in 0..rounds.len() {
            let v = judge(&rounds[..i], &rounds[i], CONFIRM);
            assert!(matches!(v, Verdict::CutOff { .. }), "{v:?}");
        }
        // One replica still reaching the master is enough.
        let mixed = round(
            0,
            failed(),
            vec![
                w("db2", true, Some(false), Some(false)),
                w("db3", true, Some(true), Some(true)),
            ],
        );
        assert!(matches!(
            judge(&[], &mixed, CONFIRM),
            Verdict::CutOff { ref by, .. } if by == &vec!["db3".to_string()]
        ));
    }

    #[test]
    fn a_watcher_that_reaches_nobody_cannot_tell() {
        let r = |at| {
            round(
                at,
                failed(),
                vec![w("db2", false, None, None), w("db3", false, None, None)],
            )
        };
        let (a, b) = (r(0), r(5_000));
        assert!(matches!(judge(&[a], &b, CONFIRM), Verdict::Isolated { .. }));
    }

    #[test]
    fn a_silent_death_is_seen_from_the_replicas_hosts_before_their_io_threads() {
        // The IO threads still think they are connected (no heartbeat missed yet), but no
        // replica's host can open a connection to the master: dead-looking.
        let r = |at| {
            round(
                at,
                MasterProbe::Failed {
                    reach: Some(Reach::TimedOut),
                    error: "timed out".into(),
                },
                vec![
                    w("db2", true, Some(true), Some(false)),
                    w("db3", true, Some(true), Some(false)),
                ],
            )
        };
        let (a, b) = (r(0), r(600));
        assert!(matches!(judge(&[a], &b, CONFIRM), Verdict::Dead { .. }));
    }

    #[test]
    fn a_master_back_within_the_window_restarts_the_count() {
        let a = killed(0);
        let b = round(400, MasterProbe::Answered { read_only: false }, vec![]);
        let c = killed(800);
        let v = judge(&[a, b], &c, CONFIRM);
        assert!(matches!(v, Verdict::Suspect { since_ms: 800, .. }), "{v:?}");
    }

    #[test]
    fn unreachable_replicas_are_no_witnesses_but_one_reachable_is_enough() {
        let r = |at| {
            round(
                at,
                failed(),
                vec![
                    w("db2", false, None, None),
                    w("db3", true, Some(false), None),
                ],
            )
        };
        let (a, b) = (r(0), r(1_000));
        assert!(matches!(judge(&[a], &b, CONFIRM), Verdict::Dead { .. }));
    }

    #[test]
    fn another_master_in_the_history_does_not_count() {
        let mut a = killed(0);
        a.master = "db0".into();
        let b = killed(1_000);
        assert!(matches!(judge(&[a], &b, CONFIRM), Verdict::Suspect { .. }));
    }
}
