//! The `mysql97big` section: big data on MySQL 9.7 network-namespace hosts (issue 12 item 4,
//! issue 8 item 9). h1 holds `BIG_MB` MiB (default 256), h2 and h3 start empty:
//!
//! - logical seeding (`seed: logical`, mysqldump streamed by `repltool init` over SSH) of h2,
//!   against the raw `mysqldump | mysql` pipe between the same two hosts (no SSH);
//! - physical seeding (`seed: physical`, the clone plugin) of h3, and logical against physical;
//! - `repltool verify` against pt-table-checksum on the resulting 1+2 cluster, with the same
//!   differences planted on h2 behind replication's back (`sql_log_bin = 0`).
//!
//! Every step is bounded; a failure of repltool panics (the bench fails), a failure of
//! pt-table-checksum is the finding of its row.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::support::netns::{run_bounded, show, Flavor, NetnsHosts, NsHost, ROOT_ADDR};
use super::{ok, row, timed};

/// The limit of one repltool command or one SQL statement of the fill.
const LONG: Duration = Duration::from_secs(900);

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// SQL as the host's root over its socket, bounded by `limit` (the harness' `sql` allows 30 s;
/// a doubling INSERT of a big fill may need more).
fn sql_long(h: &NsHost, sql: &str, limit: Duration) -> String {
    let out = h.sh_with(
        &format!("{} --batch --skip-column-names", h.flavor.client()),
        Some(sql.as_bytes()),
        limit,
    );
    assert!(out.status.success(), "{}: {sql}: {}", h.name, show(&out));
    text(&out.stdout).trim_end().to_string()
}

/// Rows of about 1 KiB in big.t, doubled until `mb` MiB, and the two small tables the
/// differences are also planted in: the same shape as bench/bigdata.sh's on MariaDB (32 hex
/// digits repeated 31 times; RANDOM_BYTES, MD5() being gone in 9.7: an unknown function there,
/// read as a stored one, "No database selected").
fn fill(h: &NsHost, mb: u64) {
    sql_long(
        h,
        "CREATE DATABASE big; \
         CREATE TABLE big.t (id BIGINT AUTO_INCREMENT PRIMARY KEY, pad VARCHAR(1000)) ENGINE=InnoDB; \
         INSERT INTO big.t (pad) VALUES (REPEAT(HEX(RANDOM_BYTES(16)), 31))",
        LONG,
    );
    let rows = mb * 1024;
    loop {
        let n: u64 = sql_long(h, "SELECT COUNT(*) FROM big.t", LONG)
            .parse()
            .expect("a count");
        if n >= rows {
            break;
        }
        let t = Instant::now();
        sql_long(
            h,
            &format!(
                "INSERT INTO big.t (pad) SELECT REPEAT(HEX(RANDOM_BYTES(16)), 31) FROM big.t LIMIT {}",
                rows - n
            ),
            LONG,
        );
        if n >= 16_384 {
            eprintln!(
                "  fill: {} -> {} rows in {:.1}s",
                n,
                (2 * n).min(rows),
                t.elapsed().as_secs_f64()
            );
        }
    }
    sql_long(
        h,
        "CREATE TABLE big.lines (o INT NOT NULL, sku VARBINARY(8) NOT NULL, qty INT, PRIMARY KEY (o, sku)); \
         INSERT INTO big.lines SELECT id DIV 4, UNHEX(CONCAT('0', id MOD 4, 'FF')), id MOD 9 FROM big.t WHERE id <= 40000; \
         CREATE TABLE big.orders (id INT PRIMARY KEY, note VARCHAR(40)); \
         INSERT INTO big.orders SELECT id, 'n' FROM big.t WHERE id <= 40000",
        LONG,
    );
}

/// `nsenter` into host `h` as [`NsHost::sh_with`] does (its mounts, PIDs, network and, for a
/// root-based host, its chroot), for a shell pipeline outside the harness.
fn enter(h: &NsHost) -> String {
    format!(
        "/usr/bin/nsenter --target {} --mount --pid --net --root --wd -- /bin/sh -c",
        h.init_pid()
    )
}

