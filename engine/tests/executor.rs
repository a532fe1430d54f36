//! The crash-proof execution layer: crashes and hangs of the implementation are caught in
//! disposable executors, reported with their site, and cost nothing else; executors keep
//! no state from one program to the next; they die with their supervisor.

use std::time::{Duration, Instant};

use lazymmu_engine::executor::{DeathKind, ExecOptions, Outcome};
use lazymmu_lang::text::parse;
use lazymmu_lang::{Mode, Program};
use lazymmu_target::Source;
use lazymmu_testkit::{
    executor, fixture, mutant, programs, regression as crash_program, regression_path, tree,
};

fn quick() -> ExecOptions {
    ExecOptions {
        timeout: Duration::from_millis(300),
        ..ExecOptions::default()
    }
}

fn null_crash() -> Program {
    parse(
        "lazymmu-ops v1 cpus=1 facility13=on tlb_lc=on mode=realistic
mm0 user attach=0 tables=1
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..16]
cpu0 set_pte mm0 t0[3] = 0xdead03d
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
",
    )
    .unwrap()
}

#[test]
fn a_crash_is_reported_with_its_site_step_and_address() {
    let mut e = executor(&fixture("crash/lazy_mmu.c"), quick());
    let p = null_crash();
    let Outcome::Died(r, _) = e.run_one(&p, false) else {
        panic!("the NULL store did not crash");
    };
    assert_eq!(r.kind, DeathKind::Signal(libc::SIGSEGV));
    assert_eq!(
        r.site.as_deref(),
        Some("__lazy_mmu_set_pte"),
        "{}",
        r.render()
    );
    assert_eq!(
        (r.step, r.cpu, r.op.as_deref()),
        (Some(2), Some(0), Some("set_pte"))
    );
    assert_eq!(r.fault_explained.as_deref(), Some("NULL"), "{}", r.render());
    let top = &r.frames[0];
    assert!(
        top.file.ends_with("lazy_mmu.c") && top.line > 0,
        "top frame not symbolized: {}",
        r.render()
    );
    let v = r.verdict(&p);
    assert_eq!(
        v.findings[0].signature(),
        "lazymmu-crash-__lazy_mmu_set_pte"
    );
    assert_eq!(v.findings[0].step, 2);
}

#[test]
fn a_batch_goes_on_after_a_crash_in_a_fresh_executor() {
    let mut e = executor(&fixture("crash/lazy_mmu.c"), quick());
    let ok = programs(7, 3, Mode::Realistic).collect::<Vec<_>>();
    let batch = vec![
        ok[0].clone(),
        null_crash(),
        ok[1].clone(),
        null_crash(),
        ok[2].clone(),
    ];
    let out = e.run_batch(&batch, false, None);
    let kinds: Vec<bool> = out.iter().map(|o| matches!(o, Outcome::Died(..))).collect();
    assert_eq!(kinds, [false, true, false, true, false]);
    // One executor to start, one after each crash.
    assert_eq!(e.stats.executors_started, 3);
    // The second crash's executor had run one program before it.
    let Outcome::Died(_, history) = &out[3] else {
        unreachable!()
    };
    assert_eq!(history, &vec![ok[1].clone()]);
}

#[test]
fn a_hang_is_cut_at_the_timeout_and_named_by_its_op() {
    let p = crash_program("22-endless-apply-loop");
    let mut e = executor(&mutant("22"), quick());
    let t0 = Instant::now();
    let Outcome::Died(r, _) = e.run_one(&p, false) else {
        panic!("the endless loop returned");
    };
    // Cut at the timeout (with room for a loaded test machine), not left to spin.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(r.kind, DeathKind::Hang { timeout_ms: 300 });
    assert_eq!(
        r.verdict(&p).findings[0].signature(),
        "lazymmu-hang-lazy_mmu_mode_disable"
    );
    // Where it spun: the handler recorded the stack before the executor went.
    assert!(
        r.frames.iter().any(|f| f.file.ends_with("lazy_mmu.c")),
        "{}",
        r.render()
    );
}

