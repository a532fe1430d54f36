//! Compiling an implementation at run time: from a Linux tree (`--kernel PATH`), a single
//! file (`--impl FILE`), the built-in reference or a mutant of it, with the shim, into a
//! shared object in a cache directory keyed by the content hash.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::recipe::{self, Generation, CFLAGS, OBJCOPY_RENAMES};
use crate::sources;

/// Where an implementation comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The built-in reference (target/reference, embedded in the binary).
    Reference,
    /// A mutant: a patch against the reference (target/mutants/*.patch).
    Mutant(PathBuf),
    /// A Linux tree with the series applied.
    KernelTree(PathBuf),
    /// One implementation file (`lazy_mmu.c` or `ipte_batch.c`).
    File(PathBuf),
}

/// An implementation ready to compile.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Short name for reports: `reference`, `mutant:03-off-by-one`, a path.
    pub name: String,
    /// The C source and the path it is compiled from (the user's own file when there is
    /// one, so that compiler errors name it).
    pub c_source: String,
    pub c_path: Option<PathBuf>,
    /// `arch/s390/include/asm/lazy_mmu.h` of the tree, if it has one.
    pub asm_header: Option<String>,
    /// Header of a mutant patch: which bug class it plants.
    pub bug_class: Option<String>,
    /// Header of a mutant patch (`Hardening: yes`): its bug shows only on programs that
    /// break the API contract.
    pub hardening: bool,
}

#[derive(Debug)]
pub enum LoadError {
    NoImplementation {
        path: PathBuf,
        looked_for: Vec<PathBuf>,
    },
    Io {
        path: PathBuf,
        error: String,
    },
    BadPatch {
        path: PathBuf,
        error: String,
    },
    Compile {
        file: String,
        errors: String,
        missing: Vec<String>,
    },
    Generation {
        file: String,
        error: String,
    },
    Link {
        file: String,
        errors: String,
        undefined: Vec<String>,
    },
    Tool {
        tool: String,
        error: String,
    },
    Load {
        path: PathBuf,
        error: String,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::NoImplementation { path, looked_for } => write!(
                f,
                "no lazy-MMU implementation under {} (looked for {})",
                path.display(),
                looked_for
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            LoadError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            LoadError::BadPatch { path, error } => {
                write!(
                    f,
                    "{}: does not apply to the reference: {error}",
                    path.display()
                )
            }
            LoadError::Compile {
                file,
                errors,
                missing,
            } => {
                write!(f, "{file} does not compile against the shim:\n{errors}")?;
                if !missing.is_empty() {
                    write!(
                        f,
                        "\nthe shim does not provide: {} (kernel names the shim lacks are a \
                         shim bug: see docs/abi.md#missing-names)",
                        missing.join(", ")
                    )?;
                }
                Ok(())
            }
            LoadError::Generation { file, error } => write!(f, "{file}: {error}"),
            LoadError::Link {
                file,
                errors,
                undefined,
            } => {
                write!(f, "{file} does not link with the shim runtime:\n{errors}")?;
                if !undefined.is_empty() {
                    write!(f, "\nundefined: {}", undefined.join(", "))?;
                }
                Ok(())
            }
            LoadError::Tool { tool, error } => write!(f, "cannot run {tool}: {error}"),
            LoadError::Load { path, error } => write!(f, "cannot load {}: {error}", path.display()),
        }
    }
}

impl std::error::Error for LoadError {}

fn read(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| LoadError::Io {
        path: path.to_path_buf(),
        error: e.to_string(),
    })
}

/// The patch's header lines (before the diff), e.g. `Bug-class: lost update`.
fn patch_header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .take_while(|l| !l.starts_with("--- "))
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':').map(str::trim))
}

