//! `proxies:` (application endpoint hosts) and `vip:` (the address keepalived moves between
//! them), read into the mirror with every problem positioned. Cross checks (names, ports and
//! addresses against the database hosts) are in `topology::proxies`.

use super::super::model::ProxyKind;
use super::super::tree::{Kind, Node, Pos};
use super::{check_address, check_host_name, join, key_text, read_common_entries, shown};
use super::{At, Ctx, Level, RawCommon};

pub const PROXY_KEYS: &[&str] = &["address", "kind", "writer", "reader", "ssh", "transport"];
pub const VIP_KEYS: &[&str] = &["address", "interface", "router_id"];

#[derive(Debug)]
pub struct RawProxy {
    pub name: String,
    /// Position of the proxy's key.
    pub pos: Pos,
    pub address: Option<At<String>>,
    pub kind: Option<At<ProxyKind>>,
    pub writer: Option<At<u16>>,
    pub reader: Option<At<u16>>,
    /// `ssh:` and `transport:` (the other shared keys are refused at this level).
    pub common: RawCommon,
    /// Its address, ports or transport were wrong: the clash checks skip it.
    pub place_unsure: bool,
}

#[derive(Debug)]
pub struct RawVip {
    pub pos: Pos,
    /// The address and its prefix length (32 or 128 when not written).
    pub address: Option<At<(String, u8)>>,
    pub interface: Option<At<String>>,
    pub router_id: Option<At<u8>>,
}

pub fn read_proxies(node: &Node, key_pos: Pos, ctx: &mut Ctx) -> Vec<RawProxy> {
    let entries = match &node.kind {
        Kind::Map(e) => e,
        _ if node.is_null() => {
            ctx.problem(
                key_pos,
                "proxies",
                "no proxies: write a mapping of proxy name -> proxy, or remove `proxies:`",
            );
            return Vec::new();
        }
        _ => {
            ctx.problem(
                node.pos,
                "proxies",
                format!(
                    "must be a mapping of proxy name -> proxy (`lb1: {{address: ..., kind: haproxy, writer: 3306}}`), found {}",
                    node.describe()
                ),
            );
            return Vec::new();
        }
    };
    let mut out: Vec<RawProxy> = Vec::new();
    for (k, v) in entries {
        let Some(name) = key_text(k) else {
            ctx.problem(k.pos, "proxies", "a proxy name must be a plain name");
            continue;
        };
        let path = format!("proxies.{name}");
        if let Err(e) = check_host_name(name) {
            ctx.problem(k.pos, &path, e.replace("host name", "proxy name"));
            continue;
        }
        if let Some(first) = out.iter().find(|p| p.name == name) {
            let line = first.pos.line;
            ctx.problem(
                k.pos,
                &path,
                format!("proxy `{name}` is defined twice (first at line {line}); proxy names must be unique"),
            );
            continue;
        }
        out.push(read_proxy(name, k.pos, v, &path, ctx));
    }
    out
}

fn read_proxy(name: &str, pos: Pos, node: &Node, path: &str, ctx: &mut Ctx) -> RawProxy {
    let mut p = RawProxy {
        name: name.to_string(),
        pos,
        address: None,
        kind: None,
        writer: None,
        reader: None,
        common: RawCommon {
            pos,
            ..RawCommon::default()
        },
        place_unsure: false,
    };
    if !matches!(node.kind, Kind::Map(_)) {
        ctx.problem(
            node.pos,
            path,
            format!(
                "a proxy must be a mapping (`address: ...`, `kind: haproxy`, `writer: 3306`), found {}",
                node.describe()
            ),
        );
        return p;
    }
    let entries = ctx.entries(node, path, Level::Proxy);
    let before = ctx.problems.len();
    for &(key, _, v) in &entries {
        let kp = join(path, key);
        match key {
            "address" => {
                p.address = ctx
                    .nonempty_string(v, &kp, "an IP address or DNS name")
                    .and_then(|a| check_address(a, ctx));
            }
            "kind" => {
                p.kind = ctx.choice(v, &kp, &["haproxy", "nginx"]).map(|a| {
                    a.map(|k| match k.as_str() {
                        "nginx" => ProxyKind::Nginx,
                        _ => ProxyKind::Haproxy,
                    })
                });
            }
            "writer" => p.writer = ctx.port(v, &kp),
            "reader" => p.reader = ctx.port(v, &kp),
            _ => {}
        }
    }
    let written = |k: &str| entries.iter().any(|(n, _, _)| *n == k);
    if !written("address") {
        ctx.problem(
            pos,
            join(path, "address"),
            "missing: every proxy needs an address (repltool reaches it over SSH)",
        );
    }
    if !written("kind") {
        ctx.problem(
            pos,
            join(path, "kind"),
            "missing: `kind: haproxy` or `kind: nginx`",
        );
    }
    if !written("writer") {
        ctx.problem(
            pos,
            join(path, "writer"),
            "missing: the port applications connect to for writes (`writer: 3306`)",
        );
    }
    if let (Some(w), Some(r)) = (&p.writer, &p.reader) {
        if w.v == r.v {
            let (rp, rk) = (r.pos, r.key.clone());
            ctx.problem(
                rp,
                &rk,
                format!(
                    "the reader port is the writer port ({}): give the reader its own port",
                    w.v
                ),
            );
        }
    }
    p.common = read_common_entries(&entries, pos, path, ctx);
    p.place_unsure = ctx.problems.len() > before;
    p
}

