//! The mutants runner (`lazymmu mutants`): fuzzes every planted mutant against the
//! reference, each in a worker process with a time budget, until a program shows a
//! finding the reference does not (killed) or the budget is spent (survived).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use lazymmu_lang::reprofile::ReproFile;
use lazymmu_target::Source;

use crate::campaign::{forward_lines, WorkerArgs};
use crate::fuzz::{ModeSel, Stats};

/// One mutant's result.
#[derive(Clone, Debug)]
pub struct MutantRow {
    pub name: String,
    pub class: String,
    pub hardening: bool,
    /// (seconds, programs, signature) when killed.
    pub killed: Option<(f64, u64, String)>,
}

/// A mutant's worker: table row, process, its output reader, its output.
type Running = (
    usize,
    Child,
    JoinHandle<()>,
    mpsc::Receiver<(usize, String)>,
);

/// What to run.
pub struct Plan {
    /// Mutant patches, in table order.
    pub mutants: Vec<PathBuf>,
    pub budget: Duration,
    pub jobs: usize,
    pub seed: u64,
    pub seeds: PathBuf,
    pub out: PathBuf,
    pub timeout: Duration,
    /// The rig's executable, started as the workers.
    pub worker_exe: PathBuf,
}

/// Fuzzes every mutant of the plan; rows in the plan's order. Each killed mutant's
/// program is saved as `OUT/<mutant>/kill.ops`.
pub fn run(plan: &Plan) -> Result<Vec<MutantRow>, String> {
    // Compile all first (and the reference), so the budgets are spent fuzzing.
    let mut rows = vec![];
    for p in &plan.mutants {
        let spec = Source::Mutant(p.clone())
            .resolve()
            .map_err(|e| e.to_string())?;
        // As the workers load it: with C coverage.
        lazymmu_target::loader::build_with(&spec, true).map_err(|e| e.to_string())?;
        rows.push(MutantRow {
            name: lazymmu_target::sources::mutant_name(p),
            class: spec.bug_class.unwrap_or_default(),
            hardening: spec.hardening,
            killed: None,
        });
    }
    lazymmu_target::loader::build(&Source::Reference.resolve().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let mut next = 0;
    let mut running: Vec<Running> = vec![];
    while next < plan.mutants.len() || !running.is_empty() {
        while running.len() < plan.jobs.max(1) && next < plan.mutants.len() {
            let i = next;
            next += 1;
            let source = Source::Mutant(plan.mutants[i].clone());
            let out = plan.out.join(source.dir_name());
            let _ = std::fs::remove_dir_all(&out);
            let args = WorkerArgs {
                source,
                worker: 0,
                seed: plan.seed,
                mode: ModeSel::Mixed,
                out,
                seeds: plan.seeds.clone(),
                runs: None,
                time: Some(plan.budget),
                kill: true,
                timeout: plan.timeout,
                c_coverage: true,
            };
            let mut child = args.spawn(&plan.worker_exe)?;
            let (tx, rx) = mpsc::channel();
            let reader = forward_lines(&mut child, i, tx);
            running.push((i, child, reader, rx));
        }
        std::thread::sleep(Duration::from_millis(20));
        let mut k = 0;
        while k < running.len() {
            let Some(status) = running[k].1.try_wait().ok().flatten() else {
                k += 1;
                continue;
            };
            let (i, _, reader, rx) = running.remove(k);
            // Its last line is sent once the reader is done.
            let _ = reader.join();
            let last: Option<Stats> = rx
                .try_iter()
                .filter_map(|(_, l)| serde_json::from_str(&l).ok())
                .last();
            let row = &mut rows[i];
            if !status.success() {
                // Crashes are caught in executors: a dead worker is the rig's failure.
                eprintln!(
                    "lazymmu: rig bug: the worker for {} died ({status})",
                    row.name
                );
            } else if let Some(k) = last.and_then(|s| s.killed) {
                save_kill(&plan.out, &plan.mutants[i], &k.signature, &k.program);
                row.killed = Some((k.elapsed_ms as f64 / 1000.0, k.runs, k.signature));
            }
            eprintln!(
                "lazymmu: {}: {}",
                row.name,
                match &row.killed {
                    Some((t, r, sig)) => format!("killed in {t:.2}s, {r} programs: {sig}"),
                    None => "survived".into(),
                }
            );
        }
    }
    Ok(rows)
}

/// The program that told the mutant from the reference, as a reproducer file.
fn save_kill(out: &Path, mutant: &Path, signature: &str, program: &str) {
    let source = Source::Mutant(mutant.to_path_buf());
    let Ok(r) = ReproFile::parse(program) else {
        return;
    };
    let r = ReproFile {
        notes: vec![format!(
            "killed {}: {signature}",
            lazymmu_target::sources::mutant_name(mutant)
        )],
        ..r
    }
    .with_implementation(&source.name());
    let _ = crate::out::write_atomic(
        &out.join(source.dir_name()).join("kill.ops"),
        r.render().as_bytes(),
    );
}

/// The table `lazymmu mutants` prints, with the median time to kill.
pub fn table(rows: &[MutantRow], budget: Duration) -> String {
    let mut s = format!(
        "{:<32} {:<34} {:<7} {:>8} {:>9}  first finding\n",
        "mutant", "bug class", "killed", "time s", "programs"
    );
    let mut times = vec![];
    for r in rows {
        match &r.killed {
            Some((t, n, sig)) => {
                times.push(*t);
                s.push_str(&format!(
                    "{:<32} {:<34} {:<7} {:>8.2} {:>9}  {sig}\n",
                    r.name, r.class, "yes", t, n
                ));
            }
            None => s.push_str(&format!(
                "{:<32} {:<34} {:<7} {:>8} {:>9}  -\n",
                r.name, r.class, "NO", "-", "-"
            )),
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    if let Some(m) = times.get(times.len() / 2) {
        s.push_str(&format!(
            "killed {}/{}; median time to kill {m:.2}s (budget {}s each)\n",
            times.len(),
            rows.len(),
            budget.as_secs_f64()
        ));
    }
    s
}
