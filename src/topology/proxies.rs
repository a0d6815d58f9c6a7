//! From the mirror of `proxies:` and `vip:` to the model, with the checks that need the whole
//! file: a proxy's name against the hosts', two proxies on one machine, a proxy port where a
//! database server listens, a VIP with fewer than two proxies to move between.

use std::collections::HashMap;

use super::model::{default_router_id, Host, Proxy, ProxyKind, Transport, Vip};
use super::raw::{Ctx, RawCommon, RawFile};

/// The proxies and the VIP; problems go to `ctx` (the caller refuses the file if any).
pub fn build(
    raw: &RawFile,
    hosts: &[Host],
    cluster: &str,
    transport: &mut dyn FnMut(&RawCommon, &mut Ctx) -> Transport,
    ctx: &mut Ctx,
) -> (Vec<Proxy>, Option<Vip>) {
    let mut proxies = Vec::with_capacity(raw.proxies.len());
    for rp in &raw.proxies {
        let t = transport(&rp.common, ctx);
        proxies.push(Proxy {
            name: rp.name.clone(),
            address: rp.address.as_ref().map(|a| a.v.clone()).unwrap_or_default(),
            kind: rp.kind.as_ref().map_or(ProxyKind::Haproxy, |a| a.v),
            writer: rp.writer.as_ref().map_or(0, |a| a.v),
            reader: rp.reader.as_ref().map(|a| a.v),
            transport: t,
            line: rp.pos.line,
        });
    }
    // Names: a proxy and a host with one name would be one row of status for two machines.
    for rp in &raw.proxies {
        if let Some(h) = hosts.iter().find(|h| h.name == rp.name) {
            ctx.problems.add(
                rp.pos,
                format!("proxies.{}", rp.name),
                format!(
                    "`{}` is also a database host (line {}): give the proxy another name",
                    rp.name, h.line
                ),
            );
        }
    }
    // Places: two entries for one proxy machine would fight over its config file; a proxy
    // port where a database server of the file listens cannot be bound.
    let mut seen: HashMap<(String, Option<u16>), usize> = HashMap::new();
    for (i, (rp, p)) in raw.proxies.iter().zip(&proxies).enumerate() {
        if rp.place_unsure || raw.defaults_broken {
            continue;
        }
        let via = match &p.transport {
            Transport::Ssh(s) => Some(s.port),
            Transport::Local => None,
        };
        let key = (p.address.to_ascii_lowercase(), via);
        if let Some(&j) = seen.get(&key) {
            let other = &proxies[j];
            if let Some(a) = &rp.address {
                ctx.problems.add(
                    a.pos,
                    &a.key,
                    format!(
                        "`{}` is the same machine as proxy `{}` (line {}): one entry per proxy \
                         (it serves every port of this cluster)",
                        p.name, other.name, other.line
                    ),
                );
            }
        } else {
            seen.insert(key, i);
        }
        for h in hosts {
            if !h.address.eq_ignore_ascii_case(&p.address) {
                continue;
            }
            let ports = [Some(p.writer), p.reader];
            if ports.contains(&Some(h.mysql.port)) {
                let at = rp
                    .writer
                    .as_ref()
                    .filter(|w| w.v == h.mysql.port)
                    .or(rp.reader.as_ref())
                    .map(|a| (a.pos, a.key.clone()))
                    .unwrap_or((rp.pos, format!("proxies.{}", p.name)));
                ctx.problems.add(
                    at.0,
                    at.1,
                    format!(
                        "port {} on {} is where `{}`'s server listens (line {}): give the \
                         proxy another port",
                        h.mysql.port, p.address, h.name, h.line
                    ),
                );
            }
        }
    }
    let vip = raw.vip.as_ref().and_then(|rv| {
        let n = proxies.len();
        if n < 2 {
            ctx.problems.add(
                rv.pos,
                "vip",
                format!("a VIP moves between proxies: `proxies:` needs at least two, it has {n}"),
            );
        }
        let (address, prefix) = rv.address.as_ref()?.v.clone();
        let clash = hosts
            .iter()
            .map(|h| (h.name.as_str(), h.address.as_str(), h.line))
            .chain(
                proxies
                    .iter()
                    .map(|p| (p.name.as_str(), p.address.as_str(), p.line)),
            )
            .find(|(_, a, _)| a.eq_ignore_ascii_case(&address));
        if let (Some((who, _, line)), Some(a)) = (clash, rv.address.as_ref()) {
            ctx.problems.add(
                a.pos,
                &a.key,
                format!(
                    "{address} is `{who}`'s own address (line {line}): the VIP must be an \
                     address of its own"
                ),
            );
        }
        Some(Vip {
            address,
            prefix,
            interface: rv.interface.as_ref().map(|a| a.v.clone()),
            router_id: rv
                .router_id
                .as_ref()
                .map_or_else(|| default_router_id(cluster), |a| a.v),
        })
    });
    (proxies, vip)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::topology::{load_str, ProxyKind, Topology, Transport};

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/tester".into()),
            "USER" => Some("tester".into()),
            _ => None,
        }
    }

    const HEAD: &str = "\
defaults:
  ssh: { user: admin, port: 2222 }
  mysql: { password: \"a\" }
replication: { password: r }
hosts:
  db1: { address: 10.0.1.10 }
  db2: { address: 10.0.1.11, master: db1 }
";

    fn load(tail: &str) -> anyhow::Result<Topology> {
        load_str(&format!("{HEAD}{tail}"), Path::new("/x/shop.yaml"), &env)
    }

    fn err(tail: &str) -> String {
        match load(tail) {
            Ok(_) => panic!("expected an error for:\n{tail}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn proxies_and_a_vip_load_with_the_defaults_ssh() {
        let t = load(
            "proxies:\n  lb1: { address: 10.0.0.5, kind: haproxy, writer: 3306, reader: 3307 }\n  lb2:\n    address: 10.0.0.6\n    kind: nginx\n    writer: 6446\n    ssh: { port: 22 }\nvip:\n  address: 10.0.0.100/24\n  interface: eth0\n",
        )
        .unwrap();
        assert_eq!(t.proxies.len(), 2);
        let lb1 = t.proxy("lb1").unwrap();
        assert_eq!(
            (lb1.kind, lb1.writer, lb1.reader),
            (ProxyKind::Haproxy, 3306, Some(3307))
        );
        match &lb1.transport {
            Transport::Ssh(s) => assert_eq!((s.user.as_str(), s.port), ("admin", 2222)),
            t => panic!("{t:?}"),
        }
        let lb2 = t.proxy("lb2").unwrap();
        assert_eq!((lb2.kind, lb2.reader), (ProxyKind::Nginx, None));
        match &lb2.transport {
            Transport::Ssh(s) => assert_eq!((s.user.as_str(), s.port), ("admin", 22)),
            t => panic!("{t:?}"),
        }
        let vip = t.vip.unwrap();
        assert_eq!((vip.address.as_str(), vip.prefix), ("10.0.0.100", 24));
        assert_eq!(vip.interface.as_deref(), Some("eth0"));
        assert_eq!(vip.router_id, crate::topology::default_router_id("shop"));
        assert!(vip.router_id >= 1);
    }

    #[test]
    fn a_file_without_proxies_has_none() {
        let t = load("").unwrap();
        assert!(t.proxies.is_empty() && t.vip.is_none());
    }

    #[test]
    fn every_proxy_problem_is_positioned() {
        let e = err(
            "proxies:\n  lb1: { address: 10.0.0.5, kind: hapoxy, writer: 3306, reader: 3306 }\n  lb2: { address: 10.0.0.6, writer: 0, colour: red }\n  db1: { address: 10.0.0.7, kind: nginx, writer: 1 }\n",
        );
        assert!(e.contains("shop.yaml:9:35: proxies.lb1.kind: expected `haproxy` or `nginx`, found `hapoxy`; did you mean `haproxy`?"), "{e}");
        assert!(
            e.contains("proxies.lb1.reader: the reader port is the writer port (3306)"),
            "{e}"
        );
        assert!(
            e.contains("proxies.lb2.kind: missing: `kind: haproxy` or `kind: nginx`"),
            "{e}"
        );
        assert!(e.contains("proxies.lb2.writer: 0 is out of range"), "{e}");
        assert!(e.contains("proxies.lb2.colour: unknown key (known here: address, kind, writer, reader, ssh, transport)"), "{e}");
        assert!(
            e.contains("proxies.db1: `db1` is also a database host (line 6)"),
            "{e}"
        );
    }

    #[test]
    fn clashes_with_hosts_and_other_proxies() {
        let e = err(
            "proxies:\n  lb1: { address: 10.0.1.10, kind: haproxy, writer: 3306 }\n  lb2: { address: 10.0.1.10, kind: nginx, writer: 6446 }\n",
        );
        assert!(
            e.contains(
                "proxies.lb1.writer: port 3306 on 10.0.1.10 is where `db1`'s server listens"
            ),
            "{e}"
        );
        assert!(
            e.contains("proxies.lb2.address: `lb2` is the same machine as proxy `lb1`"),
            "{e}"
        );
    }

    #[test]
    fn a_vip_needs_two_proxies_and_an_address_of_its_own() {
        let e = err(
            "proxies:\n  lb1: { address: 10.0.0.5, kind: haproxy, writer: 3306 }\nvip: { address: 10.0.0.5, interface: 'eth0;' }\n",
        );
        assert!(
            e.contains("vip: a VIP moves between proxies: `proxies:` needs at least two, it has 1"),
            "{e}"
        );
        assert!(
            e.contains("vip.address: 10.0.0.5 is `lb1`'s own address"),
            "{e}"
        );
        assert!(
            e.contains("vip.interface: `eth0;` is not an interface name"),
            "{e}"
        );
        let e = err("vip: { interface: eth0 }\n");
        assert!(e.contains("vip.address: missing"), "{e}");
        assert!(e.contains("needs at least two, it has 0"), "{e}");
    }
}
