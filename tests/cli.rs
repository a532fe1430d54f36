//! The `lazymmu` command line, run as a user would.

use std::process::Command;

fn lazymmu(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lazymmu"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn temp_file(name: &str, contents: &str) -> String {
    let dir = std::env::temp_dir().join(format!("lazymmu-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_string_lossy().into_owned()
}

const PROGRAM: &str = "\
lazymmu-ops v1 cpus=2 facility13=on tlb_lc=on mode=realistic
mm0 user attach=0,1 tables=1
init mm0 t0[5] = 0x1a03d
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..16]
cpu0 ptep_get_and_clear mm0 t0[5]
cpu0 lazy_mmu_mode_disable
cpu0 flush_tlb_range mm0 t0[0..16]
cpu0 unlock_ptl mm0 t0
";

#[test]
fn replay_prints_returns_iptes_and_sync_points() {
    let f = temp_file("ok.ops", PROGRAM);
    let (ok, out, err) = lazymmu(&["replay", &f]);
    assert!(ok, "{err}");
    assert!(
        out.contains("#2   cpu0 ptep_get_and_clear mm0 t0[5]  -> 0x1a03d"),
        "{out}"
    );
    // Two CPUs run the mm: the lazy policy needs a global IPTE.
    assert!(out.contains("ipte global mm0 t0[5]"), "{out}");
    assert!(out.contains("== sync point (leave) of cpu0 =="), "{out}");
    assert!(
        out.contains("memory mm0 t0[5]: 0x1a03d -> 0x400 (none)"),
        "{out}"
    );
    assert!(out.contains("machine rule events: none"), "{out}");
}

#[test]
fn replay_json_is_a_trace() {
    let f = temp_file("json.ops", PROGRAM);
    let (ok, out, _) = lazymmu(&["replay", "--json", &f]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["steps"][2]["ret"]["Pte"], 0x1a03d);
    assert_eq!(v["end"]["counters"]["ipte_global"], 1);
}

#[test]
fn malformed_program_error_names_file_line_and_column() {
    let bad = PROGRAM.replace(
        "ptep_get_and_clear mm0 t0[5]",
        "ptep_get_and_clear mm0 t0[5",
    );
    let f = temp_file("bad.ops", &bad);
    let (ok, _, err) = lazymmu(&["replay", &f]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "{f}:6:29: expected a PTE like 't0[5]', found 't0[5'"
        )),
        "{err}"
    );
}

