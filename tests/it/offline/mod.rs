//! Tests that need no server: golden SQL and parsed server output, bad topology files, and the
//! shipped example topologies.

mod example_topologies;
mod golden_bad;
mod golden_flavor;
mod golden_status;
