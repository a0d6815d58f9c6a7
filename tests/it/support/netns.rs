//! Realistic test hosts: each host `hK` is a network namespace `rt-<pid>-hK` at 10.231.77.1K on a
//! private bridge (this process, in the root namespace, is 10.231.77.1), running its own sshd on
//! port 22 and its own MariaDB installed the Debian way.
//!
//! Every host sees the machine's /etc/mysql tree copied to /etc/netns/<ns>/mysql (which
//! `ip netns exec` bind-mounts over /etc/mysql: Debian's my.cnf with its `!includedir` lines,
//! 50-server.cnf with `bind-address = 127.0.0.1`, debian.cnf), and, in a mount and PID namespace
//! of its own, its own /var/lib/mysql, /run/mysqld, /var/log and /tmp (from a directory under
//! /var/tmp/repltool-netns-<pid>-*). sshd is the host's PID 1, so every SSH
//! session repltool opens lands on that host's files and processes, and the Debian init script
//! (`service mariadb start|restart`, whose `killall` fallback would otherwise reach every
//! mariadbd on the machine) only ever sees that host's server. The topology file gives
//! addresses, SSH settings and passwords only: config layout and restart command are left to
//! repltool's detection.
//!
//! Hosts of one test run at a time on the whole machine (they share 10.231.77.0/24): a lock (an
//! abstract Unix socket, gone with the process) serializes them. Drop kills every process of
//! every host by pid and checks they are gone, then deletes namespaces, veths, the bridge and
//! the directories; leftovers of a killed test process are removed by the next start. Anything
//! that cannot be set up (no CAP_SYS_ADMIN, no `ip`) panics with the reason: a live test never
//! skips.
//!
//! A host may run another server than the machine's MariaDB 10.11 ([`Flavor`]): MySQL 9.7 from
//! Debian sid or MariaDB 11.8 from Debian trixie, each from a root filesystem that
//! tests/roots.sh builds once and caches (neither installs on Debian 12). Such a host's mount
//! namespace stacks an overlay on the cached root (so the cache is never written), bind-mounts
//! the host's own datadir, run, log and tmp directories and a copy of the root's /etc/mysql into
//! it, and `chroot`s into it to exec the root's sshd as PID 1: an SSH session lands in a
//! sid/trixie userland where that server, its client tools and its `service` script are the
//! ones on PATH. The roots are held with a shared lock while hosts run from them, so
//! tests/roots.sh never replaces one under a running host.
#![allow(dead_code)]

use super::sshd;

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub use sshd::keygen;

/// The hosts' network; the root namespace end of the bridge is `.1`, host K is `.1K`.
pub const NET: &str = "10.231.77";
pub const ROOT_ADDR: &str = "10.231.77.1";
const PREFIX: &str = "10.231.77.0/24";
/// The PATH an SSH session of root gets on Debian.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const LOCK_NAME: &[u8] = b"repltool-netns-test-hosts";
/// Where the hosts' files live: not /tmp, which every host gets a private one of (servers in
/// different PID namespaces may have the same pid, and MariaDB names temp files by pid).
const BASE: &str = "/var/tmp";

/// What a host runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Flavor {
    /// The machine's MariaDB 10.11 (Debian 12's packages), with the machine's /etc/mysql.
    System,
    /// Oracle MySQL 9.7 (Debian sid's mysql-server), from the root `mysql-9.7`.
    MySQL97,
    /// MariaDB 11.8 (Debian trixie's mariadb-server), from the root `mariadb-11.8`.
    MariaDB118,
}

impl Flavor {
    const ALL: [Flavor; 3] = [Flavor::System, Flavor::MySQL97, Flavor::MariaDB118];

    fn index(self) -> usize {
        match self {
            Flavor::System => 0,
            Flavor::MySQL97 => 1,
            Flavor::MariaDB118 => 2,
        }
    }

    /// The tests/roots.sh root it runs from; None for the machine's own server.
    pub fn root_name(self) -> Option<&'static str> {
        match self {
            Flavor::System => None,
            Flavor::MySQL97 => Some("mysql-9.7"),
            Flavor::MariaDB118 => Some("mariadb-11.8"),
        }
    }

    /// The cached root directory (tests/roots.sh builds it).
    pub fn root(self) -> Option<PathBuf> {
        self.root_name().map(|n| roots_dir().join(n))
    }

    /// The init script: `service NAME start|stop|restart`.
    pub fn service(self) -> &'static str {
        match self {
            Flavor::MySQL97 => "mysql",
            Flavor::System | Flavor::MariaDB118 => "mariadb",
        }
    }

    /// The command-line client.
    pub fn client(self) -> &'static str {
        match self {
            Flavor::MySQL97 => "mysql",
            Flavor::System | Flavor::MariaDB118 => "mariadb",
        }
    }

    /// The server's process name.
    pub fn server_process(self) -> &'static str {
        match self {
            Flavor::MySQL97 => "mysqld",
            Flavor::System | Flavor::MariaDB118 => "mariadbd",
        }
    }

    /// The last `!includedir` of the package's my.cnf, relative to /etc/mysql: where repltool
    /// puts its fragment.
    pub fn conf_dir(self) -> &'static str {
        match self {
            Flavor::MySQL97 => "mysql.conf.d",
            Flavor::System | Flavor::MariaDB118 => "mariadb.conf.d",
        }
    }

    /// What `SELECT @@version` starts with.
    pub fn version_prefix(self) -> &'static str {
        match self {
            Flavor::System => "10.11.",
            Flavor::MySQL97 => "9.7.",
            Flavor::MariaDB118 => "11.8.",
        }
    }
}

/// Where tests/roots.sh keeps the roots: `$REPLTOOL_ROOTS_DIR`, else
/// /var/cache/repltool-tests/roots.
pub fn roots_dir() -> PathBuf {
    std::env::var_os("REPLTOOL_ROOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/repltool-tests/roots"))
}

/// One test host.
pub struct NsHost {
    /// `h1`, `h2`, ...
    pub name: String,
    pub flavor: Flavor,
    /// The network namespace, `rt-<pid>-hK`.
    pub ns: String,
    pub addr: String,
    /// The root namespace end of the host's veth (the host's end is its `eth0`).
    pub veth: String,
    /// The host's own files: lib, run, log, tmp (mounted at /var/lib/mysql, /run/mysqld,
    /// /var/log, /tmp), its sshd config, host key and log (host.log).
    pub dir: PathBuf,
    /// /etc/netns/<ns>: the host's /etc overrides (its /etc/mysql), System hosts only.
    etc: Option<PathBuf>,
    /// The host's /etc/mysql as seen from outside.
    mysql_etc: Option<PathBuf>,
    ns_added: bool,
    /// `ip netns exec NS unshare --pid --fork ...`; its only child is the host's PID 1 (sshd).
    unshare: Option<Child>,
    init_pid: Option<i32>,
    /// The host's PID namespace (`pid:[N]`), to tell its processes from reused pids.
    pid_ns: Option<PathBuf>,
    /// sshd only: no database server, not in the topology file (etcd members, watchers).
    pub bare: bool,
    /// A proxy host (`pK`): no database server; its own /run, /etc/haproxy, /etc/nginx and
    /// /etc/keepalived (see `start_with_proxies`).
    pub proxy: bool,
}

