//! `lazymmu`: the command line of the rig.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lazymmu_engine::campaign::{self, executor};
use lazymmu_engine::executor::{ExecOptions, Outcome};
use lazymmu_engine::fuzz::{Minimizer, ModeSel};
use lazymmu_engine::rng::Rng;
use lazymmu_harness::{contract, gen};
use lazymmu_lang::reprofile::{Expected, ReproFile};
use lazymmu_lang::{text, Program};
use lazymmu_model::{report, Trace};
use lazymmu_target::Source;

#[derive(Parser)]
#[command(
    name = "lazymmu",
    version,
    about = "Differential testing and fuzzing rig for s390 lazy-MMU PTE batching",
    long_about = "Differential testing and fuzzing rig for the s390 \"batch PTE updates in lazy MMU \
mode\" series. Programs of lazy_mmu_mode_* calls, PTE updates, TLB accesses and flushes, \
issued by several simulated CPUs, are written in the .ops text format (see \
corpus/seeds/*.ops) and run through the eager-IPTE oracle."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Build the implementation and the shim with a sanitizer. `address`: AddressSanitizer
    /// (gcc's libasan, preloaded into the rig's processes), so out-of-bounds accesses to
    /// the implementation's own arrays are reported with ASan's report in the crash
    /// finding. Page tables and crashes are guarded either way.
    #[arg(long, global = true, value_enum, value_name = "KIND")]
    sanitize: Option<Sanitizer>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Sanitizer {
    Address,
}

/// Runs this command again with the ASan runtime preloaded (a dlopen'd object built with
/// ASan needs it first in the process), unless that is already so.
fn with_asan_runtime() -> Result<(), String> {
    if std::env::var("LAZYMMU_SANITIZE").as_deref() == Ok("address") {
        return Ok(());
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = std::process::Command::new(&cc)
        .arg("-print-file-name=libasan.so")
        .output()
        .map_err(|e| format!("--sanitize address: cannot run {cc}: {e}"))?;
    let lib = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !Path::new(&lib).is_absolute() || !Path::new(&lib).exists() {
        return Err(format!(
            "--sanitize address: {cc} has no ASan runtime (libasan.so); install it (Debian: libasan8)"
        ));
    }
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("LD_PRELOAD", &lib)
        .env("LAZYMMU_SANITIZE", "address")
        // Die of SIGABRT after the report (the executor's handler records the stack);
        // faults of guarded pages stay the rig's to explain.
        .env(
            "ASAN_OPTIONS",
            "abort_on_error=1:detect_leaks=0:handle_segv=0:handle_sigbus=0:handle_abort=0",
        )
        .exec();
    Err(format!("--sanitize address: cannot re-run the rig: {err}"))
}

fn seeds_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/seeds"))
}

/// Which implementation(s) to run.
#[derive(Args, Clone, Default)]
struct ImplArgs {
    /// A Linux tree with the series applied: its arch/s390/mm/lazy_mmu.c (v3+) or
    /// ipte_batch.c (RFC, v2), plus arch/s390/include/asm/lazy_mmu.h when present, is
    /// compiled against the rig's shim at run time (cached by content hash in
    /// $LAZYMMU_CACHE or ~/.cache/lazymmu). May be repeated where several are checked.
    #[arg(long, value_name = "PATH")]
    kernel: Vec<PathBuf>,
    /// One implementation file, of any generation. May be repeated.
    #[arg(long = "impl", value_name = "FILE")]
    impl_file: Vec<PathBuf>,
    /// The built-in reference implementation.
    #[arg(long)]
    reference: bool,
    /// A mutant of the reference: a path, or a name from target/mutants (e.g. 07 or
    /// off-by-one-range-end). May be repeated.
    #[arg(long, value_name = "NAME")]
    mutant: Vec<String>,
}

impl ImplArgs {
    fn sources(&self) -> Result<Vec<Source>, String> {
        let mut v: Vec<Source> = self
            .kernel
            .iter()
            .map(|k| Source::KernelTree(k.clone()))
            .collect();
        v.extend(self.impl_file.iter().map(|f| Source::File(f.clone())));
        if self.reference {
            v.push(Source::Reference);
        }
        for m in &self.mutant {
            v.push(Source::Mutant(find_mutant(m)?));
        }
        Ok(v)
    }

