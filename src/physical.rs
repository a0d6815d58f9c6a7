//! Physical seeding: a new slave gets a file-level copy of its master instead of a dump.
//!
//! MariaDB: `mariadb-backup --backup --stream=mbstream` on the master's host, unpacked with
//! `mbstream -x` into a staging directory inside the slave's datadir, `--prepare`d there; then,
//! in one script on the slave's host, the server is stopped, the datadir's entries are moved
//! aside into `.repltool-previous`, the prepared copy moved in, ownership fixed, the server
//! started (and on a failed start, everything moved back and the old server started again).
//! Replication then starts at the backup's own coordinates (its binlog info file), and only
//! once both threads run is the previous datadir removed; if they do not, the slave is put
//! back on its previous datadir. MySQL: the clone plugin, cloning into the same staging
//! directory (`CLONE INSTANCE ... DATA DIRECTORY`), then the same swap.
//!
//! The stream goes directly from the master's host to the slave's (socat on a one-time port,
//! accepting only the master's address and a one-time token first; one stream per slave) when
//! socat is on both hosts and `replication.ssl` is off (the data then crosses the network in
//! clear, as that replication itself does); otherwise through repltool's SSH sessions
//! (encrypted, one stream tee'd to every slave; mbstream's chunk checksums refuse a stream
//! damaged in flight). bench/README.md has the figures.
//!
//! Staging and previous directories live inside the datadir (the same filesystem, whatever is
//! mounted where): their names start with a dot, which MariaDB lists as `#mysql50#.repltool-…`
//! databases; every schema query of repltool skips those.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::execute::{remove_file, write_defaults, Ctx};
use crate::flavor::{Flavor, PhysicalCopy, STAGE_MARK};
use crate::plan::LinkSlave;
use crate::topology::{Host, SeedMethod};
use crate::transport::shell_quote;
use crate::transport::sql::SqlConn;

/// The copy being built, inside the slave's datadir.
pub const STAGE_DIR: &str = ".repltool-seed";
/// The slave's datadir from before the copy, kept until replication runs on the new one.
pub const PREVIOUS_DIR: &str = ".repltool-previous";
/// A copy that did not start, moved out of the way while the previous datadir is put back.
const FAILED_DIR: &str = ".repltool-failed";

/// `seed: auto` copies physically from this much data on (the break-even measured against a
/// dump, see bench/README.md: below it the restart and prepare cost more than the dump).
pub const AUTO_PHYSICAL_FROM: u64 = 64 << 20;

/// The master's binary log coordinates (and GTID position) at the copy's consistent point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinates {
    pub file: String,
    pub pos: u64,
    pub gtid: Option<String>,
}

/// How the stream travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// socat from the master's host to the slave's, on a one-time port.
    Direct,
    /// Through repltool's SSH sessions.
    Ssh,
    /// The clone plugin's own connection (MySQL).
    Clone,
}

impl Route {
    fn as_str(self) -> &'static str {
        match self {
            Route::Direct => "directly between the hosts",
            Route::Ssh => "through SSH",
            Route::Clone => "by the clone plugin",
        }
    }
}

/// One slave to be copied into.
#[derive(Debug, Clone)]
pub struct Target {
    pub host: String,
    pub address: String,
    pub port: u16,
    pub datadir: String,
    pub stop: String,
    pub start: String,
    pub flavor: Flavor,
    /// Where the copy is built: `<datadir>/.repltool-seed` for mariabackup; for the clone
    /// plugin (which refuses a directory inside the datadir) `data` in a directory beside the
    /// datadir, `<parent>/.repltool-clone-<name>`.
    pub stage_dir: String,
    /// The recipient holds no user data: the clone plugin may replace its data in place.
    pub empty: bool,
    /// Cloned in place (no staging directory, nothing kept aside): the recipient holds no
    /// user data and a staged clone would be built on another mount than its datadir.
    pub in_place: bool,
}

impl Target {
    fn stage(&self) -> String {
        self.stage_dir.clone()
    }
}

/// The existing directory a staging directory is created in: the datadir itself for
/// mariabackup, the datadir's parent for the clone (`<parent>/.repltool-clone-<name>/data`).
fn staging_parent(stage: &str) -> String {
    let mut p = stage.trim_end_matches('/');
    if let Some(clone) = p.strip_suffix("/data") {
        if clone
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with(".repltool-clone-"))
        {
            p = clone;
        }
    }
    match p.rsplit_once('/') {
        Some(("", _)) | None => "/".to_string(),
        Some((parent, _)) => parent.to_string(),
    }
}

/// The staging directory of a copy into `datadir`.
pub fn stage_dir(copy: PhysicalCopy, datadir: &str) -> String {
    let d = datadir.trim_end_matches('/');
    match copy {
        PhysicalCopy::Mariabackup => format!("{d}/{STAGE_DIR}"),
        PhysicalCopy::Clone => {
            let (parent, name) = d.rsplit_once('/').unwrap_or(("", d));
            format!("{parent}/.repltool-clone-{name}/data")
        }
    }
}

/// What [`choose`] decided: copy physically into these targets.
#[derive(Debug, Clone)]
pub struct Choice {
    pub copy: PhysicalCopy,
    pub targets: Vec<Target>,
    pub route: Route,
    /// Bytes the copy will move (roughly), for the progress bar and the disk check.
    pub size: u64,
}

/// What a copy took.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub coords: Coordinates,
    /// Each slave's own point, when they differ (clone: one per recipient).
    pub per_slave: Vec<(String, Coordinates)>,
    pub bytes: u64,
    pub elapsed: Duration,
    pub route: Route,
    /// How long commits were blocked on the master (MariaDB's BACKUP STAGE BLOCK_COMMIT).
    pub commits_blocked: Option<Duration>,
    /// How long DDL was blocked on the master (from BLOCK_DDL to the end).
    pub ddl_blocked: Option<Duration>,
}

impl Outcome {
    /// The change-list line: size, speed, route, locks.
    pub fn describe(&self, master: &str, slaves: &str) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-6);
        let locks = match (self.commits_blocked, self.ddl_blocked) {
            (Some(c), Some(d)) => format!(
                "; commits blocked {} ms, DDL blocked {} ms on {master}",
                c.as_millis(),
                d.as_millis()
            ),
            (Some(c), None) => format!("; commits blocked {} ms on {master}", c.as_millis()),
            _ => match self.route {
                Route::Clone => {
                    format!("; no write lock on {master} (the clone copies while it writes)")
                }
                _ => String::new(),
            },
        };
        format!(
            "{slaves}: seeded physically from {master} ({} bytes in {secs:.2}s, {:.1} MiB/s, {}{locks}; replication from {}:{})",
            self.bytes,
            self.bytes as f64 / secs / 1048576.0,
            self.route.as_str(),
            self.coords.file,
            self.coords.pos
        )
    }
}

/// `stop`/`start` from the restart command: its `restart` word swapped (`service mariadb
/// restart`, `systemctl restart mariadb`, a lab's `ctl restart`). None when it has none.
pub fn stop_start(restart: &str) -> Option<(String, String)> {
    let words: Vec<&str> = restart.split_whitespace().collect();
    if words.iter().filter(|w| **w == "restart").count() != 1 {
        return None;
    }
    let with = |verb: &str| {
        words
            .iter()
            .map(|w| if *w == "restart" { verb } else { w })
            .collect::<Vec<_>>()
            .join(" ")
    };
    Some((with("stop"), with("start")))
}

/// Read `FILE<TAB>POS[<TAB>GTID]` (the backup's binlog info).
pub fn parse_binlog_info(text: &str) -> Result<Coordinates> {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut f = line.split('\t').map(str::trim);
    let file = f.next().filter(|s| !s.is_empty());
    let pos = f.next().and_then(|p| p.parse::<u64>().ok());
    let gtid = f.next().filter(|s| !s.is_empty()).map(String::from);
    match (file, pos) {
        (Some(file), Some(pos)) => Ok(Coordinates {
            file: file.to_string(),
            pos,
            gtid,
        }),
        _ => bail!(
            "the backup's binlog info is not FILE<TAB>POSITION: {:?} (is the master's binary \
             log on?)",
            text.trim()
        ),
    }
}

