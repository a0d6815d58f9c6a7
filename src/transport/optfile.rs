//! Client option files: the admin (or replication) credentials for the dump tool, the client
//! and the binlog tool on a host, which must never see them on a command line.
//!
//! Each file lives alone in a directory made by `mktemp -d` under `umask 077`, so it is private
//! from its first byte whatever the login umask: nobody else can even reach the file, and no
//! `chmod` has to close a window. The directory's name says which run made it:
//! `/tmp/repltool-cnf-<machine tag>-<pid>-<start time>-XXXXXXXX`, the tag naming the kernel boot
//! and PID namespace of the machine repltool runs on. That lets a later run on the same machine
//! prove the owner is gone (that pid no longer runs with that start time) and remove what a
//! killed run or a lost link left behind; directories of runs from other machines are removed
//! only when older than [`STALE_AFTER_DAYS`], so another live run's file is never touched. A
//! run interrupted by a signal removes its own directories (see `cleanup`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Result};

use super::{cleanup, shell_quote, HostSession};
use crate::secret::Secret;

const PREFIX: &str = "repltool-cnf-";
const FILE_NAME: &str = "client.cnf";
/// Option files of earlier versions: `/tmp/repltool-client.XXXXXXXX`.
const LEGACY_PREFIX: &str = "repltool-client.";
/// A directory of a run on another machine is left alone this long: no run holds a file longer
/// (a seed of many TiB takes hours, not a week).
pub const STALE_AFTER_DAYS: u32 = 7;

/// Who made a directory: the machine (boot and PID namespace), the process and its start time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunId {
    /// 16 hex digits.
    pub tag: String,
    pub pid: u32,
    /// Start time of the process in clock ticks since boot (/proc/PID/stat field 22): with the
    /// pid, it names one process even after the pid is reused.
    pub start: u64,
}

impl RunId {
    /// This process.
    pub fn current() -> &'static RunId {
        static ID: OnceLock<RunId> = OnceLock::new();
        ID.get_or_init(|| {
            let pid = std::process::id();
            RunId {
                tag: machine_tag(),
                pid,
                start: start_time(pid).unwrap_or(0),
            }
        })
    }

    fn dir_prefix(&self) -> String {
        format!("{PREFIX}{}-{}-{}-", self.tag, self.pid, self.start)
    }
}

fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The same for every process that shares this kernel boot and PID namespace, and only for
/// them: there a pid and a start time name one process. Without either, a tag no other run
/// has (its files then only ever age out).
fn machine_tag() -> String {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok();
    let ns = std::fs::read_link("/proc/self/ns/pid").ok();
    let seed = match (boot, ns) {
        (Some(b), Some(n)) => format!("{}|{}", b.trim(), n.display()),
        _ => format!(
            "unknown|{}|{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ),
    };
    format!("{:016x}", fnv64(seed.as_bytes()))
}

/// A process's start time in clock ticks since boot; None when it does not exist.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold anything; fields follow the last `)`.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start` still runs on this machine.
fn alive(pid: u32, start: u64) -> bool {
    match start_time(pid) {
        Some(s) => s == start,
        // No such process, or /proc says nothing: gone only when /proc itself answers.
        None => !Path::new("/proc/self/stat").exists(),
    }
}

/// What a directory's name says about its run.
fn parse_dir_name(name: &str) -> Option<RunId> {
    let rest = name.strip_prefix(PREFIX)?;
    let mut parts = rest.split('-');
    let tag = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    let start = parts.next()?.parse().ok()?;
    let random = parts.next()?;
    if parts.next().is_some()
        || tag.len() != 16
        || !tag.chars().all(|c| c.is_ascii_hexdigit())
        || random.is_empty()
        || !random.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return None;
    }
    Some(RunId {
        tag: tag.to_string(),
        pid,
        start,
    })
}

/// A leftover found on a host: a name under /tmp owned by the login user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    pub name: String,
    /// Older than [`STALE_AFTER_DAYS`].
    pub old: bool,
}

/// Whether a leftover may be removed: its run is provably gone (same machine, that process no
/// longer runs), or it is old. Never this run's own, never a name repltool does not make.
pub fn is_stale(l: &Leftover, me: &RunId, alive: &dyn Fn(u32, u64) -> bool) -> bool {
    if let Some(legacy) = l.name.strip_prefix(LEGACY_PREFIX) {
        return l.old && !legacy.is_empty() && legacy.chars().all(|c| c.is_ascii_alphanumeric());
    }
    let Some(owner) = parse_dir_name(&l.name) else {
        return false;
    };
    if owner.tag != me.tag {
        return l.old;
    }
    if owner.pid == me.pid && owner.start == me.start {
        return false;
    }
    !alive(owner.pid, owner.start)
}