    /// The one implementation given, or the one a reproducer's header names, or the
    /// reference.
    fn source_or(&self, header: Option<&String>) -> Result<Source, String> {
        match (self.source()?, header) {
            (Some(s), _) => Ok(s),
            (None, Some(name)) => Source::from_name(name),
            (None, None) => Ok(Source::Reference),
        }
    }

    /// At most one implementation (None: the oracle).
    fn source(&self) -> Result<Option<Source>, String> {
        let mut v = self.sources()?;
        match v.len() {
            0 | 1 => Ok(v.pop()),
            _ => Err(
                "give one implementation here (--kernel, --impl, --reference or --mutant)".into(),
            ),
        }
    }
}

/// A mutant by path, or by the number or name of a file in target/mutants.
fn find_mutant(name: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(name);
    if p.is_file() {
        return Ok(p);
    }
    lazymmu_target::sources::mutant(name)
}

/// `lazymmu fuzz`'s arguments.
#[derive(Args)]
struct FuzzArgs {
    #[command(flatten)]
    implementation: ImplArgs,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    time: Option<f64>,
    /// Stop after this many programs (all jobs together). With --jobs 1 the run is
    /// deterministic from --seed.
    #[arg(long)]
    runs: Option<u64>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker processes.
    #[arg(long, default_value_t = 1)]
    jobs: usize,
    #[arg(long, value_enum, default_value = "realistic")]
    mode: ModeSel,
    /// Output directory.
    #[arg(long, default_value = "fuzz-out")]
    out: PathBuf,
    /// Seed corpus directory.
    #[arg(long)]
    seeds: Option<PathBuf>,
    /// Milliseconds a program may run before it is reported as a hang (the executor
    /// running it is killed and replaced).
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    timeout: u64,
    /// Guide the search by model features only: without this, the implementation file is
    /// built with gcc's trace-pc,trace-cmp, its edges count as features and the values it
    /// compares against feed the mutations.
    #[arg(long)]
    no_c_coverage: bool,
}

/// The hidden `fuzz-worker` command's arguments (campaign::WorkerArgs::command_line
/// writes them).
#[derive(Args)]
struct WorkerCliArgs {
    #[command(flatten)]
    implementation: ImplArgs,
    #[arg(long, default_value_t = 0)]
    worker: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, value_enum, default_value = "realistic")]
    mode: ModeSel,
    #[arg(long)]
    out: PathBuf,
    #[arg(long)]
    seeds: PathBuf,
    #[arg(long)]
    runs: Option<u64>,
    #[arg(long)]
    time: Option<f64>,
    /// Stop at the first finding the reference does not show.
    #[arg(long)]
    kill: bool,
    #[arg(long, default_value_t = 1000)]
    timeout: u64,
    #[arg(long)]
    no_c_coverage: bool,
}

