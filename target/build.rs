//! The static build: compiles the reference implementation (or the tree named by
//! `LAZYMMU_KERNEL_TREE`) with the shim into a static library linked into every binary
//! of the rig, for the fuzz targets. Same recipe as the run-time loader (src/recipe.rs).

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "src/recipe.rs"]
#[allow(dead_code)]
mod recipe;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-env-changed=LAZYMMU_KERNEL_TREE");
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-changed=shim");
    println!("cargo:rerun-if-changed=reference");
    println!("cargo:rerun-if-changed=src/recipe.rs");

    let (c_file, header, name) = match std::env::var_os("LAZYMMU_KERNEL_TREE") {
        Some(tree) => {
            let tree = PathBuf::from(tree);
            let c = ["arch/s390/mm/lazy_mmu.c", "arch/s390/mm/ipte_batch.c"]
                .iter()
                .map(|f| tree.join(f))
                .find(|p| p.is_file())
                .unwrap_or_else(|| {
                    panic!(
                        "LAZYMMU_KERNEL_TREE={}: no arch/s390/mm/lazy_mmu.c or ipte_batch.c",
                        tree.display()
                    )
                });
            println!("cargo:rerun-if-changed={}", c.display());
            let h = tree.join("arch/s390/include/asm/lazy_mmu.h");
            (c, h.is_file().then_some(h), tree.display().to_string())
        }
        None => (
            manifest.join("reference/arch/s390/mm/lazy_mmu.c"),
            Some(manifest.join("reference/arch/s390/include/asm/lazy_mmu.h")),
            "reference".to_string(),
        ),
    };
    let tree_include = out.join("tree-include");
    std::fs::create_dir_all(tree_include.join("asm")).unwrap();
    let _ = std::fs::remove_file(tree_include.join("asm/lazy_mmu.h"));
    if let Some(h) = &header {
        std::fs::copy(h, tree_include.join("asm/lazy_mmu.h")).unwrap();
    }
    // Fuzzing builds (cargo fuzz sets --cfg fuzzing) instrument the C code for coverage:
    // with the builder's $CC/$CFLAGS when they are set (OSS-Fuzz), else clang's libFuzzer
    // instrumentation when clang is there, else gcc's trace-pc with a callback shim; ASan
    // too when the Rust side has it. LAZYMMU_C_COVERAGE=none turns it off (to compare),
    // =gcc forces the gcc path.
    println!("cargo:rerun-if-env-changed=LAZYMMU_C_COVERAGE");
    let fuzzing = std::env::var_os("CARGO_CFG_FUZZING").is_some();
    let wanted = std::env::var("LAZYMMU_C_COVERAGE").unwrap_or_else(|_| "auto".into());
    let rustflags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    let asan = rustflags.contains("sanitizer=address");
    // afl.rs instruments Rust with trace-pc-guard, which its runtime implements.
    let afl = rustflags.contains("trace-pc-guard");
    let have_clang = Command::new("clang")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    // An OSS-Fuzz / ClusterFuzzLite builder sets $CC and $CFLAGS for the sanitizer and
    // engine it builds for (ASan plus libFuzzer's coverage, or clang's source coverage in
    // a coverage build): the code under test takes exactly those.
    println!("cargo:rerun-if-env-changed=CFLAGS");
    let builder_cflags: Vec<String> = std::env::var("CFLAGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let (compiler, coverage): (PathBuf, Vec<String>) = if !fuzzing || wanted == "none" {
        (cc::Build::new().get_compiler().path().to_path_buf(), vec![])
    } else if wanted == "auto" && !builder_cflags.is_empty() {
        let cc = std::env::var("CC").unwrap_or_else(|_| "clang".into());
        (PathBuf::from(cc), builder_cflags)
    } else if wanted == "gcc" || !have_clang {
        (
            PathBuf::from("gcc"),
            vec!["-fsanitize-coverage=trace-pc".into()],
        )
    } else if afl {
        (
            PathBuf::from("clang"),
            vec!["-fsanitize-coverage=trace-pc-guard".to_string()],
        )
    } else {
        let mut f = vec!["-fsanitize=fuzzer-no-link".to_string()];
        if asan {
            f.push("-fsanitize=address".into());
        }
        (PathBuf::from("clang"), f)
    };
    if fuzzing {
        let what = if coverage.is_empty() {
            "no coverage instrumentation".to_string()
        } else {
            coverage.join(" ")
        };
        println!(
            "cargo:warning=lazymmu C target for fuzzing: {} ({what})",
            compiler.display()
        );
    }
    let includes = |c: &mut Command| {
        c.arg("-I")
            .arg(&tree_include)
            .arg("-I")
            .arg(manifest.join("shim/include"));
    };
    let compile = |src: &Path, obj: &Path, extra: &[String]| {
        let mut c = Command::new(&compiler);
        c.args(recipe::CFLAGS).args(&coverage).args(extra);
        includes(&mut c);
        run(c.arg("-c").arg(src).arg("-o").arg(obj));
    };
    let impl_o = out.join("impl.o");
    compile(&c_file, &impl_o, &[]);
    let nm = run(Command::new("nm")
        .args(["-g", "--defined-only"])
        .arg(&impl_o));
    let generation = recipe::detect_generation(&recipe::defined_symbols(&nm))
        .unwrap_or_else(|e| panic!("{}: {e}", c_file.display()));
    run(Command::new("objcopy")
        .args(recipe::OBJCOPY_RENAMES)
        .arg(&impl_o));
    let runtime_o = out.join("runtime.o");
    compile(
        &manifest.join("shim/runtime.c"),
        &runtime_o,
        &[format!("-DLAZYMMU_GEN={}", generation.number())],
    );
    let lib = out.join("liblazymmu_builtin.a");
    let _ = std::fs::remove_file(&lib);
    let mut objects = vec![impl_o, runtime_o];
    if coverage.iter().any(|f| f.contains("trace-pc")) {
        let o = out.join("trace_pc.o");
        run(Command::new("gcc")
            .args(["-O2", "-fPIC", "-c"])
            .arg(manifest.join("shim/trace_pc.c"))
            .arg("-o")
            .arg(&o));
        objects.push(o);
    }
    run(Command::new("ar").arg("crs").arg(&lib).args(&objects));
    println!("cargo:rustc-link-search=native={}", out.display());
    println!("cargo:rustc-link-lib=static=lazymmu_builtin");
    println!(
        "cargo:rustc-env=LAZYMMU_BUILTIN_GEN={}",
        generation.number()
    );
    println!("cargo:rustc-env=LAZYMMU_BUILTIN_NAME={name}");
    println!(
        "cargo:rustc-env=LAZYMMU_BUILTIN_FILE={}",
        c_file.file_name().unwrap().to_string_lossy()
    );
}
