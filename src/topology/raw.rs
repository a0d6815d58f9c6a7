//! The mirror of the file: every key the format knows, each value parsed and range-checked where
//! it is written (so a bad default is reported once, not once per host), with its position.
//! Walking the positioned tree instead of deriving serde lets one pass collect every problem.

use std::path::{Path, PathBuf};

use super::env::{expand, expand_home, Env, Expanded};
use super::model::SqlRoute;
use super::problems::{did_you_mean, Problems};
use super::tree::{parse_int, Kind, Node, Pos, Resolved};
use crate::secret::Secret;

mod watch;
// The `proxies:` and `vip:` blocks (application endpoints): a child module, so it reads them
// with the same positioned helpers.
mod proxies;
pub use proxies::{RawProxy, RawVip, PROXY_KEYS, VIP_KEYS};

/// A value and where it was written.
#[derive(Debug, Clone)]
pub struct At<T> {
    pub v: T,
    pub pos: Pos,
    /// Dotted key path, e.g. `hosts.db2.mysql.port`.
    pub key: String,
}

impl<T> At<T> {
    fn new(v: T, node: &Node, key: &str) -> At<T> {
        At {
            v,
            pos: node.pos,
            key: key.to_string(),
        }
    }

    /// The same place, another value.
    fn map<U>(self, f: impl FnOnce(T) -> U) -> At<U> {
        At {
            v: f(self.v),
            pos: self.pos,
            key: self.key,
        }
    }