/// Applies a mutant patch to the reference source.
pub fn apply_mutant(path: &Path) -> Result<Spec, LoadError> {
    let text = read(path)?;
    let bad = |error: String| LoadError::BadPatch {
        path: path.to_path_buf(),
        error,
    };
    let diff_at = text
        .find("\n--- ")
        .map(|i| i + 1)
        .or(text.starts_with("--- ").then_some(0));
    let diff = &text[diff_at.ok_or_else(|| bad("no unified diff ('--- a/...') in it".into()))?..];
    let patch = diffy::Patch::from_str(diff).map_err(|e| bad(e.to_string()))?;
    let c_source = diffy::apply(sources::REFERENCE_C, &patch).map_err(|e| bad(e.to_string()))?;
    let stem = path
        .file_stem()
        .map_or("mutant".into(), |s| s.to_string_lossy().into_owned());
    Ok(Spec {
        name: format!("mutant:{stem}"),
        c_source,
        c_path: None,
        asm_header: Some(sources::REFERENCE_H.to_string()),
        bug_class: patch_header(&text, "Bug-class").map(str::to_string),
        hardening: patch_header(&text, "Hardening").is_some_and(|v| v == "yes"),
    })
}

impl Source {
    /// The name reports and reproducer headers (`# implementation: NAME`) use:
    /// `reference`, `mutant:<stem>` for a patch in target/mutants (`mutant:<path>` for
    /// one elsewhere), or the path of the file or tree. `Source::from_name` reads it back.
    pub fn name(&self) -> String {
        match self {
            Source::Reference => "reference".into(),
            Source::Mutant(p) => {
                let in_mutants = p.parent().is_some_and(|d| {
                    std::fs::canonicalize(d).ok()
                        == std::fs::canonicalize(sources::mutants_dir()).ok()
                });
                if in_mutants {
                    format!("mutant:{}", sources::mutant_name(p))
                } else {
                    format!("mutant:{}", p.display())
                }
            }
            Source::KernelTree(p) | Source::File(p) => p.display().to_string(),
        }
    }

    /// The implementation a name (see `name`) stands for.
    pub fn from_name(name: &str) -> Result<Source, String> {
        if name == "reference" {
            return Ok(Source::Reference);
        }
        if let Some(m) = name.strip_prefix("mutant:") {
            let path = PathBuf::from(m);
            if path.is_file() {
                return Ok(Source::Mutant(path));
            }
            return sources::mutant_paths()
                .into_iter()
                .find(|p| sources::mutant_name(p) == m)
                .map(Source::Mutant)
                .ok_or_else(|| format!("no mutant {m} in {}", sources::mutants_dir().display()));
        }
        let p = PathBuf::from(name);
        if p.is_dir() {
            Ok(Source::KernelTree(p))
        } else if p.is_file() {
            Ok(Source::File(p))
        } else {
            Err(format!(
                "implementation '{name}' is neither reference, mutant:NAME, nor an existing path"
            ))
        }
    }

    /// A directory name for this implementation's output (`reference`,
    /// `mutant-07-off-by-one-range-end`, the path with separators replaced).
    pub fn dir_name(&self) -> String {
        let raw = match self {
            Source::Reference => "reference".to_string(),
            Source::Mutant(p) => format!("mutant-{}", sources::mutant_name(p)),
            Source::KernelTree(p) | Source::File(p) => p.display().to_string(),
        };
        raw.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .trim_matches('_')
            .to_string()
    }

    /// Command-line arguments of `lazymmu` naming it (`--reference`, `--mutant PATH`, ...).
    pub fn cli_args(&self) -> Vec<String> {
        match self {
            Source::Reference => vec!["--reference".into()],
            Source::Mutant(p) => vec!["--mutant".into(), p.display().to_string()],
            Source::KernelTree(p) => vec!["--kernel".into(), p.display().to_string()],
            Source::File(p) => vec!["--impl".into(), p.display().to_string()],
        }
    }

