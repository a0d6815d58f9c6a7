//! `repltool lab`: a local sandbox of real server instances on 127.0.0.1, each with its own
//! port, datadir, socket, pid file, error log and config include directory, plus a ready
//! topology file (local transport) that `repltool init` accepts unchanged.
//!
//! Layout of DIR: `lab.json` (the state status/down read), `topology.yaml`, `admin.password`,
//! `repl.password`, and per node `nodeK/{my.cnf,client.cnf,ctl,conf.d/,data/,run/,error.log}`
//! (run/ holds the socket and pid file).
//!
//! As root, servers run as `mysql` when every parent directory of DIR lets that user through;
//! otherwise (e.g. DIR under a 0700 temp dir or /root) they run as root, which mariadbd allows
//! with an explicit `user=root`, and `lab up` says so.

mod node;
pub mod template;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use crate::cli::{LabDirArgs, LabShape, LabUpArgs};
use crate::error::{input, problem};
use crate::transport::local::LocalSession;
use crate::transport::{shell_quote, HostSession};
use node::Node;
use template::{Server, ADMIN_USER};

const STATE_FILE: &str = "lab.json";
const MAX_NODES: u32 = 64;
/// `sun_path` is 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// What `lab up` recorded; `status` and `down` work from this alone.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    dir: PathBuf,
    shape: LabShape,
    server: PathBuf,
    server_version: String,
    /// The `user=` the servers run as; None: the invoking user.
    run_as: Option<String>,
    topology: PathBuf,
    admin_password_file: PathBuf,
    repl_password_file: PathBuf,
    nodes: Vec<Node>,
}

impl State {
    fn load(dir: &Path) -> Result<Option<State>> {
        let path = dir.join(STATE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let state = serde_json::from_str(&text)
            .map_err(|e| input(format!("{} is damaged: {e}", path.display())))?;
        Ok(Some(state))
    }

    fn save(&self) -> Result<()> {
        let path = self.dir.join(STATE_FILE);
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }
}

fn absolute(dir: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))?;
    // Lexically drop `.` and `..` so paths written into files are clean.
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            c => out.push(c),
        }
    }
    Ok(out)
}

/// DIR ends up in option files, a shell script and YAML; refusing odd characters is simpler and
/// safer than quoting for all three.
fn check_dir_name(dir: &Path) -> Result<()> {
    let s = dir.to_string_lossy();
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/._-+@:,=%~".contains(*c)))
    {
        return Err(input(format!(
            "--dir {s}: the character {c:?} is not supported in a lab path; use letters, digits and /._-+@:,=%~"
        )));
    }
    Ok(())
}

/// `lab up`'s view of an existing lab: a no-op, or starting the nodes that stopped.
fn up_existing(state: State, args: &LabUpArgs) -> Result<i32> {
    let dir = state.dir.display();
    let have = state.nodes.len();
    if have != args.nodes as usize {
        return Err(input(format!(
            "the lab in {dir} has {have} node(s), not {}; run `repltool lab down --dir {dir}` first or use another --dir",
            args.nodes
        )));
    }
    if let Some(shape) = args.shape.filter(|s| *s != state.shape) {
        return Err(input(format!(
            "the lab in {dir} is {}, not {}; run `repltool lab down --dir {dir}` first or use another --dir",
            state.shape.as_str(),
            shape.as_str()
        )));
    }
    let stopped: Vec<&Node> = state
        .nodes
        .iter()
        .filter(|n| n.running_pid().is_none())
        .collect();
    if stopped.is_empty() {
        crate::report::say(format!(
            "the lab in {dir} is already up ({have} nodes); nothing to do"
        ));
        return Ok(0);
    }
    let password = read_password(&state.admin_password_file)?;
    let timeout = Duration::from_secs(args.timeout);
    std::thread::scope(|s| {
        let handles: Vec<_> = stopped
            .iter()
            .map(|n| s.spawn(|| start(n, &password, timeout)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| bail!("a start thread panicked"))
            })
            .collect::<Result<Vec<()>>>()
    })?;
    crate::report::say(format!(
        "started {} stopped node(s) of the lab in {dir}",
        stopped.len()
    ));
    print_table(&state);
    Ok(0)
}

