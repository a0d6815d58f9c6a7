//! The statements of `repltool verify`: the consistent point (a snapshot on the master with its
//! binary log coordinates; each replica stopped exactly there), the catalog of tables, columns
//! and keys, and the chunk queries (boundaries along a key, row counts and checksums).
//!
//! The checksum of a chunk is `COUNT(*)` and the SUM of a CRC32 per row (MySQL 9.7 has no
//! MD5(); CRC32 and CONCAT_WS exist everywhere). The row's text is unambiguous: a mask of
//! which columns are NULL, then every non-NULL value preceded by its length, all joined with
//! `#` (CONCAT_WS skips NULLs, which the mask accounts for). A SUM does not cancel equal rows
//! as BIT_XOR would (a table without a key may hold duplicates). Every session reads
//! TIMESTAMPs in UTC, so servers in different time zones compare equal.

use anyhow::{bail, Result};

use super::server::SYSTEM_SCHEMAS;
use super::sql::{quote, Sql};
use super::{Flavor, Kind, CANARY_SCHEMA};

/// A value of a key column, as read from the master: its text, or the hex of its bytes for
/// binary types (their bytes need not be valid text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    Text(String),
    Hex(String),
}

impl KeyValue {
    /// As an SQL literal.
    fn literal(&self) -> Result<String> {
        match self {
            KeyValue::Text(t) => Ok(quote(t)),
            KeyValue::Hex(h) => {
                if h.is_empty() {
                    return Ok("''".into());
                }
                if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("not a hex string: {h:?}");
                }
                Ok(format!("X'{h}'"))
            }
        }
    }

    /// For people: the text, or `0x...` for bytes.
    pub fn shown(&self) -> String {
        match self {
            KeyValue::Text(t) => t.clone(),
            KeyValue::Hex(h) => format!("0x{h}"),
        }
    }
}

/// One column of a key, and whether its values are bytes (read and written as hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyColumn {
    pub name: String,
    pub binary: bool,
}

/// A table and what the chunk queries need to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkTable {
    pub schema: String,
    pub name: String,
    /// Every column, in table order.
    pub columns: Vec<String>,
    /// The key the chunks follow (empty: the table is compared whole).
    pub key: Vec<KeyColumn>,
    /// The index that holds the key (`PRIMARY` or a unique key), for FORCE INDEX.
    pub index: Option<String>,
}

/// A quoted identifier: `name` with backticks doubled.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl ChunkTable {
    fn qualified(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }
}

/// Is a column of this type (information_schema DATA_TYPE) read and written as bytes?
pub fn is_binary_type(data_type: &str) -> bool {
    matches!(
        data_type.to_ascii_lowercase().as_str(),
        "binary"
            | "varbinary"
            | "tinyblob"
            | "blob"
            | "mediumblob"
            | "longblob"
            | "bit"
            | "geometry"
            | "point"
            | "linestring"
            | "polygon"
            | "multipoint"
            | "multilinestring"
            | "multipolygon"
            | "geometrycollection"
    )
}

/// Types whose text form differs between MySQL and MariaDB (float formatting, JSON's
/// normalised text on MySQL against MariaDB's stored text), so a MariaDB replica of a MySQL
/// master cannot be compared on them by checksum.
pub fn differs_across_flavors(data_type: &str) -> bool {
    matches!(
        data_type.to_ascii_lowercase().as_str(),
        "float" | "double" | "real" | "json"
    )
}

/// `(k1, k2) > (v1, v2)` spelled out so both flavors use the index range:
/// `k1 > v1 OR (k1 = v1 AND k2 > v2)`; `inclusive` makes the last comparison `>=`/`<=`.
fn key_compare(
    key: &[KeyColumn],
    values: &[KeyValue],
    op: &str,
    inclusive: bool,
) -> Result<String> {
    if key.len() != values.len() || key.is_empty() {
        bail!(
            "a key of {} column(s) compared with {} value(s)",
            key.len(),
            values.len()
        );
    }
    let mut ors = Vec::new();
    for i in 0..key.len() {
        let mut ands = Vec::new();
        for j in 0..i {
            ands.push(format!(
                "{} = {}",
                ident(&key[j].name),
                values[j].literal()?
            ));
        }
        let last_op = if i == key.len() - 1 && inclusive {
            format!("{op}=")
        } else {
            op.to_string()
        };
        ands.push(format!(
            "{} {last_op} {}",
            ident(&key[i].name),
            values[i].literal()?
        ));
        ors.push(if ands.len() == 1 {
            ands.remove(0)
        } else {
            format!("({})", ands.join(" AND "))
        });
    }
    Ok(if ors.len() == 1 {
        ors.remove(0)
    } else {
        format!("({})", ors.join(" OR "))
    })
}

