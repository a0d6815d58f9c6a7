//! The topology file: a serde mirror of the YAML (`raw`), then one validation step into the model
//! (`model`) where roles are derived and ids checked. Nothing past this module sees raw YAML.

pub mod model;
pub mod rewrite;

pub use model::*;

use std::path::Path;

/// Load and validate a topology file. Every problem found is reported at once, each naming the
/// file, the line and the key; the error is [`crate::error::Failure::Input`] (exit 2).
/// Nothing is contacted here.
pub fn load(path: &Path) -> anyhow::Result<Topology> {
    let _ = path;
    todo!("topology loader")
}
