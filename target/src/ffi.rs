//! The C interface of a compiled implementation: the shim state it shares with us (the
//! layout of `struct lazymmu_shim` in shim/hooks.h, checked at load time), the op record
//! of runtime.c, and the callbacks through which the C code reaches the machine model.

use std::ffi::{c_char, c_int, c_ulong, c_void, CStr};

use lazymmu_model::machine::{Event, Machine, UvKind};

pub const SHIM_ABI: c_int = 2;
pub const NR_CPUS: usize = 8;
pub const NR_MMS: usize = 4;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Callbacks {
    pub ctx: *mut c_void,
    pub pte_read: extern "C" fn(*mut c_void, *const c_ulong) -> u64,
    pub pte_write: extern "C" fn(*mut c_void, *mut c_ulong, u64),
    pub ipte: extern "C" fn(*mut c_void, c_ulong, *mut c_ulong, c_int),
    pub ipte_range: extern "C" fn(*mut c_void, c_ulong, c_int, *mut c_ulong, c_int),
    pub idte: extern "C" fn(*mut c_void, c_int),
    pub uv: extern "C" fn(*mut c_void, *mut c_ulong, c_int),
    pub kasan: extern "C" fn(*mut c_void, *const c_ulong, c_int, c_int),
    pub report: extern "C" fn(*mut c_void, *const c_char),
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct ShimCpu {
    pub preempt_count: c_int,
    pub irq_depth: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Lowcore {
    pub lazy_mmu_count: c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Task {
    pub enable_count: u8,
    pub pause_count: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MmContext {
    pub flush_count: c_int,
    pub flush_mm: c_int,
    pub is_protected: c_int,
    pub id: c_int,
    pub cpu_attach_mask: c_ulong,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct MmStruct {
    pub context: MmContext,
    pub cpu_bitmap: c_ulong,
}

#[repr(C)]
pub struct ShimState {
    pub cpu: c_int,
    pub ncpus: c_int,
    pub facility13: c_int,
    pub tlb_lc: c_int,
    pub cpus: [ShimCpu; NR_CPUS],
    pub lowcore: [Lowcore; NR_CPUS],
    pub tasks: [Task; NR_CPUS],
    pub mms: [MmStruct; NR_MMS],
    pub cb: Callbacks,
}

/// Sizes of `struct lazymmu_cov` (shim/coverage.c), the c-coverage flavour's record of
/// one program: an edge map and comparison operands by site.
pub const COV_EDGES: usize = 4096;
pub const COV_SITES: usize = 512;
pub const COV_WAYS: usize = 4;
/// `flags` of a comparison: `arg1` is a compile-time constant.
pub const COV_CONST: u32 = 1;

/// `struct lazymmu_cmp`: the operands of one comparison.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CovCmp {
    pub arg1: u64,
    pub arg2: u64,
    /// Operand size in bytes.
    pub size: u32,
    pub flags: u32,
}

/// `struct lazymmu_cov`.
#[repr(C)]
pub struct CovState {
    pub nsites: u32,
    pub nedges: u32,
    pub sites: [u16; COV_SITES],
    pub touched: [u16; COV_EDGES],
    pub ways: [u8; COV_SITES],
    pub cmps: [[CovCmp; COV_WAYS]; COV_SITES],
    pub edges: [u8; COV_EDGES],
}

impl CovState {
    /// The edges the program took, in first-use order: (index in the map, hit count
    /// saturated at 255).
    pub fn edges(&self) -> impl Iterator<Item = (usize, u8)> + '_ {
        let n = (self.nedges as usize).min(COV_EDGES);
        self.touched[..n].iter().map(|&i| {
            let i = i as usize % COV_EDGES;
            (i, self.edges[i])
        })
    }

    /// The comparisons it recorded, site by site in first-use order.
    pub fn comparisons(&self) -> impl Iterator<Item = &CovCmp> + '_ {
        let n = (self.nsites as usize).min(COV_SITES);
        self.sites[..n].iter().flat_map(move |&s| {
            let s = s as usize % COV_SITES;
            let ways = (self.ways[s] as usize).min(COV_WAYS);
            self.cmps[s][..ways].iter()
        })
    }
}

/// `enum lazymmu_op_kind` of runtime.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    Enable = 0,
    EnableWithPtes,
    Disable,
    Pause,
    Resume,
    IsActive,
    SetPte,
    SetPtes,
    PteClear,
    PtepGet,
    GetAndClear,
    GetAndClearFull,
    TestAndClearYoung,
    ModifyProtStart,
    ModifyProtCommit,
    SetWrprotect,
    GetLockless,
    ClearFlush,
    FlushTlbRange,
    FlushTlbMm,
    SwitchIn,
    CpuOnline,
    CpuOffline,
}

/// `struct lazymmu_op` of runtime.c.
#[repr(C)]
pub struct OpRecord {
    pub kind: OpKind,
    pub mm: c_int,
    pub is_init_mm: c_int,
    pub full: c_int,
    pub addr: c_ulong,
    pub end: c_ulong,
    pub ptep: *mut c_ulong,
    pub value: u64,
    pub old: u64,
    pub n: u64,
}

impl OpRecord {
    pub fn new(kind: OpKind) -> Self {
        OpRecord {
            kind,
            mm: 0,
            is_init_mm: 0,
            full: 0,
            addr: 0,
            end: 0,
            ptep: std::ptr::null_mut(),
            value: 0,
            old: 0,
            n: 0,
        }
    }
}

// ---- callbacks: ctx is the `Machine` of the program being run ----
// A panic must never unwind into C: every callback runs the machine under catch_unwind
// and aborts the process if the model itself panicked (a rig bug, not a finding).

fn with_machine<R>(ctx: *mut c_void, f: impl FnOnce(&mut Machine) -> R) -> R {
    // SAFETY: ctx is set to a live `&mut Machine` for the duration of every call into C
    // (CKernel::op), and the C code runs on the calling thread only.
    let m = unsafe { &mut *(ctx as *mut Machine) };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(m))) {
        Ok(r) => r,
        Err(_) => std::process::abort(),
    }
}

