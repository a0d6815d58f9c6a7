//! The `galera:` block: read from the file (cluster name, SST method) and checked against the
//! hosts. With `galera:`, every host without `master:` is a member of one Galera cluster; a host
//! with `master:` is an asynchronous replica (of a member, or of another replica).

use std::collections::HashMap;

use super::model::{Galera, Host, Role, Sst};
use super::raw::{At, Ctx, Level, RawFile};
use super::tree::{Node, Pos};

pub const GALERA_KEYS: &[&str] = &["cluster_name", "sst"];

/// The block as written.
#[derive(Debug, Default)]
pub struct RawGalera {
    /// Where `galera:` is.
    pub pos: Pos,
    pub cluster_name: Option<At<String>>,
    pub sst: Option<At<Sst>>,
}

pub fn read_galera(node: &Node, pos: Pos, ctx: &mut Ctx) -> RawGalera {
    let mut g = RawGalera {
        pos,
        ..RawGalera::default()
    };
    for (key, _, v) in ctx.entries(node, "galera", Level::Galera) {
        let kp = format!("galera.{key}");
        match key {
            "cluster_name" => {
                g.cluster_name = ctx.nonempty_string(v, &kp, "a name for the Galera cluster")
            }
            "sst" => {
                g.sst = ctx.choice(v, &kp, &["mariabackup", "rsync"]).map(|a| At {
                    v: if a.v == "rsync" {
                        Sst::Rsync
                    } else {
                        Sst::Mariabackup
                    },
                    pos: a.pos,
                    key: a.key,
                })
            }
            _ => {}
        }
    }
    g
}

/// Galera's group name travels in every message between members and ends up quoted in the
/// config fragment: keep it to plain characters.
fn cluster_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.chars().count() > 64 {
        return Some("must be 1 to 64 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Some("may contain only letters, digits, `_`, `-` and `.`".into());
    }
    None
}

