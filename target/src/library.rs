//! A loaded implementation: the entry points of its shim runtime and its shared state.
//! Each instance has its own copy of every static, so several (two versions of the
//! series, or one per fuzzing thread) run side by side in one process.

use std::ffi::{c_char, c_int, CString};
use std::path::Path;

use crate::ffi::{CovState, OpRecord, ShimState, SHIM_ABI};
use crate::loader::{Built, LoadError};
use crate::recipe::Generation;

type OpFn = unsafe extern "C" fn(*const OpRecord) -> u64;
type VoidFn = unsafe extern "C" fn();
type EarlyParamFn = unsafe extern "C" fn(*const c_char) -> c_int;
/// `lazymmu_shim_allocations(start, size, max)`: the live kzalloc() objects.
pub type AllocationsFn = unsafe extern "C" fn(*mut usize, *mut usize, c_int) -> c_int;

pub struct Library {
    /// Keeps a dynamically loaded object mapped (None: the static built-in).
    _lib: Option<libloading::Library>,
    /// (hash, instance number) of a dynamically loaded instance, returned on drop.
    instance: Option<(String, usize)>,
    pub(crate) state: *mut ShimState,
    pub(crate) op: OpFn,
    pub(crate) reset: VoidFn,
    early_param: EarlyParamFn,
    /// Lists the shim's live allocations (safe to call from a signal handler).
    pub allocations: AllocationsFn,
    pub generation: Generation,
    pub name: String,
    pub bug_class: Option<String>,
    /// Base name of the implementation file (`lazy_mmu.c`), for crash sites.
    pub source_file: String,
    /// The c-coverage flavour's record of the last program (None in other flavours).
    coverage: Option<*const CovState>,
}

// SAFETY: an instance is used by one thread at a time (the one that owns it); its C state
// is not shared with any other instance.
unsafe impl Send for Library {}

impl Library {
    /// Loads an instance of a built implementation that no other `Library` of this
    /// process is using: each has its own statics, so each may run on its own thread.
    pub fn open_fresh(built: &Built) -> Result<Library, LoadError> {
        let n = {
            let mut free = FREE_INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
            let entry = free.entry(built.hash.clone()).or_default();
            match entry.0.pop() {
                Some(n) => n,
                None => {
                    entry.1 += 1;
                    entry.1 - 1
                }
            }
        };
        let mut lib = Self::open(built, n)?;
        lib.instance = Some((built.hash.clone(), n));
        Ok(lib)
    }

    /// Loads instance `n` of a built implementation. Instance 0 is the cached object
    /// itself; others are copies, because the dynamic loader maps one file only once.
    pub fn open(built: &Built, n: usize) -> Result<Library, LoadError> {
        let path = if n == 0 {
            built.library()
        } else {
            let p = built.dir.join(format!("impl-{n}.so"));
            if !p.is_file() {
                let tmp = built
                    .dir
                    .join(format!("impl-{n}.so.tmp-{}", std::process::id()));
                std::fs::copy(built.library(), &tmp)
                    .and_then(|_| std::fs::rename(&tmp, &p))
                    .map_err(|e| LoadError::Io {
                        path: p.clone(),
                        error: e.to_string(),
                    })?;
            }
            p
        };
        let mut lib = Self::open_path(
            &path,
            built.generation,
            &built.name,
            built.bug_class.clone(),
        )?;
        lib.source_file = built.source_file.clone();
        if built.c_coverage {
            lib.coverage = Some(lib.coverage_state().map_err(|error| LoadError::Load {
                path: path.clone(),
                error,
            })?);
        }
        Ok(lib)
    }

    fn open_path(
        path: &Path,
        generation: Generation,
        name: &str,
        bug_class: Option<String>,
    ) -> Result<Library, LoadError> {
        let err = |e: String| LoadError::Load {
            path: path.to_path_buf(),
            error: e,
        };
        // SAFETY: the object is one we compiled from the shim; its initialisers are ours.
        let lib: libloading::Library = unsafe {
            libloading::os::unix::Library::open(
                Some(path),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL,
            )
        }
        .map_err(|e| err(e.to_string()))?
        .into();
        // SAFETY: the symbols have the C signatures of runtime.c, checked by ABI version.
        unsafe {
            let abi: libloading::Symbol<unsafe extern "C" fn() -> c_int> = lib
                .get(b"lazymmu_shim_abi\0")
                .map_err(|e| err(e.to_string()))?;
            let state_fn: libloading::Symbol<unsafe extern "C" fn() -> *mut ShimState> = lib
                .get(b"lazymmu_shim_state\0")
                .map_err(|e| err(e.to_string()))?;
            let size: libloading::Symbol<unsafe extern "C" fn() -> usize> = lib
                .get(b"lazymmu_shim_state_size\0")
                .map_err(|e| err(e.to_string()))?;
            let init: VoidFn = *lib
                .get::<VoidFn>(b"lazymmu_shim_init\0")
                .map_err(|e| err(e.to_string()))?;
            let op: OpFn = *lib
                .get::<OpFn>(b"lazymmu_shim_op\0")
                .map_err(|e| err(e.to_string()))?;
            let reset: VoidFn = *lib
                .get::<VoidFn>(b"lazymmu_shim_reset\0")
                .map_err(|e| err(e.to_string()))?;
            let early_param: EarlyParamFn = *lib
                .get::<EarlyParamFn>(b"lazymmu_shim_early_param\0")
                .map_err(|e| err(e.to_string()))?;
            let allocations: AllocationsFn = *lib
                .get::<AllocationsFn>(b"lazymmu_shim_allocations\0")
                .map_err(|e| err(e.to_string()))?;
            Self::checked(
                abi(),
                size(),
                state_fn(),
                init,
                op,
                reset,
                early_param,
                allocations,
                generation,
                name,
                bug_class,
            )
            .map_err(err)
            .map(|mut l| {
                l._lib = Some(lib);
                l
            })
        }
    }

