//! One function per subcommand: wires load -> observe -> plan -> execute -> report.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::cli::{Cli, Command, LabCommand};

/// Run a parsed command line; returns the exit code (errors map through `error::exit_code`).
pub fn run(cli: Cli) -> Result<i32> {
    let file = |own: Option<PathBuf>| -> PathBuf {
        own.or(cli.file.clone())
            .unwrap_or_else(|| PathBuf::from("topology.yaml"))
    };
    match cli.command {
        Command::Init(ref a) => init(&file(a.file.clone()), a),
        Command::Status(ref a) => status(&file(None), a),
        Command::Promote(ref a) => promote(&file(None), a),
        Command::Check(ref a) => check(&file(None), a),
        Command::Lab(LabCommand::Up(ref a)) => lab_up(a),
        Command::Lab(LabCommand::Status(ref a)) => lab_status(a),
        Command::Lab(LabCommand::Down(ref a)) => lab_down(a),
    }
}

fn init(path: &Path, a: &crate::cli::InitArgs) -> Result<i32> {
    let topo = crate::topology::load(path)?;
    let _ = (topo, a);
    anyhow::bail!("init: not implemented yet")
}

fn status(path: &Path, a: &crate::cli::StatusArgs) -> Result<i32> {
    let topo = crate::topology::load(path)?;
    let _ = (topo, a);
    anyhow::bail!("status: not implemented yet")
}

fn promote(path: &Path, a: &crate::cli::PromoteArgs) -> Result<i32> {
    let topo = crate::topology::load(path)?;
    let _ = (topo, a);
    anyhow::bail!("promote: not implemented yet")
}

fn check(path: &Path, a: &crate::cli::CheckArgs) -> Result<i32> {
    let topo = crate::topology::load(path)?;
    let _ = (topo, a);
    anyhow::bail!("check: not implemented yet")
}

fn lab_up(a: &crate::cli::LabUpArgs) -> Result<i32> {
    crate::lab::up(a)
}

fn lab_status(a: &crate::cli::LabDirArgs) -> Result<i32> {
    crate::lab::status(a)
}

fn lab_down(a: &crate::cli::LabDirArgs) -> Result<i32> {
    crate::lab::down(a)
}