/// `WHERE` for the chunk (lower, upper]: lower exclusive, upper inclusive, either open.
fn chunk_where(
    t: &ChunkTable,
    lower: Option<&[KeyValue]>,
    upper: Option<&[KeyValue]>,
) -> Result<String> {
    let mut conds = Vec::new();
    if let Some(lo) = lower {
        conds.push(key_compare(&t.key, lo, ">", false)?);
    }
    if let Some(hi) = upper {
        conds.push(key_compare(&t.key, hi, "<", true)?);
    }
    Ok(if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    })
}

impl Flavor {
    /// Run first in every verify session: REPEATABLE READ (the snapshot), TIMESTAMPs in UTC.
    pub fn verify_session_setup(&self) -> Vec<Sql> {
        vec![
            Sql::plain("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"),
            Sql::plain("SET SESSION time_zone = '+00:00'"),
        ]
    }

    /// Open this session's consistent snapshot (InnoDB's read view is created at once), read
    /// only: verify never writes.
    pub fn consistent_snapshot(&self) -> Sql {
        Sql::plain("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
    }

    /// End the snapshot.
    pub fn end_snapshot(&self) -> Sql {
        Sql::plain("ROLLBACK")
    }

    /// MariaDB tells the binary log position of a session's consistent snapshot without any
    /// lock (status `binlog_snapshot_file` / `binlog_snapshot_position`, rows of
    /// Variable_name, Value). MySQL has no such thing: it needs the read lock for the instant
    /// of START TRANSACTION + SHOW BINARY LOG STATUS ([`Flavor::snapshot_needs_lock`]).
    pub fn snapshot_coordinates_query(&self) -> Option<Sql> {
        match self.kind {
            Kind::MariaDB => Some(Sql::plain("SHOW SESSION STATUS LIKE 'binlog_snapshot_%'")),
            Kind::MySQL => None,
        }
    }

    /// Whether the master's snapshot point needs FLUSH TABLES WITH READ LOCK for an instant.
    pub fn snapshot_needs_lock(&self) -> bool {
        self.snapshot_coordinates_query().is_none()
    }

    /// START SLAVE SQL_THREAD UNTIL / START REPLICA SQL_THREAD UNTIL the master's coordinates:
    /// the SQL thread applies exactly up to there and stops.
    pub fn start_sql_thread_until(&self, file: &str, pos: u64) -> Sql {
        let p = if self.source_syntax() {
            "SOURCE"
        } else {
            "MASTER"
        };
        Sql::plain(format!(
            "START {} SQL_THREAD UNTIL {p}_LOG_FILE = {}, {p}_LOG_POS = {pos}",
            self.replica_word(),
            quote(file)
        ))
    }

    /// The base tables verify compares: TABLE_SCHEMA, TABLE_NAME, ENGINE, TABLE_ROWS (an
    /// estimate, for the progress bar), sorted. Not the system schemas, not repltool's own.
    pub fn verify_tables_query(&self) -> Sql {
        let mut skip: Vec<String> = SYSTEM_SCHEMAS.iter().map(|s| quote(s)).collect();
        skip.push(quote(CANARY_SCHEMA));
        Sql::plain(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, ENGINE, TABLE_ROWS FROM information_schema.TABLES \
             WHERE TABLE_TYPE = 'BASE TABLE' AND TABLE_SCHEMA NOT IN ({}) \
             AND TABLE_SCHEMA NOT LIKE '#mysql50#%' ORDER BY TABLE_SCHEMA, TABLE_NAME",
            skip.join(", ")
        ))
    }