    /// The same place, another value; None when `f` refuses the value.
    fn and_then<U>(self, f: impl FnOnce(T) -> Option<U>) -> Option<At<U>> {
        Some(At {
            v: f(self.v)?,
            pos: self.pos,
            key: self.key,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    Ssh,
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JumpSpec {
    /// None: the host's ssh user.
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Default)]
pub struct RawSsh {
    pub user: Option<At<String>>,
    pub port: Option<At<u16>>,
    pub identity_file: Option<At<PathBuf>>,
    pub known_hosts: Option<At<PathBuf>>,
    pub jump: Option<At<JumpSpec>>,
    pub sudo: Option<At<bool>>,
    pub connect_timeout: Option<At<u64>>,
}

#[derive(Debug, Default)]
pub struct RawMysql {
    pub user: Option<At<String>>,
    /// From `password` or `password_file`.
    pub password: Option<At<Secret>>,
    pub port: Option<At<u16>>,
    pub route: Option<At<SqlRoute>>,
}

/// The keys `defaults` and a host share.
#[derive(Debug, Default)]
pub struct RawCommon {
    /// Where the section is (`defaults:` or the host's key).
    pub pos: Pos,
    pub mysql_pos: Option<Pos>,
    pub ssh: RawSsh,
    pub mysql: RawMysql,
    pub transport: Option<At<TransportKind>>,
    pub config_file: Option<At<PathBuf>>,
    pub restart: Option<At<String>>,
    pub error_log: Option<At<PathBuf>>,
}

#[derive(Debug, Default)]
pub struct RawReplication {
    pub pos: Pos,
    pub user: Option<At<String>>,
    pub password: Option<At<Secret>>,
    /// `password:` or `password_file:` was written (even if it was bad).
    pub password_given: bool,
    pub gtid: Option<At<bool>>,
    pub ssl: Option<At<bool>>,
    /// `seed:` auto | logical | physical.
    pub seed: Option<At<String>>,
}

#[derive(Debug)]
pub struct RawHost {
    pub name: String,
    /// Position of the host's key.
    pub pos: Pos,
    pub address: Option<At<String>>,
    pub master: Option<At<String>>,
    pub server_id: Option<At<u32>>,
    pub read_only: Option<At<bool>>,
    pub common: RawCommon,
    /// Its address, ports or transport were wrong: the duplicate-address check skips it rather
    /// than compare guesses.
    pub place_unsure: bool,
    /// `server_id` was written but is wrong: the duplicate-id check skips it.
    pub server_id_bad: bool,
    /// `mysql.password` or `password_file` was written (even if it was bad).
    pub mysql_password_given: bool,
}

#[derive(Debug, Default)]
pub struct RawFile {
    pub name: Option<At<String>>,
    pub defaults: RawCommon,
    pub defaults_broken: bool,
    pub defaults_mysql_password_given: bool,
    pub replication: RawReplication,
    pub hosts: Vec<RawHost>,
    /// Position of `hosts:`, if written.
    pub hosts_pos: Option<Pos>,
    /// The `galera:` block, if written.
    pub galera: Option<super::galera::RawGalera>,
    /// `watch:`, read and checked (see `raw/watch.rs`).
    pub watch: Option<super::model::Watch>,
    /// `proxies:`, in file order.
    pub proxies: Vec<RawProxy>,
    /// `vip:`, if written.
    pub vip: Option<RawVip>,
}

pub const TOP_KEYS: &[&str] = &[
    "name",
    "defaults",
    "replication",
    "hosts",
    "galera",
    "watch",
    "proxies",
    "vip",
];
pub const DEFAULTS_KEYS: &[&str] = &[
    "ssh",
    "mysql",
    "transport",
    "config_file",
    "restart",
    "error_log",
];
pub const HOST_KEYS: &[&str] = &[
    "address",
    "master",
    "source",
    "server_id",
    "read_only",
    "ssh",
    "mysql",
    "transport",
    "config_file",
    "restart",
    "error_log",
];
pub const SSH_KEYS: &[&str] = &[
    "user",
    "port",
    "identity_file",
    "known_hosts",
    "jump",
    "sudo",
    "connect_timeout",
];
pub const MYSQL_KEYS: &[&str] = &["user", "password", "password_file", "port", "connect"];
pub const REPLICATION_KEYS: &[&str] = &["user", "password", "password_file", "gtid", "ssl", "seed"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Level {
    Top,
    Defaults,
    Host,
    Ssh,
    Mysql,
    Replication,
    Galera,
    Proxy,
    Vip,
}

impl Level {
    fn keys(self) -> &'static [&'static str] {
        match self {
            Level::Top => TOP_KEYS,
            Level::Defaults => DEFAULTS_KEYS,
            Level::Host => HOST_KEYS,
            Level::Ssh => SSH_KEYS,
            Level::Mysql => MYSQL_KEYS,
            Level::Replication => REPLICATION_KEYS,
            Level::Galera => super::galera::GALERA_KEYS,
            Level::Proxy => PROXY_KEYS,
            Level::Vip => VIP_KEYS,
        }
    }
}

/// Where a key that is unknown at `level` would belong, for keys users put one level off.
fn misplaced(level: Level, key: &str) -> Option<String> {
    let in_ssh = SSH_KEYS.contains(&key);
    let in_mysql = MYSQL_KEYS.contains(&key);
    let host_only = ["address", "master", "source", "server_id", "read_only"].contains(&key);
    match level {
        Level::Top if host_only => {
            return Some(format!("`{key}` belongs to a host, under `hosts:`"))
        }
        Level::Top if DEFAULTS_KEYS.contains(&key) => {
            return Some(format!("`{key}` belongs under `defaults:` or a host"))
        }
        Level::Top if in_ssh || in_mysql => {
            return Some(format!(
                "`{key}` belongs under `defaults:` (in `ssh:` or `mysql:`)"
            ))
        }
        Level::Top if super::galera::GALERA_KEYS.contains(&key) => {
            return Some(format!("`{key}` belongs under `galera:`"))
        }
        Level::Top if key == "gtid" || key == "ssl" => {
            return Some(format!("`{key}` belongs under `replication:`"))
        }
        Level::Defaults if host_only => {
            return Some(format!("`{key}` is set per host, under `hosts:`"))
        }
        Level::Defaults | Level::Host if key == "gtid" || key == "ssl" => {
            return Some(format!(
                "`{key}` belongs under the top-level `replication:`"
            ))
        }
        Level::Defaults | Level::Host if in_ssh && in_mysql => {
            return Some(format!("`{key}` belongs under `ssh:` or `mysql:`"))
        }
        Level::Defaults | Level::Host if in_ssh => {
            return Some(format!("`{key}` belongs under `ssh:`"))
        }
        Level::Defaults | Level::Host if in_mysql => {
            return Some(format!("`{key}` belongs under `mysql:`"))
        }
        Level::Host if ["slaves", "slave", "replicas", "role", "roles", "peer"].contains(&key) => {
            return Some(
                "roles and slaves are derived: write `master:` on each slave instead".to_string(),
            )
        }
        Level::Host if ["host", "hostname", "ip", "addr"].contains(&key) => {
            return Some("did you mean `address`?".to_string())
        }
        Level::Ssh if in_mysql => return Some(format!("`{key}` belongs under `mysql:`")),
        Level::Mysql if in_ssh => return Some(format!("`{key}` belongs under `ssh:`")),
        _ => {}
    }
    None
}

/// Characters that do not show in an editor.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200b}'..='\u{200f}' | '\u{2060}' | '\u{feff}' | '\u{00ad}'
    )
}

fn unknown_key_message(level: Level, key: &str) -> String {
    if let Some(c) = key.chars().find(|&c| is_invisible(c)) {
        let what = if c == '\u{feff}' {
            "a byte order mark (U+FEFF)".to_string()
        } else {
            format!("an invisible character (U+{:04X})", u32::from(c))
        };
        let clean: String = key.chars().filter(|&c| !is_invisible(c)).collect();
        return format!("unknown key: `{clean}` with {what} in it; remove that character");
    }
    // A key that exists one level off is more likely misplaced than mistyped (`ssl` under a
    // host is not a typo of `ssh`).
    if let Some(hint) = misplaced(level, key) {
        return format!("unknown key; {hint}");
    }
    if let Some(near) = did_you_mean(key, level.keys().iter().copied()) {
        return format!("unknown key; did you mean `{near}`?");
    }
    format!("unknown key (known here: {})", level.keys().join(", "))
}

/// Shown in messages instead of the value: short, and only ever the text as written.
fn shown(text: &str) -> String {
    let t: String = text.chars().take(40).collect();
    let more = t.len() < text.len();
    // A control character in a message would act on the terminal; show it escaped.
    let t: String = t
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    if more {
        format!("`{t}…`")
    } else {
        format!("`{t}`")
    }
}

/// A character in words, for "contains ..." messages.
fn char_name(c: char) -> String {
    match c {
        '\n' => "a newline".to_string(),
        '\r' => "a carriage return".to_string(),
        '\t' => "a tab".to_string(),
        '\u{feff}' => "a byte order mark (U+FEFF)".to_string(),
        c if c.is_control() => format!("a control character (U+{:04X})", u32::from(c)),
        ' ' => "a space".to_string(),
        '\'' => "a quote (`'`)".to_string(),
        '"' => "a double quote (`\"`)".to_string(),
        '`' => "a backtick".to_string(),
        c => format!("`{c}`"),
    }
}

/// Characters that are special to a POSIX shell somewhere in a word.
const SHELL_SPECIAL: &str = "`$;&|<>()'\"\\*?[]{}!#^~";

/// Why a user name (SSH or MySQL) is refused: it is written into client option files and
/// command arguments, where a newline or a quote would end the value and start another option.
fn bad_user_name(u: &str, ssh: bool) -> Option<String> {
    if u.starts_with('-') {
        return Some(format!(
            "{} starts with `-`: it would be read as an option",
            shown(u)
        ));
    }
    let bad = u.chars().find(|&c| {
        c.is_control()
            || matches!(c, '\'' | '"' | '`' | '\\' | '\u{feff}')
            || (ssh && (c.is_whitespace() || c == '@'))
    })?;
    Some(format!(
        "{} contains {}: not allowed in a user name",
        shown(u),
        char_name(bad)
    ))
}

/// Why an address is refused, if it is. An address reaches SSH, the replicas' CHANGE MASTER
/// and command lines on hosts: only an IP address or a DNS name may pass.
fn bad_address(v: &str) -> Option<String> {
    let not_an_address = || {
        Some(format!(
            "{} is not an IP address or DNS name (no user@, URL or path)",
            shown(v)
        ))
    };
    let with_port = || {
        Some(format!(
            "{} includes a port: write the port as `mysql.port` or `ssh.port`",
            shown(v)
        ))
    };
    if v.chars().any(char::is_whitespace) {
        return Some(format!("{} contains spaces", shown(v)));
    }
    if v.contains("://") || v.contains('/') || v.contains('@') {
        return not_an_address();
    }
    if let Some(rest) = v.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((inner, "")) if is_ipv6(inner) => None,
            Some((inner, after)) if is_ipv6(inner) && after.starts_with(':') => with_port(),
            _ => Some(format!("{} is not a valid IPv6 address", shown(v))),
        };
    }
    if let Some(bad) = v.chars().find(|&c| {
        c.is_control() || c == '\u{feff}' || "'\"`\\".contains(c) || SHELL_SPECIAL.contains(c)
    }) {
        return Some(format!(
            "{} contains {}: not allowed in an IP address or DNS name",
            shown(v),
            char_name(bad)
        ));
    }
    if v.starts_with('-') {
        return Some(format!(
            "{} starts with `-`: it would be read as an option, not an address",
            shown(v)
        ));
    }
    match v.matches(':').count() {
        0 => {}
        1 => return with_port(),
        _ if is_ipv6(v) => return None,
        _ => return Some(format!("{} is not a valid IPv6 address", shown(v))),
    }
    if let Some(bad) = v
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Some(format!(
            "{} contains {}: an address is letters, digits, `.` and `-` (IDN names in \
             their xn-- form)",
            shown(v),
            char_name(bad)
        ));
    }
    None
}