/// Commit and DDL blocking times from the stage marks of the backup's log.
pub fn lock_times(log: &str) -> (Option<Duration>, Option<Duration>) {
    let mut ddl = None;
    let mut commit = None;
    let mut end = None;
    for l in log.lines() {
        let Some(rest) = l.strip_prefix(STAGE_MARK) else {
            continue;
        };
        let rest = rest.trim_start();
        let (t, what) = rest.split_once(' ').unwrap_or((rest, ""));
        let Ok(t) = t.parse::<f64>() else { continue };
        if what.contains("BACKUP STAGE BLOCK_DDL") && ddl.is_none() {
            ddl = Some(t);
        } else if what.contains("BACKUP STAGE BLOCK_COMMIT") && commit.is_none() {
            commit = Some(t);
        } else if (what.contains("BACKUP STAGE END") || what.contains("All tables unlocked"))
            && end.is_none()
        {
            end = Some(t);
        }
    }
    let span = |a: Option<f64>| match (a, end) {
        (Some(a), Some(e)) if e >= a => Some(Duration::from_secs_f64(e - a)),
        _ => None,
    };
    (span(commit), span(ddl))
}

/// Whether the InnoDB directory setting `v` is inside the datadir.
fn in_datadir(v: Option<&str>, datadir: &str) -> bool {
    match v.map(str::trim) {
        None | Some("") | Some("./") | Some(".") => true,
        Some(p) => p.trim_end_matches('/') == datadir.trim_end_matches('/'),
    }
}

/// Run a short command on a host; its stdout, or an error naming the host and the command.
fn sh(ctx: &Ctx, host: &str, script: &str, privileged: bool, timeout: Duration) -> Result<String> {
    let out = {
        let mut s = ctx.session(host)?;
        s.run(script, None, privileged, timeout)?
    };
    if !out.ok() {
        bail!(
            "{host}: `{}` failed (exit {}): {}",
            label(script),
            out.status,
            (out.stderr_str() + &out.stdout_str()).trim()
        );
    }
    Ok(out.stdout_str())
}

/// The first line of a script, shortened, for messages.
fn label(script: &str) -> String {
    let first = script.trim().lines().next().unwrap_or("").trim();
    if first.chars().count() > 80 {
        format!("{}...", first.chars().take(77).collect::<String>())
    } else {
        first.to_string()
    }
}

/// Every program of `names` found on the host's PATH (as root), or the missing ones.
fn missing_programs(ctx: &Ctx, host: &str, names: &[&str]) -> Result<Vec<String>> {
    let mut script = String::new();
    for n in names {
        script.push_str(&format!(
            "command -v {} >/dev/null 2>&1 || echo {};",
            shell_quote(n),
            shell_quote(n)
        ));
    }
    script.push_str("true");
    let out = sh(ctx, host, &script, true, Duration::from_secs(15))?;
    Ok(out.split_whitespace().map(String::from).collect())
}

/// Decide whether this link's seed is physical: `Ok(None)` for a logical seed (auto below the
/// break-even, or a host that cannot take a physical copy: the reason is shown), `Ok(Some)`
/// with what to copy into, or an error when `seed: physical` cannot be done (nothing was
/// changed).
pub fn choose(
    ctx: &Ctx,
    mhost: &Host,
    mconn: &mut dyn SqlConn,
    mflavor: &Flavor,
    slaves: &[LinkSlave],
) -> Result<Option<Choice>> {
    let method = ctx.topo.replication.seed;
    if method == SeedMethod::Logical {
        return Ok(None);
    }
    let size = mconn
        .one(&mflavor.data_size_query())?
        .map(|v| {
            v.parse::<f64>()
                .map_err(|_| anyhow!("{}: data size {v:?} is not a number", mhost.name))
        })
        .transpose()?
        .unwrap_or(0.0) as u64;
    if method == SeedMethod::Auto && size < AUTO_PHYSICAL_FROM {
        ctx.progress.step(
            &mhost.name,
            &format!(
                "seed: logical ({} MiB of data, physical from {} MiB)",
                size >> 20,
                AUTO_PHYSICAL_FROM >> 20
            ),
        );
        return Ok(None);
    }
    match feasible(ctx, mhost, mconn, mflavor, slaves, size) {
        Ok(c) => Ok(Some(c)),
        Err(why) if method == SeedMethod::Auto => {
            let msg = format!("seed: logical, not physical: {why:#}");
            ctx.progress.step(&mhost.name, &msg);
            ctx.progress.record(&format!("{}: {msg}", mhost.name));
            Ok(None)
        }
        Err(why) => Err(why.context(format!(
            "replication.seed is physical but {} cannot be copied physically; nothing was \
             changed (`seed: logical` or `auto` copies with a dump)",
            mhost.name
        ))),
    }
}

