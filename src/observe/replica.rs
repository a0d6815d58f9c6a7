//! Parsers for what servers answer: SHOW SLAVE/REPLICA STATUS (through a synonym map, so MySQL
//! 5.7, 8.0.22+, 8.4 and MariaDB all read the same), SHOW MASTER/BINARY LOG STATUS, and the
//! vertical (`\G`) text form used by the golden tests on captured output.

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// The IO thread: Yes / No / Connecting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum IoThread {
    Yes,
    #[default]
    No,
    Connecting,
}

/// One replication channel's status, flavor-independent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ReplicaStatus {
    pub master_host: String,
    pub master_port: u16,
    pub master_user: String,
    pub io_running: Option<IoThread>,
    pub sql_running: bool,
    pub io_state: String,
    pub sql_state: String,
    pub seconds_behind_master: Option<u64>,
    /// Read coordinates (IO thread): Master_Log_File / Read_Master_Log_Pos.
    pub master_log_file: String,
    pub read_master_log_pos: u64,
    /// Executed coordinates (SQL thread): Relay_Master_Log_File / Exec_Master_Log_Pos.
    pub relay_master_log_file: String,
    pub exec_master_log_pos: u64,
    pub last_io_errno: u32,
    pub last_io_error: String,
    pub last_sql_errno: u32,
    pub last_sql_error: String,
    pub master_server_id: u32,
    /// MySQL Master_UUID / Source_UUID: the master's server_uuid ("" on MariaDB).
    pub master_uuid: String,
    /// MariaDB: Using_Gtid (No / Slave_Pos / Current_Pos); MySQL: "Yes" when Auto_Position=1.
    pub using_gtid: String,
    /// MariaDB Gtid_IO_Pos; MySQL Retrieved_Gtid_Set.
    pub gtid_io_pos: String,
    /// MySQL Executed_Gtid_Set (empty on MariaDB).
    pub executed_gtid_set: String,
    pub sql_delay: u64,
}

/// SHOW MASTER STATUS / SHOW BINARY LOG STATUS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MasterStatus {
    pub file: String,
    pub position: u64,
    /// MySQL Executed_Gtid_Set, when present.
    pub executed_gtid_set: Option<String>,
}

/// Each field's column names across flavors and versions: MySQL 5.7 and MariaDB (both
/// statements) say Slave_*/Master_*, MySQL 8.0.22+ SHOW REPLICA STATUS says Replica_*/Source_*.
const SYNONYMS: &[(&str, &[&str])] = &[
    ("master_host", &["Master_Host", "Source_Host"]),
    ("master_port", &["Master_Port", "Source_Port"]),
    ("master_user", &["Master_User", "Source_User"]),
    ("io_running", &["Slave_IO_Running", "Replica_IO_Running"]),
    ("sql_running", &["Slave_SQL_Running", "Replica_SQL_Running"]),
    ("io_state", &["Slave_IO_State", "Replica_IO_State"]),
    (
        "sql_state",
        &["Slave_SQL_Running_State", "Replica_SQL_Running_State"],
    ),
    (
        "seconds_behind_master",
        &["Seconds_Behind_Master", "Seconds_Behind_Source"],
    ),
    ("master_log_file", &["Master_Log_File", "Source_Log_File"]),
    (
        "read_master_log_pos",
        &["Read_Master_Log_Pos", "Read_Source_Log_Pos"],
    ),
    (
        "relay_master_log_file",
        &["Relay_Master_Log_File", "Relay_Source_Log_File"],
    ),
    (
        "exec_master_log_pos",
        &["Exec_Master_Log_Pos", "Exec_Source_Log_Pos"],
    ),
    ("last_io_errno", &["Last_IO_Errno"]),
    ("last_io_error", &["Last_IO_Error"]),
    ("last_sql_errno", &["Last_SQL_Errno"]),
    ("last_sql_error", &["Last_SQL_Error"]),
    (
        "master_server_id",
        &["Master_Server_Id", "Source_Server_Id"],
    ),
    ("master_uuid", &["Master_UUID", "Source_UUID"]),
    ("using_gtid", &["Using_Gtid"]),
    ("auto_position", &["Auto_Position"]),
    ("gtid_io_pos", &["Gtid_IO_Pos", "Retrieved_Gtid_Set"]),
    ("executed_gtid_set", &["Executed_Gtid_Set"]),
    ("sql_delay", &["SQL_Delay"]),
];

