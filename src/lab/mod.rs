//! `repltool lab`: a local sandbox of real server instances on 127.0.0.1, each with its own
//! port, datadir, socket, pid file, error log and config include directory, plus a ready
//! topology file (local transport) that `repltool init` accepts unchanged.

use anyhow::Result;

use crate::cli::{LabDirArgs, LabUpArgs};

/// `repltool lab up`: returns the exit code.
pub fn up(args: &LabUpArgs) -> Result<i32> {
    let _ = args;
    anyhow::bail!("lab up: not implemented yet")
}

/// `repltool lab status`.
pub fn status(args: &LabDirArgs) -> Result<i32> {
    let _ = args;
    anyhow::bail!("lab status: not implemented yet")
}

/// `repltool lab down`.
pub fn down(args: &LabDirArgs) -> Result<i32> {
    let _ = args;
    anyhow::bail!("lab down: not implemented yet")
}
