//! Live tests of the built binary against real servers.

mod bigdata;
mod flavors;
mod galera;
mod init;
mod lab;
mod netns;
mod promote;
mod proxy;
mod proxy_bench;
mod safety;
mod ssh;
mod ssh_integrity;
mod ssh_isolated;
mod status;
mod watch;
