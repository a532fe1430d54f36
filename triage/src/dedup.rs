//! Signatures and grouping: `triage` reads a directory of findings or crashes from any
//! engine (`.ops` files of `lazymmu fuzz`, raw libFuzzer/AFL inputs), replays each, groups
//! them by the signature of their first finding (class and operation), minimizes one
//! representative per signature, and gathers the signatures of one implementation, class
//! and generation into one bug: a bug shows at several operations (a lost update is seen
//! at the disable, at a pause, at the end), each listed with its shape and reproducer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lazymmu_engine::executor::{ExecOptions, Executor};
use lazymmu_harness::check::{Class, Finding};
use lazymmu_harness::gen::from_bytes;
use lazymmu_harness::Differ;
use lazymmu_lang::program::MmKind;
use lazymmu_lang::reprofile::{Expected, ReproFile};
use lazymmu_lang::{Mode, Program};
use lazymmu_target::Source;

use crate::minimize::{first_signature, keep_key, minimize};

/// One input file: its program and, when its header names one, the implementation.
pub struct Input {
    pub path: PathBuf,
    pub program: Program,
    pub implementation: Option<String>,
}

/// Reads an `.ops` program (with an optional `# implementation: NAME` header comment) or
/// raw fuzzer bytes (decoded as the fuzz targets decode them).
pub fn load_input(path: &Path) -> Result<Input, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    match lazymmu_harness::gen::as_ops_text(&bytes) {
        Some(t) => {
            let r = ReproFile::parse(t).map_err(|e| format!("{}:{e}", path.display()))?;
            Ok(Input {
                path: path.to_path_buf(),
                program: r.program,
                implementation: r.implementation,
            })
        }
        None => Ok(Input {
            path: path.to_path_buf(),
            program: from_bytes(&bytes, Mode::Realistic),
            implementation: None,
        }),
    }
}

/// A small shape key: how many CPUs the reproducer needs and which kind of mm it is about.
pub fn shape(p: &Program, f: &Finding) -> String {
    let mut cpus: Vec<u8> = p.steps.iter().map(|s| s.cpu).collect();
    cpus.sort_unstable();
    cpus.dedup();
    let mm = f.pte.map_or("-", |r| {
        match p.config.mms.get(r.mm as usize).map(|m| m.kind) {
            Some(MmKind::Init) => "init_mm",
            _ => "user",
        }
    });
    format!("{}cpu-{mm}", cpus.len().max(1))
}

/// One way a bug shows: a signature (class and operation) and shape, with its
/// minimized reproducer.
pub struct Manifestation {
    pub signature: String,
    pub shape: String,
    /// Every input that showed it.
    pub members: Vec<PathBuf>,
    pub minimized: Program,
    /// Steps of the representative before minimization.
    pub original_steps: usize,
}

/// One distinct bug: an implementation's misbehaviour of one class (a rule of
/// docs/semantics.md#contract) in one generation. The operations and shapes it shows with are listed.
pub struct Bug {
    pub implementation: String,
    pub generation: String,
    /// `return`, `memory`, `marker-leak`, ... (with `hardening-` for contract breakers).
    pub class: String,
    pub manifestations: Vec<Manifestation>,
}

impl Bug {
    pub fn key(&self) -> String {
        format!(
            "{} {} [{}]",
            self.implementation, self.class, self.generation
        )
    }
    pub fn count(&self) -> usize {
        self.manifestations.iter().map(|m| m.members.len()).sum()
    }
    /// The smallest reproducer.
    pub fn representative(&self) -> &Manifestation {
        self.manifestations
            .iter()
            .min_by_key(|m| (m.minimized.steps.len(), m.signature.clone()))
            .expect("a bug has a manifestation")
    }
}

/// The class part of a signature: `lazymmu-[hardening-]<class>-<op>`. A crash or hang
/// is one bug per site, whether reached by realistic or adversarial programs: both
/// reproducers are listed under it.
fn class_of(f: &Finding) -> String {
    if matches!(f.class, Class::Crash | Class::Hang) {
        return format!("{}-{}", f.class.name(), f.op);
    }
    let h = if f.hardening { "hardening-" } else { "" };
    format!("{h}{}", f.class.name())
}

#[derive(Default)]
pub struct Summary {
    pub bugs: Vec<Bug>,
    /// Inputs on which no finding appears (fixed, or flaky).
    pub not_reproduced: Vec<PathBuf>,
    pub unreadable: Vec<(PathBuf, String)>,
}
/// Files worth reading under `dir`: everything but reports, verdicts, pictures, corpora
/// and the rig's own bookkeeping.
fn inputs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for p in entries {
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if p.is_dir() {
            if !matches!(name.as_str(), "corpus" | "hazards" | ".inflight" | "triage") {
                inputs(&p, out);
            }
        } else if !name.starts_with('.')
            && !matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("txt" | "json" | "svg" | "c" | "md" | "options" | "dict")
            )
        {
            out.push(p);
        }
    }
}

