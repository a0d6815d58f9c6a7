//! Live tests of the SSH transport against a real sshd (and one real MariaDB): commands,
//! timeouts, host key and key checks, files, streaming, the SQL forward under concurrent
//! use, jump hosts, sudo, and a server that dies mid-command.

use crate::support::sshd;

use std::fs;
use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use repltool::topology::{SqlRoute, Ssh};
use repltool::transport::ssh::SshSession;
use repltool::transport::HostSession;
use sshd::{keygen, must, Sshd};

const T10: Duration = Duration::from_secs(10);

fn connect(addr: &str, cfg: &Ssh) -> anyhow::Result<SshSession> {
    SshSession::connect("db1", addr, cfg, SqlRoute::Forward)
}

fn session(s: &Sshd) -> SshSession {
    connect("127.0.0.1", &s.ssh()).unwrap_or_else(|e| panic!("{e:#}\nsshd log:\n{}", s.log()))
}

fn err_text<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

/// Deterministic bytes that compress badly.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `SHA256:...` as ssh-keygen prints it for a public key file.
fn keygen_fingerprint(pub_path: &Path) -> String {
    must(Command::new("ssh-keygen").arg("-lf").arg(pub_path))
        .split_whitespace()
        .nth(1)
        .expect("fingerprint")
        .to_string()
}

fn mib_per_s(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / d.as_secs_f64()
}

#[test]
fn run_reports_status_output_and_feeds_stdin() {
    let s = Sshd::start();
    let mut h = session(&s);

    let out = h
        .run("echo out; echo err >&2; exit 3", None, false, T10)
        .unwrap();
    assert_eq!(out.status, 3);
    assert_eq!(out.stdout_str(), "out\n");
    assert_eq!(out.stderr_str(), "err\n", "our pgid marker must not leak");

    let out = h
        .run(
            "printf '%s|' \"it's\" 'a\\b' \"$HOME\" >/dev/null; printf '%s\\n' \"it's\" 'a b'",
            None,
            false,
            T10,
        )
        .unwrap();
    assert_eq!(out.stdout_str(), "it's\na b\n");

    let data = noise(1 << 20, 7);
    let out = h.run("cat", Some(&data), false, T10).unwrap();
    assert!(out.ok());
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "1 MiB of stdin must come back intact");

    // A command that ignores a large stdin ends normally instead of blocking on it.
    let t = Instant::now();
    let out = h
        .run("exit 0", Some(&noise(4 << 20, 9)), false, T10)
        .unwrap();
    assert!(out.ok());
    assert!(t.elapsed() < Duration::from_secs(8));

    let out = h.run("kill -9 $$", None, false, T10).unwrap();
    assert_eq!(out.status, -1, "killed by a signal: {out:?}");
    assert!(out.stderr_str().contains("KILL"));
}

#[test]
fn timeout_stops_the_remote_command_and_names_it() {
    let s = Sshd::start();
    let mut h = session(&s);
    let pidfile = s.dir().join("sleeper.pid");
    let script = format!("sleep 60 & echo $! > {}\nwait", pidfile.display());
    let t = Instant::now();
    let msg = err_text(h.run(&script, None, false, Duration::from_secs(1)));
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "took {:?}",
        t.elapsed()
    );
    assert!(msg.contains("db1"), "{msg}");
    assert!(msg.contains("timed out"), "{msg}");
    assert!(
        msg.contains("sleep 60 &"),
        "first line of the command: {msg}"
    );
    assert!(!msg.contains("\nwait"), "only the first line: {msg}");

    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = (0..50).any(|_| {
        let alive = fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|st| !st.contains(") Z"))
            .unwrap_or(false);
        if alive {
            thread::sleep(Duration::from_millis(100));
        }
        !alive
    });
    assert!(gone, "the remote process group must be killed on timeout");

    // The session survives a timeout.
    assert_eq!(
        h.run("echo still here", None, false, T10)
            .unwrap()
            .stdout_str(),
        "still here\n"
    );
}