/// An IPv6 address, with an optional `%zone`.
fn is_ipv6(s: &str) -> bool {
    let (addr, zone) = match s.split_once('%') {
        Some((a, z)) => (a, Some(z)),
        None => (s, None),
    };
    addr.parse::<std::net::Ipv6Addr>().is_ok()
        && zone.is_none_or(|z| {
            !z.is_empty()
                && z.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        })
}

/// Why a path is refused: a control character anywhere; on a host (`remote`), also a
/// character the shell treats specially, since host paths end up in remote commands.
fn bad_path(p: &str, remote: bool) -> Option<String> {
    let bad = p.chars().find(|&c| {
        c.is_control()
            || c == '\u{feff}'
            || (remote && (c.is_whitespace() || SHELL_SPECIAL.contains(c)))
    })?;
    let why = if remote {
        "not allowed in a path on the host (write a plain path: letters, digits, `/`, `.`, `_`, \
         `-`)"
    } else {
        "not allowed in a path"
    };
    Some(format!("{} contains {}: {why}", shown(p), char_name(bad)))
}

pub struct Ctx<'a> {
    pub problems: Problems,
    /// Every `${VAR}` the file names (children on this machine must not inherit them).
    pub vars: std::collections::BTreeSet<String>,
    pub env: Env<'a>,
    /// The topology file's directory: relative local paths start here.
    pub base_dir: PathBuf,
}

/// A scalar's text, as written and expanded.
struct Text {
    written: String,
    plain: bool,
    exp: Expanded,
}

impl Text {
    /// What the scalar means where a number or a boolean is expected. A quoted scalar is a
    /// string, as in YAML itself, except a quoted `${VAR}`: that is the natural way to write a
    /// variable, so its value is read as if written plain. None: a string.
    fn typed(&self) -> Option<Resolved> {
        (self.plain || !self.exp.vars.is_empty())
            .then(|| super::tree::resolve_plain(&self.exp.text))
    }

    /// The value as written, for "found ..." (never the expansion: it may be a secret).
    fn found(&self) -> String {
        if !self.exp.vars.is_empty() {
            format!(
                "{} (from {})",
                shown(&self.written),
                self.exp.vars.join(", ")
            )
        } else if self.plain {
            shown(&self.written)
        } else {
            format!("the string {}", shown(&self.written))
        }
    }
}