#[test]
fn missing_file_is_named() {
    let (ok, _, err) = lazymmu(&["replay", "/nonexistent/x.ops"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/x.ops"), "{err}");
}

#[test]
fn check_tells_realistic_from_adversarial() {
    let f = temp_file("real.ops", PROGRAM);
    let (ok, out, _) = lazymmu(&["check", &f]);
    assert!(ok && out.contains("realistic"), "{out}");
    let unlocked = PROGRAM
        .replace("cpu0 lock_ptl mm0 t0\n", "")
        .replace("cpu0 unlock_ptl mm0 t0\n", "");
    let f = temp_file("adv.ops", &unlocked);
    let (ok, out, err) = lazymmu(&["check", &f]);
    assert!(!ok);
    assert!(
        out.contains(&format!(
            "{f}:4: step 0 (cpu0): section on mm0 t0 without its page-table lock"
        )),
        "{out}"
    );
    assert!(err.contains("adversarial"), "{err}");
}

#[test]
fn gen_is_deterministic_and_parses_back() {
    let (_, a, _) = lazymmu(&["gen", "--seed", "7"]);
    let (_, b, _) = lazymmu(&["gen", "--seed", "7"]);
    assert_eq!(a, b);
    let f = temp_file("gen.ops", &a);
    let (ok, out, _) = lazymmu(&["check", &f]);
    assert!(ok, "{out}");
}

#[test]
fn replay_runs_the_reference_c_implementation() {
    let seed = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/corpus/seeds/zap_pte_range.ops"
    );
    let (ok, out, err) = lazymmu(&["replay", "--reference", seed]);
    assert!(ok, "{err}");
    assert!(out.starts_with("implementation: reference\n"), "{out}");
    assert!(
        out.contains("ipte-range global mm0 t0[16..19] (3 entries)"),
        "{out}"
    );
}

#[test]
fn compile_names_what_is_wrong_with_a_tree() {
    let tree = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/target/fixtures/errors/empty-tree"
    );
    let (ok, _, err) = lazymmu(&["compile", "--kernel", tree]);
    assert!(!ok);
    assert!(
        err.contains(&format!("no lazy-MMU implementation under {tree}")),
        "{err}"
    );
    let (ok, out, err) = lazymmu(&["compile", "--mutant", "07"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("generation v3+") && out.contains("bug class: off-by-one range bound"),
        "{out}"
    );
}

fn regression(stem: &str) -> String {
    format!(
        "{}/corpus/regressions/{stem}.ops",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn replay_of_a_crash_reports_site_step_and_address_and_survives() {
    let (ok, out, err) = lazymmu(&[
        "replay",
        &regression("20-store-past-table"),
        "--mutant",
        "20",
    ]);
    assert!(!ok, "{out}");
    assert!(err.contains("lazymmu-crash-range_store"), "{err}");
    assert!(
        err.contains("mm0 t0 + 0x800 (1 entry past the end)"),
        "{err}"
    );
    assert!(
        err.contains("running: step 3 (cpu0 lazy_mmu_mode_disable)"),
        "{err}"
    );
    assert!(
        err.contains("range_store") && err.contains("lazy_mmu.c:"),
        "{err}"
    );
}

#[test]
fn sanitize_address_catches_an_overflow_of_the_implementations_own_object() {
    let (ok, out, err) = lazymmu(&[
        "--sanitize",
        "address",
        "replay",
        &regression("21-cache-index-oob"),
        "--mutant",
        "21",
    ]);
    assert!(!ok, "{out}");
    assert!(err.contains("lazymmu-crash-slot_fill"), "{err}");
    assert!(
        err.contains("AddressSanitizer: heap-buffer-overflow"),
        "{err}"
    );
}

#[test]
fn a_fuzz_campaign_on_code_that_crashes_every_program_ends_on_time_with_one_bug() {
    let out_dir = std::env::temp_dir().join(format!("lazymmu-cli-crashy-{}", std::process::id()));
    let fixture = format!(
        "{}/target/fixtures/past-alloc.patch",
        env!("CARGO_MANIFEST_DIR")
    );
    // Compiled first: the budget is for fuzzing.
    assert!(lazymmu(&["compile", "--mutant", &fixture]).0);
    let t0 = std::time::Instant::now();
    let (ok, out, err) = lazymmu(&[
        "fuzz",
        "--time",
        "3",
        "--mutant",
        &fixture,
        "--out",
        &out_dir.to_string_lossy(),
    ]);
    // Within a second of the budget, with slack for a loaded test machine.
    assert!(t0.elapsed().as_secs_f64() < 5.0, "{:?}", t0.elapsed());
    assert!(!ok, "a crash is a bug: {out}{err}");
    assert!(
        out.contains("1 bug signature(s)") && out.contains("lazymmu-crash-lazy_mmu_online_cpu"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(out_dir);
}

/// Every process a fuzz campaign starts (workers, their executors) dies with it, even
/// when it is killed with SIGKILL.
#[test]
fn kill_9_of_fuzz_leaves_no_process_behind() {
    let out_dir = std::env::temp_dir().join(format!("lazymmu-cli-kill9-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_lazymmu"))
        .args(["fuzz", "--time", "120", "--jobs", "2", "--out"])
        .arg(&out_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let descendants = |pid: u32| -> Vec<u32> {
        let mut all = vec![];
        let mut todo = vec![pid];
        while let Some(p) = todo.pop() {
            let kids =
                std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                all.push(k);
                todo.push(k);
            }
        }
        all
    };
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| !s.contains(") Z") && !s.contains(") X"))
    };
    // Wait until the workers and their executors are up.
    let t0 = std::time::Instant::now();
    let mut tree = vec![];
    while t0.elapsed().as_secs() < 30 {
        tree = descendants(child.id());
        if tree.len() >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(tree.len() >= 4, "workers and executors: {tree:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    let t0 = std::time::Instant::now();
    while tree.iter().any(|&p| alive(p)) {
        assert!(
            t0.elapsed().as_secs() < 5,
            "still running after kill -9 of fuzz: {:?}",
            tree.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(out_dir);
}