fn feasible(
    ctx: &Ctx,
    mhost: &Host,
    mconn: &mut dyn SqlConn,
    mflavor: &Flavor,
    slaves: &[LinkSlave],
    size: u64,
) -> Result<Choice> {
    let copy = mflavor.physical_copy().map_err(|e| anyhow!(e))?;
    let mdatadir = mconn
        .one(&mflavor.global_var("datadir")?)?
        .ok_or_else(|| anyhow!("{}: @@datadir is empty", mhost.name))?;
    let mut targets = Vec::new();
    for l in slaves {
        let h = ctx.host(&l.host)?;
        let mut c = ctx.sql(&l.host)?;
        let f = c.flavor()?;
        if f.kind != mflavor.kind || (f.major, f.minor) != (mflavor.major, mflavor.minor) {
            bail!(
                "{} runs {} and {} runs {}: a physical copy needs the same server version \
                 series on both",
                l.host,
                f.describe(),
                mhost.name,
                mflavor.describe()
            );
        }
        // The copy brings the master's accounts: repltool must still log in afterwards.
        if h.mysql.user != mhost.mysql.user
            || h.mysql.password.expose() != mhost.mysql.password.expose()
        {
            bail!(
                "{} logs in with another admin account or password than {}: a physical copy \
                 replaces its accounts with the master's",
                l.host,
                mhost.name
            );
        }
        let datadir = c
            .one(&f.global_var("datadir")?)?
            .ok_or_else(|| anyhow!("{}: @@datadir is empty", l.host))?;
        let datadir = datadir.trim_end_matches('/').to_string();
        if datadir.is_empty() || !datadir.starts_with('/') {
            bail!("{}: @@datadir {datadir:?} is not an absolute path", l.host);
        }
        let dirs = c.query(&f.innodb_dirs_query())?;
        if let Some(row) = dirs.first() {
            for (name, v) in row {
                if !in_datadir(v.as_deref(), &datadir) {
                    bail!(
                        "{}: innodb {name} is {:?}, outside the datadir {datadir}: a physical \
                         copy replaces the datadir only",
                        l.host,
                        v.as_deref().unwrap_or("")
                    );
                }
            }
        }
        let restart = match &h.restart {
            Some(r) => Some(r.clone()),
            None => {
                let mut s = ctx.session(&l.host)?;
                crate::observe::config_facts(s.as_mut(), h)?.restart
            }
        };
        let Some((stop, start)) = restart.as_deref().and_then(stop_start) else {
            bail!(
                "{}: no way to stop and start the server separately (restart command {:?}; \
                 a physical copy needs one with a `restart` word, such as `service mariadb \
                 restart`)",
                l.host,
                restart.unwrap_or_default()
            );
        };
        let empty = c
            .column(&f.databases_query())?
            .iter()
            .all(|d| d == crate::flavor::CANARY_SCHEMA);
        targets.push(Target {
            host: l.host.clone(),
            address: h.address.clone(),
            port: h.mysql.port,
            stage_dir: stage_dir(copy, &datadir),
            datadir,
            stop,
            start,
            flavor: f,
            empty,
            in_place: false,
        });
    }
    // Programs and disk space, on every host, before anything changes.
    let (on_master, on_slave) = mflavor.backup_programs();
    let mut with_socat = true;
    let mut need: Vec<&str> = on_master.to_vec();
    need.push("socat");
    let miss = missing_programs(ctx, &mhost.name, &need)?;
    if miss.iter().any(|m| m != "socat") {
        bail!(
            "{}: {} not found (Debian: apt-get install mariadb-backup)",
            mhost.name,
            miss.join(", ")
        );
    }
    with_socat &= miss.is_empty();
    // The copy is about the master's datadir without its logs.
    let copy_size = if copy == PhysicalCopy::Mariabackup {
        let out = sh(
            ctx,
            &mhost.name,
            &format!(
                "du -sb --exclude='*-bin.[0-9]*' --exclude='*relay-bin*' --exclude='ibtmp*' \
                 --exclude='ib_logfile*' --exclude='.repltool-*' {} | cut -f1",
                shell_quote(&mdatadir)
            ),
            true,
            Duration::from_secs(120),
        )?;
        out.trim()
            .parse::<u64>()
            .map_err(|_| anyhow!("{}: du printed {:?}", mhost.name, out.trim()))?
    } else {
        size
    };
    for t in targets.iter_mut() {
        let mut need: Vec<&str> = on_slave.to_vec();
        need.push("socat");
        let miss = missing_programs(ctx, &t.host, &need)?;
        if miss.iter().any(|m| m != "socat") {
            bail!(
                "{}: {} not found (Debian: apt-get install mariadb-backup)",
                t.host,
                miss.join(", ")
            );
        }
        with_socat &= miss.is_empty();
        // Where the copy is built (the clone: beside the datadir, which may be another
        // filesystem when the datadir is a mount point) and where it ends up.
        let stage_parent = staging_parent(&t.stage());
        let out = sh(
            ctx,
            &t.host,
            &format!(
                "for d in {} {}; do df -P -B1 \"$d\" | awk 'NR == 2 {{ print $4 }}'; stat -c %m \"$d\"; done",
                shell_quote(&t.datadir),
                shell_quote(&stage_parent)
            ),
            true,
            Duration::from_secs(30),
        )?;
        // Free bytes and mount point of each: a rename across mount points (a bind mount of
        // the same filesystem included) is a copy.
        let f: Vec<&str> = out.lines().map(str::trim).collect();
        let parsed = match f.as_slice() {
            [a, ma, b, mb] => a
                .parse::<u64>()
                .ok()
                .zip(b.parse::<u64>().ok())
                .map(|(a, b)| (a, b, ma != mb)),
            _ => None,
        };
        let (free, stage_free, cross_fs) =
            parsed.ok_or_else(|| anyhow!("{}: df/stat printed {:?}", t.host, out.trim()))?;
        // The copy lands beside the slave's own data, which stays until replication runs.
        let want = copy_size + copy_size / 10 + (256 << 20);
        if cross_fs && copy == PhysicalCopy::Clone && t.empty {
            // Nothing of the slave's own to keep aside: the clone replaces its data in place
            // rather than being built on the other mount and copied in a second time.
            t.in_place = true;
            if free < want {
                bail!(
                    "{}: {} has {} MiB free; the clone of {} needs about {} MiB (its {} MiB \
                 plus 10% and 256 MiB of room)",
                    t.host,
                    t.datadir,
                    free >> 20,
                    mhost.name,
                    want >> 20,
                    copy_size >> 20
                );
            }
            ctx.progress.record(&format!(
                "{}: cloned in place: it holds no user data, and a clone beside its datadir {} \
                 would be built in {stage_parent}, another mount, then copied in a second time",
                t.host, t.datadir
            ));
            continue;
        }
        if cross_fs {
            if stage_free < want {
                bail!(
                    "{}: {} has {} MiB free; the clone of {} is built there first and needs \
                     about {} MiB (its {} MiB plus 10% and 256 MiB of room), because the \
                     clone plugin refuses a directory inside the datadir {} (another \
                     mount)",
                    t.host,
                    stage_parent,
                    stage_free >> 20,
                    mhost.name,
                    want >> 20,
                    copy_size >> 20,
                    t.datadir
                );
            }
            ctx.progress.record(&format!(
                "{}: the clone is built in {stage_parent}, another mount than the datadir \
                 {}: moving it in copies its {} MiB a second time",
                t.host,
                t.datadir,
                copy_size >> 20
            ));
        }
        if free < want {
            bail!(
                "{}: {} has {} MiB free; the copy of {} needs about {} MiB (its {} MiB plus \
                 10% and 256 MiB of room), beside the slave's own data which is kept until \
                 replication runs",
                t.host,
                t.datadir,
                free >> 20,
                mhost.name,
                want >> 20,
                copy_size >> 20
            );
        }
    }
    // REPLTOOL_PHYSICAL_ROUTE=ssh|direct: for the benchmark and the tests, which measure and
    // interrupt each route (direct still needs socat on both hosts).
    let forced = std::env::var("REPLTOOL_PHYSICAL_ROUTE").ok();
    let route = match copy {
        PhysicalCopy::Clone => Route::Clone,
        PhysicalCopy::Mariabackup if forced.as_deref() == Some("ssh") => Route::Ssh,
        PhysicalCopy::Mariabackup if forced.as_deref() == Some("direct") && with_socat => {
            Route::Direct
        }
        PhysicalCopy::Mariabackup if with_socat && !ctx.topo.replication.ssl => Route::Direct,
        PhysicalCopy::Mariabackup => Route::Ssh,
    };
    Ok(Choice {
        copy,
        targets,
        route,
        size: copy_size,
    })
}

