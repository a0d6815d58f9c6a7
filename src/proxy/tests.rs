//! Unit tests of the endpoints: routing, rendering (goldens in tests/golden/proxy/,
//! `UPDATE_GOLDEN=1` rewrites them), the parsers of what proxies say, the plan's decisions
//! (converged = nothing; only states moved = runtime, no reload) and the status findings.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::observe::{nginx_live, parse_probe, parse_show_stat, ProxyFacts, StatRow};
use super::plan::{plan_proxy, PStep, Service, Validate};
use super::render::{self, Found};
use super::*;
use crate::observe::{Facts, IoThread};
use crate::testing::{converged, topo};
use crate::topology::{Proxy, ProxyKind, Topology, Transport, Vip};

const MS: &[(&str, Option<&str>)] = &[("db1", None), ("db2", Some("db1")), ("db3", Some("db1"))];
const PAIR: &[(&str, Option<&str>)] = &[("m1", Some("m2")), ("m2", Some("m1"))];

fn with_proxies(mut t: Topology, kinds: &[ProxyKind], vip: bool) -> Topology {
    t.name = "shop".into();
    for (i, h) in t.hosts.iter_mut().enumerate() {
        h.address = format!("10.0.1.{}", 10 + i);
        h.mysql.port = 3306;
    }
    for (i, k) in kinds.iter().enumerate() {
        t.proxies.push(Proxy {
            name: format!("lb{}", i + 1),
            address: format!("10.0.0.{}", 5 + i),
            kind: *k,
            writer: 3306,
            reader: Some(3307),
            transport: Transport::Local,
            line: 20 + i,
        });
    }
    if vip {
        t.vip = Some(Vip {
            address: "10.0.0.100".into(),
            prefix: 24,
            interface: None,
            router_id: 51,
        });
    }
    t
}

fn healthy(t: &Topology) -> HashMap<String, Facts> {
    let mut f = converged(t);
    for x in f.values_mut() {
        if let Some(r) = x.sql.as_mut().and_then(|s| s.replica.as_mut()) {
            r.seconds_behind_master = Some(0);
        }
    }
    f
}

fn golden(name: &str, got: &str) {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/proxy")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&p)
        .unwrap_or_else(|_| panic!("{}: missing golden (UPDATE_GOLDEN=1)", p.display()));
    assert_eq!(want, got, "{name} differs from its golden");
}

#[test]
fn routing_sends_writes_to_the_master_and_reads_to_healthy_slaves() {
    let t = with_proxies(topo(MS), &[ProxyKind::Haproxy], false);
    let mut f = healthy(&t);
    f.get_mut("db3")
        .unwrap()
        .sql
        .as_mut()
        .unwrap()
        .replica
        .as_mut()
        .unwrap()
        .seconds_behind_master = Some(120);
    let h = reader_health(&t, &f, 60);
    assert_eq!(h["db2"], Ok(()));
    assert_eq!(
        h["db3"],
        Err("120s behind its master (limit 60s)".to_string())
    );
    assert_eq!(h["db1"], Err("does not replicate".to_string()));
    assert_eq!(writer_of(&t).as_deref(), Some("db1"));
    let r = routing(&t, "db1", &h);
    let on = |slots: &[Slot]| -> Vec<String> {
        slots
            .iter()
            .filter(|s| s.on)
            .map(|s| s.server_name())
            .collect()
    };
    assert_eq!(on(&r.writer), vec!["db1"]);
    assert_eq!(on(&r.reader), vec!["db2", "db1:backup"]);
    assert_eq!(r.reader_out["db3"], "120s behind its master (limit 60s)");
    // Every host has both slots in both endpoints: a move is only states.
    assert_eq!(r.writer.len(), 6);
    assert_eq!(r.reader.len(), 6);
}

#[test]
fn a_pair_writes_to_the_writable_side_with_a_writable_peer_as_backup() {
    let mut t = with_proxies(topo(PAIR), &[ProxyKind::Haproxy], false);
    let h = reader_health(&t, &healthy(&t), 60);
    let r = routing(&t, "m1", &h);
    let on: Vec<String> = r
        .writer
        .iter()
        .filter(|s| s.on)
        .map(|s| s.server_name())
        .collect();
    assert_eq!(on, vec!["m1", "m2:backup"]);
    // The passive side (read_only: true) is never a writer backup.
    t.hosts[1].read_only = Some(true);
    assert_eq!(writer_of(&t).as_deref(), Some("m1"));
    let r = routing(&t, "m1", &h);
    let on: Vec<String> = r
        .writer
        .iter()
        .filter(|s| s.on)
        .map(|s| s.server_name())
        .collect();
    assert_eq!(on, vec!["m1"]);
}

#[test]
fn rendered_configurations() {
    let t = with_proxies(topo(MS), &[ProxyKind::Haproxy, ProxyKind::Nginx], true);
    let mut f = healthy(&t);
    f.get_mut("db3").unwrap().sql = None;
    let r = routing(&t, "db1", &reader_health(&t, &f, 60));
    golden(
        "haproxy-block.cfg",
        &render::haproxy_block(&t, &t.proxies[0], &r),
    );
    golden(
        "nginx-file.conf",
        &render::nginx_file(&t, &t.proxies[1], &r),
    );
    golden("nginx-conf-block.conf", &render::nginx_conf_block());
    golden(
        "keepalived-block.conf",
        &render::keepalived_block(&t, &t.proxies[1], t.vip.as_ref().unwrap(), "eth0"),
    );
    golden(
        "keepalived-check.sh",
        &render::keepalived_check_script(&t.proxies[0]),
    );
}

