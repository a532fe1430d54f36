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
//! OUT/hazards/<key>/                 hazards (docs/semantics.md#rule-hazards), one example each
//!     original.ops                       crashes: the program first seen, before minimization
//!     sequence/                          a state leak: what the executor ran, in order
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use lazymmu_harness::check::{Finding, Hazard, Verdict};
use lazymmu_lang::reprofile::ReproFile;
use lazymmu_lang::text::to_text;
use lazymmu_lang::Program;

use crate::executor::{CrashReport, Outcome};

/// Writes `contents` to `path` atomically and durably: a named temporary file in the same
/// directory, its data synced to disk, then renamed into place, so that a crash of the
/// process or of the machine leaves the old file or the new one, never a torn one.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".lazymmu-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    std::io::Write::write_all(&mut tmp, contents)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
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
        for d in ["corpus", "findings", "hazards"] {
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
    /// `body` is the rest of the report: the target's trace, or a crash report.
    pub fn save_finding(
        &self,
        implementation: &str,
        p: &Program,
        f: &Finding,
        v: &Verdict,
        body: Option<&str>,
    ) -> std::io::Result<PathBuf> {
        let dir = self.finding_dir(&f.signature());
        // The step's own call (a crash finding's `op` names its site instead).
        let op = p.steps.get(f.step).map_or(f.op.as_str(), |s| s.op.name());
        let mut r = ReproFile::new(p.clone())
            .note(format!("finding {}", f.signature()))
            .note(format!(
                "first divergence: step {} (cpu{} {op}): {}",
                f.step,
                f.cpu,
                f.detail.lines().next().unwrap_or("")
            ))
            .note(format!("  target: {}", f.target))
            .note(format!("  oracle: {}", f.oracle));
        // A multi-line detail (a crash report) follows as comment lines.
        for l in f.detail.lines().skip(1) {
            r = r.note(format!("  {l}"));
        }
        if let Some(c) = v.contract.first() {
            r = r.note(format!("adversarial: breaks the contract ({c})"));
        }
        let r = r.with_implementation(implementation);
        write_atomic(&dir.join("program.ops"), r.render().as_bytes())?;
        let head = r.headers();
        let mut rep = head.clone();
        if let Some(b) = body {
            rep.push_str("\n== target trace ==\n");
            rep.push_str(b);
        }
        rep.push_str("\n== program ==\n");
        rep.push_str(&to_text(p));
        write_atomic(&dir.join("report.txt"), rep.as_bytes())?;
        write_atomic(
            &dir.join("verdict.json"),
            serde_json::to_string_pretty(v)
                .unwrap_or_default()
                .as_bytes(),
        )?;
        Ok(dir)
    }

    /// Keeps the program a finding was first seen on, beside its minimized reproducer.
    pub fn save_original(&self, signature: &str, p: &Program) -> std::io::Result<()> {
        write_atomic(
            &self.finding_dir(signature).join("original.ops"),
            format!(
                "# the program first seen, before minimization\n{}",
                to_text(p)
            )
            .as_bytes(),
        )
    }

    /// A crash that did not reproduce alone in a fresh executor: state leaked from one
    /// program to the next, a defect of the rig's reset, never the implementation's bug.
    /// Saves the crashing program and every program its executor ran before it.
    pub fn save_state_leak(
        &self,
        signature: &str,
        implementation: &str,
        p: &Program,
        crash: &CrashReport,
        alone: &Outcome,
        history: &[Program],
    ) -> std::io::Result<PathBuf> {
        let dir = self.finding_dir(signature);
        let alone_text = match alone {
            Outcome::Ran(_) => "ran to the end without a crash".to_string(),
            Outcome::Died(r, _) => format!("died differently: {}", r.headline()),
        };
        let mut rep = format!(
            "# {signature}: a rig defect, not a finding in {implementation}\n\
             # The program below crashed its executor after {} other program(s), but alone in a\n\
             # fresh executor it {alone_text}. State leaked between programs: the rig's reset\n\
             # between programs is incomplete. sequence/ holds every program that executor ran,\n\
             # in order (the crashing one last): replay them in one process to reproduce.\n",
            history.len()
        );
        for l in crash.render().lines() {
            let _ = writeln!(rep, "#   {l}");
        }
        write_atomic(&dir.join("report.txt"), rep.as_bytes())?;
        write_atomic(
            &dir.join("program.ops"),
            format!("{rep}{}", to_text(p)).as_bytes(),
        )?;
        for (i, q) in history.iter().chain(std::iter::once(p)).enumerate() {
            write_atomic(
                &dir.join("sequence").join(format!("{i:05}.ops")),
                to_text(q).as_bytes(),
            )?;
        }
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
            match lazymmu_lang::text::parse(&src) {
                Ok(p) => Some((path, p)),
                Err(e) => {
                    eprintln!("lazymmu: skipping {}:{e}", path.display());
                    None
                }
            }
        })
        .collect()
}