    /// The columns of those tables: TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE,
    /// COLUMN_TYPE, IS_NULLABLE, in table order.
    pub fn verify_columns_query(&self) -> Sql {
        let mut skip: Vec<String> = SYSTEM_SCHEMAS.iter().map(|s| quote(s)).collect();
        skip.push(quote(CANARY_SCHEMA));
        Sql::plain(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, IS_NULLABLE \
             FROM information_schema.COLUMNS WHERE TABLE_SCHEMA NOT IN ({}) \
             ORDER BY TABLE_SCHEMA, TABLE_NAME, ORDINAL_POSITION",
            skip.join(", ")
        ))
    }

    /// The unique keys of those tables: TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX,
    /// COLUMN_NAME, NULLABLE ('YES' or ''), SUB_PART (a prefix index cannot order chunks).
    pub fn verify_keys_query(&self) -> Sql {
        let mut skip: Vec<String> = SYSTEM_SCHEMAS.iter().map(|s| quote(s)).collect();
        skip.push(quote(CANARY_SCHEMA));
        Sql::plain(format!(
            "SELECT TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX, COLUMN_NAME, NULLABLE, \
             SUB_PART FROM information_schema.STATISTICS WHERE NON_UNIQUE = 0 AND \
             TABLE_SCHEMA NOT IN ({}) ORDER BY TABLE_SCHEMA, TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
            skip.join(", ")
        ))
    }

    /// The upper end of the chunk that starts after `lower` (None: at the start) and holds
    /// `rows` rows: the key of the rows-th row, one column per key column (binary ones as
    /// hex). No row: the rest of the table is shorter than a chunk.
    pub fn chunk_boundary(
        &self,
        t: &ChunkTable,
        lower: Option<&[KeyValue]>,
        rows: u64,
    ) -> Result<Sql> {
        if t.key.is_empty() {
            bail!("{}.{} has no key to chunk along", t.schema, t.name);
        }
        let cols: Vec<String> = t
            .key
            .iter()
            .map(|k| {
                if k.binary {
                    format!("HEX({})", ident(&k.name))
                } else {
                    ident(&k.name)
                }
            })
            .collect();
        let order: Vec<String> = t.key.iter().map(|k| ident(&k.name)).collect();
        Ok(Sql::plain(format!(
            "SELECT {} FROM {}{}{} ORDER BY {} LIMIT 1 OFFSET {}",
            cols.join(", "),
            t.qualified(),
            force_index(t),
            chunk_where(t, lower, None)?,
            order.join(", "),
            rows.max(1) - 1
        )))
    }

    /// The first (or last) key of the chunk (lower, upper]: where a differing range starts and
    /// ends on this server.
    pub fn chunk_edge(
        &self,
        t: &ChunkTable,
        lower: Option<&[KeyValue]>,
        upper: Option<&[KeyValue]>,
        first: bool,
    ) -> Result<Sql> {
        if t.key.is_empty() {
            bail!("{}.{} has no key", t.schema, t.name);
        }
        let cols: Vec<String> = t
            .key
            .iter()
            .map(|k| {
                if k.binary {
                    format!("HEX({})", ident(&k.name))
                } else {
                    ident(&k.name)
                }
            })
            .collect();
        let dir = if first { "" } else { " DESC" };
        let order: Vec<String> = t
            .key
            .iter()
            .map(|k| format!("{}{dir}", ident(&k.name)))
            .collect();
        Ok(Sql::plain(format!(
            "SELECT {} FROM {}{}{} ORDER BY {} LIMIT 1",
            cols.join(", "),
            t.qualified(),
            force_index(t),
            chunk_where(t, lower, upper)?,
            order.join(", ")
        )))
    }

    /// Row count (`cnt`) and checksum (`crc`) of the chunk (lower, upper] (either end open;
    /// both open: the whole table).
    pub fn chunk_checksum(
        &self,
        t: &ChunkTable,
        lower: Option<&[KeyValue]>,
        upper: Option<&[KeyValue]>,
    ) -> Result<Sql> {
        if t.columns.is_empty() {
            bail!("{}.{} has no columns", t.schema, t.name);
        }
        let cols: Vec<String> = t.columns.iter().map(|c| ident(c)).collect();
        let mask: Vec<String> = cols.iter().map(|c| format!("ISNULL({c})")).collect();
        let mut parts = vec![format!("CONCAT({})", mask.join(", "))];
        for c in &cols {
            parts.push(format!("LENGTH({c})"));
            parts.push(c.clone());
        }
        Ok(Sql::plain(format!(
            "SELECT COUNT(*) AS cnt, COALESCE(SUM(CRC32(CONCAT_WS('#', {}))), 0) AS crc FROM {}{}{}",
            parts.join(", "),
            t.qualified(),
            force_index(t),
            chunk_where(t, lower, upper)?
        )))
    }
}

fn force_index(t: &ChunkTable) -> String {
    match &t.index {
        Some(i) => format!(" FORCE INDEX ({})", ident(i)),
        None => String::new(),
    }
}
