//! Every problem found in a topology file, collected so one run reports them all.

use super::tree::Pos;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Pos,
    /// Dotted key path (`hosts.db2.mysql.port`); empty for syntax errors.
    pub key: String,
    pub msg: String,
}

#[derive(Debug, Default)]
pub struct Problems {
    list: Vec<Problem>,
}

impl Problems {
    pub fn add(&mut self, pos: Pos, key: impl Into<String>, msg: impl Into<String>) {
        self.list.push(Problem {
            pos,
            key: key.into(),
            msg: msg.into(),
        });
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// One line per problem, `FILE:LINE:COL: key: message`, in file order, without repeats.
    /// A control character that slipped into a key or a message is shown escaped: it would act
    /// on the terminal or forge a line.
    pub fn render(&self, file: &str) -> String {
        let mut list = self.list.clone();
        // Stable: problems on the same spot keep the order they were found in.
        list.sort_by_key(|p| p.pos);
        list.dedup();
        list.iter()
            .map(|p| {
                let Pos { line, col } = p.pos;
                let p = Problem {
                    pos: p.pos,
                    key: escape_controls(&p.key),
                    msg: escape_controls(&p.msg),
                };
                if p.key.is_empty() {
                    format!("{file}:{line}:{col}: {}", p.msg)
                } else {
                    format!("{file}:{line}:{col}: {}: {}", p.key, p.msg)
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_string();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The closest candidate to a mistyped word, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for c in candidates {
        let d = strsim::damerau_levenshtein(&lower, &c.to_ascii_lowercase());
        // One edit for short words, about a third of the length for longer ones.
        let limit = (c.chars().count() / 3).max(1);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_sorts_by_position_and_prefixes_file_line_col_key() {
        let mut p = Problems::default();
        p.add(Pos { line: 9, col: 3 }, "hosts.b.master", "second");
        p.add(Pos { line: 2, col: 1 }, "", "first");
        p.add(Pos { line: 9, col: 3 }, "hosts.b.master", "second");
        assert_eq!(
            p.render("t.yaml"),
            "t.yaml:2:1: first\nt.yaml:9:3: hosts.b.master: second"
        );
    }

    #[test]
    fn control_characters_never_reach_the_terminal() {
        let mut p = Problems::default();
        p.add(Pos { line: 1, col: 1 }, "na\x1bme", "bad \x1b[2J\nvalue");
        assert_eq!(
            p.render("t.yaml"),
            "t.yaml:1:1: na\\u{1b}me: bad \\u{1b}[2J\\nvalue"
        );
    }

    #[test]
    fn suggestions_catch_typos_only() {
        let keys = ["address", "master", "server_id", "ssh", "mysql"];
        assert_eq!(did_you_mean("adress", keys), Some("address"));
        assert_eq!(did_you_mean("mastr", keys), Some("master"));
        assert_eq!(did_you_mean("serverid", keys), Some("server_id"));
        assert_eq!(did_you_mean("Address", keys), Some("address"));
        assert_eq!(did_you_mean("colour", keys), None);
        assert_eq!(did_you_mean("sh", keys), Some("ssh"));
    }
}
