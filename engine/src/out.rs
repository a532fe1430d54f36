//! The output directory of a fuzzing run. Everything is written atomically (a temporary
//! file renamed into place), so a run killed at any moment leaves only whole files, and a
//! new run resumes from the corpus it finds there.
//!
//! ```text
//! OUT/corpus/<hash>.ops              programs that reached new model features
//! OUT/findings/<signature>/          first program of each signature:
//!     program.ops                        the program (with a header comment)
//!     report.txt                         what diverged, and the target's trace
//!     verdict.json                       machine-readable verdict
//! OUT/hazards/<key>/                 visibility hazards (rule 9), one example each
//! OUT/.inflight/<worker>             the program a worker is running (crash recovery)
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lazymmu_harness::check::{Finding, Hazard, Verdict};
use lazymmu_harness::exec::Trace;
use lazymmu_harness::text::to_text;
use lazymmu_harness::{report, Program};

/// Writes `contents` to `path` atomically.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// Stable short hash of a program's text (FNV-1a), for corpus file names.
pub fn program_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

pub struct OutDir {
    pub root: PathBuf,
}

impl OutDir {
    pub fn new(root: &Path) -> std::io::Result<OutDir> {
        for d in ["corpus", "findings", "hazards", ".inflight"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        Ok(OutDir {
            root: root.to_path_buf(),
        })
    }

    pub fn corpus_dir(&self) -> PathBuf {
        self.root.join("corpus")
    }

    pub fn save_corpus(&self, p: &Program) -> std::io::Result<PathBuf> {
        let text = to_text(p);
        let path = self
            .corpus_dir()
            .join(format!("{}.ops", program_hash(&text)));
        if !path.exists() {
            write_atomic(&path, text.as_bytes())?;
        }
        Ok(path)
    }

    /// Programs of the corpus directory, sorted by file name (so runs are reproducible).
    pub fn load_corpus(&self) -> Vec<(PathBuf, Program)> {
        load_dir(&self.corpus_dir())
    }

    pub fn finding_dir(&self, signature: &str) -> PathBuf {
        self.root.join("findings").join(signature)
    }

    /// Saves the first program of a signature; later ones only bump nothing on disk.
    pub fn save_finding(
        &self,
        implementation: &str,
        p: &Program,
        f: &Finding,
        v: &Verdict,
        target: Option<&Trace>,
    ) -> std::io::Result<PathBuf> {
        let dir = self.finding_dir(&f.signature());
        let mut head = format!(
            "# finding {}\n# implementation: {implementation}\n# first divergence: step {} (cpu{} {}): {}\n#   target: {}\n#   oracle: {}\n",
            f.signature(),
            f.step,
            f.cpu,
            f.op,
            f.detail,
            f.target,
            f.oracle
        );
        if !v.contract.is_empty() {
            let _ = writeln!(
                head,
                "# adversarial: breaks the contract ({})",
                v.contract[0]
            );
        }
        write_atomic(
            &dir.join("program.ops"),
            format!("{head}{}", to_text(p)).as_bytes(),
        )?;
        let mut rep = head.clone();
        if let Some(t) = target {
            rep.push_str("\n== target trace ==\n");
            rep.push_str(&report::trace_text(p, t));
        }
        write_atomic(&dir.join("report.txt"), rep.as_bytes())?;
        write_atomic(
            &dir.join("verdict.json"),
            serde_json::to_string_pretty(v)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        Ok(dir)
    }

    pub fn save_hazard(&self, key: &str, p: &Program, h: &Hazard) -> std::io::Result<()> {
        let dir = self.root.join("hazards").join(key);
        let head = format!(
            "# visibility hazard at step {} (cpu{} {}): target {} / oracle {}\n# {}\n# harmful: {}\n",
            h.step, h.cpu, h.op, h.target, h.oracle, h.context, h.harmful
        );
        write_atomic(
            &dir.join("program.ops"),
            format!("{head}{}", to_text(p)).as_bytes(),
        )
    }

    pub fn inflight_path(&self, worker: usize) -> PathBuf {
        self.root.join(".inflight").join(format!("worker-{worker}"))
    }
}

/// Every `.ops` program in a directory, sorted by name; unreadable ones are skipped with a
/// warning naming the file and line.
pub fn load_dir(dir: &Path) -> Vec<(PathBuf, Program)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "ops"))
                .collect()
        })
        .unwrap_or_default();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|path| {
            let src = std::fs::read_to_string(&path).ok()?;
            match lazymmu_harness::text::parse(&src) {
                Ok(p) => Some((path, p)),
                Err(e) => {
                    eprintln!("lazymmu: skipping {}:{e}", path.display());
                    None
                }
            }
        })
        .collect()
}

/// A small file mapped into memory that holds the program a worker is running, so that a
/// crash (even SIGKILL) never loses it: the supervisor reads it after the worker died.
pub struct Inflight {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by one worker thread.
unsafe impl Send for Inflight {}

const INFLIGHT_SIZE: usize = 1 << 18;

impl Inflight {
    pub fn create(path: &Path) -> std::io::Result<Inflight> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        f.set_len(INFLIGHT_SIZE as u64)?;
        use std::os::fd::AsRawFd;
        // SAFETY: mapping a file we just sized; the mapping outlives the fd legitimately.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                INFLIGHT_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Inflight {
            ptr: ptr as *mut u8,
            len: INFLIGHT_SIZE,
        })
    }

    /// Records the program about to run (length-prefixed text; cut if too long).
    pub fn set(&mut self, text: &str) {
        let n = text.len().min(self.len - 8);
        // SAFETY: within the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), self.ptr.add(8), n);
            (self.ptr as *mut u64).write_volatile(n as u64);
        }
    }

    pub fn clear(&mut self) {
        // SAFETY: within the mapping.
        unsafe { (self.ptr as *mut u64).write_volatile(0) };
    }

    /// What a dead worker was running, if anything.
    pub fn read(path: &Path) -> Option<String> {
        let bytes = std::fs::read(path).ok()?;
        let n = u64::from_ne_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
        if n == 0 {
            return None;
        }
        Some(String::from_utf8_lossy(bytes.get(8..8 + n)?).into_owned())
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}