/// One row, looked up by field through [`SYNONYMS`] (column names compared without case).
struct Row<'a> {
    cols: &'a [(String, Option<String>)],
}

impl<'a> Row<'a> {
    fn names(field: &str) -> &'static [&'static str] {
        SYNONYMS
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, names)| *names)
            .unwrap_or(&[])
    }

    /// `None`: no such column. `Some(None)`: the column is NULL.
    fn get(&self, field: &str) -> Option<Option<&'a str>> {
        let names = Self::names(field);
        self.cols
            .iter()
            .find(|(c, _)| names.iter().any(|n| n.eq_ignore_ascii_case(c.trim())))
            .map(|(_, v)| v.as_deref())
    }

    /// Text of a column; absent or NULL read as "".
    fn text(&self, field: &str) -> String {
        self.get(field).flatten().unwrap_or("").to_string()
    }

    /// A number; absent, NULL or empty read as 0, anything else that is not a number is an
    /// error naming the column (a server answering garbage must not look like position 0).
    fn number<T: std::str::FromStr + Default>(&self, field: &str) -> Result<T> {
        match self.get(field).flatten().map(str::trim) {
            None | Some("") => Ok(T::default()),
            Some(v) => v
                .parse()
                .ok()
                .with_context(|| format!("{}: not a number: {v:?}", Self::names(field)[0])),
        }
    }

    /// A number that may be NULL (Seconds_Behind_Master while a thread is stopped).
    fn optional_number(&self, field: &str) -> Result<Option<u64>> {
        match self.get(field).flatten().map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) if v.eq_ignore_ascii_case("NULL") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .ok()
                .with_context(|| format!("{}: not a number: {v:?}", Self::names(field)[0])),
        }
    }
}

/// MySQL breaks long GTID sets over lines ("uuid:1-5,\nuuid:1-3"); no GTID contains
/// whitespace, so all of it goes.
fn gtid_text(v: &str) -> String {
    v.chars().filter(|c| !c.is_whitespace()).collect()
}

fn io_thread(v: &str) -> Option<IoThread> {
    match v.trim().to_ascii_lowercase().as_str() {
        "yes" => Some(IoThread::Yes),
        "no" => Some(IoThread::No),
        // MariaDB says "Preparing" while the thread sets itself up, before it dials.
        "connecting" | "preparing" => Some(IoThread::Connecting),
        _ => None,
    }
}

/// Read one row of SHOW SLAVE STATUS / SHOW REPLICA STATUS given as (column, value) pairs,
/// through the synonym map (Slave_*/Replica_*, Master_*/Source_*). A NULL is `None`.
pub fn replica_status_from_columns(cols: &[(String, Option<String>)]) -> Result<ReplicaStatus> {
    let row = Row { cols };
    if row.get("io_running").is_none() || row.get("sql_running").is_none() {
        bail!(
            "not a replica status row: no Slave_IO_Running/Replica_IO_Running and \
             Slave_SQL_Running/Replica_SQL_Running columns"
        );
    }
    let using_gtid = match row.get("using_gtid") {
        Some(v) => v.unwrap_or("").trim().to_string(),
        // MySQL: auto-positioning is its GTID mode.
        None => match row.get("auto_position").flatten().map(str::trim) {
            Some("1") => "Yes".to_string(),
            Some("0") => "No".to_string(),
            _ => String::new(),
        },
    };
    Ok(ReplicaStatus {
        master_host: row.text("master_host"),
        master_port: row.number("master_port")?,
        master_user: row.text("master_user"),
        io_running: row.get("io_running").flatten().and_then(io_thread),
        sql_running: row
            .get("sql_running")
            .flatten()
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("yes")),
        io_state: row.text("io_state"),
        sql_state: row.text("sql_state"),
        seconds_behind_master: row.optional_number("seconds_behind_master")?,
        master_log_file: row.text("master_log_file"),
        read_master_log_pos: row.number("read_master_log_pos")?,
        relay_master_log_file: row.text("relay_master_log_file"),
        exec_master_log_pos: row.number("exec_master_log_pos")?,
        last_io_errno: row.number("last_io_errno")?,
        last_io_error: row.text("last_io_error"),
        last_sql_errno: row.number("last_sql_errno")?,
        last_sql_error: row.text("last_sql_error"),
        master_server_id: row.number("master_server_id")?,
        master_uuid: row.text("master_uuid"),
        using_gtid,
        gtid_io_pos: gtid_text(&row.text("gtid_io_pos")),
        executed_gtid_set: gtid_text(&row.text("executed_gtid_set")),
        sql_delay: row.number("sql_delay")?,
    })
}