impl Ctx<'_> {
    fn problem(&mut self, pos: Pos, key: impl Into<String>, msg: impl Into<String>) {
        self.problems.add(pos, key, msg);
    }

    /// The entries of a mapping whose keys are in `level`'s list. Unknown and repeated keys are
    /// reported. A null value (`defaults:` with nothing under it) counts as empty.
    pub(super) fn entries<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        level: Level,
    ) -> Vec<(&'n str, &'n Node, &'n Node)> {
        let entries = match &node.kind {
            Kind::Map(e) => e,
            _ if node.is_null() => return Vec::new(),
            _ => {
                let what = if level == Level::Top {
                    "the file".to_string()
                } else {
                    format!("`{}`", path.rsplit('.').next().unwrap_or(path))
                };
                self.problem(
                    node.pos,
                    path,
                    format!(
                        "{what} must be a mapping of `key: value` lines, found {}",
                        node.describe()
                    ),
                );
                return Vec::new();
            }
        };
        let mut out: Vec<(&str, &Node, &Node)> = Vec::new();
        for (k, v) in entries {
            let Some(name) = key_text(k) else {
                self.problem(k.pos, path, "a key must be a plain name");
                continue;
            };
            let visible: String = name.chars().filter(|&c| !is_invisible(c)).collect();
            let key = join(path, &visible);
            // Extension keys, as in compose files: a place for anchors, ignored otherwise.
            if level == Level::Top && name.starts_with("x-") {
                continue;
            }
            if !level.keys().contains(&name) {
                self.problem(k.pos, &key, unknown_key_message(level, name));
                continue;
            }
            if let Some((_, first, _)) = out.iter().find(|(n, _, _)| *n == name) {
                let line = first.pos.line;
                self.problem(
                    k.pos,
                    &key,
                    format!("duplicate key (first at line {line}); only one is allowed"),
                );
                continue;
            }
            out.push((name, k, v));
        }
        out
    }

    /// Any non-null scalar's text, expanded. `what` completes "expected ...".
    fn text(&mut self, node: &Node, key: &str, what: &str) -> Option<Text> {
        let s = match &node.kind {
            Kind::Scalar(s) if s.resolve() == Resolved::Null => {
                self.problem(node.pos, key, format!("no value; expected {what}"));
                return None;
            }
            Kind::Scalar(s) => s,
            _ => {
                self.problem(
                    node.pos,
                    key,
                    format!("expected {what}, found {}", node.describe()),
                );
                return None;
            }
        };
        let expanded = expand(&s.text, self.env);
        if let Ok(exp) = &expanded {
            self.vars.extend(exp.vars.iter().cloned());
        }
        match expanded {
            Ok(exp) => Some(Text {
                written: s.text.clone(),
                plain: s.plain,
                exp,
            }),
            Err(errors) => {
                for e in errors {
                    self.problem(node.pos, key, e);
                }
                None
            }
        }
    }

    /// A string; numbers and booleans count as their text (`user: 1234` is a user name).
    fn string(&mut self, node: &Node, key: &str, what: &str) -> Option<At<String>> {
        let t = self.text(node, key, what)?;
        Some(At::new(t.exp.text, node, key))
    }

    pub(super) fn nonempty_string(
        &mut self,
        node: &Node,
        key: &str,
        what: &str,
    ) -> Option<At<String>> {
        let s = self.string(node, key, what)?;
        if s.v.trim().is_empty() {
            self.problem(node.pos, key, format!("is empty; expected {what}"));
            return None;
        }
        Some(s)
    }

    fn int(&mut self, node: &Node, key: &str, what: &str, lo: i128, hi: i128) -> Option<At<i128>> {
        let t = self.text(node, key, what)?;
        let Some(v) = (match t.typed() {
            // Too big for i128 is still out of range, not "not a number".
            Some(Resolved::Int) => parse_int(&t.exp.text).or(Some(i128::MAX)),
            _ => None,
        }) else {
            let mut found = t.found();
            if t.typed() == Some(Resolved::Float) {
                found.push_str(" (not a whole number)");
            }
            self.problem(node.pos, key, format!("expected {what}, found {found}"));
            return None;
        };
        if v < lo || v > hi {
            let written = if t.exp.vars.is_empty() {
                t.written.clone()
            } else {
                t.found()
            };
            let msg = format!("{written} is out of range; expected {what}");
            self.problem(node.pos, key, msg);
            return None;
        }
        Some(At::new(v, node, key))
    }

    fn port(&mut self, node: &Node, key: &str) -> Option<At<u16>> {
        let a = self.int(node, key, "a port number in 1..65535", 1, 65535)?;
        a.and_then(|v| u16::try_from(v).ok())
    }

    fn boolean(&mut self, node: &Node, key: &str) -> Option<At<bool>> {
        let t = self.text(node, key, "true or false")?;
        if let Some(Resolved::Bool(b)) = t.typed() {
            return Some(At::new(b, node, key));
        }
        let lower = t.exp.text.to_ascii_lowercase();
        let hint = if ["yes", "no", "on", "off", "y", "n"].contains(&lower.as_str()) {
            " (YAML 1.2: write true or false)"
        } else {
            ""
        };
        let msg = format!("expected true or false, found {}{hint}", t.found());
        self.problem(node.pos, key, msg);
        None
    }

    /// One of a few words; near misses get a suggestion.
    pub(super) fn choice(
        &mut self,
        node: &Node,
        key: &str,
        options: &[&str],
    ) -> Option<At<String>> {
        let list = options
            .iter()
            .map(|o| format!("`{o}`"))
            .collect::<Vec<_>>()
            .join(" or ");
        let s = self.string(node, key, &list)?;
        if options.contains(&s.v.as_str()) {
            return Some(s);
        }
        let mut msg = format!("expected {list}, found {}", shown(&s.v));
        if let Some(near) = did_you_mean(&s.v, options.iter().copied()) {
            msg.push_str(&format!("; did you mean `{near}`?"));
        }
        self.problem(node.pos, key, msg);
        None
    }

    /// A path on this machine: `~` expanded, relative to the topology file's directory.
    fn local_path(&mut self, node: &Node, key: &str) -> Option<At<PathBuf>> {
        let s = self.nonempty_string(node, key, "a path")?;
        if let Some(msg) = bad_path(&s.v, false) {
            self.problem(node.pos, key, msg);
            return None;
        }
        match expand_home(&s.v, self.env) {
            Ok(p) => Some(s.map(|_| self.base_dir.join(p))),
            Err(e) => {
                self.problem(node.pos, key, e);
                None
            }
        }
    }

    /// A user name: SSH (`ssh`: a login name) or MySQL.
    fn user_name(&mut self, node: &Node, key: &str, ssh: bool) -> Option<At<String>> {
        let u = self.nonempty_string(node, key, "a user name")?;
        if let Some(msg) = bad_user_name(&u.v, ssh) {
            self.problem(node.pos, key, msg);
            return None;
        }
        Some(u)
    }

    /// A local file SSH reads (a key, known_hosts): when it exists it must be a regular file. A
    /// FIFO or a device would hang the connect or read without end; the transport refuses them
    /// too (the file may change after loading), this names the key and line up front.
    fn small_local_file(&mut self, node: &Node, key: &str) -> Option<At<PathBuf>> {
        let p = self.local_path(node, key)?;
        if let Some(what) = crate::localfile::not_regular(&p.v) {
            let msg = format!("{} is {what}, not a regular file", p.v.display());
            self.problem(node.pos, key, msg);
            return None;
        }
        Some(p)
    }

    /// A path on the database host: it must be absolute, there is no directory to be relative to.
    fn remote_path(&mut self, node: &Node, key: &str) -> Option<At<PathBuf>> {
        let s = self.nonempty_string(node, key, "an absolute path on the host")?;
        if !s.v.starts_with('/') {
            self.problem(
                node.pos,
                key,
                format!("{} is not an absolute path on the host", shown(&s.v)),
            );
            return None;
        }
        if let Some(msg) = bad_path(&s.v, true) {
            self.problem(node.pos, key, msg);
            return None;
        }
        Some(s.map(PathBuf::from))
    }

    /// `password:` (inline, `${VAR}`) or `password_file:`. An empty password is accepted only
    /// when written literally as `""` and `allow_empty` is set. Values never reach a message.
    fn password(
        &mut self,
        node: &Node,
        key: &str,
        from_file: bool,
        allow_empty: bool,
    ) -> Option<At<Secret>> {
        let how_empty = if allow_empty {
            "write password: \"\" for an empty password"
        } else {
            "replication needs a password"
        };
        let (secret, vars, literal_empty) = if from_file {
            let path = self.local_path(node, key)?;
            let text = match read_small_file(&path.v) {
                Ok(t) => t,
                Err(e) => {
                    let p = path.v.display();
                    self.problem(node.pos, key, format!("cannot read {p}: {e}"));
                    return None;
                }
            };
            let trimmed = text.trim_end_matches(['\n', '\r']);
            if trimmed.is_empty() {
                let p = path.v.display();
                self.problem(node.pos, key, format!("{p} is empty; {how_empty}"));
                return None;
            }
            (trimmed.to_string(), Vec::new(), false)
        } else {
            let t = match &node.kind {
                Kind::Scalar(s) if s.resolve() == Resolved::Null => {
                    self.problem(node.pos, key, format!("no value; {how_empty}"));
                    return None;
                }
                _ => self.text(node, key, "a password")?,
            };
            let literal_empty = !t.plain && t.written.is_empty();
            (t.exp.text, t.exp.vars, literal_empty)
        };
        if secret.is_empty() {
            let msg = if !vars.is_empty() {
                format!(
                    "is empty (environment variable {} is empty)",
                    vars.join(", ")
                )
            } else if allow_empty && literal_empty {
                String::new()
            } else {
                format!("is empty; {how_empty}")
            };
            if !msg.is_empty() {
                self.problem(node.pos, key, msg);
                return None;
            }
        }
        Some(At::new(Secret::new(secret), node, key))
    }

    fn jump(&mut self, node: &Node, key: &str) -> Option<At<JumpSpec>> {
        let s = self.nonempty_string(node, key, "user@host[:port]")?;
        match parse_jump(&s.v) {
            Ok(v) => Some(s.map(|_| v)),
            Err(e) => {
                self.problem(node.pos, key, e);
                None
            }
        }
    }
}