#[test]
fn the_haproxy_block_passes_haproxy_c_with_debians_config() {
    // The real HAProxy of the machine judges the block inside Debian's default file (whose
    // `defaults` say `mode http`): valid, no warning.
    let t = with_proxies(topo(MS), &[ProxyKind::Haproxy], false);
    let r = routing(&t, "db1", &reader_health(&t, &healthy(&t), 60));
    let debian = include_str!("../../tests/golden/proxy/debian-haproxy.cfg");
    let (b, e) = render::markers(&t.name);
    let cfg = render::splice(
        debian,
        &b,
        &e,
        &render::haproxy_block(&t, &t.proxies[0], &r),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(&path)
        .output()
        .expect("haproxy is installed (tests/install-deps.sh)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(!text.contains("WARNING"), "{text}");
}

#[test]
fn splicing_keeps_everything_outside_the_block() {
    let user = "global\n\tmaxconn 100\n\n# mine\nlisten web\n\tbind :80\n";
    let (b, e) = render::markers("shop");
    let block = format!("{b}\nX 1\n{e}\n");
    let once = render::splice(user, &b, &e, &block).unwrap();
    assert!(once.starts_with(user));
    assert!(once.ends_with(&block));
    // The user adds something after the block; the next splice replaces only the block.
    let edited = format!("{once}listen after\n\tbind :81\n");
    let block2 = format!("{b}\nX 2\n{e}\n");
    let twice = render::splice(&edited, &b, &e, &block2).unwrap();
    assert_eq!(twice, edited.replace("X 1", "X 2"));
    assert_eq!(
        render::find_block(&twice, &b, &e),
        Found::Block(block2.clone())
    );
    // A block of another cluster is not ours.
    let (b2, e2) = render::markers("other");
    assert_eq!(render::find_block(&twice, &b2, &e2), Found::Absent);
    // A lost END marker: refuse rather than eat the rest of the file.
    let broken = twice.replace(&e, "");
    assert!(render::splice(&broken, &b, &e, &block)
        .unwrap_err()
        .contains("no `# END repltool shop` follows"));
}

#[test]
fn only_states_differ_means_the_same_shape() {
    let t = with_proxies(topo(MS), &[ProxyKind::Haproxy], false);
    let h = reader_health(&t, &healthy(&t), 60);
    let a = render::haproxy_block(&t, &t.proxies[0], &routing(&t, "db1", &h));
    let b = render::haproxy_block(&t, &t.proxies[0], &routing(&t, "db2", &h));
    assert_ne!(a, b);
    assert_eq!(render::haproxy_shape(&a), render::haproxy_shape(&b));
    let mut t2 = t.clone();
    t2.proxies[0].reader = Some(3308);
    let c = render::haproxy_block(&t2, &t2.proxies[0], &routing(&t2, "db1", &h));
    assert_ne!(render::haproxy_shape(&a), render::haproxy_shape(&c));
}

const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,h2_detected_conn_protocol_err,h2_detected_strm_protocol_err,h2_rst_stream_resp,h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,
repltool-shop-writer,FRONTEND,,,2,3,4096,9,1,2,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,2,,,,,,,,,,,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,,,,,,,,tcp,,0,2,9,,0,0,0,,,,,,,,,,,0,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,
repltool-shop-writer,db1,0,0,2,3,,9,1,2,,0,,0,0,0,0,UP,1,1,0,0,0,60,0,,1,2,1,,9,,2,0,,2,L4OK,,0,,,,,,,,,,,0,0,,,,,0,,,0,0,0,0,,,,Layer4 check passed,,2,2,3,,,,10.0.1.10:3306,,tcp,,,,,,,,0,9,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,,,,,,,,,,,,,,,,,,,,,,
repltool-shop-writer,db2,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,0,60,0,,1,2,2,,0,,2,0,,0,,,,,,,,,,,,,,0,0,,,,,-1,,,0,0,0,0,,,,,,2,2,0,,,,10.0.1.11:3306,,tcp,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,,,,,,,,,,,,,,,,,,,,,,
repltool-shop-writer,db1:backup,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,0,1,0,0,60,0,,1,2,4,,0,,2,0,,0,,,,,,,,,,,,,,0,0,,,,,-1,,,0,0,0,0,,,,,,2,2,0,,,,10.0.1.10:3306,,tcp,,,,,,,,0,0,0,,,0,,0,0,0,0,0,0,0,0,1,1,,,,,,,,,,,,,,,,,,,,,,,,,
repltool-shop-writer,BACKEND,0,0,2,3,410,9,1,2,0,0,,0,0,0,0,UP,1,1,0,,0,60,0,,1,2,0,,9,,1,0,,2,,,,,,,,,,,,,,0,0,0,0,0,0,0,,,0,0,0,0,,,,,,,,,,,,,,tcp,roundrobin,,,,,,,0,9,0,0,0,,,0,0,0,0,0,0,0,0,0,1,,,,,,,,,,,,,,,,,,,,,,,,,
";

#[test]
fn show_stat_is_parsed_by_its_header() {
    let rows = parse_show_stat(STAT).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(
        rows[0],
        StatRow {
            backend: "repltool-shop-writer".into(),
            server: "db1".into(),
            status: "UP".into(),
            backup: false,
            sessions: 2,
            addr: "10.0.1.10:3306".into(),
        }
    );
    assert!(!rows[1].enabled() && rows[2].backup);
    let live = observe::haproxy_live("shop", Endpoint::Writer, &rows);
    assert_eq!(live[2].host, "db1");
    assert!(live[2].backup && !live[2].on);
    // Not CSV, or a column missing: an error naming what, never an empty list.
    assert!(parse_show_stat("Unknown command.\n")
        .unwrap_err()
        .to_string()
        .contains("not its CSV header"));
    assert!(parse_show_stat("# pxname,svname\nx,y\n")
        .unwrap_err()
        .to_string()
        .contains("no `status` column"));
    assert!(
        parse_show_stat(&STAT.replace(",UP,1,1,0,0,0,60", ",UP,1,1,zero,0,0,60"))
            .unwrap_err()
            .to_string()
            .contains("bck of db1 is \"zero\"")
    );
}

fn stat_rows(r: &Routing, t: &Topology) -> Vec<StatRow> {
    let mut rows = Vec::new();
    for e in [Endpoint::Writer, Endpoint::Reader] {
        for s in r.slots(e) {
            rows.push(StatRow {
                backend: render::haproxy_backend(&t.name, e),
                server: s.server_name(),
                status: if s.on { "UP".into() } else { "MAINT".into() },
                backup: s.backup,
                sessions: 0,
                addr: format!("{}:{}", s.address, s.port),
            });
        }
    }
    rows
}

fn haproxy_facts(t: &Topology, r: &Routing, running: bool) -> ProxyFacts {
    let (b, e) = render::markers(&t.name);
    let cfg = render::splice(
        include_str!("../../tests/golden/proxy/debian-haproxy.cfg"),
        &b,
        &e,
        &render::haproxy_block(t, &t.proxies[0], r),
    )
    .unwrap();
    let mut f = ProxyFacts {
        name: "lb1".into(),
        running,
        stat: Some(Ok(stat_rows(r, t))),
        ..ProxyFacts::default()
    };
    for b in ["haproxy", "socat", "keepalived", "bash", "timeout", "ps"] {
        f.bins.insert(b.into(), true);
    }
    f.files.insert(paths::HAPROXY_CFG.into(), Some(cfg));
    f
}

#[test]
fn converged_haproxy_needs_nothing_and_a_moved_master_only_runtime_commands() {
    let t = with_proxies(topo(MS), &[ProxyKind::Haproxy], false);
    let h = reader_health(&t, &healthy(&t), 60);
    let r1 = routing(&t, "db1", &h);
    let f = haproxy_facts(&t, &r1, true);
    let p = plan_proxy(&t, &t.proxies[0], &r1, &f).unwrap();
    assert!(p.is_empty(), "{:?}", p.lines());
    // The master moved (a promote on a proxy that was down): the file and HAProxy's states,
    // at runtime, no reload; out before in.
    let r2 = routing(&t, "db2", &h);
    let p = plan_proxy(&t, &t.proxies[0], &r2, &f).unwrap();
    assert_eq!(p.steps.len(), 2, "{:?}", p.lines());
    assert!(matches!(
        &p.steps[0],
        PStep::Write {
            validate: Validate::Haproxy,
            ..
        }
    ));
    let PStep::Runtime { commands, .. } = &p.steps[1] else {
        panic!("{:?}", p.lines())
    };
    let first_ready = commands
        .iter()
        .position(|c| c.contains("state ready"))
        .unwrap();
    let last_maint = commands
        .iter()
        .rposition(|c| c.contains("state maint"))
        .unwrap();
    assert!(last_maint < first_ready, "{commands:?}");
    assert!(commands.contains(&"set server repltool-shop-writer/db1 state maint".to_string()));
    assert!(commands.contains(&"shutdown sessions server repltool-shop-writer/db1".to_string()));
    assert!(commands.contains(&"set server repltool-shop-writer/db2 state ready".to_string()));
    // A hand-made change at runtime (a second writer) is undone at runtime.
    let mut f2 = haproxy_facts(&t, &r1, true);
    if let Some(Ok(rows)) = f2.stat.as_mut() {
        rows.iter_mut()
            .find(|r| r.backend.ends_with("writer") && r.server == "db3")
            .unwrap()
            .status = "UP".into();
    }
    let p = plan_proxy(&t, &t.proxies[0], &r1, &f2).unwrap();
    assert_eq!(
        p.steps,
        vec![PStep::Runtime {
            commands: vec![
                "set server repltool-shop-writer/db3 state maint".into(),
                "shutdown sessions server repltool-shop-writer/db3".into()
            ],
            why: vec!["writer db3 out".into()],
        }]
    );
}

#[test]
fn haproxy_starts_or_reloads_when_it_must() {
    let t = with_proxies(topo(MS), &[ProxyKind::Haproxy], false);
    let r = routing(&t, "db1", &reader_health(&t, &healthy(&t), 60));
    // Not running: start (the file is already right).
    let p = plan_proxy(&t, &t.proxies[0], &r, &haproxy_facts(&t, &r, false)).unwrap();
    assert_eq!(p.steps, vec![PStep::Start(Service::Haproxy)]);
    // Running without repltool's block loaded (no admin socket): reload.
    let mut f = haproxy_facts(&t, &r, true);
    f.stat = Some(Err("repltool's admin socket is not there".into()));
    let p = plan_proxy(&t, &t.proxies[0], &r, &f).unwrap();
    assert_eq!(
        p.steps,
        vec![PStep::Reload {
            service: Service::Haproxy,
            drain: false
        }]
    );
    // A new port: the shape changed: write, then reload.
    let mut t2 = t.clone();
    t2.proxies[0].reader = Some(3310);
    let p = plan_proxy(&t2, &t2.proxies[0], &r, &haproxy_facts(&t, &r, true)).unwrap();
    assert_eq!(p.steps.len(), 2);
    assert!(matches!(p.steps[1], PStep::Reload { .. }));
    // Packages: a clear error naming the package.
    let mut f = haproxy_facts(&t, &r, true);
    f.bins.insert("socat".into(), false);
    let e = plan_proxy(&t, &t.proxies[0], &r, &f).unwrap_err();
    assert!(
        e.contains("lb1: `socat` is not installed: install the `socat` package"),
        "{e}"
    );
    f.bins.insert("haproxy".into(), false);
    let e = plan_proxy(&t, &t.proxies[0], &r, &f).unwrap_err();
    assert!(e.contains("apt-get install haproxy"), "{e}");
}

fn nginx_facts(t: &Topology) -> ProxyFacts {
    let mut f = ProxyFacts {
        name: "lb1".into(),
        running: true,
        writer_listening: true,
        stream_module: true,
        nginx_pid_file: "/run/nginx.pid".into(),
        ..ProxyFacts::default()
    };
    for b in ["nginx", "ps", "keepalived", "bash", "timeout"] {
        f.bins.insert(b.into(), true);
    }
    f.files.insert(
        paths::NGINX_CONF.into(),
        Some("events {}\nhttp {\n\tinclude /etc/nginx/conf.d/*.conf;\n}\n".into()),
    );
    f.files.insert(paths::nginx_file(&t.name), None);
    f
}

#[test]
fn nginx_gets_a_stream_block_once_and_never_a_second_one() {
    let t = with_proxies(topo(MS), &[ProxyKind::Nginx], false);
    let r = routing(&t, "db1", &reader_health(&t, &healthy(&t), 60));
    let mut f = nginx_facts(&t);
    let p = plan_proxy(&t, &t.proxies[0], &r, &f).unwrap();
    let paths_written: Vec<&str> = p
        .steps
        .iter()
        .filter_map(|s| match s {
            PStep::Write { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        paths_written,
        vec![paths::NGINX_CONF, "/etc/nginx/repltool/shop.conf"]
    );
    assert_eq!(p.steps[2], PStep::NginxTest);
    assert_eq!(
        p.steps[3],
        PStep::Reload {
            service: Service::Nginx,
            drain: false
        }
    );
    let PStep::Write { content, .. } = &p.steps[0] else {
        panic!()
    };
    assert!(content.starts_with("events {}\nhttp {\n"));
    assert!(content.ends_with(&render::nginx_conf_block()));
    // Converged: nothing, no reload.
    f.files
        .insert(paths::NGINX_CONF.into(), Some(content.clone()));
    f.files.insert(
        paths::nginx_file(&t.name),
        Some(render::nginx_file(&t, &t.proxies[0], &r)),
    );
    assert!(plan_proxy(&t, &t.proxies[0], &r, &f).unwrap().is_empty());
    // The files are right but the running nginx never loaded them: reload.
    let mut stale = f.clone();
    stale.writer_listening = false;
    assert_eq!(
        plan_proxy(&t, &t.proxies[0], &r, &stale).unwrap().steps,
        vec![PStep::Reload {
            service: Service::Nginx,
            drain: false
        }]
    );
    // The writer moved: reload, and the previous workers are ended (drain).
    let r2 = routing(&t, "db2", &reader_health(&t, &healthy(&t), 60));
    let p = plan_proxy(&t, &t.proxies[0], &r2, &f).unwrap();
    assert_eq!(
        p.steps.last(),
        Some(&PStep::Reload {
            service: Service::Nginx,
            drain: true
        })
    );
    // The user's own stream block: nginx allows one; say where to include ours.
    let mut f = nginx_facts(&t);
    f.nginx_streams.push("/etc/nginx/nginx.conf:40".into());
    let e = plan_proxy(&t, &t.proxies[0], &r, &f).unwrap_err();
    assert!(
        e.contains("already has a `stream {}` block (/etc/nginx/nginx.conf:40)"),
        "{e}"
    );
    assert!(e.contains("include /etc/nginx/repltool/*.conf;"), "{e}");
    // ... which once done, is used as it is.
    f.nginx_includes_ours = true;
    let p = plan_proxy(&t, &t.proxies[0], &r, &f).unwrap();
    assert!(p
        .steps
        .iter()
        .all(|s| !matches!(s, PStep::Write { path, .. } if path == paths::NGINX_CONF)));
    // No stream module: the package is named.
    let mut f = nginx_facts(&t);
    f.stream_module = false;
    let e = plan_proxy(&t, &t.proxies[0], &r, &f).unwrap_err();
    assert!(
        e.contains("install the `libnginx-mod-stream` package"),
        "{e}"
    );
}

#[test]
fn nginx_files_are_read_back_and_the_writer_moved_alone() {
    let t = with_proxies(topo(MS), &[ProxyKind::Nginx], false);
    let r = routing(&t, "db1", &reader_health(&t, &healthy(&t), 60));
    let text = render::nginx_file(&t, &t.proxies[0], &r);
    let w = nginx_live("shop", Endpoint::Writer, &text).unwrap();
    let on: Vec<&str> = w.iter().filter(|s| s.on).map(|s| s.host.as_str()).collect();
    assert_eq!(on, vec!["db1"]);
    let rd = nginx_live("shop", Endpoint::Reader, &text).unwrap();
    let db1 = rd.iter().find(|s| s.host == "db1").unwrap();
    assert!(db1.on && db1.backup);
    // The promote's move: an awk on the proxy, in the same round trip as the reload.
    let awk = |input: &str, on: Option<&str>| -> Result<String, i32> {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(render::nginx_writer_awk("shop", on))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(input.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        if out.status.success() {
            Ok(String::from_utf8(out.stdout).unwrap())
        } else {
            Err(out.status.code().unwrap_or(-1))
        }
    };
    let drained = awk(&text, None).unwrap();
    assert!(nginx_live("shop", Endpoint::Writer, &drained)
        .unwrap()
        .iter()
        .all(|s| !s.on));
    assert_eq!(
        nginx_live("shop", Endpoint::Reader, &drained),
        nginx_live("shop", Endpoint::Reader, &text)
    );
    let moved = awk(&drained, Some("db2")).unwrap();
    let on: Vec<String> = nginx_live("shop", Endpoint::Writer, &moved)
        .unwrap()
        .into_iter()
        .filter(|s| s.on)
        .map(|s| s.host)
        .collect();
    assert_eq!(on, vec!["db2"]);
    // Back on db1: the very file init writes (converged, no reload at the next init).
    assert_eq!(awk(&moved, Some("db1")).unwrap(), text);
    assert_eq!(awk("events {}\n", None), Err(3));
}

#[test]
fn the_probe_output_is_parsed() {
    let out = "@@repltool:PID1 sshd\n@@repltool:BIN haproxy 1\n@@repltool:BIN socat 0\n\
               @@repltool:FILE /etc/haproxy/haproxy.cfg\nglobal\n\tdaemon\n\n@@repltool:EOF\n\
               @@repltool:RUNNING 1\n@@repltool:STAT\n2026/11/30 socat[1] E connect(5, AF=1 \"/run/haproxy/repltool-shop.sock\", 35): Connection refused\n@@repltool:STATFAIL 1\n@@repltool:EOF\n\
               @@repltool:NOFILE /etc/keepalived/keepalived.conf\n\
               @@repltool:ADDR\nlo 127.0.0.1/8\neth0 10.0.0.5/24\neth0 10.0.0.100/24\n@@repltool:EOF\n";
    let f = parse_probe("lb1", out).unwrap();
    assert!(!f.systemd && f.running);
    assert!(f.has("haproxy") && !f.has("socat"));
    assert_eq!(f.file(paths::HAPROXY_CFG), Some("global\n\tdaemon\n"));
    assert_eq!(f.files[paths::KEEPALIVED_CONF], None);
    assert!(matches!(&f.stat, Some(Err(e)) if e.contains("did not answer")));
    assert_eq!(f.interface_of("10.0.0.5"), Some("eth0"));
    assert!(f.holds("10.0.0.100") && !f.holds("10.0.0.10"));
    assert!(parse_probe("lb1", "@@repltool:STAT\nx\n")
        .unwrap_err()
        .to_string()
        .contains("ends inside its STAT section"));
}

fn live_facts(t: &Topology, r: &Routing) -> BTreeMap<String, ProxyFacts> {
    let mut m = BTreeMap::new();
    m.insert("lb1".to_string(), haproxy_facts(t, r, true));
    m
}

#[test]
fn status_names_a_writer_that_reaches_anything_but_the_master() {
    let t = with_proxies(topo(MS), &[ProxyKind::Haproxy], false);
    let db = healthy(&t);
    let h = reader_health(&t, &db, 60);
    let r = routing(&t, "db1", &h);
    assert_eq!(report::findings(&t, &db, &live_facts(&t, &r), 60), vec![]);
    // Changed by hand: db2 enabled beside db1.
    let mut pf = live_facts(&t, &r);
    if let Some(Ok(rows)) = pf.get_mut("lb1").unwrap().stat.as_mut() {
        rows.iter_mut()
            .find(|x| x.backend.ends_with("writer") && x.server == "db2")
            .unwrap()
            .status = "UP".into();
    }
    let f = report::findings(&t, &db, &pf, 60);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].host, "lb1");
    assert_eq!(
        f[0].what,
        "writer :3306 sends to db1 and db2: 2 servers take writes, and only db1 is the master"
    );
    assert!(f[0].next.contains("repltool init"));
    // Pointed at a slave only.
    let f = report::findings(&t, &db, &live_facts(&t, &routing(&t, "db3", &h)), 60);
    assert!(
        f.iter()
            .any(|x| x.what == "writer :3306 sends to db3, not to the master db1"),
        "{f:?}"
    );
    // A lagging slave still served by the reader endpoint.
    let mut lag = db.clone();
    lag.get_mut("db2")
        .unwrap()
        .sql
        .as_mut()
        .unwrap()
        .replica
        .as_mut()
        .unwrap()
        .seconds_behind_master = Some(500);
    let f = report::findings(&t, &lag, &live_facts(&t, &r), 60);
    assert_eq!(
        f.iter().map(|x| x.what.as_str()).collect::<Vec<_>>(),
        vec!["reader :3307 sends to db2, which 500s behind its master (limit 60s)"]
    );
}

#[test]
fn status_checks_the_vip_and_reports_unreachable_proxies() {
    let mut t = with_proxies(topo(MS), &[ProxyKind::Haproxy, ProxyKind::Haproxy], true);
    t.proxies[1].kind = ProxyKind::Haproxy;
    let db = healthy(&t);
    let r = routing(&t, "db1", &reader_health(&t, &db, 60));
    let mut pf = BTreeMap::new();
    for (i, n) in ["lb1", "lb2"].iter().enumerate() {
        let mut f = haproxy_facts(&t, &r, true);
        f.name = n.to_string();
        f.keepalived_running = true;
        f.addrs = vec![("eth0".into(), format!("10.0.0.{}/24", 5 + i))];
        pf.insert(n.to_string(), f);
    }
    let f = report::findings(&t, &db, &pf, 60);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].host.as_str(), f[0].what.as_str()),
        ("vip", "no proxy holds the VIP 10.0.0.100")
    );
    for f in pf.values_mut() {
        f.addrs.push(("eth0".into(), "10.0.0.100/24".into()));
    }
    let f = report::findings(&t, &db, &pf, 60);
    assert_eq!(f[0].what, "10.0.0.100 are held by lb1 and lb2 at once");
    pf.get_mut("lb2").unwrap().addrs.pop();
    assert!(report::findings(&t, &db, &pf, 60).is_empty());
    assert_eq!(report::vip_holders(&t, &pf), vec!["lb1"]);
    pf.get_mut("lb2").unwrap().error = Some("lb2: SSH connection timed out".into());
    let f = report::findings(&t, &db, &pf, 60);
    assert_eq!(
        f[0].what,
        "proxy unreachable: lb2: SSH connection timed out"
    );
    let (j, vip) = report::json(&t, &pf);
    assert_eq!(j[0]["endpoints"][0]["sends_to"], serde_json::json!(["db1"]));
    assert_eq!(j[1]["reachable"], serde_json::json!(false));
    assert_eq!(vip["held_by"], serde_json::json!(["lb1"]));
}

