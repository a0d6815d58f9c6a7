//! What verify compares, from the master's catalog: every base table with its columns and the
//! key its chunks follow (the primary key, else a unique key on NOT NULL columns without a
//! prefix), or why it is compared whole or not at all. Pure: rows in, tables out.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};

use crate::flavor::{differs_across_flavors, is_binary_type, ChunkTable, KeyColumn};
use crate::observe::column;
use crate::transport::sql::Columns;

/// One table as the master describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub chunk: ChunkTable,
    /// Column name and DATA_TYPE, in order: replicas must have the same.
    pub shape: Vec<(String, String)>,
    pub engine: String,
    /// The server's estimate, for the progress bar.
    pub rows_estimate: u64,
}

impl Table {
    pub fn full_name(&self) -> String {
        format!("{}.{}", self.chunk.schema, self.chunk.name)
    }
}

fn text(r: &Columns, name: &str) -> Result<String> {
    Ok(column(r, name)?.unwrap_or("").to_string())
}

/// Column name and type of every table, keyed by (schema, table).
pub type Shapes = BTreeMap<(String, String), Vec<(String, String)>>;

/// Parse the rows of `verify_columns_query`.
pub fn shapes(columns: &[Columns]) -> Result<Shapes> {
    let mut out: Shapes = BTreeMap::new();
    for r in columns {
        out.entry((text(r, "TABLE_SCHEMA")?, text(r, "TABLE_NAME")?))
            .or_default()
            .push((
                text(r, "COLUMN_NAME")?,
                text(r, "DATA_TYPE")?.to_ascii_lowercase(),
            ));
    }
    Ok(out)
}

/// Build the tables from the rows of `verify_tables_query`, `verify_columns_query` and
/// `verify_keys_query` (all from the master).
pub fn tables(tables: &[Columns], columns: &[Columns], keys: &[Columns]) -> Result<Vec<Table>> {
    let shapes = shapes(columns)?;
    // (schema, table) -> index name -> [(seq, column, nullable, prefix)]
    type KeyCols = Vec<(u32, String, bool, bool)>;
    let mut uniques: BTreeMap<(String, String), BTreeMap<String, KeyCols>> = BTreeMap::new();
    for r in keys {
        let seq: u32 = text(r, "SEQ_IN_INDEX")?
            .parse()
            .map_err(|_| anyhow!("SEQ_IN_INDEX is not a number in {r:?}"))?;
        uniques
            .entry((text(r, "TABLE_SCHEMA")?, text(r, "TABLE_NAME")?))
            .or_default()
            .entry(text(r, "INDEX_NAME")?)
            .or_default()
            .push((
                seq,
                text(r, "COLUMN_NAME")?,
                text(r, "NULLABLE")?.eq_ignore_ascii_case("YES"),
                column(r, "SUB_PART")?.is_some(),
            ));
    }
    let mut out = Vec::new();
    for r in tables {
        let schema = text(r, "TABLE_SCHEMA")?;
        let name = text(r, "TABLE_NAME")?;
        let shape = shapes
            .get(&(schema.clone(), name.clone()))
            .cloned()
            .unwrap_or_default();
        let types: BTreeMap<&str, &str> = shape
            .iter()
            .map(|(c, t)| (c.as_str(), t.as_str()))
            .collect();
        let mut key = Vec::new();
        let mut index = None;
        if let Some(idx) = uniques.get(&(schema.clone(), name.clone())) {
            let usable = |cols: &KeyCols| {
                cols.iter()
                    .all(|(_, _, nullable, prefix)| !nullable && !prefix)
            };
            let pick = idx
                .get_key_value("PRIMARY")
                .filter(|(_, c)| usable(c))
                .or_else(|| idx.iter().find(|(_, c)| usable(c)));
            if let Some((iname, cols)) = pick {
                let mut cols = cols.clone();
                cols.sort_by_key(|c| c.0);
                key = cols
                    .iter()
                    .map(|(_, c, _, _)| KeyColumn {
                        name: c.clone(),
                        binary: types.get(c.as_str()).is_some_and(|t| is_binary_type(t)),
                    })
                    .collect();
                index = Some(iname.clone());
            }
        }
        let rows_estimate = column(r, "TABLE_ROWS")?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        out.push(Table {
            chunk: ChunkTable {
                schema,
                name,
                columns: shape.iter().map(|(c, _)| c.clone()).collect(),
                key,
                index,
            },
            shape,
            engine: text(r, "ENGINE")?,
            rows_estimate,
        });
    }
    Ok(out)
}

