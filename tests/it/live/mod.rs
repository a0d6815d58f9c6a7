//! Live tests of the built binary against real servers.

mod init;
mod lab;
mod netns;
mod promote;
mod proxy;
mod proxy_bench;
mod ssh;
mod ssh_isolated;
mod status;
