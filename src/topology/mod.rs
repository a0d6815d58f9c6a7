//! The topology file: a positioned YAML tree (`tree`), read against the format into a mirror
//! (`raw`), then one validation step into the model (`model`) where roles are derived and ids
//! checked. Nothing past this module sees raw YAML.

mod env;
mod galera;
pub mod model;
mod problems;
mod proxies;
mod raw;
pub mod rewrite;
mod tree;
mod validate;

pub use env::child_env_removals;
pub use model::*;

use std::path::Path;

use crate::error::input;

/// Topology files are a few KiB; anything this big is not one.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Load and validate a topology file. Every problem found is reported at once, each naming the
/// file, the line and the key; the error is [`crate::error::Failure::Input`] (exit 2).
/// Nothing is contacted here.
pub fn load(path: &Path) -> anyhow::Result<Topology> {
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| input(format!("{shown}: cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(input(format!("{shown}: not a regular file")));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(input(format!(
            "{shown}: {} bytes is too large for a topology file",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| input(format!("{shown}: cannot read: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        input(format!(
            "{shown}: not UTF-8 text (byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    load_str(&text, path, &|name| std::env::var(name).ok())
}

/// [`load`] on text already read; `path` names the file in messages, gives the default `name`
/// and the directory relative paths start from; `env` stands in for the environment.
pub fn load_str(
    text: &str,
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Topology> {
    let file = path.display().to_string();
    // Editors on Windows save UTF-8 with a byte order mark; it means nothing here.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut ctx = raw::Ctx {
        problems: problems::Problems::default(),
        vars: Default::default(),
        env,
        base_dir: path.parent().map(Path::to_path_buf).unwrap_or_default(),
    };
    let doc = match tree::parse(text) {
        Ok(doc) => doc,
        Err((pos, msg)) => {
            let hint = syntax_hint(text, pos.line);
            ctx.problems
                .add(pos, "", format!("YAML syntax error: {msg}{hint}"));
            return Err(input(ctx.problems.render(&file)));
        }
    };
    let Some(raw) = raw::read_file(doc.as_ref(), &mut ctx) else {
        return Err(input(ctx.problems.render(&file)));
    };
    env::remember_named(std::mem::take(&mut ctx.vars));
    match validate::build(raw, path, &mut ctx) {
        Some(topo) if ctx.problems.is_empty() => Ok(topo),
        _ => Err(input(ctx.problems.render(&file))),
    }
}

/// Two usual causes of a baffling YAML error, named when the lines near the error show them.
fn syntax_hint(text: &str, line: usize) -> &'static str {
    let near: Vec<&str> = text.lines().skip(line.saturating_sub(2)).take(2).collect();
    if near.iter().any(|l| l.contains('\t')) {
        " (tabs are not allowed for indentation in YAML: use spaces)"
    } else if near.iter().any(|l| {
        let flow = l.replace("${", "");
        l.contains("${") && (flow.contains('{') || flow.contains('['))
    }) {
        " (inside `{ }` or `[ ]`, quote values that use variables: \"${VAR}\")"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests;
