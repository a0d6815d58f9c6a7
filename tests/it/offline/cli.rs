//! The command line people expect: shell completions and a manual page.

use std::process::Command;

fn repltool(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_repltool"))
        .args(args)
        .output()
        .expect("run repltool");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn completions_name_every_subcommand_and_option_in_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = repltool(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        for word in [
            "init", "status", "promote", "check", "watch", "lab", "dry-run", "force", "once",
        ] {
            assert!(out.contains(word), "{shell} completion lacks {word}");
        }
    }
    // A shell it does not know is bad input, named.
    let (code, _, err) = repltool(&["completions", "tcsh"]);
    assert_eq!(code, 2);
    assert!(err.contains("tcsh"), "{err}");
}

#[test]
fn the_manual_page_is_roff_with_every_command() {
    let (code, out, err) = repltool(&["man"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(".TH repltool 1"), "{out}");
    for word in ["init", "status", "promote", "check", "watch", "completions"] {
        assert!(out.contains(word), "man page lacks {word}");
    }
}
