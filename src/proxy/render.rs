//! The configuration repltool writes on a proxy, as text (pure): HAProxy's marked block in
//! haproxy.cfg, nginx's own file under /etc/nginx/repltool/ and the marked `stream {}` block in
//! nginx.conf that includes it, keepalived's marked block and its check script. Everything
//! outside a marked block is the user's and is kept byte for byte.

use std::fmt::Write as _;

use super::{paths, slug, Endpoint, Routing, Slot};
use crate::topology::{Proxy, ProxyKind, Topology, Vip};

/// HAProxy/keepalived markers of one cluster's block.
pub fn markers(cluster: &str) -> (String, String) {
    let s = slug(cluster);
    (
        format!("# BEGIN repltool {s}"),
        format!("# END repltool {s}"),
    )
}

/// nginx.conf's block (one for every cluster: it includes the directory).
pub const NGINX_BEGIN: &str = "# BEGIN repltool";
pub const NGINX_END: &str = "# END repltool";

/// HAProxy's section (`listen`) name of an endpoint.
pub fn haproxy_backend(cluster: &str, e: Endpoint) -> String {
    format!("repltool-{}-{}", slug(cluster), e.as_str())
}

/// nginx's upstream name of an endpoint.
pub fn nginx_upstream(cluster: &str, e: Endpoint) -> String {
    format!(
        "repltool_{}_{}",
        slug(cluster).replace(['-', '.'], "_"),
        e.as_str()
    )
}

/// Health checks: a dead server is out within about two seconds and its sessions are closed,
/// so the application reconnects instead of waiting on a dead peer. When a server that is not
/// a backup comes up again, the sessions on the backups are closed too: otherwise a Galera
/// member (or a pair's side) that stood in for a dead writer keeps the application's
/// connections while new ones go to the returning server, and two servers take writes at once
/// (found by the live test `galera_behind_haproxy_writes_to_one_member_and_survives_its_death`).
/// In the reader endpoint it moves reads off the master once a slave is back.
const HAPROXY_CHECK: &str = "check inter 1s fall 2 rise 2 on-marked-down shutdown-sessions \
                             on-marked-up shutdown-backup-sessions";

fn ports(p: &Proxy) -> Vec<(Endpoint, u16)> {
    let mut v = vec![(Endpoint::Writer, p.writer)];
    if let Some(r) = p.reader {
        v.push((Endpoint::Reader, r));
    }
    v
}

/// HAProxy: the marked block for `topo`'s endpoints on proxy `p`, markers included.
pub fn haproxy_block(topo: &Topology, p: &Proxy, r: &Routing) -> String {
    let (begin, end) = markers(&topo.name);
    let mut o = String::new();
    let _ = writeln!(o, "{begin}");
    o.push_str(
        "# Written by `repltool init` and `repltool promote`: edits inside this block are \
         overwritten.\n",
    );
    o.push_str("global\n");
    let _ = writeln!(
        o,
        "\tstats socket {} mode 600 level admin",
        paths::haproxy_socket(&topo.name)
    );
    for (e, port) in ports(p) {
        o.push('\n');
        let _ = writeln!(o, "listen {}", haproxy_backend(&topo.name, e));
        let _ = writeln!(o, "\tbind *:{port}");
        o.push_str("\tmode tcp\n\toption tcplog\n\toption tcpka\n");
        if e == Endpoint::Reader {
            o.push_str("\tbalance leastconn\n\toption redispatch\n\tretries 2\n");
        }
        o.push_str("\ttimeout connect 2s\n\ttimeout client 1h\n\ttimeout server 1h\n");
        let _ = writeln!(o, "\tdefault-server {HAPROXY_CHECK}");
        for s in r.slots(e) {
            let _ = writeln!(o, "\t{}", haproxy_server(s));
        }
    }
    let _ = writeln!(o, "{end}");
    o
}

fn haproxy_server(s: &Slot) -> String {
    let mut l = format!("server {} {}:{}", s.server_name(), s.address, s.port);
    if s.backup {
        l.push_str(" backup");
    }
    if !s.on {
        l.push_str(" disabled");
    }
    l
}

