//! Live tests of `repltool lab` (the built binary, real mariadbd servers). Ports 23310-23499.

use crate::support::lab;

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::time::{Duration, Instant};

use lab::{processes_mentioning, repltool, show, Lab};
use mysql::prelude::Queryable;
use serde_yaml_ng::Value;

fn yaml(lab: &Lab) -> Value {
    let text = std::fs::read_to_string(&lab.topology).expect("topology.yaml");
    serde_yaml_ng::from_str(&text).expect("topology.yaml parses as YAML")
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v:?}"))
}

fn uid_of(pid: u32) -> u32 {
    std::fs::metadata(format!("/proc/{pid}"))
        .expect("process exists")
        .uid()
}

#[test]
fn three_nodes_up_status_noop_restart_down() {
    let lab = Lab::start(3, 23310);
    let dir = lab.dir_str();

    // Every node answers a real login on its own port, and starts without a binlog.
    for k in 1..=3 {
        let mut c = lab.conn(k);
        let (port, server_id, log_bin): (u16, u32, u32) = c
            .query_first("SELECT @@port, @@server_id, @@log_bin")
            .unwrap()
            .unwrap();
        assert_eq!(port, lab.ports[k - 1]);
        assert!(server_id >= 1);
        assert_eq!(log_bin, 0, "node{k} must start without log-bin");
    }
    let ports = &lab.ports;
    assert!(ports.windows(2).all(|w| w[0] < w[1]), "{ports:?}");

    // The topology file `repltool init` reads.
    let t = yaml(&lab);
    assert_eq!(s(&t["defaults"]["transport"]), "local");
    assert_eq!(s(&t["defaults"]["mysql"]["user"]), "repltool");
    assert_eq!(
        s(&t["defaults"]["mysql"]["password_file"]),
        format!("{dir}/admin.password")
    );
    assert_eq!(s(&t["replication"]["user"]), "repl");
    let repl_pw = std::fs::read_to_string(s(&t["replication"]["password_file"])).unwrap();
    assert!(repl_pw.trim().len() >= 16);
    assert_ne!(repl_pw.trim(), lab.admin_password);
    for f in ["admin.password", "repl.password"] {
        let mode = std::fs::metadata(lab.dir.join(f)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
    let hosts = t["hosts"].as_mapping().expect("hosts mapping");
    let names: Vec<&str> = hosts.keys().map(s).collect();
    assert_eq!(names, ["node1", "node2", "node3"]);
    for k in 1..=3 {
        let h = &t["hosts"][format!("node{k}").as_str()];
        let nd = format!("{dir}/node{k}");
        assert_eq!(s(&h["address"]), "127.0.0.1");
        assert_eq!(h["mysql"]["port"].as_u64(), Some(u64::from(ports[k - 1])));
        assert_eq!(s(&h["config_file"]), format!("{nd}/conf.d/60-repltool.cnf"));
        assert_eq!(s(&h["restart"]), format!("{nd}/ctl restart"));
        assert_eq!(s(&h["error_log"]), format!("{nd}/error.log"));
        let master = h.get("master").map(s);
        assert_eq!(master, if k == 1 { None } else { Some("node1") });
    }

    // The config include directory is really read: my.cnf includes it and /etc/mysql is not.
    let my_cnf = std::fs::read_to_string(lab.node_dir(1).join("my.cnf")).unwrap();
    assert!(my_cnf.contains(&format!("!includedir {dir}/node1/conf.d")));

    // As root, in a directory the mysql user can enter, servers run as mysql.
    let pids: Vec<u32> = (1..=3).map(|k| lab.pid(k).expect("pid file")).collect();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        for p in &pids {
            assert_ne!(uid_of(*p), 0, "server {p} runs as root");
        }
    }

    let st = lab.lab("status");
    assert!(st.status.success(), "{}", show(&st));
    let table = String::from_utf8_lossy(&st.stdout);
    let running = table.lines().filter(|l| l.contains(" yes ")).count();
    assert_eq!(running, 3, "{table}");
    for p in &pids {
        assert!(table.contains(&p.to_string()), "{table}");
    }
    assert!(
        table.contains("master") && table.contains("slave"),
        "{table}"
    );

    // A second `lab up` is a no-op; a different node count is refused.
    let again = repltool(&["lab", "up", "--dir", &dir, "--nodes", "3"]);
    assert!(again.status.success(), "{}", show(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("nothing to do"));
    assert_eq!(
        (1..=3).map(|k| lab.pid(k).unwrap()).collect::<Vec<_>>(),
        pids
    );
    let other = repltool(&["lab", "up", "--dir", &dir, "--nodes", "2"]);
    assert_eq!(other.status.code(), Some(2), "{}", show(&other));
    assert!(String::from_utf8_lossy(&other.stderr).contains("3 node(s)"));

    // ctl restart gives a new server process that accepts logins, quickly.
    let t0 = Instant::now();
    let r = lab.ctl(2, "restart");
    assert!(r.status.success(), "{}", show(&r));
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let new_pid = lab.pid(2).unwrap();
    assert_ne!(new_pid, pids[1]);
    let port: u16 = lab.conn(2).query_first("SELECT @@port").unwrap().unwrap();
    assert_eq!(port, ports[1]);
    let st = lab.ctl(2, "status");
    assert!(st.status.success(), "{}", show(&st));

    // ctl stop / status / start.
    assert!(lab.ctl(3, "stop").status.success());
    assert_eq!(lab.ctl(3, "status").status.code(), Some(3));
    let table = String::from_utf8_lossy(&lab.lab("status").stdout).into_owned();
    assert_eq!(table.lines().filter(|l| l.contains(" yes ")).count(), 2);
    // `lab up` on a lab with a stopped node starts just that node.
    let again = repltool(&["lab", "up", "--dir", &dir, "--nodes", "3"]);
    assert!(again.status.success(), "{}", show(&again));
    assert!(String::from_utf8_lossy(&again.stderr).contains("started 1 stopped node"));
    assert!(lab.ctl(3, "status").status.success());
    assert_eq!(lab.pid(1), Some(pids[0]), "a running node was restarted");

    // Down: nothing left, not a process, not a file.
    let down = lab.lab("down");
    assert!(down.status.success(), "{}", show(&down));
    assert!(!lab.dir.exists());
    assert_eq!(processes_mentioning(&lab.dir), Vec::<u32>::new());
    assert!(TcpListener::bind(("127.0.0.1", ports[0])).is_ok());
    let twice = lab.lab("down");
    assert!(twice.status.success(), "{}", show(&twice));
}

#[test]
fn a_port_in_use_is_skipped() {
    let held = TcpListener::bind(("127.0.0.1", 23340)).expect("hold port 23340");
    let lab = Lab::start(2, 23340);
    assert!(!lab.ports.contains(&23340), "{:?}", lab.ports);
    assert!(lab.ports[0] > 23340);
    for k in 1..=2 {
        let port: u16 = lab.conn(k).query_first("SELECT @@port").unwrap().unwrap();
        assert_eq!(port, lab.ports[k - 1]);
    }
    drop(held);
}

#[test]
fn shapes_and_the_root_fallback() {
    // A 0700 temp dir: the mysql user cannot enter it, so the servers run as root.
    let mm = Lab::start_with(2, 23360, &["--shape", "master-master"], false);
    let t = yaml(&mm);
    assert_eq!(s(&t["hosts"]["node1"]["master"]), "node2");
    assert_eq!(s(&t["hosts"]["node2"]["master"]), "node1");
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        assert!(mm.up_stderr.contains("run as root"), "{}", mm.up_stderr);
        assert_eq!(uid_of(mm.pid(1).unwrap()), 0);
    }
    let table = String::from_utf8_lossy(&mm.lab("status").stdout).into_owned();
    assert!(table.contains("master-master"), "{table}");
    let mut c = mm.conn(2);
    let one: u8 = c.query_first("SELECT 1").unwrap().unwrap();
    assert_eq!(one, 1);

    let chain = Lab::start_with(3, 23370, &["--shape", "chain"], true);
    let t = yaml(&chain);
    assert!(t["hosts"]["node1"].get("master").is_none());
    assert_eq!(s(&t["hosts"]["node2"]["master"]), "node1");
    assert_eq!(s(&t["hosts"]["node3"]["master"]), "node2");
    let table = String::from_utf8_lossy(&chain.lab("status").stdout).into_owned();
    assert!(table.contains("relay"), "{table}");
}

#[test]
fn bad_requests_are_refused_without_side_effects() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("x");
    let ds = d.to_string_lossy().into_owned();

    let mm3 = repltool(&[
        "lab",
        "up",
        "--dir",
        &ds,
        "-n",
        "3",
        "--shape",
        "master-master",
    ]);
    assert_eq!(mm3.status.code(), Some(2), "{}", show(&mm3));
    assert!(String::from_utf8_lossy(&mm3.stderr).contains("exactly 2 nodes"));
    assert!(!d.exists());

    // A directory that is not a lab is neither filled nor removed.
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("precious"), b"keep").unwrap();
    let up = repltool(&["lab", "up", "--dir", &ds, "--base-port", "23390"]);
    assert_eq!(up.status.code(), Some(2), "{}", show(&up));
    let down = repltool(&["lab", "down", "--dir", &ds]);
    assert_eq!(down.status.code(), Some(2), "{}", show(&down));
    let status = repltool(&["lab", "status", "--dir", &ds]);
    assert_eq!(status.status.code(), Some(2), "{}", show(&status));
    assert_eq!(std::fs::read(d.join("precious")).unwrap(), b"keep");
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
}

