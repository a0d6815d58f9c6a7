//! Coordination of watchers (and of manual `promote`/`init`) through a consistent key-value
//! store: a small synchronous [`Store`] of etcd primitives (get, compare-and-swap on a key's
//! revision, leases kept alive in the background), implemented by etcd (`watch::etcd`) and by
//! an in-memory fake for unit tests, and the [`Coordinator`] that builds the cluster's records
//! on it. Layout under `<prefix>/clusters/<name>/`:
//!
//! - `lock`: the cluster lock, bound to the holder's lease (a dead holder loses it after the
//!   lease's TTL), taken with a transaction on `create_revision == 0`; its value names the
//!   holder (watcher id, pid, machine, action, since).
//! - `writer`: the current master, permanent; written only by compare-and-swap on the revision
//!   read under the lock. That revision is the fencing token: a holder that lost its lock while
//!   paused cannot publish a second writer.
//! - `intent`: a recovery in progress (from, to, by whom); a successor finishes that target,
//!   never another one.
//! - `history/<ms>-<id>`: one record per recovery attempt (what, when, which watcher, what was
//!   lost, the outcome); `ack`: the last acknowledgement of a person (anti-flapping).
//!
//! Lease expiry is never the fencing step (etcd resets TTLs on a leader change): every step of
//! a recovery re-checks the lock key, and the publish is a compare-and-swap.

#[cfg(test)]
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
#[cfg(test)]
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};

/// A key's value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub mod_rev: i64,
    pub create_rev: i64,
    pub lease: i64,
}

/// The etcd primitives the coordinator needs. Every call is bounded in time; an error means
/// the store could not answer with a quorum behind it (never "no").
pub trait Store: Send {
    fn get(&mut self, key: &str) -> Result<Option<Entry>>;
    /// Every key under `prefix`, in key order.
    fn range(&mut self, prefix: &str) -> Result<Vec<(String, Entry)>>;
    /// Put `value` if the key's mod revision is `expect` (0: the key must not exist), bound to
    /// `lease` (0: none). Whether it was written.
    fn put_if(&mut self, key: &str, value: &[u8], expect: i64, lease: i64) -> Result<bool>;
    fn put(&mut self, key: &str, value: &[u8]) -> Result<()>;
    /// Delete if the key's mod revision is `expect`. Whether it was deleted.
    fn delete_if(&mut self, key: &str, expect: i64) -> Result<bool>;
    /// A lease of `ttl`, kept alive in the background until revoked; the flag turns true when
    /// a keep-alive finds it gone (or none succeeded for a whole TTL).
    fn grant(&mut self, ttl: Duration) -> Result<(i64, Arc<AtomicBool>)>;
    fn revoke(&mut self, lease: i64) -> Result<()>;
}

/// Milliseconds since the epoch (records are compared across machines).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Who holds (or asks for) the lock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    pub pid: u32,
    pub machine: String,
    /// What for: "recovery of db1", "promote db2", "init".
    pub action: String,
    pub since_ms: u64,
}

/// The current master, as published.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Writer {
    pub host: String,
    pub since_ms: u64,
    pub by: String,
    /// "failover" (automatic), "promote" (a person), "init", "observed" (first watcher).
    pub how: String,
}

/// A recovery in progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Intent {
    pub from: String,
    pub to: String,
    pub by: String,
    pub since_ms: u64,
}

/// One recovery attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Recovery {
    pub at_ms: u64,
    pub watcher: String,
    pub failed: String,
    /// The new master (empty when refused before choosing one).
    pub new_master: String,
    /// "done", "refused", "failed", "interrupted" (lost its lock), "blocked" (anti-flap).
    pub outcome: String,
    /// Acknowledged transactions lost: Some(0) when the dead master's binary log was read,
    /// None when its host did not answer (unknown).
    pub lost: Option<u64>,
    /// Transactions recovered from the dead master's binary log.
    pub salvaged: u64,
    /// From detection to the end, in ms.
    pub took_ms: u64,
    pub detail: String,
}