/// Read SHOW MASTER STATUS / SHOW BINARY LOG STATUS as (column, value) pairs.
pub fn master_status_from_columns(cols: &[(String, Option<String>)]) -> Result<MasterStatus> {
    let find = |name: &str| {
        cols.iter()
            .find(|(c, _)| c.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_deref())
    };
    let file = match find("File").flatten().map(str::trim) {
        Some(f) if !f.is_empty() => f.to_string(),
        _ => bail!("not a binary log status row: no File"),
    };
    let position = match find("Position").flatten().map(str::trim) {
        Some(p) => p
            .parse()
            .ok()
            .with_context(|| format!("Position: not a number: {p:?}"))?,
        None => bail!("not a binary log status row: no Position"),
    };
    Ok(MasterStatus {
        file,
        position,
        executed_gtid_set: find("Executed_Gtid_Set").map(|v| gtid_text(v.unwrap_or(""))),
    })
}

#[cfg(test)]
/// Whether `line` is a row separator: `*************************** 1. row ***...`.
fn is_row_separator(line: &str) -> bool {
    let t = line.trim();
    t.starts_with("***") && t.ends_with("***") && t.contains(". row ")
}

#[cfg(test)]
/// The interactive client's summary after a result: "1 row in set (0.00 sec)", "Empty set".
fn is_result_footer(line: &str) -> bool {
    let t = line.trim();
    let counted = t.split_once(' ').is_some_and(|(n, rest)| {
        n.chars().all(|c| c.is_ascii_digit())
            && (rest.starts_with("row in set") || rest.starts_with("rows in set"))
    });
    counted || t.starts_with("Empty set")
}

#[cfg(test)]
/// `   Column_Name: value` -> (byte offset of the colon, name, value). The client right-aligns
/// names so the colons of one row line up; a name is an identifier, the colon is followed by
/// a space or the end of the line (the client prints `name: ` then the value, which editors
/// may trim when empty).
fn column_line(line: &str) -> Option<(usize, &str, &str)> {
    let lead = line.len() - line.trim_start().len();
    let rest = &line[lead..];
    let colon = rest.find(':')?;
    let name = &rest[..colon];
    let ident = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ident {
        return None;
    }
    let after = &rest[colon + 1..];
    let value = match after.strip_prefix(' ') {
        Some(v) => v,
        None if after.is_empty() => "",
        None => return None,
    };
    Some((lead + colon, name, value))
}

