//! Benchmarks (`lazymmu bench`): throughput on one core (the target alone, the oracle,
//! the checkers, the full check), time to kill per engine (`bench engines`: the built-in
//! engine with and without C feedback, plain random generation, libFuzzer), and the cost
//! of crashes in a campaign (`bench crashes`). Figures are printed as ratios measured in
//! one run.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lazymmu_harness::gen;
use lazymmu_lang::{Mode, Program};
use lazymmu_target::Source;

use crate::campaign::{executor, executor_with};
use crate::executor::{ExecOptions, Outcome};
use crate::fuzz::{Config, Fuzzer, Minimizer, ModeSel, Stats};
use crate::out::OutDir;
use lazymmu_harness::Differ;

/// Throughput on one core: the target alone, the oracle alone, and the full check.
pub fn throughput(programs: usize, seed: u64) -> Result<(), String> {
    let mut bytes_rng = crate::rng::Rng::new(seed);
    let corpus: Vec<_> = (0..programs)
        .map(|_| {
            let n = 64 + bytes_rng.below(1024);
            gen::from_bytes(&bytes_rng.bytes(n), Mode::Realistic)
        })
        .collect();
    let steps: usize = corpus.iter().map(|p| p.steps.len()).sum();
    let mut kernel = lazymmu_target::load(&Source::Reference).map_err(|e| e.to_string())?;
    let time = |f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64()
    };
    // Warm up caches and the allocator.
    for p in corpus.iter().take(200) {
        lazymmu_model::run(p, &mut kernel);
    }
    let t_target = time(&mut || {
        for p in &corpus {
            std::hint::black_box(lazymmu_model::run(p, &mut kernel));
        }
    });
    let t_oracle = time(&mut || {
        for p in &corpus {
            std::hint::black_box(lazymmu_oracle::run(p));
        }
    });
    let mut differ = Differ::new(kernel);
    let mut findings = 0;
    let t_full = time(&mut || {
        for p in &corpus {
            findings += differ.verdict(p).bugs().count();
        }
    });
    // The checkers alone, on traces computed beforehand (a subset: traces are large).
    let sub = programs.min(2_000);
    let traces: Vec<_> = corpus[..sub]
        .iter()
        .map(|p| {
            (
                lazymmu_model::run(p, &mut differ.kernel),
                lazymmu_oracle::run(p),
            )
        })
        .collect();
    let t_check = time(&mut || {
        for (p, (t, o)) in corpus[..sub].iter().zip(&traces) {
            std::hint::black_box(lazymmu_harness::check::check(p, t, o, differ.marker));
        }
    }) * programs as f64
        / sub as f64;
    let rate = |t: f64| programs as f64 / t;
    println!("{programs} realistic programs ({steps} steps, seed {seed}), one core:");
    println!(
        "  target alone (reference C + shim + machine): {:>9.0} programs/s",
        rate(t_target)
    );
    println!(
        "  oracle alone:                                {:>9.0} programs/s",
        rate(t_oracle)
    );
    println!(
        "  checkers alone (on precomputed traces):      {:>9.0} programs/s",
        rate(t_check)
    );
    println!(
        "  full check (target + oracle + checkers):     {:>9.0} programs/s",
        rate(t_full)
    );
    println!(
        "  full check costs {:.2}x the target alone ({findings} bug findings)",
        t_full / t_target
    );
    Ok(())
}