/// Hosts (by session name) already swept in this run.
static SWEPT: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Write a client option file with `user`, `password` and `port` (host 127.0.0.1, TCP) on the
/// host, private from its creation. The first call for a host in a run also removes stale
/// leftovers of dead runs there. The file stays registered for removal on a signal until
/// [`remove`].
pub fn write(s: &mut dyn HostSession, user: &str, password: &Secret, port: u16) -> Result<PathBuf> {
    let me = RunId::current();
    let esc = |v: &str| v.replace('\\', "\\\\").replace('"', "\\\"");
    let text = format!(
        "[client]\nuser=\"{}\"\npassword=\"{}\"\nhost=127.0.0.1\nport={port}\nprotocol=TCP\n",
        esc(user),
        esc(password.expose())
    );
    // One round trip: make the directory and the file (umask first: both are private as
    // created), print the directory, then list leftovers for the sweep.
    let script = format!(
        "umask 077\n\
         d=$(mktemp -d /tmp/{prefix}XXXXXXXX) || exit 3\n\
         cat > \"$d/{FILE_NAME}\" || {{ rm -rf \"$d\"; exit 4; }}\n\
         echo \"dir $d\"\n\
         for f in /tmp/{PREFIX}* /tmp/{LEGACY_PREFIX}*; do\n\
         \x20 [ \"$f\" = \"$d\" ] && continue\n\
         \x20 [ -e \"$f\" ] && [ ! -L \"$f\" ] && [ -O \"$f\" ] || continue\n\
         \x20 if [ -n \"$(find \"$f\" -prune -mtime +{days} 2>/dev/null)\" ]; then echo \"old $f\"; else echo \"new $f\"; fi\n\
         done\n\
         exit 0\n",
        prefix = me.dir_prefix(),
        days = STALE_AFTER_DAYS - 1,
    );
    let out = s.run(
        &script,
        Some(text.as_bytes()),
        false,
        Duration::from_secs(15),
    )?;
    let stdout = out.stdout_str();
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix("dir "))
        .map(PathBuf::from);
    let Some(dir) = dir.filter(|_| out.ok()) else {
        bail!(
            "{}: cannot create a private option file in /tmp (exit {}): {}",
            s.host_name(),
            out.status,
            out.stderr_str().trim()
        );
    };
    let path = dir.join(FILE_NAME);
    // A session that cannot be driven from another thread gets no signal cleanup; the next
    // run's sweep removes what it leaves.
    if let Some(handle) = s.detached() {
        cleanup::register(s.host_name(), &dir, handle);
    }
    crate::failpoint::hit("optfile-written");

    let first = {
        let mut swept = SWEPT.lock().unwrap_or_else(|p| p.into_inner());
        swept
            .get_or_insert_with(HashSet::new)
            .insert(s.host_name().to_string())
    };
    if first {
        let stale: Vec<String> = stdout
            .lines()
            .filter_map(|l| {
                let (age, p) = l.split_once(' ')?;
                let name = p.strip_prefix("/tmp/")?;
                let l = Leftover {
                    name: name.to_string(),
                    old: age == "old",
                };
                is_stale(&l, me, &alive).then(|| format!("/tmp/{name}"))
            })
            .collect();
        if !stale.is_empty() {
            let quoted: Vec<String> = stale.iter().map(|p| shell_quote(p)).collect();
            // Best effort: a leftover that cannot be removed now is removed by a later run.
            let _ = s.run(
                &format!("rm -rf -- {}", quoted.join(" ")),
                None,
                false,
                Duration::from_secs(15),
            );
        }
    }
    Ok(path)
}

