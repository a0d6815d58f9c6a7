//! The server binary and the cached template datadir every lab node is copied from, so a lab
//! never pays for `mariadb-install-db` more than once per server version.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::transport::local::LocalSession;
use crate::transport::{shell_quote, HostSession};

/// Bumped when the template's contents or settings change, so old caches are not reused.
const FORMAT: u32 = 2;
/// Settings the template is built with and every node runs with: small, quick to start, and the
/// same InnoDB log size on both sides so a node never resizes its redo log on first start.
pub const SERVER_SETTINGS: &str = "skip-name-resolve\n\
performance_schema=OFF\n\
innodb_buffer_pool_size=32M\n\
innodb_log_file_size=8M\n\
innodb_buffer_pool_dump_at_shutdown=OFF\n\
innodb_buffer_pool_load_at_startup=OFF\n";
/// The administrative account every lab server has (TCP from 127.0.0.1 and the socket).
pub const ADMIN_USER: &str = "repltool";

/// The server program found on this machine.
#[derive(Debug, Clone)]
pub struct Server {
    pub path: PathBuf,
    /// As `--version` prints it, e.g. `10.11.19-MariaDB-0+deb12u1`.
    pub version: String,
    pub mariadb: bool,
    /// mariadb-admin / mysqladmin, for the ctl script's readiness check.
    pub admin_tool: PathBuf,
}

/// A ready template: a datadir with the admin account, and that account's password.
pub struct Template {
    pub datadir: PathBuf,
    pub password_file: PathBuf,
}

fn which(names: &[&str], extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.extend(extra_dirs.iter().map(PathBuf::from));
    for name in names {
        for d in &dirs {
            let p = d.join(name);
            if let Ok(m) = fs::metadata(&p) {
                if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                    return Some(p);
                }
            }
        }
    }
    None
}

/// Find `mariadbd` (or `mysqld`) and what it is.
pub fn find_server() -> Result<Server> {
    let Some(path) = which(&["mariadbd", "mysqld"], &["/usr/sbin", "/usr/libexec"]) else {
        bail!(
            "no MariaDB/MySQL server found (looked for mariadbd and mysqld on PATH and in /usr/sbin); \
             install one: apt-get install mariadb-server"
        );
    };
    let version = server_version(&path)?;
    let mariadb = crate::flavor::Flavor::detect(&version, "")
        .map(|f| f.datadir_by_install_db())
        .unwrap_or(false);
    let Some(admin_tool) = which(&["mariadb-admin", "mysqladmin"], &["/usr/bin"]) else {
        bail!(
            "mariadb-admin (or mysqladmin) not found; install it: apt-get install mariadb-client"
        );
    };
    Ok(Server {
        path,
        version,
        mariadb,
        admin_tool,
    })
}

/// The server's version, as `--version` prints it. Remembered in the cache per binary (path,
/// inode, size, mtime) because starting the server just to ask costs tens of milliseconds of
/// every `lab up`.
fn server_version(path: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let mut key: u64 = 0xcbf2_9ce4_8422_2325;
    let fields = [m.ino(), m.size(), m.mtime() as u64, m.mtime_nsec() as u64];
    for b in path
        .to_string_lossy()
        .bytes()
        .chain(fields.iter().flat_map(|f| f.to_le_bytes()))
    {
        key = (key ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let memo = cache_root()
        .ok()
        .map(|r| r.join(format!("versions/{key:016x}")));
    if let Some(v) = memo.as_ref().and_then(|p| fs::read_to_string(p).ok()) {
        if !v.trim().is_empty() {
            return Ok(v.trim().to_string());
        }
    }
    let out = std::process::Command::new(path)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", path.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "/usr/sbin/mariadbd  Ver 10.11.19-MariaDB-0+deb12u1 for debian-linux-gnu on x86_64 (...)"
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "Ver")
        .nth(1)
        .map(str::to_string)
        .with_context(|| {
            format!(
                "cannot read the version from `{} --version`",
                path.display()
            )
        })?;
    if let Some(p) = memo {
        // Best effort: an unwritable cache only costs the --version call next time.
        let _ = p.parent().map(fs::create_dir_all);
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        if fs::write(&tmp, &version).is_ok() {
            let _ = fs::rename(&tmp, &p);
        }
    }
    Ok(version)
}

/// `$XDG_CACHE_HOME/repltool` or `~/.cache/repltool`.
fn cache_root() -> Result<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("repltool"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither XDG_CACHE_HOME nor HOME is set: nowhere to cache the lab template")?;
    Ok(PathBuf::from(home).join(".cache/repltool"))
}

/// Where the template for `server` lives once built.
pub fn template_dir(server: &Server) -> Result<PathBuf> {
    let ver: String = server
        .version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Ok(cache_root()?.join(format!("template-{ver}-f{FORMAT}")))
}

/// A random password of letters and digits (safe in option files, YAML and SQL literals).
pub fn random_password() -> Result<String> {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut f = fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    let mut out = String::new();
    let mut buf = [0u8; 64];
    for _ in 0..8 {
        std::io::Read::read_exact(&mut f, &mut buf).context("reading /dev/urandom")?;
        // Rejection keeps the draw uniform over the 62 symbols.
        out.extend(
            buf.iter()
                .filter(|b| **b < 248)
                .map(|b| char::from(ALNUM[usize::from(*b) % 62])),
        );
        if out.len() >= 24 {
            out.truncate(24);
            return Ok(out);
        }
    }
    bail!("/dev/urandom gave too few usable bytes")
}

/// Write a file readable by its owner only.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.write_all(contents)
        .with_context(|| format!("writing {}", path.display()))
}