/// How long one engine took to kill one mutant.
fn kill_time(
    engine: &str,
    mutant: &Path,
    mode: ModeSel,
    budget: Duration,
    seed: u64,
    seeds: &[lazymmu_lang::Program],
) -> Result<Option<(f64, u64)>, String> {
    let timeout = ExecOptions::default().timeout;
    let mutant = Source::Mutant(mutant.to_path_buf());
    let mut target = executor_with(&mutant, timeout, engine == "builtin")?;
    let mut reference = executor(&Source::Reference, timeout)?;
    match engine {
        "builtin" | "builtin-no-c" => {
            let cfg = Config {
                seed,
                mode,
                runs: None,
                time: Some(budget),
                seeds: seeds.to_vec(),
                out: None,
                worker: 0,
                kill_against: Some(reference),
                minimizer: None,
            };
            let s = Fuzzer::new(target, cfg).run(Duration::from_secs(3600), |_| {});
            Ok(s.killed.map(|k| (k.elapsed_ms as f64 / 1000.0, k.runs)))
        }
        _ => {
            // Plain random generation: the seeds, as every engine starts with them, then
            // fresh programs from random bytes, no feedback.
            let mut rng = crate::rng::Rng::new(seed);
            let t0 = Instant::now();
            let deadline = t0 + budget;
            let mut runs = 0;
            let mut seeds = seeds.chunks(32);
            while Instant::now() < deadline {
                let batch: Vec<_> = match seeds.next() {
                    Some(chunk) => chunk.to_vec(),
                    None => (0..32)
                        .map(|_| {
                            let m = match mode {
                                ModeSel::Realistic => Mode::Realistic,
                                ModeSel::Adversarial => Mode::Adversarial,
                                ModeSel::Mixed if rng.chance(1, 2) => Mode::Realistic,
                                ModeSel::Mixed => Mode::Adversarial,
                            };
                            let n = 64 + rng.below(1024);
                            gen::from_bytes(&rng.bytes(n), m)
                        })
                        .collect(),
                };
                let outcomes = target.run_batch(&batch, false, Some(deadline));
                for (p, o) in batch.iter().zip(outcomes) {
                    runs += 1;
                    if !o.verdict(p).findings.is_empty() && reference.verdict(p).findings.is_empty()
                    {
                        return Ok(Some((t0.elapsed().as_secs_f64(), runs)));
                    }
                }
            }
            Ok(None)
        }
    }
}

/// Time to kill each mutant with the built-in engine (with C feedback, and without:
/// `builtin-no-c`), plain random generation and (when asked) libFuzzer, with the same
/// budget, each starting from the seed corpus in `seeds` as users run them (none if it
/// is `None`).
pub fn engines(
    budget: Duration,
    only: &[String],
    seed: u64,
    libfuzzer: bool,
    seeds: Option<&Path>,
) -> Result<(), String> {
    let paths = lazymmu_target::sources::mutants_matching(only);
    let mut engines = vec!["builtin", "builtin-no-c", "random"];
    if libfuzzer {
        engines.push("libfuzzer");
    }
    let from = match seeds {
        Some(d) => format!("from the seed corpus {}", d.display()),
        None => "from no seeds".into(),
    };
    println!(
        "time to kill {from}, budget {}s; '>' = survived (counted as the budget)",
        budget.as_secs_f64()
    );
    print!("{:<30}", "mutant");
    for e in &engines {
        print!(" {e:>16}");
    }
    println!();
    let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for p in &paths {
        let name = p
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        // Hardening mutants (their patch says so) only show on contract-breaking programs.
        let hardening = Source::Mutant(p.clone())
            .resolve()
            .map_err(|e| e.to_string())?
            .hardening;
        let mode = if hardening {
            ModeSel::Mixed
        } else {
            ModeSel::Realistic
        };
        let seed_programs = seeds.map_or(vec![], |d| crate::corpus::seed_programs(d, mode));
        print!("{name:<30}");
        for e in &engines {
            let r = if *e == "libfuzzer" {
                if hardening {
                    print!(" {:>16}", "n/a");
                    continue;
                }
                libfuzzer_kill(&name, budget, seeds)?
            } else {
                kill_time(e, p, mode, budget, seed, &seed_programs)?
            };
            let t = r.map_or(budget.as_secs_f64(), |x| x.0);
            times.entry(e).or_default().push(t);
            match r {
                Some((t, runs)) => print!(
                    " {:>9.3}s {:>5}",
                    t,
                    if runs > 0 {
                        format!("{runs}")
                    } else {
                        "-".into()
                    }
                ),
                None => print!(" {:>16}", format!(">{:.0}s", budget.as_secs_f64())),
            }
            let _ = std::io::stdout().flush();
        }
        println!();
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mb = median(times.get_mut("builtin").unwrap());
    let mn = median(times.get_mut("builtin-no-c").unwrap());
    let mr = median(times.get_mut("random").unwrap());
    print!("median time to kill: builtin {mb:.3}s, builtin-no-c {mn:.3}s, random {mr:.3}s");
    if let Some(l) = times.get_mut("libfuzzer") {
        let ml = median(l);
        print!(
            ", libfuzzer {ml:.3}s (builtin is {:.1}x faster than libfuzzer)",
            ml / mb.max(1e-3)
        );
    }
    println!(
        "; builtin is {:.1}x faster than random, {:.1}x than without C feedback",
        mr / mb.max(1e-3),
        mn / mb.max(1e-3)
    );
    Ok(())
}

/// libFuzzer's time to kill through fuzz/kill-mutant.sh (cargo fuzz, the mutant linked in).
fn libfuzzer_kill(
    mutant: &str,
    budget: Duration,
    seeds: Option<&Path>,
) -> Result<Option<(f64, u64)>, String> {
    let script = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/kill-mutant.sh"
    ));
    let mut args = vec![
        mutant.to_string(),
        "auto".into(),
        format!("{}", budget.as_secs()),
    ];
    args.extend(seeds.map(|d| d.display().to_string()));
    let out = Command::new(&script)
        .args(&args)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let t = text
        .split("killed in ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|x| x.parse::<f64>().ok());
    // libFuzzer checks its time limit between runs: a kill after the budget is a miss.
    Ok(t.filter(|&t| t <= budget.as_secs_f64()).map(|t| (t, 0)))
}

