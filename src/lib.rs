//! repltool: build and run MySQL/MariaDB replication from one YAML file.
//!
//! Every command is the same pipeline: load (file -> validated [`topology::Topology`]) -> observe
//! (each host in parallel -> facts) -> plan (pure) -> execute (the only code that changes a
//! server) -> report. See `architecture.md` in the design notes.
//!
//! Public for the binary and the integration tests: the command line (`cli`, `commands`,
//! `error`), the topology file (`topology`, `secret`), the SSH transport (`transport`) and
//! the lab's helpers (`lab`). Everything else is `pub(crate)`, so dead code is reported.

// One reporter owns the terminal: stdout is data, stderr is progress (`report`).
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub(crate) mod analysis;
pub(crate) mod check;
pub mod cli;
pub mod commands;
pub mod error;
pub(crate) mod execute;
pub(crate) mod failpoint;
pub(crate) mod flavor;
pub(crate) mod galera;
pub mod lab;
pub(crate) mod localfile;
pub(crate) mod lock;
pub(crate) mod observe;
pub(crate) mod par;
pub(crate) mod physical;
pub(crate) mod plan;
pub(crate) mod promote;
pub(crate) mod proxy;
pub(crate) mod report;
pub mod secret;
#[cfg(test)]
pub(crate) mod testing;
pub mod topology;
pub mod transport;
pub(crate) mod verify;
pub(crate) mod watch;