#[test]
fn the_topology_after_a_promote_routes_to_the_new_master() {
    use crate::topology::rewrite::HostEdit;
    let t = with_proxies(topo(MS), &[ProxyKind::Haproxy], false);
    let mut edits = BTreeMap::new();
    edits.insert(
        "db2".to_string(),
        (
            2,
            HostEdit {
                master: Some(None),
                read_only: None,
            },
        ),
    );
    for o in ["db1", "db3"] {
        edits.insert(
            o.to_string(),
            (
                1,
                HostEdit {
                    master: Some(Some("db2".into())),
                    read_only: None,
                },
            ),
        );
    }
    let after = topology_after(&t, &edits);
    assert_eq!(writer_of(&after).as_deref(), Some("db2"));
    assert_eq!(after.host("db2").unwrap().slaves, vec!["db1", "db3"]);
    assert_eq!(
        after.host("db1").unwrap().role,
        crate::topology::Role::Slave
    );
    let mut tp = with_proxies(topo(PAIR), &[ProxyKind::Nginx], false);
    tp.hosts[1].read_only = Some(true);
    let mut edits = BTreeMap::new();
    edits.insert(
        "m1".to_string(),
        (
            1,
            HostEdit {
                master: None,
                read_only: Some(Some(true)),
            },
        ),
    );
    edits.insert(
        "m2".to_string(),
        (
            2,
            HostEdit {
                master: None,
                read_only: Some(None),
            },
        ),
    );
    let after = topology_after(&tp, &edits);
    assert_eq!(writer_of(&after).as_deref(), Some("m2"));
    assert_eq!(
        after.host("m1").unwrap().role,
        crate::topology::Role::MasterMaster
    );
}