/// A person's acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ack {
    pub at_ms: u64,
    pub by: String,
}

/// A held lock: the key's revision, the lease, and the flag the keep-alive raises when lost.
#[derive(Debug, Clone)]
pub struct LockToken {
    pub rev: i64,
    pub lease: i64,
    lost: Arc<AtomicBool>,
}

/// The answer to a lock request.
#[derive(Debug)]
pub enum Lock {
    Held(LockToken),
    Busy(Holder),
}

/// The cluster's records over a [`Store`].
pub struct Coordinator {
    store: Box<dyn Store>,
    base: String,
    ttl: Duration,
}

impl Coordinator {
    pub fn new(store: Box<dyn Store>, prefix: &str, cluster: &str, ttl: Duration) -> Coordinator {
        Coordinator {
            store,
            base: format!("{}/clusters/{cluster}", prefix.trim_end_matches('/')),
            ttl,
        }
    }

    fn key(&self, k: &str) -> String {
        format!("{}/{k}", self.base)
    }

    fn read<T: for<'de> Deserialize<'de>>(&mut self, k: &str) -> Result<Option<(T, i64)>> {
        let key = self.key(k);
        match self.store.get(&key)? {
            None => Ok(None),
            Some(e) => {
                let v = serde_json::from_slice(&e.value).map_err(|err| {
                    anyhow!("etcd key {key} does not hold what repltool wrote: {err}")
                })?;
                Ok(Some((v, e.mod_rev)))
            }
        }
    }

    /// A linearizable read: Ok only when etcd answers with a quorum behind it.
    pub fn check(&mut self) -> Result<()> {
        let k = self.key("writer");
        self.store.get(&k).map(|_| ())
    }

    /// Take the cluster lock without waiting.
    pub fn try_lock(&mut self, me: &Holder) -> Result<Lock> {
        let key = self.key("lock");
        let (lease, lost) = self.store.grant(self.ttl)?;
        let value = serde_json::to_vec(me)?;
        if self.store.put_if(&key, &value, 0, lease)? {
            // The revision of our put: read back (ours: same lease).
            let e = self
                .store
                .get(&key)?
                .ok_or_else(|| anyhow!("the lock key vanished right after it was taken"))?;
            if e.lease == lease {
                return Ok(Lock::Held(LockToken {
                    rev: e.mod_rev,
                    lease,
                    lost,
                }));
            }
        }
        let _ = self.store.revoke(lease);
        let holder = match self.store.get(&key)? {
            Some(e) => serde_json::from_slice(&e.value).unwrap_or(Holder {
                id: "?".into(),
                pid: 0,
                machine: "?".into(),
                action: String::from_utf8_lossy(&e.value).into_owned(),
                since_ms: 0,
            }),
            // Released in between: say so; the caller tries again next round.
            None => Holder {
                id: "nobody (just released)".into(),
                pid: 0,
                machine: String::new(),
                action: String::new(),
                since_ms: 0,
            },
        };
        Ok(Lock::Busy(holder))
    }

    /// Do we still hold the lock? The keep-alive has not lost the lease, and the key is still
    /// ours (read with a quorum). Any doubt is "no".
    pub fn holds(&mut self, t: &LockToken) -> bool {
        if t.lost.load(Ordering::SeqCst) {
            return false;
        }
        let key = self.key("lock");
        matches!(self.store.get(&key), Ok(Some(e)) if e.lease == t.lease && e.mod_rev == t.rev)
    }

    /// Who holds the lock now, if anyone.
    pub fn lock_holder(&mut self) -> Result<Option<Holder>> {
        Ok(self.read::<Holder>("lock")?.map(|(h, _)| h))
    }

    pub fn unlock(&mut self, t: &LockToken) {
        let key = self.key("lock");
        let _ = self.store.delete_if(&key, t.rev);
        let _ = self.store.revoke(t.lease);
    }

    pub fn writer(&mut self) -> Result<Option<(Writer, i64)>> {
        self.read("writer")
    }