#[test]
fn unknown_host_key_is_refused_with_its_fingerprint() {
    let s = Sshd::start();
    let fp = keygen_fingerprint(&s.host_key_path.with_extension("pub"));
    let mut cfg = s.ssh();

    cfg.known_hosts = s.dir().join("empty_known_hosts");
    fs::write(&cfg.known_hosts, "").unwrap();
    let msg = err_text(connect("127.0.0.1", &cfg));
    assert!(msg.contains("db1"), "{msg}");
    assert!(msg.contains("not in"), "{msg}");
    assert!(msg.contains(&fp), "fingerprint {fp} in: {msg}");
    assert!(msg.contains("ssh-ed25519"), "{msg}");
    assert!(
        msg.contains(&format!(
            "ssh-keyscan -p {} -t ed25519 127.0.0.1 >> ",
            s.port
        )),
        "{msg}"
    );

    cfg.known_hosts = s.dir().join("no_such_file");
    let msg = err_text(connect("127.0.0.1", &cfg));
    assert!(msg.contains("does not exist") && msg.contains(&fp), "{msg}");

    // The same key listed for port 22 does not vouch for another port (OpenSSH semantics).
    cfg.known_hosts = s.dir().join("port22_known_hosts");
    fs::write(&cfg.known_hosts, format!("127.0.0.1 {}\n", s.host_key)).unwrap();
    let msg = err_text(connect("127.0.0.1", &cfg));
    assert!(msg.contains("not in"), "{msg}");

    // Hashed entries (ssh-keygen -H) are understood.
    cfg.known_hosts = s.dir().join("hashed_known_hosts");
    fs::copy(&s.known_hosts, &cfg.known_hosts).unwrap();
    must(
        Command::new("ssh-keygen")
            .arg("-H")
            .arg("-f")
            .arg(&cfg.known_hosts),
    );
    let hashed = fs::read_to_string(&cfg.known_hosts).unwrap();
    assert!(
        hashed.contains("|1|") && !hashed.contains("127.0.0.1"),
        "{hashed}"
    );
    // A broken line before it does not hide it (libssh2 alone stops reading there).
    fs::write(
        &cfg.known_hosts,
        format!("# other hosts\nbad line\n{hashed}"),
    )
    .unwrap();
    let mut h = connect("127.0.0.1", &cfg).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(h.run("true", None, false, T10).unwrap().ok());
}

#[test]
fn changed_host_key_is_refused_loudly() {
    let s = Sshd::start();
    let other = s.dir().join("impostor");
    keygen(&other);
    let impostor = fs::read_to_string(other.with_extension("pub")).unwrap();
    let impostor: Vec<&str> = impostor.split_whitespace().collect();
    let mut cfg = s.ssh();
    cfg.known_hosts = s.dir().join("changed_known_hosts");
    fs::write(
        &cfg.known_hosts,
        format!("[127.0.0.1]:{} {} {}\n", s.port, impostor[0], impostor[1]),
    )
    .unwrap();
    let msg = err_text(connect("127.0.0.1", &cfg));
    assert!(msg.contains("HAS CHANGED"), "{msg}");
    assert!(msg.contains("man-in-the-middle"), "{msg}");
    assert!(msg.contains("line 1"), "{msg}");
    let fp = keygen_fingerprint(&s.host_key_path.with_extension("pub"));
    assert!(msg.contains(&fp), "{msg}");

    // Only a key of another type is trusted, and the server has no such key.
    let rsa = s.dir().join("rsa_impostor");
    must(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "rsa", "-b", "2048", "-N", "", "-f"])
            .arg(&rsa),
    );
    let rsa_pub = fs::read_to_string(rsa.with_extension("pub")).unwrap();
    let rsa_pub: Vec<&str> = rsa_pub.split_whitespace().collect();
    fs::write(
        &cfg.known_hosts,
        format!("[127.0.0.1]:{} {} {}\n", s.port, rsa_pub[0], rsa_pub[1]),
    )
    .unwrap();
    let msg = err_text(connect("127.0.0.1", &cfg));
    assert!(
        msg.contains("host key has changed") && msg.contains("ssh-rsa"),
        "{msg}"
    );

    // A revoked key is refused even when it is also listed as trusted.
    fs::write(
        &cfg.known_hosts,
        format!(
            "{}@revoked * {}\n",
            fs::read_to_string(&s.known_hosts).unwrap(),
            s.host_key
        ),
    )
    .unwrap();
    let msg = err_text(connect("127.0.0.1", &cfg));
    assert!(msg.contains("@revoked"), "{msg}");
}

#[test]
fn wrong_identity_is_refused_with_a_clear_message() {
    let s = Sshd::start();
    let stranger = s.dir().join("stranger");
    keygen(&stranger);
    let mut cfg = s.ssh();
    cfg.identity_file = Some(stranger.clone());
    let msg = err_text(connect("127.0.0.1", &cfg));
    assert!(msg.contains("authentication failed"), "{msg}");
    assert!(
        msg.contains(&format!("{}@127.0.0.1:{}", cfg.user, s.port)),
        "{msg}"
    );
    assert!(msg.contains(&stranger.display().to_string()), "{msg}");
    assert!(msg.contains("not accepted"), "{msg}");

    cfg.identity_file = Some(s.dir().join("missing_key"));
    let msg = err_text(connect("127.0.0.1", &cfg));
    assert!(msg.contains("does not exist"), "{msg}");
}

/// Run `f` on a thread; a hang past `limit` fails the test instead of hanging it.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}: a read that is not bounded"))
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo on a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