/// The same block with every server's on/off state taken out: equal for two blocks that
/// differ only in which servers are on, which HAProxy changes at runtime without a reload.
pub fn haproxy_shape(block: &str) -> String {
    block
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server ") {
                l.trim_end().trim_end_matches(" disabled").to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// nginx: repltool's file for `topo` on proxy `p` (upstreams and servers, inside the
/// `stream {}` block of nginx.conf). Off servers are `down`; a host's backup slot is a `backup`
/// server only when its normal slot is off (nginx takes one line per address).
pub fn nginx_file(topo: &Topology, p: &Proxy, r: &Routing) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# repltool {}: the database endpoints (nginx stream). Written by `repltool init` and \
         `repltool promote`: edits are overwritten.",
        slug(&topo.name)
    );
    for (e, port) in ports(p) {
        let up = nginx_upstream(&topo.name, e);
        let _ = writeln!(o, "upstream {up} {{");
        if e == Endpoint::Reader {
            o.push_str("\tleast_conn;\n");
        }
        for line in nginx_servers(r.slots(e)) {
            let _ = writeln!(o, "\t{line}");
        }
        o.push_str("}\n");
        let _ = writeln!(o, "server {{");
        let _ = writeln!(o, "\tlisten {port};");
        o.push_str("\tproxy_connect_timeout 2s;\n");
        // nginx's default (10 minutes) cuts idle pooled connections; MySQL's own is 8 hours.
        o.push_str("\tproxy_timeout 1h;\n");
        let _ = writeln!(o, "\tproxy_pass {up};");
        o.push_str("}\n");
    }
    o
}

fn nginx_servers(slots: &[Slot]) -> Vec<String> {
    let mut out = Vec::new();
    for s in slots.iter().filter(|s| !s.backup) {
        let backup_on = slots.iter().any(|b| b.backup && b.on && b.host == s.host);
        let state = if s.on {
            " max_fails=1 fail_timeout=2s"
        } else if backup_on {
            " backup"
        } else {
            " down"
        };
        out.push(format!(
            "server {}:{}{state}; # {}",
            s.address, s.port, s.host
        ));
    }
    out
}

/// The block nginx.conf gets (top level, a sibling of `http {}`): nginx's stream module
/// proxies TCP; MySQL is never proxied by `http {}`.
pub fn nginx_conf_block() -> String {
    format!(
        "{NGINX_BEGIN}\n\
         # The database endpoints repltool manages (nginx's stream module: MySQL is TCP).\n\
         stream {{\n\
         \tinclude {}/*.conf;\n\
         }}\n\
         {NGINX_END}\n",
        paths::NGINX_DIR
    )
}

/// keepalived: the marked block that holds `vip` on proxy `p` (its priority by its place in
/// the file), moving it when `p`'s check fails. `iface` is the interface the VIP goes on.
pub fn keepalived_block(topo: &Topology, p: &Proxy, vip: &Vip, iface: &str) -> String {
    let (begin, end) = markers(&topo.name);
    let s = slug(&topo.name).replace(['-', '.'], "_");
    let index = topo
        .proxies
        .iter()
        .position(|x| x.name == p.name)
        .unwrap_or(0);
    let priority = 150usize.saturating_sub(10 * index).max(1);
    let mut o = String::new();
    let _ = writeln!(o, "{begin}");
    o.push_str(
        "# Written by `repltool init`: the VIP of the database endpoints. Edits inside this \
         block are overwritten.\n",
    );
    // The check runs as root from a root-owned path: with script security on, keepalived
    // refuses scripts others could have written.
    o.push_str("global_defs {\n\tenable_script_security\n}\n");
    let _ = writeln!(o, "vrrp_script repltool_{s}_check {{");
    let _ = writeln!(o, "\tscript \"{}\"", paths::keepalived_check(&topo.name));
    o.push_str("\tinterval 1\n\ttimeout 1\n\tfall 2\n\trise 2\n\tuser root\n}\n");
    let _ = writeln!(o, "vrrp_instance repltool_{s} {{");
    // Every proxy starts as BACKUP and the highest priority wins the election; `nopreempt`
    // keeps the VIP where it is when a proxy with a higher priority comes back (one move per
    // failure, not two).
    o.push_str("\tstate BACKUP\n");
    let _ = writeln!(o, "\tinterface {iface}");
    let _ = writeln!(o, "\tvirtual_router_id {}", vip.router_id);
    let _ = writeln!(o, "\tpriority {priority}");
    o.push_str("\tadvert_int 1\n\tnopreempt\n");
    // Unicast between the proxies when their addresses are IPs: clouds and many switches drop
    // VRRP multicast.
    let ips: Vec<&str> = topo
        .proxies
        .iter()
        .map(|x| x.address.as_str())
        .filter(|a| a.parse::<std::net::IpAddr>().is_ok())
        .collect();
    if ips.len() == topo.proxies.len() {
        let _ = writeln!(o, "\tunicast_src_ip {}", p.address);
        o.push_str("\tunicast_peer {\n");
        for x in topo.proxies.iter().filter(|x| x.name != p.name) {
            let _ = writeln!(o, "\t\t{}", x.address);
        }
        o.push_str("\t}\n");
    }
    o.push_str("\tvirtual_ipaddress {\n");
    let _ = writeln!(o, "\t\t{}/{} dev {iface}", vip.address, vip.prefix);
    o.push_str("\t}\n");
    let _ = writeln!(o, "\ttrack_script {{\n\t\trepltool_{s}_check\n\t}}");
    o.push_str("}\n");
    let _ = writeln!(o, "{end}");
    o
}

