//! What verify found, as the contract's JSON (`name`, `consistent`, `differences`,
//! `not_compared`, plus `compared`, `errors`, `notes`) or a table for people, and the exit
//! code: 0 every replica matches, 1 a difference, 2 a replica could not be compared.

use std::time::Duration;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde_json::{json, Value};

/// A key range whose rows differ: `from`/`to` the smallest and largest key of its rows on
/// either side (None: the table has no key and was compared whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub from: Option<String>,
    pub to: Option<String>,
    pub master_rows: u64,
    pub replica_rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub replica: String,
    pub master: String,
    /// `schema.table`
    pub table: String,
    /// A difference of the table itself (missing, other columns), not of rows.
    pub reason: Option<String>,
    pub ranges: Vec<Range>,
    /// Differing ranges beyond those listed.
    pub more: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compared {
    pub replica: String,
    pub master: String,
    /// The master's binary log coordinates both sides were compared at.
    pub at: String,
    pub tables: usize,
    pub rows: u64,
    pub chunks: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub name: String,
    pub compared: Vec<Compared>,
    pub differences: Vec<Difference>,
    /// (table, replica or None for every replica, reason)
    pub not_compared: Vec<(String, Option<String>, String)>,
    /// (replica, master, error): replicas that could not be compared.
    pub errors: Vec<(String, String, String)>,
    pub notes: Vec<String>,
    pub elapsed: Duration,
}

impl Report {
    pub fn new(name: &str) -> Report {
        Report {
            name: name.to_string(),
            ..Report::default()
        }
    }

    pub fn merge(&mut self, o: Report) {
        self.compared.extend(o.compared);
        self.differences.extend(o.differences);
        for n in o.not_compared {
            if !self.not_compared.contains(&n) {
                self.not_compared.push(n);
            }
        }
        self.errors.extend(o.errors);
        for n in o.notes {
            self.note(&n);
        }
    }

    pub fn note(&mut self, n: &str) {
        if !self.notes.iter().any(|x| x == n) {
            self.notes.push(n.to_string());
        }
    }

    pub fn error(&mut self, replica: &str, master: &str, e: &str) {
        self.errors
            .push((replica.to_string(), master.to_string(), e.to_string()));
    }

    pub fn difference(&mut self, d: Difference) {
        self.differences.push(d);
    }

    pub fn not_compared(&mut self, table: &str, replica: Option<&str>, why: &str) {
        let e = (
            table.to_string(),
            replica.map(String::from),
            why.to_string(),
        );
        if !self.not_compared.contains(&e) {
            self.not_compared.push(e);
        }
    }

    pub fn compared(&mut self, c: Compared) {
        self.compared.push(c);
    }

    pub fn consistent(&self) -> bool {
        self.differences.is_empty() && self.errors.is_empty()
    }

    pub fn exit_code(&self) -> i32 {
        if !self.differences.is_empty() {
            1
        } else if !self.errors.is_empty() {
            2
        } else {
            0
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "consistent": self.consistent(),
            "differences": self.differences.iter().map(|d| json!({
                "replica": d.replica,
                "master": d.master,
                "table": d.table,
                "reason": d.reason,
                "ranges": d.ranges.iter().map(|r| json!({
                    "from": r.from,
                    "to": r.to,
                    "master_rows": r.master_rows,
                    "replica_rows": r.replica_rows,
                })).collect::<Vec<_>>(),
                "more_ranges": d.more,
            })).collect::<Vec<_>>(),
            "not_compared": self.not_compared.iter().map(|(t, r, why)| json!({
                "table": t,
                "replica": r,
                "reason": why,
            })).collect::<Vec<_>>(),
            "compared": self.compared.iter().map(|c| json!({
                "replica": c.replica,
                "master": c.master,
                "at": c.at,
                "tables": c.tables,
                "rows": c.rows,
                "chunks": c.chunks,
            })).collect::<Vec<_>>(),
            "errors": self.errors.iter().map(|(r, m, e)| json!({
                "replica": r,
                "master": m,
                "error": e,
            })).collect::<Vec<_>>(),
            "notes": self.notes,
            "seconds": (self.elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
        })
    }

