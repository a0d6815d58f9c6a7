//! The one SQL seam: [`SqlConn`], a connection that runs statements built by `flavor/` (the
//! only way to make a [`Sql`]), its implementation over the `mysql` crate, and how a failed
//! login is classified (the server answered and refused, or nothing answered at all). A scripted
//! fake for unit tests lives in `transport::fake`.

use std::time::Duration;

use anyhow::{anyhow, Result};
use mysql::prelude::Queryable;

use crate::flavor::{Flavor, Sql};
use crate::topology::Host;
use crate::transport::HostSession;

/// One row as (column, value) pairs, NULL as None.
pub type Columns = Vec<(String, Option<String>)>;

/// A server error (`ERROR code: message`) from a statement, the statement shown with secrets
/// masked. Kept as a type so callers can tell "access denied" from "too many connections".
#[derive(Debug, Clone, thiserror::Error)]
#[error("{shown}: {text}")]
pub struct SqlError {
    /// The server's error code; None for a transport failure (connection lost, timeout).
    pub code: Option<u16>,
    /// `ERROR 1045: Access denied ...`, or the transport's reason.
    pub text: String,
    /// The statement, secrets masked.
    pub shown: String,
}

/// A SQL connection. Every statement comes from `flavor/`.
pub trait SqlConn: Send {
    /// Run a statement that returns rows.
    fn query(&mut self, q: &Sql) -> Result<Vec<Columns>>;
    /// Run a statement, dropping any result.
    fn exec(&mut self, q: &Sql) -> Result<()>;
    /// Where the connection keeps its server's flavor once read (None: it is read each time).
    fn flavor_slot(&mut self) -> Option<&mut Option<Flavor>> {
        None
    }
}

impl dyn SqlConn + '_ {
    /// The first column of the first row (None: no row, or NULL).
    pub fn one(&mut self, q: &Sql) -> Result<Option<String>> {
        Ok(self
            .query(q)?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .and_then(|(_, v)| v))
    }
    /// The first column of every row, NULLs skipped.
    pub fn column(&mut self, q: &Sql) -> Result<Vec<String>> {
        Ok(self
            .query(q)?
            .into_iter()
            .filter_map(|r| r.into_iter().next().and_then(|(_, v)| v))
            .collect())
    }
    /// Run statements in order; the first error stops and names its statement.
    pub fn run(&mut self, stmts: &[Sql]) -> Result<()> {
        for q in stmts {
            self.exec(q)?;
        }
        Ok(())
    }
    /// The server's flavor and version (`SELECT @@version, @@version_comment`).
    pub fn flavor(&mut self) -> Result<Flavor> {
        if let Some(Some(f)) = self.flavor_slot() {
            return Ok(*f);
        }
        let row = self
            .query(&Flavor::detect_query())?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow!("the server returned no version row"))?;
        let v = row.first().and_then(|(_, v)| v.clone()).unwrap_or_default();
        let c = row.get(1).and_then(|(_, v)| v.clone()).unwrap_or_default();
        let f = Flavor::detect(&v, &c)?;
        if let Some(slot) = self.flavor_slot() {
            *slot = Some(f);
        }
        Ok(f)
    }
}

/// A connection through the `mysql` crate.
/// A connection through the `mysql` crate; the server's flavor once read (it cannot change
/// while the connection lives).
pub struct MysqlConn(mysql::Conn, Option<Flavor>);

fn server_error(e: &mysql::Error) -> (Option<u16>, String) {
    match e {
        mysql::Error::MySqlError(me) => {
            (Some(me.code), format!("ERROR {}: {}", me.code, me.message))
        }
        other => (None, other.to_string()),
    }
}

