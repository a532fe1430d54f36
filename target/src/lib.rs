//! The system under test (docs/architecture.md#crates): the C shim (`shim/`), the
//! built-in reference implementation (`reference/`), its mutants (`mutants/`), and:
//!
//! * `loader`: which implementation (`Source`: reference, mutant, file, tree, and their
//!   names), compiled with the shim into a cached shared object (plain, ASan, or with
//!   the implementation instrumented for the built-in engine's C coverage);
//! * `recipe`: the compile flags and the generation recognised from the symbols (shared
//!   with build.rs, which links one implementation statically for the fuzz targets);
//! * `sources`: the shim, the reference and the mutants, embedded;
//! * `library`: a loaded instance; `ffi`: its C interface and the callbacks into the
//!   machine model; `kernel`: `CKernel`, the `Kernel` that drives it.

pub mod ffi;
pub mod kernel;
pub mod library;
pub mod loader;
pub mod recipe;
pub mod sources;

pub use kernel::CKernel;
pub use library::Library;
pub use loader::{Built, LoadError, Source, Spec};
pub use recipe::Generation;

/// Resolves, compiles (or finds in the cache) and loads an implementation, as an
/// instance of its own (separate statics from every other `CKernel` of the process).
pub fn load(source: &Source) -> Result<CKernel, LoadError> {
    load_with(source, false)
}

/// The same, built as the c-coverage flavour when `c_coverage` is set (its
/// `Library::coverage` then records each program's edges and comparisons).
pub fn load_with(source: &Source, c_coverage: bool) -> Result<CKernel, LoadError> {
    let built = loader::build_with(&source.resolve()?, c_coverage)?;
    Ok(CKernel::new(Library::open_fresh(&built)?))
}