    /// Reads the sources this names.
    pub fn resolve(&self) -> Result<Spec, LoadError> {
        match self {
            Source::Reference => Ok(Spec {
                name: self.name(),
                c_source: sources::REFERENCE_C.into(),
                c_path: None,
                asm_header: Some(sources::REFERENCE_H.into()),
                bug_class: None,
                hardening: false,
            }),
            Source::Mutant(path) => apply_mutant(path).map(|mut spec| {
                spec.name = self.name();
                spec
            }),
            Source::File(path) => {
                // A sibling asm/lazy_mmu.h is used when the file sits in a kernel tree.
                let header = path
                    .parent()
                    .and_then(|mm| mm.parent())
                    .map(|s390| s390.join("include/asm/lazy_mmu.h"))
                    .filter(|h| h.is_file());
                Ok(Spec {
                    name: self.name(),
                    c_source: read(path)?,
                    c_path: Some(path.clone()),
                    asm_header: header.map(|h| read(&h)).transpose()?,
                    bug_class: None,
                    hardening: false,
                })
            }
            Source::KernelTree(root) => {
                let candidates = [
                    root.join("arch/s390/mm/lazy_mmu.c"),
                    root.join("arch/s390/mm/ipte_batch.c"),
                ];
                let file = candidates.iter().find(|p| p.is_file()).ok_or_else(|| {
                    LoadError::NoImplementation {
                        path: root.clone(),
                        looked_for: candidates.to_vec(),
                    }
                })?;
                let header = root.join("arch/s390/include/asm/lazy_mmu.h");
                Ok(Spec {
                    name: self.name(),
                    c_source: read(file)?,
                    c_path: Some(file.clone()),
                    asm_header: header.is_file().then(|| read(&header)).transpose()?,
                    bug_class: None,
                    hardening: false,
                })
            }
        }
    }
}

/// A compiled implementation in the cache.
#[derive(Clone, Debug)]
pub struct Built {
    pub name: String,
    pub generation: Generation,
    /// Content hash (hex) of everything that went into the build.
    pub hash: String,
    pub dir: PathBuf,
    pub bug_class: Option<String>,
    /// Base name of the implementation file as its debug info names it (`lazy_mmu.c`):
    /// crash reports find the crash site by it.
    pub source_file: String,
    /// The c-coverage flavour: the implementation reports edges and comparisons.
    pub c_coverage: bool,
}

impl Built {
    pub fn library(&self) -> PathBuf {
        self.dir.join("impl.so")
    }
}

/// The cache directory: `$LAZYMMU_CACHE`, else `$XDG_CACHE_HOME/lazymmu`, else
/// `~/.cache/lazymmu`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LAZYMMU_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("lazymmu");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache/lazymmu"),
        None => std::env::temp_dir().join("lazymmu-cache"),
    }
}

fn compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

fn run(cmd: &mut Command) -> Result<(bool, String), LoadError> {
    let tool = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| LoadError::Tool {
            tool,
            error: e.to_string(),
        })?;
    let mut text = String::from_utf8_lossy(&out.stderr).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stdout));
    Ok((out.status.success(), text))
}

/// The text between the first pair of quotes after `marker` on a compiler line.
fn quoted_after(line: &str, marker: &str) -> Option<String> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let start = rest.find('\'')? + 1;
    let end = rest[start..].find('\'')? + start;
    Some(rest[start..end].to_string())
}

/// Kernel names a failed compilation could not find: what the shim would have to provide.
pub fn missing_names(errors: &str) -> Vec<String> {
    let mut names = BTreeSet::new();
    for line in errors.lines() {
        for marker in [
            "implicit declaration of function",
            "unknown type name",
            "has no member named",
        ] {
            if let Some(n) = quoted_after(line, marker) {
                names.insert(n);
            }
        }
        // "error: 'NAME' undeclared (first use in this function)"
        if let Some(i) = line.find("' undeclared") {
            if let Some(start) = line[..i].rfind("error: '") {
                names.insert(line[start + 8..i].to_string());
            }
        }
        if let Some(i) = line.find("fatal error: ") {
            if line.ends_with("No such file or directory") {
                let h = &line[i + 13..];
                names.insert(format!("<{}>", h.split(':').next().unwrap_or(h)));
            }
        }
    }
    names.into_iter().collect()
}

