//! Output: status table (comfy-table), JSON, progress (indicatif). stdout is data, stderr is
//! progress and diagnostics.

pub mod galera;
pub mod progress;
pub mod status;

/// Data for the user, on stdout (tables, JSON, plans, results): the only place besides `main`
/// that writes there.
#[allow(clippy::print_stdout)]
pub fn out(text: impl std::fmt::Display) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = write!(o, "{text}");
    let _ = o.flush();
}

/// [`out`] and a newline.
pub fn outln(text: impl std::fmt::Display) {
    out(format!("{text}\n"));
}

/// Diagnostics and progress for people, on stderr: the only place besides `main` and the
/// progress reporter that writes there.
#[allow(clippy::print_stderr)]
pub fn say(text: impl std::fmt::Display) {
    eprintln!("{text}");
}

/// A prompt on stderr, without a newline.
#[allow(clippy::print_stderr)]
pub fn ask(text: impl std::fmt::Display) {
    use std::io::Write;
    eprint!("{text}");
    let _ = std::io::stderr().flush();
}

pub use progress::Progress;

use std::collections::HashMap;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use crate::observe::{Facts, IoThread};
use crate::topology::Topology;

/// The table init prints when it is done: one row per host as the servers now report it.
pub fn summary_table(topo: &Topology, facts: &HashMap<String, Facts>) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(vec![
        "host",
        "role",
        "master",
        "server_id",
        "read_only",
        "IO",
        "SQL",
        "lag",
        "binlog",
    ]);
    for h in &topo.hosts {
        let f = facts.get(&h.name);
        let sql = f.and_then(|f| f.sql.as_ref());
        let rep = sql.and_then(|s| s.replica.as_ref());
        let io = |r: &crate::observe::ReplicaStatus| match r.io_running {
            Some(IoThread::Yes) => "Yes",
            Some(IoThread::Connecting) => "Connecting",
            _ => "No",
        };
        t.add_row(vec![
            h.name.clone(),
            status::role(topo, h).to_string(),
            h.master.clone().unwrap_or_else(|| "-".into()),
            sql.map(|s| s.server_id.to_string())
                .unwrap_or_else(|| "?".into()),
            sql.map(|s| if s.read_only { "ON" } else { "OFF" }.to_string())
                .unwrap_or_else(|| "?".into()),
            rep.map(|r| io(r).to_string()).unwrap_or_else(|| "-".into()),
            rep.map(|r| if r.sql_running { "Yes" } else { "No" }.to_string())
                .unwrap_or_else(|| "-".into()),
            rep.and_then(|r| r.seconds_behind_master)
                .map(|l| format!("{l}s"))
                .unwrap_or_else(|| "-".into()),
            sql.and_then(|s| s.master_status.as_ref())
                .map(|m| format!("{}:{}", m.file, m.position))
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    t
}