#[cfg(test)]
/// Split the client's vertical output (`SHOW SLAVE STATUS\G`) into rows of (column, value).
/// `NULL` becomes `None`.
pub fn parse_vertical(text: &str) -> Vec<Vec<(String, Option<String>)>> {
    let mut rows: Vec<Vec<(String, Option<String>)>> = Vec::new();
    // Values as read so far; NULL is decided once a value is complete (a continued value is
    // never NULL).
    let mut current: Option<Vec<(String, String)>> = None;
    // Where this row's colons stand, once its first column is seen: a later unindented line
    // with its colon elsewhere is the continuation of a multi-line value (MySQL's GTID sets,
    // an error message quoting "Error_code: 1062"), not a new column.
    let mut colon_at: Option<usize> = None;
    let finish = |row: Vec<(String, String)>| -> Vec<(String, Option<String>)> {
        row.into_iter()
            .map(|(c, v)| {
                let v = if v == "NULL" { None } else { Some(v) };
                (c, v)
            })
            .collect()
    };
    for raw in text.lines() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if is_row_separator(line) {
            if let Some(row) = current.take() {
                rows.push(finish(row));
            }
            current = Some(Vec::new());
            colon_at = None;
            continue;
        }
        if is_result_footer(line) {
            // "1 row in set (0.00 sec)" ends the result; what follows is not part of a value.
            if let Some(row) = current.take() {
                rows.push(finish(row));
            }
            colon_at = None;
            continue;
        }
        let Some(row) = current.as_mut() else {
            // Before the first row: a client banner, a warning, "Empty set".
            continue;
        };
        // A value's own continuation lines start at the left margin (the client prints the
        // value's newlines as they are), so an indented line is a column even off alignment.
        let indented = line.starts_with([' ', '\t']);
        let col =
            column_line(line).filter(|(at, _, _)| indented || colon_at.is_none_or(|c| c == *at));
        match col {
            Some((at, name, value)) => {
                colon_at = Some(at);
                row.push((name.to_string(), value.to_string()));
            }
            None => {
                if let Some((_, v)) = row.last_mut() {
                    v.push('\n');
                    v.push_str(line);
                }
            }
        }
    }
    if let Some(row) = current.take() {
        rows.push(finish(row));
    }
    // A continued value's trailing newline-only lines (the blank line some clients print after
    // the last row) are not part of it.
    for row in &mut rows {
        for (_, v) in row.iter_mut() {
            if let Some(s) = v {
                let trimmed = s.trim_end_matches('\n').len();
                s.truncate(trimmed);
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(c, v)| (c.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn old_and_new_column_names_read_the_same() {
        let old = cols(&[
            ("Slave_IO_Running", Some("Yes")),
            ("Slave_SQL_Running", Some("Yes")),
            ("Master_Host", Some("127.0.0.1")),
            ("Master_Port", Some("3306")),
            ("Read_Master_Log_Pos", Some("1234")),
            ("Exec_Master_Log_Pos", Some("1200")),
            ("Relay_Master_Log_File", Some("mysql-bin.000002")),
            ("Seconds_Behind_Master", Some("7")),
            ("Master_Server_Id", Some("11")),
        ]);
        let new = cols(&[
            ("Replica_IO_Running", Some("Yes")),
            ("Replica_SQL_Running", Some("Yes")),
            ("Source_Host", Some("127.0.0.1")),
            ("Source_Port", Some("3306")),
            ("Read_Source_Log_Pos", Some("1234")),
            ("Exec_Source_Log_Pos", Some("1200")),
            ("Relay_Source_Log_File", Some("mysql-bin.000002")),
            ("Seconds_Behind_Source", Some("7")),
            ("Source_Server_Id", Some("11")),
        ]);
        let a = replica_status_from_columns(&old).unwrap();
        let b = replica_status_from_columns(&new).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.io_running, Some(IoThread::Yes));
        assert_eq!(a.read_master_log_pos, 1234);
        assert_eq!(a.exec_master_log_pos, 1200);
        assert_eq!(a.relay_master_log_file, "mysql-bin.000002");
        assert_eq!(a.seconds_behind_master, Some(7));
        assert_eq!(a.master_server_id, 11);
        assert_eq!(a.master_port, 3306);
    }

    #[test]
    fn null_lag_connecting_io_and_case_insensitive_names() {
        let c = cols(&[
            ("slave_io_running", Some("Connecting")),
            ("SLAVE_SQL_RUNNING", Some("No")),
            ("Seconds_Behind_Master", None),
            ("Last_IO_Errno", Some("1045")),
        ]);
        let s = replica_status_from_columns(&c).unwrap();
        assert_eq!(s.io_running, Some(IoThread::Connecting));
        assert!(!s.sql_running);
        assert_eq!(s.seconds_behind_master, None);
        assert_eq!(s.last_io_errno, 1045);
    }

    #[test]
    fn not_a_replica_row_and_garbage_numbers_are_errors() {
        let c = cols(&[("File", Some("mysql-bin.000001")), ("Position", Some("4"))]);
        assert!(replica_status_from_columns(&c).is_err());
        let c = cols(&[
            ("Slave_IO_Running", Some("Yes")),
            ("Slave_SQL_Running", Some("Yes")),
            ("Exec_Master_Log_Pos", Some("12x")),
        ]);
        let e = replica_status_from_columns(&c).unwrap_err().to_string();
        assert!(e.contains("Exec_Master_Log_Pos"), "{e}");
    }

    #[test]
    fn mysql_gtid_columns_and_auto_position() {
        let c = cols(&[
            ("Replica_IO_Running", Some("Yes")),
            ("Replica_SQL_Running", Some("Yes")),
            ("Retrieved_Gtid_Set", Some("aaaa:1-5,\nbbbb:1-3")),
            ("Executed_Gtid_Set", Some("aaaa:1-5,\n bbbb:1-2")),
            ("Auto_Position", Some("1")),
        ]);
        let s = replica_status_from_columns(&c).unwrap();
        assert_eq!(s.gtid_io_pos, "aaaa:1-5,bbbb:1-3");
        assert_eq!(s.executed_gtid_set, "aaaa:1-5,bbbb:1-2");
        assert_eq!(s.using_gtid, "Yes");
    }

    #[test]
    fn master_status_with_and_without_gtid_column() {
        let maria = cols(&[
            ("File", Some("mysql-bin.000003")),
            ("Position", Some("328")),
            ("Binlog_Do_DB", Some("")),
        ]);
        let m = master_status_from_columns(&maria).unwrap();
        assert_eq!(m.file, "mysql-bin.000003");
        assert_eq!(m.position, 328);
        assert_eq!(m.executed_gtid_set, None);
        let mysql = cols(&[
            ("File", Some("binlog.000002")),
            ("Position", Some("157")),
            ("Executed_Gtid_Set", Some("")),
        ]);
        assert_eq!(
            master_status_from_columns(&mysql)
                .unwrap()
                .executed_gtid_set,
            Some(String::new())
        );
        assert!(master_status_from_columns(&cols(&[("Position", Some("4"))])).is_err());
        assert!(master_status_from_columns(&cols(&[
            ("File", Some("b.1")),
            ("Position", Some("x"))
        ]))
        .is_err());
    }

    #[test]
    fn vertical_rows_empty_values_null_and_continuations() {
        let text = "\
*************************** 1. row ***************************
             File: binlog.000002
         Position: 157
     Binlog_Do_DB: 
 Binlog_Ignore_DB:
Executed_Gtid_Set: 3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,
4f2d6f2a-71ca-11e1-9e33-c80aa9429562:1-3
*************************** 2. row ***************************
      Last_Error: Could not execute; Duplicate entry '1' for key 'PRIMARY',
Error_code: 1062; handler error
     Seconds_Lag: NULL
2 rows in set (0.00 sec)

";
        let rows = parse_vertical(text);
        assert_eq!(rows.len(), 2);
        let r = &rows[0];
        assert_eq!(r[0], ("File".into(), Some("binlog.000002".into())));
        assert_eq!(r[2], ("Binlog_Do_DB".into(), Some(String::new())));
        assert_eq!(r[3], ("Binlog_Ignore_DB".into(), Some(String::new())));
        assert_eq!(
            r[4].1.as_deref(),
            Some("3e11fa47-71ca-11e1-9e33-c80aa9429562:1-5,\n4f2d6f2a-71ca-11e1-9e33-c80aa9429562:1-3")
        );
        let r = &rows[1];
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(
            r[0].1.as_deref(),
            Some("Could not execute; Duplicate entry '1' for key 'PRIMARY',\nError_code: 1062; handler error")
        );
        assert_eq!(r[1], ("Seconds_Lag".into(), None));
    }

    #[test]
    fn vertical_with_nothing_is_no_rows() {
        assert!(parse_vertical("").is_empty());
        assert!(parse_vertical("Empty set (0.00 sec)\n").is_empty());
    }
}
