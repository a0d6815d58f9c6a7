//! Rewriting the topology file after a promote: change `master:` (and `read_only:`) lines of the
//! named hosts in place, keeping comments, order and layout; block and flow (`{ ... }`) styles.
//!
//! What cannot be edited safely as text is refused, naming the line and the key, before
//! anything is written: a key inherited through a YAML merge key (`<<: *anchor`) cannot be
//! removed for one host, an anchored entry would change every entry that reuses it, and a flow
//! mapping spread over several lines is not edited line by line. As a last guard, the edited
//! text is loaded again and must say exactly what the edits ask, or nothing is written.
//! [`rewrite_file`] keeps the file's mode for the backup and the new file.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::tree::{self, Kind, Node};

/// A change to one host's entry: `Some(Some(m))` sets the key, `Some(None)` removes it,
/// `None` leaves it alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostEdit {
    pub master: Option<Option<String>>,
    pub read_only: Option<Option<bool>>,
}

/// Why the file cannot be rewritten: the line and the key at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// 1-based; 0 when no line is to blame.
    pub line: usize,
    /// Dotted key path (`hosts.db2.master`).
    pub key: String,
    pub msg: String,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: ", self.line)?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.msg)
    }
}

impl Refusal {
    fn new(line: usize, key: impl Into<String>, msg: impl Into<String>) -> Refusal {
        Refusal {
            line,
            key: key.into(),
            msg: msg.into(),
        }
    }

    /// `FILE:LINE: key: message`.
    pub fn render(&self, file: &Path) -> String {
        let mut out = file.display().to_string();
        if self.line > 0 {
            out.push_str(&format!(":{}", self.line));
        }
        if !self.key.is_empty() {
            out.push_str(&format!(": {}", self.key));
        }
        out.push_str(&format!(": {}", self.msg));
        out
    }
}

fn indent_of(l: &str) -> usize {
    l.len() - l.trim_start().len()
}

/// `key:` (or `"key":`) at the start of `t`: the rest after the colon.
fn after_key<'a>(t: &'a str, key: &str) -> Option<&'a str> {
    let rest = t
        .strip_prefix(key)
        .or_else(|| t.strip_prefix(&format!("\"{key}\"")))
        .or_else(|| t.strip_prefix(&format!("'{key}'")))?;
    let rest = rest.trim_start_matches([' ', '\t']);
    let rest = rest.strip_prefix(':')?;
    (rest.is_empty() || rest.starts_with([' ', '\t'])).then_some(rest)
}

fn is_key_line(l: &str, keys: &[&str]) -> Option<(usize, usize)> {
    let t = l.trim_start();
    keys.iter()
        .enumerate()
        .find_map(|(i, k)| after_key(t, k).map(|_| (indent_of(l), i)))
}

/// The value text after `key:` on a block line, without a trailing comment.
fn block_value(l: &str, key: &str) -> String {
    let rest = after_key(l.trim_start(), key).unwrap_or("");
    strip_comment(rest).trim().to_string()
}

/// `text` up to a ` #` comment outside quotes.
fn strip_comment(text: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '#' && prev_space => return &text[..i],
            None if (c == '"' || c == '\'') && prev_space => quote = Some(c),
            None => {}
        }
        prev_space = c == ' ' || c == '\t';
    }
    text
}

/// The byte offset of the `}` closing the `{` at `open`, on this line; None when the mapping is
/// not closed on the line (it goes on over several lines, or a comment cuts it). Quoted
/// scalars and nested `{ }` / `[ ]` are skipped.
fn flow_close(line: &str, open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    // A quote opens a scalar only where a scalar may start (`it's` is plain text).
    let mut scalar_start = true;
    let mut prev = ' ';
    let mut chars = line[open..].char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match quote {
            Some('\'') if c == '\'' => {
                if chars.peek().map(|(_, n)| *n) == Some('\'') {
                    chars.next();
                } else {
                    quote = None;
                }
            }
            Some('"') if c == '\\' => {
                chars.next();
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '{' | '[' => {
                    depth += 1;
                    scalar_start = true;
                }
                '}' | ']' => {
                    depth = depth.checked_sub(1)?;
                    if depth == 0 {
                        return Some(open + i);
                    }
                }
                ',' | ':' | '?' => scalar_start = true,
                '#' if prev == ' ' || prev == '\t' => return None,
                '"' | '\'' if scalar_start => quote = Some(c),
                ' ' | '\t' => {}
                _ => scalar_start = false,
            },
        }
        prev = c;
    }
    None
}