fn read_password(path: &Path) -> Result<String> {
    let s = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(s.trim().to_string())
}

/// `repltool lab up`: returns the exit code.
pub fn up(args: &LabUpArgs) -> Result<i32> {
    let t0 = Instant::now();
    if args.nodes == 0 || args.nodes > MAX_NODES {
        return Err(input(format!(
            "--nodes {}: a lab has 1 to {MAX_NODES} nodes",
            args.nodes
        )));
    }
    let shape = args.shape.unwrap_or(LabShape::MasterSlave);
    if shape == LabShape::MasterMaster && args.nodes != 2 {
        return Err(input(format!(
            "--shape master-master needs exactly 2 nodes (got --nodes {})",
            args.nodes
        )));
    }
    let dir = absolute(&args.dir.dir)?;
    check_dir_name(&dir)?;
    if let Some(state) = State::load(&dir)? {
        return up_existing(state, args);
    }
    let created = !dir.exists();
    if !created {
        let mut entries =
            fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
        if entries.next().is_some() {
            return Err(input(format!(
                "{} exists and is not a lab (no {STATE_FILE}); use an empty or new --dir",
                dir.display()
            )));
        }
    }
    let socket = Node::new(String::new(), 0, dir.join(format!("node{}", args.nodes))).socket();
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(input(format!(
            "--dir {} is too deep: the socket path {} is over the {MAX_SOCKET_PATH} bytes a Unix socket allows",
            dir.display(),
            socket.display()
        )));
    }
    let server = template::find_server()?;
    let tmpl = template::ensure(&server)?;
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let built = create(&dir, args, shape, &server, &tmpl);
    match built {
        Ok(state) => {
            crate::report::say(format!(
                "lab up: {} node(s) in {:.2}s",
                state.nodes.len(),
                t0.elapsed().as_secs_f64()
            ));
            print_table(&state);
            crate::report::outln(format!("\ntopology: {}", state.topology.display()));
            crate::report::outln(format!(
                "next:     repltool init -f {}",
                state.topology.display()
            ));
            Ok(0)
        }
        Err(e) => {
            // Leave nothing behind: stop whatever started, remove what we wrote.
            if let Ok(Some(state)) = State::load(&dir) {
                let _ = stop_all(&state.nodes);
            }
            if created {
                let _ = fs::remove_dir_all(&dir);
            } else if let Ok(rd) = fs::read_dir(&dir) {
                for e in rd.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() {
                        fs::remove_dir_all(&p)
                    } else {
                        fs::remove_file(&p)
                    };
                }
            }
            Err(e.context(format!(
                "lab up failed; stopped what had started and removed what it wrote in {}",
                dir.display()
            )))
        }
    }
}