#[test]
fn fifos_devices_and_huge_files_as_known_hosts_or_key_are_refused_at_once() {
    let s = Sshd::start();
    let fifo = s.dir().join("fifo");
    mkfifo(&fifo);
    let huge = s.dir().join("huge_known_hosts");
    fs::File::create(&huge).unwrap().set_len(65 << 20).unwrap();
    let cases: Vec<(&str, Ssh, &str)> = {
        let mut v = Vec::new();
        for (path, what) in [
            (fifo.clone(), "is a FIFO (named pipe), not a regular file"),
            (
                Path::new("/dev/zero").to_path_buf(),
                "is a character device, not a regular file",
            ),
            (huge.clone(), "is larger than 64 MiB"),
        ] {
            let mut cfg = s.ssh();
            cfg.known_hosts = path;
            v.push(("ssh.known_hosts", cfg, what));
        }
        let mut cfg = s.ssh();
        cfg.identity_file = Some(fifo.clone());
        v.push((
            "ssh.identity_file",
            cfg,
            "is a FIFO (named pipe), not a regular file",
        ));
        let mut cfg = s.ssh();
        cfg.identity_file = Some("/dev/zero".into());
        v.push((
            "ssh.identity_file",
            cfg,
            "is a character device, not a regular file",
        ));
        v
    };
    for (key, cfg, what) in cases {
        let shown = match key {
            "ssh.known_hosts" => cfg.known_hosts.display().to_string(),
            _ => cfg.identity_file.as_ref().unwrap().display().to_string(),
        };
        let t = Instant::now();
        let res = within(Duration::from_secs(20), move || {
            connect("127.0.0.1", &cfg).map(|_| ())
        });
        let msg = err_text(res);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{key}: {:?}",
            t.elapsed()
        );
        assert!(msg.contains(&format!("{key} {shown} {what}")), "{msg}");
    }

    // A passphrase-protected key (read from memory now) is still explained.
    let locked = s.dir().join("locked");
    must(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "a passphrase", "-f"])
            .arg(&locked),
    );
    let mut cfg = s.ssh();
    cfg.identity_file = Some(locked);
    let msg = err_text(connect("127.0.0.1", &cfg));
    assert!(msg.contains("passphrase"), "{msg}");
}

#[test]
fn option_files_are_private_as_created_under_a_022_umask_even_without_chmod() {
    use repltool::secret::Secret;
    use repltool::transport::optfile;
    // A `chmod` that does nothing: whatever mode a file has, it has from its creation.
    let fake = tempfile::tempdir().unwrap();
    let chmod = fake.path().join("chmod");
    fs::write(&chmod, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&chmod, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", fake.path().display());
    // sshd (and so the login) inherits this process's umask: make it the usual 022.
    // SAFETY: umask has no preconditions; restored right after sshd started.
    let old = unsafe { libc::umask(0o022) };
    let s = Sshd::start_with_env(&["127.0.0.1"], &[("PATH", &path)]);
    unsafe { libc::umask(old) };
    let mut h = session(&s);
    // The preconditions hold: login umask 022, chmod a no-op.
    let probe = s.dir().join("probe");
    let out = h
        .run(
            &format!(
                "umask; touch {0}; chmod 600 {0}; stat -c %a {0}",
                probe.display()
            ),
            None,
            false,
            T10,
        )
        .unwrap();
    assert_eq!(out.stdout_str(), "0022\n644\n", "{out:?}");

    let p = optfile::write(&mut h, "admin", &Secret::new("s3cret"), 3306).unwrap();
    let dir = p.parent().unwrap().to_path_buf();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&p), 0o600, "option file {}", p.display());
    assert_eq!(mode(&dir), 0o700, "its directory {}", dir.display());
    assert!(fs::read_to_string(&p)
        .unwrap()
        .contains("password=\"s3cret\""));
    optfile::remove(&mut h, &p);
    assert!(!dir.exists(), "removed with its directory");

    // Any private file written through the transport is private before its chmod, too.
    let f = s.dir().join("conf.d/secret.cnf");
    h.write_file_atomic(&f, b"password=x\n", 0o600, false, false)
        .unwrap();
    assert_eq!(mode(&f), 0o600);
    // The directory it creates keeps the login umask (a server must be able to read it).
    assert_eq!(mode(f.parent().unwrap()), 0o755);
}

#[test]
fn files_round_trip_atomically_with_backup() {
    let s = Sshd::start();
    let mut h = session(&s);
    let dir = s.dir().join("etc dir/mysql");
    let target = dir.join("repl.cnf");

    assert_eq!(h.read_file(&target, false).unwrap(), None);
    h.write_file_atomic(&target, b"[mysqld]\nserver_id=1\n", 0o640, true, false)
        .unwrap();
    assert_eq!(
        h.read_file(&target, false).unwrap().as_deref(),
        Some(&b"[mysqld]\nserver_id=1\n"[..])
    );
    assert_eq!(
        fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(!dir.join("repl.cnf.bak").exists(), "nothing to back up yet");

    let big = noise(3 << 20, 3);
    h.write_file_atomic(&target, &big, 0o600, true, false)
        .unwrap();
    assert!(h.read_file(&target, false).unwrap().unwrap() == big);
    assert_eq!(
        fs::read(dir.join("repl.cnf.bak")).unwrap(),
        b"[mysqld]\nserver_id=1\n"
    );
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["repl.cnf", "repl.cnf.bak"], "no temporary debris");
}