/// The top-level items of a flow mapping's inside (`a: 1, b: {c: 2}`), split at commas outside
/// quotes and nested brackets.
fn flow_items(inner: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut scalar_start = true;
    let mut cur = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some('\'') if c == '\'' => {
                cur.push(c);
                if chars.peek() == Some(&'\'') {
                    cur.push('\'');
                    chars.next();
                } else {
                    quote = None;
                }
                continue;
            }
            Some('"') if c == '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
                continue;
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '{' | '[' => {
                    depth += 1;
                    scalar_start = true;
                }
                '}' | ']' => depth = depth.saturating_sub(1),
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut cur).trim().to_string());
                    scalar_start = true;
                    continue;
                }
                ',' | ':' | '?' => scalar_start = true,
                '"' | '\'' if scalar_start => quote = Some(c),
                ' ' | '\t' => {}
                _ => scalar_start = false,
            },
        }
        cur.push(c);
    }
    let last = cur.trim().to_string();
    if !last.is_empty() {
        items.push(last);
    }
    items.retain(|i| !i.is_empty());
    items
}

/// Edit a flow mapping's inside: set or remove `keys[0]` (or a synonym).
fn edit_flow(
    inner: &str,
    keys: &[&str],
    value: Option<&str>,
    line: usize,
    host_key: &str,
) -> Result<String, Refusal> {
    let mut parts = flow_items(inner);
    let pos = parts
        .iter()
        .position(|p| keys.iter().any(|k| after_key(p, k).is_some()));
    if let Some(i) = pos {
        let k = keys
            .iter()
            .find(|k| after_key(&parts[i], k).is_some())
            .copied()
            .unwrap_or(keys[0]);
        let v = after_key(&parts[i], k).unwrap_or("").trim();
        if v.starts_with(['&', '*', '!']) {
            return Err(Refusal::new(
                line,
                format!("{host_key}.{k}"),
                "its value carries a YAML anchor, alias or tag; edit the file by hand",
            ));
        }
    }
    match (pos, value) {
        (Some(i), Some(v)) => parts[i] = format!("{}: {v}", keys[0]),
        (Some(i), None) => {
            parts.remove(i);
        }
        (None, Some(v)) => parts.push(format!("{}: {v}", keys[0])),
        (None, None) => {}
    }
    Ok(format!(" {} ", parts.join(", ")))
}

/// The host's node in the parsed file (after merge keys are applied: inherited keys keep the
/// position where they are written).
fn host_node<'a>(doc: &'a Node, name: &str) -> Option<&'a Node> {
    let Kind::Map(top) = &doc.kind else {
        return None;
    };
    let hosts = top.iter().find_map(|(k, v)| match &k.kind {
        Kind::Scalar(s) if s.text == "hosts" => Some(v),
        _ => None,
    })?;
    let Kind::Map(hosts) = &hosts.kind else {
        return None;
    };
    hosts.iter().find_map(|(k, v)| match &k.kind {
        Kind::Scalar(s) if s.text == name => Some(v),
        _ => None,
    })
}

/// Where `key` of the host is written, when the host has it.
fn key_line(host: &Node, keys: &[&str]) -> Option<(usize, String)> {
    let Kind::Map(entries) = &host.kind else {
        return None;
    };
    entries.iter().find_map(|(k, _)| match &k.kind {
        Kind::Scalar(s) if keys.contains(&s.text.as_str()) => Some((k.pos.line, s.text.clone())),
        _ => None,
    })
}

/// Apply edits to the hosts named, found by their key line (1-based `line`). Returns the new
/// text, or why an entry cannot be edited safely (naming the line and the key).
pub fn apply(text: &str, edits: &BTreeMap<String, (usize, HostEdit)>) -> Result<String, String> {
    apply_checked(text, edits).map_err(|r| r.to_string())
}

