//! `lazymmu`: the command line of the rig.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use lazymmu_harness::{contract, gen, report, text, Mode, Program};

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

#[derive(Subcommand)]
enum Command {
    /// Print the eager oracle's trace of a program, step by step: what each call returned,
    /// which IPTEs it issued, and memory, TLBs and counters at every sync point.
    Replay {
        /// A program in the .ops text format.
        file: PathBuf,
        /// Print the trace as JSON instead of text.
        #[arg(long)]
        json: bool,
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
        Command::Replay { file, json } => load(&file).map(|p| {
            let trace = lazymmu_oracle::run(&p);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&trace).expect("trace serialises")
                );
            } else {
                print!("{}", report::trace_text(&p, &trace));
            }
        }),
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
