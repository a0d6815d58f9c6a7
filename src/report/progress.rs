//! Progress and the journal of changes, on stderr, for every command that changes servers (init,
//! promote): one spinner per host on a terminal (indicatif), plain `[  1.23s] host: message`
//! lines otherwise, so logs and CI stay readable. Every change is journaled, so a failure can
//! list what was already changed.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    start: Instant,
    quiet: bool,
    journal: Mutex<Vec<String>>,
}

impl Progress {
    /// Spinners when stderr is a terminal, plain lines otherwise.
    pub fn new(quiet: bool) -> Progress {
        let tty = std::io::stderr().is_terminal() && std::env::var_os("CI").is_none();
        Progress {
            multi: if tty && !quiet {
                Some(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
            } else {
                None
            },
            bars: Mutex::new(HashMap::new()),
            start: Instant::now(),
            quiet,
            journal: Mutex::new(Vec::new()),
        }
    }

    /// A change made to a server (journaled, and shown as a step of `host`).
    pub fn note(&self, host: &str, change: &str) {
        self.record(&format!("{host}: {change}"));
    }

    /// A change, already worded `host: what` (journaled and shown).
    pub fn record(&self, line: &str) {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.to_string());
        if self.quiet {
            return;
        }
        let text = format!("[{:>6.2}s] {line}", self.start.elapsed().as_secs_f64());
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => super::say(text),
        }
    }

    /// Every change journaled so far, in order, as `host: change`.
    pub fn changes(&self) -> Vec<String> {
        self.journal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Seconds since the command started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Say what a host is doing now.
    pub fn step(&self, host: &str, msg: &str) {
        if self.quiet {
            return;
        }
        // Steps quote what servers report (binary log names, errors).
        let msg = &*super::clean(msg);
        match &self.multi {
            Some(m) => {
                let mut bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
                let bar = bars.entry(host.to_string()).or_insert_with(|| {
                    let b = m.add(ProgressBar::new_spinner());
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:>10} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    b.set_prefix(host.to_string());
                    b.enable_steady_tick(Duration::from_millis(100));
                    b
                });
                bar.set_message(msg.to_string());
            }
            None => super::say(format!(
                "[{:>6.2}s] {host}: {msg}",
                self.start.elapsed().as_secs_f64()
            )),
        }
    }

    /// A byte counter for a stream (seeding); plain mode prints the total at the end.
    pub fn bytes(&self, host: &str, what: &str, total_hint: Option<u64>) -> ByteProgress {
        let bar = match &self.multi {
            Some(m) => {
                let b = m.add(match total_hint {
                    Some(t) if t > 0 => ProgressBar::new(t),
                    _ => ProgressBar::new_spinner(),
                });
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {prefix:>10} {msg} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left) {wide_bar}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_prefix(host.to_string());
                b.set_message(what.to_string());
                Some(b)
            }
            None => None,
        };
        ByteProgress {
            bar,
            done: 0,
            started: Instant::now(),
        }
    }

    /// A row counter (verify); plain mode prints nothing until the end.
    pub fn rows(&self, host: &str, what: &str, total_hint: Option<u64>) -> ByteProgress {
        let bar = match &self.multi {
            Some(m) => {
                let b = m.add(match total_hint {
                    Some(t) if t > 0 => ProgressBar::new(t),
                    _ => ProgressBar::new_spinner(),
                });
                b.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {prefix:>10} {msg} {human_pos}/~{human_len} rows ({per_sec}, {eta} left) {wide_bar}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                b.set_prefix(host.to_string());
                b.set_message(what.to_string());
                Some(b)
            }
            None => None,
        };
        ByteProgress {
            bar,
            done: 0,
            started: Instant::now(),
        }
    }

    /// Finish every spinner (leaves their last message on screen).
    pub fn finish(&self) {
        let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        for b in bars.values() {
            b.finish();
        }
    }
}

pub struct ByteProgress {
    bar: Option<ProgressBar>,
    pub done: u64,
    started: Instant,
}

impl ByteProgress {
    pub fn add(&mut self, n: u64) {
        self.done += n;
        if let Some(b) = &self.bar {
            // An estimate that turns out short grows with the count.
            if b.length().is_some_and(|l| l < self.done) {
                b.set_length(self.done);
            }
            b.set_position(self.done);
        }
    }
    pub fn finish(&self) -> Duration {
        if let Some(b) = &self.bar {
            b.finish();
        }
        self.started.elapsed()
    }
}