/// A random token of 64 hex characters.
fn token() -> Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    let mut b = [0u8; 32];
    f.read_exact(&mut b).context("reading /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// A port for the one-time listener on the slave's host, not in use there.
fn free_port(ctx: &Ctx, host: &str) -> Result<u16> {
    for _ in 0..8 {
        let t = token()?;
        let n = u16::from_str_radix(&t[..4], 16).unwrap_or(0);
        let port = 20000 + n % 40000;
        let out = sh(
            ctx,
            host,
            &crate::observe::listening_script(port),
            false,
            Duration::from_secs(10),
        )?;
        if out.trim() == "NONE" {
            return Ok(port);
        }
    }
    bail!("{host}: no free port found for the copy")
}

/// Copy the master into every target: the slaves then run on the copy (their previous datadir
/// kept aside), and the coordinates say where replication starts.
pub fn copy(ctx: &Ctx, mhost: &Host, mflavor: &Flavor, choice: &Choice) -> Result<Outcome> {
    match choice.copy {
        PhysicalCopy::Mariabackup => mariabackup(ctx, mhost, mflavor, choice),
        PhysicalCopy::Clone => clone(ctx, mhost, mflavor, choice),
    }
}

/// MySQL: every recipient clones the master into its staging directory (the clone plugin's own
/// connection to the master's SQL port, with a one-time account), then is swapped onto it. The
/// recipient never restarts itself (a clone into a directory leaves it running on its own
/// data); the swap stops and starts it with its service command.
fn clone(ctx: &Ctx, mhost: &Host, mflavor: &Flavor, choice: &Choice) -> Result<Outcome> {
    let started = Instant::now();
    let user = "repltool_clone";
    let mut mconn = ctx.sql(&mhost.name)?;
    ensure_clone_plugin(mconn.as_mut(), mflavor, &mhost.name)?;
    let results = crate::par::each(&choice.targets, |t| {
        let pw = crate::secret::Secret::new(crate::lab::template::random_password()?);
        {
            let mut m = ctx.sql(&mhost.name)?;
            crate::execute::with_write_window(m.as_mut(), mflavor, |c| {
                c.run(&mflavor.create_clone_user(user, &t.address, &pw))
            })
            .with_context(|| format!("{}: the one-time clone account", mhost.name))?;
        }
        let r = clone_one(ctx, mhost, t, user, &pw, choice.size);
        if let Ok(mut m) = ctx.sql(&mhost.name) {
            let _ = crate::execute::with_write_window(m.as_mut(), mflavor, |c| {
                c.run(&mflavor.drop_clone_user(user, &t.address))
            });
        }
        r
    });
    let mut bytes = 0;
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(b) => bytes = bytes.max(b),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        for t in &choice.targets {
            discard_stage(ctx, t);
        }
        bail!(errors.join("\n"));
    }
    let copied = started.elapsed();
    // The clone's coordinates are filled in when a server starts on the cloned directory (its
    // #clone status is completed at startup): read them on each slave after its swap.
    let results = crate::par::each(&choice.targets, |t| {
        if t.in_place {
            start_after_clone(ctx, t)?;
        } else {
            swap(ctx, t)?;
        }
        // The clone copied the master's accounts, the one-time one included.
        let mut conn = wait_login(ctx, &t.host)?;
        let f = conn.flavor()?;
        crate::execute::with_write_window(conn.as_mut(), &f, |c| {
            c.run(&f.drop_clone_user(user, &t.address))
        })?;
        read_clone_coordinates(ctx, t)
    });
    let mut per_slave = Vec::new();
    let mut errors = Vec::new();
    for (t, r) in choice.targets.iter().zip(results) {
        match r {
            Ok(c) => per_slave.push((t.host.clone(), c)),
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!(errors.join("\n"));
    }
    Ok(Outcome {
        coords: per_slave[0].1.clone(),
        per_slave,
        bytes,
        elapsed: copied,
        route: Route::Clone,
        commits_blocked: None,
        ddl_blocked: None,
    })
}

/// Log in to a server that was just started, within the run's timeout.
fn wait_login(ctx: &Ctx, host: &str) -> Result<Box<dyn SqlConn>> {
    let deadline = Instant::now() + ctx.timeout;
    loop {
        match ctx.sql(host) {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn ensure_clone_plugin(conn: &mut dyn SqlConn, f: &Flavor, host: &str) -> Result<()> {
    if conn.one(&f.clone_plugin_query())?.as_deref() == Some("ACTIVE") {
        return Ok(());
    }
    crate::execute::with_write_window(conn, f, |c| c.run(&f.install_clone_plugin()))
        .with_context(|| format!("{host}: loading the clone plugin (mysql_clone.so)"))
}

fn clone_one(
    ctx: &Ctx,
    mhost: &Host,
    t: &Target,
    user: &str,
    pw: &crate::secret::Secret,
    size: u64,
) -> Result<u64> {
    // A fresh directory the server (its datadir's owner) may create the clone in.
    let parent = t
        .stage_dir
        .rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .ok_or_else(|| anyhow!("{}: bad staging directory {}", t.host, t.stage_dir))?;
    if !t.in_place {
        stage_clone_dir(ctx, t, &parent)?;
    }
    let mut conn = ctx.sql(&t.host)?;
    let f = conn.flavor()?;
    ensure_clone_plugin(conn.as_mut(), &f, &t.host)?;
    conn.exec(&f.set_clone_donor(&mhost.address, mhost.mysql.port))?;
    let q = f.clone_instance(
        user,
        &mhost.address,
        mhost.mysql.port,
        pw,
        (!t.in_place).then(|| t.stage()).as_deref(),
        ctx.topo.replication.ssl,
    )?;
    ctx.progress.step(
        &t.host,
        &format!(
            "CLONE INSTANCE FROM {}{}",
            mhost.name,
            if t.in_place { " (in place)" } else { "" }
        ),
    );
    let done = AtomicBool::new(false);
    let seen = AtomicU64::new(0);
    let r = std::thread::scope(|scope| {
        scope.spawn(|| {
            // The clone's own progress, from another session on the recipient.
            let mut bar =
                ctx.progress
                    .bytes(&t.host, &format!("cloning {}", mhost.name), Some(size));
            let Ok(mut c) = ctx.sql(&t.host) else { return };
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                if let Ok(Some(v)) = c.one(&f.clone_progress_query()) {
                    if let Ok(n) = v.parse::<f64>() {
                        let n = n as u64;
                        seen.fetch_max(n, Ordering::Relaxed);
                        if n > bar.done {
                            bar.add(n - bar.done);
                        }
                    }
                }
            }
            bar.finish();
        });
        let r = conn.exec(&q);
        done.store(true, Ordering::Relaxed);
        r
    });
    if t.in_place {
        // The clone ends with the server going away: restarted by its supervisor (the
        // statement's connection is lost) or stopped (error 3707). Any other server error is
        // the clone's own; whether it completed is read after the start
        // (performance_schema.clone_status).
        if let Err(e) = r {
            match crate::transport::sql::code_of(&e) {
                None | Some(Flavor::CLONE_NO_RESTART) => {}
                Some(_) => {
                    return Err(e.context(format!(
                        "{}: cloning {} in place (the server held no user data)",
                        t.host, mhost.name
                    )))
                }
            }
        }
        return Ok(seen.load(Ordering::Relaxed).max(size));
    }
    r.with_context(|| format!("{}: cloning {}", t.host, mhost.name))?;
    let bytes = conn
        .one(&f.clone_progress_query())?
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok(bytes as u64)
}

/// Run a script as root on a slave's host for as long as a server stop and start can take
/// (a stop flushes the buffer pool and a start may recover): killing such a script halfway is
/// what must never happen.
fn run_long(ctx: &Ctx, t: &Target, script: &str) -> Result<crate::transport::CmdOutput> {
    let limit = ctx.timeout.saturating_mul(4).max(Duration::from_secs(900));
    let mut s = ctx.session(&t.host)?;
    s.run(script, None, true, limit)
}

/// The server after an in-place clone: stopped (no supervisor) or restarted by its supervisor;
/// stopped for sure, then started with its service command, so it runs on the clone.
fn start_after_clone(ctx: &Ctx, t: &Target) -> Result<()> {
    ctx.progress.step(
        &t.host,
        &format!("starting the server on the clone ({}; {})", t.stop, t.start),
    );
    let script = format!(
        "{common}
{stop} >/dev/null 2>&1; down || {{ echo 'the server still listens on port {port}' >&2; exit 4; }}; {start}",
        common = common_functions(t.port),
        stop = t.stop,
        start = t.start,
        port = t.port,
    );
    let out = run_long(ctx, t, &script)?;
    if !out.ok() {
        bail!(
            "{}: the server did not start after the in-place clone (exit {}): {}. It held no \
             user data before the clone; start it by hand ({}) and run init again",
            t.host,
            out.status,
            format!("{} {}", out.stdout_str().trim(), out.stderr_str().trim()).trim(),
            t.start
        );
    }
    ctx.progress.record(&format!(
        "{}: cloned in place and started on the clone ({})",
        t.host, t.start
    ));
    Ok(())
}

/// The clone's directory beside the datadir: created fresh, owned by the datadir's owner.
fn stage_clone_dir(ctx: &Ctx, t: &Target, parent: &str) -> Result<()> {
    sh(
        ctx,
        &t.host,
        &format!(
            "set -e; cd {d}; [ ! -e {PREVIOUS_DIR} ] || {{ echo \"{d}/{PREVIOUS_DIR} holds a \
             datadir kept aside by an earlier physical seed that did not finish\" >&2; exit 3; }}; \
             rm -rf {p}; mkdir -m 700 {p}; chown \"$(stat -c %u:%g {d})\" {p}",
            d = shell_quote(&t.datadir),
            p = shell_quote(parent),
        ),
        true,
        Duration::from_secs(600),
    )?;
    Ok(())
}

/// The master's coordinates at the recipient's clone point (performance_schema.clone_status).
fn read_clone_coordinates(ctx: &Ctx, t: &Target) -> Result<Coordinates> {
    let mut c = ctx.sql(&t.host)?;
    let f = c.flavor()?;
    let rows = c.query(&f.clone_status_query())?;
    let row = rows
        .first()
        .ok_or_else(|| anyhow!("{}: performance_schema.clone_status is empty", t.host))?;
    let get = |k: &str| -> Result<String> {
        Ok(crate::observe::column(row, k)?.unwrap_or("").to_string())
    };
    if !get("STATE")?.eq_ignore_ascii_case("Completed") {
        bail!(
            "{}: the clone did not complete: {} {}",
            t.host,
            get("ERROR_NO")?,
            get("ERROR_MESSAGE")?
        );
    }
    let file = get("BINLOG_FILE")?;
    let pos = get("BINLOG_POSITION")?
        .parse::<u64>()
        .map_err(|_| anyhow!("{}: clone_status BINLOG_POSITION is not a number", t.host))?;
    if file.is_empty() {
        bail!(
            "{}: the clone recorded no binary log position (is the master's binary log on?)",
            t.host
        );
    }
    let gtid = get("GTID_EXECUTED")?.replace('\n', "");
    Ok(Coordinates {
        file,
        pos,
        gtid: (!gtid.is_empty()).then_some(gtid),
    })
}

/// Where replication starts on this slave: the copy's coordinates (mariabackup: the same for
/// every slave of the stream; clone: each recipient's own).
pub fn coords_of(t: &Target, outcome: &Outcome) -> Coordinates {
    match outcome.per_slave.iter().find(|(h, _)| h == &t.host) {
        // The clone brought the master's GTID state along: nothing to seed.
        Some((_, c)) if outcome.route == Route::Clone => Coordinates {
            gtid: None,
            ..c.clone()
        },
        Some((_, c)) => c.clone(),
        None => outcome.coords.clone(),
    }
}

/// Remove a stale staging directory (an interrupted copy) and make a fresh one; refuse if a
/// previous datadir is still kept aside (an earlier physical seed that did not finish).
pub(crate) fn prepare_stage(ctx: &Ctx, t: &Target) -> Result<()> {
    let d = shell_quote(&t.datadir);
    let out = sh(
        ctx,
        &t.host,
        &format!(
            "cd {d} || exit 1; if [ -e {PREVIOUS_DIR} ]; then echo PREVIOUS; exit 0; fi; \
             {kill}; rm -rf {STAGE_DIR} {FAILED_DIR} && mkdir -m 700 {STAGE_DIR} && echo OK",
            // An interrupted copy may still be unpacking (the direct route does not need
            // repltool): its mbstream is found by this very directory.
            kill = kill_unpacking(&t.stage()),
        ),
        true,
        Duration::from_secs(600),
    )?;
    if out.trim() == "PREVIOUS" {
        bail!(
            "{}: {}/{PREVIOUS_DIR} holds a datadir kept aside by an earlier physical seed that \
             did not finish; the server now runs on another one. Keep the one you want (move \
             its entries back into {} with the server stopped, or remove {PREVIOUS_DIR}) and \
             run init again",
            t.host,
            t.datadir,
            t.datadir
        );
    }
    Ok(())
}

fn mariabackup(ctx: &Ctx, mhost: &Host, mflavor: &Flavor, choice: &Choice) -> Result<Outcome> {
    if choice.route == Route::Direct && choice.targets.len() > 1 {
        // One direct stream per slave, one after the other (each at its own point): a stream
        // tee'd through repltool would take the SSH route.
        let mut per_slave: Vec<(String, Coordinates)> = Vec::new();
        let mut total = Outcome {
            coords: Coordinates {
                file: String::new(),
                pos: 0,
                gtid: None,
            },
            per_slave: Vec::new(),
            bytes: 0,
            elapsed: Duration::ZERO,
            route: Route::Direct,
            commits_blocked: None,
            ddl_blocked: None,
        };
        for (i, t) in choice.targets.iter().enumerate() {
            let one = Choice {
                targets: vec![t.clone()],
                ..choice.clone()
            };
            match mariabackup(ctx, mhost, mflavor, &one) {
                Ok(o) => {
                    per_slave.push((t.host.clone(), o.coords.clone()));
                    total.bytes += o.bytes;
                    total.elapsed += o.elapsed;
                    total.route = o.route;
                    total.commits_blocked = total.commits_blocked.max(o.commits_blocked);
                    total.ddl_blocked = total.ddl_blocked.max(o.ddl_blocked);
                }
                Err(e) => {
                    // The slaves copied before this one go back to their own datadirs.
                    let mut msg = format!("{e:#}");
                    for done in &choice.targets[..i] {
                        if let Err(e2) = restore(ctx, done) {
                            msg.push_str(&format!("\n{e2:#}"));
                        }
                    }
                    bail!(msg);
                }
            }
        }
        total.coords = per_slave[0].1.clone();
        total.per_slave = per_slave;
        return Ok(total);
    }
    let started = Instant::now();
    for t in &choice.targets {
        prepare_stage(ctx, t)?;
    }
    let mdatadir = {
        let mut c = ctx.sql(&mhost.name)?;
        c.one(&mflavor.global_var("datadir")?)?
            .ok_or_else(|| anyhow!("{}: @@datadir is empty", mhost.name))?
    };
    let mdef = {
        let mut s = ctx.session(&mhost.name)?;
        write_defaults(s.as_mut(), mhost)?
    };
    let res = (|| -> Result<(u64, String, Route)> {
        let tmp = sh(
            ctx,
            &mhost.name,
            "umask 077; mktemp -d /tmp/repltool-backup.XXXXXXXX",
            true,
            Duration::from_secs(10),
        )?
        .trim()
        .to_string();
        let log = format!("{tmp}/backup.log");
        let backup = mflavor.backup_stream_command(&mdef.to_string_lossy(), &mdatadir, &tmp, &log);
        let mut route = choice.route;
        let mut r = match route {
            Route::Direct => stream_direct(ctx, mhost, choice, &backup),
            _ => stream_ssh(ctx, mhost, choice, &backup),
        };
        if route == Route::Direct {
            if let Err(e) = &r {
                // The hosts may not reach each other on another port than SQL's (a firewall):
                // nothing arrived, so the copy is simply made again through SSH.
                if received(ctx, &choice.targets[0]).unwrap_or(1) == 0 {
                    let msg = format!(
                        "the direct copy to {} failed ({e:#}); copying through SSH instead",
                        choice.targets[0].host
                    );
                    ctx.progress.step(&mhost.name, &msg);
                    for t in &choice.targets {
                        prepare_stage(ctx, t)?;
                    }
                    route = Route::Ssh;
                    r = stream_ssh(ctx, mhost, choice, &backup);
                }
            }
        }
        let log_text = {
            let mut s = ctx.session(&mhost.name)?;
            s.read_file(std::path::Path::new(&log), true)?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let _ = sh(
            ctx,
            &mhost.name,
            &format!("rm -rf {}", shell_quote(&tmp)),
            true,
            Duration::from_secs(60),
        );
        let bytes = match r {
            Ok(b) => b,
            Err(e) => {
                let tail: Vec<&str> = log_text.lines().rev().take(8).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(e.context(format!(
                    "the copy from {} failed; last lines of {}'s log:\n{}",
                    mhost.name,
                    mflavor.backup_tool(),
                    tail.join("\n")
                )));
            }
        };
        if !mflavor.backup_succeeded(&log_text) {
            let tail: Vec<&str> = log_text.lines().rev().take(8).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "{}: {} did not complete; last lines of its log:\n{}",
                mhost.name,
                mflavor.backup_tool(),
                tail.join("\n")
            );
        }
        Ok((bytes, log_text, route))
    })();
    {
        if let Ok(mut s) = ctx.session(&mhost.name) {
            remove_file(s.as_mut(), &mdef);
        }
    }
    let (bytes, log_text, route) = res.inspect_err(|_| {
        for t in &choice.targets {
            discard_stage(ctx, t);
        }
    })?;
    let (commits_blocked, ddl_blocked) = lock_times(&log_text);
    // Every target got the same stream: the coordinates are read from the first.
    let coords = read_coordinates(ctx, &choice.targets[0]).inspect_err(|_| {
        for t in &choice.targets {
            discard_stage(ctx, t);
        }
    })?;
    let copied = started.elapsed();
    // Prepare and swap every slave at once.
    let prep_limit = ctx.timeout.saturating_mul(10).max(Duration::from_secs(600));
    let errors = crate::par::errors(crate::par::each(&choice.targets, |t| {
        ctx.progress
            .step(&t.host, &format!("{} --prepare", t.flavor.backup_tool()));
        let prep = sh(
            ctx,
            &t.host,
            &format!(
                "{} 2>&1 | tail -n 5",
                t.flavor.backup_prepare_command(&t.stage())
            ),
            true,
            prep_limit,
        )?;
        if !prep.contains("completed OK!") {
            discard_stage(ctx, t);
            bail!(
                "{}: {} --prepare did not complete (the copy was removed; the server and its \
                 data are as they were):\n{}",
                t.host,
                t.flavor.backup_tool(),
                prep.trim()
            );
        }
        swap(ctx, t)
    }));
    if !errors.is_empty() {
        bail!(errors.join("\n"));
    }
    Ok(Outcome {
        coords,
        per_slave: Vec::new(),
        bytes,
        elapsed: copied,
        route,
        commits_blocked,
        ddl_blocked,
    })
}

/// The coordinates written by the backup into the staging directory.
pub(crate) fn read_coordinates(ctx: &Ctx, t: &Target) -> Result<Coordinates> {
    let mut s = ctx.session(&t.host)?;
    for name in t.flavor.backup_binlog_info_files() {
        let p = format!("{}/{name}", t.stage());
        if let Some(b) = s.read_file(std::path::Path::new(&p), true)? {
            return parse_binlog_info(&String::from_utf8_lossy(&b))
                .with_context(|| format!("{}: {p}", t.host));
        }
    }
    bail!(
        "{}: the copy has no {} (the master's binary log coordinates)",
        t.host,
        t.flavor.backup_binlog_info_files().join(" or ")
    )
}

/// A script ending every process unpacking into `stage` (found by its command line, unique
/// to this directory), and waiting for them to be gone (10 s at most).
fn kill_unpacking(stage: &str) -> String {
    // `[m]bstream`: the pattern must not match the shell running this very script.
    let pat = shell_quote(&format!("[m]bstream -x -C {stage}"));
    format!(
        "if pkill -f -- {pat} 2>/dev/null; then i=0; while pgrep -f -- {pat} >/dev/null && \
         [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done; fi"
    )
}

/// Remove the staging directory (best effort): the slave's own data was never touched.
pub(crate) fn discard_stage(ctx: &Ctx, t: &Target) {
    let dir = if t.stage_dir.contains("/.repltool-clone-") {
        t.stage_dir.trim_end_matches("/data").to_string()
    } else {
        t.stage()
    };
    let _ = sh(
        ctx,
        &t.host,
        &format!("rm -rf {}", shell_quote(&dir)),
        true,
        Duration::from_secs(600),
    );
}

/// Bytes in the staging directory of a target.
fn received(ctx: &Ctx, t: &Target) -> Result<u64> {
    let out = sh(
        ctx,
        &t.host,
        &format!("du -sb {} 2>/dev/null | cut -f1", shell_quote(&t.stage())),
        true,
        Duration::from_secs(60),
    )?;
    // An empty directory is a few KiB of directory entries: count it as nothing.
    Ok(out.trim().parse::<u64>().unwrap_or(0).saturating_sub(8192))
}

/// The stream through repltool: the backup's stdout, written into every slave's mbstream.
fn stream_ssh(ctx: &Ctx, mhost: &Host, choice: &Choice, backup: &str) -> Result<u64> {
    let mut sinks = Vec::new();
    for t in &choice.targets {
        let mut s = ctx.session(&t.host)?;
        // An mbstream that ends early must not leave the stream blocked on a full window:
        // the rest is read and dropped, and its exit status is the command's.
        let cmd = format!(
            "{}; rc=$?; cat >/dev/null; exit $rc",
            t.flavor.backup_extract_command(&t.stage())
        );
        sinks.push((t.host.clone(), s.spawn(&cmd, true)?));
    }
    let mut src = {
        let mut s = ctx.session(&mhost.name)?;
        s.spawn(backup, true)?
    };
    let names: Vec<&str> = choice.targets.iter().map(|t| t.host.as_str()).collect();
    let mut bar = ctx.progress.bytes(
        &mhost.name,
        &format!("copying to {}", names.join(", ")),
        Some(choice.size),
    );
    crate::failpoint::hit("physical-copy-start");
    let mut buf = vec![0u8; 256 * 1024];
    let mut midway = false;
    let r = (|| -> Result<()> {
        loop {
            let n = src.stdout().read(&mut buf).context("reading the backup")?;
            if n == 0 {
                return Ok(());
            }
            for (h, p) in sinks.iter_mut() {
                p.stdin()
                    .write_all(&buf[..n])
                    .with_context(|| format!("{h}: writing the copy into mbstream"))?;
            }
            bar.add(n as u64);
            if !midway && bar.done >= choice.size / 2 {
                midway = true;
                crate::failpoint::hit("physical-copy-midway");
            }
        }
    })();
    bar.finish();
    let sout = src.wait()?;
    let mut errs = Vec::new();
    for (h, mut p) in sinks {
        let _ = p.close_stdin();
        let o = p.wait()?;
        if !o.ok() {
            errs.push(format!(
                "{h}: mbstream failed (exit {}): {}",
                o.status,
                o.stderr_str().trim()
            ));
        }
    }
    r?;
    if !sout.ok() {
        bail!(
            "{}: the backup ended with exit {}: {}",
            mhost.name,
            sout.status,
            sout.stderr_str().trim()
        );
    }
    if !errs.is_empty() {
        bail!(errs.join("\n"));
    }
    Ok(bar.done)
}

/// The stream straight from the master's host to the slave's: a one-time listener on the
/// slave (socat, accepting the master's address only, once), the backup piped into socat on
/// the master, a one-time token first so the slave unpacks nothing else. Progress is read from
/// the staging directory's size.
fn stream_direct(ctx: &Ctx, mhost: &Host, choice: &Choice, backup: &str) -> Result<u64> {
    let t = &choice.targets[0];
    let tok = token()?;
    let port = free_port(ctx, &t.host)?;
    let listen = format!(
        "read -r tok; socat -u -b 262144 \
         TCP-LISTEN:{port},bind={addr},range={maddr}/32,reuseaddr,listen-timeout=30 STDOUT | {{ got=$(dd bs=1 count=64 2>/dev/null); if [ \"$got\" != \"$tok\" ]; then \
         echo \"the stream did not start with the one-time token ({} bytes)\" >&2; \
         cat >/dev/null; exit 9; fi; {}; }}",
        "${#got}",
        t.flavor.backup_extract_command(&t.stage()),
        addr = shell_quote(&t.address),
        maddr = shell_quote(&mhost.address),
    );
    let send = format!(
        "read -r tok; {{ printf '%s' \"$tok\"; {backup}; }} | socat -u -b 262144 STDIN \
         TCP:{}:{port},retry=100,interval=0.1",
        shell_quote(&t.address)
    );
    let mut sink = {
        let mut s = ctx.session(&t.host)?;
        s.spawn(&listen, true)?
    };
    sink.stdin()
        .write_all(format!("{tok}\n").as_bytes())
        .context("sending the token to the slave")?;
    let mut src = {
        let mut s = ctx.session(&mhost.name)?;
        s.spawn(&send, true)?
    };
    src.stdin()
        .write_all(format!("{tok}\n").as_bytes())
        .context("sending the token to the master")?;
    let _ = src.close_stdin();
    let _ = sink.close_stdin();
    let mut bar = ctx.progress.bytes(
        &mhost.name,
        &format!("copying to {}", t.host),
        Some(choice.size),
    );
    crate::failpoint::hit("physical-copy-start");
    let done = AtomicBool::new(false);
    let seen = AtomicU64::new(0);
    let stalled = AtomicBool::new(false);
    let stall = ctx.timeout.max(Duration::from_secs(300));
    let mut src = Some(src);
    let (sout, kout) = std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut last = (0u64, Instant::now());
            let mut midway = false;
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                if let Ok(n) = received(ctx, t) {
                    seen.store(n, Ordering::Relaxed);
                    if n > last.0 {
                        last = (n, Instant::now());
                    }
                    if !midway && n >= choice.size / 2 {
                        midway = true;
                        crate::failpoint::hit("physical-copy-midway");
                    }
                }
                if last.1.elapsed() > stall {
                    stalled.store(true, Ordering::Relaxed);
                    return;
                }
            }
        });
        // The listener ends when the master's side closes the connection, or after its
        // listen-timeout when the master never connected.
        let h = scope.spawn(|| sink.wait());
        let sout = loop {
            if stalled.load(Ordering::Relaxed) {
                // Ending the master's side ends the slave's too.
                drop(src.take());
                break Err(anyhow!(
                    "the copy made no progress for {}s; it was stopped",
                    stall.as_secs()
                ));
            }
            if h.is_finished() {
                break match src.take() {
                    Some(p) => p.wait(),
                    None => Err(anyhow!("the master's side of the copy is gone")),
                };
            }
            let n = seen.load(Ordering::Relaxed);
            if n > bar.done {
                bar.add(n - bar.done);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let kout = h
            .join()
            .unwrap_or_else(|_| Err(anyhow!("internal error: the copy's reader panicked")));
        done.store(true, Ordering::Relaxed);
        (sout, kout)
    });
    let kout = kout?;
    let sout = sout?;
    let n = received(ctx, t)?;
    if n > bar.done {
        bar.add(n - bar.done);
    }
    bar.finish();
    if !kout.ok() {
        bail!(
            "{}: receiving the copy failed (exit {}): {}",
            t.host,
            kout.status,
            kout.stderr_str().trim()
        );
    }
    if !sout.ok() {
        bail!(
            "{}: sending the copy failed (exit {}): {}",
            mhost.name,
            sout.status,
            sout.stderr_str().trim()
        );
    }
    Ok(n)
}

