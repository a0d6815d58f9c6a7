//! Galera rows of `check`: the provider library on every member (and one version), the SST
//! programs the configured method runs, the service commands that start, stop and bootstrap a
//! member, and the Galera ports (4567 group communication, 4568 IST, 4444 SST) reachable from
//! every member to every other. Observe, then pure verdicts.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::{CheckRow, Verdict};
use crate::flavor::galera::{
    port_listener_script, port_probe_script, sst_programs, PROVIDER_PATHS,
};
use crate::observe::galera::{disk_all, GaleraDisk};
use crate::observe::listening_script;
use crate::topology::{Host, Sst, Topology};
use crate::transport::Sessions;

/// Galera's ports: group communication, incremental and full state transfer.
pub const PORTS: [u16; 3] = [4567, 4568, 4444];

/// What `check` observed for Galera.
#[derive(Debug, Default)]
pub struct GaleraCheck {
    pub disk: HashMap<String, Result<GaleraDisk, String>>,
    /// (from, to, port) -> reached.
    pub ports: BTreeMap<(String, String, u16), bool>,
    /// Members the port test could not run on, and why.
    pub port_errors: Vec<(String, String)>,
}

fn run(sessions: &Sessions, h: &Host, script: &str, secs: u64) -> Result<String, String> {
    let m = sessions
        .get(&h.name)
        .ok_or_else(|| format!("{}: no session", h.name))?;
    let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
    s.run(script, None, false, Duration::from_secs(secs))
        .map(|o| o.stdout_str())
        .map_err(|e| format!("{e:#}"))
}

/// Probe the members. The port test starts a listener (socat, for at most 5 s) on a member's
/// port where nothing listens yet, connects from every other member, then stops it.
pub fn observe(topo: &Topology, sessions: &Sessions) -> GaleraCheck {
    let mut out = GaleraCheck {
        disk: disk_all(topo, sessions),
        ..GaleraCheck::default()
    };
    let members: Vec<&Host> = topo
        .members()
        .filter(|h| sessions.contains_key(&h.name))
        .collect();
    if members.len() < 2 {
        return out;
    }
    // Listeners where nothing listens.
    let started = crate::par::each(&members, |h| {
        let mut pids = Vec::new();
        for port in PORTS {
            let l = run(sessions, h, &listening_script(port), 10).map_err(anyhow::Error::msg)?;
            if l.trim() == "LISTEN" {
                continue;
            }
            let o = run(sessions, h, &port_listener_script(&h.address, port, 5), 10)
                .map_err(anyhow::Error::msg)?;
            if o.contains("@@NOSOCAT") {
                anyhow::bail!(
                    "socat is not installed: the port test needs it (as mariabackup SST does)"
                );
            }
            if let Some(p) = o.lines().find_map(|l| l.strip_prefix("@@PID ")) {
                pids.push(p.trim().to_string());
            }
        }
        Ok(pids)
    });
    let mut listeners: Vec<(&Host, Vec<String>)> = Vec::new();
    for (h, r) in members.iter().zip(started) {
        match r {
            Ok(p) => listeners.push((h, p)),
            Err(e) => out.port_errors.push((h.name.clone(), format!("{e:#}"))),
        }
    }
    // socat needs a moment to bind.
    std::thread::sleep(Duration::from_millis(300));
    let probes = crate::par::each(&members, |from| {
        let targets: Vec<(String, u16)> = members
            .iter()
            .filter(|to| to.name != from.name)
            .flat_map(|to| PORTS.iter().map(|p| (to.address.clone(), *p)))
            .collect();
        run(sessions, from, &port_probe_script(&targets), 30).map_err(anyhow::Error::msg)
    });
    for (from, r) in members.iter().zip(probes) {
        match r {
            Ok(text) => {
                for l in text.lines() {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    if let ["@@PORT", addr, port, res] = f[..] {
                        let Some(to) = members.iter().find(|m| m.address == addr) else {
                            continue;
                        };
                        if let Ok(port) = port.parse() {
                            out.ports
                                .insert((from.name.clone(), to.name.clone(), port), res == "ok");
                        }
                    }
                }
            }
            Err(e) => out.port_errors.push((from.name.clone(), format!("{e:#}"))),
        }
    }
    for (h, pids) in listeners {
        if !pids.is_empty() {
            let _ = run(
                sessions,
                h,
                &format!("kill {} 2>/dev/null; true", pids.join(" ")),
                10,
            );
        }
    }
    out
}

