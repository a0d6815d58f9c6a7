//! A YAML tree that remembers where every node starts, built from yaml-rust2's marked events,
//! because messages must name the line and column of the key at fault.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl Pos {
    fn from_marker(m: Marker) -> Pos {
        // yaml-rust2 counts lines from 1 and columns from 0.
        Pos {
            line: m.line().max(1),
            col: m.col() + 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub enum Kind {
    /// Entries in file order; duplicates are kept so the schema walk can name them.
    Map(Vec<(Node, Node)>),
    Seq(Vec<Node>),
    Scalar(Scalar),
}

#[derive(Debug, Clone)]
pub struct Scalar {
    pub text: String,
    /// Quoted or block scalars are always strings; only plain ones resolve to null/bool/number.
    pub plain: bool,
}

/// What a scalar means under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Null,
    Bool(bool),
    Int,
    Float,
    Str,
}

impl Scalar {
    pub fn resolve(&self) -> Resolved {
        if !self.plain {
            return Resolved::Str;
        }
        resolve_plain(&self.text)
    }
}

pub fn resolve_plain(t: &str) -> Resolved {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "-.inf" | ".nan" | ".NaN" | ".NAN" => {
            return Resolved::Float
        }
        _ => {}
    }
    if parse_int(t).is_some() || is_int_syntax(t) {
        return Resolved::Int;
    }
    if is_float_syntax(t) {
        return Resolved::Float;
    }
    Resolved::Str
}

/// Integer syntax of the core schema (decimal, 0x, 0o), whatever its size.
fn is_int_syntax(t: &str) -> bool {
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if let Some(h) = t.strip_prefix("0x") {
        return !h.is_empty() && h.chars().all(|c| c.is_ascii_hexdigit());
    }
    if let Some(o) = t.strip_prefix("0o") {
        return !o.is_empty() && o.chars().all(|c| ('0'..='7').contains(&c));
    }
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
}

/// The value of an integer scalar; None when it is not one or does not fit.
pub fn parse_int(t: &str) -> Option<i128> {
    if let Some(h) = t.strip_prefix("0x") {
        return i128::from_str_radix(h, 16).ok();
    }
    if let Some(o) = t.strip_prefix("0o") {
        return i128::from_str_radix(o, 8).ok();
    }
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    t.parse::<i128>().ok()
}

fn is_float_syntax(t: &str) -> bool {
    let s = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mant, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut parts = mant.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |x: &str| x.chars().all(|c| c.is_ascii_digit());
    let mant_ok = match frac {
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exp_ok = match exp {
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
        None => true,
    };
    mant_ok && exp_ok && (frac.is_some() || exp.is_some())
}

impl Node {
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Map(_) => "a mapping",
            Kind::Seq(_) => "a list",
            Kind::Scalar(s) => match s.resolve() {
                Resolved::Null => "nothing",
                Resolved::Bool(_) => "true/false",
                Resolved::Int => "a number",
                Resolved::Float => "a decimal number",
                Resolved::Str => "a string",
            },
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar(s) if s.resolve() == Resolved::Null)
    }
}

/// Deeper than any topology file needs; a bound so hostile input cannot exhaust the stack.
const MAX_DEPTH: usize = 32;
/// Bound on the nodes written in the file: far above any topology (a few per host), low enough
/// that validation stays fast. A file past it is told so, not that aliases expand.
const MAX_NODES: usize = 250_000;
/// Bound on nodes created by alias expansion (the "billion laughs").
const MAX_ALIAS_NODES: usize = 100_000;

/// Parse one YAML document. Ok(None): the file holds no document (empty or only comments).
/// Err: the position and the parser's message.
pub fn parse(text: &str) -> Result<Option<Node>, (Pos, String)> {
    let mut b = Builder::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut b, true) {
        return Err((Pos::from_marker(*e.marker()), e.info().to_string()));
    }
    if let Some(err) = b.error {
        return Err(err);
    }
    let mut docs = b.docs.into_iter();
    let first = docs.next();
    if let Some(second) = docs.next() {
        return Err((
            second.pos,
            "a second YAML document (after `---`): a topology file holds one".to_string(),
        ));
    }
    Ok(first)
}

enum Frame {
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        key: Option<Node>,
    },
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: HashMap<usize, Node>,
    docs: Vec<Node>,
    error: Option<(Pos, String)>,
    nodes: usize,
    /// Nodes created by expanding aliases.
    alias_nodes: usize,
    /// Nesting below MAX_DEPTH that is being skipped after the depth error.
    skipping: usize,
}

impl Builder {
    fn fail(&mut self, pos: Pos, msg: &str) {
        if self.error.is_none() {
            self.error = Some((pos, msg.to_string()));
        }
    }