/// The script that swaps a slave onto its staged copy, run as root on its host. It survives
/// repltool's end (its output goes to a file, printed at the end), and puts the previous
/// datadir back if the server does not start on the copy. Marks on stdout: `@repltool
/// swapped`, `@repltool started`, `@repltool restored`, or a failure.
pub fn swap_script(t: &Target, keep: &[&str], drop: &[&str]) -> String {
    let keep: Vec<String> = keep.iter().map(|k| shell_quote(k)).collect();
    let drop: Vec<String> = drop
        .iter()
        .map(|k| k.replace(['\'', '"', ' ', ';'], ""))
        .collect();
    format!(
        r#"L=$(mktemp /tmp/repltool-swap.XXXXXXXX) || exit 1
(
D={d}; S={stage}; P="$D/{PREVIOUS_DIR}"; F="$D/{FAILED_DIR}"
{common}
[ -d "$S" ] || {{ echo "@repltool no copy in $S"; exit 3; }}
[ -e "$P" ] && {{ echo "@repltool $P exists already"; exit 3; }}
owner=$(stat -c %u:%g "$D") || exit 3
{stop} || {{ echo "@repltool stopping the server failed"; exit 4; }}
down || {{ echo "@repltool the server still listens on port {port} after the stop"; exit 4; }}
mkdir "$P" || exit 5
for f in $(entries "$D"); do mv -- "$D/$f" "$P/" || {{ echo "@repltool moving $f aside failed"; back; {start}; exit 5; }}; done
for f in $(entries "$S"); do mv -- "$S/$f" "$D/" || {{ echo "@repltool moving the copy's $f in failed"; back; {start}; exit 5; }}; done
rmdir "$S"; case "$S" in */.repltool-clone-*/data) rmdir "${{S%/data}}";; esac
cd "$D" && rm -f -- {drop}
for f in {keep}; do [ -e "$P/$f" ] && cp -p -- "$P/$f" "$D/$f"; done
for f in $(entries "$D"); do chown -R "$owner" -- "$D/$f"; done
echo "@repltool swapped"
if {start}; then echo "@repltool started"; exit 0; fi
echo "@repltool the server did not start on the copy"
{stop}
down || {{ echo "@repltool the server still listens on port {port}; the copy stays in $D, the previous datadir in $P"; exit 7; }}
back
if {start}; then echo "@repltool restored"; exit 6; fi
echo "@repltool the server did not start on its previous datadir either"; exit 7
) >"$L" 2>&1
rc=$?
cat "$L"; rm -f "$L"
exit $rc
"#,
        d = shell_quote(&t.datadir),
        stage = shell_quote(&t.stage()),
        common = common_functions(t.port),
        stop = t.stop,
        start = t.start,
        port = t.port,
        drop = drop.join(" "),
        keep = keep.join(" "),
    )
}

