//! Fakes for unit tests only: a scripted SQL server ([`FakeServer`]) behind [`SqlConn`], and a
//! [`HostSession`] ([`FakeSession`]) whose SQL connections reach it and whose shell answers
//! from a script. Every statement and command is logged, so a test can assert what ran, in
//! which order, on which host. A statement no rule answers is an error naming it: a test never
//! passes by accident on a statement it did not expect.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};

use crate::flavor::Sql;
use crate::topology::Host;
use crate::transport::sql::{Columns, ConnectError, Reach, SqlConn, SqlError};
use crate::transport::{CmdOutput, HostSession, RemoteProcess};

/// What a rule answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Rows of (column, value).
    Rows(Vec<Columns>),
    /// Success, no rows.
    Ok,
    /// A server error.
    Err(u16, String),
}

impl Reply {
    /// One row with these columns.
    pub fn row(cols: &[(&str, Option<&str>)]) -> Reply {
        Reply::Rows(vec![cols
            .iter()
            .map(|(c, v)| (c.to_string(), v.map(|s| s.to_string())))
            .collect()])
    }
    /// One value.
    pub fn value(v: &str) -> Reply {
        Reply::row(&[("v", Some(v))])
    }
    /// No rows.
    pub fn empty() -> Reply {
        Reply::Rows(Vec::new())
    }
}

#[derive(Debug)]
struct Rule {
    /// The statement contains this text.
    contains: String,
    /// Answers left; None: forever.
    left: Option<usize>,
    reply: Reply,
}

/// A scripted server: rules are tried in the order added, the first matching one answers.
#[derive(Debug, Default)]
pub struct FakeServer {
    rules: Vec<Rule>,
    /// Every statement run, as sent.
    pub log: Vec<String>,
    /// When set, logins fail this way.
    pub down: Option<Reach>,
}

/// A fake server shared by the test and every connection to it.
pub type Shared = Arc<Mutex<FakeServer>>;

impl FakeServer {
    pub fn shared() -> Shared {
        Arc::new(Mutex::new(FakeServer::default()))
    }
    /// Answer statements containing `contains` with `reply`, every time.
    pub fn on(&mut self, contains: &str, reply: Reply) -> &mut Self {
        self.rules.push(Rule {
            contains: contains.to_string(),
            left: None,
            reply,
        });
        self
    }
    /// Answer the next `n` statements containing `contains` with `reply`.
    pub fn on_times(&mut self, contains: &str, n: usize, reply: Reply) -> &mut Self {
        self.rules.push(Rule {
            contains: contains.to_string(),
            left: Some(n),
            reply,
        });
        self
    }
    fn answer(&mut self, text: &str) -> Result<Reply> {
        self.log.push(text.to_string());
        for r in self.rules.iter_mut() {
            if r.left == Some(0) || !text.contains(&r.contains) {
                continue;
            }
            if let Some(n) = r.left.as_mut() {
                *n -= 1;
            }
            return Ok(r.reply.clone());
        }
        bail!("fake server: no rule answers {text:?}")
    }
    /// The statements run so far that contain `needle`.
    pub fn ran(&self, needle: &str) -> Vec<String> {
        self.log
            .iter()
            .filter(|s| s.contains(needle))
            .cloned()
            .collect()
    }
}

/// A connection to a [`FakeServer`].
pub struct FakeConn(pub Shared);

impl SqlConn for FakeConn {
    fn query(&mut self, q: &Sql) -> Result<Vec<Columns>> {
        let mut s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match s.answer(q.text())? {
            Reply::Rows(r) => Ok(r),
            Reply::Ok => Ok(Vec::new()),
            Reply::Err(code, msg) => Err(SqlError {
                code: Some(code),
                text: format!("ERROR {code}: {msg}"),
                shown: q.shown().to_string(),
            }
            .into()),
        }
    }
    fn exec(&mut self, q: &Sql) -> Result<()> {
        self.query(q).map(|_| ())
    }
}

/// A host whose SQL is a [`FakeServer`] and whose shell answers from a queue of outputs
/// (commands are logged; an empty queue answers exit 0 with no output).
pub struct FakeSession {
    pub name: String,
    pub server: Shared,
    pub shell: Arc<Mutex<VecDeque<CmdOutput>>>,
    pub commands: Arc<Mutex<Vec<String>>>,
}

impl FakeSession {
    pub fn new(name: &str, server: Shared) -> FakeSession {
        FakeSession {
            name: name.to_string(),
            server,
            shell: Arc::default(),
            commands: Arc::default(),
        }
    }
}

impl HostSession for FakeSession {
    fn host_name(&self) -> &str {
        &self.name
    }
    fn run(
        &mut self,
        script: &str,
        _stdin: Option<&[u8]>,
        _privileged: bool,
        _timeout: Duration,
    ) -> Result<CmdOutput> {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(script.to_string());
        Ok(self
            .shell
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .unwrap_or_default())
    }
    fn spawn(&mut self, script: &str, _privileged: bool) -> Result<Box<dyn RemoteProcess>> {
        Err(anyhow!("fake session: no streaming ({script})"))
    }
    fn sql_endpoint(&mut self, _port: u16) -> Result<(String, u16)> {
        Err(anyhow!("fake session: no TCP endpoint"))
    }
    fn sql_connect(
        &mut self,
        host: &Host,
        _connect_timeout: Duration,
        _io_timeout: Duration,
    ) -> Result<Box<dyn SqlConn>> {
        let down = self.server.lock().unwrap_or_else(|e| e.into_inner()).down;
        match down {
            Some(reach) => Err(ConnectError {
                reach,
                text: format!("{}: SQL login failed: {reach:?}", host.name),
            }
            .into()),
            None => Ok(Box::new(FakeConn(Arc::clone(&self.server)))),
        }
    }
}