    fn count(&mut self, n: usize, pos: Pos) -> bool {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            self.fail(
                pos,
                &format!(
                    "too many nodes: the file holds more than {MAX_NODES} keys, values and \
                     list items, far more than a topology file (is this the right file?)"
                ),
            );
            return false;
        }
        true
    }

    fn count_alias(&mut self, n: usize, pos: Pos) -> bool {
        self.alias_nodes = self.alias_nodes.saturating_add(n);
        if self.alias_nodes > MAX_ALIAS_NODES {
            self.fail(
                pos,
                &format!("too many nodes: aliases (`*name`) expand to more than {MAX_ALIAS_NODES}"),
            );
            return false;
        }
        true
    }

    fn push(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => *key = Some(node),
                Some(k) => {
                    let mut node = node;
                    // `key:` with nothing after it: the parser places the empty value at the
                    // next token, often lines below; the key is where the reader looks.
                    if matches!(&node.kind, Kind::Scalar(s) if s.plain && s.text.is_empty()) {
                        node.pos = k.pos;
                    }
                    entries.push((k, node));
                }
            },
        }
    }
}

fn size(n: &Node) -> usize {
    match &n.kind {
        Kind::Scalar(_) => 1,
        Kind::Seq(items) => 1 + items.iter().map(size).sum::<usize>(),
        Kind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| size(k) + size(v))
                .sum::<usize>()
        }
    }
}

