//! repltool: build and run MySQL/MariaDB replication from one YAML file.
//!
//! Every command is the same pipeline: load (file -> validated [`topology::Topology`]) -> observe
//! (each host in parallel -> facts) -> plan (pure) -> execute (the only code that changes a
//! server) -> report. See `architecture.md` in the design notes.

pub mod check;
pub mod cli;
pub mod commands;
pub mod error;
pub mod execute;
pub mod failpoint;
pub mod flavor;
pub mod lab;
pub mod localfile;
pub mod observe;
pub mod par;
pub mod plan;
pub mod promote;
pub mod report;
pub mod secret;
pub mod topology;
pub mod transport;