/// The floor of logical seeding: mysqldump on h1's host (its root over the socket, the options
/// of repltool's own dump) piped into the mysql client on h2's host (the load kept out of h2's
/// binary log, as repltool's is). The two processes run in their hosts' namespaces and the pipe
/// between them is a plain pipe on this machine: no SSH, no network. h2 is emptied afterwards.
fn raw_pipe(from: &NsHost, to: &NsHost) -> f64 {
    let dump = "mysqldump --single-transaction --skip-lock-tables --routines --triggers --events \
                --hex-blob --default-character-set=utf8mb4 --set-gtid-purged=OFF --databases big";
    let load = "mysql --init-command='SET SESSION sql_log_bin = 0'";
    let script = format!("{} \"{dump}\" | {} \"{load}\"", enter(from), enter(to));
    let (t, out) = timed(|| {
        run_bounded(
            Command::new("/bin/bash")
                .args(["-o", "pipefail", "-c", &script])
                .current_dir("/")
                .env_clear()
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .env("HOME", "/root")
                .env("LANG", "C"),
            None,
            LONG,
        )
    });
    ok(&out, "the raw mysqldump | mysql pipe");
    let want = sql_long(from, "SELECT COUNT(*) FROM big.t", LONG);
    assert_eq!(
        sql_long(to, "SELECT COUNT(*) FROM big.t", LONG),
        want,
        "the raw pipe did not copy big.t"
    );
    sql_long(to, "SET SESSION sql_log_bin = 0; DROP DATABASE big", LONG);
    t
}

/// One `service mysql restart` of the host, timed.
fn restart_once(h: &NsHost) -> f64 {
    let (t, out) = timed(|| {
        h.sh_with(
            &format!("service {} restart", h.flavor.service()),
            None,
            Duration::from_secs(120),
        )
    });
    ok(&out, "service restart");
    t
}

/// The topology file with its first `k` hosts only, next to it (the password files are named
/// relative to it), with `replication.seed` set.
fn file_of(net: &NetnsHosts, k: usize, seed: &str) -> PathBuf {
    let mut text = net.topology_text();
    if let Some(cut) = text.find(&format!("\n  h{}:\n", k + 1)) {
        text.truncate(cut + 1);
    }
    assert!(text.contains("\nreplication:\n"), "{text}");
    let text = text.replace(
        "\nreplication:\n",
        &format!("\nreplication:\n  seed: {seed}\n"),
    );
    let f = net.dir.join(format!("first{k}-{seed}.yaml"));
    std::fs::write(&f, text).expect("topology file");
    f
}

/// `repltool ARGS -f FILE`, bounded by [`LONG`]; its wall time.
fn repltool(file: &Path, args: &[&str]) -> (f64, Output) {
    let (t, out) = timed(|| {
        run_bounded(
            Command::new(env!("CARGO_BIN_EXE_repltool"))
                .args(args)
                .arg("-f")
                .arg(file),
            None,
            LONG,
        )
    });
    eprintln!(
        "  repltool {} -> {:?} in {t:.2}s",
        args.join(" "),
        out.status.code()
    );
    (t, out)
}

/// `seeded ... (N bytes in S s, ...)` of init's change list: the copy's own time.
fn copy_secs(init_out: &str) -> f64 {
    init_out
        .split("bytes in ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no copy time in init's output:\n{init_out}"))
}

/// A row whose value could not be measured: the same columns, `-` for the time.
fn row_unmeasured(what: &str) {
    println!("| {what} | - | 1 | - | - |");
}

/// What pt-table-checksum said, on one line, for a row: its first error lines.
fn first_error(o: &Output) -> String {
    let all = format!("{}\n{}", text(&o.stderr), text(&o.stdout));
    let lines: Vec<&str> = all
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error") || l.contains("fail") || l.contains("died") || l.contains("cannot")
        })
        .take(2)
        .collect();
    let s = if lines.is_empty() {
        all.lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim()
            .to_string()
    } else {
        lines.join(" / ")
    };
    // Not a table separator inside the row.
    s.replace('|', "/")
}

