//! Test helper: a `repltool lab` of N real servers in a temp dir, taken down on Drop.
//!
//! Use it from a live test with `use crate::support::lab;`,
//! then `let lab = lab::Lab::start(3, 23410);`. Give every test its own
//! base port so tests run in parallel. Starting a lab that cannot come up panics with the
//! command's output: a live test never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// A running lab.
pub struct Lab {
    /// The lab directory (DIR).
    pub dir: PathBuf,
    /// DIR/topology.yaml, ready for `repltool init`.
    pub topology: PathBuf,
    /// node1's port first.
    pub ports: Vec<u16>,
    pub admin_user: String,
    pub admin_password: String,
    /// What `lab up` printed on stderr (timings, notes).
    pub up_stderr: String,
    _tmp: tempfile::TempDir,
}

/// The repltool binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_repltool")
}

/// Run repltool with `args`; output captured.
pub fn repltool(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .output()
        .expect("cannot run the repltool binary")
}

/// Stdout and stderr of an Output, for assertion messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

impl Lab {
    /// `lab up --nodes N --base-port P` (master-slave) in a fresh temp dir that the mysql user
    /// can enter, so as root the servers run as `mysql` like a packaged server.
    pub fn start(nodes: u32, base_port: u16) -> Lab {
        Lab::start_with(nodes, base_port, &[], true)
    }

    /// Same with extra `lab up` arguments (e.g. `["--shape", "chain"]`). `open: false` keeps
    /// the temp dir 0700, so as root the servers fall back to running as root.
    pub fn start_with(nodes: u32, base_port: u16, extra: &[&str], open: bool) -> Lab {
        let tmp = tempfile::Builder::new()
            .prefix("repltool-lab-")
            .tempdir()
            .expect("temp dir");
        use std::os::unix::fs::PermissionsExt;
        let mode = if open { 0o755 } else { 0o700 };
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(mode))
            .expect("chmod temp dir");
        let dir = tmp.path().join("lab");
        let d = dir.to_string_lossy().into_owned();
        let (n, p) = (nodes.to_string(), base_port.to_string());
        let mut args = vec!["lab", "up", "--dir", &d, "--nodes", &n, "--base-port", &p];
        args.extend_from_slice(extra);
        let out = repltool(&args);
        // Built before the check, so a failed start is still taken down by Drop.
        let mut lab = Lab {
            topology: dir.join("topology.yaml"),
            dir,
            ports: Vec::new(),
            admin_user: "repltool".into(),
            admin_password: String::new(),
            up_stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            _tmp: tmp,
        };
        assert!(out.status.success(), "lab up failed:\n{}", show(&out));
        lab.admin_password = std::fs::read_to_string(lab.dir.join("admin.password"))
            .expect("admin.password")
            .trim()
            .to_string();
        lab.ports = lab.state()["nodes"]
            .as_array()
            .expect("lab.json nodes")
            .iter()
            .map(|n| {
                n["port"]
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .expect("port")
            })
            .collect();
        assert_eq!(lab.ports.len(), nodes as usize);
        lab
    }

    /// DIR/lab.json.
    pub fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join("lab.json")).expect("lab.json");
        serde_json::from_str(&text).expect("lab.json parses")
    }

    /// DIR as a string, for command lines.
    pub fn dir_str(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    /// DIR/nodeK (1-based).
    pub fn node_dir(&self, k: usize) -> PathBuf {
        self.dir.join(format!("node{k}"))
    }

    /// DIR/nodeK/ctl ACTION.
    pub fn ctl(&self, k: usize, action: &str) -> Output {
        Command::new(self.node_dir(k).join("ctl"))
            .arg(action)
            .output()
            .expect("cannot run ctl")
    }

    /// The live server pid of nodeK, from its pid file.
    pub fn pid(&self, k: usize) -> Option<u32> {
        std::fs::read_to_string(self.node_dir(k).join("run/mysqld.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// An admin connection to nodeK (1-based) over TCP.
    pub fn conn(&self, k: usize) -> mysql::Conn {
        self.try_conn(k)
            .unwrap_or_else(|e| panic!("connect to node{k}: {e}"))
    }

    /// [`Lab::conn`] that says why it failed.
    pub fn try_conn(&self, k: usize) -> Result<mysql::Conn, mysql::Error> {
        let opts = mysql::OptsBuilder::new()
            .ip_or_hostname(Some("127.0.0.1"))
            .tcp_port(self.ports[k - 1])
            .user(Some(self.admin_user.clone()))
            .pass(Some(self.admin_password.clone()))
            .prefer_socket(false)
            .tcp_connect_timeout(Some(Duration::from_secs(5)))
            .read_timeout(Some(Duration::from_secs(30)))
            .write_timeout(Some(Duration::from_secs(30)));
        mysql::Conn::new(opts)
    }

    /// `repltool lab ACTION --dir DIR`.
    pub fn lab(&self, action: &str) -> Output {
        repltool(&["lab", action, "--dir", &self.dir_str()])
    }
}

/// Live processes whose command line mentions `path` (zombies have an empty one).
pub fn processes_mentioning(path: &Path) -> Vec<u32> {
    let needle = path.to_string_lossy().into_owned();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.dir.exists() {
            let out = self.lab("down");
            if !out.status.success() {
                eprintln!("lab down in Drop failed:\n{}", show(&out));
            }
        }
    }
}