#[test]
fn the_deadline_is_honoured_whatever_the_target_does() {
    let p = crash_program("22-endless-apply-loop");
    let mut e = executor(
        &mutant("22"),
        ExecOptions {
            timeout: Duration::from_secs(30),
            ..ExecOptions::default()
        },
    );
    let t0 = Instant::now();
    let out = e.run_batch(
        &[p.clone(), p],
        false,
        Some(t0 + Duration::from_millis(500)),
    );
    assert!(
        out.is_empty(),
        "a program cut by the deadline is no finding"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t0.elapsed()
    );
}

#[test]
fn every_crash_mutant_dies_at_its_site_and_the_reference_does_not() {
    let mut reference = executor(&Source::Reference, quick());
    for stem in [
        "19-null-range-apply",
        "20-store-past-table",
        "21-cache-index-oob",
        "22-endless-apply-loop",
    ] {
        let src = std::fs::read_to_string(regression_path(stem)).unwrap();
        let want = src
            .lines()
            .find_map(|l| l.strip_prefix(&format!("# expect: mutant:{stem} ")))
            .unwrap_or_else(|| panic!("{stem}: no expect line"))
            .trim()
            .to_string();
        let p = crash_program(stem);
        assert!(lazymmu_harness::contract::is_realistic(&p), "{stem}");
        let mut e = executor(&mutant(stem), quick());
        let v = e.verdict(&p);
        assert_eq!(
            v.findings[0].signature(),
            want,
            "{stem}: {:#?}",
            v.findings[0]
        );
        assert!(
            reference.verdict(&p).findings.is_empty(),
            "{stem}: reference"
        );
    }
}

#[test]
fn a_store_past_the_table_is_explained_against_the_table() {
    let p = crash_program("20-store-past-table");
    let mut e = executor(&mutant("20"), quick());
    let Outcome::Died(r, _) = e.run_one(&p, false) else {
        panic!("no crash");
    };
    assert_eq!(
        r.fault_explained.as_deref(),
        Some("mm0 t0 + 0x800 (1 entry past the end)"),
        "{}",
        r.render()
    );
}

/// The reset between programs is complete: N programs in one executor give the same
/// verdicts and traces as each run alone in a fresh one, for the reference, fixtures of
/// the older generations and every mutant (crashing ones included).
#[test]
fn programs_in_one_executor_equal_each_run_alone() {
    let mut sources = vec![Source::Reference, tree("rfc"), tree("v2")];
    sources.extend(
        lazymmu_target::sources::mutant_paths()
            .into_iter()
            .map(Source::Mutant),
    );
    for (k, s) in sources.iter().enumerate() {
        let mut batch: Vec<Program> = programs(0x5e + k as u64, 20, Mode::Realistic)
            .chain(programs(0x7e + k as u64, 20, Mode::Adversarial))
            .collect();
        if let Source::Mutant(path) = s {
            let stem = lazymmu_target::sources::mutant_name(path);
            if ["19", "20", "21", "22"].iter().any(|n| stem.starts_with(n)) {
                batch.insert(13, crash_program(&stem));
            }
        }
        // Long enough that no real program overruns it on a loaded machine; the one
        // endless loop (mutant 22) still ends.
        let steady = ExecOptions {
            timeout: Duration::from_secs(2),
            ..ExecOptions::default()
        };
        let mut together = executor(s, steady.clone());
        let mut alone = executor(s, steady);
        let out = together.run_batch(&batch, true, None);
        assert_eq!(out.len(), batch.len());
        for (i, (p, o)) in batch.iter().zip(&out).enumerate() {
            let a = alone.run_alone(p, true);
            match (o, &a) {
                (Outcome::Ran(x), Outcome::Ran(y)) => {
                    assert_eq!(x.verdict, y.verdict, "{s:?} program {i}");
                    assert_eq!(x.target, y.target, "{s:?} program {i}");
                }
                (Outcome::Died(x, _), Outcome::Died(y, _)) => {
                    assert_eq!(
                        (x.class(), x.site_name(), x.step),
                        (y.class(), y.site_name(), y.step),
                        "{s:?} program {i}"
                    );
                }
                _ => panic!(
                    "{s:?} program {i}: in one executor {}, alone {}",
                    matches!(o, Outcome::Ran(_)),
                    matches!(a, Outcome::Ran(_))
                ),
            }
        }
    }
}

