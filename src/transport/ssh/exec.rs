//! Remote commands over exec channels: [`run`] (collect everything, with a timeout) and
//! [`SshProcess`] (streaming). Every command starts by printing its process group id on stderr
//! (stripped again here), so a timeout or an abandoned stream can kill the whole remote
//! process group instead of leaving it running on the server.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::conn::{read_buf, Chan, ChannelError, Conn, Dirs, ReadBuf, Step, Waiter, READ_LEN};
use crate::transport::{shell_quote, CmdOutput, RemoteProcess};

const PGID_MARK: &str = "@repltool-pgid:";
/// Stderr kept per command; the rest is counted, not stored.
const STDERR_CAP: usize = 1 << 20;
/// Stdout buffered while a stdin write is blocked (see [`SshProcess`]'s `Write`).
const SPILL_CAP: usize = 8 << 20;
/// How long a stream may make no progress at all before it is abandoned. Long: a client
/// loading a dump can stop reading for many minutes while it builds an index.
const STREAM_IDLE_LIMIT: Duration = Duration::from_secs(2 * 3600);
const CHUNK: usize = 32 * 1024;

/// The first line of a script, shortened, to name a command in messages.
pub(crate) fn label(script: &str) -> String {
    let first = script.trim().lines().next().unwrap_or("").trim();
    if first.chars().count() > 80 {
        format!("{}...", first.chars().take(77).collect::<String>())
    } else {
        first.to_string()
    }
}

/// The command line sent to the server. The login shell prints its pid (the process group and
/// session id sshd gave the command) and execs `sh -c SCRIPT`, through `sudo -n` if asked.
pub(crate) fn remote_command(script: &str, sudo: bool) -> String {
    let runner = if sudo {
        "exec sudo -n sh -c"
    } else {
        "exec sh -c"
    };
    format!(
        "echo \"{PGID_MARK}$$\" >&2; {runner} {}",
        shell_quote(script)
    )
}

/// Take our pgid line out of the start of stderr (it may follow output of the user's shell
/// rc files). `None`: not decided yet; `Some(None)`: no marker (given up after 8 KiB).
fn take_marker(stderr: &mut Vec<u8>) -> Option<Option<u32>> {
    let window = &stderr[..stderr.len().min(8192)];
    let mut start = 0;
    while let Some(nl) = window[start..].iter().position(|&b| b == b'\n') {
        let line = &window[start..start + nl];
        if let Some(rest) = line.strip_prefix(PGID_MARK.as_bytes()) {
            let pgid = std::str::from_utf8(rest)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
                .filter(|&p| p > 1);
            stderr.drain(start..start + nl + 1);
            return Some(pgid);
        }
        start += nl + 1;
    }
    if stderr.len() >= 8192 {
        Some(None)
    } else {
        None
    }
}

