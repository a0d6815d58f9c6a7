//! Live test of key discovery without `identity_file`: ssh-agent, then ~/.ssh keys. It changes
//! HOME and SSH_AUTH_SOCK, which are process-wide, so it lives alone in this test binary.

#[path = "support/sshd.rs"]
mod sshd;

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use repltool::topology::SqlRoute;
use repltool::transport::ssh::SshSession;
use repltool::transport::HostSession;
use sshd::{keygen, Sshd};

struct Agent(Child);

impl Agent {
    fn start(sock: &Path) -> Agent {
        let child = Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run ssh-agent");
        let agent = Agent(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            assert!(
                Instant::now() < deadline,
                "ssh-agent did not create its socket"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    fn add(&self, sock: &Path, key: &Path) {
        let out = Command::new("ssh-add")
            .arg(key)
            .env("SSH_AUTH_SOCK", sock)
            .output()
            .expect("cannot run ssh-add");
        assert!(
            out.status.success(),
            "ssh-add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn agent_then_default_keys_are_used_when_no_identity_file_is_set() {
    let s = Sshd::start();
    let mut cfg = s.ssh();
    cfg.identity_file = None;
    let home = s.dir().join("home");
    fs::create_dir_all(home.join(".ssh")).unwrap();
    std::env::set_var("HOME", &home);
    std::env::remove_var("SSH_AUTH_SOCK");

    // Nothing to offer: the error lists every method tried.
    let msg = match SshSession::connect("db1", "127.0.0.1", &cfg, SqlRoute::Forward) {
        Ok(_) => panic!("no key should work"),
        Err(e) => format!("{e:#}"),
    };
    assert!(msg.contains("authentication failed"), "{msg}");
    assert!(
        msg.contains(&format!("{}@127.0.0.1:{}", cfg.user, s.port)),
        "{msg}"
    );
    assert!(
        msg.contains("ssh-agent (SSH_AUTH_SOCK is not set)"),
        "{msg}"
    );
    assert!(msg.contains("none exist"), "{msg}");

    // An agent holding only a stranger's key: tried and reported.
    let sock = s.dir().join("agent.sock");
    let agent = Agent::start(&sock);
    let stranger = s.dir().join("stranger");
    keygen(&stranger);
    agent.add(&sock, &stranger);
    std::env::set_var("SSH_AUTH_SOCK", &sock);
    let msg = match SshSession::connect("db1", "127.0.0.1", &cfg, SqlRoute::Forward) {
        Ok(_) => panic!("the stranger's key must not work"),
        Err(e) => format!("{e:#}"),
    };
    assert!(msg.contains("ssh-agent (1 key(s), none accepted)"), "{msg}");

    // The authorized key in the agent: accepted.
    agent.add(&sock, &s.identity);
    let mut h = SshSession::connect("db1", "127.0.0.1", &cfg, SqlRoute::Forward)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(
        h.run("echo agent", None, false, Duration::from_secs(10))
            .unwrap()
            .stdout_str(),
        "agent\n"
    );
    drop(h);
    drop(agent);

    // No agent, but the key is ~/.ssh/id_ed25519.
    std::env::remove_var("SSH_AUTH_SOCK");
    fs::copy(&s.identity, home.join(".ssh/id_ed25519")).unwrap();
    let mut h = SshSession::connect("db1", "127.0.0.1", &cfg, SqlRoute::Forward)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(h
        .run("true", None, false, Duration::from_secs(10))
        .unwrap()
        .ok());
}
