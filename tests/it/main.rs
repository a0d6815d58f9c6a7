//! The one integration-test binary (one link instead of eleven): `offline` tests need no server
//! (golden files, bad topology files, the example topologies); `live` tests run the built
//! `repltool` binary against real servers, a real sshd and network-namespace hosts that
//! `support` starts. A live test that cannot start what it needs fails; it never skips.
//!
//! Live tests of different modules run in parallel: each module keeps to its own port range
//! (named in its header), and the network-namespace hosts serialize themselves.

mod live;
mod offline;
mod support;
