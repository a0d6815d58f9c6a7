//! `repltool verify`: every replica compared with its master, table by table in chunks of the
//! key, at one consistent point on both sides, without a write to the master.
//!
//! The point, per master and its direct replicas: each replica's SQL thread is stopped first;
//! then the master opens a consistent snapshot and reads the binary log coordinates of that
//! snapshot (MariaDB: `binlog_snapshot_file/position`, no lock; MySQL: FLUSH TABLES WITH READ
//! LOCK for the instant of START TRANSACTION + SHOW BINARY LOG STATUS). Since every replica
//! stopped before that, none is past it: each is started UNTIL exactly those coordinates,
//! opens its own snapshot once its SQL thread stopped there, and replicates again at once. The
//! checksums are then computed on the open snapshots while everything runs: the chunk
//! boundaries come from the master, each chunk is checksummed on the master and on every
//! replica at the same time, and the chunk size follows a time target on the master (its load
//! bound: one checksum query at a time, each about `--chunk-time` long). Differing chunks are
//! split again on the same snapshots until the differing rows are found.
//!
//! Exit codes: 0 every replica matches, 1 a difference, 2 could not compare.

pub mod catalog;
pub mod report;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::flavor::{ChunkTable, Flavor, KeyValue};
use crate::observe::column;
use crate::report::Progress;
use crate::topology::Topology;
use crate::transport::sql::SqlConn;
use crate::transport::Sessions;

use catalog::Table;
pub use report::{Difference, Range, Report};

/// Options of one run.
pub struct VerifyOptions {
    pub json: bool,
    /// The time one checksum query on a master should take.
    pub chunk_time: Duration,
    /// Bound on every wait (logins, a replica reaching the snapshot point).
    pub timeout: Duration,
}

/// Rows in the first chunk of a table, before the time target adjusts it.
const FIRST_CHUNK: u64 = 1000;
const MAX_CHUNK: u64 = 2_000_000;
/// A differing chunk is split into this many parts, down to single rows.
const SPLIT: u64 = 16;
/// At most this many differing ranges are kept per table and replica (the rest are counted).
const MAX_RANGES: usize = 100;

/// Run `verify` on the file's cluster; the exit code.
pub fn run(path: &Path, topo: &Topology, opts: &VerifyOptions) -> Result<i32> {
    let progress = Progress::new(false);
    let started = Instant::now();
    let (sessions, failed) = crate::transport::connect_all(topo, Some(opts.timeout));
    if !failed.is_empty() {
        progress.finish();
        let errors: Vec<String> = failed.iter().map(|(_, e)| format!("{e:#}")).collect();
        bail!("{}\nnothing was compared.", errors.join("\n"));
    }
    // verify stops and starts replication threads: never at the same time as another run.
    let names: Vec<String> = topo.hosts.iter().map(|h| h.name.clone()).collect();
    let _lock =
        crate::lock::ClusterLock::acquire(topo, Some(path), &sessions, &names, opts.timeout)
            .map_err(|e| anyhow!("{e:#}"))
            .inspect_err(|_| progress.finish())?;
    // Each replica with its own master; a master-master pair is compared once.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    for (i, h) in topo.hosts.iter().enumerate() {
        let Some(m) = &h.master else { continue };
        let mi = topo.hosts.iter().position(|x| &x.name == m).unwrap_or(0);
        if h.peer.as_deref() == Some(m.as_str()) && mi > i {
            continue;
        }
        match groups.iter_mut().find(|(gm, _)| gm == m) {
            Some((_, rs)) => rs.push(h.name.clone()),
            None => groups.push((m.clone(), vec![h.name.clone()])),
        }
    }
    let mut report = Report::new(&topo.name);
    if groups.is_empty() {
        progress.finish();
        report.note("no host replicates from another: nothing to compare");
    }
    let ctx = Run {
        topo,
        sessions: &sessions,
        progress: &progress,
        opts,
    };
    let results = crate::par::each(&groups, |(m, rs)| Ok(ctx.group(m, rs)));
    progress.finish();
    for r in results {
        match r {
            Ok(g) => report.merge(g),
            Err(e) => report.error("", "", &format!("{e:#}")),
        }
    }
    report.elapsed = started.elapsed();
    if opts.json {
        crate::report::outln(serde_json::to_string_pretty(&report.json())?);
    } else {
        crate::report::out(report.text());
    }
    Ok(report.exit_code())
}

