//! Rewriting the topology file after a promote: change `master:` (and `read_only:`) lines of the
//! named hosts in place, keeping comments, order and layout; block and flow (`{ ... }`) styles.

use std::collections::BTreeMap;

/// A change to one host's entry: `Some(Some(m))` sets the key, `Some(None)` removes it,
/// `None` leaves it alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostEdit {
    pub master: Option<Option<String>>,
    pub read_only: Option<Option<bool>>,
}

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

fn is_key_line(l: &str, keys: &[&str]) -> Option<usize> {
    let t = l.trim_start();
    keys.iter().find_map(|k| {
        t.strip_prefix(k)
            .filter(|r| r.trim_start().starts_with(':'))
            .map(|_| indent_of(l))
    })
}

/// Edit a flow mapping `{ a: 1, master: x }` text: set or remove `key`.
fn edit_flow(inner: &str, keys: &[&str], value: Option<&str>) -> String {
    let mut parts: Vec<String> = inner
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    let pos = parts.iter().position(|p| {
        keys.iter().any(|k| {
            p.strip_prefix(k)
                .map(|r| r.trim_start().starts_with(':'))
                .unwrap_or(false)
        })
    });
    match (pos, value) {
        (Some(i), Some(v)) => parts[i] = format!("{}: {v}", keys[0]),
        (Some(i), None) => {
            parts.remove(i);
        }
        (None, Some(v)) => parts.push(format!("{}: {v}", keys[0])),
        (None, None) => {}
    }
    format!(" {} ", parts.join(", "))
}

/// Apply edits to the hosts named, found by their key line (1-based `line`). Returns the new
/// text, or an error naming the host whose entry could not be edited.
pub fn apply(text: &str, edits: &BTreeMap<String, (usize, HostEdit)>) -> Result<String, String> {
    let mut lines: Vec<String> = text.lines().map(|l| l.to_string()).collect();
    // Bottom-up, so inserting or deleting lines keeps earlier line numbers valid.
    let mut order: Vec<(&String, &(usize, HostEdit))> = edits.iter().collect();
    order.sort_by_key(|(_, (line, _))| std::cmp::Reverse(*line));
    for (name, (line, edit)) in order {
        let idx = line
            .checked_sub(1)
            .filter(|i| *i < lines.len())
            .ok_or_else(|| format!("{name}: line {line} is not in the file"))?;
        let key_line = lines[idx].clone();
        if !key_line.trim_start().starts_with(name.as_str()) {
            return Err(format!(
                "{name}: line {line} does not hold this host's entry; edit the file by hand"
            ));
        }
        let changes: Vec<(&[&str], Option<String>)> = [
            edit.master
                .as_ref()
                .map(|m| (&["master", "source"][..], m.clone())),
            edit.read_only
                .as_ref()
                .map(|r| (&["read_only"][..], r.map(|b| b.to_string()))),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let (Some(open), Some(close)) = (key_line.find('{'), key_line.rfind('}')) {
            let mut inner = key_line[open + 1..close].to_string();
            for (keys, v) in &changes {
                inner = edit_flow(&inner, keys, v.as_deref());
            }
            lines[idx] = format!(
                "{}{{{}}}{}",
                &key_line[..open],
                inner,
                &key_line[close + 1..]
            );
            continue;
        }
        // Block style: the body is the following lines indented deeper than the key.
        let key_indent = indent_of(&key_line);
        let mut end = idx + 1;
        while end < lines.len()
            && (lines[end].trim().is_empty()
                || lines[end].trim_start().starts_with('#')
                || indent_of(&lines[end]) > key_indent)
        {
            end += 1;
        }
        // Trailing blank/comment lines belong to what follows.
        while end > idx + 1
            && (lines[end - 1].trim().is_empty() || lines[end - 1].trim_start().starts_with('#'))
        {
            end -= 1;
        }
        let body_indent = lines[idx + 1..end]
            .iter()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| indent_of(l))
            .unwrap_or(key_indent + 2);
        for (keys, v) in changes {
            let found = (idx + 1..end).find(|i| is_key_line(&lines[*i], keys) == Some(body_indent));
            match (found, v) {
                (Some(i), Some(v)) => {
                    let comment = lines[i]
                        .find(" #")
                        .map(|c| lines[i][c..].to_string())
                        .unwrap_or_default();
                    lines[i] = format!("{}{}: {v}{comment}", " ".repeat(body_indent), keys[0]);
                }
                (Some(i), None) => {
                    lines.remove(i);
                    end -= 1;
                }
                (None, Some(v)) => {
                    lines.insert(end, format!("{}{}: {v}", " ".repeat(body_indent), keys[0]));
                    end += 1;
                }
                (None, None) => {}
            }
        }
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed(m: Option<Option<&str>>) -> HostEdit {
        HostEdit {
            master: m.map(|o| o.map(|s| s.to_string())),
            read_only: None,
        }
    }

    const BLOCK: &str = "hosts:\n  db1:\n    address: 127.0.0.1   # the master\n  db2:\n    address: 127.0.0.2\n    master: db1   # a slave\n  db3:\n    # comment\n    address: 127.0.0.3\n    master: db1\n";

    #[test]
    fn block_style_promote_keeps_comments() {
        let mut e = BTreeMap::new();
        e.insert("db1".to_string(), (2, ed(Some(Some("db2")))));
        e.insert("db2".to_string(), (4, ed(Some(None))));
        e.insert("db3".to_string(), (7, ed(Some(Some("db2")))));
        let out = apply(BLOCK, &e).unwrap();
        assert_eq!(
            out,
            "hosts:\n  db1:\n    address: 127.0.0.1   # the master\n    master: db2\n  db2:\n    address: 127.0.0.2\n  db3:\n    # comment\n    address: 127.0.0.3\n    master: db2\n"
        );
    }

    #[test]
    fn flow_style() {
        let text =
            "hosts:\n  m1: { address: 127.0.0.1, master: m2 }\n  m2: { address: 127.0.0.2 }\n";
        let mut e = BTreeMap::new();
        e.insert(
            "m1".to_string(),
            (
                2,
                HostEdit {
                    master: None,
                    read_only: Some(Some(true)),
                },
            ),
        );
        e.insert("m2".to_string(), (3, ed(Some(Some("m1")))));
        let out = apply(text, &e).unwrap();
        assert_eq!(
            out,
            "hosts:\n  m1: { address: 127.0.0.1, master: m2, read_only: true }\n  m2: { address: 127.0.0.2, master: m1 }\n"
        );
    }

    #[test]
    fn source_synonym_is_replaced_in_place() {
        let text = "hosts:\n  a:\n    address: x\n  b:\n    source: a\n    address: y\n";
        let mut e = BTreeMap::new();
        e.insert("b".to_string(), (4, ed(Some(None))));
        e.insert("a".to_string(), (2, ed(Some(Some("b")))));
        let out = apply(text, &e).unwrap();
        assert_eq!(
            out,
            "hosts:\n  a:\n    address: x\n    master: b\n  b:\n    address: y\n"
        );
    }

    #[test]
    fn wrong_line_is_an_error_not_a_guess() {
        let mut e = BTreeMap::new();
        e.insert("db9".to_string(), (2, ed(Some(None))));
        assert!(apply(BLOCK, &e).unwrap_err().contains("db9"));
    }
}