/// A crasher: the reference with a NULL store in its routing lookup (`range_of`, which
/// every routed call goes through) when a hash of the call's number in the program and
/// its PTE is 0 mod `one_in`: deterministic per program, and spread over many calls so
/// that the share of crashing programs follows `one_in` smoothly. Written to `dir`,
/// compiled like any `--impl FILE`.
fn crasher(dir: &Path, one_in: u64) -> Result<Source, String> {
    let anchor = "static struct ipte_range *range_of(pte_t *ptep, unsigned int *idx)\n{\n\tstruct ipte_range *range = this_cpu_read(ipte_range);\n";
    let src = lazymmu_target::sources::REFERENCE_C;
    if !src.contains(anchor) {
        return Err("bench crashes: the reference's range_of() changed shape".into());
    }
    let planted = format!(
        "{anchor}\tstatic unsigned long calls;\n\n\tif ((((++calls) * 2654435761UL) ^ (((unsigned long)ptep & 0x7ff) * 40503UL)) % {one_in}UL == 0)\n\t\t*(volatile int *)0 = 1;\n"
    );
    let path = dir.join(format!("crash-1-in-{one_in}/lazy_mmu.c"));
    std::fs::create_dir_all(path.parent().unwrap()).map_err(|e| e.to_string())?;
    std::fs::write(&path, src.replacen(anchor, &planted, 1)).map_err(|e| e.to_string())?;
    Ok(Source::File(path))
}

/// One campaign as `fuzz` runs it (seeds, realistic, executors, crash minimization), for
/// `secs`; its statistics.
fn campaign(
    source: &Source,
    secs: f64,
    seed: u64,
    seeds: &Path,
    out: Option<&Path>,
    minimizer: Minimizer,
) -> Result<Stats, String> {
    let exec = executor(source, ExecOptions::default().timeout)?;
    let cfg = Config {
        seed,
        mode: ModeSel::Realistic,
        runs: None,
        time: Some(Duration::from_secs_f64(secs)),
        seeds: crate::corpus::seed_programs(seeds, ModeSel::Realistic),
        out: out
            .map(|o| OutDir::new(o).map_err(|e| format!("{}: {e}", o.display())))
            .transpose()?,
        worker: 0,
        kill_against: None,
        minimizer: Some(minimizer),
    };
    Ok(Fuzzer::new(exec, cfg).run(Duration::from_secs(3600), |_| {}))
}

/// Triages a directory of crash inputs for one implementation: (bugs, not reproduced).
pub type TriageFn = dyn Fn(&Path, &Source) -> Result<(usize, usize), String>;