impl SqlConn for MysqlConn {
    fn query(&mut self, q: &Sql) -> Result<Vec<Columns>> {
        let rows: Vec<mysql::Row> = self.0.query(q.text()).map_err(|e| {
            let (code, text) = server_error(&e);
            SqlError {
                code,
                text,
                shown: q.shown().to_string(),
            }
        })?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let cols = row.columns();
                cols.iter()
                    .enumerate()
                    .map(|(i, c)| {
                        (
                            c.name_str().into_owned(),
                            row.as_ref(i).and_then(value_text),
                        )
                    })
                    .collect()
            })
            .collect())
    }
    fn exec(&mut self, q: &Sql) -> Result<()> {
        self.0.query_drop(q.text()).map_err(|e| {
            let (code, text) = server_error(&e);
            SqlError {
                code,
                text,
                shown: q.shown().to_string(),
            }
            .into()
        })
    }
    fn flavor_slot(&mut self) -> Option<&mut Option<Flavor>> {
        Some(&mut self.1)
    }
}

fn value_text(v: &mysql::Value) -> Option<String> {
    match v {
        mysql::Value::NULL => None,
        mysql::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        mysql::Value::Int(i) => Some(i.to_string()),
        mysql::Value::UInt(u) => Some(u.to_string()),
        mysql::Value::Float(f) => Some(f.to_string()),
        mysql::Value::Double(f) => Some(f.to_string()),
        other => Some(other.as_sql(true).trim_matches('\'').to_string()),
    }
}

/// Why a login failed: the difference between a server that is down and one that answers
/// decides between a failover and a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Reach {
    /// Nothing listens on the port (connection refused): the server is not running.
    Refused,
    /// No answer within the timeout (a hung server, a partition, a host that is down).
    TimedOut,
    /// The server answered with an error (access denied, too many connections, ...): alive.
    Answered(u16),
    /// Something else went wrong (a protocol error, a lost link, TLS...): not known to be dead.
    Other,
}

impl Reach {
    /// Positively down: nothing accepted the connection, or nothing answered in time.
    pub fn is_down(self) -> bool {
        matches!(self, Reach::Refused | Reach::TimedOut)
    }
}

/// A failed login, with its classification.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{text}")]
pub struct ConnectError {
    pub reach: Reach,
    pub text: String,
}

/// Classify a login failure from the driver's error and, through an SSH forward, the reason the
/// far end gave for closing it.
pub fn classify(e: &mysql::Error, far: Option<&str>) -> Reach {
    if let mysql::Error::MySqlError(me) = e {
        return Reach::Answered(me.code);
    }
    if let Some(r) = far.map(|r| r.to_ascii_lowercase()) {
        // sshd's own connect to the server's port on its host failed ("connect failed",
        // SSH_OPEN_CONNECT_FAILED): nothing listens there.
        if r.contains("refused") || r.contains("connect failed") {
            return Reach::Refused;
        }
        if r.contains("timed out") || r.contains("timeout") {
            return Reach::TimedOut;
        }
    }
    match e {
        mysql::Error::IoError(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => Reach::Refused,
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => Reach::TimedOut,
            _ => Reach::Other,
        },
        mysql::Error::DriverError(mysql::DriverError::ConnectTimeout) => Reach::TimedOut,
        _ => Reach::Other,
    }
}

