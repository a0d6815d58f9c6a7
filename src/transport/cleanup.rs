//! What a run must remove from its hosts if it is interrupted: the directories holding client
//! option files (credentials). On SIGINT (Ctrl-C), SIGTERM or SIGHUP, a thread removes every
//! directory still registered, on every host at once, bounded in time, then the process dies
//! of the signal as it would have without the handler. A second signal kills at once.
//!
//! The signal handler itself only writes the signal number to a pipe (all it may safely do);
//! the work happens on the cleanup thread, over handles on the hosts' sessions that work while
//! other threads hold the sessions ([`super::HostSession::detached`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use super::{shell_quote, HostSession};

/// How long an interrupted run spends removing its files before it gives up.
const CLEANUP_LIMIT: Duration = Duration::from_secs(5);

struct Entry {
    host: String,
    dir: PathBuf,
    handle: Box<dyn HostSession>,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static PIPE_WRITE: AtomicI32 = AtomicI32::new(-1);
static CLEANING: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

fn registry() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    REGISTRY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Remember that `dir` on `host` must be removed if the run is interrupted; `handle` runs the
/// removal. [`forget`] it once the directory is gone.
pub(crate) fn register(host: &str, dir: &Path, handle: Box<dyn HostSession>) {
    registry().push(Entry {
        host: host.to_string(),
        dir: dir.to_path_buf(),
        handle,
    });
}

pub(crate) fn forget(host: &str, dir: &Path) {
    registry().retain(|e| !(e.host == host && e.dir == dir));
}

/// The directories registered now, as (host, dir): for tests and messages.
pub fn registered() -> Vec<(String, PathBuf)> {
    registry()
        .iter()
        .map(|e| (e.host.clone(), e.dir.clone()))
        .collect()
}

/// Remove every registered directory, on all hosts at once, within `limit`. Best effort: a
/// host that does not answer in time keeps its directory (the next run's sweep removes it).
pub fn remove_all(limit: Duration) {
    remove_where(limit, |_| true);
}

fn remove_where(limit: Duration, pick: impl Fn(&Path) -> bool) {
    let entries: Vec<Entry> = {
        let mut reg = registry();
        let (take, keep): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut *reg)
            .into_iter()
            .partition(|e| pick(&e.dir));
        *reg = keep;
        take
    };
    if entries.is_empty() {
        return;
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let n = entries.len();
    for mut e in entries {
        let done = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("repltool-cleanup".into())
            .spawn(move || {
                let script = format!("rm -rf -- {}", shell_quote(&e.dir.to_string_lossy()));
                let _ = e.handle.run(&script, None, false, limit);
                let _ = done.send(());
            });
        if spawned.is_err() {
            let _ = tx.send(());
        }
    }
    drop(tx);
    let deadline = super::deadline_in(limit);
    for _ in 0..n {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if rx.recv_timeout(left).is_err() {
            break;
        }
    }
}

extern "C" fn on_signal(sig: libc::c_int) {
    if CLEANING.swap(true, Ordering::SeqCst) {
        // A second signal while cleaning: die now, as without the handler.
        // SAFETY: signal(2) and raise(3) are async-signal-safe.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
        return;
    }
    let fd = PIPE_WRITE.load(Ordering::SeqCst);
    if fd >= 0 {
        let b = sig as u8;
        // SAFETY: write(2) is async-signal-safe; one byte from a valid buffer.
        unsafe {
            libc::write(fd, &b as *const u8 as *const libc::c_void, 1);
        }
    }
}

/// Install the handlers for SIGINT, SIGTERM and SIGHUP (each only where it is not ignored:
/// `nohup` and background jobs keep their behaviour). Idempotent; the binary calls it first.
pub fn install_signal_cleanup() {
    INSTALL.call_once(|| {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 fills two descriptors.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return;
        }
        let (read_fd, write_fd) = (fds[0], fds[1]);
        PIPE_WRITE.store(write_fd, Ordering::SeqCst);
        let started = std::thread::Builder::new()
            .name("repltool-signals".into())
            .spawn(move || {
                let mut b = [0u8; 1];
                loop {
                    // SAFETY: read into a valid one-byte buffer from our pipe.
                    let n = unsafe { libc::read(read_fd, b.as_mut_ptr() as *mut libc::c_void, 1) };
                    if n == 1 {
                        break;
                    }
                    if n < 0
                        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                    {
                        continue;
                    }
                    return;
                }
                let sig = libc::c_int::from(b[0]);
                remove_all(CLEANUP_LIMIT);
                // Die of the signal, as the process would have without the handler.
                // SAFETY: restoring the default action and raising it.
                unsafe {
                    libc::signal(sig, libc::SIG_DFL);
                    libc::raise(sig);
                }
                std::process::exit(128 + sig);
            });
        if started.is_err() {
            return;
        }
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: sigaction with a zeroed struct, our handler and an empty mask.
            unsafe {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut old) != 0
                    || old.sa_sigaction == libc::SIG_IGN
                {
                    continue;
                }
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
                act.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut act.sa_mask);
                libc::sigaction(sig, &act, std::ptr::null_mut());
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::local::LocalSession;

    #[test]
    fn remove_all_removes_what_is_registered_and_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("client.cnf"), "x").unwrap();
        std::fs::create_dir(&b).unwrap();
        register("h1", &a, Box::new(LocalSession::new("h1", "127.0.0.1")));
        register("h2", &b, Box::new(LocalSession::new("h2", "127.0.0.1")));
        forget("h1", &a);
        // Only this test's directories: other tests register theirs at the same time.
        remove_where(Duration::from_secs(10), |d| d.starts_with(dir.path()));
        assert!(a.exists(), "unregistered: kept");
        assert!(!b.exists(), "registered: removed");
        assert!(!registered().iter().any(|(_, d)| d == &b));
    }
}