#[test]
fn spawn_streams_50_mib_through_cat() {
    let s = Sshd::start();
    let mut h = session(&s);
    let chunk = noise(1 << 20, 11);
    let mut back = vec![0u8; chunk.len()];

    let t = Instant::now();
    let mut p = h.spawn("cat; echo finished >&2", false).unwrap();
    for _ in 0..50 {
        p.stdin().write_all(&chunk).unwrap();
        p.stdout().read_exact(&mut back).unwrap();
        assert!(back == chunk);
    }
    p.close_stdin().unwrap();
    let out = p.wait().unwrap();
    let through_cat = t.elapsed();
    assert_eq!(out.status, 0);
    assert!(out.stdout.is_empty(), "all output was already read");
    assert_eq!(out.stderr_str(), "finished\n");
    assert!(through_cat < Duration::from_secs(120), "{through_cat:?}");

    let t = Instant::now();
    let mut p = h.spawn("head -c 52428800 /dev/zero", false).unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = p.stdout().read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        assert!(buf[..n].iter().all(|b| *b == 0));
        total += n;
    }
    assert_eq!(total, 50 << 20);
    assert!(p.wait().unwrap().ok());
    let one_way = t.elapsed();
    eprintln!(
        "THROUGHPUT spawn: 50 MiB through cat (both ways) in {through_cat:.2?} = {:.1} MiB/s each way; \
         50 MiB one way in {one_way:.2?} = {:.1} MiB/s",
        mib_per_s(50 << 20, through_cat),
        mib_per_s(50 << 20, one_way)
    );
}

#[test]
fn dropping_a_stream_stops_the_remote_command() {
    let s = Sshd::start();
    let mut h = session(&s);
    let pidfile = s.dir().join("stream.pid");
    let mut p = h
        .spawn(
            &format!(
                "sleep 60 & echo $! > {}; echo started; wait",
                pidfile.display()
            ),
            false,
        )
        .unwrap();
    let mut line = [0u8; 8];
    p.stdout().read_exact(&mut line).unwrap();
    assert_eq!(&line, b"started\n");
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    drop(p);
    let gone = (0..50).any(|_| {
        let alive = fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|st| !st.contains(") Z"))
            .unwrap_or(false);
        if alive {
            thread::sleep(Duration::from_millis(100));
        }
        !alive
    });
    assert!(
        gone,
        "an abandoned stream must not leave its command running"
    );
    assert!(h.run("true", None, false, T10).unwrap().ok());
}

/// A TCP echo server on 127.0.0.1 serving `max` connections; returns its port.
fn echo_server(max: usize) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    thread::spawn(move || {
        for stream in l.incoming().take(max) {
            let Ok(mut a) = stream else { continue };
            thread::spawn(move || {
                let mut b = a.try_clone().unwrap();
                let _ = std::io::copy(&mut a, &mut b);
                let _ = b.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

/// Push `data` through an echo connection (writer thread + reader), check it, return the time.
/// A stranger on this machine (uid `nobody`) opening `n` connections to `port`, each sending a
/// line, and holding them open. Its first output line: `connected C echoed E`.
fn stranger(port: u16, n: usize) -> Child {
    let script = r#"
        use IO::Socket::INET; use IO::Select;
        my ($port, $n) = @ARGV; my @s;
        for (1..$n) {
            my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $port, Timeout => 5)
                or next;
            $c->autoflush(1); print $c "ping\n"; push @s, $c;
        }
        my $sel = IO::Select->new(@s); my $echoed = 0; my $until = time + 3;
        while (time < $until && $sel->count) {
            for my $r ($sel->can_read(0.5)) {
                my $buf; my $k = sysread($r, $buf, 64);
                $echoed++ if $k; $sel->remove($r);
            }
        }
        $| = 1; print "connected ", scalar(@s), " echoed $echoed\n";
        sleep 60;
    "#;
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/usr/bin/perl", "-e", script])
        .arg(port.to_string())
        .arg(n.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("setpriv/perl (util-linux, perl-base) must be installed")
}

#[test]
fn the_sql_forward_serves_only_its_owner_and_strangers_cannot_take_its_slots() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs as root to act as a second local user"
    );
    let s = Sshd::start();
    let mut h = session(&s);
    let echo = echo_server(10_000);
    let (host, port) = h.sql_endpoint(echo).unwrap();
    // The owner is served.
    echo_through(&host, port, b"owner");

    // Another local user reaches the listener (any user can connect to 127.0.0.1) but never
    // the database port behind it: every connection is closed before a byte is forwarded.
    let mut other = stranger(port, 200);
    let mut first = String::new();
    std::io::BufReader::new(other.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("connected 200 "), "{first}");
    assert_eq!(
        first.trim(),
        "connected 200 echoed 0",
        "a stranger was served"
    );

    // While the stranger holds what it could open, the owner still gets every connection:
    // more opened at once than there are slots, the late ones wait for a slot, none is dropped.
    let conns: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect((host.as_str(), port)).unwrap())
        .collect();
    for (i, mut c) in conns.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"mine").unwrap();
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf)
            .unwrap_or_else(|e| panic!("owner connection {i} was not served: {e}"));
        assert_eq!(&buf, b"mine");
    }
    let _ = other.kill();
    let _ = other.wait();
}

