//! The SSH transport (ssh2): verified host keys, key file or agent auth, optional jump host and
//! `sudo -n`, timeouts, one session per host reused for every step, and SQL through a
//! direct-tcpip port-forward.

use std::time::Duration;

use anyhow::Result;

use super::{CmdOutput, HostSession, RemoteProcess};
use crate::topology::{SqlRoute, Ssh};

pub struct SshSession {
    name: String,
}

impl SshSession {
    pub fn connect(name: &str, address: &str, cfg: &Ssh, route: SqlRoute) -> Result<SshSession> {
        let _ = (address, cfg, route);
        Ok(SshSession {
            name: name.to_string(),
        })
    }
}

impl HostSession for SshSession {
    fn host_name(&self) -> &str {
        &self.name
    }
    fn run(
        &mut self,
        script: &str,
        stdin: Option<&[u8]>,
        privileged: bool,
        timeout: Duration,
    ) -> Result<CmdOutput> {
        let _ = (script, stdin, privileged, timeout);
        todo!()
    }
    fn spawn(&mut self, script: &str, privileged: bool) -> Result<Box<dyn RemoteProcess>> {
        let _ = (script, privileged);
        todo!()
    }
    fn sql_endpoint(&mut self, port: u16) -> Result<(String, u16)> {
        let _ = port;
        todo!()
    }
}
