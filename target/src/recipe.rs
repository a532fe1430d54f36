//! How an implementation is compiled and recognised: shared by the run-time loader and by
//! build.rs (which includes this file by path), so both builds are the same recipe.

use std::collections::BTreeSet;

/// Flags for both the implementation file and the runtime. `-Werror=incompatible-pointer-
/// types` catches a `get_cpu_var` of the wrong shape (docs/abi.md#shapes); `-Wsign-compare`
/// fires in v3+, so warnings are not errors in general.
pub const CFLAGS: &[&str] = &[
    "-std=gnu11",
    "-O1",
    "-g",
    "-fPIC",
    "-fno-common",
    "-Wall",
    "-Wno-unused-parameter",
    "-Wno-sign-compare",
    "-Werror=incompatible-pointer-types",
    "-Werror=implicit-function-declaration",
    "-Werror=int-conversion",
    "-Werror=return-type",
];

/// The implementation's static data goes into sections of its own, so that the runtime
/// can restore it between programs (`__start_`/`__stop_` symbols).
pub const OBJCOPY_RENAMES: &[&str] = &[
    "--rename-section",
    ".data=lazymmu_impl_data",
    "--rename-section",
    ".bss=lazymmu_impl_bss",
];

/// API generation of an implementation file (docs/abi.md#generations).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Generation {
    /// RFC (2026-03), ipte_batch.c, marker 0.
    Rfc,
    /// v2 (2026-04), ipte_batch.c, marker 0.
    V2,
    /// v3..v6 (2026-06/07), lazy_mmu.c, marker 0x800.
    V3,
}

impl Generation {
    /// The `LAZYMMU_GEN` value runtime.c is compiled with.
    pub fn number(self) -> u32 {
        match self {
            Generation::Rfc => 1,
            Generation::V2 => 2,
            Generation::V3 => 3,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Generation::Rfc => "RFC",
            Generation::V2 => "v2",
            Generation::V3 => "v3+",
        }
    }
    /// The "nothing pending" value of this generation.
    pub fn marker(self) -> u64 {
        match self {
            Generation::Rfc | Generation::V2 => 0,
            Generation::V3 => 0x800,
        }
    }
    /// The symbol that identifies the generation (its range-enter hook).
    pub fn enter_hook(self) -> &'static str {
        match self {
            Generation::Rfc => "arch_enter_lazy_mmu_mode_pte",
            Generation::V2 => "arch_enter_lazy_mmu_mode_for_pte_range",
            Generation::V3 => "arch_enter_lazy_mmu_mode_with_ptes",
        }
    }
    /// Every symbol a file of this generation must define.
    pub fn required(self) -> Vec<&'static str> {
        let mut v = vec![
            self.enter_hook(),
            "arch_leave_lazy_mmu_mode",
            "arch_flush_lazy_mmu_mode",
        ];
        match self {
            Generation::V3 => v.extend([
                "arch_enter_lazy_mmu_mode",
                "__lazy_mmu_set_pte",
                "__lazy_mmu_ptep_get",
                "__lazy_mmu_ptep_test_and_clear_young",
                "__lazy_mmu_ptep_get_and_clear",
                "__lazy_mmu_ptep_modify_prot_start",
                "__lazy_mmu_ptep_modify_prot_commit",
                "__lazy_mmu_ptep_set_wrprotect",
                "lazy_mmu_online_cpu",
                "lazy_mmu_offline_cpu",
            ]),
            Generation::Rfc | Generation::V2 => {
                v.extend([
                    "ipte_batch_set_pte",
                    "ipte_batch_ptep_get",
                    "ipte_batch_ptep_test_and_clear_young",
                    "ipte_batch_ptep_get_and_clear",
                    "ipte_batch_ptep_modify_prot_start",
                    "ipte_batch_ptep_modify_prot_commit",
                    "ipte_batch_ptep_set_wrprotect",
                ]);
                if self == Generation::Rfc {
                    v.push("ipte_batch_ptep_get_and_clear_full");
                }
            }
        }
        v
    }
}

/// Defined global symbols of an object file, from `nm -g --defined-only` output.
pub fn defined_symbols(nm_output: &str) -> BTreeSet<String> {
    nm_output
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, kind, name) = (f.next()?, f.next()?, f.next()?);
            (kind != "U").then(|| name.to_string())
        })
        .collect()
}

/// Recognises the generation from the symbols a file defines.
pub fn detect_generation(defined: &BTreeSet<String>) -> Result<Generation, String> {
    let candidates = [Generation::V3, Generation::V2, Generation::Rfc];
    let gen = candidates
        .into_iter()
        .find(|g| defined.contains(g.enter_hook()))
        .ok_or_else(|| {
            let found: Vec<&str> = defined.iter().map(String::as_str).collect();
            format!(
                "unknown generation: the file defines [{}], but none of the range-enter hooks \
             that identify a generation: {} (v3+), {} (v2), {} (RFC)",
                found.join(", "),
                Generation::V3.enter_hook(),
                Generation::V2.enter_hook(),
                Generation::Rfc.enter_hook()
            )
        })?;
    let missing: Vec<&str> = gen
        .required()
        .into_iter()
        .filter(|s| !defined.contains(*s))
        .collect();
    if missing.is_empty() {
        Ok(gen)
    } else {
        Err(format!(
            "looks like generation {} (defines {}) but does not define: {}",
            gen.name(),
            gen.enter_hook(),
            missing.join(", ")
        ))
    }
}