/// N hosts and the topology file that describes them.
pub struct NetnsHosts {
    pub hosts: Vec<NsHost>,
    /// Proxy hosts p1..pM at 10.231.77.2M (`start_with_proxies`), in the topology file's
    /// `proxies:` only when a test writes them there.
    pub proxies: Vec<NsHost>,
    /// DIR/topology.yaml: h1 the master, the others its slaves.
    pub file: PathBuf,
    pub dir: PathBuf,
    pub identity: PathBuf,
    pub known_hosts: PathBuf,
    /// Phases of the setup and how long each took.
    pub timings: Vec<(String, Duration)>,
    admin_password: String,
    bridge: Option<String>,
    made_etc_netns: bool,
    tmp: Option<tempfile::TempDir>,
    _lock: UnixListener,
    /// Shared locks on the roots the hosts run from (tests/roots.sh rebuilds only under an
    /// exclusive one). Released after the hosts are gone: fields drop after `Drop::drop`.
    _root_locks: Vec<fs::File>,
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Stdout and stderr of an Output, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// Run `cmd` with `input` on its stdin, killed (its whole process group) after `limit`. Output
/// goes to unlinked temp files, not pipes: daemons a command starts in the background keep
/// their inherited descriptors, and we must not wait for them to close.
pub fn run_bounded(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    try_bounded(cmd, input, limit).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_bounded`] that says what went wrong instead of panicking.
pub fn try_bounded(
    cmd: &mut Command,
    input: Option<&[u8]>,
    limit: Duration,
) -> Result<Output, String> {
    let out = tempfile::tempfile().map_err(|e| format!("temp file: {e}"))?;
    let err = tempfile::tempfile().map_err(|e| format!("temp file: {e}"))?;
    let dup = |f: &fs::File| f.try_clone().map_err(|e| format!("dup: {e}"));
    cmd.stdout(Stdio::from(dup(&out)?))
        .stderr(Stdio::from(dup(&err)?))
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        // Small inputs (SQL): they fit in the pipe even if the command never reads them.
        let _ = stdin.write_all(data);
    }
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                // SAFETY: kill(2) on the process group this command leads.
                unsafe {
                    libc::kill(-(child.id() as i32), libc::SIGKILL);
                }
                let _ = child.wait();
                return Err(format!(
                    "{cmd:?} did not finish within {limit:?}; output so far:\n{}{}",
                    read_all(out),
                    read_all(err)
                ));
            }
        }
    };
    Ok(Output {
        status,
        stdout: read_all(out).into_bytes(),
        stderr: read_all(err).into_bytes(),
    })
}

fn read_all(mut f: fs::File) -> String {
    use std::io::Seek;
    let mut s = Vec::new();
    let _ = f.rewind();
    let _ = f.read_to_end(&mut s);
    text(&s)
}

/// Run a setup command that must succeed.
fn must(args: &[&str]) -> String {
    let (prog, rest) = args.split_first().expect("a command");
    let out = run_bounded(
        Command::new(prog).args(rest).env("PATH", PATH),
        None,
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "`{}` failed: {}{}",
        args.join(" "),
        text(&out.stderr),
        text(&out.stdout)
    );
    text(&out.stdout)
}

/// A command's stdout, None when it fails (for Drop, which must not panic while unwinding).
fn try_out(args: &[&str]) -> Option<String> {
    let (prog, rest) = args.split_first()?;
    let out = try_bounded(
        Command::new(prog).args(rest).env("PATH", PATH),
        None,
        Duration::from_secs(30),
    )
    .ok()?;
    out.status.success().then(|| text(&out.stdout))
}

fn quiet(args: &[&str]) -> bool {
    try_out(args).is_some()
}

fn alive(pid: i32) -> bool {
    // A zombie is dead: it only waits for its parent to reap it.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Every process in PID namespace `ns` (`pid:[N]`), pids as this process sees them.
fn pid_ns_members(ns: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if in_pid_ns(pid, ns) {
                out.push(pid);
            }
        }
    }
    out
}

/// Processes whose mount table has a mount from a path containing `needle`.
fn mount_holders(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .is_ok_and(|m| m.contains(needle))
            {
                out.push(pid);
            }
        }
    }
    out
}

fn in_pid_ns(pid: i32, ns: &Path) -> bool {
    fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l == ns)
}

/// Wait until none of `pids` runs (in `ns`, when given: a pid reused elsewhere is not ours).
fn wait_dead(pids: &[i32], ns: Option<&Path>, within: Duration) -> Vec<i32> {
    let end = Instant::now() + within;
    loop {
        let left: Vec<i32> = pids
            .iter()
            .copied()
            .filter(|p| alive(*p) && ns.is_none_or(|ns| in_pid_ns(*p, ns)))
            .collect();
        if left.is_empty() || Instant::now() > end {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Hosts of one test at a time on the machine: they all use 10.231.77.0/24. An abstract socket
/// is released by the kernel when its process dies, and leaves no file behind.
fn lock() -> UnixListener {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(LOCK_NAME).expect("lock name");
    let end = Instant::now() + Duration::from_secs(600);
    loop {
        match UnixListener::bind_addr(&addr) {
            Ok(l) => return l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("cannot take the netns test lock within 600s: {e}"),
        }
    }
}

/// `rt-<pid>-...`, `rtb<pid>`, `rt<pid>h<k>`, `repltool-netns-<pid>-...`: the owning pid.
fn owner(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// A veth from the bridge `br` into namespace `ns`, where it is `eth0` with `addr`/24.
fn plug(veth: &str, peer: &str, ns: &str, addr: &str, br: &str) {
    must(&[
        "ip", "link", "add", veth, "type", "veth", "peer", "name", peer,
    ]);
    must(&["ip", "link", "set", peer, "netns", ns]);
    must(&["ip", "link", "set", veth, "master", br, "up"]);
    must(&["ip", "-n", ns, "link", "set", peer, "name", "eth0"]);
    must(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        "eth0",
    ]);
    must(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
    must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    let routes = must(&["ip", "-n", ns, "route", "show", "default"]);
    assert!(
        routes.trim().is_empty(),
        "{ns} has a default route: {routes}"
    );
}

/// Remove what a test process that died without its Drop (SIGKILL, abort) left behind. We hold
/// the lock, so whatever exists belongs to a dead process; one that is alive is a bug we must
/// not paper over (its addresses would clash with ours).
fn clean_stale() {
    let me = std::process::id();
    let stale = |pid: u32, what: &str| {
        if pid == me || !Path::new(&format!("/proc/{pid}")).exists() {
            true
        } else {
            panic!("{what} belongs to process {pid}, which is still running: another netns test holds 10.231.77.0/24 without the lock");
        }
    };
    // Links first: deleting one is synchronous; a deleted namespace drops its own later.
    for line in must(&["ip", "-o", "link", "show"]).lines() {
        // "7: rtb123: <...>" or "8: rt123h1@if2: <...>"
        let Some(name) = line
            .split(':')
            .nth(1)
            .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
        else {
            continue;
        };
        let pid = owner(&name, "rtb").or_else(|| owner(&name, "rt"));
        if pid.is_some_and(|p| stale(p, &name)) {
            // A veth goes with its pair: the other end may already be gone.
            let _ = quiet(&["ip", "link", "del", &name]);
            let end = Instant::now() + Duration::from_secs(5);
            while quiet(&["ip", "link", "show", &name]) {
                assert!(Instant::now() < end, "stale link {name} cannot be deleted");
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!("netns: removed stale link {name}");
        }
    }
    if let Ok(entries) = fs::read_dir("/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = owner(&name, "rt-") else {
                continue;
            };
            if stale(pid, &name) {
                let pids: Vec<i32> = must(&["ip", "netns", "pids", &name])
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect();
                for p in &pids {
                    // SAFETY: kill(2) on the processes of a namespace this harness made.
                    unsafe {
                        libc::kill(*p, libc::SIGKILL);
                    }
                }
                let left = wait_dead(&pids, None, Duration::from_secs(10));
                assert!(left.is_empty(), "stale {name}: {left:?} survive SIGKILL");
                must(&["ip", "netns", "del", &name]);
                eprintln!("netns: removed stale namespace {name}");
            }
        }
    }
    if let Ok(entries) = fs::read_dir("/etc/netns") {
        let mut removed = false;
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner(&name, "rt-").is_some_and(|p| stale(p, &name)) {
                let _ = fs::remove_dir_all(e.path());
                removed = true;
            }
        }
        if removed {
            // Only if empty, as Drop would have done.
            let _ = fs::remove_dir("/etc/netns");
        }
    }
    if let Ok(entries) = fs::read_dir(BASE) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if owner(&name, "repltool-netns-").is_some_and(|p| p != me && stale(p, &name)) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let used = must(&["ip", "-o", "addr", "show", "to", PREFIX]);
    assert!(
        used.trim().is_empty(),
        "{PREFIX} is already in use in the root namespace: {used}"
    );
}

/// What the hosts need, checked before anything is changed.
fn preflight(flavors: &[Flavor]) {
    for p in ["/usr/sbin/ip", "/usr/bin/unshare", "/usr/bin/nsenter"] {
        assert!(
            Path::new(p).exists(),
            "{p} is missing: the netns test hosts need iproute2, util-linux, openssh-server and mariadb-server"
        );
    }
    if flavors.contains(&Flavor::System) {
        for p in [
            "/usr/sbin/sshd",
            "/usr/sbin/mariadbd",
            "/usr/bin/mariadb-install-db",
            "/etc/init.d/mariadb",
            "/usr/sbin/service",
            "/etc/mysql/my.cnf",
        ] {
            assert!(
                Path::new(p).exists(),
                "{p} is missing: the netns test hosts need iproute2, util-linux, openssh-server and mariadb-server"
            );
        }
    }
    if flavors.iter().any(|f| f.root_name().is_some()) {
        assert!(
            fs::read_to_string("/proc/filesystems").is_ok_and(|f| f.contains("\toverlay\n")),
            "the kernel has no overlay file system: hosts of {flavors:?} run on an overlay of their root"
        );
        for p in ["/usr/sbin/chroot", "/usr/bin/ssh-keygen"] {
            assert!(
                Path::new(p).exists(),
                "{p} is missing: install coreutils and openssh-client"
            );
        }
    }
    // SAFETY: geteuid(2) has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the netns test hosts need root (network namespaces, mounts)"
    );
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    for (bit, name) in [(21, "CAP_SYS_ADMIN"), (12, "CAP_NET_ADMIN")] {
        assert!(
            cap_eff & (1 << bit) != 0,
            "the netns test hosts need {name} (network namespaces, bind mounts); this process has CapEff {cap_eff:x}"
        );
    }
    fs::create_dir_all("/run/sshd")
        .unwrap_or_else(|e| panic!("sshd needs /run/sshd and it cannot be created: {e}"));
}

/// A datadir made the way the flavor's package makes one (`mariadb-install-db` with the
/// Debian config, or `mysqld --initialize-insecure` as sid's mysql-server postinst runs it), once
/// per test process and flavor (the hosts copy it), removed when the process exits.
fn template(flavor: Flavor) -> PathBuf {
    static T: [OnceLock<Result<PathBuf, String>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    T[flavor.index()]
        .get_or_init(|| match flavor.root() {
            None => build_template(),
            Some(root) => build_root_template(flavor, &root),
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn template_root() -> PathBuf {
    PathBuf::from(format!(
        "{BASE}/repltool-netns-{}-template",
        std::process::id()
    ))
}

extern "C" fn remove_template() {
    let _ = fs::remove_dir_all(template_root());
}

/// template_root()/NAME, made fresh; template_root() itself is made (and its removal at exit
/// registered) once.
fn template_dir(name: &str) -> Result<PathBuf, String> {
    static BASE_DIR: OnceLock<Result<(), String>> = OnceLock::new();
    let root = template_root();
    BASE_DIR
        .get_or_init(|| {
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(&root).map_err(|e| format!("{}: {e}", root.display()))?;
            // SAFETY: registers a plain function that only removes our own directory at exit.
            unsafe {
                libc::atexit(remove_template);
            }
            fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
        })
        .clone()?;
    let dir = root.join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn build_template() -> Result<PathBuf, String> {
    let root = template_dir("system")?;
    let data = root.join("data");
    // Its own temp dir: the bootstrap server names temp files by pid, and pids repeat across
    // PID namespaces.
    let tmp = root.join("tmp");
    fs::create_dir(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o1777)).map_err(|e| e.to_string())?;
    let out = run_bounded(
        Command::new("/usr/bin/mariadb-install-db")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=socket")
            .arg("--skip-test-db")
            .env_clear()
            .env("PATH", PATH)
            .env("TMPDIR", &tmp),
        None,
        Duration::from_secs(120),
    );
    if !out.status.success() {
        return Err(format!("mariadb-install-db failed:\n{}", show(&out)));
    }
    Ok(data)
}

/// Numeric ids inside a root (its /etc/passwd and /etc/group, not the machine's).
#[derive(Clone, Copy, Debug)]
struct RootIds {
    mysql_uid: u32,
    mysql_gid: u32,
    adm_gid: u32,
}

fn root_ids(root: &Path) -> Result<RootIds, String> {
    let field = |file: &str, name: &str, i: usize| -> Result<u32, String> {
        let path = root.join(file);
        let text = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        text.lines()
            .find(|l| l.split(':').next() == Some(name))
            .and_then(|l| l.split(':').nth(i))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{}: no `{name}` entry", path.display()))
    };
    Ok(RootIds {
        mysql_uid: field("etc/passwd", "mysql", 2)?,
        mysql_gid: field("etc/passwd", "mysql", 3)?,
        adm_gid: field("etc/group", "adm", 2)?,
    })
}

fn chown(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<(), String> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .and_then(|_| fs::set_permissions(path, fs::Permissions::from_mode(mode)))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A shell script, for a new mount namespace (and PID namespace, for its /proc), that stacks
/// an overlay on `root` at DIR/rootfs (writes go to DIR/upper, never to the cached root),
/// bind-mounts each (outside, inside) pair into it, gives it /proc, /dev and /sys, and execs
/// `cmd` chrooted there.
fn root_script(root: &Path, dir: &Path, binds: &[(PathBuf, String)], cmd: &str) -> String {
    let d = dir.display();
    let mut s = format!(
        "set -e\n\
         M={d}/rootfs\n\
         mount -t overlay overlay -o lowerdir={root},upperdir={d}/upper,workdir={d}/work \"$M\"\n",
        root = root.display()
    );
    for (outside, inside) in binds {
        s.push_str(&format!(
            "mkdir -p \"$M{inside}\"\nmount --bind {} \"$M{inside}\"\n",
            outside.display()
        ));
    }
    s.push_str(
        "mount -t proc proc \"$M/proc\"\n\
         mount --rbind /dev \"$M/dev\"\n\
         mount --rbind /sys \"$M/sys\"\n",
    );
    s.push_str(&format!("exec /usr/sbin/chroot \"$M\" {cmd}\n"));
    s
}

/// The overlay's directories under `dir`.
fn overlay_dirs(dir: &Path) -> Result<(), String> {
    for sub in ["upper", "work", "rootfs"] {
        fs::create_dir(dir.join(sub)).map_err(|e| format!("{}/{sub}: {e}", dir.display()))?;
    }
    Ok(())
}

/// The datadir of a root flavor, made inside the root (its own programs and config) in
/// namespaces of its own: no network, and nothing it starts outlives it.
fn build_root_template(flavor: Flavor, root: &Path) -> Result<PathBuf, String> {
    let name = flavor.root_name().expect("a root flavor");
    let dir = template_dir(name)?;
    let ids = root_ids(root)?;
    overlay_dirs(&dir)?;
    let data = dir.join("data");
    let tmp = dir.join("tmp");
    let log = dir.join("log");
    for d in [&data, &tmp, &log, &log.join("mysql")] {
        fs::create_dir(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    chown(&data, ids.mysql_uid, ids.mysql_gid, 0o700)?;
    chown(&tmp, 0, 0, 0o1777)?;
    chown(&log.join("mysql"), ids.mysql_uid, ids.adm_gid, 0o2750)?;
    let init = match flavor {
        // What sid's mysql-server postinst does on a new install: root and debian-sys-maint
        // log in through auth_socket (the OS user root), like MariaDB's unix_socket root.
        // auto.cnf holds the server_uuid, which every copy must make its own.
        Flavor::MySQL97 => {
            let sql = "USE mysql;\n\
                       INSTALL PLUGIN auth_socket SONAME 'auth_socket.so';\n\
                       ALTER USER 'root'@'localhost' IDENTIFIED WITH 'auth_socket';\n\
                       CREATE USER 'debian-sys-maint'@'localhost' IDENTIFIED WITH 'auth_socket' AS 'root';\n\
                       GRANT ALL ON *.* TO 'debian-sys-maint'@'localhost' WITH GRANT OPTION;\n\
                       SHUTDOWN;\n";
            fs::write(tmp.join("init.sql"), sql).map_err(|e| e.to_string())?;
            chown(&tmp.join("init.sql"), 0, 0, 0o644)?;
            "mysqld --initialize-insecure --user=mysql --init-file=/tmp/init.sql\n\
             rm -f /var/lib/mysql/auto.cnf\n"
        }
        Flavor::MariaDB118 => {
            "mariadb-install-db --user=mysql --datadir=/var/lib/mysql \
             --auth-root-authentication-method=socket --skip-test-db\n"
        }
        Flavor::System => unreachable!("the system flavor has no root"),
    };
    fs::write(tmp.join("init.sh"), init).map_err(|e| e.to_string())?;
    let script = root_script(
        root,
        &dir,
        &[
            (data.clone(), "/var/lib/mysql".into()),
            (tmp.clone(), "/tmp".into()),
            (log.clone(), "/var/log".into()),
        ],
        "/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
         HOME=/root LANG=C TMPDIR=/tmp /bin/sh -e /tmp/init.sh",
    );
    let out = run_bounded(
        Command::new("/usr/bin/unshare")
            .args(["--net", "--mount", "--pid", "--fork", "--kill-child"])
            .args(["/bin/sh", "-c", &script])
            .current_dir("/")
            .env_clear()
            .env("PATH", PATH)
            .env("LANG", "C"),
        None,
        Duration::from_secs(180),
    );
    if !out.status.success() {
        return Err(format!(
            "{name}: initializing the datadir template failed:\n{}\n--- {}/mysql/error.log\n{}",
            show(&out),
            log.display(),
            fs::read_to_string(log.join("mysql/error.log")).unwrap_or_default()
        ));
    }
    Ok(data)
}

/// Build the roots `flavors` run from (tests/roots.sh: at once, and only those missing), then
/// hold each with a shared lock (the one roots.sh rebuilds under, exclusively).
fn ensure_roots(flavors: &[Flavor]) -> Vec<fs::File> {
    use std::os::fd::AsRawFd;
    let names: Vec<&str> = flavors.iter().filter_map(|f| f.root_name()).collect();
    if names.is_empty() {
        return Vec::new();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/roots.sh");
    let out = run_bounded(
        Command::new("/bin/bash")
            .arg(&script)
            .args(&names)
            .current_dir("/")
            .env("PATH", PATH),
        None,
        Duration::from_secs(1200),
    );
    assert!(
        out.status.success(),
        "the test hosts' roots {names:?} could not be built by {}:\n{}",
        script.display(),
        show(&out)
    );
    eprint!("netns: {}", text(&out.stdout));
    let dir = roots_dir();
    names
        .iter()
        .map(|n| {
            let path = dir.join(format!("{n}.lock"));
            let f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let end = Instant::now() + Duration::from_secs(600);
            // SAFETY: flock(2) on a descriptor we own.
            while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) } != 0 {
                assert!(
                    Instant::now() < end,
                    "{}: still locked after 600s (tests/roots.sh rebuilding {n}?)",
                    path.display()
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            let stamp = dir.join(n).join(".repltool-root");
            assert!(
                stamp.exists(),
                "{} is missing: the root {n} is incomplete (run tests/roots.sh {n})",
                stamp.display()
            );
            f
        })
        .collect()
}

impl NsHost {
    /// The host's PID 1 as this process sees it.
    pub fn init_pid(&self) -> i32 {
        self.init_pid
            .unwrap_or_else(|| panic!("{} has no running init", self.name))
    }

    /// Every process of the host (its PID namespace), with its name.
    pub fn processes(&self) -> Vec<(i32, String)> {
        match &self.pid_ns {
            Some(ns) => pid_ns_members(ns)
                .into_iter()
                .map(|p| (p, comm(p)))
                .collect(),
            None => Vec::new(),
        }
    }

    pub fn pids_named(&self, name: &str) -> Vec<i32> {
        self.processes()
            .into_iter()
            .filter(|(_, c)| c == name)
            .map(|(p, _)| p)
            .collect()
    }

    /// The running server (mariadbd, or mysqld), if any.
    pub fn server_pid(&self) -> Option<i32> {
        self.pids_named(self.flavor.server_process())
            .into_iter()
            .find(|p| alive(*p))
    }

    /// Run `script` with `sh -c` on the host (its network, mounts and processes), as root, as an
    /// SSH session would; `input` on stdin. Bounded by `limit`.
    pub fn sh_with(&self, script: &str, input: Option<&[u8]>, limit: Duration) -> Output {
        let init = self.init_pid().to_string();
        let mut nsenter = Command::new("/usr/bin/nsenter");
        nsenter.args(["--target", &init, "--mount", "--pid", "--net"]);
        if self.flavor.root_name().is_some() {
            // Into the root sshd runs in (its chroot), at its working directory (/).
            nsenter.args(["--root", "--wd"]);
        }
        run_bounded(
            nsenter
                .arg("--")
                .args(["/bin/sh", "-c", script])
                .current_dir("/")
                .env_clear()
                .env("PATH", PATH)
                .env("HOME", "/root")
                .env("LANG", "C"),
            input,
            limit,
        )
    }

    /// `sh_with` that must succeed; its stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.sh_with(script, None, Duration::from_secs(60));
        assert!(
            out.status.success(),
            "{}: `{script}` failed:\n{}",
            self.name,
            show(&out)
        );
        text(&out.stdout)
    }

    /// SQL as the host's root over the local socket (`mariadb` or `mysql`; Debian's
    /// unix_socket / auth_socket login); tab-separated rows, no headers.
    pub fn try_sql(&self, sql: &str) -> Output {
        self.sh_with(
            &format!("{} --batch --skip-column-names", self.flavor.client()),
            Some(sql.as_bytes()),
            Duration::from_secs(30),
        )
    }

    pub fn sql(&self, sql: &str) -> String {
        let out = self.try_sql(sql);
        assert!(out.status.success(), "{}: {sql}: {}", self.name, show(&out));
        text(&out.stdout).trim_end().to_string()
    }

    /// Wait until `sql` returns `want` (bounded).
    pub fn wait_sql(&self, sql: &str, want: &str, within: Duration) {
        let end = Instant::now() + within;
        loop {
            let out = self.try_sql(sql);
            let got = text(&out.stdout).trim_end().to_string();
            if out.status.success() && got == want {
                return;
            }
            assert!(
                Instant::now() < end,
                "{}: `{sql}` is {got:?} ({}), expected {want:?} within {within:?}",
                self.name,
                text(&out.stderr).trim()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server crashes and stays down: SIGKILL to mysqld_safe first (it would restart the
    /// server), then to the server; both must be gone.
    pub fn crash_server(&self) {
        let mut safe = self.pids_named("mysqld_safe");
        safe.extend(self.pids_named("mariadbd-safe"));
        let server = self.pids_named(self.flavor.server_process());
        assert!(
            !server.is_empty(),
            "{}: no {} to kill",
            self.name,
            self.flavor.server_process()
        );
        for p in safe.iter().chain(server.iter()) {
            // SAFETY: kill(2) on pids found in this host's own PID namespace.
            unsafe {
                libc::kill(*p, libc::SIGKILL);
            }
        }
        let all: Vec<i32> = safe.into_iter().chain(server).collect();
        let left = wait_dead(&all, self.pid_ns.as_deref(), Duration::from_secs(10));
        assert!(left.is_empty(), "{}: {left:?} survive SIGKILL", self.name);
    }

    /// Take the host's network interface down (a partition) or up again.
    pub fn set_link(&self, up: bool) {
        must(&[
            "ip",
            "-n",
            &self.ns,
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ]);
    }

    /// A file of the host's /etc/mysql, read from outside.
    pub fn etc_mysql(&self, rel: &str) -> Option<String> {
        fs::read_to_string(self.mysql_etc.as_ref()?.join(rel)).ok()
    }

    fn sshd_log(&self) -> String {
        fs::read_to_string(self.dir.join("host.log")).unwrap_or_default()
    }

    /// Start the host: sshd as PID 1 of a new PID namespace, in a mount namespace where the
    /// host's own datadir and run directory are mounted at Debian's paths (in the machine's
    /// tree, or in an overlay of the flavor's root that sshd is chrooted into).
    fn launch(&mut self) {
        let d = self.dir.display();
        let script = match self.flavor.root() {
            // A proxy: its own /run (pid files, HAProxy's sockets), logs, tmp and nginx's
            // state, so every proxy's `service haproxy|nginx|keepalived` sees only its own.
            None if self.proxy => format!(
                "set -e\n\
                 mount --bind {d}/run /run\n\
                 mount --bind {d}/log /var/log\n\
                 mount --bind {d}/tmp /tmp\n\
                 mount --bind {d}/lib-nginx /var/lib/nginx\n\
                 exec /usr/sbin/sshd -D -e -f {d}/sshd_config\n"
            ),
            None => format!(
                "set -e\n\
                 mount --bind {d}/lib /var/lib/mysql\n\
                 mount --bind {d}/run /run/mysqld\n\
                 mount --bind {d}/log /var/log\n\
                 mount --bind {d}/tmp /tmp\n\
                 exec /usr/sbin/sshd -D -e -f {d}/sshd_config\n"
            ),
            Some(root) => {
                // The whole test directory at its own path, so that sshd_config, the keys and
                // authorized_keys are where they are outside.
                let net = self
                    .dir
                    .parent()
                    .expect("the hosts' directory")
                    .to_path_buf();
                let inside_net = net.display().to_string();
                root_script(
                    &root,
                    &self.dir,
                    &[
                        (self.dir.join("lib"), "/var/lib/mysql".into()),
                        (self.dir.join("run"), "/run/mysqld".into()),
                        (self.dir.join("log"), "/var/log".into()),
                        (self.dir.join("tmp"), "/tmp".into()),
                        (self.dir.join("etc/mysql"), "/etc/mysql".into()),
                        (net, inside_net),
                        // sshd's privilege separation directory.
                        (self.dir.join("sshd-run"), "/run/sshd".into()),
                    ],
                    &format!("/usr/sbin/sshd -D -e -f {d}/sshd_config"),
                )
            }
        };
        let log = fs::File::create(self.dir.join("host.log")).expect("host log");
        let child = Command::new("/usr/sbin/ip")
            .args(["netns", "exec", &self.ns])
            .args(["/usr/bin/unshare", "--pid", "--fork", "--mount-proc"])
            .args(["--kill-child", "/bin/sh", "-c", &script])
            .current_dir("/")
            .env_clear()
            .env("PATH", PATH)
            .env("LANG", "C")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            // Signals for the test (Ctrl-C) must not reach the hosts before Drop runs.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: cannot run ip netns exec: {e}", self.name));
        let upid = child.id() as i32;
        self.unshare = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(c) = self.unshare.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.unshare = None;
                    panic!(
                        "{}: the host exited at start ({st}):\n{}",
                        self.name,
                        self.sshd_log()
                    );
                }
            }
            let init = sshd::descendants(upid).into_iter().next();
            if let Some(p) = init.filter(|p| comm(*p) == "sshd") {
                self.init_pid = Some(p);
                self.pid_ns = Some(
                    fs::read_link(format!("/proc/{p}/ns/pid"))
                        .unwrap_or_else(|e| panic!("{}: PID namespace of {p}: {e}", self.name)),
                );
                return;
            }
            assert!(
                Instant::now() < end,
                "{}: sshd did not start within 10s:\n{}",
                self.name,
                self.sshd_log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stop every process of the host by pid and check they are gone; remove its namespace,
    /// veth and /etc/netns entry. Returns what could not be cleaned.
    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        let members: Vec<i32> = self.processes().into_iter().map(|(p, _)| p).collect();
        if let Some(init) = self.init_pid.take() {
            // The kernel kills every process of a PID namespace whose init dies.
            // SAFETY: kill(2) on the init of the namespace this harness created.
            unsafe {
                libc::kill(init, libc::SIGKILL);
            }
        }
        if let Some(mut c) = self.unshare.take() {
            // --kill-child: its death takes the host's init (if it got that far) with it.
            let _ = c.kill();
            let end = Instant::now() + Duration::from_secs(10);
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(c.try_wait(), Ok(None)) {
                problems.push(format!("{}: unshare {} does not exit", self.name, c.id()));
            }
        }
        let left = wait_dead(&members, self.pid_ns.as_deref(), Duration::from_secs(10));
        if !left.is_empty() {
            problems.push(format!("{}: processes {left:?} still alive", self.name));
        }
        // The pair first, from this side: deleting it is synchronous, while a deleted
        // namespace takes its interfaces down later, in the background.
        if quiet(&["ip", "link", "show", &self.veth]) {
            let _ = quiet(&["ip", "link", "del", &self.veth]);
        }
        let end = Instant::now() + Duration::from_secs(5);
        while quiet(&["ip", "link", "show", &self.veth]) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        if quiet(&["ip", "link", "show", &self.veth]) {
            problems.push(format!("{}: link {} remains", self.name, self.veth));
        }
        if self.ns_added {
            // The namespace file may be busy for a moment after its last process died.
            let end = Instant::now() + Duration::from_secs(5);
            while !quiet(&["ip", "netns", "del", &self.ns]) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            if Path::new("/run/netns").join(&self.ns).exists() {
                problems.push(format!("{}: namespace {} remains", self.name, self.ns));
            } else {
                self.ns_added = false;
            }
        }
        if let Some(etc) = self.etc.take() {
            if let Err(e) = fs::remove_dir_all(&etc) {
                problems.push(format!("{}: {}: {e}", self.name, etc.display()));
            }
        }
        problems
    }
}

impl NetnsHosts {
    /// `n` hosts h1..hN running the machine's MariaDB, h1 the master of the others in the
    /// topology file.
    pub fn start(n: usize) -> NetnsHosts {
        NetnsHosts::start_with(&vec![Flavor::System; n])
    }

    /// One host per entry, h1..hN in that order, each running its flavor's server; h1 the
    /// master of the others in the topology file. The roots the flavors need are built first
    /// if missing (tests/roots.sh, a minute or two).
    pub fn start_with(flavors: &[Flavor]) -> NetnsHosts {
        NetnsHosts::start_full(flavors, 0, 0)
    }

    /// [`NetnsHosts::start_with`] plus `bare` hosts after them (h<n+1>...): sshd only, no
    /// database server and not in the topology file, for etcd members and watchers.
    pub fn start_with_bare(db: &[Flavor], bare: usize) -> NetnsHosts {
        NetnsHosts::start_full(db, bare, 0)
    }

    /// [`NetnsHosts::start_with`] plus `proxies` proxy hosts p1..pM at 10.231.77.2M: no
    /// database server, sshd as PID 1, the machine's HAProxy, nginx and keepalived with their
    /// own copies of /etc/haproxy, /etc/nginx and /etc/keepalived (through /etc/netns) and their
    /// own /run, none of them started.
    pub fn start_with_proxies(flavors: &[Flavor], proxies: usize) -> NetnsHosts {
        NetnsHosts::start_full(flavors, 0, proxies)
    }

    /// Database hosts, then `bare` hosts, then `proxies` proxy hosts.
    pub fn start_full(db: &[Flavor], bare: usize, proxies: usize) -> NetnsHosts {
        assert!(proxies <= 9, "at most 9 proxies");
        let mut all = db.to_vec();
        all.extend(std::iter::repeat_n(Flavor::System, bare));
        let flavors = all.as_slice();
        let n = flavors.len();
        assert!((1..=9).contains(&n), "1 to 9 hosts");
        let t0 = Instant::now();
        preflight(flavors);
        let kinds: Vec<Flavor> = Flavor::ALL
            .into_iter()
            .filter(|f| flavors.contains(f))
            .collect();
        let t = Instant::now();
        let root_locks = ensure_roots(&kinds);
        let roots_took = t.elapsed();
        let t = Instant::now();
        let lock = lock();
        let waited = t.elapsed();
        clean_stale();
        // The templates are built while the network is set up.
        let tpls: Vec<_> = kinds
            .iter()
            .map(|&f| {
                std::thread::spawn(move || {
                    let t = Instant::now();
                    let r = std::panic::catch_unwind(|| template(f));
                    (f, r, t.elapsed())
                })
            })
            .collect();
        let pid = std::process::id();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("repltool-netns-{pid}-"))
            .tempdir_in(BASE)
            .expect("temp dir");
        // The mysql user must reach the datadirs below it.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let dir = tmp.path().to_path_buf();
        let mut net = NetnsHosts {
            hosts: Vec::new(),
            file: dir.join("topology.yaml"),
            identity: dir.join("client_ed25519"),
            known_hosts: dir.join("known_hosts"),
            dir,
            timings: vec![("lock".into(), waited)],
            admin_password: repltool::lab::template::random_password().expect("password"),
            bridge: None,
            made_etc_netns: false,
            tmp: Some(tmp),
            proxies: Vec::new(),
            _lock: lock,
            _root_locks: root_locks,
        };
        if !net._root_locks.is_empty() {
            net.timings.insert(0, ("roots".into(), roots_took));
        }
        let t = Instant::now();
        net.network(flavors, pid, bare);
        net.proxy_network(proxies, pid);
        net.timings.push(("network".into(), t.elapsed()));
        let mut templates = Vec::new();
        for j in tpls {
            let (f, r, took) = j.join().expect("template thread");
            let tpl = r.unwrap_or_else(|e| std::panic::resume_unwind(e));
            let key = match f.root_name() {
                None => "template".to_string(),
                Some(name) => format!("template {name}"),
            };
            net.timings.push((key, took));
            templates.push((f, tpl));
        }
        let t = Instant::now();
        net.files(&templates);
        net.proxy_files();
        net.timings.push(("files".into(), t.elapsed()));
        let t = Instant::now();
        for h in net.hosts.iter_mut().chain(net.proxies.iter_mut()) {
            h.launch();
        }
        for h in net.hosts.iter().chain(net.proxies.iter()) {
            wait_banner(h);
        }
        net.timings.push(("sshd".into(), t.elapsed()));
        let t = Instant::now();
        net.start_servers();
        net.timings.push(("servers".into(), t.elapsed()));
        net.write_topology();
        net.timings.push(("total".into(), t0.elapsed()));
        eprintln!("netns: {n} hosts up: {}", net.timings_text());
        net
    }

    pub fn timings_text(&self) -> String {
        self.timings
            .iter()
            .map(|(k, d)| format!("{k} {:.2}s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Host K (1-based).
    pub fn h(&self, k: usize) -> &NsHost {
        &self.hosts[k - 1]
    }

    /// Bridge with the root namespace's address; per host a namespace and a veth to the bridge.
    /// No default route anywhere: the hosts reach each other and this process only.
    fn network(&mut self, flavors: &[Flavor], pid: u32, bare: usize) {
        let n = flavors.len();
        let br = format!("rtb{pid}");
        must(&["ip", "link", "add", &br, "type", "bridge"]);
        self.bridge = Some(br.clone());
        must(&["ip", "addr", "add", &format!("{ROOT_ADDR}/24"), "dev", &br]);
        must(&["ip", "link", "set", &br, "up"]);
        if !Path::new("/etc/netns").exists() {
            fs::create_dir("/etc/netns").expect("/etc/netns");
            self.made_etc_netns = true;
        }
        for k in 1..=n {
            let name = format!("h{k}");
            let hdir = self.dir.join(&name);
            fs::create_dir(&hdir).expect("host dir");
            let mut h = NsHost {
                flavor: flavors[k - 1],
                mysql_etc: None,
                ns: format!("rt-{pid}-{name}"),
                addr: format!("{NET}.{}", 10 + k),
                veth: format!("rt{pid}h{k}"),
                name,
                dir: hdir,
                etc: None,
                ns_added: false,
                unshare: None,
                init_pid: None,
                pid_ns: None,
                bare: k > n - bare,
                proxy: false,
            };
            must(&["ip", "netns", "add", &h.ns]);
            h.ns_added = true;
            let peer = format!("rp{pid}h{k}");
            let (veth, ns, addr) = (h.veth.clone(), h.ns.clone(), h.addr.clone());
            self.hosts.push(h);
            plug(&veth, &peer, &ns, &addr, &br);
        }
    }

    /// The proxy hosts' namespaces and veths (p1..pM at .21...).
    fn proxy_network(&mut self, m: usize, pid: u32) {
        let br = self.bridge.clone().expect("the bridge");
        for k in 1..=m {
            let name = format!("p{k}");
            let dir = self.dir.join(&name);
            fs::create_dir(&dir).expect("proxy dir");
            let h = NsHost {
                flavor: Flavor::System,
                mysql_etc: None,
                ns: format!("rt-{pid}-{name}"),
                addr: format!("{NET}.{}", 20 + k),
                veth: format!("rt{pid}p{k}"),
                name,
                dir,
                etc: None,
                ns_added: true,
                unshare: None,
                init_pid: None,
                pid_ns: None,
                bare: false,
                proxy: true,
            };
            must(&["ip", "netns", "add", &h.ns]);
            let (veth, ns, addr) = (h.veth.clone(), h.ns.clone(), h.addr.clone());
            self.proxies.push(h);
            plug(&veth, &format!("rp{pid}p{k}"), &ns, &addr, &br);
        }
    }

    /// Each proxy's /etc overrides (copies of the machine's /etc/haproxy, /etc/nginx,
    /// /etc/keepalived), its run, log, tmp and nginx state directories, sshd config and host
    /// key (added to known_hosts).
    fn proxy_files(&mut self) {
        let authorized = self.dir.join("authorized_keys");
        let mut known = fs::read_to_string(&self.known_hosts).unwrap_or_default();
        for h in &mut self.proxies {
            let etc = PathBuf::from("/etc/netns").join(&h.ns);
            fs::create_dir(&etc).expect("/etc/netns/<ns>");
            h.etc = Some(etc.clone());
            for sub in ["haproxy", "nginx", "keepalived"] {
                let from = Path::new("/etc").join(sub);
                assert!(
                    from.exists(),
                    "{} is missing: the proxy hosts need haproxy, nginx, libnginx-mod-stream and keepalived (tests/install-deps.sh)",
                    from.display()
                );
                must(&["cp", "-a", &from.to_string_lossy(), &etc.to_string_lossy()]);
            }
            let d = &h.dir;
            for sub in ["run", "run/sshd", "log", "log/nginx", "tmp"] {
                fs::create_dir(d.join(sub)).expect("proxy dir");
            }
            fs::set_permissions(d.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
            must(&[
                "cp",
                "-a",
                "/var/lib/nginx",
                &d.join("lib-nginx").to_string_lossy(),
            ]);
            let key = d.join("ssh_host_ed25519_key");
            keygen(&key);
            let pubkey = fs::read_to_string(key.with_extension("pub"))
                .expect("host key")
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            known.push_str(&format!("{} {pubkey}\n", h.addr));
            let config = format!(
                "Port 22\nListenAddress {addr}\nHostKey {key}\nAuthorizedKeysFile {auth}\n\
                 PidFile {dir}/sshd.pid\nPermitRootLogin prohibit-password\nStrictModes no\n\
                 UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\nAllowTcpForwarding yes\nPrintMotd no\n\
                 MaxStartups 50\nLogLevel INFO\nSetEnv SHLVL=1\n",
                addr = h.addr,
                key = key.display(),
                auth = authorized.display(),
                dir = d.display()
            );
            fs::write(d.join("sshd_config"), config).expect("sshd_config");
        }
        fs::write(&self.known_hosts, known).expect("known_hosts");
    }

    /// Proxy K (1-based).
    pub fn p(&self, k: usize) -> &NsHost {
        &self.proxies[k - 1]
    }

    /// Keys, sshd configs, each host's /etc/mysql, datadir and run directory.
    fn files(&mut self, templates: &[(Flavor, PathBuf)]) {
        keygen(&self.identity);
        let authorized = self.dir.join("authorized_keys");
        fs::copy(self.identity.with_extension("pub"), &authorized).expect("authorized_keys");
        let mut known = String::new();
        for h in &mut self.hosts {
            let tpl = &templates
                .iter()
                .find(|(f, _)| *f == h.flavor)
                .expect("a template per flavor")
                .1;
            let d = &h.dir;
            // The Debian tree as installed (my.cnf stays a symlink through /etc/alternatives
            // to /etc/mysql/mariadb.cnf or mysql.cnf, which is then the host's own).
            let (etc_source, etc_mysql) = match h.flavor.root() {
                None => {
                    let etc = PathBuf::from("/etc/netns").join(&h.ns);
                    fs::create_dir(&etc).expect("/etc/netns/<ns>");
                    h.etc = Some(etc.clone());
                    (PathBuf::from("/etc/mysql"), etc.join("mysql"))
                }
                Some(root) => {
                    fs::create_dir(d.join("etc")).expect("etc dir");
                    (root.join("etc/mysql"), d.join("etc/mysql"))
                }
            };
            must(&[
                "cp",
                "-a",
                &etc_source.to_string_lossy(),
                &etc_mysql.to_string_lossy(),
            ]);
            h.mysql_etc = Some(etc_mysql);
            if h.bare {
                fs::create_dir(d.join("lib")).expect("lib dir");
            } else {
                must(&[
                    "cp",
                    "-a",
                    "--sparse=always",
                    &tpl.to_string_lossy(),
                    &d.join("lib").to_string_lossy(),
                ]);
            }
            fs::create_dir(d.join("run")).expect("run dir");
            fs::create_dir(d.join("tmp")).expect("tmp dir");
            fs::set_permissions(d.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod");
            // Its own /var/log, with the mysql/ directory the package would have made.
            fs::create_dir_all(d.join("log/mysql")).expect("log dir");
            match h.flavor.root() {
                None => {
                    must(&["chown", "mysql:adm", &d.join("log/mysql").to_string_lossy()]);
                    fs::set_permissions(d.join("log/mysql"), fs::Permissions::from_mode(0o2750))
                        .expect("chmod");
                    must(&["chown", "mysql:root", &d.join("run").to_string_lossy()]);
                    fs::set_permissions(d.join("run"), fs::Permissions::from_mode(0o755))
                        .expect("chmod");
                }
                Some(root) => {
                    // The root's own ids: files are owned by number.
                    let ids = root_ids(&root).unwrap_or_else(|e| panic!("{}: {e}", h.name));
                    chown(&d.join("log/mysql"), ids.mysql_uid, ids.adm_gid, 0o2750)
                        .unwrap_or_else(|e| panic!("{e}"));
                    chown(&d.join("run"), ids.mysql_uid, 0, 0o755)
                        .unwrap_or_else(|e| panic!("{e}"));
                    overlay_dirs(d).unwrap_or_else(|e| panic!("{e}"));
                    fs::create_dir(d.join("sshd-run")).expect("sshd run dir");
                    fs::set_permissions(d.join("sshd-run"), fs::Permissions::from_mode(0o755))
                        .expect("chmod");
                }
            }
            let key = d.join("ssh_host_ed25519_key");
            keygen(&key);
            let pubkey = fs::read_to_string(key.with_extension("pub"))
                .expect("host key")
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            known.push_str(&format!("{} {pubkey}\n", h.addr));
            // SHLVL=1: bash then skips the machine's ~/.bashrc for these sessions.
            let config = format!(
                "Port 22\nListenAddress {addr}\n\
                 HostKey {key}\n\
                 AuthorizedKeysFile {auth}\n\
                 PidFile {dir}/sshd.pid\n\
                 PermitRootLogin prohibit-password\n\
                 StrictModes no\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PubkeyAuthentication yes\n\
                 AllowTcpForwarding yes\n\
                 PrintMotd no\n\
                 MaxStartups 50\n\
                 LogLevel INFO\n\
                 SetEnv SHLVL=1\n",
                addr = h.addr,
                key = key.display(),
                auth = authorized.display(),
                dir = d.display()
            );
            fs::write(d.join("sshd_config"), config).expect("sshd_config");
        }
        fs::write(&self.known_hosts, known).expect("known_hosts");
    }

    /// `service mariadb start` (or `service mysql start`) on every host at once, then the
    /// admin account repltool uses (password on stdin, never on a command line).
    fn start_servers(&self) {
        let pw = &self.admin_password;
        let sql = format!(
            "CREATE USER 'admin'@'127.0.0.1' IDENTIFIED BY '{pw}';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'admin'@'127.0.0.1' WITH GRANT OPTION;\n\
             CREATE USER 'admin'@'localhost' IDENTIFIED BY '{pw}';\n\
             GRANT ALL PRIVILEGES ON *.* TO 'admin'@'localhost' WITH GRANT OPTION;\n"
        );
        std::thread::scope(|s| {
            let hs: Vec<_> = self
                .hosts
                .iter()
                .filter(|h| !h.bare)
                .map(|h| {
                    let sql = sql.clone();
                    s.spawn(move || {
                        let cmd = format!("service {} start", h.flavor.service());
                        let out = h.sh_with(&cmd, None, Duration::from_secs(120));
                        assert!(
                            out.status.success(),
                            "{} ({:?}): {cmd} failed:\n{}\n--- /var/log/mysql/error.log\n{}",
                            h.name,
                            h.flavor,
                            show(&out),
                            fs::read_to_string(h.dir.join("log/mysql/error.log"))
                                .unwrap_or_default()
                        );
                        h.sql(&sql);
                    })
                })
                .collect();
            for j in hs {
                if let Err(e) = j.join() {
                    std::panic::resume_unwind(e);
                }
            }
        });
    }

    /// h1 the master, every other host its slave. Passwords in files next to the topology;
    /// no `config_file`, `restart` or `error_log`: repltool must find them on the hosts.
    fn write_topology(&self) {
        let private = |name: &str, v: &str| {
            repltool::lab::template::write_private(&self.dir.join(name), v.as_bytes())
                .expect("password file")
        };
        private("admin.pw", &self.admin_password);
        private(
            "repl.pw",
            &repltool::lab::template::random_password().expect("password"),
        );
        let mut hosts = String::new();
        for h in self.hosts.iter().filter(|h| !h.bare) {
            hosts.push_str(&format!("  {}:\n    address: {}\n", h.name, h.addr));
            if h.name != "h1" {
                hosts.push_str("    master: h1\n");
            }
        }
        let yaml = format!(
            "name: netns\n\
             defaults:\n\
             \x20 ssh:\n\
             \x20   user: root\n\
             \x20   port: 22\n\
             \x20   identity_file: {id}\n\
             \x20   known_hosts: {kh}\n\
             \x20 mysql:\n\
             \x20   user: admin\n\
             \x20   password_file: admin.pw\n\
             replication:\n\
             \x20 user: repl\n\
             \x20 password_file: repl.pw\n\
             hosts:\n{hosts}",
            id = self.identity.display(),
            kh = self.known_hosts.display()
        );
        fs::write(&self.file, yaml).expect("topology file");
    }

    /// `ssh root@<host K> SCRIPT` with the machine's OpenSSH client, the test key and the
    /// hosts' known_hosts (host key verified, no config file): what an operator's session on
    /// that host sees. Bounded.
    pub fn ssh(&self, k: usize, script: &str) -> Output {
        let h = self.h(k);
        run_bounded(
            Command::new("ssh")
                .args(["-F", "/dev/null", "-o", "BatchMode=yes"])
                .args(["-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=5"])
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
                .arg("-i")
                .arg(&self.identity)
                .arg(format!("root@{}", h.addr))
                .arg(script)
                .env("PATH", PATH),
            None,
            Duration::from_secs(60),
        )
    }

    pub fn topology_text(&self) -> String {
        fs::read_to_string(&self.file).expect("topology file")
    }

    /// `repltool ARGS -f FILE` with the built binary, bounded; says how long it took.
    pub fn run(&self, args: &[&str]) -> Output {
        let t = Instant::now();
        let out = run_bounded(
            Command::new(env!("CARGO_BIN_EXE_repltool"))
                .args(args)
                .arg("-f")
                .arg(&self.file),
            None,
            Duration::from_secs(180),
        );
        eprintln!(
            "netns: repltool {} -> {:?} in {:.2}s",
            args.join(" "),
            out.status.code(),
            t.elapsed().as_secs_f64()
        );
        out
    }
}

fn wait_banner(h: &NsHost) {
    let sa: SocketAddr = format!("{}:22", h.addr).parse().expect("address");
    let end = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(mut s) = TcpStream::connect_timeout(&sa, Duration::from_millis(300)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 8];
            if s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0") {
                return;
            }
        }
        assert!(
            Instant::now() < end,
            "{}: sshd on {sa} did not answer within 15s:\n{}",
            h.name,
            h.sshd_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let t = Instant::now();
        let mut problems = Vec::new();
        for h in self.hosts.iter_mut().chain(self.proxies.iter_mut()) {
            problems.extend(h.teardown());
        }
        // The hosts' mounts lived in their own mount namespaces, gone with their last process;
        // no process anywhere may still see them.
        let needle = format!(" {}/", self.dir.display());
        let holders = mount_holders(&needle);
        if !holders.is_empty() {
            problems.push(format!(
                "processes {holders:?} still have mounts under {needle}"
            ));
        }
        if let Some(br) = self.bridge.take() {
            if !quiet(&["ip", "link", "del", &br]) || quiet(&["ip", "link", "show", &br]) {
                problems.push(format!("bridge {br} remains"));
            }
        }
        if self.made_etc_netns {
            // Only if empty: another tool may have put something there meanwhile.
            let _ = fs::remove_dir("/etc/netns");
        }
        if let Some(tmp) = self.tmp.take() {
            let p = tmp.path().to_path_buf();
            if let Err(e) = tmp.close() {
                problems.push(format!("{}: {e}", p.display()));
            }
        }
        let used = try_out(&["ip", "-o", "addr", "show", "to", PREFIX]).unwrap_or_default();
        if !used.trim().is_empty() {
            problems.push(format!("{PREFIX} still in use: {used}"));
        }
        eprintln!("netns: teardown {:.2}s", t.elapsed().as_secs_f64());
        if !problems.is_empty() {
            let msg = format!("netns teardown left things behind: {problems:#?}");
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}
