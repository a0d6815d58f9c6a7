//! Live tests that need a process to themselves: key discovery without `identity_file`
//! (ssh-agent, then ~/.ssh keys) changes HOME and SSH_AUTH_SOCK, which are process-wide, and the
//! CPU check of idle forwards measures the whole process. Each test re-runs this test binary for
//! just its `child_*` body (ignored otherwise), so the other tests of the binary, running in
//! parallel, neither see the environment change nor count in the CPU time.

use crate::support::sshd;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use repltool::topology::SqlRoute;
use repltool::transport::ssh::SshSession;
use repltool::transport::HostSession;
use sshd::{keygen, Sshd};

/// Run `child` (a test of this module) alone in a new process of this test binary; its
/// failure, with its output, fails the calling test.
fn in_own_process(child: &str) {
    let exe = std::env::current_exe().expect("the test binary");
    let name = format!("live::ssh_isolated::{child}");
    let out = Command::new(exe)
        .args([name.as_str(), "--exact", "--ignored", "--nocapture"])
        .args(["--test-threads", "1"])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .output()
        .expect("cannot re-run the test binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{child} failed:\n{text}");
    // The filter matched exactly the child: a renamed child must not pass by running nothing.
    assert!(text.contains("1 passed"), "{child} did not run:\n{text}");
}

/// Set for the child process; a child body refuses to run without it (it would change the
/// environment of every test of the binary).
const CHILD: &str = "REPLTOOL_TEST_CHILD";

fn child_only() {
    assert!(
        std::env::var_os(CHILD).is_some(),
        "run through its parent test, in a process of its own"
    );
}

fn session(s: &Sshd) -> SshSession {
    SshSession::connect("db1", "127.0.0.1", &s.ssh(), SqlRoute::Forward)
        .unwrap_or_else(|e| panic!("{e:#}\nsshd log:\n{}", s.log()))
}

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
    in_own_process("child_agent_then_default_keys");
}

#[test]
#[ignore = "run by agent_then_default_keys_are_used_when_no_identity_file_is_set"]
fn child_agent_then_default_keys() {
    child_only();
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

/// CPU time used by this test process so far (user + system), from /proc.
fn cpu_time() -> Duration {
    let stat = fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|x| x.parse().unwrap())
        .collect();
    // Clock ticks are 100 per second on Linux.
    Duration::from_millis((f[0] + f[1]) * 10)
}

#[test]
fn idle_and_half_closed_forwards_do_not_spin() {
    in_own_process("child_idle_and_half_closed_forwards");
}

#[test]
#[ignore = "run by idle_and_half_closed_forwards_do_not_spin"]
fn child_idle_and_half_closed_forwards() {
    child_only();
    let s = Sshd::start();
    let mut h = session(&s);
    // A server that reads and keeps every connection open without ever answering.
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut held = Vec::new();
        for c in sink.incoming().take(4) {
            let Ok(mut c) = c else { continue };
            let mut buf = [0u8; 64];
            let _ = c.read(&mut buf);
            held.push(c);
        }
        thread::sleep(Duration::from_secs(30));
    });
    let (host, port) = h.sql_endpoint(sink_port).unwrap();
    let mut idle = TcpStream::connect((host.as_str(), port)).unwrap();
    idle.write_all(b"hello").unwrap();
    let mut reset = TcpStream::connect((host.as_str(), port)).unwrap();
    reset.write_all(b"bye").unwrap();
    thread::sleep(Duration::from_millis(200));
    // Close with a reset (SO_LINGER 0): the pump's socket then polls as hung up.
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt with a valid linger struct on an open socket.
    unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&reset),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(reset);
    let mut half = TcpStream::connect((host.as_str(), port)).unwrap();
    half.write_all(b"half").unwrap();
    half.shutdown(std::net::Shutdown::Write).unwrap();
    thread::sleep(Duration::from_millis(500));
    let before = cpu_time();
    thread::sleep(Duration::from_secs(2));
    let used = cpu_time() - before;
    assert!(
        used < Duration::from_millis(400),
        "pumps burned {used:?} of CPU in 2s"
    );
    drop(idle);
    drop(half);
}

/// Run `f` on a thread; a hang past `limit` fails the test instead of hanging it.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}: not bounded by the timeout"))
}

#[test]
fn a_hung_ssh_agent_is_bounded_by_the_connect_timeout() {
    in_own_process("child_a_hung_ssh_agent");
}

#[test]
#[ignore = "run by a_hung_ssh_agent_is_bounded_by_the_connect_timeout in a process of its own"]
fn child_a_hung_ssh_agent() {
    child_only();
    let s = Sshd::start();
    let mut cfg = s.ssh();
    cfg.identity_file = None;
    cfg.connect_timeout = Duration::from_secs(2);
    let home = s.dir().join("home-hung-agent");
    fs::create_dir_all(home.join(".ssh")).unwrap();
    std::env::set_var("HOME", &home);
    // An agent that accepts connections and never answers a request.
    let sock = s.dir().join("hung-agent.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    std::env::set_var("SSH_AUTH_SOCK", &sock);
    let t = Instant::now();
    let res = within(Duration::from_secs(30), move || {
        SshSession::connect("db1", "127.0.0.1", &cfg, SqlRoute::Forward).map(|_| ())
    });
    std::env::remove_var("SSH_AUTH_SOCK");
    let msg = format!("{:#}", res.expect_err("no key can work"));
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    assert!(msg.contains("ssh-agent (no answer within 2s)"), "{msg}");
    assert!(msg.contains("authentication failed"), "{msg}");
}