#[test]
fn a_broken_slave_is_out_of_the_reader() {
    let t = with_proxies(topo(MS), &[ProxyKind::Haproxy], false);
    let mut db = healthy(&t);
    let r = db
        .get_mut("db2")
        .unwrap()
        .sql
        .as_mut()
        .unwrap()
        .replica
        .as_mut()
        .unwrap();
    r.sql_running = false;
    let r = db
        .get_mut("db3")
        .unwrap()
        .sql
        .as_mut()
        .unwrap()
        .replica
        .as_mut()
        .unwrap();
    r.io_running = Some(IoThread::Connecting);
    let h = reader_health(&t, &db, 60);
    assert_eq!(h["db2"], Err("its SQL thread is stopped".to_string()));
    assert_eq!(h["db3"], Err("its IO thread is not running".to_string()));
    let r = routing(&t, "db1", &h);
    // No healthy slave: the master takes the reads (its backup slot).
    let on: Vec<String> = r
        .reader
        .iter()
        .filter(|s| s.on)
        .map(|s| s.server_name())
        .collect();
    assert_eq!(on, vec!["db1:backup"]);
}

#[test]
fn the_nginx_and_keepalived_files_pass_their_own_checks() {
    let t = with_proxies(topo(MS), &[ProxyKind::Nginx, ProxyKind::Nginx], true);
    let r = routing(&t, "db1", &reader_health(&t, &healthy(&t), 60));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // nginx: Debian's nginx.conf with the block (its include pointed at a copy of our file)
    // and repltool's file, judged by `nginx -t -c`.
    let inc = d.join("repltool");
    std::fs::create_dir(&inc).unwrap();
    std::fs::write(
        inc.join("shop.conf"),
        render::nginx_file(&t, &t.proxies[0], &r),
    )
    .unwrap();
    let conf = render::splice(
        "user www-data;\nworker_processes auto;\npid /run/nginx.pid;\ninclude /etc/nginx/modules-enabled/*.conf;\nevents {\n\tworker_connections 768;\n}\nhttp {\n}\n",
        render::NGINX_BEGIN,
        render::NGINX_END,
        &render::nginx_conf_block().replace(paths::NGINX_DIR, &inc.to_string_lossy()),
    )
    .unwrap();
    std::fs::write(d.join("nginx.conf"), conf).unwrap();
    let out = std::process::Command::new("nginx")
        .arg("-t")
        .arg("-c")
        .arg(d.join("nginx.conf"))
        .output()
        .expect("nginx is installed (tests/install-deps.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // keepalived: the block with its check script in a root-only directory, on an interface
    // of this machine (VRRP refuses loopback).
    let iface = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|n| n != "lo")
        .min()
        .expect("a network interface besides lo");
    let check = d.join("check");
    std::fs::write(&check, render::keepalived_check_script(&t.proxies[0])).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&check, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let block = render::keepalived_block(&t, &t.proxies[0], t.vip.as_ref().unwrap(), &iface)
        .replace(&paths::keepalived_check(&t.name), &check.to_string_lossy());
    std::fs::write(d.join("keepalived.conf"), block).unwrap();
    let out = std::process::Command::new("keepalived")
        .arg("-t")
        .arg("-f")
        .arg(d.join("keepalived.conf"))
        .output()
        .expect("keepalived is installed (tests/install-deps.sh)");
    assert!(
        out.status.success(),
        "exit {:?}: {}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn writer_moves_are_one_round_trip_per_proxy() {
    use crate::transport::fake::{FakeServer, FakeSession};
    let t = with_proxies(topo(MS), &[ProxyKind::Haproxy, ProxyKind::Nginx], false);
    let mut sessions = ProxySessions::new();
    let mut logs = Vec::new();
    for p in &t.proxies {
        let s = FakeSession::new(&p.name, FakeServer::shared());
        logs.push(s.commands.clone());
        sessions.insert(p.name.clone(), std::sync::Mutex::new(Box::new(s)));
    }
    let names: Vec<String> = t.proxies.iter().map(|p| p.name.clone()).collect();
    let d = std::time::Duration::from_secs(5);
    for (_, r) in exec::drain_writer(&t, &sessions, &names, d) {
        r.unwrap();
    }
    for (_, r) in exec::point_writer(&t, &sessions, &names, "db2", true, d) {
        r.unwrap();
    }
    let haproxy = logs[0].lock().unwrap().clone();
    assert_eq!(haproxy.len(), 2, "{haproxy:?}");
    // Drain: every writer server out and its sessions shut, in one admin-socket connection.
    assert!(haproxy[0].contains("set server repltool-shop-writer/db1 state maint; shutdown sessions server repltool-shop-writer/db1; "));
    assert!(haproxy[0].contains("repltool-shop-writer/db3:backup state maint"));
    assert!(haproxy[0].contains("unix-connect:/run/haproxy/repltool-shop.sock"));
    // Point: every other writer server out, then db2 in, one connection, in that order.
    let point = &haproxy[1];
    assert!(
        point.ends_with("; set server repltool-shop-writer/db2 state ready' | socat -t 2 stdio unix-connect:/run/haproxy/repltool-shop.sock"),
        "{point}"
    );
    assert!(
        point.contains("'set server repltool-shop-writer/db1 state maint; shutdown sessions server repltool-shop-writer/db1;"),
        "{point}"
    );
    assert!(!point.contains("writer/db2 state maint"), "{point}");
    let nginx = logs[1].lock().unwrap().clone();
    assert_eq!(nginx.len(), 2, "{nginx:?}");
    // nginx: the file rewritten by awk and a reload, the previous workers ended.
    assert!(
        nginx[0].contains("-v on=''") && nginx[0].contains("kill -HUP"),
        "{}",
        nginx[0]
    );
    assert!(
        nginx[1].contains("-v on='db2'") && nginx[1].contains("kill -TERM"),
        "{}",
        nginx[1]
    );
    assert!(!exec::nginx_move_script("shop", Some("db2"), false).contains("kill -TERM"));
}

/// A Galera member's wsrep state.
fn wsrep(state: u32, comment: &str, status: &str) -> crate::observe::galera::WsrepLive {
    crate::observe::galera::WsrepLive {
        wsrep_on: true,
        provider: "/usr/lib/galera/libgalera_smm.so".into(),
        state,
        state_comment: comment.into(),
        cluster_status: status.into(),
        cluster_size: 3,
        ..Default::default()
    }
}

/// Members g1, g2, g3 of a Galera cluster (in these states) and dr1 replicating from g1, one
/// HAProxy proxy.
fn galera_world(
    states: [crate::observe::galera::WsrepLive; 3],
) -> (Topology, HashMap<String, Facts>) {
    const G: &[(&str, Option<&str>)] = &[
        ("g1", None),
        ("g2", None),
        ("g3", None),
        ("dr1", Some("g1")),
    ];
    let mut t = with_proxies(topo(G), &[ProxyKind::Haproxy], false);
    t.galera = Some(crate::topology::Galera {
        cluster_name: "shop".into(),
        sst: crate::topology::Sst::Mariabackup,
    });
    let mut f = healthy(&t);
    for (n, g) in ["g1", "g2", "g3"].into_iter().zip(states) {
        let s = f.get_mut(n).unwrap().sql.as_mut().unwrap();
        s.replica = None;
        s.galera = Some(g);
    }
    (t, f)
}

#[test]
fn a_galera_cluster_writes_to_one_member_with_the_others_as_backups() {
    let live = wsrep;
    let (t, mut f) = galera_world([
        live(4, "Synced", "Primary"),
        live(4, "Synced", "Primary"),
        live(2, "Donor/Desynced", "Primary"),
    ]);
    assert_eq!(writer_of(&t).as_deref(), Some("g1"));
    let h = reader_health(&t, &f, 60);
    assert_eq!(h["g2"], Ok(()));
    assert_eq!(h["g3"], Err("it is Donor/Desynced, not Synced".to_string()));
    assert_eq!(h["dr1"], Ok(()));
    let r = routing(&t, "g1", &h);
    let on = |slots: &[Slot]| -> Vec<String> {
        slots
            .iter()
            .filter(|s| s.on)
            .map(|s| s.server_name())
            .collect()
    };
    // One member takes the writes; the other members are its backups (never the async replica).
    assert_eq!(on(&r.writer), vec!["g1", "g2:backup", "g3:backup"]);
    // Reads: the Synced members but the writer, and the async replica.
    assert_eq!(on(&r.reader), vec!["g2", "dr1", "g1:backup"]);
    // A member outside the primary component serves nothing.
    f.get_mut("g2").unwrap().sql.as_mut().unwrap().galera =
        Some(live(0, "Initialized", "non-Primary"));
    let h = reader_health(&t, &f, 60);
    assert_eq!(
        h["g2"],
        Err("its component is not primary (non-Primary)".to_string())
    );
}

#[test]
fn a_dead_galera_writer_is_reported_with_the_backup_that_takes_the_writes() {
    let (t, f) = galera_world([
        wsrep(4, "Synced", "Primary"),
        wsrep(4, "Synced", "Primary"),
        wsrep(4, "Synced", "Primary"),
    ]);
    let r = routing(&t, "g1", &reader_health(&t, &f, 60));
    let mut pf = live_facts(&t, &r);
    assert_eq!(report::findings(&t, &f, &pf, 60), vec![]);
    let set = |pf: &mut BTreeMap<String, ProxyFacts>, server: &str, status: &str| {
        if let Some(Ok(rows)) = pf.get_mut("lb1").unwrap().stat.as_mut() {
            rows.iter_mut()
                .find(|x| x.backend.ends_with("writer") && x.server == server)
                .unwrap()
                .status = status.into();
        }
    };
    // HAProxy's check found g1 dead: the writes already go to the first backup that is UP;
    // there is no master to promote, the advice is to start g1 again.
    set(&mut pf, "g1", "DOWN");
    set(&mut pf, "g2:backup", "DOWN");
    let found = report::findings(&t, &f, &pf, 60);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].host, "lb1");
    assert_eq!(
        found[0].what,
        "writer :3306: HAProxy's check says g1 is DOWN: writes go to the backup member g3"
    );
    assert!(found[0].next.starts_with("start g1 again: `repltool init`"));
    assert!(!found[0].next.contains("promote"), "{}", found[0].next);
    set(&mut pf, "g3:backup", "DOWN 1/2");
    let found = report::findings(&t, &f, &pf, 60);
    assert_eq!(
        found.iter().map(|x| x.what.as_str()).collect::<Vec<_>>(),
        vec!["writer :3306: HAProxy's check says g1 and every backup member are DOWN: applications cannot write"]
    );
    // A master that is not a Galera member: promote another host.
    let t = with_proxies(topo(MS), &[ProxyKind::Haproxy], false);
    let db = healthy(&t);
    let r = routing(&t, "db1", &reader_health(&t, &db, 60));
    let mut pf = live_facts(&t, &r);
    set(&mut pf, "db1", "DOWN");
    let found = report::findings(&t, &db, &pf, 60);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].what,
        "writer :3306: HAProxy's check says the master db1 is DOWN"
    );
    assert!(found[0].next.contains("`repltool promote` another host"));
}
