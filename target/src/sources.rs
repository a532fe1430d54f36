//! The shim and the reference implementation, embedded so that the rig compiles them
//! from any working directory.

/// Every shim file, by its path under the shim directory.
pub const SHIM_FILES: &[(&str, &str)] = &[
    (
        "include/shim/types.h",
        include_str!("../shim/include/shim/types.h"),
    ),
    (
        "include/shim/stubs.h",
        include_str!("../shim/include/shim/stubs.h"),
    ),
    (
        "include/shim/hooks.h",
        include_str!("../shim/include/shim/hooks.h"),
    ),
    (
        "include/shim/op.h",
        include_str!("../shim/include/shim/op.h"),
    ),
    (
        "include/linux/pgtable.h",
        include_str!("../shim/include/linux/pgtable.h"),
    ),
    (
        "include/linux/kasan.h",
        include_str!("../shim/include/linux/kasan.h"),
    ),
    (
        "include/linux/slab.h",
        include_str!("../shim/include/linux/slab.h"),
    ),
    (
        "include/asm/facility.h",
        include_str!("../shim/include/asm/facility.h"),
    ),
    (
        "include/asm/lazy_mmu.h",
        include_str!("../shim/include/asm/lazy_mmu.h"),
    ),
    (
        "include/kunit/visibility.h",
        include_str!("../shim/include/kunit/visibility.h"),
    ),
    // runtime.c is the one file compiled; it #includes the parts below.
    ("runtime.c", include_str!("../shim/runtime.c")),
    ("eager.c", include_str!("../shim/eager.c")),
    ("lazy_mmu_mode.c", include_str!("../shim/lazy_mmu_mode.c")),
    ("wrappers.c", include_str!("../shim/wrappers.c")),
    ("coverage.c", include_str!("../shim/coverage.c")),
];

/// The built-in reference implementation (v3+ ABI).
pub const REFERENCE_C: &str = include_str!("../reference/arch/s390/mm/lazy_mmu.c");
pub const REFERENCE_H: &str = include_str!("../reference/arch/s390/include/asm/lazy_mmu.h");

/// Where the mutants live in a checkout of the rig.
pub fn mutants_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mutants")
}

/// The mutant patches, sorted by name.
pub fn mutant_paths() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(mutants_dir())
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "patch"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A mutant's file stem (`07-off-by-one-range-end`).
pub fn mutant_name(path: &std::path::Path) -> String {
    path.file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// Mutants whose file name starts with any of `prefixes` (all of them if none is given).
pub fn mutants_matching(prefixes: &[String]) -> Vec<std::path::PathBuf> {
    let mut v = mutant_paths();
    if !prefixes.is_empty() {
        v.retain(|p| {
            prefixes
                .iter()
                .any(|o| mutant_name(p).starts_with(o.as_str()))
        });
    }
    v
}

/// The mutant named `name`: the start of its file name (`07`, `07-off-by`) or its name
/// after the number (`off-by-one-range-end`). The error lists the mutants there are.
pub fn mutant(name: &str) -> Result<std::path::PathBuf, String> {
    let all = mutant_paths();
    let found: Vec<&std::path::PathBuf> = all
        .iter()
        .filter(|p| {
            let stem = mutant_name(p);
            stem.starts_with(name) || stem.split_once('-').is_some_and(|(_, rest)| rest == name)
        })
        .collect();
    match found[..] {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no mutant '{name}' (have: {})",
            all.iter()
                .map(|p| mutant_name(p))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Err(format!("'{name}' names several mutants")),
    }
}