/// `<<: *base` (or a list of them): keys from the merged maps that the map does not set itself.
fn apply_merge(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    let is_merge = |k: &Node| matches!(&k.kind, Kind::Scalar(s) if s.plain && s.text == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return entries;
    }
    let mut own = Vec::new();
    let mut merged = Vec::new();
    for (k, v) in entries {
        if !is_merge(&k) {
            own.push((k, v));
            continue;
        }
        let sources = match v.kind {
            Kind::Map(_) => vec![v],
            Kind::Seq(items) => items,
            // Not a mapping: keep it, the schema walk reports it as an unknown key.
            _ => {
                own.push((k, v));
                continue;
            }
        };
        for src in sources {
            match src.kind {
                Kind::Map(es) => merged.extend(es),
                _ => own.push((k.clone(), src)),
            }
        }
    }
    let key_text = |n: &Node| match &n.kind {
        Kind::Scalar(s) => Some(s.text.clone()),
        _ => None,
    };
    let mut out = own;
    for (k, v) in merged {
        let t = key_text(&k);
        if t.is_some() && out.iter().any(|(ok, _)| key_text(ok) == t) {
            continue;
        }
        out.push((k, v));
    }
    out
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        if self.error.is_some() {
            return;
        }
        let pos = Pos::from_marker(mark);
        if self.skipping > 0 {
            match ev {
                Event::MappingStart(..) | Event::SequenceStart(..) => self.skipping += 1,
                Event::MappingEnd | Event::SequenceEnd => self.skipping -= 1,
                _ => {}
            }
            return;
        }
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                if !self.count(1, pos) {
                    return;
                }
                // `!!str 123` is a string; other tags change nothing here.
                let str_tag = tag
                    .as_ref()
                    .is_some_and(|t| t.suffix == "str" || t.suffix.ends_with(":str"));
                let plain = style == TScalarStyle::Plain && !str_tag;
                self.push(
                    Node {
                        pos,
                        kind: Kind::Scalar(Scalar { text, plain }),
                    },
                    anchor,
                );
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(n) => {
                    let mut n = n.clone();
                    if !self.count_alias(size(&n), pos) {
                        return;
                    }
                    n.pos = pos;
                    self.push(n, 0);
                }
                None => self.fail(pos, "alias to an unknown anchor"),
            },
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                if self.stack.len() >= MAX_DEPTH {
                    self.fail(pos, "nested too deeply");
                    self.skipping = 1;
                    return;
                }
                if !self.count(1, pos) {
                    return;
                }
                self.stack.push(if matches!(ev, Event::MappingStart(..)) {
                    Frame::Map {
                        pos,
                        anchor,
                        entries: Vec::new(),
                        key: None,
                    }
                } else {
                    Frame::Seq {
                        pos,
                        anchor,
                        items: Vec::new(),
                    }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => match self.stack.pop() {
                Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    ..
                }) => {
                    // A block mapping's start mark can lie past its first key; the first key
                    // is where it visibly begins.
                    let pos = entries.first().map_or(pos, |(k, _)| pos.min(k.pos));
                    let kind = Kind::Map(apply_merge(entries));
                    self.push(Node { pos, kind }, anchor);
                }
                Some(Frame::Seq { pos, anchor, items }) => {
                    let pos = items.first().map_or(pos, |i| pos.min(i.pos));
                    self.push(
                        Node {
                            pos,
                            kind: Kind::Seq(items),
                        },
                        anchor,
                    );
                }
                None => self.fail(pos, "unbalanced YAML events"),
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(n: &Node) -> &Vec<(Node, Node)> {
        match &n.kind {
            Kind::Map(e) => e,
            other => panic!("not a map: {other:?}"),
        }
    }

    #[test]
    fn positions_are_one_based_and_point_at_keys_and_values() {
        let doc = parse("a: 1\nhosts:\n  db1:\n    address: x\n")
            .unwrap()
            .unwrap();
        let top = map(&doc);
        assert_eq!(top[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(top[0].1.pos, Pos { line: 1, col: 4 });
        let hosts = map(&top[1].1);
        assert_eq!(hosts[0].0.pos, Pos { line: 3, col: 3 });
        let db1 = map(&hosts[0].1);
        assert_eq!(db1[0].0.pos, Pos { line: 4, col: 5 });
        assert_eq!(db1[0].1.pos, Pos { line: 4, col: 14 });
    }

    #[test]
    fn block_collections_start_at_their_first_entry() {
        let doc = parse("# c\nhosts:\n  db1:\n    address: x\nl:\n  - a\n")
            .unwrap()
            .unwrap();
        assert_eq!(doc.pos, Pos { line: 2, col: 1 });
        let top = map(&doc);
        assert_eq!(top[0].1.pos, Pos { line: 3, col: 3 });
        assert_eq!(top[1].1.pos.line, 6);
    }

    #[test]
    fn syntax_error_has_a_position() {
        let (pos, msg) = parse("a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        assert!(pos.line >= 2, "{pos:?} {msg}");
        assert!(!msg.is_empty());
    }

    #[test]
    fn empty_and_comment_only_files_hold_no_document() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("# nothing\n").unwrap().is_none());
    }

    #[test]
    fn second_document_is_refused() {
        let (pos, msg) = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(pos.line, 3);
        assert!(msg.contains("second YAML document"), "{msg}");
    }

    #[test]
    fn scalars_resolve_like_the_core_schema() {
        for (t, r) in [
            ("", Resolved::Null),
            ("~", Resolved::Null),
            ("true", Resolved::Bool(true)),
            ("False", Resolved::Bool(false)),
            ("yes", Resolved::Str),
            ("3306", Resolved::Int),
            ("-1", Resolved::Int),
            ("0x1F", Resolved::Int),
            ("99999999999999999999999999999999999999999", Resolved::Int),
            ("1.5", Resolved::Float),
            ("1e3", Resolved::Float),
            ("abc", Resolved::Str),
            ("10.0.1.10", Resolved::Str),
            ("1.2.3", Resolved::Str),
        ] {
            assert_eq!(resolve_plain(t), r, "{t:?}");
        }
        assert_eq!(parse_int("0x10"), Some(16));
        assert_eq!(parse_int("-5"), Some(-5));
        assert_eq!(parse_int("1.0"), None);
    }

    #[test]
    fn aliases_and_merge_keys_expand() {
        let doc = parse("base: &b {port: 1, user: u}\nx:\n  <<: *b\n  port: 2\n")
            .unwrap()
            .unwrap();
        let x = map(&map(&doc)[1].1);
        let keys: Vec<_> = x
            .iter()
            .map(|(k, v)| match (&k.kind, &v.kind) {
                (Kind::Scalar(k), Kind::Scalar(v)) => format!("{}={}", k.text, v.text),
                _ => String::new(),
            })
            .collect();
        assert_eq!(keys, ["port=2", "user=u"]);
    }

    #[test]
    fn alias_bomb_is_bounded() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        let (_, msg) = parse(&text).unwrap_err();
        assert!(msg.contains("too many nodes"), "{msg}");
    }

    #[test]
    fn a_big_file_without_aliases_is_not_told_about_aliases() {
        let mut text = String::from("x: [");
        for _ in 0..(MAX_NODES + 10) {
            text.push_str("1,");
        }
        text.push_str("1]\n");
        let (_, msg) = parse(&text).unwrap_err();
        assert!(msg.contains("too many nodes"), "{msg}");
        assert!(!msg.contains("alias"), "{msg}");
        assert!(msg.contains("keys, values and list items"), "{msg}");
        // Aliases are bounded on their own, below that.
        let mut text = String::from("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: [");
        for _ in 0..10_001 {
            text.push_str("*a,");
        }
        text.push_str("*a]\n");
        let (_, msg) = parse(&text).unwrap_err();
        assert!(msg.contains("aliases (`*name`) expand"), "{msg}");
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let text = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        // Either yaml-rust2's own limit or ours: an error, not a stack overflow.
        assert!(parse(&text).is_err());
        let mut block = String::new();
        for i in 0..200 {
            block.push_str(&" ".repeat(i));
            block.push_str("k:\n");
        }
        let (_, msg) = parse(&block).unwrap_err();
        assert!(msg.contains("nested too deeply"), "{msg}");
    }
}