fn echo_through(host: &str, port: u16, data: &[u8]) -> Duration {
    let mut c = TcpStream::connect((host, port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut w = c.try_clone().unwrap();
    let payload = data.to_vec();
    let t = Instant::now();
    let writer = thread::spawn(move || {
        w.write_all(&payload).unwrap();
        w.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut back = Vec::with_capacity(data.len());
    c.read_to_end(&mut back).unwrap();
    writer.join().unwrap();
    assert!(back == data, "echo through the forward must be intact");
    t.elapsed()
}

#[test]
fn sql_forward_pumps_while_commands_run_concurrently() {
    let s = Sshd::start();
    let mut h = session(&s);
    let echo = echo_server(100);
    let (host, port) = h.sql_endpoint(echo).unwrap();
    assert_eq!(host, "127.0.0.1");
    assert_ne!(port, echo);
    assert_eq!(
        h.sql_endpoint(echo).unwrap(),
        (host.clone(), port),
        "cached per port"
    );

    // Small request/response round trips (what SQL does).
    let mut c = TcpStream::connect((host.as_str(), port)).unwrap();
    c.set_read_timeout(Some(T10)).unwrap();
    let t = Instant::now();
    for i in 0..200u32 {
        let msg = format!("query {i}\n");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0u8; msg.len()];
        c.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    let rtt = t.elapsed() / 200;
    drop(c);

    let alone = echo_through(&host, port, &noise(32 << 20, 5));

    // The same 32 MiB while four threads run commands and one streams over the same session.
    let (tx, rx) = mpsc::channel::<Result<String, String>>();
    for k in 0..4 {
        let mut hk = h.clone();
        let tx = tx.clone();
        thread::spawn(move || {
            let r = (|| {
                for n in 0..15 {
                    let input = noise(64 * 1024 + n * 1000, (k * 100 + n) as u64);
                    let out = hk
                        .run(&format!("echo {k}-{n}; cat"), Some(&input), false, T10)
                        .map_err(|e| format!("{e:#}"))?;
                    let mut want = format!("{k}-{n}\n").into_bytes();
                    want.extend_from_slice(&input);
                    if out.stdout != want || !out.ok() {
                        return Err(format!("thread {k} command {n}: wrong output"));
                    }
                }
                Ok(format!("commands {k}"))
            })();
            let _ = tx.send(r);
        });
    }
    {
        let mut hs = h.clone();
        let tx = tx.clone();
        thread::spawn(move || {
            let r = (|| {
                let mut p = hs
                    .spawn("head -c 20971520 /dev/zero", false)
                    .map_err(|e| format!("{e:#}"))?;
                let mut n = 0usize;
                let mut buf = vec![0u8; 65536];
                loop {
                    let got = p.stdout().read(&mut buf).map_err(|e| e.to_string())?;
                    if got == 0 {
                        break;
                    }
                    n += got;
                }
                p.wait().map_err(|e| format!("{e:#}"))?;
                if n == 20 << 20 {
                    Ok("stream".to_string())
                } else {
                    Err(format!("stream got {n} bytes"))
                }
            })();
            let _ = tx.send(r);
        });
    }
    drop(tx);
    let (ftx, frx) = mpsc::channel();
    let (fh, fp) = (host.clone(), port);
    thread::spawn(move || {
        let d = echo_through(&fh, fp, &noise(32 << 20, 6));
        let _ = ftx.send(d);
    });
    for _ in 0..5 {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{e}\nsshd log:\n{}", s.log()),
            Err(_) => panic!("deadlock: a concurrent command or stream did not finish"),
        }
    }
    let busy = frx
        .recv_timeout(Duration::from_secs(120))
        .expect("deadlock: the forward did not finish while commands ran");
    eprintln!(
        "THROUGHPUT forward: 32 MiB echoed (both ways) alone in {alone:.2?} = {:.1} MiB/s each way; \
         with 4 command threads + a stream {busy:.2?} = {:.1} MiB/s; small round trip {rtt:.2?}",
        mib_per_s(32 << 20, alone),
        mib_per_s(32 << 20, busy)
    );

    // A forward to a closed port: the client sees the connection end, the reason is kept.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ch, cp) = h.sql_endpoint(closed).unwrap();
    let mut c = TcpStream::connect((ch.as_str(), cp)).unwrap();
    c.set_read_timeout(Some(T10)).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
    let why = (0..50)
        .find_map(|_| {
            let e = h.forward_error(closed);
            if e.is_none() {
                thread::sleep(Duration::from_millis(100));
            }
            e
        })
        .expect("the failed forward keeps its reason");
    assert!(
        why.contains("db1") && why.contains(&closed.to_string()),
        "{why}"
    );
}

/// Run `f` in a thread that reports its outcome (a panic included) on `tx`.
fn job(tx: &mpsc::Sender<Result<String, String>>, f: impl FnOnce() -> String + Send + 'static) {
    let tx = tx.clone();
    thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|p| {
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "panicked".into())
        });
        let _ = tx.send(r);
    });
}