/// `kill -9` of a supervisor takes its executor with it.
#[test]
fn executors_die_with_their_supervisor() {
    let (r, w) = {
        let mut fds = [0; 2];
        // SAFETY: a two-element array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        (fds[0], fds[1])
    };
    // SAFETY: the child builds an executor, reports its pid, then waits to be killed.
    let supervisor = unsafe { libc::fork() };
    if supervisor == 0 {
        let p = crash_program("22-endless-apply-loop");
        let mut e = executor(
            &mutant("22"),
            ExecOptions {
                timeout: Duration::from_secs(600),
                ..ExecOptions::default()
            },
        );
        // Runs forever in the executor; report the executor's pid first.
        let me = std::process::id();
        let pid_of_child = move || -> i32 {
            let list = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children"))
                .unwrap_or_default();
            list.split_whitespace()
                .next()
                .and_then(|x| x.parse().ok())
                .unwrap_or(0)
        };
        std::thread::spawn(move || loop {
            let pid = pid_of_child();
            if pid != 0 {
                let b = pid.to_ne_bytes();
                // SAFETY: writing four bytes to our pipe.
                unsafe { libc::write(w, b.as_ptr().cast(), 4) };
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        });
        e.run_one(&p, false);
        // SAFETY: leaving the forked test process.
        unsafe { libc::_exit(0) };
    }
    let mut b = [0u8; 4];
    // SAFETY: reading four bytes from our pipe.
    assert_eq!(unsafe { libc::read(r, b.as_mut_ptr().cast(), 4) }, 4);
    let exec_pid = i32::from_ne_bytes(b);
    assert!(exec_pid > 0);
    // SAFETY: killing and reaping our own child.
    unsafe {
        libc::kill(supervisor, libc::SIGKILL);
        libc::waitpid(supervisor, std::ptr::null_mut(), 0);
    }
    let t0 = Instant::now();
    while std::path::Path::new(&format!("/proc/{exec_pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{exec_pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "executor {exec_pid} outlived its supervisor"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A crash that needs state from earlier programs is the rig's defect (its reset missed
/// something): saved as a state leak with the sequence that reproduces it, never as the
/// implementation's crash.
#[test]
fn a_crash_that_does_not_reproduce_alone_is_reported_as_a_state_leak() {
    use lazymmu_engine::fuzz::{Config, Fuzzer, ModeSel};
    use lazymmu_engine::out::OutDir;
    let section = parse(
        "lazymmu-ops v1 cpus=1 facility13=on tlb_lc=on mode=realistic
mm0 user attach=0 tables=1
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..4]
cpu0 lazy_mmu_mode_disable
cpu0 unlock_ptl mm0 t0
",
    )
    .unwrap();
    let dir = std::env::temp_dir().join(format!("lazymmu-leak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = Config {
        seed: 1,
        mode: ModeSel::Realistic,
        runs: Some(8),
        time: None,
        seeds: vec![section; 8],
        out: Some(OutDir::new(&dir).unwrap()),
        worker: 0,
        kill_against: None,
        minimizer: None,
    };
    // No program of this test may hang: a generous timeout for a loaded test machine.
    let patient = ExecOptions {
        timeout: Duration::from_secs(20),
        ..ExecOptions::default()
    };
    let stats = Fuzzer::new(executor(&fixture("leaky/lazy_mmu.c"), patient), cfg)
        .run(Duration::from_secs(3600), |_| {});
    let sigs: Vec<&String> = stats.findings.keys().collect();
    assert_eq!(
        sigs,
        ["lazymmu-rig-state-leak-arch_enter_lazy_mmu_mode_with_ptes"],
        "{stats:?}"
    );
    let leak = dir.join("findings/lazymmu-rig-state-leak-arch_enter_lazy_mmu_mode_with_ptes");
    let report = std::fs::read_to_string(leak.join("report.txt")).unwrap();
    assert!(report.contains("a rig defect"), "{report}");
    // The executor ran four programs before the crashing fifth: all five are saved.
    assert_eq!(std::fs::read_dir(leak.join("sequence")).unwrap().count(), 5);
    let _ = std::fs::remove_dir_all(&dir);
}
