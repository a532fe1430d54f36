//! Reproducer files: an `.ops` program with header comments the rig reads back.
//!
//! ```text
//! # finding lazymmu-memory-lazy_mmu_mode_disable      <- notes: free comment lines
//! # implementation: mutant:01-lost-update-window        <- what to run it on
//! # expect: reference clean                             <- what running it must show
//! # expect: mutant:01-lost-update-window lazymmu-memory-lazy_mmu_mode_disable
//! lazymmu-ops v1 cpus=1 ...
//! ```
//!
//! Findings, minimized reproducers, triage output and the regression corpus are all such
//! files; this is the one place that writes and reads their headers.

use crate::program::Program;
use crate::text::{parse, to_text, ParseError};

/// What running a reproducer on an implementation must show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expected {
    /// No finding at all.
    Clean,
    /// A finding with this signature (among others).
    Signature(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    pub implementation: String,
    pub expected: Expected,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReproFile {
    /// Comment lines before the headers, without their `# `.
    pub notes: Vec<String>,
    pub implementation: Option<String>,
    pub expects: Vec<Expect>,
    pub program: Program,
}

impl ReproFile {
    pub fn new(program: Program) -> ReproFile {
        ReproFile {
            notes: vec![],
            implementation: None,
            expects: vec![],
            program,
        }
    }

    pub fn with_implementation(mut self, name: &str) -> ReproFile {
        self.implementation = Some(name.to_string());
        self
    }

    pub fn note(mut self, line: impl Into<String>) -> ReproFile {
        self.notes.push(line.into());
        self
    }

    pub fn expect(mut self, implementation: &str, expected: Expected) -> ReproFile {
        self.expects.push(Expect {
            implementation: implementation.to_string(),
            expected,
        });
        self
    }

    /// Reads a reproducer: the program, and the headers among the comment lines before
    /// it (other comment lines there are notes).
    pub fn parse(text: &str) -> Result<ReproFile, ParseError> {
        let program = parse(text)?;
        let mut r = ReproFile::new(program);
        for line in text
            .lines()
            .map(str::trim)
            .take_while(|l| l.is_empty() || l.starts_with('#'))
        {
            let Some(c) = line.strip_prefix('#') else {
                continue;
            };
            let c = c.trim();
            if let Some(name) = c.strip_prefix("implementation:") {
                r.implementation = Some(name.trim().to_string());
            } else if let Some(e) = c.strip_prefix("expect:") {
                let mut w = e.split_whitespace();
                if let (Some(implementation), Some(what)) = (w.next(), w.next()) {
                    r.expects.push(Expect {
                        implementation: implementation.to_string(),
                        expected: if what == "clean" {
                            Expected::Clean
                        } else {
                            Expected::Signature(what.to_string())
                        },
                    });
                }
            } else {
                r.notes.push(c.to_string());
            }
        }
        Ok(r)
    }

    /// The file's text: notes, the implementation, the expectations, the program.
    pub fn render(&self) -> String {
        let mut s = self.headers();
        s.push_str(&to_text(&self.program));
        s
    }

    /// The comment lines before the program.
    pub fn headers(&self) -> String {
        let mut s = String::new();
        for n in &self.notes {
            if n.is_empty() {
                s.push_str("#\n");
            } else {
                s.push_str(&format!("# {n}\n"));
            }
        }
        if let Some(i) = &self.implementation {
            s.push_str(&format!("# implementation: {i}\n"));
        }
        for e in &self.expects {
            let what = match &e.expected {
                Expected::Clean => "clean",
                Expected::Signature(sig) => sig,
            };
            s.push_str(&format!("# expect: {} {what}\n", e.implementation));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# regression: planted mutant 01\n#\n# implementation: mutant:01-x\n\
        # expect: reference clean\n# expect: mutant:01-x lazymmu-memory-end\n\
        lazymmu-ops v1 cpus=1 facility13=on tlb_lc=on mode=realistic\n\
        mm0 user attach=0 tables=1\ncpu0 lazy_mmu_mode_enable\ncpu0 lazy_mmu_mode_disable\n";

    #[test]
    fn headers_are_read_and_written_back() {
        let r = ReproFile::parse(TEXT).unwrap();
        assert_eq!(r.implementation.as_deref(), Some("mutant:01-x"));
        assert_eq!(
            r.expects,
            vec![
                Expect {
                    implementation: "reference".into(),
                    expected: Expected::Clean
                },
                Expect {
                    implementation: "mutant:01-x".into(),
                    expected: Expected::Signature("lazymmu-memory-end".into())
                }
            ]
        );
        assert_eq!(r.notes, vec!["regression: planted mutant 01", ""]);
        assert_eq!(r.render(), TEXT);
        assert_eq!(ReproFile::parse(&r.render()).unwrap(), r);
    }

    #[test]
    fn a_plain_program_has_no_headers() {
        let plain = TEXT.lines().skip(5).collect::<Vec<_>>().join("\n");
        let r = ReproFile::parse(&plain).unwrap();
        assert_eq!((r.implementation, r.expects.len()), (None, 0));
    }
}