#[test]
fn one_session_serves_many_threads_at_once() {
    let s = Sshd::start();
    let mut h = session(&s);
    let echo = echo_server(1000);
    let (fh, fp) = h.sql_endpoint(echo).unwrap();
    let (tx, rx) = mpsc::channel();
    let mut jobs = 0;
    // More command threads than OpenSSH's default MaxSessions (10).
    for k in 0..12u64 {
        let mut hk = h.clone();
        jobs += 1;
        job(&tx, move || {
            for n in 0..25u64 {
                let input = noise(((k * 31 + n * 7919) % 200_000) as usize, k * 1000 + n);
                let out = hk
                    .run(
                        &format!("cat; echo end-{k}-{n}"),
                        Some(&input),
                        false,
                        Duration::from_secs(60),
                    )
                    .unwrap_or_else(|e| panic!("{e:#}"));
                let mut want = input.clone();
                want.extend_from_slice(format!("end-{k}-{n}\n").as_bytes());
                assert!(
                    out.ok() && out.stdout == want,
                    "thread {k} command {n}: wrong output"
                );
            }
            format!("commands {k}")
        });
    }
    for k in 0..2u64 {
        let fh = fh.clone();
        jobs += 1;
        job(&tx, move || {
            for n in 0..20u64 {
                echo_through(&fh, fp, &noise(256 * 1024, 50 + k * 100 + n));
            }
            format!("forward {k}")
        });
    }
    {
        let mut hs = h.clone();
        jobs += 1;
        job(&tx, move || {
            let mut p = hs.spawn("head -c 31457280 /dev/zero", false).unwrap();
            let mut sink = Vec::new();
            p.stdout().read_to_end(&mut sink).unwrap();
            assert_eq!(sink.len(), 30 << 20);
            assert!(p.wait().unwrap().ok());
            "stream".into()
        });
    }
    {
        let mut ht = h.clone();
        jobs += 1;
        job(&tx, move || {
            for _ in 0..5 {
                let t = Instant::now();
                let msg = err_text(ht.run("sleep 5", None, false, Duration::from_millis(300)));
                assert!(msg.contains("timed out"), "{msg}");
                assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
            }
            "timeouts".into()
        });
    }
    let t = Instant::now();
    for _ in 0..jobs {
        match rx.recv_timeout(Duration::from_secs(240)) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("{e}\nsshd log:\n{}", s.log()),
            Err(_) => panic!("deadlock: a job did not finish"),
        }
    }
    eprintln!("many threads: all jobs done in {:.2?}", t.elapsed());
    assert_eq!(
        h.run("echo fine", None, false, T10).unwrap().stdout_str(),
        "fine\n"
    );
}