impl WorkerCliArgs {
    fn run(self) -> Result<(), String> {
        let args = campaign::WorkerArgs {
            source: self.implementation.source()?.unwrap_or(Source::Reference),
            worker: self.worker,
            seed: self.seed,
            mode: self.mode,
            out: self.out,
            seeds: self.seeds,
            runs: self.runs,
            time: self.time.map(Duration::from_secs_f64),
            kill: self.kill,
            timeout: Duration::from_millis(self.timeout),
            c_coverage: !self.no_c_coverage,
        };
        campaign::run_worker(&args, Some(crash_minimizer())).map(|_| ())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Print a trace of a program, step by step: what each call returned, which IPTEs it
    /// issued, and memory, TLBs and counters at every sync point. Runs the eager oracle
    /// unless an implementation is given.
    Replay {
        /// A program in the .ops text format.
        file: PathBuf,
        /// Print the trace as JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        implementation: ImplArgs,
        /// Accepted for older scripts: the implementation always runs in a disposable
        /// executor process, so a crash or hang is reported (signal, fault address,
        /// symbolized call trace, step) instead of killing the rig.
        #[arg(long, hide = true)]
        isolate: bool,
        /// Milliseconds a program may run before it is reported as a hang.
        #[arg(long, default_value_t = 1000, value_name = "MS")]
        timeout: u64,
    },
    /// Compile an implementation against the shim (or find it in the cache) and say which
    /// generation it is; bad input gets the compiler's errors and the names the shim lacks.
    Compile {
        #[command(flatten)]
        implementation: ImplArgs,
    },
    /// Check a program against the lazy-MMU API contract (docs/semantics.md#api-contract)
    /// and say whether it is realistic, listing every rule it breaks.
    Check { file: PathBuf },
    /// Fuzz implementations against the eager oracle (default: the built-in reference):
    /// structure-aware mutation of programs, guided by model coverage and the C code's own
    /// (edges, values it compares against; --no-c-coverage: off), starting from the seed
    /// corpus. Findings are written as they appear to OUT/<impl>/findings/<signature>/
    /// (deduplicated by signature); the corpus in OUT/<impl>/corpus/ is reloaded by the
    /// next run, so an interrupted run loses nothing. A crash in the C code is caught with
    /// its program. Exits 1 if a bug or performance finding was made.
    Fuzz(FuzzArgs),
    /// One fuzzing worker (started by `fuzz` and `mutants`).
    #[command(hide = true)]
    FuzzWorker(WorkerCliArgs),
    /// Fuzz every mutant in target/mutants (realistic and adversarial programs) until a
    /// program shows a finding the reference does not, and print a table: mutant, bug
    /// class, killed, time and programs to kill, signature. Exits 1 if any survives.
    Mutants {
        /// Seconds per mutant.
        #[arg(long, default_value_t = 60.0)]
        budget: f64,
        /// Mutants fuzzed at the same time.
        #[arg(long, default_value_t = 2)]
        jobs: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Only mutants whose file name starts with one of these.
        #[arg(long)]
        only: Vec<String>,
        #[arg(long, default_value = "mutants-out")]
        out: PathBuf,
    },
    /// Throughput on one core: programs/s through the reference C target alone, the
    /// oracle alone, and the full differential check, and their ratio, from one run.
    /// `bench engines`: time to kill each mutant with the built-in engine with and without
    /// C feedback, plain random generation and (with --libfuzzer) libFuzzer, same budget,
    /// no seeds.
    /// `bench crashes`: campaign throughput on implementations that crash on about 0.1 %,
    /// 1 % and 10 % of realistic programs, as a ratio of the reference's; the time from
    /// the first crash to its minimized report; a triage of 1,000 crash inputs.
    /// `bench mutations`: structural mutations/s on realistic corpus programs of about 50,
    /// 200 and 400 steps (--budget seconds per row, at most 5).
    Bench {
        /// `engines`, `crashes` or `mutations` (default: the throughput table).
        what: Option<String>,
        #[arg(long, default_value_t = 20_000)]
        programs: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seconds per mutant and engine (bench engines), per campaign (bench crashes).
        #[arg(long, default_value_t = 30.0)]
        budget: f64,
        /// Only mutants whose file name starts with one of these (bench engines).
        #[arg(long)]
        only: Vec<String>,
        /// Include libFuzzer (needs cargo-fuzz; builds the target per mutant).
        #[arg(long)]
        libfuzzer: bool,
        /// bench engines: start every engine from nothing instead of the seed corpus
        /// (corpus/seeds, which is what `fuzz` starts from).
        #[arg(long)]
        no_seeds: bool,
    },
    /// Corpus management across machines and engines. `merge --out DIR IN...`: the union
    /// of corpora (lazymmu .ops, libFuzzer or AFL inputs) reduced to a set that keeps every
    /// model feature, written as .ops into DIR/corpus. `prune DIR`: the same in place.
    Corpus {
        /// merge or prune
        action: String,
        /// Input corpora (merge) or the corpus to prune.
        dirs: Vec<PathBuf>,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        implementation: ImplArgs,
    },
    /// Minimize a finding: ddmin over steps, then fewer CPUs, mms, tables and initial
    /// values, smaller indices and simpler values, keeping the signature of its first
    /// finding (or --signature). The result is 1-minimal. Reads .ops or raw fuzzer bytes.
    Minimize {
        file: PathBuf,
        #[command(flatten)]
        implementation: ImplArgs,
        /// The signature to keep (default: the program's first finding).
        #[arg(long)]
        signature: Option<String>,
        /// Write the minimized program here (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Keep the built-in reference clean on every candidate (for mutants: the result
        /// still tells the mutant from the reference).
        #[arg(long)]
        reference_clean: bool,
    },
    /// Group a directory of findings or crashes from any engine into distinct bugs (same
    /// implementation, signature, generation and shape after minimization), minimize one
    /// representative each, and write DIR/triage/summary.txt and bug-NN-<signature>.ops.
    /// Inputs without an `# implementation:` header run on IMPL (default: reference).
    Triage {
        dir: PathBuf,
        #[command(flatten)]
        implementation: ImplArgs,
    },
    /// Export a finding as a reproducer: --text (a plain-text report of at most 72
    /// columns for a mailing-list reply: the program, a side-by-side trace target | oracle
    /// up to the first divergence, what diverged), --kunit (a KUnit test case in C, with
    /// the eager code's values as expectations), --json, --svg (a timeline, one lane per
    /// CPU). Reads .ops or raw fuzzer bytes; runs on IMPL, or on the implementation its
    /// `# implementation:` header names.
    Export {
        file: PathBuf,
        #[command(flatten)]
        implementation: ImplArgs,
        #[arg(long, group = "format")]
        text: bool,
        #[arg(long, group = "format")]
        kunit: bool,
        #[arg(long, group = "format")]
        json: bool,
        #[arg(long, group = "format")]
        svg: bool,
        /// Minimize first (keeping the first finding's signature).
        #[arg(long)]
        minimize: bool,
        /// Name of the KUnit test function.
        #[arg(long, default_value = "lazy_mmu_repro")]
        name: String,
        /// Write here instead of stdout.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Run an exported KUnit case (or suite) in userspace against IMPL (default: the
    /// reference): KTAP out, exit 1 if a case failed (triage/src/kunit_run.rs).
    KunitRun {
        file: PathBuf,
        #[command(flatten)]
        implementation: ImplArgs,
    },
    /// Generate a random program from a seed and print it in the .ops format.
    Gen {
        /// Seed of the generator: the same seed gives the same program everywhere.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// `mixed`: each program realistic or adversarial, by a coin of the seed.
        #[arg(long, value_enum, default_value = "realistic")]
        mode: ModeSel,
        /// Bytes of generator input (more bytes, longer programs).
        #[arg(long, default_value_t = 512)]
        bytes: usize,
    },
}

/// Reads and parses a program; also returns the source line of every step.
fn load_with_lines(path: &Path) -> Result<(Program, Vec<usize>), String> {
    let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let p = text::parse(&src).map_err(|e| format!("{}:{e}", path.display()))?;
    Ok((p, text::step_lines(&src)))
}

fn load(path: &Path) -> Result<Program, String> {
    load_with_lines(path).map(|(p, _)| p)
}

/// Writes `text` to `output`, or to stdout.
fn emit(output: Option<PathBuf>, text: &str) -> Result<(), String> {
    match output {
        Some(o) => std::fs::write(&o, text).map_err(|e| format!("{}: {e}", o.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// The triage minimizer, for crashes found while fuzzing.
fn crash_minimizer() -> Minimizer {
    Box::new(|exec, p, sig, deadline| {
        lazymmu_triage::minimize::minimize_against(exec, p, sig, None, deadline)
            .map(|m| m.program)
            .unwrap_or_else(|_| p.clone())
    })
}

fn default_timeout() -> Duration {
    ExecOptions::default().timeout
}

fn worker_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find the rig's executable: {e}"))
}

/// `replay`: a trace of the oracle, or of an implementation in an executor.
fn replay(file: &Path, json: bool, imp: &ImplArgs, timeout: Duration) -> Result<(), String> {
    let p = load(file)?;
    let trace: Trace = match imp.source()? {
        None => lazymmu_oracle::run(&p),
        Some(src) => {
            let mut exec = executor(&src, timeout)?;
            match exec.run_one(&p, true) {
                Outcome::Ran(r) => r.target.expect("asked for the trace"),
                Outcome::Died(c, _) => {
                    return Err(format!(
                        "{} {}:\n{}",
                        exec.name(),
                        c.verdict(&p).findings[0].signature(),
                        c.render()
                    ))
                }
            }
        }
    };
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&trace).expect("trace serialises")
        );
    } else {
        print!("{}", report::trace_text(&p, &trace));
    }
    Ok(())
}

/// `compile`: build (or find cached) and name the generation.
fn compile(imp: &ImplArgs) -> Result<(), String> {
    let src = imp
        .source()?
        .ok_or("give an implementation: --kernel, --impl, --reference or --mutant")?;
    let spec = src.resolve().map_err(|e| e.to_string())?;
    let b = lazymmu_target::loader::build(&spec).map_err(|e| e.to_string())?;
    // The flavour `fuzz` loads too, so that its budget goes to fuzzing.
    lazymmu_target::loader::build_with(&spec, true).map_err(|e| e.to_string())?;
    println!(
        "{}: generation {}, compiled into {}",
        b.name,
        b.generation.name(),
        b.library().display()
    );
    if let Some(c) = &b.bug_class {
        println!("bug class: {c}");
    }
    Ok(())
}

/// `check`: realistic or not, each broken rule with its line.
fn check(file: &Path) -> Result<(), String> {
    let (p, lines) = load_with_lines(file)?;
    let v = contract::violations(&p);
    if v.is_empty() {
        println!(
            "{}: realistic (keeps the lazy-MMU API contract)",
            file.display()
        );
        return Ok(());
    }
    for x in &v {
        // Rules still open at the end point past the last step.
        let line = lines.get(x.step).map_or("end".into(), |l| l.to_string());
        println!("{}:{line}: {x}", file.display());
    }
    Err(format!(
        "{}: adversarial: {} contract rule(s) broken",
        file.display(),
        v.len()
    ))
}

fn fuzz(a: FuzzArgs) -> Result<(), String> {
    let mut sources = a.implementation.sources()?;
    if sources.is_empty() {
        sources.push(Source::Reference);
    }
    if a.time.is_none() && a.runs.is_none() {
        return Err("give a budget: --time SECS and/or --runs N".to_string());
    }
    let summary = campaign::run(&campaign::Plan {
        sources,
        out: a.out,
        seeds: a.seeds.unwrap_or_else(seeds_dir),
        seed: a.seed,
        jobs: a.jobs,
        mode: a.mode,
        time: a.time.map(Duration::from_secs_f64),
        runs: a.runs,
        timeout: Duration::from_millis(a.timeout),
        worker_exe: worker_exe()?,
        c_coverage: !a.no_c_coverage,
    })?;
    print!("{}", summary.render());
    match summary.bad() {
        0 => Ok(()),
        n => Err(format!("{n} bug or performance signature(s) found")),
    }
}

fn mutants(
    budget: f64,
    jobs: usize,
    seed: u64,
    only: &[String],
    out: PathBuf,
) -> Result<(), String> {
    let budget = Duration::from_secs_f64(budget);
    let rows = lazymmu_engine::mutants::run(&lazymmu_engine::mutants::Plan {
        mutants: lazymmu_target::sources::mutants_matching(only),
        budget,
        jobs,
        seed,
        seeds: seeds_dir(),
        out,
        timeout: default_timeout(),
        worker_exe: worker_exe()?,
    })?;
    print!("{}", lazymmu_engine::mutants::table(&rows, budget));
    match rows.iter().filter(|r| r.killed.is_none()).count() {
        0 => Ok(()),
        n => Err(format!("{n} mutant(s) survived")),
    }
}

fn bench(
    what: Option<&str>,
    programs: usize,
    seed: u64,
    budget: f64,
    only: &[String],
    libfuzzer: bool,
    no_seeds: bool,
) -> Result<(), String> {
    use lazymmu_engine::bench;
    match what {
        None => bench::throughput(programs, seed),
        Some("engines") => bench::engines(
            Duration::from_secs_f64(budget),
            only,
            seed,
            libfuzzer,
            (!no_seeds).then(seeds_dir).as_deref(),
        ),
        Some("mutations") => bench::mutations(budget.min(5.0), seed),
        Some("crashes") => {
            bench::crashes(budget, seed, &seeds_dir(), &crash_minimizer, &|dir, src| {
                let s = lazymmu_triage::dedup::triage(dir, src)?;
                Ok((s.bugs.len(), s.not_reproduced.len()))
            })
        }
        Some(other) => Err(format!(
            "unknown benchmark '{other}' (have: engines, crashes, mutations)"
        )),
    }
}

fn corpus(
    action: &str,
    dirs: &[PathBuf],
    out: Option<PathBuf>,
    imp: &ImplArgs,
) -> Result<(), String> {
    let source = imp.source()?.unwrap_or(Source::Reference);
    let mut exec = executor(&source, default_timeout())?;
    let merged = match action {
        "merge" => {
            let out = out.ok_or("corpus merge needs --out DIR")?;
            lazymmu_engine::corpus::merge(&mut exec, dirs, &out, false)?
        }
        "prune" => {
            let [dir] = dirs else {
                return Err("corpus prune takes one directory".into());
            };
            // A lazymmu fuzz directory keeps its programs in DIR/corpus.
            let corpus = if dir.join("corpus").is_dir() {
                dir.join("corpus")
            } else {
                dir.clone()
            };
            lazymmu_engine::corpus::merge(&mut exec, std::slice::from_ref(&corpus), &corpus, true)?
        }
        other => return Err(format!("unknown corpus action '{other}' (merge, prune)")),
    };
    println!(
        "{}: {} distinct program(s), {} feature(s): kept {} in {}",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        merged.read,
        merged.features,
        merged.kept,
        merged.dir.display()
    );
    Ok(())
}

fn minimize(
    file: &Path,
    imp: &ImplArgs,
    signature: Option<String>,
    output: Option<PathBuf>,
    reference_clean: bool,
) -> Result<(), String> {
    let input = lazymmu_triage::dedup::load_input(file)?;
    let source = imp.source_or(input.implementation.as_ref())?;
    let mut d = executor(&source, default_timeout())?;
    let sig = match signature {
        Some(s) => s,
        None => lazymmu_triage::minimize::first_signature(&mut d, &input.program)
            .ok_or_else(|| format!("{}: no finding on {}", file.display(), d.name()))?,
    };
    let t0 = std::time::Instant::now();
    let mut reference = match reference_clean {
        true => Some(executor(&Source::Reference, default_timeout())?),
        false => None,
    };
    let m = lazymmu_triage::minimize::minimize_against(
        &mut d,
        &input.program,
        &sig,
        reference
            .as_mut()
            .map(|r| r as &mut dyn lazymmu_engine::Checker),
        None,
    )?;
    eprintln!(
        "lazymmu: {sig}: {} -> {} steps, {} runs, {:.2}s",
        m.original_steps,
        m.program.steps.len(),
        m.runs,
        t0.elapsed().as_secs_f64()
    );
    let mut r = ReproFile::new(m.program).with_implementation(&d.name());
    if reference_clean {
        r = r.expect("reference", Expected::Clean);
    }
    let r = r.expect(&d.name(), Expected::Signature(sig));
    emit(output, &r.render())
}

#[allow(clippy::too_many_arguments)]
fn export(
    file: &Path,
    imp: &ImplArgs,
    kunit: bool,
    json: bool,
    svg: bool,
    minimize: bool,
    name: &str,
    output: Option<PathBuf>,
) -> Result<(), String> {
    let input = lazymmu_triage::dedup::load_input(file)?;
    let source = imp.source_or(input.implementation.as_ref())?;
    let mut d = executor(&source, default_timeout())?;
    let mut program = input.program;
    if minimize {
        let sig = lazymmu_triage::minimize::first_signature(&mut d, &program)
            .ok_or_else(|| format!("{}: no finding on {}", file.display(), d.name()))?;
        program = lazymmu_triage::minimize::minimize(&mut d, &program, &sig)?.program;
    }
    let r = match lazymmu_triage::Repro::new(&mut d, program.clone()) {
        Ok(r) => r,
        Err(c) => {
            // A crash or hang has no trace to show: its report and program are the
            // reproducer.
            if kunit || json || svg {
                return Err(format!(
                    "{}: the program crashes {} ({}); only --text exports a crash",
                    file.display(),
                    d.name(),
                    c.headline()
                ));
            }
            let v = c.verdict(&program);
            let text = format!(
                "{} on {}\n\n{}\n{}",
                v.findings[0].signature(),
                d.name(),
                c.render(),
                text::to_text(&program)
            );
            return emit(output, &text);
        }
    };
    if r.first().is_none() {
        eprintln!(
            "lazymmu: note: {} shows no finding on this program",
            r.implementation
        );
    }
    // --text is the default.
    let out = if kunit {
        lazymmu_triage::export::kunit_repro(&mut d, &r, name)
    } else if json {
        lazymmu_triage::export::json(&r)
    } else if svg {
        lazymmu_triage::export::svg(&r)
    } else {
        lazymmu_triage::export::text(&r)
    };
    emit(output, &out)
}

fn triage(dir: &Path, imp: &ImplArgs) -> Result<(), String> {
    let source = imp.source()?.unwrap_or(Source::Reference);
    let s = lazymmu_triage::dedup::triage(dir, &source)?;
    print!("{}", lazymmu_triage::dedup::write_summary(dir, &s)?);
    Ok(())
}

fn generate(seed: u64, mode: ModeSel, bytes: usize) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let mode = mode.pick(&mut rng);
    let p = gen::from_bytes(&rng.bytes(bytes), mode);
    print!(
        "# generated: lazymmu gen --seed {seed} --bytes {bytes}\n{}",
        text::to_text(&p)
    );
    Ok(())
}

fn main() -> ExitCode {
    // Traces allocate and free many 32 KiB memory images: keep freed memory in the heap
    // instead of returning it to the kernel and faulting it back in on the next program.
    // SAFETY: plain glibc tuning calls before any thread starts.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
    }
    let cli = Cli::parse();
    if let Some(Sanitizer::Address) = cli.sanitize {
        if let Err(e) = with_asan_runtime() {
            eprintln!("lazymmu: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Replay {
            file,
            json,
            implementation,
            isolate: _,
            timeout,
        } => replay(&file, json, &implementation, Duration::from_millis(timeout)),
        Command::Compile { implementation } => compile(&implementation),
        Command::Check { file } => check(&file),
        Command::Fuzz(a) => fuzz(a),
        Command::FuzzWorker(w) => w.run(),
        Command::Mutants {
            budget,
            jobs,
            seed,
            only,
            out,
        } => mutants(budget, jobs, seed, &only, out),
        Command::Bench {
            what,
            programs,
            seed,
            budget,
            only,
            libfuzzer,
            no_seeds,
        } => bench(
            what.as_deref(),
            programs,
            seed,
            budget,
            &only,
            libfuzzer,
            no_seeds,
        ),
        Command::Corpus {
            action,
            dirs,
            out,
            implementation,
        } => corpus(&action, &dirs, out, &implementation),
        Command::Minimize {
            file,
            implementation,
            signature,
            output,
            reference_clean,
        } => minimize(&file, &implementation, signature, output, reference_clean),
        Command::Export {
            file,
            implementation,
            text: _,
            kunit,
            json,
            svg,
            minimize,
            name,
            output,
        } => export(
            &file,
            &implementation,
            kunit,
            json,
            svg,
            minimize,
            &name,
            output,
        ),
        Command::Triage {
            dir,
            implementation,
        } => triage(&dir, &implementation),
        Command::KunitRun {
            file,
            implementation,
        } => implementation
            .source_or(None)
            .and_then(|s| lazymmu_triage::kunit_run::run_file(&s, &file)),
        Command::Gen { seed, mode, bytes } => generate(seed, mode, bytes),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lazymmu: {e}");
            ExitCode::FAILURE
        }
    }
}