/// An exclusive lock on a file, released on drop (closing the descriptor drops the flock).
struct Lock {
    _file: fs::File,
}

fn lock(path: &Path, timeout: Duration) -> Result<Lock> {
    let f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let deadline = Instant::now() + timeout;
    let mut told = false;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Lock { _file: f });
        }
        if Instant::now() >= deadline {
            bail!(
                "another repltool has been building the lab template for {}s ({} is locked)",
                timeout.as_secs(),
                path.display()
            );
        }
        if !told {
            crate::report::say(
                "waiting for another repltool to finish building the lab template...",
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The template for `server`, built first if it is not cached yet.
pub fn ensure(server: &Server) -> Result<Template> {
    let dir = template_dir(server)?;
    let ready = |d: &Path| Template {
        datadir: d.join("data"),
        password_file: d.join("admin.password"),
    };
    if dir.join("data").is_dir() {
        return Ok(ready(&dir));
    }
    let root = cache_root()?;
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _lock = lock(&root.join(format!("{name}.lock")), Duration::from_secs(300))?;
    if dir.join("data").is_dir() {
        return Ok(ready(&dir));
    }
    // We hold the lock, so any half-built template is debris from a crashed build.
    let building_prefix = format!("{name}.building-");
    for e in fs::read_dir(&root)?.flatten() {
        if e.file_name()
            .to_string_lossy()
            .starts_with(&building_prefix)
        {
            let _ = fs::remove_dir_all(e.path());
        }
    }
    let tmp = root.join(format!("{building_prefix}{}", std::process::id()));
    crate::report::say(format!(
        "building the lab template for {} {} (once; cached in {})...",
        server.path.display(),
        server.version,
        dir.display()
    ));
    let t0 = Instant::now();
    let built = build(server, &tmp);
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // The rename is what makes the template visible, so a crash above never leaves a
    // template that looks usable.
    fs::rename(&tmp, &dir).with_context(|| format!("renaming {} into place", tmp.display()))?;
    crate::report::say(format!(
        "template built in {:.1}s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(ready(&dir))
}

fn build(server: &Server, tmp: &Path) -> Result<()> {
    fs::create_dir_all(tmp).with_context(|| format!("creating {}", tmp.display()))?;
    fs::set_permissions(tmp, fs::Permissions::from_mode(0o700))?;
    let password = random_password()?;
    write_private(&tmp.join("admin.password"), password.as_bytes())?;
    let cnf = tmp.join("template.cnf");
    fs::write(&cnf, format!("[mysqld]\n{SERVER_SETTINGS}"))?;
    let mut sql = String::new();
    if server.mariadb {
        // Bootstrap runs with grant tables off; this turns them on for the statements below.
        sql.push_str("FLUSH PRIVILEGES;\n");
    }
    for host in ["127.0.0.1", "localhost"] {
        sql.push_str(&format!(
            "CREATE USER '{ADMIN_USER}'@'{host}' IDENTIFIED BY '{password}';\n\
             GRANT ALL PRIVILEGES ON *.* TO '{ADMIN_USER}'@'{host}' WITH GRANT OPTION;\n"
        ));
    }
    // The password goes through a private file, never the command line.
    let sql_file = tmp.join("admin.sql");
    write_private(&sql_file, sql.as_bytes())?;
    let datadir = tmp.join("data");
    let q = |p: &Path| shell_quote(&p.to_string_lossy());
    // As root the server must be told whom to run as; the template is only ever copied, so
    // root is fine (labs chown their copies).
    let user = if is_root() { " --user=root" } else { "" };
    let script = if server.mariadb {
        let Some(install) = which(&["mariadb-install-db", "mysql_install_db"], &["/usr/bin"])
        else {
            bail!("mariadb-install-db not found; install it: apt-get install mariadb-server");
        };
        format!(
            "{} --defaults-file={} --datadir={}{user} --skip-test-db \
             --auth-root-authentication-method=socket --extra-file={} 2>&1",
            q(&install),
            q(&cnf),
            q(&datadir),
            q(&sql_file)
        )
    } else {
        format!(
            "{} --defaults-file={} --initialize-insecure --datadir={}{user} --init-file={} 2>&1",
            q(&server.path),
            q(&cnf),
            q(&datadir),
            q(&sql_file)
        )
    };
    let out = LocalSession::new("lab", "127.0.0.1").run(
        &script,
        None,
        false,
        Duration::from_secs(180),
    )?;
    let _ = fs::remove_file(&sql_file);
    if !out.ok() {
        let text = out.stdout_str();
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "initialising the template datadir failed (exit {}):\n{}",
            out.status,
            tail.join("\n")
        );
    }
    // Dropped so every node starts with an empty buffer-pool dump instead of loading ours.
    let _ = fs::remove_file(datadir.join("ib_buffer_pool"));
    // Most of the InnoDB files are zeros: rewritten sparse, a node's copy (cp skips holes)
    // moves ~6 MB instead of ~25 MB, which is most of what `lab up` adds per node.
    let sparse = tmp.join("data.sparse");
    let out = LocalSession::new("lab", "127.0.0.1").run(
        &format!("cp -a --sparse=always {} {}", q(&datadir), q(&sparse)),
        None,
        false,
        Duration::from_secs(60),
    )?;
    if out.ok() {
        fs::remove_dir_all(&datadir)?;
        fs::rename(&sparse, &datadir)?;
    } else {
        let _ = fs::remove_dir_all(&sparse);
    }
    Ok(())
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no failure mode.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_alphanumeric_and_differ() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), 24);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn private_files_are_mode_600() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("pw");
        write_private(&p, b"x").unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
