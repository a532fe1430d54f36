//! Progress of long work on stderr: a status line redrawn in place on a terminal; a line
//! every 10 seconds otherwise (CI logs), so a long run stays readable in both.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    tty: bool,
    last: Option<Instant>,
    every: Duration,
    shown: bool,
    line: String,
}

impl Default for Progress {
    fn default() -> Self {
        Self::new()
    }
}

impl Progress {
    pub fn new() -> Progress {
        let tty = std::io::stderr().is_terminal();
        Progress {
            tty,
            last: None,
            every: if tty {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(10)
            },
            shown: false,
            line: String::new(),
        }
    }

    /// The current status; shown when it is time.
    pub fn update(&mut self, line: &str) {
        self.line = line.to_string();
        if self.last.is_some_and(|t| t.elapsed() < self.every) {
            return;
        }
        self.last = Some(Instant::now());
        self.show();
    }

    fn show(&mut self) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r{}\x1b[K", self.line);
        } else {
            let _ = writeln!(err, "{}", self.line);
        }
        let _ = err.flush();
        self.shown = true;
    }

    /// A message of its own line, above the status line.
    pub fn message(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty && self.shown {
            let _ = write!(err, "\r\x1b[K");
        }
        let _ = writeln!(err, "{text}");
        drop(err);
        if self.tty && self.shown {
            self.show();
        }
    }

    /// The last status, once more, and the end of the line.
    pub fn finish(&mut self) {
        if !self.line.is_empty() {
            self.show();
        }
        if self.tty {
            let _ = writeln!(std::io::stderr());
        }
    }
}