enum Failure {
    Timeout,
    Other(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

/// One exec channel and what has been seen of it.
pub(crate) struct Exec {
    chan: Chan,
    w: Waiter,
    label: String,
    sudo: bool,
    stdout_eof: bool,
    stderr_eof: bool,
    eof_sent: bool,
    stdin_dead: bool,
    finished: bool,
    stderr: Vec<u8>,
    stderr_dropped: u64,
    marker_done: bool,
    pgid: Option<u32>,
    /// Where stderr is read.
    err_buf: Option<ReadBuf>,
    /// Stdout read for a caller whose buffer was shorter than [`READ_LEN`]:
    /// `held[held_pos..held_len]` comes before anything still on the channel.
    held: Option<ReadBuf>,
    held_pos: usize,
    held_len: usize,
}

impl Exec {
    fn start(
        conn: &Arc<Conn>,
        command: &str,
        label: String,
        sudo: bool,
        deadline: Instant,
    ) -> Result<Exec> {
        // Starting a command needs a server reply; a server that cannot give one in a few
        // seconds is in trouble whatever the command's own timeout.
        let setup = deadline.max(Instant::now() + Duration::from_secs(15));
        let chan = conn.open_exec(command, setup)?;
        Ok(Exec {
            chan,
            w: Waiter::new(conn)?,
            label,
            sudo,
            stdout_eof: false,
            stderr_eof: false,
            eof_sent: false,
            stdin_dead: false,
            finished: false,
            stderr: Vec::new(),
            stderr_dropped: 0,
            marker_done: false,
            pgid: None,
            err_buf: None,
            held: None,
            held_pos: 0,
            held_len: 0,
        })
    }

    fn conn(&self) -> Arc<Conn> {
        Arc::clone(self.w.conn())
    }

    fn host(&self) -> String {
        self.w.conn().host.clone()
    }

    /// Read whatever stderr is available. Returns whether anything happened.
    fn drain_stderr(&mut self) -> Result<bool> {
        let mut buf = self.err_buf.take().unwrap_or_else(read_buf);
        let r = self.drain_stderr_into(&mut buf);
        self.err_buf = Some(buf);
        r
    }

    fn drain_stderr_into(&mut self, buf: &mut [u8; READ_LEN]) -> Result<bool> {
        let mut progress = false;
        for _ in 0..64 {
            if self.stderr_eof {
                break;
            }
            match self.chan.read_data(self.w.id, "reading stderr", 1, buf)? {
                Step::Ready(0) => {
                    if self.chan.eof() {
                        self.stderr_eof = true;
                        progress = true;
                    }
                    break;
                }
                Step::Ready(n) => {
                    progress = true;
                    self.keep_stderr(&buf[..n]);
                }
                Step::Again(_) => break,
            }
        }
        Ok(progress)
    }

    fn keep_stderr(&mut self, data: &[u8]) {
        let room = STDERR_CAP.saturating_sub(self.stderr.len());
        let take = room.min(data.len());
        self.stderr.extend_from_slice(&data[..take]);
        self.stderr_dropped += (data.len() - take) as u64;
        if !self.marker_done {
            if let Some(pgid) = take_marker(&mut self.stderr) {
                self.pgid = pgid;
                self.marker_done = true;
            }
        }
    }

    /// `Ready(0)` only at the real end of stdout.
    fn read_stdout(&mut self, buf: &mut [u8]) -> Result<Step<usize>> {
        if let Some(held) = &self.held {
            if self.held_pos < self.held_len {
                let n = buf.len().min(self.held_len - self.held_pos);
                buf[..n].copy_from_slice(&held[self.held_pos..self.held_pos + n]);
                self.held_pos += n;
                return Ok(Step::Ready(n));
            }
        }
        if self.stdout_eof {
            return Ok(Step::Ready(0));
        }
        if let Some(whole) = buf.first_chunk_mut::<READ_LEN>() {
            return self.read_stdout_into(whole);
        }
        // A shorter buffer: read the whole length aside, serve the rest to the next calls
        // (the read length must not vary, see `Chan::read_data`).
        let mut held = self.held.take().unwrap_or_else(read_buf);
        let r = self.read_stdout_into(&mut held);
        let (got, step) = match r {
            Ok(Step::Ready(got)) => {
                let n = buf.len().min(got);
                buf[..n].copy_from_slice(&held[..n]);
                (got, Ok(Step::Ready(n)))
            }
            other => (0, other),
        };
        self.held_len = got;
        self.held_pos = got.min(buf.len());
        self.held = Some(held);
        step
    }

    fn read_stdout_into(&mut self, buf: &mut [u8; READ_LEN]) -> Result<Step<usize>> {
        match self.chan.read_data(self.w.id, "reading output", 0, buf)? {
            Step::Ready(0) => {
                if self.chan.eof() {
                    self.stdout_eof = true;
                    Ok(Step::Ready(0))
                } else {
                    // libssh2 returns 0 without EOF when the packets it just read were for the
                    // other stream; that is "nothing yet".
                    Ok(Step::Again(Dirs {
                        read: true,
                        write: false,
                    }))
                }
            }
            other => Ok(other),
        }
    }

    /// `Ready(None)`: the remote end no longer takes input.
    fn write_stdin(&mut self, data: &[u8]) -> Result<Step<Option<usize>>> {
        let data = &data[..data.len().min(CHUNK)];
        match self.chan.write_data(self.w.id, "sending input", data) {
            Ok(Step::Ready(n)) => Ok(Step::Ready(Some(n))),
            Ok(Step::Again(d)) => Ok(Step::Again(d)),
            Err(e) if e.is::<ChannelError>() => {
                self.stdin_dead = true;
                Ok(Step::Ready(None))
            }
            Err(e) => Err(e),
        }
    }

    fn send_eof(&mut self) -> Result<Step<()>> {
        if self.eof_sent {
            return Ok(Step::Ready(()));
        }
        let conn = self.conn();
        match conn.op(self.w.id, "closing input", |_| self.chan.send_eof()) {
            Ok(Step::Again(d)) => Ok(Step::Again(d)),
            Ok(Step::Ready(())) => {
                self.eof_sent = true;
                Ok(Step::Ready(()))
            }
            Err(e) if e.is::<ChannelError>() => {
                self.eof_sent = true;
                Ok(Step::Ready(()))
            }
            Err(e) => Err(e),
        }
    }

    /// After stdout and stderr ended: wait for the channel to close and read the exit status.
    fn finish(&mut self, deadline: Instant) -> Result<i32, Failure> {
        let conn = self.conn();
        loop {
            match conn.op(self.w.id, "waiting for the command to end", |_| {
                self.chan.wait_close()
            }) {
                Ok(Step::Ready(())) => break,
                Ok(Step::Again(d)) => {
                    if !self.w.wait(d, &[], Some(deadline))? {
                        return Err(Failure::Timeout);
                    }
                }
                // The channel is closed on our side already (a peer that closed first): the
                // status has arrived with the close or never will.
                Err(e) if e.is::<ChannelError>() => break,
                Err(e) => return Err(e.into()),
            }
        }
        self.finished = true;
        self.chan.mark_closed();
        if let Ok(sig) = self.chan.exit_signal() {
            if let Some(name) = sig.exit_signal {
                self.keep_stderr(format!("[killed by signal {name} on the host]\n").as_bytes());
                return Ok(-1);
            }
        }
        Ok(self.chan.exit_status().unwrap_or(-1))
    }

    fn take_stderr(&mut self) -> Vec<u8> {
        let mut s = std::mem::take(&mut self.stderr);
        if self.stderr_dropped > 0 {
            s.extend_from_slice(
                format!("[{} more bytes of stderr not kept]\n", self.stderr_dropped).as_bytes(),
            );
        }
        s
    }

    /// Feed `input`, collect output until the command ends or `deadline` passes.
    fn drive(&mut self, input: &[u8], deadline: Instant) -> Result<CmdOutput, Failure> {
        let mut off = 0;
        let mut stdout = Vec::new();
        let mut buf = vec![0u8; READ_LEN];
        loop {
            let mut progress = false;
            let mut dirs = Dirs::default();
            if !self.eof_sent {
                if off < input.len() && !self.stdin_dead {
                    match self.write_stdin(&input[off..])? {
                        Step::Ready(Some(n)) => {
                            off += n;
                            progress |= n > 0;
                        }
                        Step::Ready(None) => progress = true,
                        Step::Again(d) => dirs = dirs.or(d),
                    }
                }
                if off >= input.len() || self.stdin_dead {
                    match self.send_eof()? {
                        Step::Ready(()) => progress = true,
                        Step::Again(d) => dirs = dirs.or(d),
                    }
                }
            }
            progress |= self.drain_stderr()?;
            for _ in 0..32 {
                match self.read_stdout(&mut buf)? {
                    Step::Ready(0) => break,
                    Step::Ready(n) => {
                        stdout.extend_from_slice(&buf[..n]);
                        progress = true;
                    }
                    Step::Again(d) => {
                        dirs = dirs.or(d);
                        break;
                    }
                }
            }
            if self.stdout_eof && self.stderr_eof {
                break;
            }
            if progress {
                if Instant::now() >= deadline {
                    return Err(Failure::Timeout);
                }
            } else if !self.w.wait(dirs, &[], Some(deadline))? {
                return Err(Failure::Timeout);
            }
        }
        let status = self.finish(deadline)?;
        Ok(CmdOutput {
            status,
            stdout,
            stderr: self.take_stderr(),
        })
    }

    /// Best effort: kill the remote process group (when we know it), then close the channel.
    fn abandon(&mut self) {
        if self.finished {
            return;
        }
        let conn = self.conn();
        // The pgid line comes once the login shell has read its rc files; give a slow one a
        // moment rather than leave the command running.
        let until = Instant::now() + Duration::from_secs(1);
        while self.pgid.is_none() && !self.marker_done && !self.stderr_eof {
            match self.drain_stderr() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(_) => break,
            }
            let dirs = Dirs {
                read: true,
                write: false,
            };
            if !matches!(self.w.wait(dirs, &[], Some(until)), Ok(true)) {
                break;
            }
        }
        if let Some(pg) = self.pgid {
            let kill = format!(
                "kill -TERM -{pg} 2>/dev/null; i=0; \
                 while kill -0 -{pg} 2>/dev/null && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done; \
                 kill -KILL -{pg} 2>/dev/null; exit 0"
            );
            let command = if self.sudo {
                format!("sudo -n sh -c {}", shell_quote(&kill))
            } else {
                kill
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            if let Ok(mut k) = Exec::start(&conn, &command, "kill".into(), false, deadline) {
                let _ = k.drive(&[], deadline);
                k.finished = true;
            }
        }
        self.chan.close(Duration::from_secs(2));
        self.finished = true;
    }
}

impl Drop for Exec {
    fn drop(&mut self) {
        if !self.finished {
            self.chan.close(Duration::from_secs(2));
        }
    }
}

/// Run `script` to completion (see [`crate::transport::HostSession::run`]).
pub(crate) fn run(
    conn: &Arc<Conn>,
    script: &str,
    stdin: Option<&[u8]>,
    sudo: bool,
    timeout: Duration,
) -> Result<CmdOutput> {
    let label = label(script);
    let deadline = crate::transport::deadline_in(timeout);
    let mut ex = Exec::start(
        conn,
        &remote_command(script, sudo),
        label.clone(),
        sudo,
        deadline,
    )
    .map_err(|e| anyhow!("{e:#} (while starting: {label})"))?;
    match ex.drive(stdin.unwrap_or(&[]), deadline) {
        Ok(out) => Ok(out),
        Err(Failure::Timeout) => {
            ex.abandon();
            Err(anyhow!(
                "{}: command timed out after {}s and was stopped: {label}",
                conn.host,
                timeout.as_secs_f32()
            ))
        }
        Err(Failure::Other(e)) => {
            if conn.check_alive().is_ok() {
                ex.abandon();
            }
            Err(anyhow!("{e:#} (while running: {label})"))
        }
    }
}

/// A streaming remote command (see [`RemoteProcess`]).
pub(crate) struct SshProcess {
    ex: Exec,
    /// Stdout read while a stdin write was blocked, served to the next reads.
    spill: Vec<u8>,
    spill_pos: usize,
}

impl SshProcess {
    pub fn start(conn: &Arc<Conn>, script: &str, sudo: bool) -> Result<SshProcess> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let ex = Exec::start(
            conn,
            &remote_command(script, sudo),
            label(script),
            sudo,
            deadline,
        )
        .map_err(|e| anyhow!("{e:#} (while starting: {})", label(script)))?;
        Ok(SshProcess {
            ex,
            spill: Vec::new(),
            spill_pos: 0,
        })
    }

    fn io_err(&self, e: anyhow::Error) -> io::Error {
        io::Error::other(format!("{e:#} (while streaming: {})", self.ex.label))
    }

    fn broken_pipe(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!(
                "{}: the remote command no longer reads its input: {}",
                self.ex.host(),
                self.ex.label
            ),
        )
    }