#[test]
fn jump_host_carries_commands_and_forwards() {
    let s = Sshd::start_on(&["127.0.0.1", "127.0.0.2"]);
    let mut cfg = s.ssh();
    cfg.jump = Some(s.jump("127.0.0.1"));
    let mut h = SshSession::connect("db2", "127.0.0.2", &cfg, SqlRoute::Forward)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", s.log()));
    let out = h.run("echo $SSH_CONNECTION", None, false, T10).unwrap();
    let fields: Vec<String> = out
        .stdout_str()
        .split_whitespace()
        .map(String::from)
        .collect();
    assert_eq!(
        fields.get(2).map(String::as_str),
        Some("127.0.0.2"),
        "{fields:?}"
    );

    let echo = echo_server(10);
    let (host, port) = h.sql_endpoint(echo).unwrap();
    let d = echo_through(&host, port, &noise(8 << 20, 8));

    let t = Instant::now();
    let mut p = h.spawn("head -c 20971520 /dev/zero", false).unwrap();
    let mut sink = Vec::new();
    p.stdout().read_to_end(&mut sink).unwrap();
    assert_eq!(sink.len(), 20 << 20);
    assert!(p.wait().unwrap().ok());
    eprintln!(
        "THROUGHPUT via jump host: forward 8 MiB echoed {:.1} MiB/s each way; spawn 20 MiB {:.1} MiB/s",
        mib_per_s(8 << 20, d),
        mib_per_s(20 << 20, t.elapsed())
    );

    // The jump host's own key is verified too.
    let mut only_target = cfg.clone();
    only_target.known_hosts = s.dir().join("target_only_known_hosts");
    fs::write(
        &only_target.known_hosts,
        format!("[127.0.0.2]:{} {}\n", s.port, s.host_key),
    )
    .unwrap();
    let msg = err_text(SshSession::connect(
        "db2",
        "127.0.0.2",
        &only_target,
        SqlRoute::Forward,
    ));
    assert!(
        msg.contains("jump host 127.0.0.1") && msg.contains("not in"),
        "{msg}"
    );

    // A target the jump host cannot reach.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut unreachable = cfg.clone();
    unreachable.port = dead;
    unreachable.jump = Some(s.jump("127.0.0.1"));
    let msg = err_text(SshSession::connect(
        "db2",
        "127.0.0.1",
        &unreachable,
        SqlRoute::Forward,
    ));
    assert!(msg.contains("could not reach"), "{msg}");
}

#[test]
fn privileged_commands_go_through_sudo_with_stdin() {
    // No sudo on the test machine: a stand-in records its arguments and runs the command.
    let bin = tempfile::tempdir().unwrap();
    let log = bin.path().join("sudo.log");
    let fake = bin.path().join("sudo");
    fs::write(
        &fake,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {}\n[ \"$1\" = -n ] || exit 99\nshift\nexec \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(bin.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", bin.path().display());
    let s = Sshd::start_with_env(&["127.0.0.1"], &[("PATH", &path)]);
    let mut cfg = s.ssh();
    cfg.sudo = true;
    let mut h = connect("127.0.0.1", &cfg).unwrap();

    let out = h
        .run("cat; echo 'as root'", Some(b"s3cret-pw\n"), true, T10)
        .unwrap();
    assert_eq!(
        out.stdout_str(),
        "s3cret-pw\nas root\n",
        "{}",
        out.stderr_str()
    );
    let args = fs::read_to_string(&log).unwrap();
    assert_eq!(args, "-n\nsh\n-c\ncat; echo 'as root'\n");
    assert!(!args.contains("s3cret"), "secrets travel on stdin only");

    fs::remove_file(&log).unwrap();
    assert!(h.run("true", None, false, T10).unwrap().ok());
    assert!(!log.exists(), "unprivileged steps do not use sudo");

    cfg.sudo = false;
    let mut plain = connect("127.0.0.1", &cfg).unwrap();
    assert!(plain.run("true", None, true, T10).unwrap().ok());
    assert!(!log.exists(), "sudo: false never uses sudo");
}

#[test]
fn killing_sshd_mid_command_is_a_prompt_error_naming_the_host() {
    let mut s = Sshd::start();
    let mut h = session(&s);
    let echo = echo_server(10);
    let (fh, fp) = h.sql_endpoint(echo).unwrap();
    let mut fwd = TcpStream::connect((fh.as_str(), fp)).unwrap();
    fwd.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    fwd.write_all(b"ping").unwrap();
    let mut pong = [0u8; 4];
    fwd.read_exact(&mut pong).unwrap();

    let mut h2 = h.clone();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let t = Instant::now();
        let r = h2.run("sleep 30", None, false, Duration::from_secs(60));
        let _ = tx.send((
            r.map(|o| o.status).map_err(|e| format!("{e:#}")),
            t.elapsed(),
        ));
    });
    thread::sleep(Duration::from_secs(1));
    let killed_at = Instant::now();
    s.kill();
    let (r, _) = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("run() hung after sshd was killed");
    let took = killed_at.elapsed();
    let msg = r.expect_err("the command cannot have succeeded");
    assert!(msg.contains("db1"), "{msg}");
    assert!(msg.contains("lost"), "{msg}");
    assert!(took < Duration::from_secs(5), "noticed after {took:?}");

    // The forwarded connection ends too, and later calls fail at once.
    let mut buf = [0u8; 8];
    assert!(matches!(fwd.read(&mut buf), Ok(0) | Err(_)));
    let t = Instant::now();
    let msg = err_text(h.run("echo hi", None, false, T10));
    assert!(msg.contains("db1") && msg.contains("lost"), "{msg}");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(h.sql_endpoint(echo).is_err());

    s.restart();
    let mut again = session(&s);
    assert_eq!(
        again
            .run("echo back", None, false, T10)
            .unwrap()
            .stdout_str(),
        "back\n"
    );
}

