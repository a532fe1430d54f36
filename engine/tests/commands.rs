//! The engine's commands as library code: the campaign supervisor (worker restarts), the
//! mutants runner, corpus merge and prune, and the throughput benchmark. Worker processes
//! are stand-in scripts here, so the supervisors are tested on their own.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use lazymmu_engine::campaign::{self, Plan};
use lazymmu_engine::executor::ExecOptions;
use lazymmu_engine::fuzz::{ModeSel, Stats};
use lazymmu_lang::text::to_text;
use lazymmu_lang::Mode;
use lazymmu_target::Source;
use lazymmu_testkit::{executor, programs};

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lazymmu-commands-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A stand-in worker: a shell script that prints `stats` as its JSON line, then dies of
/// SIGSEGV the first time it runs (when `die_once` is set) and exits cleanly after that.
fn fake_worker(dir: &Path, stats: &Stats, die_once: bool) -> PathBuf {
    let exe = dir.join("worker.sh");
    let marker = dir.join("died-once");
    let json = serde_json::to_string(stats).unwrap();
    let die = if die_once {
        format!(
            "if [ ! -e '{m}' ]; then touch '{m}'; kill -SEGV $$; fi\n",
            m = marker.display()
        )
    } else {
        String::new()
    };
    // printf, not echo: a shell's echo may expand the JSON's backslash escapes.
    std::fs::write(
        &exe,
        format!("#!/bin/sh\nprintf '%s\\n' '{json}'\n{die}exit 0\n"),
    )
    .unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

fn stats(runs: u64) -> Stats {
    let mut s = Stats {
        runs,
        ..Stats::default()
    };
    s.findings.insert("lazymmu-memory-end".into(), 2);
    s.bugs.insert("lazymmu-memory-end".into());
    s
}

#[test]
fn a_dead_worker_is_a_rig_bug_and_is_restarted() {
    let dir = temp_dir("restart");
    let plan = Plan {
        sources: vec![Source::Reference],
        out: dir.join("out"),
        seeds: dir.clone(),
        seed: 1,
        jobs: 1,
        mode: ModeSel::Realistic,
        time: Some(Duration::from_secs(30)),
        runs: None,
        timeout: Duration::from_secs(1),
        worker_exe: fake_worker(&dir, &stats(100), true),
        c_coverage: true,
    };
    let summary = campaign::run(&plan).unwrap();
    assert_eq!(summary.worker_deaths, 1);
    let im = &summary.implementations[0];
    // The dead worker's runs and the restarted one's both count.
    assert_eq!(summary.runs, 200);
    assert_eq!(im.findings.get("lazymmu-rig-bug-worker"), Some(&1));
    assert_eq!(im.findings.get("lazymmu-memory-end"), Some(&4));
    assert!(im.bugs.contains("lazymmu-memory-end"));
    assert!(summary.render().contains("rig bug: 1 worker(s) died"));
    assert_eq!(summary.bad(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_worker_command_line_is_read_back_by_the_rig() {
    let a = campaign::WorkerArgs {
        source: Source::Mutant(PathBuf::from("/x/07-off.patch")),
        worker: 3,
        seed: 9,
        mode: ModeSel::Mixed,
        out: PathBuf::from("/o"),
        seeds: PathBuf::from("/s"),
        runs: Some(5),
        time: Some(Duration::from_millis(1500)),
        kill: true,
        timeout: Duration::from_millis(250),
        c_coverage: false,
    };
    assert_eq!(
        a.command_line().join(" "),
        "fuzz-worker --worker 3 --seed 9 --mode mixed --timeout 250 --out /o --seeds /s \
         --mutant /x/07-off.patch --runs 5 --time 1.500 --kill --no-c-coverage"
    );
}

#[test]
fn the_mutants_runner_tables_kills_and_survivors_and_saves_the_killing_program() {
    let dir = temp_dir("mutants");
    let program = programs(3, 1, Mode::Realistic).next().unwrap();
    let killed = Stats {
        runs: 42,
        killed: Some(lazymmu_engine::fuzz::Kill {
            signature: "lazymmu-return-ptep_get".into(),
            runs: 42,
            elapsed_ms: 1500,
            program: to_text(&program),
        }),
        ..Stats::default()
    };
    let mutants = lazymmu_target::sources::mutants_matching(&["02".into()]);
    let plan = lazymmu_engine::mutants::Plan {
        mutants: mutants.clone(),
        budget: Duration::from_secs(5),
        jobs: 1,
        seed: 0,
        seeds: dir.clone(),
        out: dir.join("out"),
        timeout: Duration::from_secs(1),
        worker_exe: fake_worker(&dir, &killed, false),
    };
    let rows = lazymmu_engine::mutants::run(&plan).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].class, "stale ptep_get");
    assert_eq!(
        rows[0].killed,
        Some((1.5, 42, "lazymmu-return-ptep_get".into()))
    );
    let table = lazymmu_engine::mutants::table(&rows, plan.budget);
    assert!(
        table.contains("02-stale-ptep-get") && table.contains("killed 1/1"),
        "{table}"
    );
    let kill = std::fs::read_to_string(
        dir.join("out")
            .join(Source::Mutant(mutants[0].clone()).dir_name())
            .join("kill.ops"),
    )
    .unwrap();
    let r = lazymmu_lang::reprofile::ReproFile::parse(&kill).unwrap();
    assert_eq!(
        r.implementation.as_deref(),
        Some("mutant:02-stale-ptep-get")
    );
    assert_eq!(r.program, program);

    // A worker that never kills: the mutant survived.
    let plan = lazymmu_engine::mutants::Plan {
        worker_exe: fake_worker(&dir, &Stats::default(), false),
        ..plan
    };
    let rows = lazymmu_engine::mutants::run(&plan).unwrap();
    assert_eq!(rows[0].killed, None);
    assert!(lazymmu_engine::mutants::table(&rows, plan.budget).contains("NO"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn corpus_merge_keeps_every_feature_and_prune_deletes_the_rest() {
    let dir = temp_dir("corpus");
    let (a, b) = (dir.join("a"), dir.join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let all: Vec<_> = programs(0xc0, 60, Mode::Realistic).collect();
    for (i, p) in all.iter().enumerate() {
        let d = if i % 2 == 0 { &a } else { &b };
        std::fs::write(d.join(format!("{i:03}.ops")), to_text(p)).unwrap();
    }
    // The same program twice counts once.
    std::fs::write(b.join("dup.ops"), to_text(&all[0])).unwrap();
    let mut e = executor(&Source::Reference, ExecOptions::default());
    let merged =
        lazymmu_engine::corpus::merge(&mut e, &[a.clone(), b.clone()], &dir.join("out"), false)
            .unwrap();
    assert_eq!(merged.read, 60);
    assert!(merged.kept > 0 && merged.kept < 60, "{merged:?}");
    // The kept programs reach every feature the 60 reach.
    let kept = lazymmu_engine::corpus::read_inputs(std::slice::from_ref(&merged.dir));
    assert_eq!(kept.len(), merged.kept);
    let mut features = |ps: &mut dyn Iterator<Item = &lazymmu_lang::Program>| {
        ps.flat_map(|p| e.verdict(p).features)
            .collect::<std::collections::BTreeSet<u32>>()
    };
    let of_kept = features(&mut kept.iter().map(|(_, p)| p));
    let whole = features(&mut all.iter());
    assert_eq!(of_kept, whole);
    assert_eq!(whole.len(), merged.features);

    // Prune in place: the files that add nothing go.
    let pruned = lazymmu_engine::corpus::merge(&mut e, std::slice::from_ref(&a), &a, true).unwrap();
    let left = std::fs::read_dir(&a).unwrap().count();
    assert_eq!(left, pruned.kept);
    assert!(pruned.kept < 30);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_throughput_benchmark_runs() {
    lazymmu_engine::bench::throughput(200, 1).unwrap();
}