    /// The table for people: every differing range per replica, then what was not compared,
    /// then one line of verdict.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if !self.differences.is_empty() {
            let mut t = Table::new();
            t.load_preset(UTF8_FULL_CONDENSED);
            t.set_header(vec![
                "replica",
                "master",
                "table",
                "key range",
                "rows master/replica",
            ]);
            for d in &self.differences {
                if let Some(why) = &d.reason {
                    t.add_row(vec![
                        d.replica.clone(),
                        d.master.clone(),
                        d.table.clone(),
                        why.clone(),
                        "-".into(),
                    ]);
                }
                for r in &d.ranges {
                    let range = match (&r.from, &r.to) {
                        (Some(f), Some(to)) if f == to => f.clone(),
                        (Some(f), Some(to)) => format!("{f} .. {to}"),
                        (Some(f), None) => format!("{f} .."),
                        (None, Some(to)) => format!(".. {to}"),
                        (None, None) => "whole table".into(),
                    };
                    t.add_row(vec![
                        d.replica.clone(),
                        d.master.clone(),
                        d.table.clone(),
                        range,
                        format!("{}/{}", r.master_rows, r.replica_rows),
                    ]);
                }
                if d.more > 0 {
                    t.add_row(vec![
                        d.replica.clone(),
                        d.master.clone(),
                        d.table.clone(),
                        format!("... and {} more range(s)", d.more),
                        "-".into(),
                    ]);
                }
            }
            out.push_str(&t.to_string());
            out.push('\n');
        }
        for (table, r, why) in &self.not_compared {
            out.push_str(&format!(
                "not compared: {table}{}: {why}\n",
                r.as_ref().map(|r| format!(" on {r}")).unwrap_or_default()
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        for (r, m, e) in &self.errors {
            if r.is_empty() {
                out.push_str(&format!("could not compare: {e}\n"));
            } else {
                out.push_str(&format!("could not compare {r} with {m}: {e}\n"));
            }
        }
        for c in &self.compared {
            out.push_str(&format!(
                "{} against {} at {}: {} tables, {} rows in {} chunks\n",
                c.replica, c.master, c.at, c.tables, c.rows, c.chunks
            ));
        }
        let secs = self.elapsed.as_secs_f64();
        match self.exit_code() {
            0 => out.push_str(&format!(
                "consistent: {} replica(s) hold what their masters hold ({secs:.2}s)\n",
                self.compared.len()
            )),
            1 => {
                let mut rs: Vec<&str> = self
                    .differences
                    .iter()
                    .map(|d| d.replica.as_str())
                    .collect();
                rs.sort_unstable();
                rs.dedup();
                out.push_str(&format!(
                    "DIFFERENT: {} table(s) differ on {} ({secs:.2}s)\n",
                    self.differences.len(),
                    rs.join(", ")
                ));
            }
            _ => out.push_str(&format!(
                "not verified: {} replica(s) could not be compared ({secs:.2}s)\n",
                self.errors.len()
            )),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diff() -> Difference {
        Difference {
            replica: "db2".into(),
            master: "db1".into(),
            table: "app.orders".into(),
            reason: None,
            ranges: vec![Range {
                from: Some("[1000]".into()),
                to: Some("[1999]".into()),
                master_rows: 1000,
                replica_rows: 999,
            }],
            more: 0,
        }
    }

    #[test]
    fn the_json_keeps_the_contract_and_the_exit_code_follows() {
        let mut r = Report::new("shop");
        assert_eq!(r.exit_code(), 0);
        assert_eq!(r.json()["consistent"], true);
        r.not_compared("app.logs", None, "no primary or unique key");
        r.difference(diff());
        let v = r.json();
        assert_eq!(v["name"], "shop");
        assert_eq!(v["consistent"], false);
        assert_eq!(v["differences"][0]["replica"], "db2");
        assert_eq!(v["differences"][0]["master"], "db1");
        assert_eq!(v["differences"][0]["table"], "app.orders");
        assert_eq!(v["differences"][0]["ranges"][0]["from"], "[1000]");
        assert_eq!(v["differences"][0]["ranges"][0]["to"], "[1999]");
        assert_eq!(v["not_compared"][0]["table"], "app.logs");
        assert_eq!(v["not_compared"][0]["reason"], "no primary or unique key");
        assert_eq!(r.exit_code(), 1);
        let t = r.text();
        assert!(t.contains("[1000] .. [1999]"), "{t}");
        assert!(t.contains("DIFFERENT: 1 table(s) differ on db2"), "{t}");
        // Nothing differs, but a replica could not be compared: not a "match".
        let mut e = Report::new("shop");
        e.error("db3", "db1", "db3: its SQL thread is not running");
        assert_eq!(e.exit_code(), 2);
        assert!(!e.consistent());
        assert!(e.text().contains("could not compare db3 with db1"));
    }
}
