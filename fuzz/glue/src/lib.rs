//! Glue between libFuzzer (or AFL++) and the rig's harness, in the style of wasmtime's
//! crates/fuzzing: generators, oracles and checkers live in the library crates; the fuzz
//! targets only decode an input, run it and report.

use lazymmu_harness::check::{Class, Finding, Verdict, FEATURES};
use lazymmu_harness::Differ;
use lazymmu_lang::text::to_text;
use lazymmu_lang::Program;

/// An input is either a program in the `.ops` text format (what the structure-aware
/// mutator writes, and what seed corpora hold) or generator bytes (anything else).
pub fn decode(data: &[u8]) -> Program {
    lazymmu_harness::gen::decode_input(data, lazymmu_engine::mutate::target_mode())
}

/// libFuzzer reads these as extra coverage: the rig's model features.
#[used]
#[link_section = "__libfuzzer_extra_counters"]
static mut EXTRA_COUNTERS: [u8; FEATURES as usize] = [0; FEATURES as usize];

/// Exposes the model features of a run as libFuzzer extra counters.
pub fn record_features(v: &Verdict) {
    // SAFETY: libFuzzer runs the target on one thread; it reads the counters after the
    // run and clears them before the next.
    let counters = unsafe { &mut *std::ptr::addr_of_mut!(EXTRA_COUNTERS) };
    for &f in &v.features {
        let c = &mut counters[f as usize];
        *c = c.saturating_add(1);
    }
}

// One non-inlined frame per finding class, so crash deduplication by stack (OSS-Fuzz,
// ClusterFuzz) separates the classes.
macro_rules! class_frames {
    ($($name:ident),*) => {$(
        #[inline(never)]
        #[cold]
        pub fn $name(f: &Finding, program: &Program) -> ! {
            eprintln!("==lazymmu== {} at step {} (cpu{} {}): {}\n  target: {}\n  oracle: {}\n{}", f.signature(), f.step, f.cpu, f.op, f.detail, f.target, f.oracle, to_text(program));
            panic!("{}", f.signature());
        }
    )*};
}
class_frames!(
    lazymmu_found_return,
    lazymmu_found_memory,
    lazymmu_found_marker_leak,
    lazymmu_found_store_valid,
    lazymmu_found_stale_tlb,
    lazymmu_found_perf_global_ipte,
    lazymmu_found_wild_access,
    lazymmu_found_crash,
    lazymmu_found_unrouted,
    lazymmu_found_uv_valid,
    lazymmu_found_assertion
);

/// Aborts on the first finding that is a bug or performance divergence on a realistic
/// program (hardening findings are reported only when `LAZYMMU_HARDENING` is set).
pub fn report(v: &Verdict, program: &Program) {
    let hardening = std::env::var_os("LAZYMMU_HARDENING").is_some();
    let Some(f) = v.findings.iter().find(|f| hardening || !f.hardening) else {
        return;
    };
    match f.class {
        Class::Return => lazymmu_found_return(f, program),
        Class::Memory => lazymmu_found_memory(f, program),
        Class::Marker => lazymmu_found_marker_leak(f, program),
        Class::StoreValid => lazymmu_found_store_valid(f, program),
        Class::StaleTlb => lazymmu_found_stale_tlb(f, program),
        Class::PerfGlobalIpte => lazymmu_found_perf_global_ipte(f, program),
        Class::Wild => lazymmu_found_wild_access(f, program),
        Class::Crash => lazymmu_found_crash(f, program),
        Class::Unrouted => lazymmu_found_unrouted(f, program),
        Class::UvValid => lazymmu_found_uv_valid(f, program),
        Class::Assertion => lazymmu_found_assertion(f, program),
        // In-process (libFuzzer, AFL++) the engine itself catches crashes and hangs;
        // these classes come only from the rig's executors.
        Class::Hang | Class::RigBug => lazymmu_found_crash(f, program),
    }
}

/// The verdict of `program` on `d`. A panic of the rig's own code (harness, oracle,
/// checkers) is a rig bug: it aborts from `lazymmu_rig_bug`, never as a finding.
pub fn verdict(d: &mut Differ, program: &Program) -> Verdict {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| d.verdict(program)))
        .unwrap_or_else(|_| lazymmu_rig_bug())
}

/// The implementation linked in by the static build: the reference, or the tree named
/// by `LAZYMMU_KERNEL_TREE` when the fuzz target was built.
pub fn builtin_differ() -> Differ {
    let lib = lazymmu_target::Library::builtin().expect("the static build is linked in once");
    Differ::new(lazymmu_target::CKernel::new(lib))
}

/// The structure-aware mutator (the engine's, which checks what it returns and turns a
/// panic of the rig into `lazymmu_rig_bug` with the input saved).
pub use lazymmu_engine::mutate::{lazymmu_rig_bug, mutate_input};