/// The first few error lines of compiler output (with their context lines).
fn first_errors(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let first = lines.iter().position(|l| l.contains("error")).unwrap_or(0);
    lines[first..]
        .iter()
        .take(12)
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

fn write(path: &Path, contents: &str) -> Result<(), LoadError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|e| LoadError::Io {
            path: d.to_path_buf(),
            error: e.to_string(),
        })?;
    }
    std::fs::write(path, contents).map_err(|e| LoadError::Io {
        path: path.to_path_buf(),
        error: e.to_string(),
    })
}

impl Spec {
    /// Base name of the file the compiler sees: the user's own, or `lazy_mmu.c` for the
    /// reference and the mutants (written under that name into the build directory).
    pub fn source_file(&self) -> String {
        self.c_path
            .as_ref()
            .and_then(|p| p.file_name())
            .map_or("lazy_mmu.c".into(), |n| n.to_string_lossy().into_owned())
    }
}

/// Compiles `spec` with the shim into `cache/<hash>/impl.so`, or finds it there.
pub fn build(spec: &Spec) -> Result<Built, LoadError> {
    build_in(spec, &cache_dir())
}

/// The same, as the c-coverage flavour (`C_COVERAGE_FLAGS`) when `c_coverage` is set.
pub fn build_with(spec: &Spec, c_coverage: bool) -> Result<Built, LoadError> {
    build_flavour(spec, &cache_dir(), c_coverage)
}

/// Flags of the c-coverage flavour, for the implementation file only (the shim runtime
/// stays uninstrumented and provides the callbacks, shim/coverage.c): its edges and
/// comparison operands guide the built-in engine. A cache key of its own.
pub const C_COVERAGE_FLAGS: &[&str] = &["-fsanitize-coverage=trace-pc,trace-cmp"];

/// Extra flags of an AddressSanitizer build (`LAZYMMU_SANITIZE=address`, which `lazymmu
/// --sanitize address` sets): the implementation and the shim instrumented, so that an
/// out-of-bounds access to the implementation's own arrays is caught too. The process
/// must have the ASan runtime preloaded (the CLI re-executes itself so).
pub fn sanitizer_flags() -> &'static [&'static str] {
    match std::env::var("LAZYMMU_SANITIZE").as_deref() {
        Ok("address") => &["-fsanitize=address", "-fno-omit-frame-pointer"],
        _ => &[],
    }
}

pub fn build_in(spec: &Spec, cache: &Path) -> Result<Built, LoadError> {
    build_flavour(spec, cache, false)
}