/// Shell functions of the swap scripts: `entries DIR` (every entry but repltool's own
/// directories), `down` (the server's port stops listening, 60 s at most), `back` (the copy
/// moved out, the previous datadir moved back).
fn common_functions(port: u16) -> String {
    format!(
        r#"entries() {{ ls -A "$1" | while IFS= read -r e; do case "$e" in {STAGE_DIR}|{PREVIOUS_DIR}|{FAILED_DIR}) ;; *) printf '%s\n' "$e";; esac; done; }}
down() {{ i=0; while [ "$({listening})" = LISTEN ]; do i=$((i + 1)); [ $i -lt 600 ] || return 1; sleep 0.1; done; }}
back() {{ rm -rf "$F"; mkdir "$F"; for e in $(entries "$D"); do mv -- "$D/$e" "$F/"; done; for e in $(entries "$P"); do mv -- "$P/$e" "$D/"; done; rmdir "$P" && rm -rf "$F"; }}"#,
        listening = crate::observe::listening_script(port),
    )
}

/// Swap a slave onto its prepared copy (see [`swap_script`]).
pub(crate) fn swap(ctx: &Ctx, t: &Target) -> Result<()> {
    ctx.progress.step(
        &t.host,
        &format!("stopping the server and swapping its datadir ({})", t.stop),
    );
    let script = swap_script(
        t,
        t.flavor.datadir_identity_files(),
        t.flavor.backup_foreign_files(),
    );
    let out = run_long(ctx, t, &script)?;
    let text = out.stdout_str();
    let marks: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("@repltool "))
        .collect();
    let tail: Vec<&str> = text.lines().rev().take(12).collect();
    let tail: String = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    match out.status {
        0 => {
            ctx.progress.record(&format!(
                "{}: datadir {} replaced by the copy (server stopped and started; the previous \
                 one kept in {}/{PREVIOUS_DIR} until replication runs)",
                t.host, t.datadir, t.datadir
            ));
            Ok(())
        }
        6 => bail!(
            "{}: the server did not start on the copy; its previous datadir was put back and it \
             runs on it again (nothing of its own is gone). Output:\n{tail}",
            t.host
        ),
        3 | 4 => {
            discard_stage(ctx, t);
            bail!(
                "{}: {} (the copy was removed; the server and its datadir are as they were)",
                t.host,
                marks.last().copied().unwrap_or("the swap could not start")
            )
        }
        _ => bail!(
            "{}: the swap failed: {}. Where things are: the slave's previous datadir in \
             {d}/{PREVIOUS_DIR} (if that directory exists), the copy in {d} or {d}/{STAGE_DIR}. \
             To go back by hand: stop the server, move {d}'s entries into {d}/{FAILED_DIR}, \
             move {d}/{PREVIOUS_DIR}'s entries into {d}, start it. Output:\n{tail}",
            t.host,
            marks.last().copied().unwrap_or("no message"),
            d = t.datadir
        ),
    }
}

