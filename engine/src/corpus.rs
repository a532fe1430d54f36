//! Corpus management across machines and engines: read programs from corpora of any
//! engine (`.ops` text from `lazymmu fuzz`, raw libFuzzer/AFL inputs), and keep the
//! smallest set that reaches every model feature the whole set reaches.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use lazymmu_harness::gen::decode_input;
use lazymmu_lang::{Mode, Program};

use crate::executor::Executor;
use crate::fuzz::ModeSel;
use crate::out::{load_dir, OutDir};

/// Every regular file under `dirs` (recursively, hidden files and reports skipped),
/// decoded; duplicates by program text dropped. Sorted by path, so results are stable.
pub fn read_inputs(dirs: &[PathBuf]) -> Vec<(PathBuf, Program)> {
    let mut files = vec![];
    for d in dirs {
        collect(d, &mut files);
    }
    files.sort();
    let mut seen = BTreeSet::new();
    let mut out = vec![];
    for f in files {
        let Ok(bytes) = std::fs::read(&f) else {
            continue;
        };
        let p = decode_input(&bytes, Mode::Realistic);
        if p.validate().is_ok() && seen.insert(lazymmu_lang::text::to_text(&p)) {
            out.push((f, p));
        }
    }
    out
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_file() {
        out.push(p.to_path_buf());
        return;
    }
    let Ok(rd) = std::fs::read_dir(p) else { return };
    for e in rd.filter_map(|e| e.ok()) {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.')
            || matches!(
                path.extension().and_then(|x| x.to_str()),
                Some("txt" | "json" | "svg" | "md")
            )
        {
            continue;
        }
        collect(&path, out);
    }
}

/// A subset keeping every feature of the whole set: greedy set cover, taking first the
/// programs that add the most features (shorter ones on ties). Returns the kept indices
/// (in input order) and the number of features covered.
/// The programs run in executors: inputs from other engines may well crash.
pub fn minimize_set(exec: &mut Executor, programs: &[Program]) -> (Vec<usize>, usize) {
    let sets: Vec<BTreeSet<u32>> = exec
        .run_batch(programs, false, None)
        .iter()
        .zip(programs)
        .map(|(o, p)| o.verdict(p).features.into_iter().collect())
        .collect();
    let mut covered: BTreeSet<u32> = BTreeSet::new();
    let mut kept = vec![];
    let total: BTreeSet<u32> = sets.iter().flatten().copied().collect();
    while covered.len() < total.len() {
        let best = (0..programs.len())
            .filter(|i| !kept.contains(i))
            .max_by_key(|&i| {
                (
                    sets[i].difference(&covered).count(),
                    std::cmp::Reverse(programs[i].steps.len()),
                    std::cmp::Reverse(i),
                )
            })
            .expect("uncovered features come from some program");
        covered.extend(sets[best].iter().copied());
        kept.push(best);
    }
    kept.sort_unstable();
    (kept, total.len())
}

/// The seed corpus in `dir` (`.ops` files, sorted by name), as adversarial programs when
/// the campaign is adversarial only.
pub fn seed_programs(dir: &Path, mode: ModeSel) -> Vec<Program> {
    load_dir(dir)
        .into_iter()
        .map(|(_, mut p)| {
            if mode == ModeSel::Adversarial {
                p.config.mode = Mode::Adversarial;
            }
            p
        })
        .collect()
}

/// What `merge` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Merged {
    /// Distinct programs read, features they reach, programs kept.
    pub read: usize,
    pub features: usize,
    pub kept: usize,
    /// Where the kept programs are.
    pub dir: PathBuf,
}

/// `corpus merge`: the union of corpora (any engine's) reduced to a set that keeps every
/// feature, written as `.ops` files into `out/corpus`. With `prune_in_place`, the inputs
/// that add nothing are deleted instead and the rest stay where they are (`corpus
/// prune`). The programs run in executors.
pub fn merge(
    exec: &mut Executor,
    inputs: &[PathBuf],
    out: &Path,
    prune_in_place: bool,
) -> Result<Merged, String> {
    let all = read_inputs(inputs);
    let programs: Vec<Program> = all.iter().map(|(_, p)| p.clone()).collect();
    let (kept, features) = minimize_set(exec, &programs);
    let kept_paths: BTreeSet<&PathBuf> = kept.iter().map(|&i| &all[i].0).collect();
    let dir = if prune_in_place {
        for (path, _) in &all {
            if !kept_paths.contains(path) {
                std::fs::remove_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        out.to_path_buf()
    } else {
        let dir = OutDir::new(out).map_err(|e| format!("{}: {e}", out.display()))?;
        for &i in &kept {
            dir.save_corpus(&programs[i])
                .map_err(|e| format!("{}: {e}", dir.corpus_dir().display()))?;
        }
        dir.corpus_dir()
    };
    Ok(Merged {
        read: all.len(),
        features,
        kept: kept.len(),
        dir,
    })
}