    /// Publish the writer if its revision is still `expect` (0: no writer yet).
    pub fn publish_writer(&mut self, w: &Writer, expect: i64) -> Result<bool> {
        let key = self.key("writer");
        let v = serde_json::to_vec(w)?;
        self.store.put_if(&key, &v, expect, 0)
    }

    pub fn intent(&mut self) -> Result<Option<(Intent, i64)>> {
        self.read("intent")
    }

    pub fn set_intent(&mut self, i: &Intent) -> Result<()> {
        let key = self.key("intent");
        let v = serde_json::to_vec(i)?;
        self.store.put(&key, &v)
    }

    pub fn clear_intent(&mut self) -> Result<()> {
        let key = self.key("intent");
        if let Some(e) = self.store.get(&key)? {
            self.store.delete_if(&key, e.mod_rev)?;
        }
        Ok(())
    }

    pub fn record(&mut self, r: &Recovery) -> Result<()> {
        let key = self.key(&format!("history/{:016}-{}", r.at_ms, r.watcher));
        let v = serde_json::to_vec(r)?;
        self.store.put(&key, &v)
    }

    /// Every recorded attempt, oldest first.
    pub fn history(&mut self) -> Result<Vec<Recovery>> {
        let prefix = self.key("history/");
        let mut out = Vec::new();
        for (_, e) in self.store.range(&prefix)? {
            if let Ok(r) = serde_json::from_slice::<Recovery>(&e.value) {
                out.push(r);
            }
        }
        out.sort_by_key(|r| r.at_ms);
        Ok(out)
    }

    pub fn ack(&mut self, by: &str) -> Result<Ack> {
        let a = Ack {
            at_ms: now_ms(),
            by: by.to_string(),
        };
        let key = self.key("ack");
        let v = serde_json::to_vec(&a)?;
        self.store.put(&key, &v)?;
        Ok(a)
    }

    pub fn last_ack(&mut self) -> Result<Option<Ack>> {
        Ok(self.read::<Ack>("ack")?.map(|(a, _)| a))
    }

    /// The completed automatic recovery that blocks another one now, if any.
    pub fn blocking(&mut self, now: u64, anti_flap: Duration) -> Result<Option<Recovery>> {
        let h = self.history()?;
        let ack = self.last_ack()?;
        Ok(blocking(&h, ack.as_ref(), now, anti_flap).cloned())
    }
}

/// The anti-flapping rule: the last *completed* automatic recovery blocks another one for
/// `anti_flap` unless a person acknowledged it since. Refused, failed or interrupted attempts
/// never block (a recovery that died half-way must not stop the next one: orchestrator#1296).
pub fn blocking<'a>(
    history: &'a [Recovery],
    ack: Option<&Ack>,
    now: u64,
    anti_flap: Duration,
) -> Option<&'a Recovery> {
    let last = history.iter().rev().find(|r| r.outcome == "done")?;
    if ack.is_some_and(|a| a.at_ms >= last.at_ms) {
        return None;
    }
    (now.saturating_sub(last.at_ms) < anti_flap.as_millis() as u64).then_some(last)
}

/// The in-memory store for unit tests: etcd's revision semantics, leases that expire only when
/// a test says so (as when a holder dies), and a switch that makes every call fail (etcd down).
#[cfg(test)]
#[derive(Clone, Default)]
pub struct Fake {
    inner: Arc<Mutex<FakeInner>>,
}

#[cfg(test)]
#[derive(Default)]
struct FakeInner {
    rev: i64,
    keys: BTreeMap<String, Entry>,
    leases: BTreeMap<i64, Arc<AtomicBool>>,
    next_lease: i64,
    down: bool,
}

#[cfg(test)]
impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, FakeInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// etcd unavailable (down, or in minority) or back.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
    }
    /// A lease's holder died: the lease expires and its keys go.
    pub fn expire(&self, lease: i64) {
        let mut g = self.lock();
        if let Some(f) = g.leases.remove(&lease) {
            f.store(true, Ordering::SeqCst);
        }
        g.keys.retain(|_, e| e.lease != lease);
    }
    /// Every lease currently granted.
    #[allow(dead_code)]
    pub fn leases(&self) -> Vec<i64> {
        self.lock().leases.keys().copied().collect()
    }
}