    fn idle_err(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "{}: no progress for {} minutes, giving up: {}",
                self.ex.host(),
                STREAM_IDLE_LIMIT.as_secs() / 60,
                self.ex.label
            ),
        )
    }

    fn close_input(&mut self) -> Result<()> {
        let deadline = Instant::now() + STREAM_IDLE_LIMIT;
        loop {
            self.ex.drain_stderr()?;
            match self.ex.send_eof()? {
                Step::Ready(()) => return Ok(()),
                Step::Again(d) => {
                    if !self.ex.w.wait(d, &[], Some(deadline))? {
                        return Err(anyhow!(self.idle_err()));
                    }
                }
            }
        }
    }
}

impl Write for SshProcess {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.ex.eof_sent || self.ex.stdin_dead {
            return Err(self.broken_pipe());
        }
        let mut deadline = Instant::now() + STREAM_IDLE_LIMIT;
        let mut tmp = vec![0u8; READ_LEN];
        loop {
            let mut progress = self.ex.drain_stderr().map_err(|e| self.io_err(e))?;
            let d = match self.ex.write_stdin(buf).map_err(|e| self.io_err(e))? {
                Step::Ready(Some(n)) => return Ok(n),
                Step::Ready(None) => return Err(self.broken_pipe()),
                Step::Again(d) => d,
            };
            // Keep the output moving while input is blocked: a command that answers its input
            // (cat) would otherwise stop reading once its output window fills.
            if self.spill.len() - self.spill_pos < SPILL_CAP && !self.ex.stdout_eof {
                if let Step::Ready(n) = self.ex.read_stdout(&mut tmp).map_err(|e| self.io_err(e))? {
                    self.spill.extend_from_slice(&tmp[..n]);
                    progress |= n > 0;
                }
            }
            self.idle_wait(progress, d, &mut deadline)?;
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SshProcess {
    /// After a pass over the channel: progress pushes the idle deadline back; no progress
    /// waits on the socket, and a stream idle past [`STREAM_IDLE_LIMIT`] is an error.
    fn idle_wait(&mut self, progress: bool, d: Dirs, deadline: &mut Instant) -> io::Result<()> {
        if progress {
            *deadline = Instant::now() + STREAM_IDLE_LIMIT;
        } else if !self
            .ex
            .w
            .wait(d, &[], Some(*deadline))
            .map_err(|e| self.io_err(e))?
        {
            return Err(self.idle_err());
        }
        Ok(())
    }
}

impl Read for SshProcess {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.spill_pos < self.spill.len() {
            let n = buf.len().min(self.spill.len() - self.spill_pos);
            buf[..n].copy_from_slice(&self.spill[self.spill_pos..self.spill_pos + n]);
            self.spill_pos += n;
            if self.spill_pos == self.spill.len() {
                self.spill.clear();
                self.spill_pos = 0;
            }
            return Ok(n);
        }
        let mut deadline = Instant::now() + STREAM_IDLE_LIMIT;
        loop {
            let progress = self.ex.drain_stderr().map_err(|e| self.io_err(e))?;
            let d = match self.ex.read_stdout(buf).map_err(|e| self.io_err(e))? {
                Step::Ready(n) => return Ok(n),
                Step::Again(d) => d,
            };
            self.idle_wait(progress, d, &mut deadline)?;
        }
    }
}

impl RemoteProcess for SshProcess {
    fn stdin(&mut self) -> &mut dyn Write {
        self
    }