/// Groups and minimizes everything under `dir`. Inputs without an implementation header
/// run on `default`.
pub fn triage(dir: &Path, default: &Source) -> Result<Summary, String> {
    let mut files = vec![];
    inputs(dir, &mut files);
    // Every implementation runs in executors: a crash or hang is a finding to group,
    // not the end of triage.
    let mut differs: BTreeMap<String, Executor> = BTreeMap::new();
    let mut summary = Summary::default();
    // (implementation, first signature) -> inputs, in path order.
    let mut raw: BTreeMap<(String, String), Vec<Input>> = BTreeMap::new();
    let default_name = lazymmu_target::load(default)
        .map_err(|e| e.to_string())?
        .library()
        .name
        .clone();
    for f in files {
        let input = match load_input(&f) {
            Ok(i) => i,
            Err(e) => {
                summary.unreadable.push((f, e));
                continue;
            }
        };
        let name = input
            .implementation
            .clone()
            .unwrap_or_else(|| default_name.clone());
        if !differs.contains_key(&name) {
            let source = if name == default_name {
                default.clone()
            } else {
                Source::from_name(&name)?
            };
            let d = Differ::new(lazymmu_target::load(&source).map_err(|e| e.to_string())?);
            differs.insert(
                name.clone(),
                Executor::new(d, ExecOptions::default()).map_err(|e| e.to_string())?,
            );
        }
        let d = differs.get_mut(&name).expect("inserted");
        match first_signature(d, &input.program) {
            Some(sig) => raw.entry((name, sig)).or_default().push(input),
            None => summary.not_reproduced.push(f),
        }
    }
    let mut bugs: BTreeMap<(String, String, String), Bug> = BTreeMap::new();
    for ((name, sig), mut group) in raw {
        group.sort_by_key(|i| (i.program.steps.len(), i.path.clone()));
        let d = differs.get_mut(&name).expect("loaded");
        let rep = &group[0];
        let m = minimize(d, &rep.program, &sig)?;
        // A crash keeps its site; its signature may have lost `hardening-` on the way.
        let first = d
            .verdict(&m.program)
            .findings
            .into_iter()
            .find(|f| keep_key(&f.signature()) == keep_key(&sig))
            .expect("minimized keeps it");
        let sig = first.signature();
        let generation = d.differ().kernel.library().generation.name().to_string();
        let class = class_of(&first);
        let man = Manifestation {
            signature: sig,
            shape: shape(&m.program, &first),
            members: group.iter().map(|i| i.path.clone()).collect(),
            original_steps: rep.program.steps.len(),
            minimized: m.program,
        };
        bugs.entry((name.clone(), class.clone(), generation.clone()))
            .or_insert_with(|| Bug {
                implementation: name,
                generation,
                class,
                manifestations: vec![],
            })
            .manifestations
            .push(man);
    }
    summary.bugs = bugs.into_values().collect();
    Ok(summary)
}

/// Writes `dir/triage/summary.txt` and one minimized reproducer per bug.
pub fn write_summary(dir: &Path, s: &Summary) -> Result<String, String> {
    let out = dir.join("triage");
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut text = format!("{} distinct bug(s)\n", s.bugs.len());
    for (n, b) in s.bugs.iter().enumerate() {
        text.push_str(&format!("{:>3}. {}  x{}\n", n + 1, b.key(), b.count()));
        for (k, m) in b.manifestations.iter().enumerate() {
            let file = out.join(format!(
                "bug-{:02}-{}.ops",
                n + 1,
                if k == 0 {
                    m.signature.clone()
                } else {
                    format!("{}-{k}", m.signature)
                }
            ));
            let program = ReproFile::new(m.minimized.clone())
                .note(format!("{} ({}, {})", b.key(), m.signature, m.shape))
                .note(format!(
                    "minimized from {} to {} steps; seen in {} input(s)",
                    m.original_steps,
                    m.minimized.steps.len(),
                    m.members.len()
                ))
                .with_implementation(&b.implementation)
                .expect(&b.implementation, Expected::Signature(m.signature.clone()))
                .render();
            lazymmu_engine::out::write_atomic(&file, program.as_bytes())
                .map_err(|e| e.to_string())?;
            text.push_str(&format!(
                "       {} {}  x{}  {} -> {} steps  {}\n",
                m.signature,
                m.shape,
                m.members.len(),
                m.original_steps,
                m.minimized.steps.len(),
                file.display()
            ));
        }
    }
    if !s.not_reproduced.is_empty() {
        text.push_str(&format!(
            "{} input(s) showed no finding\n",
            s.not_reproduced.len()
        ));
    }
    for (p, e) in &s.unreadable {
        text.push_str(&format!("unreadable: {}: {e}\n", p.display()));
    }
    lazymmu_engine::out::write_atomic(&out.join("summary.txt"), text.as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(text)
}