/// Check the block against the hosts; None when there is no block or it is wrong (the
/// problems are in `ctx`).
pub fn build(raw: &RawFile, name: &str, hosts: &[Host], ctx: &mut Ctx) -> Option<Galera> {
    let g = raw.galera.as_ref()?;
    let before = ctx.problems.len();
    let cluster_name = match &g.cluster_name {
        Some(c) => {
            if let Some(why) = cluster_name_problem(&c.v) {
                ctx.problems.add(c.pos, &c.key, format!("`{}` {why}", c.v));
            }
            c.v.clone()
        }
        None => {
            if let Some(why) = cluster_name_problem(name) {
                ctx.problems.add(
                    g.pos,
                    "galera.cluster_name",
                    format!(
                        "the cluster name defaults to the file's name `{name}`, which cannot be a \
                         wsrep_cluster_name (it {why}): set `cluster_name:` here"
                    ),
                );
            }
            name.to_string()
        }
    };
    let members: Vec<&Host> = hosts.iter().filter(|h| h.master.is_none()).collect();
    if members.is_empty() {
        ctx.problems.add(
            g.pos,
            "galera",
            "no host without `master:`: the Galera members are the hosts without `master:`",
        );
    }
    for (rh, h) in raw.hosts.iter().zip(hosts) {
        if h.role == Role::MasterMaster {
            if let Some(m) = &rh.master {
                ctx.problems.add(
                    m.pos,
                    &m.key,
                    format!(
                        "with `galera:`, hosts without `master:` are the cluster's members and \
                         every one of them takes writes: a master-master pair ({} and {}) does \
                         not combine with a Galera cluster",
                        h.name,
                        h.peer.as_deref().unwrap_or("?")
                    ),
                );
            }
        }
        if h.master.is_none() {
            if let Some(ro) = &rh.read_only {
                ctx.problems.add(
                    ro.pos,
                    &ro.key,
                    "a Galera member is always writable (the cluster fences itself by quorum); \
                     `read_only` is for asynchronous replicas",
                );
            }
        }
    }
    // Group communication listens on port 4567 of the member's address, IST on 4568 and SST
    // on 4444: two members on one address would take each other's ports.
    let mut seen: HashMap<String, &Host> = HashMap::new();
    for (rh, h) in raw.hosts.iter().zip(hosts) {
        if h.master.is_some() || rh.place_unsure {
            continue;
        }
        let key = h.address.to_ascii_lowercase();
        match seen.get(&key) {
            Some(first) => {
                let (pos, k) = rh
                    .address
                    .as_ref()
                    .map(|a| (a.pos, a.key.clone()))
                    .unwrap_or((rh.pos, format!("hosts.{}", h.name)));
                ctx.problems.add(
                    pos,
                    k,
                    format!(
                        "`{}` and `{}` (line {}) are Galera members on one address ({}): each \
                         member needs an address of its own (ports 4567, 4568 and 4444)",
                        h.name, first.name, first.line, h.address
                    ),
                );
            }
            None => {
                seen.insert(key, h);
            }
        }
    }
    if let Some(gt) = raw.replication.gtid.as_ref().filter(|g| g.v) {
        ctx.problems.add(
            gt.pos,
            &gt.key,
            "`gtid: true` is not supported with `galera:` yet: asynchronous replicas of Galera \
             members replicate by binary log position",
        );
    }
    if ctx.problems.len() > before {
        return None;
    }
    Some(Galera {
        cluster_name,
        sst: g.sst.as_ref().map_or(Sst::Mariabackup, |a| a.v),
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{load_str, Sst, Topology};

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/tester".into()),
            "USER" => Some("tester".into()),
            _ => None,
        }
    }

    const HEAD: &str =
        "defaults:\n  mysql:\n    password: adminpw\nreplication:\n  password: replpw\n";

    fn load(text: &str, file: &str) -> anyhow::Result<Topology> {
        load_str(&format!("{HEAD}{text}"), Path::new(file), &env)
    }

    #[test]
    fn members_are_the_hosts_without_master() {
        let t = load(
            "galera:\n  sst: rsync\nhosts:\n  g1: { address: 10.0.1.10 }\n  g2: { address: 10.0.1.11 }\n  dr1: { address: 10.9.0.10, master: g1 }\n",
            "/x/shop.yaml",
        )
        .unwrap();
        let g = t.galera.clone().unwrap();
        assert_eq!(g.cluster_name, "shop");
        assert_eq!(g.sst, Sst::Rsync);
        let m: Vec<&str> = t.members().map(|h| h.name.as_str()).collect();
        assert_eq!(m, ["g1", "g2"]);
        assert!(!t.is_member(t.host("dr1").unwrap()));
        let t = load("hosts:\n  g1: { address: 10.0.1.10 }\n", "/x/shop.yaml").unwrap();
        assert!(t.galera.is_none() && t.members().count() == 0);
    }

    #[test]
    fn bad_blocks_are_named_with_their_keys() {
        let e = load(
            "galera:\n  cluster_name: my shop\n  sst: xtrabackup\nhosts:\n  g1: { address: 10.0.1.10, read_only: true }\n  g2: { address: 10.0.1.10, mysql: { port: 3307 } }\n",
            "/x/shop.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("galera.cluster_name: `my shop` may contain only"),
            "{e}"
        );
        assert!(
            e.contains("galera.sst: expected `mariabackup` or `rsync`"),
            "{e}"
        );
        assert!(
            e.contains("hosts.g1.read_only: a Galera member is always writable"),
            "{e}"
        );
        assert!(e.contains("are Galera members on one address"), "{e}");
        let e = load(
            "galera: {}\nhosts:\n  g1: { address: 10.0.1.10 }\n",
            "/x/my shop.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("defaults to the file's name `my shop`"), "{e}");
        let e = load(
            "galera: {}\nhosts:\n  m1: { address: 10.0.1.10, master: m2 }\n  m2: { address: 10.0.1.11, master: m1 }\n",
            "/x/shop.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("does not combine with a Galera cluster"), "{e}");
        assert!(e.contains("no host without `master:`"), "{e}");
        let e = load(
            "cluster_name: x\nhosts:\n  g1: { address: 10.0.1.10 }\n",
            "/x/shop.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("belongs under `galera:`"), "{e}");
    }

    #[test]
    fn gtid_is_refused_with_galera() {
        let text = "galera: {}\nhosts:\n  g1: { address: 10.0.1.10 }\n";
        let t = format!(
            "defaults:\n  mysql:\n    password: a\nreplication:\n  password: b\n  gtid: true\n{text}"
        );
        let e = load_str(&t, Path::new("/x/shop.yaml"), &env)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("replication.gtid: `gtid: true` is not supported with `galera:`"),
            "{e}"
        );
    }
}