#[test]
fn a_reset_connection_is_a_prompt_error_naming_the_host() {
    let s = Sshd::start();
    let mut h = session(&s);
    let mut h2 = h.clone();
    let pidfile = s.dir().join("sleep.pid");
    let script = format!("echo $$ > {}; exec sleep 30", pidfile.display());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = h2.run(&script, None, false, Duration::from_secs(60));
        let _ = tx.send(r.map(|o| o.status).map_err(|e| format!("{e:#}")));
    });
    thread::sleep(Duration::from_secs(1));
    // Abort our side of every connection to this sshd, as a reset from the network would.
    let reset_at = Instant::now();
    let out = Command::new("ss")
        .args([
            "-K",
            "dst",
            "127.0.0.1",
            "dport",
            "=",
            &format!(":{}", s.port),
        ])
        .output()
        .expect("cannot run ss (iproute2)");
    assert!(
        out.status.success(),
        "ss -K: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("run() hung after the connection was reset");
    let msg = r.expect_err("the command cannot have succeeded");
    assert!(msg.contains("db1") && msg.contains("lost"), "{msg}");
    assert!(reset_at.elapsed() < Duration::from_secs(5));
    let msg = err_text(h.run("true", None, false, T10));
    assert!(msg.contains("lost"), "{msg}");
    // The server side outlives the reset; do not leave its sleep behind.
    if let Some(pid) = fs::read_to_string(&pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        // SAFETY: kill(2) on the pid our own command wrote.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

struct Mariadb {
    child: Child,
    port: u16,
    /// Removed after the server (declared last, dropped after `Drop::drop` stopped it).
    _dir: tempfile::TempDir,
}

impl Mariadb {
    fn start() -> Mariadb {
        let dir = tempfile::Builder::new()
            .prefix("repltool-mariadb-")
            .tempdir()
            .unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        let out = Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg("--user=mysql")
            .arg(format!("--datadir={}", data.display()))
            .arg("--skip-test-db")
            .arg("--skip-name-resolve")
            .output()
            .expect("cannot run mariadb-install-db");
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // mariadbd runs as mysql and writes its socket, pid file and log next to the data.
        must(
            Command::new("chown")
                .arg("-R")
                .arg("mysql:")
                .arg(dir.path()),
        );
        let seed = std::process::id() as u16;
        for i in 0..100u16 {
            let port = 24300 + (seed.wrapping_add(i.wrapping_mul(13))) % 100;
            if TcpListener::bind(("127.0.0.1", port)).is_err() {
                continue;
            }
            let errlog = dir.path().join("error.log");
            let mut child = Command::new("/usr/sbin/mariadbd")
                .arg("--no-defaults")
                .arg("--user=mysql")
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--port={port}"))
                .arg("--bind-address=127.0.0.1")
                .arg(format!(
                    "--socket={}",
                    dir.path().join("mysqld.sock").display()
                ))
                .arg(format!(
                    "--pid-file={}",
                    dir.path().join("mysqld.pid").display()
                ))
                .arg(format!("--log-error={}", errlog.display()))
                .arg("--skip-grant-tables")
                .arg("--innodb-buffer-pool-size=32M")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot run mariadbd");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(st)) = child.try_wait() {
                    let log = fs::read_to_string(&errlog).unwrap_or_default();
                    if log.contains("Address already in use") {
                        break;
                    }
                    panic!("mariadbd exited ({st}): {log}");
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Mariadb {
                        child,
                        port,
                        _dir: dir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mariadbd did not listen within 60s: {}",
                        fs::read_to_string(&errlog).unwrap_or_default()
                    );
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        panic!("no free port for mariadbd in 24300-24399");
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        // SAFETY: SIGTERM to the server we started, for a clean shutdown.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sql_forward_reaches_a_real_mariadb() {
    use mysql::prelude::Queryable;
    let db = Mariadb::start();
    let s = Sshd::start();
    let mut h = session(&s);
    let (host, port) = h.sql_endpoint(db.port).unwrap();
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some(host))
        .tcp_port(port)
        .user(Some("root"))
        // Never switch to a local socket: through a forward it would be some other server's.
        .prefer_socket(false)
        .tcp_connect_timeout(Some(T10))
        .read_timeout(Some(Duration::from_secs(30)));
    let mut c = mysql::Conn::new(opts)
        .unwrap_or_else(|e| panic!("{e}; forward: {:?}", h.forward_error(db.port)));
    let one: Option<i64> = c.query_first("SELECT 1").unwrap();
    assert_eq!(one, Some(1));
    let served_port: Option<u16> = c.query_first("SELECT @@port").unwrap();
    assert_eq!(served_port, Some(db.port));
    // Commands keep working on the session while the SQL connection is open.
    assert!(h.run("true", None, false, T10).unwrap().ok());
    let rows: Vec<u32> = c.query("SELECT seq FROM mysql.seq_1_to_20000").unwrap();
    assert_eq!(rows.len(), 20000);
}
