//! The differential target for AFL++ (afl.rs), in persistent mode: the static build
//! against the oracle. Every program starts on a fresh machine and the C state is reset
//! (CKernel::start), so iterations do not leak into each other.
//!
//!   cargo afl build --release --manifest-path fuzz/afl/Cargo.toml
//!   cargo afl fuzz -i corpus/seeds -o build/afl -- build/release/differential_afl

fn main() {
    let mut differ = lazymmu_fuzz_glue::builtin_differ();
    afl::fuzz!(|data: &[u8]| {
        let program = lazymmu_fuzz_glue::decode(data);
        let verdict = lazymmu_fuzz_glue::verdict(&mut differ, &program);
        lazymmu_fuzz_glue::report(&verdict, &program);
    });
}
