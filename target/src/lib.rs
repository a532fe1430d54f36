//! The system under test: the C shim (`shim/`), the built-in reference implementation
//! (`reference/`), its mutants (`mutants/`), the loader that compiles any of them or a
//! user's kernel tree at run time, and the `Kernel` that drives the compiled C code over
//! the rig's machine model.

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
    let built = loader::build(&source.resolve()?)?;
    Ok(CKernel::new(Library::open_fresh(&built)?))
}
