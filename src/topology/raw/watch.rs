//! `watch:` (automatic failover through etcd): read, range-checked and turned into the model in
//! one pass, every problem with its line and key path.

use std::time::Duration;

use super::super::model::{Watch, WatchHooks};
use super::super::problems::did_you_mean;
use super::super::tree::{Kind, Node, Pos};
use super::{key_text, Ctx};

pub const WATCH_KEYS: &[&str] = &[
    "etcd",
    "prefix",
    "interval",
    "confirm",
    "anti_flap",
    "lock_ttl",
    "net_timeout",
    "hooks",
];
pub const HOOK_KEYS: &[&str] = &["pre_failover", "post_failover"];

/// The mapping's known entries; unknown keys reported with a suggestion, repeated keys once.
fn entries<'n>(
    node: &'n Node,
    path: &str,
    known: &[&str],
    ctx: &mut Ctx,
) -> Vec<(&'n str, &'n Node)> {
    let Kind::Map(list) = &node.kind else {
        if !node.is_null() {
            ctx.problem(
                node.pos,
                path,
                format!(
                    "`{path}` must be a mapping of `key: value` lines, found {}",
                    node.describe()
                ),
            );
        }
        return Vec::new();
    };
    let mut out: Vec<(&str, &Node)> = Vec::new();
    for (k, v) in list {
        let Some(name) = key_text(k) else {
            ctx.problem(k.pos, path, "a key must be a plain name");
            continue;
        };
        let key = format!("{path}.{name}");
        if !known.contains(&name) {
            let msg = match did_you_mean(name, known.iter().copied()) {
                Some(near) => format!("unknown key; did you mean `{near}`?"),
                None => format!("unknown key (known here: {})", known.join(", ")),
            };
            ctx.problem(k.pos, &key, msg);
            continue;
        }
        if out.iter().any(|(n, _)| *n == name) {
            ctx.problem(k.pos, &key, "duplicate key; only one is allowed");
            continue;
        }
        out.push((name, v));
    }
    out
}

/// `500ms`, `1s`, `1.5s`, `2m`, `1h`, or a plain number of seconds.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&t[..i], t[i..].trim()),
        None => (t, "s"),
    };
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    (secs <= 30.0 * 24.0 * 3600.0).then(|| Duration::from_secs_f64(secs))
}

fn duration(v: &Node, key: &str, lo: Duration, hi: Duration, ctx: &mut Ctx) -> Option<Duration> {
    let s = ctx.nonempty_string(v, key, "a duration such as 500ms, 1s, 2m or 1h")?;
    match parse_duration(&s.v) {
        Some(d) if d >= lo && d <= hi => Some(d),
        Some(_) => {
            ctx.problem(
                v.pos,
                key,
                format!(
                    "`{}` is out of range; expected {} to {}",
                    s.v,
                    shown(lo),
                    shown(hi)
                ),
            );
            None
        }
        None => {
            ctx.problem(
                v.pos,
                key,
                format!(
                    "expected a duration such as 500ms, 1s, 2m or 1h, found `{}`",
                    s.v
                ),
            );
            None
        }
    }
}

fn shown(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) && ms >= 60_000 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// One etcd endpoint: `http://host:port` (TLS is not supported yet).
fn endpoint(v: &Node, key: &str, ctx: &mut Ctx) -> Option<String> {
    let s = ctx.nonempty_string(v, key, "an etcd URL such as http://10.0.0.21:2379")?;
    let rest = s.v.strip_prefix("http://");
    let ok = rest.is_some_and(|r| {
        let (host, port) = match r.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (r, None),
        };
        !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
            && port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0))
    });
    if !ok {
        let msg = if s.v.starts_with("https://") {
            "https:// endpoints are not supported yet; use http:// on a trusted network".to_string()
        } else {
            format!(
                "expected an etcd URL such as http://10.0.0.21:2379, found `{}`",
                s.v
            )
        };
        ctx.problem(v.pos, key, msg);
        return None;
    }
    Some(s.v)
}