struct Run<'a> {
    topo: &'a Topology,
    sessions: &'a Sessions,
    progress: &'a Progress,
    opts: &'a VerifyOptions,
}

/// A replica paused at the master's snapshot point, with its own snapshot open.
struct Replica {
    name: String,
    conn: Box<dyn SqlConn>,
    flavor: Flavor,
}

impl Run<'_> {
    fn sql(&self, name: &str) -> Result<Box<dyn SqlConn>> {
        let host = self
            .topo
            .host(name)
            .ok_or_else(|| anyhow!("{name}: not in the topology"))?;
        let m = self
            .sessions
            .get(name)
            .ok_or_else(|| anyhow!("{name}: no session open"))?;
        let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
        s.sql_connect(
            host,
            self.opts.timeout.min(Duration::from_secs(10)),
            self.opts.timeout.saturating_add(Duration::from_secs(60)),
        )
        .with_context(|| format!("{name}: SQL login"))
    }

    /// Compare one master with its direct replicas.
    fn group(&self, master: &str, replicas: &[String]) -> Report {
        let mut rep = Report::new(&self.topo.name);
        match self.group_inner(master, replicas, &mut rep) {
            Ok(()) => {}
            Err(e) => {
                for r in replicas {
                    if !rep.compared.iter().any(|c| &c.replica == r) {
                        rep.error(r, master, &format!("{e:#}"));
                    }
                }
            }
        }
        rep
    }

    fn group_inner(&self, master: &str, replicas: &[String], rep: &mut Report) -> Result<()> {
        let mut mconn = self.sql(master)?;
        let mflavor = mconn.flavor()?;
        mconn.run(&mflavor.verify_session_setup())?;
        // 1. Pause every replica's SQL thread (only those that run: a stopped one cannot
        //    reach the point and is left as it is).
        let mut paused: Vec<(String, Box<dyn SqlConn>, Flavor)> = Vec::new();
        for r in replicas {
            let res = (|| -> Result<(Box<dyn SqlConn>, Flavor)> {
                let mut c = self.sql(r)?;
                let f = c.flavor()?;
                let st = crate::execute::replica_status(c.as_mut(), &f)?
                    .ok_or_else(|| anyhow!("{r}: replicates from nobody"))?;
                if !st.sql_running {
                    bail!(
                        "{r}: its SQL thread is not running{}: it cannot reach the master's \
                         snapshot point (start replication first)",
                        if st.last_sql_error.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", st.last_sql_error)
                        }
                    );
                }
                c.exec(&f.stop_sql_thread())?;
                Ok((c, f))
            })();
            match res {
                Ok((c, f)) => paused.push((r.clone(), c, f)),
                Err(e) => rep.error(r, master, &format!("{e:#}")),
            }
        }
        if paused.is_empty() {
            return Ok(());
        }
        // 2. The master's snapshot and its coordinates. Whatever happens, the replicas
        //    replicate again.
        self.progress
            .step(master, "opening a consistent snapshot on the master");
        let point = (|| -> Result<(String, u64)> {
            let lock = mflavor.snapshot_needs_lock();
            if lock {
                mconn.run(&[
                    mflavor.lock_wait_timeout(self.opts.timeout.as_secs().max(1)),
                    mflavor.flush_tables_with_read_lock(),
                ])?;
            }
            let r = (|| -> Result<(String, u64)> {
                mconn.exec(&mflavor.consistent_snapshot())?;
                match mflavor.snapshot_coordinates_query() {
                    Some(q) => {
                        let rows = mconn.query(&q)?;
                        let get = |n: &str| -> Option<String> {
                            rows.iter().find_map(|r| {
                                let name = r.first()?.1.as_deref()?;
                                (name.eq_ignore_ascii_case(n)).then(|| r.get(1)?.1.clone())?
                            })
                        };
                        let file = get("binlog_snapshot_file").unwrap_or_default();
                        let pos = get("binlog_snapshot_position").unwrap_or_default();
                        if file.is_empty() {
                            bail!("{master}: no binlog_snapshot_file: is the binary log on?");
                        }
                        let pos = pos.parse::<u64>().map_err(|_| {
                            anyhow!("{master}: binlog_snapshot_position is {pos:?}")
                        })?;
                        Ok((file, pos))
                    }
                    None => {
                        let ms = crate::execute::master_status(mconn.as_mut(), &mflavor)?;
                        Ok((ms.file, ms.position))
                    }
                }
            })();
            if lock {
                let unlock = mconn.exec(&mflavor.unlock_tables());
                let r = r?;
                unlock?;
                return Ok(r);
            }
            r
        })();
        let (file, pos) = match point {
            Ok(p) => p,
            Err(e) => {
                for (name, c, f) in paused.iter_mut() {
                    if let Err(e2) = c.exec(&f.start_sql_thread()) {
                        rep.error(name, master, &format!("restarting its SQL thread: {e2:#}"));
                    }
                }
                return Err(e);
            }
        };
        // 3. Each replica up to exactly there, its snapshot, and replicating again.
        let deadline = Instant::now() + self.opts.timeout;
        let mut ready: Vec<Replica> = Vec::new();
        for (name, mut conn, f) in paused {
            self.progress
                .step(&name, &format!("stopping at {file}:{pos} for its snapshot"));
            // The snapshot in a session of its own: START REPLICA commits the transaction of
            // the session that runs it (MySQL), which would end the snapshot at once.
            let mut snap: Option<Box<dyn SqlConn>> = None;
            let r = (|| -> Result<()> {
                let mut sc = self.sql(&name)?;
                sc.run(&f.verify_session_setup())?;
                let st = crate::execute::replica_status(conn.as_mut(), &f)?
                    .ok_or_else(|| anyhow!("{name}: replicates from nobody"))?;
                let there = |s: &crate::observe::ReplicaStatus| {
                    s.relay_master_log_file == file && s.exec_master_log_pos == pos
                };
                if !there(&st) {
                    conn.exec(&f.start_sql_thread_until(&file, pos))?;
                    loop {
                        let st = crate::execute::replica_status(conn.as_mut(), &f)?
                            .ok_or_else(|| anyhow!("{name}: replicates from nobody"))?;
                        if !st.sql_running {
                            if there(&st) {
                                break;
                            }
                            bail!(
                                "{name}: its SQL thread stopped at {}:{}, not at the master's \
                                 snapshot point {file}:{pos}{}",
                                st.relay_master_log_file,
                                st.exec_master_log_pos,
                                if st.last_sql_error.is_empty() {
                                    String::new()
                                } else {
                                    format!(": {}", st.last_sql_error)
                                }
                            );
                        }
                        if Instant::now() >= deadline {
                            bail!(
                                "{name}: did not reach the master's snapshot point {file}:{pos} \
                                 within {}s (it is at {}:{}; behind?)",
                                self.opts.timeout.as_secs(),
                                st.relay_master_log_file,
                                st.exec_master_log_pos
                            );
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                sc.exec(&f.consistent_snapshot())?;
                snap = Some(sc);
                Ok(())
            })();
            // Replicating again, whatever happened.
            let restart = conn.exec(&f.start_sql_thread());
            match (r, restart) {
                (Ok(()), Ok(())) => ready.push(Replica {
                    name,
                    conn: snap.ok_or_else(|| anyhow!("internal error: no snapshot session"))?,
                    flavor: f,
                }),
                (Err(e), _) => rep.error(&name, master, &format!("{e:#}")),
                (Ok(()), Err(e)) => rep.error(
                    &name,
                    master,
                    &format!("restarting its SQL thread failed: {e:#}"),
                ),
            }
        }
        if ready.is_empty() {
            let _ = mconn.exec(&mflavor.end_snapshot());
            return Ok(());
        }
        // 4. The catalog, from the master's snapshot session.
        let tables = catalog::tables(
            &mconn.query(&mflavor.verify_tables_query())?,
            &mconn.query(&mflavor.verify_columns_query())?,
            &mconn.query(&mflavor.verify_keys_query())?,
        )?;
        let mut shapes: HashMap<String, catalog::Shapes> = HashMap::new();
        let mut extra: Vec<(String, Vec<String>)> = Vec::new();
        for r in ready.iter_mut() {
            let s = catalog::shapes(&r.conn.query(&r.flavor.verify_columns_query())?)?;
            let names: Vec<String> = r
                .conn
                .query(&r.flavor.verify_tables_query())?
                .iter()
                .filter_map(|row| {
                    let sc = column(row, "TABLE_SCHEMA").ok()??;
                    let t = column(row, "TABLE_NAME").ok()??;
                    (!tables
                        .iter()
                        .any(|x| x.chunk.schema == sc && x.chunk.name == t))
                    .then(|| format!("{sc}.{t}"))
                })
                .collect();
            extra.push((r.name.clone(), names));
            shapes.insert(r.name.clone(), s);
        }
        for (r, names) in extra {
            for t in names {
                rep.difference(Difference {
                    replica: r.clone(),
                    master: master.to_string(),
                    table: t,
                    reason: Some(format!("the table exists on {r} only")),
                    ranges: Vec::new(),
                    more: 0,
                });
            }
        }
        let total: u64 = tables.iter().map(|t| t.rows_estimate).sum();
        let names: Vec<&str> = ready.iter().map(|r| r.name.as_str()).collect();
        let mut bar = self.progress.rows(
            master,
            &format!("comparing with {}", names.join(", ")),
            Some(total),
        );
        let mut rows_total = 0u64;
        let mut chunks_total = 0u64;
        let mut tables_done = 0usize;
        for t in &tables {
            let cross: Vec<bool> = ready
                .iter()
                .map(|r| r.flavor.kind != mflavor.kind)
                .collect();
            // Per replica: can this table be compared there?
            let mut active: Vec<bool> = Vec::new();
            for (i, r) in ready.iter().enumerate() {
                let why = catalog::not_comparable(t, cross[i]).or_else(|| {
                    let theirs =
                        shapes[&r.name].get(&(t.chunk.schema.clone(), t.chunk.name.clone()));
                    match theirs {
                        None => Some(format!("missing on {}", r.name)),
                        Some(s) if s != &t.shape => Some(format!(
                            "its columns differ on {}: {} there, {} on {master}",
                            r.name,
                            shape_text(s),
                            shape_text(&t.shape)
                        )),
                        Some(_) => None,
                    }
                });
                match why {
                    Some(w) if w.starts_with("missing on") || w.starts_with("its columns") => {
                        rep.difference(Difference {
                            replica: r.name.clone(),
                            master: master.to_string(),
                            table: t.full_name(),
                            reason: Some(w),
                            ranges: Vec::new(),
                            more: 0,
                        });
                        active.push(false);
                    }
                    Some(w) => {
                        rep.not_compared(&t.full_name(), Some(&r.name), &w);
                        active.push(false);
                    }
                    None => active.push(true),
                }
            }
            if !active.iter().any(|a| *a) {
                continue;
            }
            if t.chunk.key.is_empty() {
                rep.note(&format!(
                    "{}: no primary key or unique key on NOT NULL columns; compared whole",
                    t.full_name()
                ));
            }
            let stats = self.table(
                master,
                mconn.as_mut(),
                &mflavor,
                &mut ready,
                &active,
                t,
                &mut bar,
                rep,
            )?;
            rows_total += stats.0;
            chunks_total += stats.1;
            tables_done += 1;
        }
        bar.finish();
        let _ = mconn.exec(&mflavor.end_snapshot());
        for r in ready.iter_mut() {
            let _ = r.conn.exec(&r.flavor.end_snapshot());
            rep.compared(report::Compared {
                replica: r.name.clone(),
                master: master.to_string(),
                at: format!("{file}:{pos}"),
                tables: tables_done,
                rows: rows_total,
                chunks: chunks_total,
            });
        }
        Ok(())
    }

    /// Compare one table in chunks; returns (rows on the master, chunks).
    #[allow(clippy::too_many_arguments)]
    fn table(
        &self,
        master: &str,
        mconn: &mut dyn SqlConn,
        mflavor: &Flavor,
        ready: &mut [Replica],
        active: &[bool],
        t: &Table,
        bar: &mut crate::report::progress::ByteProgress,
        rep: &mut Report,
    ) -> Result<(u64, u64)> {
        let ct = &t.chunk;
        let mut size = FIRST_CHUNK;
        let mut lower: Option<Vec<KeyValue>> = None;
        let mut rows = 0u64;
        let mut chunks = 0u64;
        let mut diffs: Vec<Vec<Range>> = vec![Vec::new(); ready.len()];
        let mut more = vec![0usize; ready.len()];
        loop {
            let upper = if ct.key.is_empty() {
                None
            } else {
                let q = mflavor.chunk_boundary(ct, lower.as_deref(), size)?;
                read_key(mconn, &q, ct)?
            };
            let t0 = Instant::now();
            let sums = checksums(
                mconn,
                mflavor,
                ready,
                active,
                ct,
                lower.as_deref(),
                upper.as_deref(),
            )?;
            let took = t0.elapsed();
            chunks += 1;
            rows += sums.0 .0;
            bar.add(sums.0 .0);
            for (i, s) in sums.1.iter().enumerate() {
                if let Some(s) = s {
                    if *s != sums.0 {
                        let found = self.narrow(
                            mconn,
                            mflavor,
                            &mut ready[i],
                            ct,
                            lower.as_deref(),
                            upper.as_deref(),
                            sums.0.clone(),
                            s.clone(),
                            0,
                        )?;
                        for r in found {
                            if diffs[i].len() < MAX_RANGES {
                                diffs[i].push(r);
                            } else {
                                more[i] += 1;
                            }
                        }
                    }
                }
            }
            // The next chunk's size follows the time target on the master.
            let secs = took.as_secs_f64().max(0.001);
            let target = self.opts.chunk_time.as_secs_f64();
            let factor = (target / secs).clamp(0.5, 2.0);
            size = ((size as f64 * factor) as u64).clamp(100, MAX_CHUNK);
            match upper {
                Some(u) => lower = Some(u),
                None => break,
            }
        }
        for (i, r) in ready.iter().enumerate() {
            if !diffs[i].is_empty() || more[i] > 0 {
                rep.difference(Difference {
                    replica: r.name.clone(),
                    master: master.to_string(),
                    table: t.full_name(),
                    reason: None,
                    ranges: std::mem::take(&mut diffs[i]),
                    more: more[i],
                });
            }
        }
        Ok((rows, chunks))
    }

    /// A chunk whose checksums differ: split it along the master's keys until the differing
    /// parts are single rows (or hold rows on the replica only), on the same snapshots.
    #[allow(clippy::too_many_arguments)]
    fn narrow(
        &self,
        mconn: &mut dyn SqlConn,
        mflavor: &Flavor,
        r: &mut Replica,
        ct: &ChunkTable,
        lower: Option<&[KeyValue]>,
        upper: Option<&[KeyValue]>,
        msum: (u64, String),
        rsum: (u64, String),
        depth: u32,
    ) -> Result<Vec<Range>> {
        if ct.key.is_empty() || msum.0 == 0 || depth >= 8 || (msum.0 == 1 && rsum.0 <= 1) {
            return Ok(vec![span(
                mconn, mflavor, r, ct, lower, upper, msum.0, rsum.0,
            )?]);
        }
        if msum.0 == 1 {
            // One row on the master, more on the replica: split at the master's row, so the
            // rows only the replica has are shown apart from it.
            let k = read_key(mconn, &mflavor.chunk_boundary(ct, lower, 1)?, ct)?;
            let Some(k) = k.filter(|k| Some(k.as_slice()) != upper) else {
                return Ok(vec![span(
                    mconn, mflavor, r, ct, lower, upper, msum.0, rsum.0,
                )?]);
            };
            let mut out = Vec::new();
            for (lo, hi) in [(lower, Some(k.as_slice())), (Some(k.as_slice()), upper)] {
                let m = sum(mconn, &mflavor.chunk_checksum(ct, lo, hi)?)?;
                let s = sum(r.conn.as_mut(), &r.flavor.chunk_checksum(ct, lo, hi)?)?;
                if m != s {
                    out.extend(self.narrow(mconn, mflavor, r, ct, lo, hi, m, s, depth + 1)?);
                }
            }
            return Ok(out);
        }
        let step = msum.0.div_ceil(SPLIT).max(1);
        let mut out = Vec::new();
        let mut lo: Option<Vec<KeyValue>> = lower.map(|l| l.to_vec());
        let mut covered = 0u64;
        loop {
            // Parts of `step` of the master's rows; the last one up to the chunk's own end
            // (where rows only the replica has are found too).
            let mut hi = None;
            let mut last = covered + step >= msum.0;
            if !last {
                hi = read_key(mconn, &mflavor.chunk_boundary(ct, lo.as_deref(), step)?, ct)?;
                last = hi.is_none();
            }
            if last {
                hi = upper.map(|u| u.to_vec());
            }
            covered += step;
            let m = sum(
                mconn,
                &mflavor.chunk_checksum(ct, lo.as_deref(), hi.as_deref())?,
            )?;
            let s = sum(
                r.conn.as_mut(),
                &r.flavor.chunk_checksum(ct, lo.as_deref(), hi.as_deref())?,
            )?;
            if m != s {
                out.extend(self.narrow(
                    mconn,
                    mflavor,
                    r,
                    ct,
                    lo.as_deref(),
                    hi.as_deref(),
                    m,
                    s,
                    depth + 1,
                )?);
            }
            if last {
                break;
            }
            lo = hi;
        }
        Ok(out)
    }
}

fn shape_text(s: &[(String, String)]) -> String {
    s.iter()
        .map(|(c, t)| format!("{c} {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Is key `a` past key `b`? For showing ranges only: numbers as numbers, bytes and text by
/// their bytes (the server's collation may order text differently; chunks never depend on
/// this).
pub fn beyond(a: &[KeyValue], b: &[KeyValue]) -> bool {
    for (x, y) in a.iter().zip(b) {
        let o = match (x, y) {
            (KeyValue::Text(p), KeyValue::Text(q)) => match (p.parse::<f64>(), q.parse::<f64>()) {
                (Ok(m), Ok(n)) => m.partial_cmp(&n).unwrap_or(std::cmp::Ordering::Equal),
                _ => p.cmp(q),
            },
            (KeyValue::Hex(p), KeyValue::Hex(q)) => {
                p.to_ascii_lowercase().cmp(&q.to_ascii_lowercase())
            }
            (p, q) => p.shown().cmp(&q.shown()),
        };
        if o != std::cmp::Ordering::Equal {
            return o == std::cmp::Ordering::Greater;
        }
    }
    false
}

/// The key of the one row a boundary query returns (None: no row).
fn read_key(
    conn: &mut dyn SqlConn,
    q: &crate::flavor::Sql,
    ct: &ChunkTable,
) -> Result<Option<Vec<KeyValue>>> {
    let rows = conn.query(q)?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    if row.len() != ct.key.len() {
        bail!(
            "{}.{}: a key of {} columns came back with {}",
            ct.schema,
            ct.name,
            ct.key.len(),
            row.len()
        );
    }
    Ok(Some(
        row.into_iter()
            .zip(&ct.key)
            .map(|((_, v), k)| {
                let v = v.unwrap_or_default();
                if k.binary {
                    KeyValue::Hex(v)
                } else {
                    KeyValue::Text(v)
                }
            })
            .collect(),
    ))
}

/// (rows, checksum) of a chunk query.
fn sum(conn: &mut dyn SqlConn, q: &crate::flavor::Sql) -> Result<(u64, String)> {
    let rows = conn.query(q)?;
    let row = rows
        .first()
        .ok_or_else(|| anyhow!("a checksum query returned no row"))?;
    let cnt = column(row, "cnt")?
        .unwrap_or("0")
        .parse::<u64>()
        .map_err(|_| anyhow!("COUNT(*) is not a number: {row:?}"))?;
    let crc = column(row, "crc")?.unwrap_or("0").to_string();
    Ok((cnt, crc))
}

type Sums = ((u64, String), Vec<Option<(u64, String)>>);

/// The chunk's checksum on the master and on every active replica, all at once.
fn checksums(
    mconn: &mut dyn SqlConn,
    mflavor: &Flavor,
    ready: &mut [Replica],
    active: &[bool],
    ct: &ChunkTable,
    lower: Option<&[KeyValue]>,
    upper: Option<&[KeyValue]>,
) -> Result<Sums> {
    let mq = mflavor.chunk_checksum(ct, lower, upper)?;
    std::thread::scope(|s| {
        let handles: Vec<_> = ready
            .iter_mut()
            .zip(active)
            .map(|(r, a)| {
                let a = *a;
                s.spawn(move || -> Result<Option<(u64, String)>> {
                    if !a {
                        return Ok(None);
                    }
                    let q = r.flavor.chunk_checksum(ct, lower, upper)?;
                    sum(r.conn.as_mut(), &q)
                        .with_context(|| {
                            format!("{}: checksum of {}.{}", r.name, ct.schema, ct.name)
                        })
                        .map(Some)
                })
            })
            .collect();
        let m = sum(mconn, &mq)
            .with_context(|| format!("checksum of {}.{} on the master", ct.schema, ct.name));
        let mut rs = Vec::new();
        for h in handles {
            rs.push(
                h.join().unwrap_or_else(|_| {
                    Err(anyhow!("internal error: a checksum worker panicked"))
                })?,
            );
        }
        Ok((m?, rs))
    })
}

/// The keys a differing range really spans, on either side: from the smallest to the largest
/// key of its rows on the master or the replica.
#[allow(clippy::too_many_arguments)]
fn span(
    mconn: &mut dyn SqlConn,
    mflavor: &Flavor,
    r: &mut Replica,
    ct: &ChunkTable,
    lower: Option<&[KeyValue]>,
    upper: Option<&[KeyValue]>,
    master_rows: u64,
    replica_rows: u64,
) -> Result<Range> {
    if ct.key.is_empty() {
        return Ok(Range {
            from: None,
            to: None,
            master_rows,
            replica_rows,
        });
    }
    let mut ends: Vec<(Vec<KeyValue>, bool)> = Vec::new();
    for first in [true, false] {
        if let Some(k) = read_key(mconn, &mflavor.chunk_edge(ct, lower, upper, first)?, ct)? {
            ends.push((k, first));
        }
        if let Some(k) = read_key(
            r.conn.as_mut(),
            &r.flavor.chunk_edge(ct, lower, upper, first)?,
            ct,
        )? {
            ends.push((k, first));
        }
    }
    let mut from: Option<Vec<KeyValue>> = None;
    let mut to: Option<Vec<KeyValue>> = None;
    for (k, first) in ends {
        if first {
            from = Some(match from {
                Some(f) if !beyond(&f, &k) => f,
                _ => k,
            });
        } else {
            to = Some(match to {
                Some(t) if beyond(&t, &k) => t,
                _ => k,
            });
        }
    }
    Ok(Range {
        from: from.map(|k| key_text(&k)),
        to: to.map(|k| key_text(&k)),
        master_rows,
        replica_rows,
    })
}

/// `[1000]`, `[7, 'abc']`, `[0x00ff]`.
pub fn key_text(k: &[KeyValue]) -> String {
    let parts: Vec<String> = k
        .iter()
        .map(|v| match v {
            KeyValue::Text(t) if !t.is_empty() && t.parse::<f64>().is_ok() => t.clone(),
            KeyValue::Text(t) => format!("'{}'", t.replace('\'', "\\'")),
            KeyValue::Hex(_) => v.shown(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}