    fn stdout(&mut self) -> &mut dyn Read {
        self
    }

    fn close_stdin(&mut self) -> Result<()> {
        self.close_input()
    }

    fn wait(mut self: Box<Self>) -> Result<CmdOutput> {
        self.close_input()?;
        let mut stdout = self.spill.split_off(self.spill_pos);
        self.spill.clear();
        self.spill_pos = 0;
        let mut buf = vec![0u8; READ_LEN];
        let mut deadline = Instant::now() + STREAM_IDLE_LIMIT;
        loop {
            let mut progress = self.ex.drain_stderr()?;
            let mut dirs = Dirs::default();
            match self.ex.read_stdout(&mut buf)? {
                Step::Ready(0) => {}
                Step::Ready(n) => {
                    stdout.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Step::Again(d) => dirs = d,
            }
            if self.ex.stdout_eof && self.ex.stderr_eof {
                break;
            }
            if progress {
                deadline = Instant::now() + STREAM_IDLE_LIMIT;
            } else if !self.ex.w.wait(dirs, &[], Some(deadline))? {
                return Err(anyhow!(self.idle_err()));
            }
        }
        let status = match self.ex.finish(Instant::now() + Duration::from_secs(60)) {
            Ok(s) => s,
            Err(Failure::Timeout) => {
                return Err(anyhow!(
                    "{}: the command's output ended but its channel did not close: {}",
                    self.ex.host(),
                    self.ex.label
                ))
            }
            Err(Failure::Other(e)) => return Err(e),
        };
        Ok(CmdOutput {
            status,
            stdout,
            stderr: self.ex.take_stderr(),
        })
    }
}

impl Drop for SshProcess {
    fn drop(&mut self) {
        if !self.ex.finished && self.ex.w.conn().check_alive().is_ok() {
            self.ex.abandon();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marker_is_found_after_rc_noise_and_removed() {
        let mut e = b"welcome from .bashrc\n@repltool-pgid:4242\nreal error\n".to_vec();
        assert_eq!(take_marker(&mut e), Some(Some(4242)));
        assert_eq!(e, b"welcome from .bashrc\nreal error\n");

        let mut partial = b"@repltool-pg".to_vec();
        assert_eq!(take_marker(&mut partial), None);

        let mut none = vec![b'x'; 9000];
        assert_eq!(take_marker(&mut none), Some(None));
        assert_eq!(none.len(), 9000, "stderr without a marker is left alone");
    }

    #[test]
    fn commands_run_through_sh_or_sudo_with_the_script_quoted() {
        assert_eq!(
            remote_command("echo 'hi' $X", false),
            "echo \"@repltool-pgid:$$\" >&2; exec sh -c 'echo '\\''hi'\\'' $X'"
        );
        assert!(remote_command("id", true).ends_with("; exec sudo -n sh -c id"));
        assert_eq!(label("\n  first line  \nsecond"), "first line");
        assert_eq!(label(&"x".repeat(200)).chars().count(), 80);
    }
}
