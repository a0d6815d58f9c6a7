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
/// progress reporter that writes there. What it says often quotes servers and remote
/// commands, so it goes through [`clean`].
#[allow(clippy::print_stderr)]
pub fn say(text: impl std::fmt::Display) {
    eprintln!("{}", clean(&text.to_string()));
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

/// Text from a server or a remote command (an error quoting row values, a host name a server
/// reports, a tool's stderr), made safe to print: control characters other than the newline,
/// and the bidirectional overrides, are shown escaped (`\u{1b}`), so such text cannot move the
/// cursor, recolour or clear the terminal, rewrite the line, or reorder what is shown. Every
/// place that renders errors, diagnoses and status cells goes through it.
pub fn clean(s: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A table cell of [`clean`] text.
pub(crate) fn cell<T: ToString>(v: T) -> comfy_table::Cell {
    comfy_table::Cell::new(clean(&v.to_string()))
}

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
        // Coordinates and versions come from the servers.
        let sql = f.and_then(|f| f.sql.as_ref());
        let rep = sql.and_then(|s| s.replica.as_ref());
        let io = |r: &crate::observe::ReplicaStatus| match r.io_running {
            Some(IoThread::Yes) => "Yes",
            Some(IoThread::Connecting) => "Connecting",
            _ => "No",
        };
        t.add_row(
            [
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
            ]
            .into_iter()
            .map(cell)
            .collect::<Vec<_>>(),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn server_text_cannot_drive_the_terminal() {
        assert_eq!(clean("plain text\nline two"), "plain text\nline two");
        assert_eq!(
            clean("Duplicate entry '\x1b[2J\x1b]0;pwned\x07' for key 'PRIMARY'\r"),
            "Duplicate entry '\\u{1b}[2J\\u{1b}]0;pwned\\u{7}' for key 'PRIMARY'\\r"
        );
        assert_eq!(
            clean("a\u{202e}b\u{9b}c\u{7f}"),
            "a\\u{202e}b\\u{9b}c\\u{7f}"
        );
    }
}