/// Put a slave back on the datadir it had before the copy (replication did not start on the
/// copy): stop, copy out, previous in, start.
pub(crate) fn restore(ctx: &Ctx, t: &Target) -> Result<()> {
    let script = format!(
        r#"L=$(mktemp /tmp/repltool-restore.XXXXXXXX) || exit 1
(
D={d}; P="$D/{PREVIOUS_DIR}"; F="$D/{FAILED_DIR}"
{common}
[ -d "$P" ] || {{ echo "@repltool no previous datadir in $P"; exit 3; }}
{stop}
down || {{ echo "@repltool the server still listens on port {port}"; exit 4; }}
back
if {start}; then echo "@repltool restored"; exit 0; fi
echo "@repltool the server did not start on its previous datadir"; exit 7
) >"$L" 2>&1
rc=$?
cat "$L"; rm -f "$L"
exit $rc
"#,
        d = shell_quote(&t.datadir),
        common = common_functions(t.port),
        stop = t.stop,
        start = t.start,
        port = t.port,
    );
    let out = run_long(ctx, t, &script)?;
    if !out.ok() {
        bail!(
            "{}: putting the previous datadir back failed (exit {}): {}. The previous datadir \
             is in {}/{PREVIOUS_DIR} if that directory still exists",
            t.host,
            out.status,
            out.stdout_str().trim(),
            t.datadir
        );
    }
    ctx.progress.record(&format!(
        "{}: put back on its previous datadir (replication did not start on the copy)",
        t.host
    ));
    Ok(())
}

