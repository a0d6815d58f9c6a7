//! Galera in `status` (and after `init`): one row per member (state, primary component or
//! not, cluster size, state UUID, last committed seqno, flow control, receive queue), the
//! cluster line above the tree, each member's `galera` object in the JSON.

use std::collections::HashMap;

use comfy_table::{presets::UTF8_HORIZONTAL_ONLY, Cell, Color, Table};
use serde_json::{json, Value};

use crate::observe::galera::WsrepLive;
use crate::observe::Facts;
use crate::topology::Topology;

fn live<'a>(facts: &'a HashMap<String, Facts>, name: &str) -> Option<&'a WsrepLive> {
    facts
        .get(name)
        .and_then(|f| f.sql.as_ref())
        .and_then(|s| s.galera.as_ref())
}

/// The first 8 characters of a state UUID, enough to tell two apart at a glance.
fn short_uuid(u: &str) -> String {
    if u.len() > 8 {
        format!("{}…", &u[..8])
    } else {
        u.to_string()
    }
}

/// The members' Galera table.
pub fn galera_table(topo: &Topology, facts: &HashMap<String, Facts>, color: bool) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_HORIZONTAL_ONLY);
    if !color {
        t.force_no_tty();
    } else {
        t.enforce_styling();
    }
    t.set_header(vec![
        "member",
        "state",
        "component",
        "size",
        "state uuid",
        "last committed",
        "fc paused",
        "recv queue",
    ]);
    let n = topo.members().count();
    for h in topo.members() {
        let mut row = vec![Cell::new(&h.name)];
        match live(facts, &h.name) {
            Some(l) if l.enabled() => {
                let mut st = Cell::new(l.state_text());
                let mut pc = Cell::new(if l.primary() {
                    "Primary".to_string()
                } else {
                    l.cluster_status.clone()
                });
                let mut size = Cell::new(format!("{}/{n}", l.cluster_size));
                let mut fc = Cell::new(format!("{:.1}%", l.flow_control_paused * 100.0));
                if color {
                    if !l.synced() {
                        st = st.fg(Color::Yellow);
                    }
                    if !l.primary() {
                        pc = pc.fg(Color::Red);
                    }
                    if l.cluster_size as usize != n {
                        size = size.fg(Color::Yellow);
                    }
                    if l.flow_control_paused > FLOW_CONTROL_LIMIT {
                        fc = fc.fg(Color::Yellow);
                    }
                }
                row.extend([
                    st,
                    pc,
                    size,
                    Cell::new(short_uuid(&l.state_uuid)),
                    Cell::new(l.last_committed),
                    fc,
                    Cell::new(l.recv_queue),
                ]);
            }
            Some(_) => {
                row.push(Cell::new("Galera off"));
                for _ in 0..6 {
                    row.push(Cell::new("-"));
                }
            }
            None => {
                let mut c = Cell::new("unreachable");
                if color {
                    c = c.fg(Color::Red);
                }
                row.push(c);
                for _ in 0..6 {
                    row.push(Cell::new(""));
                }
            }
        }
        t.add_row(row);
    }
    t
}

/// Flow control above this fraction of the time is worth a diagnosis.
pub const FLOW_CONTROL_LIMIT: f64 = 0.1;

/// The line above the tree: the cluster as its members report it.
pub fn cluster_line(topo: &Topology, facts: &HashMap<String, Facts>) -> Option<String> {
    let g = topo.galera.as_ref()?;
    let n = topo.members().count();
    let lives: Vec<&WsrepLive> = topo
        .members()
        .filter_map(|h| live(facts, &h.name))
        .filter(|l| l.enabled())
        .collect();
    let primary: Vec<&&WsrepLive> = lives.iter().filter(|l| l.primary()).collect();
    let synced = primary.iter().filter(|l| l.synced()).count();
    Some(match primary.first() {
        Some(l) => format!(
            "galera cluster {}: primary component of {}/{n}, {synced} Synced, state {}",
            g.cluster_name,
            l.cluster_size,
            short_uuid(&l.state_uuid)
        ),
        None if !lives.is_empty() => format!(
            "galera cluster {}: NO primary component (quorum lost): {} of {n} members answer",
            g.cluster_name,
            lives.len()
        ),
        None => format!("galera cluster {}: no member runs Galera", g.cluster_name),
    })
}

/// A member's `galera` object in the JSON (null for a host that is not a member).
pub fn member_json(l: Option<&WsrepLive>) -> Value {
    match l {
        None => Value::Null,
        Some(l) => json!({
            "enabled": l.enabled(),
            "state": l.state_text(),
            "local_state": l.state,
            "primary": l.primary(),
            "cluster_status": l.cluster_status,
            "cluster_size": l.cluster_size,
            "state_uuid": l.state_uuid,
            "last_committed": l.last_committed,
            "flow_control_paused": l.flow_control_paused,
            "recv_queue": l.recv_queue,
            "ready": l.ready,
            "connected": l.connected,
            "cluster_name": l.cluster_name,
            "node_name": l.node_name,
            "sst_method": l.sst_method,
            "provider_version": l.provider_version,
        }),
    }
}

/// The tree label's Galera part for a member.
pub fn label(l: &WsrepLive) -> String {
    if !l.enabled() {
        return " [Galera off]".into();
    }
    format!(
        " [galera {}, {}]",
        l.state_text(),
        if l.primary() {
            "Primary".to_string()
        } else {
            l.cluster_status.clone()
        }
    )
}