pub fn rows(mb: u64) {
    let t_all = Instant::now();
    eprintln!("MySQL 9.7 big data: 3 hosts, {mb} MiB on h1");
    let net = NetnsHosts::start_with(&[Flavor::MySQL97; 3]);
    let (fill_s, ()) = timed(|| fill(net.h(1), mb));
    eprintln!("  filled {mb} MiB in {fill_s:.1}s");

    // The master's configuration converged first (its restart is nobody's seeding), so that
    // both seeding inits below do the same: configure a fresh slave, seed it, replicate.
    let (t, out) = repltool(&file_of(&net, 1, "logical"), &["init"]);
    ok(&out, "init of the master alone");
    eprintln!("  the master alone converged in {t:.2}s");

    eprintln!("  floor: the raw mysqldump | mysql pipe h1 -> h2...");
    let pipe = raw_pipe(net.h(1), net.h(2));
    eprintln!("  raw pipe: {pipe:.2}s");

    // The other floor of the MariaDB rows: one restart of the fresh slave by its init script
    // (init restarts it once to load its configuration).
    let restart = restart_once(net.h(2));
    eprintln!("  one `service mysql restart` of h2: {restart:.2}s");

    eprintln!("  logical seed of h2 (seed: logical)...");
    let (logical, out) = repltool(&file_of(&net, 2, "logical"), &["init"]);
    ok(&out, "init with seed: logical");
    let log_text = text(&out.stdout);
    assert!(
        log_text.contains("h2: seeded from h1"),
        "not a logical seed:\n{}",
        show(&out)
    );
    let copy = copy_secs(&log_text);
    eprintln!("{}{}", text(&out.stderr), log_text.trim_end());

    eprintln!(
        "  one `service mysql restart` of h3: {:.2}s",
        restart_once(net.h(3))
    );
    eprintln!("  physical seed of h3 (seed: physical, the clone plugin)...");
    let (physical, out) = repltool(&file_of(&net, 3, "physical"), &["init"]);
    ok(&out, "init with seed: physical");
    let phys_text = text(&out.stdout);
    assert!(
        phys_text.contains("h3: seeded physically from h1") && phys_text.contains("clone plugin"),
        "not a clone:\n{}",
        show(&out)
    );
    let clone_copy = copy_secs(&phys_text);
    let progress = text(&out.stderr);
    eprintln!("{progress}{}", phys_text.trim_end());
    // The size repltool read on the master (information_schema.TABLES), which `seed: auto`
    // compares with its 64 MiB threshold.
    let estimate = progress
        .split("physical copy for h3 (")
        .nth(1)
        .and_then(|r| r.split(" MiB)").next())
        .unwrap_or("?")
        .to_string();
    let size = "SELECT ROUND(SUM(DATA_LENGTH + INDEX_LENGTH) / 1048576) \
                FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'big'";
    eprintln!(
        "  repltool's size estimate of h1's data: {estimate} MiB; information_schema.TABLES now: \
         {} MiB (cached), {} MiB with information_schema_stats_expiry = 0; the tablespace files \
         (INNODB_TABLESPACES): {} MiB",
        net.h(1).sql(size),
        net.h(1).sql(&format!(
            "SET SESSION information_schema_stats_expiry = 0; {size}"
        )),
        net.h(1).sql(
            "SELECT ROUND(SUM(FILE_SIZE) / 1048576) FROM information_schema.INNODB_TABLESPACES \
             WHERE NAME LIKE 'big/%'"
        )
    );
    // Where the swap's time goes (stop, start on the copy): h3's own error log.
    eprintln!(
        "  h3's error log around the swap:\n{}",
        net.h(3).sh("tail -n 40 /var/log/mysql/error.log")
    );
    // Both slaves hold what the master holds.
    let finger = "SELECT COUNT(*), SUM(CRC32(pad)) FROM big.t";
    let want = sql_long(net.h(1), finger, LONG);
    for k in [2, 3] {
        assert_eq!(sql_long(net.h(k), finger, LONG), want, "h{k} differs");
    }

    row(
        &format!(
            "MySQL 9.7: seeding {mb} MiB logically (seed: logical), the dump's copy inside `init` \
             over SSH (floor: the raw mysqldump-into-mysql pipe between the same two hosts, no SSH)"
        ),
        copy,
        1,
        Some(pipe),
    );
    row(
        &format!(
            "MySQL 9.7: seeding {mb} MiB logically, whole `init` of a fresh slave \
             (its config, restart, copy, replication; floor: the raw pipe + one restart)"
        ),
        logical,
        1,
        Some(pipe + restart),
    );
    row(
        &format!(
            "MySQL 9.7: seeding {mb} MiB physically (seed: physical, clone plugin), whole `init` \
             of a fresh slave (the clone itself: {clone_copy:.2} s; repltool's size estimate: \
             {estimate} MiB)"
        ),
        physical,
        1,
        None,
    );
    row(
        &format!(
            "MySQL 9.7: seeding {mb} MiB, logical whole init against physical (target ratio >= 3)"
        ),
        logical,
        1,
        Some(physical),
    );

    verify_rows(&net, mb);
    eprintln!(
        "MySQL 9.7 big data: section took {:.0}s",
        t_all.elapsed().as_secs_f64()
    );
}