/// Replication runs on the copy: the previous datadir is no longer needed (an in-place clone
/// kept none).
pub(crate) fn discard_previous(ctx: &Ctx, t: &Target) -> Result<()> {
    if t.in_place {
        return Ok(());
    }
    sh(
        ctx,
        &t.host,
        &format!(
            "rm -rf {}",
            shell_quote(&format!("{}/{PREVIOUS_DIR}", t.datadir))
        ),
        true,
        Duration::from_secs(3600),
    )?;
    ctx.progress.record(&format!(
        "{}: removed its previous datadir ({}/{PREVIOUS_DIR})",
        t.host, t.datadir
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_staging_parent_is_where_the_copy_is_built() {
        let clone = stage_dir(PhysicalCopy::Clone, "/var/lib/mysql/");
        assert_eq!(clone, "/var/lib/.repltool-clone-mysql/data");
        assert_eq!(staging_parent(&clone), "/var/lib");
        let mb = stage_dir(PhysicalCopy::Mariabackup, "/var/lib/mysql");
        assert_eq!(staging_parent(&mb), "/var/lib/mysql");
        assert_eq!(
            staging_parent(&stage_dir(PhysicalCopy::Clone, "/data")),
            "/"
        );
    }

    #[test]
    fn stop_and_start_come_from_the_restart_word() {
        assert_eq!(
            stop_start("service mariadb restart"),
            Some((
                "service mariadb stop".into(),
                "service mariadb start".into()
            ))
        );
        assert_eq!(
            stop_start("systemctl restart mysql"),
            Some((
                "systemctl stop mysql".into(),
                "systemctl start mysql".into()
            ))
        );
        assert_eq!(
            stop_start("/lab/node2/ctl restart"),
            Some(("/lab/node2/ctl stop".into(), "/lab/node2/ctl start".into()))
        );
        assert_eq!(stop_start("/usr/local/bin/bounce-db"), None);
        assert_eq!(stop_start("restart restart"), None);
    }

    #[test]
    fn binlog_info_with_and_without_gtid() {
        assert_eq!(
            parse_binlog_info("mysql-bin.000003\t1044\t0-2419799443-3\n").unwrap(),
            Coordinates {
                file: "mysql-bin.000003".into(),
                pos: 1044,
                gtid: Some("0-2419799443-3".into())
            }
        );
        assert_eq!(
            parse_binlog_info("mysql-bin.000001\t328\n").unwrap().gtid,
            None
        );
        let e = parse_binlog_info("").unwrap_err().to_string();
        assert!(e.contains("binary log on"), "{e}");
        assert!(parse_binlog_info("mysql-bin.000001\tx\n").is_err());
    }

    #[test]
    fn lock_times_from_the_stage_marks() {
        let log = "[00] 2026-11-30 14:06:13 Starting BACKUP STAGE START\n\
                   @repltool-t 100.000000000 [00] 2026-11-30 14:06:13 Started BACKUP STAGE BLOCK_DDL\n\
                   [00] 2026-11-30 14:06:13 Started BACKUP STAGE BLOCK_DDL\n\
                   @repltool-t 101.500000000 [00] 2026-11-30 14:06:14 Starting BACKUP STAGE BLOCK_COMMIT\n\
                   @repltool-t 101.512000000 [00] 2026-11-30 14:06:14 Acquired locks for BACKUP STAGE BLOCK_COMMIT\n\
                   @repltool-t 101.530000000 [00] 2026-11-30 14:06:14 Starting BACKUP STAGE END\n\
                   @repltool-t 101.531000000 [00] 2026-11-30 14:06:14 All tables unlocked\n";
        let (c, d) = lock_times(log);
        assert_eq!(c.unwrap().as_millis(), 30);
        assert_eq!(d.unwrap().as_millis(), 1530);
        assert_eq!(lock_times("no marks"), (None, None));
    }

    #[test]
    fn innodb_directories_inside_the_datadir() {
        assert!(in_datadir(None, "/var/lib/mysql"));
        assert!(in_datadir(Some("./"), "/var/lib/mysql"));
        assert!(in_datadir(Some("/var/lib/mysql/"), "/var/lib/mysql"));
        assert!(!in_datadir(Some("/srv/innodb"), "/var/lib/mysql"));
    }

    #[test]
    fn the_swap_script_restores_on_a_failed_start_and_names_its_directories() {
        let t = Target {
            host: "db2".into(),
            address: "10.0.0.2".into(),
            port: 3306,
            datadir: "/var/lib/mysql".into(),
            stop: "service mariadb stop".into(),
            start: "service mariadb start".into(),
            flavor: crate::testing::maria(),
            stage_dir: stage_dir(PhysicalCopy::Mariabackup, "/var/lib/mysql/"),
            empty: false,
            in_place: false,
        };
        assert_eq!(t.stage(), "/var/lib/mysql/.repltool-seed");
        assert_eq!(
            stage_dir(PhysicalCopy::Clone, "/var/lib/mysql/"),
            "/var/lib/.repltool-clone-mysql/data"
        );
        let s = swap_script(&t, &["auto.cnf"], &["master.info", "relay-log.info"]);
        assert!(s.contains("D=/var/lib/mysql;"), "{s}");
        assert!(s.contains("service mariadb stop ||"), "{s}");
        assert!(
            s.contains("if service mariadb start; then echo \"@repltool started\""),
            "{s}"
        );
        assert!(
            s.contains("back\nif service mariadb start; then echo \"@repltool restored\"; exit 6"),
            "{s}"
        );
        assert!(s.contains("rm -f -- master.info relay-log.info"), "{s}");
        assert!(s.contains("for f in auto.cnf; do"), "{s}");
        // Its output goes to a file first: a repltool that dies does not kill it (SIGPIPE).
        assert!(s.contains(") >\"$L\" 2>&1"), "{s}");
    }
}