/// Build a fresh lab in the (empty) `dir`.
fn create(
    dir: &Path,
    args: &LabUpArgs,
    shape: LabShape,
    server: &Server,
    tmpl: &template::Template,
) -> Result<State> {
    let owner = run_as(dir)?;
    let password = read_password(&tmpl.password_file)?;
    let admin_password_file = dir.join("admin.password");
    let repl_password_file = dir.join("repl.password");
    template::write_private(&admin_password_file, password.as_bytes())?;
    template::write_private(&repl_password_file, template::random_password()?.as_bytes())?;

    let mut taken: Vec<u16> = Vec::new();
    let mut nodes = Vec::new();
    for k in 1..=args.nodes {
        let port = node::next_free_port(
            taken.last().map_or(args.base_port, |p| p.saturating_add(1)),
            &taken,
        )?;
        taken.push(port);
        nodes.push(Node::new(
            format!("node{k}"),
            port,
            dir.join(format!("node{k}")),
        ));
    }
    let mut state = State {
        dir: dir.to_path_buf(),
        shape,
        server: server.path.clone(),
        server_version: server.version.clone(),
        run_as: owner.as_ref().map(|o| o.name.clone()),
        topology: dir.join("topology.yaml"),
        admin_password_file,
        repl_password_file,
        nodes,
    };
    // Saved before anything starts, so an interrupted `lab up` can still be taken down.
    state.save()?;

    let taken = Mutex::new(taken);
    let timeout = Duration::from_secs(args.timeout);
    let started: Vec<Result<Node>> = std::thread::scope(|s| {
        let handles: Vec<_> = state
            .nodes
            .iter()
            .map(|n| {
                let (taken, password, owner) = (&taken, &password, &owner);
                s.spawn(move || {
                    let mut n = n.clone();
                    prepare(&n, server, tmpl, owner.as_ref(), password)?;
                    start_new(&mut n, server, owner.as_ref(), password, timeout, taken)?;
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a node thread panicked")))
            .collect()
    });
    let mut errors = Vec::new();
    for (i, r) in started.into_iter().enumerate() {
        match r {
            Ok(n) => state.nodes[i] = n,
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    // Record the final ports and pids even on failure, so cleanup finds every server.
    state.save()?;
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    fs::write(&state.topology, topology_yaml(&state)?)
        .with_context(|| format!("writing {}", state.topology.display()))?;
    Ok(state)
}

/// Who the servers run as when we are root.
struct Owner {
    name: String,
    uid: u32,
    gid: u32,
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns NULL or a pointer to static storage we copy from at once;
    // called before any thread of ours starts.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null, points to a valid passwd record.
    let pw = unsafe { &*pw };
    Some((pw.pw_uid, pw.pw_gid))
}

/// The first ancestor of `dir` that `uid`/`gid` cannot traverse, if any.
fn blocking_parent(dir: &Path, uid: u32, gid: u32) -> Option<PathBuf> {
    dir.ancestors()
        .find(|a| {
            let Ok(m) = fs::metadata(a) else {
                return false; // not created yet: we create it 0755
            };
            let bits = if m.uid() == uid {
                0o100
            } else if m.gid() == gid {
                0o010
            } else {
                0o001
            };
            m.mode() & bits == 0
        })
        .map(Path::to_path_buf)
}

fn run_as(dir: &Path) -> Result<Option<Owner>> {
    if !template::is_root() {
        return Ok(None);
    }
    let root = Owner {
        name: "root".into(),
        uid: 0,
        gid: 0,
    };
    let Some((uid, gid)) = lookup_user("mysql") else {
        crate::report::say("note: there is no `mysql` user; the lab's servers run as root");
        return Ok(Some(root));
    };
    if let Some(p) = blocking_parent(dir, uid, gid) {
        crate::report::say(format!(
            "note: the mysql user cannot enter {}, so the lab's servers run as root",
            p.display()
        ));
        return Ok(Some(root));
    }
    Ok(Some(Owner {
        name: "mysql".into(),
        uid,
        gid,
    }))
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if fs::symlink_metadata(path)?.is_dir() {
        for e in fs::read_dir(path)? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Copy the template datadir and write the node's files.
fn prepare(
    n: &Node,
    server: &Server,
    tmpl: &template::Template,
    owner: Option<&Owner>,
    password: &str,
) -> Result<()> {
    fs::create_dir_all(&n.dir).with_context(|| format!("creating {}", n.dir.display()))?;
    let out = std::process::Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(&tmpl.datadir)
        .arg(n.datadir())
        .output()
        .context("running cp")?;
    if !out.status.success() {
        bail!(
            "{}: copying the template datadir failed: {}",
            n.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    n.write_files(server, owner.map(|o| o.name.as_str()), password)?;
    if let Some(o) = owner.filter(|o| o.uid != 0) {
        // Only what the server writes changes hands: the node directory, ctl and config stay
        // root's, so the mysql user cannot swap the script root runs on restart.
        chown_tree(&n.datadir(), o.uid, o.gid)?;
        chown_tree(&n.run_dir(), o.uid, o.gid)?;
        chown_tree(&n.error_log(), o.uid, o.gid)?;
    }
    Ok(())
}

/// Run `ctl start` for a node; the ctl script waits for the server itself.
///
/// The script is read by `sh`, not executed as a file: `lab up` writes every node's ctl from
/// its own thread, and a child forked by another thread holds a copy of the writing descriptor
/// until it execs, so executing a just-written ctl can fail with "Text file busy" (ETXTBSY).
fn ctl_start(n: &Node, timeout: Duration) -> Result<crate::transport::CmdOutput> {
    let script = format!(
        "REPLTOOL_LAB_START_TIMEOUT={} sh {} start",
        timeout.as_secs().max(1),
        shell_quote(&n.ctl().to_string_lossy())
    );
    LocalSession::new(&n.name, "127.0.0.1").run(
        &script,
        None,
        false,
        timeout.saturating_add(Duration::from_secs(15)),
    )
}

/// Start a node that already has its files, and prove the admin login works.
fn start(n: &Node, password: &str, timeout: Duration) -> Result<()> {
    let out = ctl_start(n, timeout)?;
    if !out.ok() {
        bail!("{}", out.stderr_str().trim());
    }
    sql_login(n, password)
}

/// Start a new node; when another process grabbed its port since we chose it, move to the
/// next free port (twice at most) instead of failing the whole lab.
fn start_new(
    n: &mut Node,
    server: &Server,
    owner: Option<&Owner>,
    password: &str,
    timeout: Duration,
    taken: &Mutex<Vec<u16>>,
) -> Result<()> {
    for attempt in 0..3 {
        let out = ctl_start(n, timeout)?;
        if out.ok() {
            sql_login(n, password)?;
            n.pid = n.running_pid();
            return Ok(());
        }
        if attempt == 2 || !node::failed_on_port(n) {
            bail!("{}", out.stderr_str().trim());
        }
        let old = n.port;
        {
            let mut t = taken
                .lock()
                .map_err(|_| anyhow::anyhow!("port list poisoned"))?;
            n.port = node::next_free_port(old.saturating_add(1), &t)?;
            t.push(n.port);
        }
        crate::report::say(format!(
            "{}: port {old} was taken by someone else meanwhile; retrying on {}",
            n.name, n.port
        ));
        n.write_files(server, owner.map(|o| o.name.as_str()), password)?;
    }
    bail!("{}: could not start", n.name)
}

/// A real SQL login over TCP with the admin account, retried briefly.
fn sql_login(n: &Node, password: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let err = match crate::transport::sql::connect_tcp(
            "127.0.0.1",
            n.port,
            ADMIN_USER,
            password,
            Duration::from_secs(5),
        )
        .and_then(|mut c| c.exec(&crate::flavor::Flavor::ping()))
        {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            bail!(
                "{}: the server runs but the admin login on 127.0.0.1:{} fails: {err:#}\nlast lines of {}:\n{}",
                n.name,
                n.port,
                n.error_log().display(),
                n.log_tail(15)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `master:` of node `k` (1-based) in a lab of `total` nodes.
fn master_of(shape: LabShape, k: usize) -> Option<String> {
    match (shape, k) {
        (_, 1) if shape != LabShape::MasterMaster => None,
        (LabShape::MasterSlave, _) => Some("node1".into()),
        (LabShape::Chain, k) => Some(format!("node{}", k - 1)),
        (LabShape::MasterMaster, 1) => Some("node2".into()),
        (LabShape::MasterMaster, _) => Some("node1".into()),
    }
}

fn path_value(p: &Path) -> Value {
    Value::String(p.to_string_lossy().into_owned())
}

fn map(pairs: Vec<(&str, Value)>) -> Value {
    let mut m = Mapping::new();
    for (k, v) in pairs {
        m.insert(Value::String(k.into()), v);
    }
    Value::Mapping(m)
}

/// DIR/topology.yaml: the design's format plus the keys the local transport needs.
fn topology_yaml(state: &State) -> Result<String> {
    let mut hosts = Mapping::new();
    for (i, n) in state.nodes.iter().enumerate() {
        let mut h = vec![
            ("address", Value::String("127.0.0.1".into())),
            ("mysql", map(vec![("port", Value::Number(n.port.into()))])),
            (
                "config_file",
                path_value(&n.conf_d().join("60-repltool.cnf")),
            ),
            (
                "restart",
                Value::String(format!(
                    "{} restart",
                    shell_quote(&n.ctl().to_string_lossy())
                )),
            ),
            ("error_log", path_value(&n.error_log())),
        ];
        if let Some(m) = master_of(state.shape, i + 1) {
            h.push(("master", Value::String(m)));
        }
        hosts.insert(Value::String(n.name.clone()), map(h));
    }
    let name = state
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "lab".into());
    let doc = map(vec![
        ("name", Value::String(name)),
        (
            "defaults",
            map(vec![
                ("transport", Value::String("local".into())),
                (
                    "mysql",
                    map(vec![
                        ("user", Value::String(ADMIN_USER.into())),
                        ("password_file", path_value(&state.admin_password_file)),
                    ]),
                ),
            ]),
        ),
        (
            "replication",
            map(vec![
                ("user", Value::String("repl".into())),
                ("password_file", path_value(&state.repl_password_file)),
            ]),
        ),
        ("hosts", Value::Mapping(hosts)),
    ]);
    Ok(format!(
        "# repltool lab: {} local server(s), {} ({}). Written by `repltool lab up`.\n\
         # Build replication with: repltool init -f {}\n{}",
        state.nodes.len(),
        state.shape.as_str(),
        state.server_version,
        state.topology.display(),
        serde_yaml_ng::to_string(&doc)?
    ))
}

/// Each host's role as the topology file says now (it may have been edited or promoted).
fn roles_from_file(path: &Path) -> Vec<(String, String)> {
    let Ok(text) = fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(doc) = serde_yaml_ng::from_str::<Value>(&text) else {
        return Vec::new();
    };
    let Some(hosts) = doc.get("hosts").and_then(Value::as_mapping) else {
        return Vec::new();
    };
    let master = |h: &Value| {
        h.get("master")
            .or_else(|| h.get("source"))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let list: Vec<(String, Option<String>)> = hosts
        .iter()
        .filter_map(|(k, v)| Some((k.as_str()?.to_string(), master(v))))
        .collect();
    list.iter()
        .map(|(name, m)| {
            let has_slaves = list.iter().any(|(_, o)| o.as_deref() == Some(name));
            let role = match m {
                None => "master",
                Some(m)
                    if list
                        .iter()
                        .any(|(o, om)| o == m && om.as_deref() == Some(name)) =>
                {
                    "master-master"
                }
                Some(_) if has_slaves => "relay",
                Some(_) => "slave",
            };
            (name.clone(), role.to_string())
        })
        .collect()
}

fn print_table(state: &State) {
    let roles = roles_from_file(&state.topology);
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED)
        .set_header(vec!["node", "port", "pid", "running", "datadir", "role"]);
    for n in &state.nodes {
        let pid = n.running_pid();
        let role = roles
            .iter()
            .find(|(h, _)| *h == n.name)
            .map_or("?", |(_, r)| r.as_str());
        t.add_row(vec![
            n.name.clone(),
            n.port.to_string(),
            pid.map_or("-".into(), |p| p.to_string()),
            if pid.is_some() { "yes" } else { "no" }.to_string(),
            n.datadir().display().to_string(),
            role.to_string(),
        ]);
    }
    crate::report::outln(format!("{t}"));
}

/// `repltool lab status`.
pub fn status(args: &LabDirArgs) -> Result<i32> {
    let dir = absolute(&args.dir)?;
    let Some(state) = State::load(&dir)? else {
        return Err(input(format!(
            "no lab in {} (no {STATE_FILE}); start one with `repltool lab up --dir {}`",
            dir.display(),
            dir.display()
        )));
    };
    print_table(&state);
    crate::report::outln(format!("\ntopology: {}", state.topology.display()));
    Ok(0)
}

/// Stop every server process of these nodes; the pids still alive afterwards.
fn stop_all(nodes: &[Node]) -> Vec<u32> {
    let pids: Vec<(usize, u32)> = nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.server_pids().into_iter().map(move |p| (i, p)))
        .collect();
    node::terminate(&pids, nodes, Duration::from_secs(30))
}

/// `repltool lab down`.
pub fn down(args: &LabDirArgs) -> Result<i32> {
    let dir = absolute(&args.dir)?;
    if !dir.exists() {
        crate::report::say(format!("no lab in {}; nothing to do", dir.display()));
        return Ok(0);
    }
    let Some(state) = State::load(&dir)? else {
        return Err(input(format!(
            "{} is not a lab (no {STATE_FILE}); not touching it",
            dir.display()
        )));
    };
    let running = state
        .nodes
        .iter()
        .filter(|n| !n.server_pids().is_empty())
        .count();
    let survivors = stop_all(&state.nodes);
    if !survivors.is_empty() {
        return Err(problem(format!(
            "server process(es) {survivors:?} of the lab in {} survived SIGKILL; {} left in place",
            dir.display(),
            dir.display()
        )));
    }
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    crate::report::say(format!(
        "stopped {running} server(s); removed {}",
        dir.display()
    ));
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_give_the_expected_masters() {
        let ms: Vec<_> = (1..=3)
            .map(|k| master_of(LabShape::MasterSlave, k))
            .collect();
        assert_eq!(ms, vec![None, Some("node1".into()), Some("node1".into())]);
        let ch: Vec<_> = (1..=3).map(|k| master_of(LabShape::Chain, k)).collect();
        assert_eq!(ch, vec![None, Some("node1".into()), Some("node2".into())]);
        let mm: Vec<_> = (1..=2)
            .map(|k| master_of(LabShape::MasterMaster, k))
            .collect();
        assert_eq!(mm, vec![Some("node2".into()), Some("node1".into())]);
    }

    #[test]
    fn roles_are_read_back_from_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("t.yaml");
        fs::write(
            &p,
            "hosts:\n  a: {address: 127.0.0.1}\n  b: {address: 127.0.0.1, master: a}\n  \
             c: {address: 127.0.0.1, source: b}\n  m1: {master: m2}\n  m2: {master: m1}\n",
        )
        .unwrap();
        let r = roles_from_file(&p);
        let get = |h: &str| r.iter().find(|(n, _)| n == h).unwrap().1.clone();
        assert_eq!(get("a"), "master");
        assert_eq!(get("b"), "relay");
        assert_eq!(get("c"), "slave");
        assert_eq!(get("m1"), "master-master");
    }

    #[test]
    fn odd_characters_in_dir_are_refused() {
        assert!(check_dir_name(Path::new("/tmp/lab-1_x.y")).is_ok());
        let e = check_dir_name(Path::new("/tmp/my lab")).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), 2);
        assert!(check_dir_name(Path::new("/tmp/a'b")).is_err());
    }

    #[test]
    fn absolute_drops_dots() {
        assert_eq!(
            absolute(Path::new("/a/./b/../c")).unwrap(),
            PathBuf::from("/a/c")
        );
    }

    #[test]
    fn blocking_parent_finds_a_closed_directory() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let closed = d.path().join("closed");
        fs::create_dir(&closed).unwrap();
        fs::set_permissions(&closed, fs::Permissions::from_mode(0o700)).unwrap();
        // A uid/gid that owns nothing here: only the "other" bits count.
        let got = blocking_parent(&closed.join("lab"), 4_000_000, 4_000_000);
        assert!(got.is_some());
        let open = d.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            blocking_parent(&open.join("lab"), 4_000_000, 4_000_000),
            None
        );
    }
}