/// `bench crashes`: campaign throughput on implementations that crash on about 0.1 %,
/// 1 % and 10 % of realistic programs, as a ratio of the same campaign on the
/// reference; the time from the first crash to its minimized report on disk; and a
/// triage of 1,000 crash inputs. The minimizer and triage come from the caller (the
/// triage crate sits above this one); `triage` returns (bugs, inputs not reproduced).
pub fn crashes(
    secs: f64,
    seed: u64,
    seeds: &Path,
    minimizer: &dyn Fn() -> Minimizer,
    triage: &TriageFn,
) -> Result<(), String> {
    let work = std::env::temp_dir().join(format!("lazymmu-bench-crashes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    // Calibrate: the crash rate of each modulus on the same realistic programs.
    let sample: Vec<_> = {
        let mut rng = crate::rng::Rng::new(seed);
        (0..2000)
            .map(|_| {
                let n = 64 + rng.below(1024);
                gen::from_bytes(&rng.bytes(n), Mode::Realistic)
            })
            .collect()
    };
    let mut rates = vec![];
    for one_in in [4u64, 16, 64, 256, 1024, 4096, 16384, 65536] {
        let src = crasher(&work, one_in)?;
        let mut e = executor(&src, ExecOptions::default().timeout)?;
        let deaths = e
            .run_batch(&sample, false, None)
            .iter()
            .filter(|o| matches!(o, Outcome::Died(..)))
            .count();
        rates.push((one_in, deaths as f64 / sample.len() as f64, src));
    }
    let reference = campaign(&Source::Reference, secs, seed, seeds, None, minimizer())?;
    let ref_rate = reference.runs as f64 / (reference.elapsed_ms as f64 / 1000.0);
    println!(
        "campaign throughput ({secs}s each, realistic, seed corpus, executors, crash minimization on):"
    );
    println!("  {:<34} {:>9.0} programs/s  (1.00)", "reference", ref_rate);
    let mut report_times = vec![];
    for target in [0.001, 0.01, 0.1] {
        let (mut one_in, _, _) = rates
            .iter()
            .min_by(|a, b| (a.1 - target).abs().total_cmp(&(b.1 - target).abs()))
            .expect("candidates");
        // Campaigns mutate their corpus, so their crash rate is not the generator's:
        // rescale the modulus once if the first campaign missed the target by far.
        for attempt in 0..3 {
            let src = crasher(&work, one_in)?;
            let out = work.join(format!("out-{one_in}"));
            let s = campaign(&src, secs, seed, seeds, Some(&out), minimizer())?;
            let r = s.runs as f64 / (s.elapsed_ms as f64 / 1000.0);
            let crash_rate = s.deaths as f64 / s.runs.max(1) as f64;
            let off = crash_rate.max(1e-6) / target;
            if attempt < 2 && !(0.6..=1.6).contains(&off) {
                one_in = ((one_in as f64 * off).round() as u64).max(1);
                continue;
            }
            println!(
                "  {:<34} {:>9.0} programs/s  ({:.2})  {} deaths, {} executors",
                format!("crashes on {:.2}% (1 in {one_in})", crash_rate * 100.0),
                r,
                r / ref_rate,
                s.deaths,
                s.executors
            );
            if let (Some(a), Some(b)) = (s.first_crash_ms, s.first_crash_report_ms) {
                report_times.push((b - a) as f64 / 1000.0);
            }
            break;
        }
    }
    if !report_times.is_empty() {
        println!(
            "first crash to its minimized, symbolized report on disk: {}",
            report_times
                .iter()
                .map(|t| format!("{t:.2}s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Triage of 1,000 crash inputs, as a libFuzzer or AFL++ crash directory holds them.
    let (_, _, src) = rates
        .iter()
        .min_by(|a, b| (a.1 - 0.1).abs().total_cmp(&(b.1 - 0.1).abs()))
        .expect("candidates");
    let mut e = executor(src, ExecOptions::default().timeout)?;
    let dir = work.join("crashes");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut rng = crate::rng::Rng::new(seed ^ 0xc4a5);
    let mut kept = 0;
    while kept < 1000 {
        let batch: Vec<_> = (0..256)
            .map(|_| {
                let n = 64 + rng.below(1024);
                gen::from_bytes(&rng.bytes(n), Mode::Realistic)
            })
            .collect();
        for (p, o) in batch.iter().zip(e.run_batch(&batch, false, None)) {
            if matches!(o, Outcome::Died(..)) && kept < 1000 {
                let text = lazymmu_lang::text::to_text(p);
                std::fs::write(dir.join(format!("crash-{kept:04}.ops")), text)
                    .map_err(|e| e.to_string())?;
                kept += 1;
            }
        }
    }
    let t0 = Instant::now();
    let (bugs, not_reproduced) = triage(&dir, src)?;
    println!(
        "triage of {kept} crash inputs: {bugs} bug(s), {not_reproduced} not reproduced, in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

/// Realistic programs of `len` to `len` + 10 % steps, grown from generated ones by
/// the engine's own mutations (a splice with itself adds the most): corpus programs, as
/// the built-in engine mutates them.
pub fn programs_of_length(len: usize, n: usize, rng: &mut crate::rng::Rng) -> Vec<Program> {
    let band = len..=len + len / 10;
    let mut out = vec![];
    while out.len() < n {
        let n = 512 + rng.below(1024);
        let bytes = rng.bytes(n);
        let mut p = gen::from_bytes(&bytes, Mode::Realistic);
        // A bounded number of tries: a program that stops growing is dropped.
        for _ in 0..400 {
            if band.contains(&p.steps.len()) {
                break;
            }
            if let Some(c) = crate::mutate::mutate(&p, Some(&p), rng) {
                if c.steps.len() > p.steps.len() && c.steps.len() <= *band.end() {
                    p = c;
                }
            }
        }
        if band.contains(&p.steps.len()) {
            out.push(p);
        }
    }
    out
}

/// CPU time of this thread, in seconds: what other processes on the machine do does not
/// count (the mutation figures are compared across runs).
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// `bench mutations`: structural mutations per second on realistic corpus programs of
/// about 50, 200 and 400 steps, `secs` seconds of CPU time per row: `mutate` as the
/// libFuzzer custom mutator calls it (no checkpoints), and `mutate_with` as the
/// built-in engine calls it, with checkpoints kept per corpus program (their cost and
/// size shown apart), with a splice partner either way.
pub fn mutations(secs: f64, seed: u64) -> Result<(), String> {
    use crate::mutate::{mutate, mutate_with};
    println!("structural mutations on realistic corpus programs, per CPU second, seed {seed}:");
    for len in [50, 200, 400] {
        // The corpus from a stream of its own: the runs below take a number of random
        // draws that depends on their speed.
        let corpus = programs_of_length(len, 16, &mut crate::rng::Rng::new(seed ^ len as u64));
        let mut rng = crate::rng::Rng::new(seed);
        let steps: usize = corpus.iter().map(|p| p.steps.len()).sum();
        // Identifies the corpus: equal figures before and after a change of the
        // mutation driver mean the same programs were mutated.
        let hash = crate::out::program_hash(
            &corpus
                .iter()
                .map(lazymmu_lang::text::to_text)
                .collect::<String>(),
        );
        println!(
            "  ~{len} steps ({:.1} avg, corpus {hash}):",
            steps as f64 / corpus.len() as f64
        );
        let t = cpu_seconds();
        let mut built = 0;
        let mut cps = vec![];
        while built == 0 || cpu_seconds() - t < secs / 4.0 {
            cps = corpus
                .iter()
                .map(|p| gen::Checkpoints::new(p.clone()))
                .collect();
            built += corpus.len();
        }
        let build_rate = built as f64 / (cpu_seconds() - t);
        let bytes = cps.iter().map(|c| c.heap_bytes()).sum::<usize>() / corpus.len();
        println!(
            "    checkpoints every {} steps: {build_rate:>8.0} programs/s, {:.1} KiB each",
            gen::CHECKPOINT_EVERY,
            bytes as f64 / 1024.0
        );
        for kept in [false, true] {
            let (mut calls, mut children, mut i) = (0u64, 0u64, 0usize);
            let mut sum = 0u64;
            let t = cpu_seconds();
            while cpu_seconds() - t < secs {
                for _ in 0..16 {
                    let n = i % corpus.len();
                    let (parent, other) = (&corpus[n], &corpus[(i * 7 + 3) % corpus.len()]);
                    i += 1;
                    calls += 1;
                    let child = if kept {
                        mutate_with(
                            parent,
                            Some(&cps[n]),
                            Some(other),
                            &mut rng,
                            &crate::dict::Dict::new(),
                        )
                    } else {
                        mutate(parent, Some(other), &mut rng)
                    };
                    if let Some(c) = child {
                        children += 1;
                        sum += c.steps.len() as u64;
                    }
                }
            }
            let elapsed = cpu_seconds() - t;
            println!(
                "    {:<34} {:>8.0} calls/s, {:>8.0} children/s ({:.0} steps avg)",
                if kept {
                    "mutate_with (checkpoints kept):"
                } else {
                    "mutate:"
                },
                calls as f64 / elapsed,
                children as f64 / elapsed,
                sum as f64 / children.max(1) as f64,
            );
        }
    }
    Ok(())
}
