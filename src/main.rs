//! `lazymmu`: the command line of the rig.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use lazymmu_harness::{contract, gen, isolate, report, text, Mode, Program, Trace};
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
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Realistic,
    Adversarial,
}

/// Which implementation to run (none given: the eager oracle).
#[derive(Args, Clone, Default)]
struct ImplArgs {
    /// A Linux tree with the series applied: its arch/s390/mm/lazy_mmu.c (v3+) or
    /// ipte_batch.c (RFC, v2), plus arch/s390/include/asm/lazy_mmu.h when present, is
    /// compiled against the rig's shim at run time (cached by content hash in
    /// $LAZYMMU_CACHE or ~/.cache/lazymmu).
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// One implementation file, of any generation.
    #[arg(long = "impl", value_name = "FILE")]
    impl_file: Option<PathBuf>,
    /// The built-in reference implementation.
    #[arg(long)]
    reference: bool,
    /// A mutant of the reference: a path, or a name from target/mutants (e.g. 07 or
    /// off-by-one-range-end).
    #[arg(long, value_name = "NAME")]
    mutant: Option<String>,
}

impl ImplArgs {
    fn source(&self) -> Result<Option<Source>, String> {
        let mut v = vec![];
        if let Some(k) = &self.kernel {
            v.push(Source::KernelTree(k.clone()));
        }
        if let Some(f) = &self.impl_file {
            v.push(Source::File(f.clone()));
        }
        if self.reference {
            v.push(Source::Reference);
        }
        if let Some(m) = &self.mutant {
            v.push(Source::Mutant(find_mutant(m)?));
        }
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.pop()),
            _ => Err("give one of --kernel, --impl, --reference, --mutant".into()),
        }
    }
}

/// A mutant by path, or by the number or name of a file in target/mutants.
fn find_mutant(name: &str) -> Result<PathBuf, String> {
    let p = PathBuf::from(name);
    if p.is_file() {
        return Ok(p);
    }
    let all = lazymmu_target::sources::mutant_paths();
    let found: Vec<&PathBuf> = all
        .iter()
        .filter(|p| {
            let stem = p.file_stem().unwrap_or_default().to_string_lossy();
            stem.starts_with(name) || stem.split_once('-').is_some_and(|(_, rest)| rest == name)
        })
        .collect();
    match found[..] {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no mutant '{name}' (have: {})",
            all.iter()
                .map(|p| p
                    .file_stem()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Err(format!("'{name}' names several mutants")),
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
        /// Run the implementation in a child process, so that a crash is reported
        /// instead of killing the rig.
        #[arg(long)]
        isolate: bool,
    },
    /// Compile an implementation against the shim (or find it in the cache) and say which
    /// generation it is; bad input gets the compiler's errors and the names the shim lacks.
    Compile {
        #[command(flatten)]
        implementation: ImplArgs,
    },
    /// Check a program against the lazy-MMU API contract (SEMANTICS.md section 4) and say
    /// whether it is realistic, listing every rule it breaks.
    Check { file: PathBuf },
    /// Generate a random program from a seed and print it in the .ops format.
    Gen {
        /// Seed of the generator: the same seed gives the same program everywhere.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, value_enum, default_value = "realistic")]
        mode: ModeArg,
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

/// Runs a program through the chosen implementation, or the oracle.
fn run_program(p: &Program, args: &ImplArgs, isolate: bool) -> Result<Trace, String> {
    let Some(src) = args.source()? else {
        return Ok(lazymmu_oracle::run(p));
    };
    let mut kernel = lazymmu_target::load(&src).map_err(|e| e.to_string())?;
    if isolate {
        isolate::run_in_child(|| lazymmu_harness::run(p, &mut kernel))
            .map_err(|c| format!("{} crashed on this program: {c}", kernel.library().name))
    } else {
        Ok(lazymmu_harness::run(p, &mut kernel))
    }
}

/// Deterministic bytes from a seed (splitmix64), so `gen` needs no RNG crate.
fn seeded_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_add(0x9e3779b97f4a7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay {
            file,
            json,
            implementation,
            isolate,
        } => load(&file).and_then(|p| {
            let trace = run_program(&p, &implementation, isolate)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&trace).expect("trace serialises")
                );
            } else {
                print!("{}", report::trace_text(&p, &trace));
            }
            Ok(())
        }),
        Command::Compile { implementation } => match implementation.source() {
            Ok(None) => {
                Err("give an implementation: --kernel, --impl, --reference or --mutant".into())
            }
            Ok(Some(src)) => src
                .resolve()
                .and_then(|spec| lazymmu_target::loader::build(&spec))
                .map(|b| {
                    println!(
                        "{}: generation {}, compiled into {}",
                        b.name,
                        b.generation.name(),
                        b.library().display()
                    );
                    if let Some(c) = &b.bug_class {
                        println!("bug class: {c}");
                    }
                })
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        },
        Command::Check { file } => load_with_lines(&file).and_then(|(p, lines)| {
            let v = contract::violations(&p);
            if v.is_empty() {
                println!(
                    "{}: realistic (keeps the lazy-MMU API contract)",
                    file.display()
                );
                Ok(())
            } else {
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
        }),
        Command::Gen { seed, mode, bytes } => {
            let mode = match mode {
                ModeArg::Realistic => Mode::Realistic,
                ModeArg::Adversarial => Mode::Adversarial,
            };
            let p = gen::from_bytes(&seeded_bytes(seed, bytes), mode);
            print!(
                "# generated: lazymmu gen --seed {seed} --bytes {bytes}\n{}",
                text::to_text(&p)
            );
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lazymmu: {e}");
            ExitCode::FAILURE
        }
    }
}