#[test]
fn down_stops_only_the_labs_own_servers() {
    let lab = Lab::start(1, 23400);
    let server = lab.pid(1).unwrap();
    // A stranger's pid in the pid file (as after pid reuse): down must not kill it, and must
    // still find the real server by its command line.
    let mut stranger = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(
        lab.node_dir(1).join("run/mysqld.pid"),
        format!("{}\n", stranger.id()),
    )
    .unwrap();
    let down = lab.lab("down");
    assert!(down.status.success(), "{}", show(&down));
    assert!(
        stranger.try_wait().unwrap().is_none(),
        "lab down killed a process that was not its server"
    );
    let alive = std::fs::read(format!("/proc/{server}/cmdline"))
        .map(|c| !c.is_empty())
        .unwrap_or(false);
    assert!(!alive, "the lab's server {server} survived lab down");
    assert!(!lab.dir.exists());
    let _ = stranger.kill();
    let _ = stranger.wait();
}

#[test]
fn the_template_is_built_once_atomically_and_a_crashed_build_is_not_reused() {
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let up = |name: &str, port: &str| {
        let d = work.path().join(name);
        let out = Command::new(lab::bin())
            .args(["lab", "up", "-n", "1", "--base-port", port, "--dir"])
            .arg(&d)
            .env("XDG_CACHE_HOME", cache.path())
            .output()
            .unwrap();
        let down = repltool(&["lab", "down", "--dir", &d.to_string_lossy()]);
        assert!(out.status.success(), "{}", show(&out));
        assert!(down.status.success(), "{}", show(&down));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let root = cache.path().join("repltool");
    let templates = || -> Vec<String> {
        std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("template-") && !n.ends_with(".lock"))
            .collect()
    };

    assert!(up("a", "23420").contains("building the lab template"));
    let names = templates();
    assert_eq!(names.len(), 1, "{names:?}");
    let name = names[0].clone();
    let pw = root.join(&name).join("admin.password");
    assert_eq!(std::fs::metadata(&pw).unwrap().mode() & 0o777, 0o600);
    assert!(root.join(&name).join("data/mysql").is_dir());
    assert!(
        !root.join(&name).join("admin.sql").exists(),
        "SQL with the password left behind"
    );

    assert!(!up("b", "23425").contains("building"), "template rebuilt");

    // A build that died half-way: its directory must be neither used nor left behind.
    std::fs::remove_dir_all(root.join(&name)).unwrap();
    let debris = root.join(format!("{name}.building-424242"));
    std::fs::create_dir_all(debris.join("data")).unwrap();
    assert!(up("c", "23430").contains("building the lab template"));
    assert!(!debris.exists());
    assert_eq!(templates(), vec![name]);
}

#[test]
fn a_server_that_cannot_start_is_reported_and_nothing_is_left_behind() {
    // A "mariadbd" first on PATH that reports a version, writes one line to its error log and
    // exits, like a server refusing its configuration.
    let fake = tempfile::tempdir().unwrap();
    let script = fake.path().join("mariadbd");
    std::fs::write(
        &script,
        "#!/bin/sh\n\
         case \"$1\" in --version) echo \"mariadbd  Ver 10.11.0-MariaDB-labtest for linux\"; exit 0;; esac\n\
         cnf=${1#--defaults-file=}\n\
         log=$(sed -n 's/^log-error=//p' \"$cnf\")\n\
         echo '[ERROR] labtest: refusing to start' >> \"$log\"\n\
         exit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let d = work.path().join("lab");
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(lab::bin())
        .args(["lab", "up", "-n", "2", "--base-port", "23440", "--dir"])
        .arg(&d)
        .env("PATH", path)
        .env("XDG_CACHE_HOME", cache.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node1: the server exited during startup"),
        "{err}"
    );
    assert!(err.contains("labtest: refusing to start"), "{err}");
    assert!(!d.exists(), "a failed lab up left its directory");
    assert_eq!(processes_mentioning(&d), Vec::<u32>::new());
}