/// Open an administrative SQL connection to `host` through its session's endpoint (SSH
/// port-forward, direct TCP, or the lab's loopback). `connect_timeout` bounds the connect,
/// `io_timeout` every read and write, so a partitioned host costs at most that. The session
/// clears NO_BACKSLASH_ESCAPES so `flavor::quote` is always right. A failure is a
/// [`ConnectError`] naming the host.
pub fn connect(
    session: &mut dyn HostSession,
    host: &Host,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> Result<Box<dyn SqlConn>> {
    let (addr, port) = session.sql_endpoint(host.mysql.port)?;
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some(addr))
        .tcp_port(port)
        .user(Some(host.mysql.user.clone()))
        .pass(Some(host.mysql.password.expose().to_string()))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(connect_timeout))
        .read_timeout(Some(io_timeout))
        .write_timeout(Some(io_timeout))
        .init(vec![Flavor::session_setup().text().to_string()]);
    match mysql::Conn::new(opts) {
        Ok(c) => Ok(Box::new(MysqlConn(c, None))),
        Err(e) => {
            // The forward's own thread records why it closed; give it a moment to say so.
            let forward = matches!(host.transport, crate::topology::Transport::Ssh(_))
                && host.mysql.route == crate::topology::SqlRoute::Forward;
            let mut far = session.endpoint_error(host.mysql.port);
            if far.is_none() && forward {
                for _ in 0..20 {
                    std::thread::sleep(Duration::from_millis(10));
                    far = session.endpoint_error(host.mysql.port);
                    if far.is_some() {
                        break;
                    }
                }
            }
            let reach = classify(&e, far.as_deref());
            let far = far
                .map(|r| format!(" (through SSH: {r})"))
                .unwrap_or_default();
            Err(ConnectError {
                reach,
                text: format!(
                    "{}: SQL login as {} on port {} failed: {}{far}",
                    host.name,
                    host.mysql.user,
                    host.mysql.port,
                    server_error(&e).1
                ),
            }
            .into())
        }
    }
}

/// A plain TCP login (the lab's readiness check), every wait bounded by `timeout`.
pub fn connect_tcp(
    addr: &str,
    port: u16,
    user: &str,
    password: &str,
    timeout: Duration,
) -> Result<Box<dyn SqlConn>> {
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some(addr))
        .tcp_port(port)
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(timeout))
        .read_timeout(Some(timeout))
        .write_timeout(Some(timeout));
    match mysql::Conn::new(opts) {
        Ok(c) => Ok(Box::new(MysqlConn(c, None))),
        Err(e) => Err(ConnectError {
            reach: classify(&e, None),
            text: format!(
                "SQL login as {user} on {addr}:{port} failed: {}",
                server_error(&e).1
            ),
        }
        .into()),
    }
}

/// The classification of a failed connect, if `e` is one.
pub fn reach_of(e: &anyhow::Error) -> Option<Reach> {
    e.chain()
        .find_map(|c| c.downcast_ref::<ConnectError>())
        .map(|c| c.reach)
}

/// The server error code of a failed statement, if `e` is one.
pub fn code_of(e: &anyhow::Error) -> Option<u16> {
    e.chain()
        .find_map(|c| c.downcast_ref::<SqlError>())
        .and_then(|s| s.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> mysql::Error {
        mysql::Error::IoError(std::io::Error::new(kind, "x"))
    }

    #[test]
    fn a_server_that_answers_is_never_down() {
        let e = mysql::Error::MySqlError(mysql::MySqlError {
            state: "08004".into(),
            message: "Too many connections".into(),
            code: 1040,
        });
        assert_eq!(classify(&e, None), Reach::Answered(1040));
        // Even if the forward said something odd at the same time.
        assert_eq!(
            classify(&e, Some("connection refused")),
            Reach::Answered(1040)
        );
        assert!(!Reach::Answered(1045).is_down());
        assert!(!Reach::Other.is_down());
    }

    #[test]
    fn refused_and_timeouts_are_down_directly_and_through_ssh() {
        assert_eq!(
            classify(&io(std::io::ErrorKind::ConnectionRefused), None),
            Reach::Refused
        );
        assert_eq!(
            classify(&io(std::io::ErrorKind::TimedOut), None),
            Reach::TimedOut
        );
        assert_eq!(
            classify(
                &mysql::Error::DriverError(mysql::DriverError::ConnectTimeout),
                None
            ),
            Reach::TimedOut
        );
        // Through the forward the local socket just closes; the SSH channel says why.
        let eof = io(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(classify(&eof, None), Reach::Other);
        assert_eq!(
            classify(
                &eof,
                Some("forwarding to port 3306 on the host: Connect failed (Connection refused)")
            ),
            Reach::Refused
        );
        assert_eq!(
            classify(&eof, Some("the SSH link timed out")),
            Reach::TimedOut
        );
        assert!(Reach::Refused.is_down() && Reach::TimedOut.is_down());
    }
}
