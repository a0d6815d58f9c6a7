//! The statement type: only `flavor/` can make one, so every statement repltool sends is
//! written here, in the dialect of the server it goes to. It carries the text to send and the
//! text to show (secrets masked as `'***'`).

/// One SQL statement. Built only by `flavor/`; every query helper takes one.
#[derive(Clone, PartialEq, Eq)]
pub struct Sql {
    text: String,
    shown: String,
}

/// How a password appears in shown SQL.
pub(super) const MASKED: &str = "'***'";

impl Sql {
    /// A statement with no secret in it.
    pub(in crate::flavor) fn plain(text: impl Into<String>) -> Sql {
        let text = text.into();
        Sql {
            shown: text.clone(),
            text,
        }
    }
    /// A statement and its masked form.
    pub(in crate::flavor) fn masked(text: String, shown: String) -> Sql {
        Sql { text, shown }
    }
    /// The text to send to the server: for the SQL connection only (`transport::sql`).
    pub(crate) fn text(&self) -> &str {
        &self.text
    }
    /// The text to print (secrets masked).
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl std::fmt::Debug for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Display for Sql {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Quote a string as an SQL literal: `'...'` with `\` and `'` escaped. repltool's sessions clear
/// NO_BACKSLASH_ESCAPES from their sql_mode ([`super::Flavor::session_setup`]) so this is always
/// right.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\0' => out.push_str("\\0"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\x1a' => out.push_str("\\Z"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}