fn key_text(k: &Node) -> Option<&str> {
    match &k.kind {
        Kind::Scalar(s) if s.resolve() != Resolved::Null => Some(s.text.as_str()),
        _ => None,
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Read at most 64 KiB of a regular file: a password file is a line, and /dev/zero or a FIFO
/// must not hang the loader.
fn read_small_file(path: &Path) -> Result<String, String> {
    use crate::localfile::{read_regular, ReadError};
    let buf = read_regular(path, 64 * 1024).map_err(|e| match e {
        ReadError::NotFound => "No such file or directory".to_string(),
        ReadError::NotRegular(what) => format!("it is {what}, not a regular file"),
        ReadError::TooLarge(_) => "larger than 64 KiB: not a password file".to_string(),
        ReadError::Io(e) => e.to_string(),
    })?;
    String::from_utf8(buf).map_err(|_| "not UTF-8 text".to_string())
}

/// `[user@]host[:port]`, with `[v6]:port` for IPv6.
pub fn parse_jump(s: &str) -> Result<JumpSpec, String> {
    let bad = || format!("expected user@host[:port], found {}", shown(s));
    let (user, hostport) = match s.rsplit_once('@') {
        Some((u, h)) if !u.is_empty() => (Some(u.to_string()), h),
        Some(_) => return Err(bad()),
        None => (None, s),
    };
    let (host, port) = if let Some(rest) = hostport.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (h, None),
            _ => (h, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match hostport.matches(':').count() {
            0 => (hostport, None),
            1 => {
                let (h, p) = hostport.split_once(':').ok_or_else(bad)?;
                (h, Some(p))
            }
            // A bare IPv6 address, no port.
            _ => (hostport, None),
        }
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(bad());
    }
    if let Some(m) = bad_address(host) {
        return Err(format!("jump host: {m}"));
    }
    if let Some(m) = user.as_deref().and_then(|u| bad_user_name(u, true)) {
        return Err(format!("jump user: {m}"));
    }
    let port = match port {
        None => 22,
        Some(p) => match p.parse::<u32>() {
            Ok(n) if (1..=65535).contains(&n) => u16::try_from(n).map_err(|_| bad())?,
            _ => return Err(format!("port in {} must be in 1..65535", shown(s))),
        },
    };
    Ok(JumpSpec {
        user,
        host: host.to_string(),
        port,
    })
}

/// Host names appear in messages, channel names and config comments: keep them plain.
pub fn check_host_name(name: &str) -> Result<(), String> {
    let ok_first = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok_first && ok_rest && name.len() <= 64 {
        Ok(())
    } else {
        Err(format!(
            "host name {} is not allowed: use up to 64 letters, digits, `.`, `_` and `-`, \
             starting with a letter or digit",
            shown(name)
        ))
    }
}

/// Walk the whole document. Problems go to `ctx`; what could be read is returned, or None when
/// the file is not a mapping at all (then nothing else is worth reporting).
pub fn read_file(doc: Option<&Node>, ctx: &mut Ctx) -> Option<RawFile> {
    let mut raw = RawFile::default();
    let Some(doc) = doc.filter(|d| !d.is_null()) else {
        ctx.problem(
            Pos { line: 1, col: 1 },
            "",
            "the file is empty: a topology needs at least `hosts:`",
        );
        return None;
    };
    if !matches!(doc.kind, Kind::Map(_)) {
        ctx.problem(
            doc.pos,
            "",
            format!(
                "the file must be a mapping with `hosts:` (and `name`, `defaults`, \
                 `replication`), found {}",
                doc.describe()
            ),
        );
        return None;
    }
    let mut saw_hosts = false;
    for (name, k, v) in ctx.entries(doc, "", Level::Top) {
        match name {
            "name" => {
                raw.name = ctx
                    .nonempty_string(v, "name", "a name for the cluster")
                    .and_then(
                        |n| match n.v.chars().find(|c| c.is_control() || *c == '\u{feff}') {
                            Some(c) => {
                                let msg = format!("{} contains {}", shown(&n.v), char_name(c));
                                ctx.problem(n.pos, "name", msg);
                                None
                            }
                            None => Some(n),
                        },
                    )
            }
            "defaults" => {
                let before = ctx.problems.len();
                raw.defaults = read_common(v, k.pos, "defaults", Level::Defaults, ctx);
                raw.defaults_mysql_password_given = has_password(v, "mysql");
                raw.defaults_broken = ctx.problems.len() > before;
            }
            "replication" => raw.replication = read_replication(v, k.pos, ctx),
            "galera" => raw.galera = Some(super::galera::read_galera(v, k.pos, ctx)),
            "watch" => raw.watch = watch::read_watch(v, k.pos, ctx),
            "hosts" => {
                saw_hosts = true;
                raw.hosts_pos = Some(k.pos);
                raw.hosts = read_hosts(v, k.pos, ctx);
            }
            "proxies" => raw.proxies = proxies::read_proxies(v, k.pos, ctx),
            "vip" => raw.vip = proxies::read_vip(v, k.pos, ctx),
            _ => {}
        }
    }
    if !saw_hosts {
        ctx.problem(
            doc.pos,
            "hosts",
            "missing: a topology needs `hosts:`, a mapping of host name -> host",
        );
    }
    Some(raw)
}

/// Was `section.password` or `section.password_file` written under this mapping?
fn has_password(node: &Node, section: &str) -> bool {
    let Kind::Map(entries) = &node.kind else {
        return false;
    };
    entries.iter().any(|(k, v)| {
        key_text(k) == Some(section)
            && matches!(&v.kind, Kind::Map(inner) if inner.iter().any(|(k2, _)| {
                matches!(key_text(k2), Some("password" | "password_file"))
            }))
    })
}

fn read_hosts(node: &Node, key_pos: Pos, ctx: &mut Ctx) -> Vec<RawHost> {
    let entries = match &node.kind {
        Kind::Map(e) => e,
        _ if node.is_null() => {
            ctx.problem(
                key_pos,
                "hosts",
                "no hosts: a topology needs at least one host",
            );
            return Vec::new();
        }
        Kind::Seq(_) => {
            ctx.problem(
                node.pos,
                "hosts",
                "must be a mapping of host name -> host (`db1: {address: ...}`), found a list",
            );
            return Vec::new();
        }
        _ => {
            ctx.problem(
                node.pos,
                "hosts",
                format!(
                    "must be a mapping of host name -> host, found {}",
                    node.describe()
                ),
            );
            return Vec::new();
        }
    };
    if entries.is_empty() {
        ctx.problem(
            key_pos,
            "hosts",
            "no hosts: a topology needs at least one host",
        );
    }
    let mut hosts: Vec<RawHost> = Vec::new();
    // Name -> index, so a file with many hosts is not checked in quadratic time.
    let mut seen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (k, v) in entries {
        let Some(name) = key_text(k) else {
            ctx.problem(k.pos, "hosts", "a host name must be a plain name");
            continue;
        };
        let path = format!("hosts.{name}");
        if let Err(e) = check_host_name(name) {
            ctx.problem(k.pos, &path, e);
            continue;
        }
        if let Some(first) = seen.get(name).map(|&i| &hosts[i]) {
            let line = first.pos.line;
            ctx.problem(
                k.pos,
                &path,
                format!("host `{name}` is defined twice (first at line {line}); host names must be unique"),
            );
            continue;
        }
        seen.insert(name.to_string(), hosts.len());
        hosts.push(read_host(name, k.pos, v, &path, ctx));
    }
    hosts
}

fn read_host(name: &str, pos: Pos, node: &Node, path: &str, ctx: &mut Ctx) -> RawHost {
    let mut host = RawHost {
        name: name.to_string(),
        pos,
        address: None,
        master: None,
        server_id: None,
        read_only: None,
        common: RawCommon {
            pos,
            ..RawCommon::default()
        },
        place_unsure: false,
        server_id_bad: false,
        mysql_password_given: has_password(node, "mysql"),
    };
    if !matches!(node.kind, Kind::Map(_)) && !node.is_null() {
        ctx.problem(
            node.pos,
            path,
            format!(
                "a host must be a mapping (`address: ...`, `master: ...`), found {}",
                node.describe()
            ),
        );
        return host;
    }
    let entries = ctx.entries(node, path, Level::Host);
    let mut source: Option<At<String>> = None;
    for &(key, _, v) in &entries {
        let kp = join(path, key);
        match key {
            "address" => {
                let before = ctx.problems.len();
                host.address = ctx
                    .nonempty_string(v, &kp, "an IP address or DNS name")
                    .and_then(|a| check_address(a, ctx));
                host.place_unsure |= ctx.problems.len() > before;
            }
            "master" => host.master = ctx.nonempty_string(v, &kp, "the name of a host"),
            "source" => source = ctx.nonempty_string(v, &kp, "the name of a host"),
            "server_id" => {
                let before = ctx.problems.len();
                host.server_id = ctx
                    .int(v, &kp, "a server_id in 1..4294967295", 1, 4_294_967_295)
                    .and_then(|a| a.and_then(|v| u32::try_from(v).ok()));
                host.server_id_bad = ctx.problems.len() > before;
            }
            "read_only" => host.read_only = ctx.boolean(v, &kp),
            _ => {}
        }
    }
    let has = |k: &str| {
        entries
            .iter()
            .find(|(n, _, _)| *n == k)
            .map(|(_, kn, _)| kn.pos)
    };
    if let (Some(mp), Some(sp)) = (has("master"), has("source")) {
        let later = mp.max(sp);
        ctx.problem(
            later,
            join(path, if later == sp { "source" } else { "master" }),
            "both `master` and `source` are given; they are synonyms, write one",
        );
    } else if host.master.is_none() {
        host.master = source;
    }
    if has("address").is_none() {
        ctx.problem(
            pos,
            join(path, "address"),
            "missing: every host needs an address",
        );
    }
    let before = ctx.problems.len();
    host.common = read_common_entries(&entries, pos, path, ctx);
    host.place_unsure |= ctx.problems.len() > before;
    host
}

/// Refuse addresses that cannot be one: spaces, URLs, a port glued on.
fn check_address(a: At<String>, ctx: &mut Ctx) -> Option<At<String>> {
    let v = a.v.trim();
    if let Some(m) = bad_address(v) {
        ctx.problem(a.pos, &a.key, m);
        return None;
    }
    let v = v.trim_start_matches('[').trim_end_matches(']').to_string();
    Some(At { v, ..a })
}

fn read_common(node: &Node, pos: Pos, path: &str, level: Level, ctx: &mut Ctx) -> RawCommon {
    let entries = ctx.entries(node, path, level);
    read_common_entries(&entries, pos, path, ctx)
}

fn read_common_entries(
    entries: &[(&str, &Node, &Node)],
    pos: Pos,
    path: &str,
    ctx: &mut Ctx,
) -> RawCommon {
    let mut c = RawCommon {
        pos,
        ..RawCommon::default()
    };
    for &(key, k, v) in entries {
        let kp = join(path, key);
        match key {
            "ssh" => c.ssh = read_ssh(v, &kp, ctx),
            "mysql" => {
                c.mysql_pos = Some(k.pos);
                c.mysql = read_mysql(v, &kp, ctx);
            }
            "transport" => {
                c.transport = ctx.choice(v, &kp, &["ssh", "local"]).map(|a| {
                    a.map(|v| match v.as_str() {
                        "local" => TransportKind::Local,
                        _ => TransportKind::Ssh,
                    })
                });
            }
            "config_file" => c.config_file = ctx.remote_path(v, &kp),
            "error_log" => c.error_log = ctx.remote_path(v, &kp),
            "restart" => {
                c.restart = ctx.nonempty_string(v, &kp, "a command that restarts the server")
            }
            _ => {}
        }
    }
    c
}

fn read_ssh(node: &Node, path: &str, ctx: &mut Ctx) -> RawSsh {
    let mut s = RawSsh::default();
    for (key, _, v) in ctx.entries(node, path, Level::Ssh) {
        let kp = join(path, key);
        match key {
            "user" => s.user = ctx.user_name(v, &kp, true),
            "port" => s.port = ctx.port(v, &kp),
            "identity_file" => s.identity_file = ctx.small_local_file(v, &kp),
            "known_hosts" => s.known_hosts = ctx.small_local_file(v, &kp),
            "jump" => s.jump = ctx.jump(v, &kp),
            "sudo" => s.sudo = ctx.boolean(v, &kp),
            "connect_timeout" => {
                s.connect_timeout = ctx
                    .int(v, &kp, "seconds in 1..3600", 1, 3600)
                    .and_then(|a| a.and_then(|v| u64::try_from(v).ok()));
            }
            _ => {}
        }
    }
    s
}

fn read_mysql(node: &Node, path: &str, ctx: &mut Ctx) -> RawMysql {
    let mut m = RawMysql::default();
    let entries = ctx.entries(node, path, Level::Mysql);
    for &(key, _, v) in &entries {
        let kp = join(path, key);
        match key {
            "user" => m.user = ctx.user_name(v, &kp, false),
            "port" => m.port = ctx.port(v, &kp),
            "connect" => {
                m.route = ctx.choice(v, &kp, &["ssh", "direct"]).map(|a| {
                    a.map(|v| match v.as_str() {
                        "direct" => SqlRoute::Direct,
                        _ => SqlRoute::Forward,
                    })
                });
            }
            _ => {}
        }
    }
    m.password = read_password_pair(&entries, path, true, ctx);
    m
}

/// `password` xor `password_file`.
fn read_password_pair(
    entries: &[(&str, &Node, &Node)],
    path: &str,
    allow_empty: bool,
    ctx: &mut Ctx,
) -> Option<At<Secret>> {
    let inline = entries.iter().find(|(n, _, _)| *n == "password");
    let file = entries.iter().find(|(n, _, _)| *n == "password_file");
    match (inline, file) {
        (Some((_, ki, _)), Some((_, kf, _))) => {
            let (later, name) = if kf.pos > ki.pos {
                (kf.pos, "password_file")
            } else {
                (ki.pos, "password")
            };
            ctx.problem(
                later,
                join(path, name),
                "give either `password` or `password_file`, not both",
            );
            None
        }
        (Some((_, _, v)), None) => ctx.password(v, &join(path, "password"), false, allow_empty),
        (None, Some((_, _, v))) => ctx.password(v, &join(path, "password_file"), true, allow_empty),
        (None, None) => None,
    }
}

fn read_replication(node: &Node, pos: Pos, ctx: &mut Ctx) -> RawReplication {
    let mut r = RawReplication {
        pos,
        ..RawReplication::default()
    };
    let entries = ctx.entries(node, "replication", Level::Replication);
    for &(key, _, v) in &entries {
        let kp = join("replication", key);
        match key {
            "user" => {
                r.user = ctx.user_name(v, &kp, false);
                if let Some(u) = &r.user {
                    // MySQL 5.7+ and MariaDB both accept 32 characters; older MySQL only 16.
                    if u.v.chars().count() > 32 {
                        let (p, k) = (u.pos, u.key.clone());
                        ctx.problem(
                            p,
                            &k,
                            "longer than 32 characters, the limit for MySQL user names",
                        );
                        r.user = None;
                    }
                }
            }
            "gtid" => r.gtid = ctx.boolean(v, &kp),
            "ssl" => r.ssl = ctx.boolean(v, &kp),
            "seed" => r.seed = ctx.choice(v, &kp, crate::topology::SeedMethod::WORDS),
            _ => {}
        }
    }
    r.password_given = entries
        .iter()
        .any(|(n, _, _)| *n == "password" || *n == "password_file");
    r.password = read_password_pair(&entries, "replication", false, ctx);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jump_specs_parse() {
        let j = parse_jump("admin@bastion.invalid:2222").unwrap();
        assert_eq!(
            j,
            JumpSpec {
                user: Some("admin".into()),
                host: "bastion.invalid".into(),
                port: 2222
            }
        );
        let j = parse_jump("bastion.invalid").unwrap();
        assert_eq!((j.user, j.port), (None, 22));
        let j = parse_jump("u@[::1]:2200").unwrap();
        assert_eq!((j.host.as_str(), j.port), ("::1", 2200));
        assert!(parse_jump("u@host:0").unwrap_err().contains("1..65535"));
        assert!(parse_jump("u@host:abc").is_err());
        assert!(parse_jump("@host").is_err());
        assert!(parse_jump("u@").is_err());
    }

    #[test]
    fn addresses_are_ip_addresses_or_dns_names_only() {
        for ok in [
            "10.0.1.10",
            "db1.example.com",
            "db-1.internal_zone",
            "::1",
            "[::1]",
            "fe80::1%eth0",
            "2001:db8::10",
            "xn--bcher-kva.example",
        ] {
            assert_eq!(bad_address(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("-oProxyCommand=id", "starts with `-`"),
            ("--help", "starts with `-`"),
            ("10.0.0.1'", "a quote"),
            ("db\"1", "a double quote"),
            ("db`id`", "a backtick"),
            ("db$(id)", "contains `$`"),
            ("db;reboot", "contains `;`"),
            ("[::1]:3306", "includes a port"),
            ("[::1", "not a valid IPv6"),
            ("[db1]", "not a valid IPv6"),
            ("10.0.0.1:3306", "includes a port"),
            ("1:2:3:zz::1", "not a valid IPv6"),
            ("db\n1", "contains spaces"),
            ("db\u{7}1", "a control character (U+0007)"),
            ("bücher.example", "contains `ü`"),
            ("user@db1", "no user@"),
        ] {
            let msg = bad_address(bad).unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(msg.contains(why), "{bad:?}: {msg}");
            assert!(!msg.chars().any(|c| c.is_control()), "{msg:?}");
        }
    }

    #[test]
    fn user_names_cannot_break_an_option_file() {
        assert_eq!(bad_user_name("repl_user.2", false), None);
        assert_eq!(bad_user_name("app user", false), None);
        assert_eq!(bad_user_name("deploy", true), None);
        assert!(bad_user_name("a\npassword=x", false)
            .unwrap()
            .contains("a newline"));
        assert!(bad_user_name("o'brien", false).unwrap().contains("a quote"));
        assert!(bad_user_name("a\"b", false)
            .unwrap()
            .contains("double quote"));
        assert!(bad_user_name("a\\b", false).unwrap().contains("`\\`"));
        assert!(bad_user_name("-oX", true)
            .unwrap()
            .contains("starts with `-`"));
        assert!(bad_user_name("a b", true).unwrap().contains("a space"));
        assert!(bad_user_name("a@b", true).unwrap().contains("`@`"));
    }

    #[test]
    fn host_paths_are_plain() {
        assert_eq!(bad_path("/etc/mysql/conf.d/60-repltool.cnf", true), None);
        assert_eq!(bad_path("/var/lib/mysql/db1+err,2.log", true), None);
        for (p, why) in [
            ("/etc/x.cnf\nrm -rf /", "a newline"),
            ("/var/log/e.log;reboot", "`;`"),
            ("/tmp/$(id)", "`$`"),
            ("/tmp/a b", "a space"),
            ("/tmp/`id`", "a backtick"),
            ("/tmp/*", "`*`"),
        ] {
            let msg = bad_path(p, true).unwrap_or_else(|| panic!("{p:?} accepted"));
            assert!(msg.contains(why), "{p:?}: {msg}");
        }
        // Local paths may hold spaces, not control characters.
        assert_eq!(bad_path("/home/me/my keys/id", false), None);
        assert!(bad_path("/home/me/id\n", false).is_some());
    }

    #[test]
    fn jump_hosts_are_checked_like_addresses() {
        assert!(parse_jump("-oProxyCommand=x@bastion")
            .unwrap_err()
            .contains("starts with `-`"));
        assert!(parse_jump("ops@-bastion")
            .unwrap_err()
            .contains("starts with `-`"));
        assert!(parse_jump("ops@bast'ion").unwrap_err().contains("a quote"));
    }

    #[test]
    fn host_names_are_plain() {
        assert!(check_host_name("db-1.east_2").is_ok());
        assert!(check_host_name("db 1").is_err());
        assert!(check_host_name("-db").is_err());
        assert!(check_host_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn unknown_keys_get_suggestions_or_a_place() {
        assert_eq!(
            unknown_key_message(Level::Host, "adress"),
            "unknown key; did you mean `address`?"
        );
        assert!(unknown_key_message(Level::Host, "port").contains("`ssh:` or `mysql:`"));
        assert!(unknown_key_message(Level::Host, "identity_file").contains("`ssh:`"));
        assert!(unknown_key_message(Level::Host, "gtid").contains("replication"));
        assert!(unknown_key_message(Level::Host, "slaves").contains("derived"));
        assert!(unknown_key_message(Level::Defaults, "address").contains("per host"));
        assert!(unknown_key_message(Level::Top, "master").contains("under `hosts:`"));
        assert!(unknown_key_message(Level::Ssh, "zzz").contains("known here: user, port"));
    }
}