/// The Galera rows.
pub fn verdicts(topo: &Topology, g: &GaleraCheck) -> Vec<CheckRow> {
    let mut rows = Vec::new();
    let mut row = |check: &'static str, host: &str, verdict: Verdict, detail: String| {
        rows.push(CheckRow {
            check,
            host: host.to_string(),
            verdict,
            detail,
        })
    };
    let sst = topo.galera.as_ref().map_or(Sst::Mariabackup, |x| x.sst);
    let mut versions: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for h in topo.members() {
        let d = match g.disk.get(&h.name) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                row("galera provider", &h.name, Verdict::Fail, e.clone());
                continue;
            }
            None => continue,
        };
        match d.providers.first() {
            Some(p) => {
                let v = d
                    .package
                    .clone()
                    .unwrap_or_else(|| "version unknown".into());
                versions.entry(v.clone()).or_default().push(&h.name);
                row(
                    "galera provider",
                    &h.name,
                    Verdict::Pass,
                    format!("{p} (galera-4 {v})"),
                );
            }
            None => row(
                "galera provider",
                &h.name,
                Verdict::Fail,
                format!(
                    "no libgalera_smm.so (looked in {}): install galera-4",
                    PROVIDER_PATHS.join(", ")
                ),
            ),
        }
        let mut have = Vec::new();
        let mut missing = Vec::new();
        for alts in sst_programs(sst) {
            match alts.iter().find(|t| d.tools.iter().any(|(n, _)| n == *t)) {
                Some(t) => have.push(*t),
                None => missing.push(alts.join(" or ")),
            }
        }
        row(
            "SST tools",
            &h.name,
            if missing.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            if missing.is_empty() {
                format!("{} SST: {}", sst.as_str(), have.join(", "))
            } else {
                format!(
                    "{} SST needs {} (install {})",
                    sst.as_str(),
                    missing.join(", "),
                    match sst {
                        Sst::Mariabackup => "mariadb-backup and socat",
                        Sst::Rsync => "rsync",
                    }
                )
            },
        );
        match &d.service {
            Some(s) => row(
                "galera service",
                &h.name,
                if s.bootstrap.is_some() {
                    Verdict::Pass
                } else {
                    Verdict::Warn
                },
                match &s.bootstrap {
                    Some(b) => format!("{} / {} / {b}", s.start, s.stop),
                    None => format!(
                        "{} / {}; no bootstrap command (no galera_new_cluster, no `bootstrap` in \
                         the init script): this member cannot start a new cluster",
                        s.start, s.stop
                    ),
                },
            ),
            None => row(
                "galera service",
                &h.name,
                Verdict::Fail,
                "no service manager (systemd is not PID 1 and no /etc/init.d/mariadb): members \
                 are started and bootstrapped through it"
                    .into(),
            ),
        }
    }
    if versions.len() > 1 {
        let each: Vec<String> = versions
            .iter()
            .map(|(v, hs)| format!("{v} on {}", hs.join(", ")))
            .collect();
        row(
            "galera provider versions",
            "*",
            Verdict::Fail,
            format!(
                "members run different galera-4 versions: {}",
                each.join("; ")
            ),
        );
    } else if let Some(v) = versions.keys().next() {
        row(
            "galera provider versions",
            "*",
            Verdict::Pass,
            format!("galera-4 {v} on every member"),
        );
    }
    for (h, e) in &g.port_errors {
        row(
            "galera ports",
            h,
            Verdict::Fail,
            format!("could not test: {e}"),
        );
    }
    for to in topo.members() {
        if g.port_errors.iter().any(|(h, _)| h == &to.name) {
            continue;
        }
        let probes: Vec<(&String, u16, bool)> = g
            .ports
            .iter()
            .filter(|((_, t, _), _)| t == &to.name)
            .map(|((f, _, p), ok)| (f, *p, *ok))
            .collect();
        if probes.is_empty() {
            continue;
        }
        let failed: Vec<String> = probes
            .iter()
            .filter(|(_, _, ok)| !ok)
            .map(|(f, p, _)| format!("{p} from {f}"))
            .collect();
        let mut froms: Vec<&str> = probes.iter().map(|(f, _, _)| f.as_str()).collect();
        froms.sort_unstable();
        froms.dedup();
        row(
            "galera ports",
            &to.name,
            if failed.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            if failed.is_empty() {
                format!(
                    "4567, 4568, 4444 on {} reachable from {}",
                    to.address,
                    froms.join(", ")
                )
            } else {
                format!(
                    "not reachable on {}: {} (a firewall? Galera needs 4567 for the cluster, 4568 \
                     for IST, 4444 for SST between every pair of members)",
                    to.address,
                    failed.join(", ")
                )
            },
        );
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::galera::GaleraService;
    use crate::topology::Galera;

    #[test]
    fn versions_tools_and_ports_are_judged() {
        let mut t = crate::testing::topo(&[("g1", None), ("g2", None)]);
        t.hosts[1].address = "10.0.0.2".into();
        t.galera = Some(Galera {
            cluster_name: "shop".into(),
            sst: Sst::Mariabackup,
        });
        let d = |v: &str, tools: &[&str]| GaleraDisk {
            providers: vec!["/usr/lib/galera/libgalera_smm.so".into()],
            package: Some(v.into()),
            tools: tools
                .iter()
                .map(|t| (t.to_string(), format!("/usr/bin/{t}")))
                .collect(),
            service: Some(GaleraService {
                start: "service mariadb start".into(),
                stop: "service mariadb stop".into(),
                restart: "service mariadb restart".into(),
                bootstrap: Some("service mariadb bootstrap".into()),
            }),
            ..GaleraDisk::default()
        };
        let mut g = GaleraCheck::default();
        g.disk.insert(
            "g1".into(),
            Ok(d(
                "26.4.23",
                &["mariadb-backup", "socat", "wsrep_sst_mariabackup"],
            )),
        );
        g.disk.insert(
            "g2".into(),
            Ok(d("26.4.16", &["mariabackup", "wsrep_sst_mariabackup"])),
        );
        for p in PORTS {
            g.ports.insert(("g2".into(), "g1".into(), p), true);
            g.ports.insert(("g1".into(), "g2".into(), p), p != 4444);
        }
        let rows = verdicts(&t, &g);
        let find = |c: &str, h: &str| rows.iter().find(|r| r.check == c && r.host == h).unwrap();
        assert_eq!(find("SST tools", "g1").verdict, Verdict::Pass);
        let r = find("SST tools", "g2");
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.detail.contains("needs socat"), "{}", r.detail);
        let r = find("galera provider versions", "*");
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(
            r.detail.contains("26.4.16 on g2") && r.detail.contains("26.4.23 on g1"),
            "{}",
            r.detail
        );
        assert_eq!(find("galera ports", "g1").verdict, Verdict::Pass);
        let r = find("galera ports", "g2");
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.detail.contains("4444 from g1"), "{}", r.detail);
    }
}
