//! Every file in tests/bad/ is refused by the built binary with exit code 2 and the messages
//! listed in its `.expected` file, without a panic and without opening any connection.
//!
//! The bad files point every host at 127.0.0.1-4 with ssh and mysql ports set to @SENTINEL@;
//! the test listens on that port on those addresses and checks nobody knocked.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ADMIN_PW: &str = "golden-admin-S3CRET";
const REPL_PW: &str = "golden-repl-S3CRET";
const ADDRESSES: [Ipv4Addr; 4] = [
    Ipv4Addr::new(127, 0, 0, 1),
    Ipv4Addr::new(127, 0, 0, 2),
    Ipv4Addr::new(127, 0, 0, 3),
    Ipv4Addr::new(127, 0, 0, 4),
];
/// Files also run through `status`, not only `init --dry-run`.
const ALSO_STATUS: &[&str] = &[
    "03-unknown-host-key",
    "11-three-host-cycle",
    "13-same-address-and-ports",
    "36-many-problems",
];

/// Listeners on one port on every address the bad files use.
fn sentinels() -> (u16, Vec<TcpListener>) {
    for _ in 0..20 {
        let Ok(first) = TcpListener::bind(SocketAddrV4::new(ADDRESSES[0], 0)) else {
            continue;
        };
        let port = first.local_addr().expect("local addr").port();
        let mut all = vec![first];
        for a in &ADDRESSES[1..] {
            match TcpListener::bind(SocketAddrV4::new(*a, port)) {
                Ok(l) => all.push(l),
                Err(_) => break,
            }
        }
        if all.len() == ADDRESSES.len() {
            for l in &all {
                l.set_nonblocking(true).expect("nonblocking");
            }
            return (port, all);
        }
    }
    panic!("could not bind a sentinel port on 127.0.0.1-4");
}

fn assert_no_connection(listeners: &[TcpListener], after: &str) {
    for l in listeners {
        match l.accept() {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("{after}: a connection was made from {peer}"),
            Err(e) => panic!("{after}: accept failed: {e}"),
        }
    }
}

struct Case {
    name: String,
    file: PathBuf,
    expected: Vec<String>,
}

/// Copies of the bad files with the sentinel port filled in, in a temporary directory.
fn cases(port: u16, dir: &Path) -> Vec<Case> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad");
    let mut names: Vec<String> = std::fs::read_dir(&src)
        .expect("tests/bad")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_suffix(".yaml").map(str::to_string)
        })
        .collect();
    names.sort();
    assert!(names.len() >= 25, "only {} bad files", names.len());
    names
        .into_iter()
        .map(|name| {
            let text = std::fs::read_to_string(src.join(format!("{name}.yaml"))).expect("read");
            for line in text.lines() {
                // An address the loader must refuse is marked so; it never reaches a connect
                // unless the loader is wrong, and then the test fails on the exit code anyway.
                if line.trim_end().ends_with("# refused") {
                    continue;
                }
                if let Some((_, addr)) = line.split_once("address:") {
                    let addr = addr.trim().trim_matches(['"', '[', ']']);
                    assert!(
                        addr.is_empty() || addr.starts_with("127.0.0."),
                        "{name}: address {addr} is not a sentinel address"
                    );
                }
            }
            let expected = std::fs::read_to_string(src.join(format!("{name}.expected")))
                .unwrap_or_else(|e| panic!("{name}.expected: {e}"))
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>();
            assert!(!expected.is_empty(), "{name}.expected is empty");
            let file = dir.join(format!("{name}.yaml"));
            std::fs::write(&file, text.replace("@SENTINEL@", &port.to_string())).expect("write");
            Case {
                name,
                file,
                expected,
            }
        })
        .collect()
}

fn env(name: &str, home: &Path) -> Option<String> {
    match name {
        "MYSQL_ADMIN_PASSWORD" => Some(ADMIN_PW.to_string()),
        "REPL_PASSWORD" => Some(REPL_PW.to_string()),
        "HOME" => Some(home.display().to_string()),
        "USER" => Some("golden".to_string()),
        _ => None,
    }
}

/// Run the binary with a bound on time; returns (exit code, stderr).
fn run(args: &[&str], file: &Path, home: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_repltool"))
        .args(args)
        .arg("-f")
        .arg(file)
        .env("MYSQL_ADMIN_PASSWORD", ADMIN_PW)
        .env("REPL_PASSWORD", REPL_PW)
        .env("HOME", home)
        .env("USER", "golden")
        .env_remove("REPLTOOL_TEST_UNSET_VAR")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn repltool");
    let start = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => break,
            None if start.elapsed() > Duration::from_secs(30) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("repltool {args:?} -f {} ran over 30s", file.display());
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_messages(case: &Case, how: &str, text: &str) {
    for want in &case.expected {
        assert!(
            text.contains(want.as_str()),
            "{} ({how}): missing\n  {want}\nin:\n{text}",
            case.name
        );
    }
    assert!(!text.contains("panicked"), "{} ({how}): {text}", case.name);
    assert!(
        !text.contains(ADMIN_PW) && !text.contains(REPL_PW),
        "{} ({how}) shows a password: {text}",
        case.name
    );
}

#[test]
fn bad_files_are_refused_with_their_messages_and_no_connection() {
    let (port, listeners) = sentinels();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("home");
    let cases = cases(port, dir.path());
    for case in &cases {
        // The library, with the same environment.
        match repltool::topology::load_str(
            &std::fs::read_to_string(&case.file).expect("read"),
            &case.file,
            &|n| env(n, &home),
        ) {
            Ok(_) => panic!("{}: loaded without error", case.name),
            Err(e) => {
                assert_eq!(repltool::error::exit_code(&e), 2, "{}", case.name);
                check_messages(case, "load_str", &e.to_string());
            }
        }

        let mut commands: Vec<&[&str]> = vec![&["init", "--dry-run"]];
        if ALSO_STATUS.contains(&case.name.as_str()) {
            commands.push(&["status"]);
        }
        for args in commands {
            let (code, stderr) = run(args, &case.file, &home);
            assert_eq!(code, Some(2), "{} {args:?}: stderr:\n{stderr}", case.name);
            check_messages(case, &args.join(" "), &stderr);
            assert_no_connection(&listeners, &format!("{} {args:?}", case.name));
        }
    }
}
