//! Tests of the built binary and the public loader that need no server: bad topology files, the
//! shipped example topologies. (Golden SQL and parsed server output are unit tests of the crate:
//! `flavor::golden`, `observe::golden`.)

mod cli;
mod example_topologies;
mod golden_bad;