/// [`apply`] with the refusal as data.
pub fn apply_checked(
    text: &str,
    edits: &BTreeMap<String, (usize, HostEdit)>,
) -> Result<String, Refusal> {
    let doc = tree::parse(text)
        .map_err(|(pos, msg)| Refusal::new(pos.line, "", format!("not valid YAML: {msg}")))?;
    let mut lines: Vec<String> = text.lines().map(|l| l.to_string()).collect();
    // Bottom-up, so inserting or deleting lines keeps earlier line numbers valid.
    let mut order: Vec<(&String, &(usize, HostEdit))> = edits.iter().collect();
    order.sort_by_key(|(_, (line, _))| std::cmp::Reverse(*line));
    for (name, (line, edit)) in order {
        let hk = format!("hosts.{name}");
        let idx = line
            .checked_sub(1)
            .filter(|i| *i < lines.len())
            .ok_or_else(|| Refusal::new(*line, &hk, "this line is not in the file"))?;
        let key_line_text = lines[idx].clone();
        let Some(after) = after_key(key_line_text.trim_start(), name) else {
            return Err(Refusal::new(
                *line,
                &hk,
                "this line does not hold the host's entry; edit the file by hand",
            ));
        };
        let value = strip_comment(after).trim();
        if value.starts_with(['&', '*', '!']) {
            let what = match value.chars().next() {
                Some('&') => "carries a YAML anchor: other entries may reuse it, and editing it would change them too",
                Some('*') => "is a YAML alias of another entry: editing it would change that one too",
                _ => "carries a YAML tag",
            };
            return Err(Refusal::new(
                *line,
                &hk,
                format!("the entry {what}; edit the file by hand"),
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
        let flow = match key_line_text.find('{').filter(|_| value.starts_with('{')) {
            Some(open) => match flow_close(&key_line_text, open) {
                Some(close) => Some((open, close)),
                None => {
                    return Err(Refusal::new(
                        *line,
                        &hk,
                        "a flow mapping `{ ... }` that does not end on this line (it goes on \
                         over several lines, or a comment cuts it) cannot be edited safely; \
                         write it on one line or in block style",
                    ))
                }
            },
            None => None,
        };
        // A key the host inherits through `<<:` cannot be removed for this host alone.
        if let Some(node) = doc.as_ref().and_then(|d| host_node(d, name)) {
            let own_end = if flow.is_some() {
                *line
            } else {
                block_end(&lines, idx)
            };
            for (keys, v) in &changes {
                if let Some((at, k)) = key_line(node, keys) {
                    let inherited = at < *line || at > own_end;
                    if inherited && v.is_none() {
                        return Err(Refusal::new(
                            *line,
                            format!("{hk}.{k}"),
                            format!(
                                "`{k}:` comes from a YAML merge key (`<<:`, written at line {at}); \
                                 it cannot be removed for {name} alone. Edit the file by hand: \
                                 give {name} its own keys instead of the merge"
                            ),
                        ));
                    }
                }
            }
        }
        if let Some((open, close)) = flow {
            let mut inner = key_line_text[open + 1..close].to_string();
            for (keys, v) in &changes {
                inner = edit_flow(&inner, keys, v.as_deref(), *line, &hk)?;
            }
            lines[idx] = format!(
                "{}{{{}}}{}",
                &key_line_text[..open],
                inner,
                &key_line_text[close + 1..]
            );
            continue;
        }
        if !value.is_empty() {
            return Err(Refusal::new(
                *line,
                &hk,
                "the entry is neither a block mapping nor a `{ ... }` on its line; edit the file \
                 by hand",
            ));
        }
        // Block style: the body is the following lines indented deeper than the key.
        let key_indent = indent_of(&key_line_text);
        let mut end = block_end(&lines, idx);
        let body_indent = lines[idx + 1..end]
            .iter()
            .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
            .map(|l| indent_of(l))
            .unwrap_or(key_indent + 2);
        for (keys, v) in changes {
            let found = (idx + 1..end)
                .find(|i| is_key_line(&lines[*i], keys).map(|(ind, _)| ind) == Some(body_indent));
            if let Some(i) = found {
                let k = is_key_line(&lines[i], keys)
                    .map(|(_, ki)| keys[ki])
                    .unwrap_or(keys[0]);
                let old = block_value(&lines[i], k);
                if old.is_empty() || old.starts_with(['&', '*', '!', '|', '>']) {
                    return Err(Refusal::new(
                        i + 1,
                        format!("{hk}.{k}"),
                        "its value is not a plain value on this line (it goes on below, or \
                         carries an anchor, alias or tag); edit the file by hand",
                    ));
                }
            }
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

/// The end (exclusive) of the block body under the key at `idx`: lines indented deeper, with
/// trailing blank and comment lines left to what follows.
fn block_end(lines: &[String], idx: usize) -> usize {
    let key_indent = indent_of(&lines[idx]);
    let mut end = idx + 1;
    while end < lines.len()
        && (lines[end].trim().is_empty()
            || lines[end].trim_start().starts_with('#')
            || indent_of(&lines[end]) > key_indent)
    {
        end += 1;
    }
    while end > idx + 1
        && (lines[end - 1].trim().is_empty() || lines[end - 1].trim_start().starts_with('#'))
    {
        end -= 1;
    }
    end
}

/// Load `new` and check it says what `old` says with the edits applied: every host's master
/// and read_only as asked, nothing else about the hosts changed. The last guard against an
/// edit that text-level checks did not foresee.
fn verify(
    path: &Path,
    old: &str,
    new: &str,
    edits: &BTreeMap<String, (usize, HostEdit)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Refusal> {
    let before = super::load_str(old, path, env).map_err(|e| {
        Refusal::new(
            0,
            "",
            format!("the file does not load before the edit: {e}"),
        )
    })?;
    let after = super::load_str(new, path, env).map_err(|e| {
        Refusal::new(
            0,
            "",
            format!("the edited file would not load ({e}); nothing was written"),
        )
    })?;
    if before.hosts.len() != after.hosts.len() {
        return Err(Refusal::new(
            0,
            "hosts",
            "the edit would change the list of hosts",
        ));
    }
    for (b, a) in before.hosts.iter().zip(&after.hosts) {
        let hk = format!("hosts.{}", b.name);
        let edit = edits
            .get(&b.name)
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        let want_master = edit.master.clone().unwrap_or_else(|| b.master.clone());
        let want_ro = edit.read_only.unwrap_or(b.read_only);
        if a.name != b.name || a.address != b.address || a.server_id != b.server_id {
            return Err(Refusal::new(
                b.line,
                &hk,
                "the edit would change this entry",
            ));
        }
        if a.master != want_master {
            let says = |m: &Option<String>| {
                m.as_deref()
                    .map(|m| format!("replicates from {m}"))
                    .unwrap_or_else(|| "has no master".to_string())
            };
            return Err(Refusal::new(
                b.line,
                format!("{hk}.master"),
                format!(
                    "after the edit the file would say {} {}, not that it {} (a value inherited \
                     through a YAML merge key or anchor?); edit the file by hand",
                    b.name,
                    says(&a.master),
                    says(&want_master)
                ),
            ));
        }
        if a.read_only != want_ro {
            return Err(Refusal::new(
                b.line,
                format!("{hk}.read_only"),
                format!(
                    "after the edit the file would give read_only {:?}, not {:?}; edit the file \
                     by hand",
                    a.read_only, want_ro
                ),
            ));
        }
    }
    Ok(())
}

/// The edited text of the file at `path`, checked ([`apply_checked`] then a reload that must
/// say exactly what the edits ask). Reads the file; writes nothing. Errors name the file, the
/// line and the key.
pub fn plan_file(
    path: &Path,
    edits: &BTreeMap<String, (usize, HostEdit)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<(String, String)> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read it to rewrite it: {e}", path.display()))?;
    let new = apply_checked(&text, edits)
        .and_then(|new| verify(path, &text, &new, edits, env).map(|()| new))
        .map_err(|r| anyhow::anyhow!("{}", r.render(path)))?;
    Ok((text, new))
}

/// Check that the file at `path` can be rewritten with `edits` (run before anything changes,
/// so a file repltool cannot edit stops a promote before it starts). Writes nothing.
pub fn check_file(path: &Path, edits: &BTreeMap<String, (usize, HostEdit)>) -> anyhow::Result<()> {
    plan_file(path, edits, &|n| std::env::var(n).ok()).map(|_| ())
}

/// Rewrite the file at `path` with `edits`: the previous text goes to `FILE.bak` and the new
/// text replaces the file, both atomically (temporary file, rename) and both with the file's
/// own mode (and owner, when running as root): a file holding passwords stays private, a
/// group-readable one stays readable. A symbolic link is followed, not replaced. Nothing is
/// written when the edit cannot be made safely. Returns the backup's path.
pub fn rewrite_file(
    path: &Path,
    edits: &BTreeMap<String, (usize, HostEdit)>,
) -> anyhow::Result<PathBuf> {
    rewrite_file_with(path, edits, &|n| std::env::var(n).ok())
}

/// [`rewrite_file`] with `env` standing in for the environment (tests).
pub fn rewrite_file_with(
    path: &Path,
    edits: &BTreeMap<String, (usize, HostEdit)>,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let real = std::fs::canonicalize(path)
        .with_context(|| format!("{}: cannot resolve it", path.display()))?;
    let (text, new) = plan_file(&real, edits, env).map_err(|e| {
        // Name the file as the user gave it.
        anyhow::anyhow!(
            "{}",
            e.to_string()
                .replacen(&real.display().to_string(), &path.display().to_string(), 1)
        )
    })?;
    let meta = std::fs::metadata(&real)
        .with_context(|| format!("{}: cannot read its mode", path.display()))?;
    let bak = PathBuf::from(format!("{}.bak", real.display()));
    replace_with_mode(&bak, text.as_bytes(), &meta)
        .with_context(|| format!("writing {}", bak.display()))?;
    replace_with_mode(&real, new.as_bytes(), &meta)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(PathBuf::from(format!("{}.bak", path.display())))
}

/// Write `data` to `target` through a temporary file in the same directory, created private
/// (0600) and given `like`'s mode (and owner, as root) before it takes `target`'s name.
fn replace_with_mode(target: &Path, data: &[u8], like: &std::fs::Metadata) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".repltool-rewrite-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    tmp.write_all(data)?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(like.uid()), Some(like.gid()));
    }
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(like.mode() & 0o7777))?;
    tmp.as_file().sync_all()?;
    tmp.persist(target).map_err(|e| e.error)?;
    Ok(())
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
    fn flow_values_with_commas_quotes_and_nesting_survive() {
        let text = "hosts:\n  a: { address: x, restart: \"svc restart a, b\", ssh: { port: 22, user: master }, master: b }  # c {x}\n  b: { address: y }\n";
        let mut e = BTreeMap::new();
        e.insert("a".to_string(), (2, ed(Some(None))));
        let out = apply(text, &e).unwrap();
        assert_eq!(
            out,
            "hosts:\n  a: { address: x, restart: \"svc restart a, b\", ssh: { port: 22, user: master } }  # c {x}\n  b: { address: y }\n"
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
        // `db1` is not `db10`.
        let text = "hosts:\n  db10:\n    address: x\n  db1:\n    address: y\n";
        let mut e = BTreeMap::new();
        e.insert("db1".to_string(), (2, ed(Some(Some("db10")))));
        assert!(apply(text, &e).unwrap_err().contains("hosts.db1"));
    }

    #[test]
    fn a_master_inherited_through_a_merge_key_is_refused() {
        let text = "x-slave: &slave\n  master: db1\nhosts:\n  db1: { address: 127.0.0.1 }\n  db2:\n    <<: *slave\n    address: 127.0.0.2\n";
        let mut e = BTreeMap::new();
        e.insert("db2".to_string(), (5, ed(Some(None))));
        e.insert("db1".to_string(), (4, ed(Some(Some("db2")))));
        let r = apply_checked(text, &e).unwrap_err();
        assert_eq!((r.line, r.key.as_str()), (5, "hosts.db2.master"));
        assert!(
            r.msg.contains("merge key") && r.msg.contains("line 2"),
            "{r}"
        );
        // Setting a key the host inherits is fine: its own key overrides the merge.
        let mut e = BTreeMap::new();
        e.insert("db2".to_string(), (5, ed(Some(Some("db3")))));
        let out = apply(text, &e).unwrap();
        assert!(
            out.contains("    address: 127.0.0.2\n    master: db3\n"),
            "{out}"
        );
    }

    #[test]
    fn anchored_and_aliased_entries_are_refused() {
        let text = "hosts:\n  db1: &h { address: 127.0.0.1 }\n  db2:\n    <<: *h\n    address: 127.0.0.2\n    master: db1\n  db3: *h\n";
        let mut e = BTreeMap::new();
        e.insert("db1".to_string(), (2, ed(Some(Some("db2")))));
        let r = apply_checked(text, &e).unwrap_err();
        assert_eq!((r.line, r.key.as_str()), (2, "hosts.db1"));
        assert!(r.msg.contains("anchor"), "{r}");
        let mut e = BTreeMap::new();
        e.insert("db3".to_string(), (7, ed(Some(Some("db2")))));
        let r = apply_checked(text, &e).unwrap_err();
        assert!(r.msg.contains("alias"), "{r}");
    }

    #[test]
    fn a_flow_mapping_over_several_lines_is_refused() {
        let text = "hosts:\n  db1: { address: 127.0.0.1 }\n  db2: { address: 127.0.0.2,\n         master: db1 }\n";
        let mut e = BTreeMap::new();
        e.insert("db2".to_string(), (3, ed(Some(None))));
        let r = apply_checked(text, &e).unwrap_err();
        assert_eq!((r.line, r.key.as_str()), (3, "hosts.db2"));
        assert!(r.msg.contains("several lines"), "{r}");
    }

    #[test]
    fn a_value_that_goes_on_below_is_refused() {
        let text = "hosts:\n  db1: { address: 127.0.0.1 }\n  db2:\n    address: 127.0.0.2\n    master:\n      db1\n";
        let mut e = BTreeMap::new();
        e.insert("db2".to_string(), (3, ed(Some(None))));
        let r = apply_checked(text, &e).unwrap_err();
        assert_eq!((r.line, r.key.as_str()), (5, "hosts.db2.master"));
    }

    const HEAD: &str =
        "defaults:\n  transport: local\n  mysql: { password: \"\" }\nreplication: { password: x }\n";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    /// The 1-based line of the first line starting (after indentation) with `start`.
    fn line_of(text: &str, start: &str) -> usize {
        1 + text
            .lines()
            .position(|l| l.trim_start().starts_with(start))
            .unwrap()
    }

    #[test]
    fn rewrite_file_refuses_without_writing_and_keeps_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.yaml");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;

        // A merge key: refused, nothing written.
        let merged = format!("{HEAD}x-slave: &slave\n  master: db1\nhosts:\n  db1: {{ address: 127.0.0.1 }}\n  db2:\n    <<: *slave\n    address: 127.0.0.2\n");
        std::fs::write(&p, &merged).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut e = BTreeMap::new();
        let (l1, l2) = (line_of(&merged, "db1:"), line_of(&merged, "db2:"));
        e.insert("db2".to_string(), (l2, ed(Some(None))));
        e.insert("db1".to_string(), (l1, ed(Some(Some("db2")))));
        let err = rewrite_file_with(&p, &e, &no_env).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}:{l2}: hosts.db2.master: ", p.display())),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&p).unwrap(), merged);
        assert!(!dir.path().join("t.yaml.bak").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

        // A private file: the backup and the new file stay private, created so.
        let plain = format!("{HEAD}hosts:\n  db1: {{ address: 127.0.0.1 }}\n  db2: {{ address: 127.0.0.2, master: db1 }}\n");
        std::fs::write(&p, &plain).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        let (l1, l2) = (line_of(&plain, "db1:"), line_of(&plain, "db2:"));
        let mut e = BTreeMap::new();
        e.insert("db2".to_string(), (l2, ed(Some(None))));
        e.insert("db1".to_string(), (l1, ed(Some(Some("db2")))));
        let bak = rewrite_file_with(&p, &e, &no_env).unwrap();
        assert_eq!(bak, dir.path().join("t.yaml.bak"));
        assert_eq!(std::fs::read_to_string(&bak).unwrap(), plain);
        assert_eq!(mode(&bak), 0o600);
        assert_eq!(mode(&p), 0o600);
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .contains("db1: { address: 127.0.0.1, master: db2 }"));

        // A group-readable file stays group-readable, a previous backup is replaced.
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut e = BTreeMap::new();
        e.insert("db1".to_string(), (l1, ed(Some(None))));
        e.insert("db2".to_string(), (l2, ed(Some(Some("db1")))));
        rewrite_file_with(&p, &e, &no_env).unwrap();
        assert_eq!(mode(&p), 0o640);
        assert_eq!(mode(&bak), 0o640);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), plain);
    }

    #[test]
    fn the_reload_guard_catches_what_text_checks_miss() {
        // A quoted key the text edit does not see as `master`: the reload says db2 still has
        // a master, so nothing is written.
        let text = format!("{HEAD}hosts:\n  db1: {{ address: 127.0.0.1 }}\n  db2:\n    address: 127.0.0.2\n    ? master\n    : db1\n");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.yaml");
        std::fs::write(&p, &text).unwrap();
        let l2 = line_of(&text, "db2:");
        let mut e = BTreeMap::new();
        e.insert("db2".to_string(), (l2, ed(Some(None))));
        let err = rewrite_file_with(&p, &e, &no_env).unwrap_err().to_string();
        assert!(err.contains(&format!(":{l2}: hosts.db2.master: ")), "{err}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), text);
    }
}
