//! The `local` transport: commands run on this machine with `sh -c` (the lab).

use std::time::Duration;

use anyhow::Result;

use super::{CmdOutput, HostSession, RemoteProcess};

pub struct LocalSession {
    name: String,
    address: String,
}

impl LocalSession {
    pub fn new(name: &str, address: &str) -> Self {
        LocalSession {
            name: name.to_string(),
            address: address.to_string(),
        }
    }
}

impl HostSession for LocalSession {
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
        Ok((self.address.clone(), port))
    }
}