extern "C" fn cb_pte_read(ctx: *mut c_void, ptep: *const c_ulong) -> u64 {
    with_machine(ctx, |m| m.read_host(ptep as usize))
}

extern "C" fn cb_pte_write(ctx: *mut c_void, ptep: *mut c_ulong, val: u64) {
    with_machine(ctx, |m| m.store_host(ptep as usize, val))
}

extern "C" fn cb_ipte(ctx: *mut c_void, addr: c_ulong, ptep: *mut c_ulong, local: c_int) {
    with_machine(ctx, |m| m.ipte_host(addr, ptep as usize, local != 0))
}

extern "C" fn cb_ipte_range(
    ctx: *mut c_void,
    addr: c_ulong,
    nr: c_int,
    ptep: *mut c_ulong,
    local: c_int,
) {
    with_machine(ctx, |m| {
        m.ipte_range_host(addr, nr as u32 & 0xff, ptep as usize, local != 0)
    })
}

extern "C" fn cb_idte(ctx: *mut c_void, mm: c_int) {
    with_machine(ctx, |m| {
        if (mm as usize) < m.mms.len() {
            m.idte(mm as u8)
        } else {
            m.report(Event::Assertion {
                what: format!("IDTE of unknown mm {mm}"),
            })
        }
    })
}

extern "C" fn cb_uv(ctx: *mut c_void, ptep: *mut c_ulong, kind: c_int) {
    let kind = if kind == 0 {
        UvKind::ConvertFromSecure
    } else {
        UvKind::Destroy
    };
    with_machine(ctx, |m| m.uv_host(ptep as usize, kind))
}

extern "C" fn cb_kasan(ctx: *mut c_void, ptep: *const c_ulong, nr: c_int, poison: c_int) {
    with_machine(ctx, |m| m.kasan_host(ptep as usize, nr, poison != 0))
}

extern "C" fn cb_report(ctx: *mut c_void, what: *const c_char) {
    // SAFETY: the shim passes NUL-terminated string literals.
    let what = unsafe { CStr::from_ptr(what) }
        .to_string_lossy()
        .into_owned();
    with_machine(ctx, |m| m.report(Event::Assertion { what }))
}

pub fn callbacks(ctx: *mut Machine) -> Callbacks {
    Callbacks {
        ctx: ctx as *mut c_void,
        pte_read: cb_pte_read,
        pte_write: cb_pte_write,
        ipte: cb_ipte,
        ipte_range: cb_ipte_range,
        idte: cb_idte,
        uv: cb_uv,
        kasan: cb_kasan,
        report: cb_report,
    }
}