    #[allow(clippy::too_many_arguments)]
    unsafe fn checked(
        abi: c_int,
        size: usize,
        state: *mut ShimState,
        init: VoidFn,
        op: OpFn,
        reset: VoidFn,
        early_param: EarlyParamFn,
        allocations: AllocationsFn,
        generation: Generation,
        name: &str,
        bug_class: Option<String>,
    ) -> Result<Library, String> {
        if abi != SHIM_ABI {
            return Err(format!("shim ABI {abi}, this rig speaks {SHIM_ABI}"));
        }
        if size != std::mem::size_of::<ShimState>() {
            return Err(format!(
                "struct lazymmu_shim is {size} bytes in C, {} in Rust: layouts differ",
                std::mem::size_of::<ShimState>()
            ));
        }
        init();
        Ok(Library {
            _lib: None,
            instance: None,
            state,
            op,
            reset,
            early_param,
            allocations,
            generation,
            name: name.into(),
            bug_class,
            source_file: "lazy_mmu.c".into(),
            coverage: None,
        })
    }

    /// The implementation linked into this binary by build.rs (the reference, or the tree
    /// named by `LAZYMMU_KERNEL_TREE` at build time). It has one instance per process:
    /// only the first call gets it.
    pub fn builtin() -> Option<Library> {
        use std::sync::atomic::{AtomicBool, Ordering};
        static TAKEN: AtomicBool = AtomicBool::new(false);
        if TAKEN.swap(true, Ordering::SeqCst) {
            return None;
        }
        let generation = match env!("LAZYMMU_BUILTIN_GEN") {
            "1" => Generation::Rfc,
            "2" => Generation::V2,
            _ => Generation::V3,
        };
        // SAFETY: the static library is built from the same shim, with the same ABI.
        unsafe {
            Self::checked(
                builtin::lazymmu_shim_abi(),
                builtin::lazymmu_shim_state_size(),
                builtin::lazymmu_shim_state(),
                builtin::lazymmu_shim_init,
                builtin::lazymmu_shim_op,
                builtin::lazymmu_shim_reset,
                builtin::lazymmu_shim_early_param,
                builtin::lazymmu_shim_allocations,
                generation,
                env!("LAZYMMU_BUILTIN_NAME"),
                None,
            )
        }
        .ok()
        .map(|mut l| {
            l.source_file = env!("LAZYMMU_BUILTIN_FILE").into();
            l
        })
    }

    /// The c-coverage runtime's record, its layout checked against ours.
    fn coverage_state(&self) -> Result<*const CovState, String> {
        let lib = self
            ._lib
            .as_ref()
            .ok_or("no coverage in the static build")?;
        // SAFETY: functions of coverage.c without arguments; the size is checked before
        // the pointer is used.
        unsafe {
            let state: libloading::Symbol<unsafe extern "C" fn() -> *const CovState> = lib
                .get(b"lazymmu_shim_coverage\0")
                .map_err(|e| e.to_string())?;
            let size: libloading::Symbol<unsafe extern "C" fn() -> usize> = lib
                .get(b"lazymmu_shim_coverage_size\0")
                .map_err(|e| e.to_string())?;
            if size() != std::mem::size_of::<CovState>() {
                return Err(format!(
                    "struct lazymmu_cov is {} bytes in C, {} in Rust: layouts differ",
                    size(),
                    std::mem::size_of::<CovState>()
                ));
            }
            Ok(state())
        }
    }

    /// What the last program recorded, in the c-coverage flavour. Read it between
    /// programs: the next one's start resets it.
    pub fn coverage(&self) -> Option<&CovState> {
        // SAFETY: the record lives in the object, mapped as long as `self`.
        self.coverage.map(|p| unsafe { &*p })
    }

    /// Calls the file's `early_param` handler with `arg`; None if it has none.
    pub fn early_param(&self, arg: &str) -> Option<i32> {
        let arg = CString::new(arg).ok()?;
        // SAFETY: a plain C call with a NUL-terminated string.
        let r = unsafe { (self.early_param)(arg.as_ptr()) };
        (r != -1).then_some(r)
    }
}

/// Per built hash: instance numbers free for reuse, and the next never-used one.
static FREE_INSTANCES: std::sync::Mutex<std::collections::BTreeMap<String, (Vec<usize>, usize)>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

impl Drop for Library {
    fn drop(&mut self) {
        // Unmap first, then let another Library have the instance.
        drop(self._lib.take());
        if let Some((hash, n)) = self.instance.take() {
            let mut free = FREE_INSTANCES.lock().unwrap_or_else(|e| e.into_inner());
            free.entry(hash).or_default().0.push(n);
        }
    }
}

/// The statically linked implementation (build.rs).
mod builtin {
    use super::*;
    extern "C" {
        pub fn lazymmu_shim_abi() -> c_int;
        pub fn lazymmu_shim_state_size() -> usize;
        pub fn lazymmu_shim_state() -> *mut ShimState;
        pub fn lazymmu_shim_init();
        pub fn lazymmu_shim_reset();
        pub fn lazymmu_shim_op(op: *const OpRecord) -> u64;
        pub fn lazymmu_shim_early_param(arg: *const c_char) -> c_int;
        pub fn lazymmu_shim_allocations(start: *mut usize, size: *mut usize, max: c_int) -> c_int;
    }
}