pub fn read_vip(node: &Node, pos: Pos, ctx: &mut Ctx) -> Option<RawVip> {
    if !matches!(node.kind, Kind::Map(_)) {
        ctx.problem(
            node.pos,
            "vip",
            format!(
                "must be a mapping (`address: 10.0.0.100`, `interface: eth0`), found {}",
                node.describe()
            ),
        );
        return None;
    }
    let mut vip = RawVip {
        pos,
        address: None,
        interface: None,
        router_id: None,
    };
    let entries = ctx.entries(node, "vip", Level::Vip);
    for &(key, _, v) in &entries {
        let kp = join("vip", key);
        match key {
            "address" => {
                vip.address = ctx
                    .nonempty_string(v, &kp, "an IP address (optionally ADDRESS/PREFIX)")
                    .and_then(|a| match parse_vip_address(&a.v) {
                        Ok(x) => Some(At {
                            v: x,
                            pos: a.pos,
                            key: a.key,
                        }),
                        Err(e) => {
                            ctx.problem(a.pos, &a.key, e);
                            None
                        }
                    });
            }
            "interface" => {
                vip.interface = ctx
                    .nonempty_string(v, &kp, "a network interface name")
                    .and_then(|a| {
                        if interface_ok(&a.v) {
                            Some(a)
                        } else {
                            ctx.problem(
                                a.pos,
                                &a.key,
                                format!(
                                    "{} is not an interface name (up to 15 letters, digits, `.`, `_`, `-`)",
                                    shown(&a.v)
                                ),
                            );
                            None
                        }
                    });
            }
            "router_id" => {
                vip.router_id = ctx
                    .int(v, &kp, "a VRRP virtual_router_id in 1..255", 1, 255)
                    .and_then(|a| a.and_then(|v| u8::try_from(v).ok()));
            }
            _ => {}
        }
    }
    if !entries.iter().any(|(n, _, _)| *n == "address") {
        ctx.problem(
            pos,
            "vip.address",
            "missing: the address applications connect to (`address: 10.0.0.100`)",
        );
    }
    Some(vip)
}

/// `ADDR` or `ADDR/PREFIX`, ADDR an IPv4 or IPv6 address (not a name: keepalived adds it to
/// an interface).
pub fn parse_vip_address(s: &str) -> Result<(String, u8), String> {
    let (addr, prefix) = match s.trim().split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s.trim(), None),
    };
    let ip: std::net::IpAddr = addr.parse().map_err(|_| {
        format!(
            "{} is not an IP address: a VIP is an address keepalived adds to an interface",
            shown(s)
        )
    })?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => match p.parse::<u8>() {
            Ok(n) if (1..=max).contains(&n) => n,
            _ => return Err(format!("the prefix of {} must be in 1..{max}", shown(s))),
        },
    };
    Ok((ip.to_string(), prefix))
}

fn interface_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_addresses() {
        assert_eq!(
            parse_vip_address("10.0.0.100").unwrap(),
            ("10.0.0.100".into(), 32)
        );
        assert_eq!(
            parse_vip_address("10.0.0.100/24").unwrap(),
            ("10.0.0.100".into(), 24)
        );
        assert_eq!(parse_vip_address("fd00::5").unwrap().1, 128);
        assert!(parse_vip_address("lb.example.com")
            .unwrap_err()
            .contains("not an IP address"));
        assert!(parse_vip_address("10.0.0.1/33")
            .unwrap_err()
            .contains("1..32"));
        assert!(interface_ok("eth0") && interface_ok("bond0.100"));
        assert!(!interface_ok("eth0; rm") && !interface_ok("averyveryverylongname"));
    }
}