/// Why a table cannot be compared between these two servers (None: it can).
pub fn not_comparable(t: &Table, cross_flavor: bool) -> Option<String> {
    if t.shape.is_empty() {
        return Some("no columns could be read".into());
    }
    if !t.engine.eq_ignore_ascii_case("InnoDB") {
        return Some(format!(
            "ENGINE={} is not transactional: it has no consistent snapshot to compare",
            t.engine
        ));
    }
    if cross_flavor {
        let odd: Vec<String> = t
            .shape
            .iter()
            .filter(|(_, ty)| differs_across_flavors(ty))
            .map(|(c, ty)| format!("{c} ({ty})"))
            .collect();
        if !odd.is_empty() {
            return Some(format!(
                "MySQL and MariaDB write these columns' values as different text: {}",
                odd.join(", ")
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, Option<&str>)]) -> Columns {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(String::from)))
            .collect()
    }

    fn table(schema: &str, name: &str, engine: &str) -> Columns {
        row(&[
            ("TABLE_SCHEMA", Some(schema)),
            ("TABLE_NAME", Some(name)),
            ("ENGINE", Some(engine)),
            ("TABLE_ROWS", Some("10")),
        ])
    }

    fn col(t: &str, c: &str, ty: &str) -> Columns {
        row(&[
            ("TABLE_SCHEMA", Some("app")),
            ("TABLE_NAME", Some(t)),
            ("COLUMN_NAME", Some(c)),
            ("DATA_TYPE", Some(ty)),
            ("COLUMN_TYPE", Some(ty)),
            ("IS_NULLABLE", Some("NO")),
        ])
    }

    fn key(t: &str, idx: &str, seq: &str, c: &str, nullable: &str, sub: Option<&str>) -> Columns {
        row(&[
            ("TABLE_SCHEMA", Some("app")),
            ("TABLE_NAME", Some(t)),
            ("INDEX_NAME", Some(idx)),
            ("SEQ_IN_INDEX", Some(seq)),
            ("COLUMN_NAME", Some(c)),
            ("NULLABLE", Some(nullable)),
            ("SUB_PART", sub),
        ])
    }

    #[test]
    fn the_primary_key_else_a_not_null_unique_key_else_whole() {
        let tables_rows = vec![
            table("app", "orders", "InnoDB"),
            table("app", "users", "InnoDB"),
            table("app", "log", "InnoDB"),
            table("app", "legacy", "MyISAM"),
        ];
        let cols = vec![
            col("orders", "id", "int"),
            col("orders", "sku", "varbinary"),
            col("users", "email", "varchar"),
            col("users", "nick", "varchar"),
            col("log", "line", "text"),
            col("legacy", "id", "int"),
        ];
        let keys = vec![
            key("orders", "PRIMARY", "2", "sku", "", None),
            key("orders", "PRIMARY", "1", "id", "", None),
            key("users", "by_nick", "1", "nick", "YES", None),
            key("users", "by_email", "1", "email", "", None),
            key("log", "by_line", "1", "line", "", Some("10")),
        ];
        let t = tables(&tables_rows, &cols, &keys).unwrap();
        assert_eq!(t[0].full_name(), "app.orders");
        assert_eq!(
            t[0].chunk.key,
            vec![
                KeyColumn {
                    name: "id".into(),
                    binary: false
                },
                KeyColumn {
                    name: "sku".into(),
                    binary: true
                }
            ]
        );
        assert_eq!(t[0].chunk.index.as_deref(), Some("PRIMARY"));
        // A nullable unique key cannot order every row: the NOT NULL one is taken.
        assert_eq!(t[1].chunk.index.as_deref(), Some("by_email"));
        // A prefix index does not order rows either: compared whole.
        assert!(t[2].chunk.key.is_empty());
        assert_eq!(not_comparable(&t[2], false), None);
        assert!(not_comparable(&t[3], false)
            .unwrap()
            .contains("ENGINE=MyISAM is not transactional"));
    }

    #[test]
    fn floats_and_json_are_not_compared_across_flavors() {
        let t = tables(
            &[table("app", "m", "InnoDB")],
            &[
                col("m", "id", "int"),
                col("m", "v", "double"),
                col("m", "j", "json"),
            ],
            &[key("m", "PRIMARY", "1", "id", "", None)],
        )
        .unwrap();
        assert_eq!(not_comparable(&t[0], false), None);
        let why = not_comparable(&t[0], true).unwrap();
        assert!(why.contains("v (double), j (json)"), "{why}");
    }
}