/// Read `watch:`. None when it has a problem (already reported).
pub fn read_watch(node: &Node, pos: Pos, ctx: &mut Ctx) -> Option<Watch> {
    let before = ctx.problems.len();
    let mut w = Watch {
        etcd: Vec::new(),
        prefix: "/repltool/v1".into(),
        interval: Duration::from_secs(1),
        confirm: Duration::from_millis(500),
        anti_flap: Duration::from_secs(3600),
        lock_ttl: Duration::from_secs(3),
        net_timeout: 4,
        hooks: WatchHooks::default(),
    };
    let mut saw_etcd = false;
    for (key, v) in entries(node, "watch", WATCH_KEYS, ctx) {
        let kp = format!("watch.{key}");
        match key {
            "etcd" => {
                saw_etcd = true;
                match &v.kind {
                    Kind::Seq(items) => {
                        for (i, it) in items.iter().enumerate() {
                            if let Some(e) = endpoint(it, &format!("{kp}[{i}]"), ctx) {
                                w.etcd.push(e);
                            }
                        }
                        if items.is_empty() {
                            ctx.problem(v.pos, &kp, "no endpoints; list etcd's client URLs");
                        }
                    }
                    _ => {
                        if let Some(e) = endpoint(v, &kp, ctx) {
                            w.etcd.push(e);
                        }
                    }
                }
            }
            "prefix" => {
                if let Some(p) =
                    ctx.nonempty_string(v, &kp, "an etcd key prefix such as /repltool/v1")
                {
                    if !p.v.starts_with('/') || p.v.chars().any(char::is_whitespace) {
                        ctx.problem(
                            v.pos,
                            &kp,
                            format!("`{}` must start with `/` and have no spaces", p.v),
                        );
                    } else {
                        w.prefix = p.v.trim_end_matches('/').to_string();
                    }
                }
            }
            "interval" => {
                if let Some(d) = duration(
                    v,
                    &kp,
                    Duration::from_millis(100),
                    Duration::from_secs(60),
                    ctx,
                ) {
                    w.interval = d;
                }
            }
            "confirm" => {
                if let Some(d) = duration(
                    v,
                    &kp,
                    Duration::from_millis(100),
                    Duration::from_secs(60),
                    ctx,
                ) {
                    w.confirm = d;
                }
            }
            "anti_flap" => {
                if let Some(d) = duration(
                    v,
                    &kp,
                    Duration::ZERO,
                    Duration::from_secs(30 * 24 * 3600),
                    ctx,
                ) {
                    w.anti_flap = d;
                }
            }
            "lock_ttl" => {
                // etcd grants at least 2 s whatever is asked.
                if let Some(d) =
                    duration(v, &kp, Duration::from_secs(2), Duration::from_secs(60), ctx)
                {
                    w.lock_ttl = Duration::from_secs(d.as_secs().max(2));
                }
            }
            "net_timeout" => {
                if let Some(n) = ctx.int(v, &kp, "seconds in 2..3600", 2, 3600) {
                    w.net_timeout = n.v as u32;
                }
            }
            "hooks" => {
                for (hk, hv) in entries(v, "watch.hooks", HOOK_KEYS, ctx) {
                    let hkp = format!("watch.hooks.{hk}");
                    let cmd = ctx
                        .nonempty_string(hv, &hkp, "a shell command")
                        .map(|s| s.v);
                    match hk {
                        "pre_failover" => w.hooks.pre_failover = cmd,
                        "post_failover" => w.hooks.post_failover = cmd,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_etcd {
        ctx.problem(
            pos,
            "watch.etcd",
            "missing: `watch:` needs `etcd:`, the etcd client URLs the watchers coordinate through",
        );
    }
    (ctx.problems.len() == before).then_some(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_usual_units() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("3 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_duration(""), None);
    }
}