/// Remove an option file made by [`write`] and its directory (a path not made by [`write`] is
/// removed alone). Best effort; the next run's sweep removes what a failure leaves.
pub fn remove(s: &mut dyn HostSession, path: &Path) {
    let dir = path
        .parent()
        .filter(|d| {
            d.parent() == Some(Path::new("/tmp"))
                && d.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| parse_dir_name(n).is_some())
        })
        .map(Path::to_path_buf);
    let script = match &dir {
        Some(d) => format!("rm -rf -- {}", shell_quote(&d.to_string_lossy())),
        None => format!("rm -f -- {}", shell_quote(&path.to_string_lossy())),
    };
    let res = s.run(&script, None, false, Duration::from_secs(10));
    if let (Some(d), Ok(out)) = (&dir, res) {
        if out.ok() {
            cleanup::forget(s.host_name(), d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::local::LocalSession;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn me() -> RunId {
        RunId {
            tag: "0123456789abcdef".into(),
            pid: 100,
            start: 5000,
        }
    }

    fn l(name: &str, old: bool) -> Leftover {
        Leftover {
            name: name.into(),
            old,
        }
    }

    #[test]
    fn only_provably_dead_or_old_leftovers_are_stale() {
        let me = me();
        let alive = |pid: u32, start: u64| pid == 200 && start == 7;
        let dir = |tag: &str, pid: u32, start: u64| format!("{PREFIX}{tag}-{pid}-{start}-AbC123xy");
        // This run's own: never.
        assert!(!is_stale(&l(&dir(&me.tag, 100, 5000), true), &me, &alive));
        // Same machine, that process is gone (or the pid now belongs to another start).
        assert!(is_stale(&l(&dir(&me.tag, 300, 9), false), &me, &alive));
        assert!(is_stale(&l(&dir(&me.tag, 200, 8), false), &me, &alive));
        // Same machine, still running: never, however old.
        assert!(!is_stale(&l(&dir(&me.tag, 200, 7), true), &me, &alive));
        // Another machine: only when old.
        assert!(!is_stale(
            &l(&dir("fedcba9876543210", 300, 9), false),
            &me,
            &alive
        ));
        assert!(is_stale(
            &l(&dir("fedcba9876543210", 300, 9), true),
            &me,
            &alive
        ));
        // Earlier versions' files: only when old.
        assert!(!is_stale(
            &l("repltool-client.Ab12Cd34", false),
            &me,
            &alive
        ));
        assert!(is_stale(&l("repltool-client.Ab12Cd34", true), &me, &alive));
        // Names repltool does not make: never.
        for other in [
            "repltool-sshd-abc",
            "repltool-agent-x",
            "repltool-cnf-xyz",
            "repltool-cnf-0123456789abcdef-1-2",
            "repltool-cnf-0123456789abcdef-1-2-a-b",
            "repltool-client.",
        ] {
            assert!(!is_stale(&l(other, true), &me, &alive), "{other}");
        }
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let id = RunId::current();
        assert_eq!(id.tag.len(), 16);
        assert!(alive(id.pid, id.start));
        assert!(!alive(id.pid, id.start + 1));
        assert_eq!(id.tag, machine_tag(), "stable across calls");
    }

    #[test]
    fn the_file_is_private_in_a_private_directory_and_removed_with_it() {
        let mut s = LocalSession::new("optfile-test", "127.0.0.1");
        // Under the usual login umask: what is created must be private anyway.
        // SAFETY: umask has no preconditions; the old mask is restored below.
        let old = unsafe { libc::umask(0o022) };
        let res = write(&mut s, "admin", &Secret::new("pa\"ss\\word"), 3307);
        unsafe { libc::umask(old) };
        let p = res.unwrap();
        let d = p.parent().unwrap();
        let name = d.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_dir_name(name).as_ref(), Some(RunId::current()));
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // SAFETY: geteuid has no preconditions.
        assert_eq!(meta.uid(), unsafe { libc::geteuid() });
        assert_eq!(
            std::fs::read_to_string(&p).unwrap(),
            "[client]\nuser=\"admin\"\npassword=\"pa\\\"ss\\\\word\"\nhost=127.0.0.1\nport=3307\nprotocol=TCP\n"
        );
        assert!(cleanup::registered().iter().any(|(_, r)| r == d));
        remove(&mut s, &p);
        assert!(!d.exists());
        assert!(!cleanup::registered().iter().any(|(_, r)| r == d));
    }

    #[test]
    fn the_first_write_on_a_host_sweeps_dead_runs_and_spares_live_ones() {
        use std::process::Command;
        let id = RunId::current();
        let mk = |name: &str| {
            let p = PathBuf::from("/tmp").join(name);
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join(FILE_NAME), "x").unwrap();
            p
        };
        // A dead process of this machine: pid 1 never started at tick 1 (it is init, or it
        // started at another tick).
        let dead_start = start_time(1).map(|s| s + 1).unwrap_or(1);
        let dead = mk(&format!("{PREFIX}{}-1-{dead_start}-Dead0001", id.tag));
        // A live run of this machine: this test process itself under another... no, a child.
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let child_start = start_time(child.id()).unwrap();
        let live = mk(&format!(
            "{PREFIX}{}-{}-{child_start}-Live0001",
            id.tag,
            child.id()
        ));
        // Another machine's: a recent one stays, an old one goes.
        let foreign_new = mk(&format!("{PREFIX}fedcba9876543210-42-42-Fnew0001"));
        let foreign_old = mk(&format!("{PREFIX}fedcba9876543211-42-42-Fold0001"));
        let status = Command::new("touch")
            .args(["-d", "10 days ago"])
            .arg(&foreign_old)
            .status()
            .unwrap();
        assert!(status.success());
        // A name repltool does not make.
        let other = mk("repltool-cnf-not-ours");

        let mut s = LocalSession::new("optfile-sweep-test", "127.0.0.1");
        let p = write(&mut s, "u", &Secret::new("p"), 3306).unwrap();
        let gone = |p: &Path| !p.exists();
        assert!(gone(&dead), "a dead run's directory is removed");
        assert!(gone(&foreign_old), "an old foreign directory is removed");
        assert!(!gone(&live), "a live run's directory is kept");
        assert!(!gone(&foreign_new), "a recent foreign directory is kept");
        assert!(!gone(&other), "a name repltool does not make is kept");
        remove(&mut s, &p);
        let _ = child.kill();
        let _ = child.wait();
        for p in [&live, &foreign_new, &other] {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}