/// `repltool verify` against pt-table-checksum on the 1+2 cluster, with a changed row (big.t),
/// a deleted row (big.lines, composite key with a binary column) and an extra row
/// (big.orders) planted on h2 with `sql_log_bin = 0`.
fn verify_rows(net: &NetnsHosts, mb: u64) {
    let file = file_of(net, 3, "physical");
    let (_, out) = repltool(&file, &["verify"]);
    ok(&out, "verify of the clean cluster");
    // The changed row: the 54322nd of big.t, or its middle one on a smaller set.
    let offset = (mb * 1024 / 2).min(54_321);
    net.h(2).sql(&format!(
        "SET SESSION sql_log_bin = 0; SET GLOBAL super_read_only = OFF; \
         UPDATE big.t SET pad = 'tampered' WHERE id = (SELECT id FROM (SELECT id FROM big.t ORDER BY id LIMIT 1 OFFSET {offset}) x); \
         DELETE FROM big.lines WHERE o = 77 AND sku = UNHEX('02FF'); \
         INSERT INTO big.orders VALUES (9000000, 'extra'); \
         SET GLOBAL super_read_only = ON"
    ));
    // One row changed, one fewer in big.lines, one more in big.orders than on the master.
    let counts = "SELECT COUNT(*) FROM big.t WHERE pad = 'tampered'; \
                  SELECT COUNT(*) FROM big.lines; SELECT COUNT(*) FROM big.orders";
    let num = |s: &str| -> Vec<i64> { s.lines().map(|l| l.parse().expect("a count")).collect() };
    let (m, r) = (num(&net.h(1).sql(counts)), num(&net.h(2).sql(counts)));
    assert_eq!(
        r,
        [1, m[1] - 1, m[2] + 1],
        "the differences were not planted on h2 (the master: {m:?})"
    );
    let (ours_s, out) = repltool(&file, &["verify", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "verify did not exit 1:\n{}",
        show(&out)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("verify's output is not JSON ({e}):\n{}", show(&out)));
    let mut ours: Vec<String> = j["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| {
            format!(
                "{}:{}",
                d["replica"].as_str().unwrap_or("?"),
                d["table"].as_str().unwrap_or("?")
            )
        })
        .collect();
    ours.sort();
    ours.dedup();
    assert_eq!(
        ours,
        ["h2:big.lines", "h2:big.orders", "h2:big.t"],
        "verify did not find exactly the planted differences: {j:#}"
    );
    let ours = ours.join(" ");

    // pt-table-checksum from this machine (Debian's percona-toolkit) on the same cluster: an
    // account of its own for this machine's address, its password in a mode-600 option file
    // (F= of the DSNs), the replicas from a DSN table; it writes its checksums on the master
    // (database percona) and reads them back on the replicas.
    let pw = repltool::lab::template::random_password().expect("password");
    let cnf = net.dir.join("pt.cnf");
    repltool::lab::template::write_private(
        &cnf,
        format!("[client]\nuser=pt\npassword={pw}\n").as_bytes(),
    )
    .expect("pt.cnf");
    let me = ROOT_ADDR;
    net.h(1).sql(&format!(
        "CREATE USER 'pt'@'{me}' IDENTIFIED BY '{pw}'; GRANT ALL PRIVILEGES ON *.* TO 'pt'@'{me}'; \
         CREATE DATABASE percona; \
         CREATE TABLE percona.dsns (id INT PRIMARY KEY, parent_id INT, dsn VARCHAR(255)); \
         INSERT INTO percona.dsns VALUES (1, NULL, 'h={},P=3306,F={c}'), (2, NULL, 'h={},P=3306,F={c}')",
        net.h(2).addr,
        net.h(3).addr,
        c = cnf.display()
    ));
    for k in [2, 3] {
        net.h(k).wait_sql(
            "SELECT COUNT(*) FROM percona.dsns",
            "2",
            Duration::from_secs(60),
        );
    }
    let dsn = format!("h={},P=3306,F={}", net.h(1).addr, cnf.display());
    let pt = |extra: &[&str]| {
        timed(|| {
            run_bounded(
                Command::new("pt-table-checksum")
                    .arg(&dsn)
                    .args(["--databases", "big", "--recursion-method"])
                    .arg("dsn=D=percona,t=dsns")
                    .args(["--no-check-binlog-format", "--chunk-time", "0.5"])
                    .args(extra),
                None,
                LONG,
            )
        })
    };
    eprintln!("  pt-table-checksum on the same cluster...");
    let (pt_s, run) = pt(&[]);
    eprintln!("{}", show(&run));
    let ran = text(&run.stdout).contains("big.t");
    let theirs = if ran {
        let (_, check) = pt(&["--replicate-check-only"]);
        eprintln!("{}", show(&check));
        let mut t: Vec<String> = text(&check.stdout)
            .lines()
            .filter(|l| l.starts_with("big."))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        t.sort();
        t.dedup();
        Some(t.join(" "))
    } else {
        None
    };
    match theirs {
        Some(theirs) => {
            row(
                &format!(
                    "MySQL 9.7: `verify` of {mb} MiB, 1+2 over SSH, 3 planted differences found \
                     ({ours}) (floor: pt-table-checksum on the same cluster)"
                ),
                ours_s,
                1,
                Some(pt_s),
            );
            row(
                &format!("MySQL 9.7: pt-table-checksum on the same cluster ({theirs})"),
                pt_s,
                1,
                None,
            );
        }
        None => {
            let err = first_error(&run);
            eprintln!(
                "  pt-table-checksum cannot run against MySQL 9.7 (exit {:?}): {err}",
                run.status.code()
            );
            row(
                &format!(
                    "MySQL 9.7: `verify` of {mb} MiB, 1+2 over SSH, 3 planted differences found \
                     ({ours}) (pt-table-checksum could not run: next row)"
                ),
                ours_s,
                1,
                None,
            );
            let version = run_bounded(
                Command::new("pt-table-checksum").arg("--version"),
                None,
                Duration::from_secs(30),
            );
            row_unmeasured(&format!(
                "MySQL 9.7: {} on the same cluster: cannot run (exit {:?} after {pt_s:.1} s): {err}",
                text(&version.stdout).trim(),
                run.status.code()
            ));
        }
    }
}