#[cfg(test)]
impl FakeInner {
    fn up(&self) -> Result<()> {
        if self.down {
            Err(anyhow!("etcd: no quorum (fake store is down)"))
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
impl Store for Fake {
    fn get(&mut self, key: &str) -> Result<Option<Entry>> {
        let g = self.lock();
        g.up()?;
        Ok(g.keys.get(key).cloned())
    }
    fn range(&mut self, prefix: &str) -> Result<Vec<(String, Entry)>> {
        let g = self.lock();
        g.up()?;
        Ok(g.keys
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect())
    }
    fn put_if(&mut self, key: &str, value: &[u8], expect: i64, lease: i64) -> Result<bool> {
        let mut g = self.lock();
        g.up()?;
        let cur = g.keys.get(key).map(|e| e.mod_rev).unwrap_or(0);
        if cur != expect {
            return Ok(false);
        }
        if lease != 0 && !g.leases.contains_key(&lease) {
            return Err(anyhow!("etcd: requested lease not found"));
        }
        g.rev += 1;
        let rev = g.rev;
        let create = g.keys.get(key).map(|e| e.create_rev).unwrap_or(rev);
        g.keys.insert(
            key.to_string(),
            Entry {
                value: value.to_vec(),
                mod_rev: rev,
                create_rev: create,
                lease,
            },
        );
        Ok(true)
    }
    fn put(&mut self, key: &str, value: &[u8]) -> Result<()> {
        let cur = self.lock().keys.get(key).map(|e| e.mod_rev).unwrap_or(0);
        self.put_if(key, value, cur, 0).map(|_| ())
    }
    fn delete_if(&mut self, key: &str, expect: i64) -> Result<bool> {
        let mut g = self.lock();
        g.up()?;
        if g.keys.get(key).map(|e| e.mod_rev) == Some(expect) {
            g.keys.remove(key);
            g.rev += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }
    fn grant(&mut self, _ttl: Duration) -> Result<(i64, Arc<AtomicBool>)> {
        let mut g = self.lock();
        g.up()?;
        g.next_lease += 1;
        let id = g.next_lease;
        let flag = Arc::new(AtomicBool::new(false));
        g.leases.insert(id, flag.clone());
        Ok((id, flag))
    }
    fn revoke(&mut self, lease: i64) -> Result<()> {
        self.lock().up()?;
        self.expire(lease);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(id: &str) -> Holder {
        Holder {
            id: id.into(),
            pid: 1,
            machine: "m".into(),
            action: "recovery of db1".into(),
            since_ms: 0,
        }
    }

    fn coord(f: &Fake) -> Coordinator {
        Coordinator::new(
            Box::new(f.clone()),
            "/repltool/v1",
            "shop",
            Duration::from_secs(3),
        )
    }

    #[test]
    fn one_holder_at_a_time_and_a_dead_holder_frees_the_lock() {
        let f = Fake::new();
        let (mut a, mut b) = (coord(&f), coord(&f));
        let Lock::Held(ta) = a.try_lock(&holder("A")).unwrap() else {
            panic!("A should get the lock")
        };
        match b.try_lock(&holder("B")).unwrap() {
            Lock::Busy(h) => assert_eq!(h.id, "A"),
            Lock::Held(_) => panic!("two holders"),
        }
        assert!(a.holds(&ta));
        // A dies: its lease expires; B takes over; A (paused, then resumed) no longer holds.
        f.expire(ta.lease);
        let Lock::Held(tb) = b.try_lock(&holder("B")).unwrap() else {
            panic!("B should take over")
        };
        assert!(!a.holds(&ta));
        assert!(b.holds(&tb));
        // A's unlock after resuming cannot release B's lock.
        a.unlock(&ta);
        assert!(b.holds(&tb));
        b.unlock(&tb);
        assert!(matches!(a.try_lock(&holder("A")).unwrap(), Lock::Held(_)));
    }

    #[test]
    fn the_writer_is_published_only_on_the_revision_read() {
        let f = Fake::new();
        let (mut a, mut b) = (coord(&f), coord(&f));
        let w = |h: &str| Writer {
            host: h.into(),
            since_ms: 0,
            by: "t".into(),
            how: "failover".into(),
        };
        assert!(a.writer().unwrap().is_none());
        assert!(a.publish_writer(&w("db1"), 0).unwrap());
        // A second "first" publish loses.
        assert!(!b.publish_writer(&w("db9"), 0).unwrap());
        let (cur, rev) = a.writer().unwrap().unwrap();
        assert_eq!(cur.host, "db1");
        // Both read rev; the first CAS wins, the stale one (a paused watcher) fails.
        assert!(b.publish_writer(&w("db2"), rev).unwrap());
        assert!(!a.publish_writer(&w("db3"), rev).unwrap());
        assert_eq!(a.writer().unwrap().unwrap().0.host, "db2");
    }

    #[test]
    fn etcd_down_is_an_error_never_a_no() {
        let f = Fake::new();
        let mut a = coord(&f);
        f.set_down(true);
        assert!(a.check().is_err());
        assert!(a.try_lock(&holder("A")).is_err());
        assert!(a.writer().is_err());
        f.set_down(false);
        assert!(a.check().is_ok());
    }

    #[test]
    fn a_held_lock_is_lost_when_etcd_cannot_confirm_it() {
        let f = Fake::new();
        let mut a = coord(&f);
        let Lock::Held(t) = a.try_lock(&holder("A")).unwrap() else {
            panic!()
        };
        f.set_down(true);
        assert!(!a.holds(&t), "no quorum: the holder must stop");
    }

    fn rec(at: u64, outcome: &str) -> Recovery {
        Recovery {
            at_ms: at,
            watcher: "w".into(),
            failed: "db1".into(),
            new_master: "db2".into(),
            outcome: outcome.into(),
            lost: Some(0),
            salvaged: 0,
            took_ms: 1000,
            detail: String::new(),
        }
    }

    #[test]
    fn only_a_completed_recovery_blocks_and_an_ack_lifts_it() {
        let hour = Duration::from_secs(3600);
        let h = vec![
            rec(1_000, "done"),
            rec(2_000, "interrupted"),
            rec(3_000, "refused"),
        ];
        assert_eq!(
            blocking(&h, None, 10_000, hour).map(|r| r.at_ms),
            Some(1_000)
        );
        // After the period.
        assert!(blocking(&h, None, 1_000 + 3_600_000, hour).is_none());
        // Acknowledged after it.
        let ack = Ack {
            at_ms: 5_000,
            by: "ops".into(),
        };
        assert!(blocking(&h, Some(&ack), 10_000, hour).is_none());
        // An ack older than the recovery does not count.
        let old = Ack {
            at_ms: 500,
            by: "ops".into(),
        };
        assert!(blocking(&h, Some(&old), 10_000, hour).is_some());
        // Half-done recoveries alone never block.
        let h = vec![rec(1_000, "interrupted"), rec(2_000, "failed")];
        assert!(blocking(&h, None, 3_000, hour).is_none());
    }

    #[test]
    fn history_and_ack_round_trip() {
        let f = Fake::new();
        let mut a = coord(&f);
        a.record(&rec(2, "done")).unwrap();
        a.record(&rec(1, "refused")).unwrap();
        let h = a.history().unwrap();
        assert_eq!(h.iter().map(|r| r.at_ms).collect::<Vec<_>>(), vec![1, 2]);
        assert!(a
            .blocking(now_ms(), Duration::from_secs(3600))
            .unwrap()
            .is_none());
        a.record(&rec(now_ms(), "done")).unwrap();
        assert!(a
            .blocking(now_ms(), Duration::from_secs(3600))
            .unwrap()
            .is_some());
        std::thread::sleep(Duration::from_millis(2));
        a.ack("ops").unwrap();
        assert!(a
            .blocking(now_ms(), Duration::from_secs(3600))
            .unwrap()
            .is_none());
    }
}