pub fn build_flavour(spec: &Spec, cache: &Path, c_coverage: bool) -> Result<Built, LoadError> {
    let mut h = Sha256::new();
    for f in sanitizer_flags() {
        h.update(f);
    }
    if c_coverage {
        h.update("c-coverage");
        for f in C_COVERAGE_FLAGS {
            h.update(f);
        }
    }
    for part in [
        spec.c_source.as_str(),
        spec.asm_header.as_deref().unwrap_or(""),
        &compiler(),
    ] {
        h.update(part.len().to_le_bytes());
        h.update(part);
    }
    for f in CFLAGS.iter().chain(OBJCOPY_RENAMES) {
        h.update(f);
    }
    for (name, text) in sources::SHIM_FILES {
        h.update(name);
        h.update(text);
    }
    let hash: String = h
        .finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = cache.join(&hash);
    let gen_file = dir.join("generation");
    if let Ok(g) = std::fs::read_to_string(&gen_file) {
        let generation = match g.trim() {
            "1" => Generation::Rfc,
            "2" => Generation::V2,
            _ => Generation::V3,
        };
        if dir.join("impl.so").is_file() {
            return Ok(Built {
                name: spec.name.clone(),
                generation,
                hash,
                dir,
                bug_class: spec.bug_class.clone(),
                source_file: spec.source_file(),
                c_coverage,
            });
        }
    }

    // Build in a private directory, then rename it into place (concurrent builds are fine).
    let tmp = cache.join(format!(
        "{hash}.tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = compile_into(spec, &tmp, c_coverage);
    let generation = match result {
        Ok(g) => g,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    write(&tmp.join("generation"), &generation.number().to_string())?;
    if std::fs::rename(&tmp, &dir).is_err() {
        // Someone else finished first: use theirs.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(Built {
        name: spec.name.clone(),
        generation,
        hash,
        dir,
        bug_class: spec.bug_class.clone(),
        source_file: spec.source_file(),
        c_coverage,
    })
}

fn compile_into(spec: &Spec, dir: &Path, c_coverage: bool) -> Result<Generation, LoadError> {
    let shim = dir.join("shim");
    for (name, text) in sources::SHIM_FILES {
        write(&shim.join(name), text)?;
    }
    let tree_include = dir.join("tree-include");
    std::fs::create_dir_all(&tree_include).map_err(|e| LoadError::Io {
        path: tree_include.clone(),
        error: e.to_string(),
    })?;
    if let Some(h) = &spec.asm_header {
        write(&tree_include.join("asm/lazy_mmu.h"), h)?;
    }
    let c_path = match &spec.c_path {
        Some(p) => p.clone(),
        None => {
            let p = dir.join("lazy_mmu.c");
            write(&p, &spec.c_source)?;
            p
        }
    };
    let shown = spec
        .c_path
        .as_ref()
        .map_or(spec.name.clone(), |p| p.display().to_string());
    let includes = [
        "-I".to_string(),
        tree_include.display().to_string(),
        "-I".to_string(),
        shim.join("include").display().to_string(),
    ];

    let obj = dir.join("impl.o");
    let coverage: &[&str] = if c_coverage { C_COVERAGE_FLAGS } else { &[] };
    let (ok, text) = run(Command::new(compiler())
        .args(CFLAGS)
        .args(sanitizer_flags())
        .args(coverage)
        .args(&includes)
        .arg("-c")
        .arg(&c_path)
        .arg("-o")
        .arg(&obj))?;
    if !ok {
        return Err(LoadError::Compile {
            file: shown,
            errors: first_errors(&text),
            missing: missing_names(&text),
        });
    }
    let (ok, nm) = run(Command::new("nm").args(["-g", "--defined-only"]).arg(&obj))?;
    if !ok {
        return Err(LoadError::Tool {
            tool: "nm".into(),
            error: nm,
        });
    }
    let generation = recipe::detect_generation(&recipe::defined_symbols(&nm)).map_err(|error| {
        LoadError::Generation {
            file: shown.clone(),
            error,
        }
    })?;
    let (ok, text) = run(Command::new("objcopy").args(OBJCOPY_RENAMES).arg(&obj))?;
    if !ok {
        return Err(LoadError::Tool {
            tool: "objcopy".into(),
            error: text,
        });
    }

    let runtime_c = shim.join("runtime.c");
    let runtime_o = dir.join("runtime.o");
    let (ok, text) = run(Command::new(compiler())
        .args(CFLAGS)
        .args(sanitizer_flags())
        .arg(format!("-DLAZYMMU_GEN={}", generation.number()))
        .args(c_coverage.then_some("-DLAZYMMU_C_COVERAGE"))
        .args(&includes)
        .arg("-c")
        .arg(&runtime_c)
        .arg("-o")
        .arg(&runtime_o))?;
    if !ok {
        return Err(LoadError::Compile {
            file: "shim runtime.c".into(),
            errors: first_errors(&text),
            missing: missing_names(&text),
        });
    }
    let so = dir.join("impl.so");
    let (ok, text) = run(Command::new(compiler())
        .args([
            "-shared",
            "-Wl,--no-undefined",
            "-Wl,-Bsymbolic",
            "-Wl,-z,now",
        ])
        .args(sanitizer_flags())
        .arg("-o")
        .arg(&so)
        .arg(&obj)
        .arg(&runtime_o))?;
    if !ok {
        let undefined = text
            .lines()
            .filter_map(|l| {
                let i = l.find("undefined reference to `")? + 24;
                Some(l[i..].trim_end_matches('\'').to_string())
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        return Err(LoadError::Link {
            file: shown,
            errors: first_errors(&text),
            undefined,
        });
    }
    Ok(generation)
}
