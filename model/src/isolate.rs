//! Running a program in a child process, so that a crash in the C code (a signal, an
//! abort, a sanitizer report) is caught and reported with the program instead of taking
//! the rig down.

use std::io::Read;
use std::os::fd::FromRawFd;

use serde::{de::DeserializeOwned, Serialize};

/// How a child died.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Crash {
    /// The signal that killed it (SIGSEGV = 11, SIGABRT = 6, ...).
    pub signal: Option<i32>,
    /// Its exit status, when it exited without a result.
    pub exit_code: Option<i32>,
    /// The last lines it wrote to stderr (a sanitizer report, an assertion).
    pub stderr: String,
}

impl std::fmt::Display for Crash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.signal, self.exit_code) {
            (Some(s), _) => write!(f, "killed by signal {s}")?,
            (None, Some(c)) => write!(f, "exited with status {c} and no result")?,
            _ => write!(f, "died without a result")?,
        }
        if !self.stderr.is_empty() {
            write!(f, "\n{}", self.stderr)?;
        }
        Ok(())
    }
}

fn pipe() -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid two-element array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe() failed");
    (fds[0], fds[1])
}

/// Runs `f` in a forked child and returns its result, or how the child died. The child
/// inherits the parent's memory (loaded libraries included) and never returns.
pub fn run_in_child<T: Serialize + DeserializeOwned>(f: impl FnOnce() -> T) -> Result<T, Crash> {
    let (res_r, res_w) = pipe();
    let (err_r, err_w) = pipe();
    // SAFETY: the child only runs `f`, writes its result and exits with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork() failed");
    if pid == 0 {
        // SAFETY: plain fd manipulation in the child.
        unsafe {
            libc::close(res_r);
            libc::close(err_r);
            libc::dup2(err_w, 2);
        }
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let code = match out.ok().and_then(|v| serde_json::to_vec(&v).ok()) {
            Some(bytes) => {
                // SAFETY: res_w is the child's write end; File takes ownership of it.
                let mut w = unsafe { std::fs::File::from_raw_fd(res_w) };
                if std::io::Write::write_all(&mut w, &bytes).is_ok() {
                    0
                } else {
                    3
                }
            }
            None => 2,
        };
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: the parent's ends; File takes ownership.
    unsafe {
        libc::close(res_w);
        libc::close(err_w);
    }
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        // SAFETY: err_r is the parent's read end, owned by this File.
        let _ = unsafe { std::fs::File::from_raw_fd(err_r) }.read_to_string(&mut s);
        s
    });
    let mut bytes = vec![];
    // SAFETY: res_r is the parent's read end, owned by this File.
    let _ = unsafe { std::fs::File::from_raw_fd(res_r) }.read_to_end(&mut bytes);
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let stderr = err_reader.join().unwrap_or_default();
    let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
    let stderr = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        if let Ok(v) = serde_json::from_slice(&bytes) {
            return Ok(v);
        }
    }
    Err(Crash {
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        exit_code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_childs_result() {
        assert_eq!(run_in_child(|| vec![1u64, 2, 3]), Ok(vec![1, 2, 3]));
    }

    #[test]
    fn reports_a_signal_with_the_childs_stderr() {
        let r: Result<u32, Crash> = run_in_child(|| {
            // Straight to fd 2: the test harness captures eprintln!.
            let msg = b"about to crash\n";
            // SAFETY: writing a buffer to stderr, then a real NULL store.
            unsafe {
                libc::write(2, msg.as_ptr().cast(), msg.len());
                std::ptr::null_mut::<u32>().write_volatile(1);
            }
            7
        });
        let c = r.unwrap_err();
        assert_eq!(c.signal, Some(libc::SIGSEGV));
        assert!(c.stderr.contains("about to crash"), "{c}");
    }

    #[test]
    fn reports_an_abort_and_a_panic() {
        let r: Result<u32, Crash> = run_in_child(|| std::process::abort());
        assert_eq!(r.unwrap_err().signal, Some(libc::SIGABRT));
        let r: Result<u32, Crash> = run_in_child(|| panic!("boom"));
        let c = r.unwrap_err();
        assert_eq!((c.signal, c.exit_code), (None, Some(2)));
    }
}