/// keepalived's check: this proxy's writer port accepts a connection (HAProxy or nginx is
/// up and listening). Nothing here touches a database.
pub fn keepalived_check_script(p: &Proxy) -> String {
    let kind = match p.kind {
        ProxyKind::Haproxy => "HAProxy",
        ProxyKind::Nginx => "nginx",
    };
    format!(
        "#!/bin/sh\n\
         # Written by repltool: keepalived moves the VIP away when this fails ({kind} on this\n\
         # proxy does not accept connections on the writer port). It never touches a database.\n\
         exec timeout 1 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{}' 2>/dev/null\n",
        p.writer
    )
}

/// A marked block found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    Absent,
    /// The block, markers included.
    Block(String),
    /// A BEGIN without its END (or the reverse): repltool refuses to guess where its block
    /// ends, so nothing of the user's is eaten.
    Broken(String),
}

/// The block between `begin` and `end` (whole lines) in `text`.
pub fn find_block(text: &str, begin: &str, end: &str) -> Found {
    let lines: Vec<&str> = text.lines().collect();
    let b = lines.iter().position(|l| l.trim_end() == begin);
    let e = lines.iter().position(|l| l.trim_end() == end);
    match (b, e) {
        (None, None) => Found::Absent,
        (Some(b), Some(e)) if e > b => {
            let mut s = lines[b..=e].join("\n");
            s.push('\n');
            Found::Block(s)
        }
        (Some(b), _) => Found::Broken(format!(
            "line {} has `{begin}` but no `{end}` follows",
            b + 1
        )),
        (None, Some(e)) => Found::Broken(format!(
            "line {} has `{end}` but no `{begin}` before it",
            e + 1
        )),
    }
}

/// `text` with its marked block replaced by `block` (markers included), or `block` appended
/// after a blank line when there is none. Everything else is kept as it is. `Err` when the
/// markers are broken.
pub fn splice(text: &str, begin: &str, end: &str, block: &str) -> Result<String, String> {
    match find_block(text, begin, end) {
        Found::Broken(why) => Err(why),
        Found::Absent => {
            let mut out = text.to_string();
            if !out.is_empty() {
                if !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push('\n');
            }
            out.push_str(block);
            Ok(out)
        }
        Found::Block(_) => {
            let mut out = String::new();
            let mut inside = false;
            let mut done = false;
            for l in text.split_inclusive('\n') {
                let t = l.trim_end();
                if !inside && !done && t == begin {
                    inside = true;
                    out.push_str(block);
                    continue;
                }
                if inside {
                    if t == end {
                        inside = false;
                        done = true;
                    }
                    continue;
                }
                out.push_str(l);
            }
            Ok(out)
        }
    }
}

/// An awk command (stdin to stdout) that rewrites repltool's nginx file so its writer
/// upstream sends to `on` only (None: to nobody), everything else as it is: the writer move of
/// a promote, done on the proxy in the same round trip as the reload.
pub fn nginx_writer_awk(cluster: &str, on: Option<&str>) -> String {
    let up = nginx_upstream(cluster, Endpoint::Writer);
    format!(
        "awk -v up='{up}' -v on='{}' '\
         $1 == \"upstream\" && $2 == up {{ inside = 1; found = 1; print; next }} \
         inside && /^[[:space:]]*}}/ {{ inside = 0; print; next }} \
         inside && $1 == \"server\" && index($0, \"#\") {{ \
           host = $0; sub(/^[^#]*#[[:space:]]*/, \"\", host); addr = $2; sub(/;$/, \"\", addr); \
           if (host == on) print \"\\tserver \" addr \" max_fails=1 fail_timeout=2s; # \" host; \
           else print \"\\tserver \" addr \" down; # \" host; next }} \
         {{ print }} \
         END {{ if (!found) exit 3 }}'",
        on.unwrap_or("")
    )
}
