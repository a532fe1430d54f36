//! Runs exported KUnit cases in userspace: the case (or a suite of cases) is compiled
//! against the shim's headers of a built implementation plus `triage/kunit/include`,
//! linked with that implementation's `impl.o`, the shim's `runtime.o`, the glue's
//! userspace side and the runner (`triage/kunit/runner/`), and run. The runner prints
//! KTAP (`ok` / `not ok` per case, each failed expectation with file:line and both
//! values) and exits non-zero when a case failed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use lazymmu_target::loader::{self, sanitizer_flags};
use lazymmu_target::{Built, Source};

use crate::export;

/// The files of `triage/kunit/`, embedded so that the runner works from any directory.
const FILES: &[(&str, &str)] = &[
    (
        "include/kunit/test.h",
        include_str!("../kunit/include/kunit/test.h"),
    ),
    (
        "include/linux/lazy_mmu_kunit_glue.h",
        include_str!("../kunit/include/linux/lazy_mmu_kunit_glue.h"),
    ),
    (
        "runner/lazy_mmu_kunit_glue.c",
        include_str!("../kunit/runner/lazy_mmu_kunit_glue.c"),
    ),
    ("runner/main.c", include_str!("../kunit/runner/main.c")),
];

/// Flags for the case, the glue and the runner.
const CFLAGS: &[&str] = &[
    "-std=gnu11",
    "-O1",
    "-g",
    "-fPIC",
    "-Wall",
    "-Wno-unused-parameter",
    "-Werror=implicit-function-declaration",
    "-Werror=incompatible-pointer-types",
    "-Werror=int-conversion",
];

/// What a run gave.
#[derive(Clone, Debug)]
pub struct KunitRun {
    /// Every case passed (or was skipped).
    pub passed: bool,
    /// The runner's exit status (None: killed by a signal).
    pub status: Option<i32>,
    /// KTAP on stdout, then anything on stderr.
    pub output: String,
}

impl KunitRun {
    /// The `not ok N name` lines of the cases.
    pub fn failed_cases(&self) -> Vec<String> {
        self.output
            .lines()
            .filter_map(|l| l.strip_prefix("    not ok "))
            .filter(|l| l.starts_with(|c: char| c.is_ascii_digit()))
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect()
    }
}

fn compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr);
    let first: Vec<&str> = text.lines().take(30).collect();
    Err(format!("{what} failed:\n{}", first.join("\n")))
}

/// A suite file for `code`: itself when it already has its `kunit_test_suite()`, else
/// the code unchanged (so that file:line of a failure is the case's own) followed by
/// the `kunit_case` array and suite of `export::kunit_suite` for its test functions.
pub fn as_suite(code: &str) -> String {
    if code.contains("kunit_test_suite(") || code.contains("kunit_test_suites(") {
        return code.to_string();
    }
    let suite = export::kunit_suite(&[], "lazy-mmu-repro-suite");
    let names: Vec<&str> = code
        .lines()
        .filter_map(|l| {
            let (name, args) = l.strip_prefix("static void ")?.split_once('(')?;
            args.starts_with("struct kunit *test)")
                .then_some(name.trim())
        })
        .collect();
    let cases: String = names
        .iter()
        .map(|n| format!("\tKUNIT_CASE({n}),\n"))
        .collect();
    let at = suite
        .find("\nstatic struct kunit_case ")
        .unwrap_or(suite.len());
    let footer = suite[at..].replacen("_cases[] = {\n", &format!("_cases[] = {{\n{cases}"), 1);
    format!("{code}\n{footer}")
}

/// A fresh private directory under the system's temp directory.
fn work_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "lazymmu-kunit-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Builds the runner for `code` (a case from `export::kunit*` or a suite from
/// `export::kunit_suite`) against `built` into `dir/kunit-runner`.
/// `shown` is the file name failures are reported at.
pub fn build_runner(built: &Built, code: &str, shown: &str, dir: &Path) -> Result<PathBuf, String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    for (name, text) in FILES {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).map_err(|e| io(dir, e))?;
        std::fs::write(&p, text).map_err(|e| io(&p, e))?;
    }
    let case = dir.join("case.c");
    let text = format!(
        "#line 1 \"{}\"\n{}",
        shown.replace(['"', '\\'], "_"),
        as_suite(code)
    );
    std::fs::write(&case, text).map_err(|e| io(&case, e))?;
    let includes = [
        dir.join("include"),
        built.dir.join("tree-include"),
        built.dir.join("shim/include"),
    ];
    let mut objs = vec![];
    for (src, what) in [
        (case, "compiling the KUnit case"),
        (
            dir.join("runner/lazy_mmu_kunit_glue.c"),
            "compiling the glue",
        ),
        (dir.join("runner/main.c"), "compiling the runner"),
    ] {
        let obj = src.with_extension("o");
        let mut cmd = Command::new(compiler());
        cmd.args(CFLAGS).args(sanitizer_flags());
        for i in &includes {
            cmd.arg("-I").arg(i);
        }
        run(cmd.arg("-c").arg(&src).arg("-o").arg(&obj), what)?;
        objs.push(obj);
    }
    let exe = dir.join("kunit-runner");
    run(
        Command::new(compiler())
            .args(sanitizer_flags())
            .arg("-o")
            .arg(&exe)
            .args(&objs)
            .arg(built.dir.join("impl.o"))
            .arg(built.dir.join("runtime.o")),
        "linking the runner with the implementation",
    )?;
    Ok(exe)
}

/// Builds and runs `code` against the built implementation `built`.
pub fn run_built(built: &Built, code: &str, shown: &str) -> Result<KunitRun, String> {
    let dir = work_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let result = build_runner(built, code, shown, &dir).and_then(|exe| {
        let out = Command::new(&exe)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        Ok(KunitRun {
            passed: out.status.success(),
            status: out.status.code(),
            output,
        })
    });
    if std::env::var_os("LAZYMMU_KUNIT_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Compiles the implementation `source` (or finds it in the cache), then builds and
/// runs `code` against it; failures are reported at `shown:LINE`.
pub fn run_case(source: &Source, code: &str, shown: &str) -> Result<KunitRun, String> {
    let spec = source.resolve().map_err(|e| e.to_string())?;
    let built = loader::build(&spec).map_err(|e| e.to_string())?;
    run_built(&built, code, shown)
}

/// `lazymmu kunit-run FILE.c IMPL`: runs an exported case or suite file on `source`,
/// prints the runner's KTAP, and fails when a case failed.
pub fn run_file(source: &Source, file: &Path) -> Result<(), String> {
    let code = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let r = run_case(source, &code, &file.display().to_string())?;
    print!("{}", r.output);
    if r.passed {
        Ok(())
    } else {
        Err(match r.failed_cases().len() {
            0 => "the KUnit runner failed".to_string(),
            n => format!("{n} KUnit case(s) failed"),
        })
    }
}
