//! `${VAR}` expansion and `~` in local paths. The environment is passed in as a function so tests
//! never have to touch the process environment.

use std::path::PathBuf;

pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A scalar after expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    pub text: String,
    /// The names of the variables it used, in order (for messages; never their values).
    pub vars: Vec<String>,
}

/// Variables every run treats as secret, named in a topology file or not: the README's names
/// for the two passwords.
const ALWAYS_SECRET: &[&str] = &["MYSQL_ADMIN_PASSWORD", "REPL_PASSWORD"];

/// Variables a child process needs and that hold no secret, even when a file names them
/// (`${HOME}/.ssh/id`): removing them would break the tools repltool starts.
const NEVER_SECRET: &[&str] = &[
    "HOME", "USER", "LOGNAME", "PATH", "SHELL", "PWD", "TMPDIR", "LANG", "LC_ALL", "TERM", "TZ",
];

/// Names of the variables loaded topology files used, for the whole process.
static NAMED: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// Remember variables a topology file named (`${VAR}`), so the processes repltool starts on
/// this machine do not inherit them.
pub fn remember_named(names: impl IntoIterator<Item = String>) {
    let mut set = NAMED.lock().unwrap_or_else(|p| p.into_inner());
    set.extend(
        names
            .into_iter()
            .filter(|n| !NEVER_SECRET.contains(&n.as_str())),
    );
}

/// The environment variables to remove from every child process on this machine: the secret
/// ones by name, and every variable a loaded topology file named.
pub fn child_env_removals() -> Vec<String> {
    let set = NAMED.lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<String> = ALWAYS_SECRET.iter().map(|s| s.to_string()).collect();
    out.extend(
        set.iter()
            .filter(|n| !out.contains(n))
            .cloned()
            .collect::<Vec<_>>(),
    );
    out
}

/// Expand `${VAR}`; `$$` is a literal `$`; any other `$` is kept as it is (passwords contain
/// them). Every problem is returned, each a message that names the variable, never a value.
pub fn expand(s: &str, env: Env) -> Result<Expanded, Vec<String>> {
    let mut out = String::with_capacity(s.len());
    let mut vars = Vec::new();
    let mut errors = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = after.strip_prefix('{') {
            let Some(end) = r.find('}') else {
                errors.push("unterminated `${` (write `$$` for a literal `$`)".to_string());
                rest = "";
                break;
            };
            let name = &r[..end];
            if !valid_name(name) {
                errors.push(format!(
                    "`${{{name}}}` is not a valid variable name (letters, digits and `_`; \
                     write `$$` for a literal `$`)"
                ));
            } else {
                match env(name) {
                    Some(v) => out.push_str(&v),
                    None => errors.push(format!("environment variable {name} is not set")),
                }
                vars.push(name.to_string());
            }
            rest = &r[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(Expanded { text: out, vars })
    } else {
        Err(errors)
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `~` and `~/x` become `$HOME` and `$HOME/x`; `~user` is refused rather than guessed.
pub fn expand_home(path: &str, env: Env) -> Result<PathBuf, String> {
    if path != "~" && !path.starts_with("~/") {
        if path.starts_with('~') {
            return Err("`~user` paths are not supported; write the full path".to_string());
        }
        return Ok(PathBuf::from(path));
    }
    match env("HOME").filter(|h| !h.is_empty()) {
        Some(home) => {
            let mut p = PathBuf::from(home);
            if let Some(rest) = path.strip_prefix("~/") {
                p.push(rest);
            }
            Ok(p)
        }
        None => Err("HOME is not set, so `~` cannot be expanded; write the full path".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PW" => Some("s3cr$t".to_string()),
            "HOME" => Some("/home/u".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_expand_and_dollars_survive() {
        let e = expand("a${PW}b", &env).unwrap();
        assert_eq!(e.text, "as3cr$tb");
        assert_eq!(e.vars, ["PW"]);
        assert_eq!(expand("$$x $y $", &env).unwrap().text, "$x $y $");
        assert_eq!(expand("$${PW}", &env).unwrap().text, "${PW}");
        assert_eq!(expand("${EMPTY}", &env).unwrap().text, "");
    }

    #[test]
    fn every_unset_variable_is_named_and_no_value_leaks() {
        let errs = expand("${NOPE1}-${PW}-${NOPE2}", &env).unwrap_err();
        assert_eq!(errs.len(), 2);
        assert!(errs[0].contains("NOPE1") && errs[1].contains("NOPE2"));
        assert!(!errs.join(" ").contains("s3cr"));
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(expand("${PW", &env).unwrap_err()[0].contains("unterminated"));
        assert!(expand("${1X}", &env).unwrap_err()[0].contains("not a valid variable name"));
        assert!(expand("${}", &env).unwrap_err()[0].contains("not a valid variable name"));
    }

    #[test]
    fn tilde_expands_to_home() {
        assert_eq!(
            expand_home("~/.ssh/id", &env).unwrap(),
            PathBuf::from("/home/u/.ssh/id")
        );
        assert_eq!(expand_home("~", &env).unwrap(), PathBuf::from("/home/u"));
        assert_eq!(expand_home("/a/~b", &env).unwrap(), PathBuf::from("/a/~b"));
        assert!(expand_home("~bob/x", &env).is_err());
        assert!(expand_home("~/x", &|_| None).unwrap_err().contains("HOME"));
    }
}
