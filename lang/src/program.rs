//! The op language: a `Program` is a machine configuration plus the steps that the
//! simulated CPUs issue, in one global order.

use serde::{Deserialize, Serialize};

use crate::pte::PTRS_PER_PTE;

/// Version of the `.ops` text format and of the JSON form.
pub const FORMAT_VERSION: u32 = 1;
pub const MAX_CPUS: usize = 8;
pub const MAX_MMS: usize = 4;
pub const MAX_TABLES: usize = 4;

/// How programs are generated and judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Mode {
    /// Programs obey the API contract (docs/semantics.md#api-contract, see `contract`).
    #[default]
    Realistic,
    /// Programs may break the contract; what an implementation does then is hardening.
    Adversarial,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MmKind {
    /// A user address space (`struct mm_struct` of a process).
    User,
    /// `init_mm`: kernel mappings (vmalloc, KASAN shadow). At most one per machine.
    Init,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MmConfig {
    pub kind: MmKind,
    /// A secure-execution guest: clearing a present PTE talks to the ultravisor.
    pub protected: bool,
    /// Bit `c` set: CPU `c` runs this mm at the start (`cpu_attach_mask`, and `mm_cpumask`).
    pub attach_mask: u8,
    /// Number of 256-entry page tables (one PMD each).
    pub tables: u8,
}

/// One initial page-table value; every entry not listed starts as `pte_none` (0x400).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InitPte {
    pub pte: PteRef,
    pub value: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MachineConfig {
    /// 1..=8 simulated CPUs.
    pub cpus: u8,
    /// Facility 13 (IPTE-range). Without it every lazy-MMU hook is a no-op.
    pub facility13: bool,
    /// The TLB-local-clearing facility (IPTE with the local option).
    pub tlb_lc: bool,
    pub mode: Mode,
    pub mms: Vec<MmConfig>,
    /// Sorted by `pte`, no duplicates.
    pub init: Vec<InitPte>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            cpus: 1,
            facility13: true,
            tlb_lc: true,
            mode: Mode::Realistic,
            mms: vec![MmConfig {
                kind: MmKind::User,
                protected: false,
                attach_mask: 1,
                tables: 1,
            }],
            init: vec![],
        }
    }
}

impl MachineConfig {
    pub fn table_count(&self, mm: u8) -> usize {
        self.mms.get(mm as usize).map_or(0, |m| m.tables as usize)
    }
    /// Whether `pte` names an entry of a page table that exists.
    pub fn has_pte(&self, pte: PteRef) -> bool {
        (pte.table as usize) < self.table_count(pte.mm) && (pte.index as usize) < PTRS_PER_PTE
    }
    pub fn has_table(&self, mm: u8, table: u8) -> bool {
        (table as usize) < self.table_count(mm)
    }
    pub fn init_mm(&self) -> Option<u8> {
        self.mms
            .iter()
            .position(|m| m.kind == MmKind::Init)
            .map(|i| i as u8)
    }
    /// Checks the limits and consistency a machine needs; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.cpus == 0 || self.cpus as usize > MAX_CPUS {
            return Err(format!("cpus must be 1..={MAX_CPUS}, not {}", self.cpus));
        }
        if self.mms.is_empty() || self.mms.len() > MAX_MMS {
            return Err(format!("need 1..={MAX_MMS} mms, not {}", self.mms.len()));
        }
        if self.mms.iter().filter(|m| m.kind == MmKind::Init).count() > 1 {
            return Err("at most one init_mm".into());
        }
        for (i, m) in self.mms.iter().enumerate() {
            if m.tables == 0 || m.tables as usize > MAX_TABLES {
                return Err(format!(
                    "mm{i}: tables must be 1..={MAX_TABLES}, not {}",
                    m.tables
                ));
            }
            if (m.attach_mask as u16) >> self.cpus != 0 {
                return Err(format!(
                    "mm{i}: attached to a cpu beyond cpus={}",
                    self.cpus
                ));
            }
        }
        for w in self.init.windows(2) {
            if w[0].pte >= w[1].pte {
                return Err(format!(
                    "initial values not sorted or repeated at {}",
                    w[1].pte
                ));
            }
        }
        for i in &self.init {
            if !self.has_pte(i.pte) {
                return Err(format!("initial value for {} which does not exist", i.pte));
            }
        }
        Ok(())
    }
}

/// Names one PTE: entry `index` of page table `table` of mm `mm`.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct PteRef {
    pub mm: u8,
    pub table: u8,
    pub index: u16,
}

impl PteRef {
    pub fn new(mm: u8, table: u8, index: u16) -> Self {
        PteRef { mm, table, index }
    }
    pub fn offset(self, n: u16) -> Self {
        PteRef {
            index: self.index + n,
            ..self
        }
    }
}

impl std::fmt::Display for PteRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mm{} t{}[{}]", self.mm, self.table, self.index)
    }
}

/// A range of page-table entries by index: `[start, end)` of table `table` of mm `mm`.
/// `end` may exceed 256 only in adversarial programs (a range that crosses the PMD).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PteRange {
    pub mm: u8,
    pub table: u8,
    pub start: u16,
    pub end: u16,
}

impl std::fmt::Display for PteRange {
    /// The `.ops` notation: `mm0 t0[0..16]`, entries 0 to 15.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mm{} t{}[{}..{}]",
            self.mm, self.table, self.start, self.end
        )
    }
}

impl PteRange {
    pub fn contains(&self, p: PteRef) -> bool {
        p.mm == self.mm && p.table == self.table && p.index >= self.start && p.index < self.end
    }
    pub fn first(&self) -> PteRef {
        PteRef::new(self.mm, self.table, self.start)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Step {
    pub cpu: u8,
    pub op: Op,
}

/// One operation issued by one CPU. The names follow the kernel functions they call.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Op {
    // The generic lazy-MMU layer (include/linux/pgtable.h).
    Enable,
    /// `lazy_mmu_mode_enable_with_ptes(mm, addr, end, ptep)`: `range` gives mm, addr and end;
    /// `ptep` is the pointer passed (normally the first entry of the range).
    EnableWithPtes {
        range: PteRange,
        ptep: PteRef,
    },
    Disable,
    Pause,
    Resume,
    /// `is_lazy_mmu_mode_active()`.
    IsLazyActive,

    // Page-table operations (arch/s390/include/asm/pgtable.h wrappers).
    SetPte {
        pte: PteRef,
        value: u64,
    },
    /// `set_ptes(mm, addr, ptep, value, n)`: n entries, the pfn advancing by one each.
    SetPtes {
        pte: PteRef,
        value: u64,
        n: u16,
    },
    PteClear {
        pte: PteRef,
    },
    PtepGet {
        pte: PteRef,
    },
    PtepGetAndClear {
        pte: PteRef,
    },
    PtepGetAndClearFull {
        pte: PteRef,
        full: bool,
    },
    PtepTestAndClearYoung {
        pte: PteRef,
    },
    ModifyProtStart {
        pte: PteRef,
    },
    /// `ptep_modify_prot_commit(vma, addr, ptep, old, new)`; `old` is what this CPU's last
    /// `ModifyProtStart` on the same PTE returned.
    ModifyProtCommit {
        pte: PteRef,
        value: u64,
    },
    SetWrprotect {
        pte: PteRef,
    },
    /// GUP-fast and other lockless walkers; never routed through the batch.
    PtepGetLockless {
        pte: PteRef,
    },
    PtepClearFlush {
        pte: PteRef,
    },

    // Hardware and mm.
    /// The CPU translates the address that `pte` maps: TLB hit, walk and fill, or fault.
    Access {
        pte: PteRef,
        write: bool,
    },
    /// `flush_tlb_range(vma, addr, end)` (`flush_tlb_kernel_range` for init_mm).
    FlushTlbRange {
        range: PteRange,
    },
    FlushTlbMm {
        mm: u8,
    },
    /// The CPU switches to `mm` (None: a kernel thread, no user mm attached).
    SwitchMm {
        mm: Option<u8>,
    },
    IrqEnter,
    IrqExit,
    LockPtl {
        mm: u8,
        table: u8,
    },
    UnlockPtl {
        mm: u8,
        table: u8,
    },
    CpuOffline,
    CpuOnline,
}

impl Op {
    /// The kernel-style name used in the text format, in signatures and in traces.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Enable => "lazy_mmu_mode_enable",
            Op::EnableWithPtes { .. } => "lazy_mmu_mode_enable_with_ptes",
            Op::Disable => "lazy_mmu_mode_disable",
            Op::Pause => "lazy_mmu_mode_pause",
            Op::Resume => "lazy_mmu_mode_resume",
            Op::IsLazyActive => "is_lazy_mmu_mode_active",
            Op::SetPte { .. } => "set_pte",
            Op::SetPtes { .. } => "set_ptes",
            Op::PteClear { .. } => "pte_clear",
            Op::PtepGet { .. } => "ptep_get",
            Op::PtepGetAndClear { .. } => "ptep_get_and_clear",
            Op::PtepGetAndClearFull { .. } => "ptep_get_and_clear_full",
            Op::PtepTestAndClearYoung { .. } => "ptep_test_and_clear_young",
            Op::ModifyProtStart { .. } => "ptep_modify_prot_start",
            Op::ModifyProtCommit { .. } => "ptep_modify_prot_commit",
            Op::SetWrprotect { .. } => "ptep_set_wrprotect",
            Op::PtepGetLockless { .. } => "ptep_get_lockless",
            Op::PtepClearFlush { .. } => "ptep_clear_flush",
            Op::Access { .. } => "access",
            Op::FlushTlbRange { .. } => "flush_tlb_range",
            Op::FlushTlbMm { .. } => "flush_tlb_mm",
            Op::SwitchMm { .. } => "switch_mm",
            Op::IrqEnter => "irq_enter",
            Op::IrqExit => "irq_exit",
            Op::LockPtl { .. } => "lock_ptl",
            Op::UnlockPtl { .. } => "unlock_ptl",
            Op::CpuOffline => "cpu_offline",
            Op::CpuOnline => "cpu_online",
        }
    }

    /// The PTE a page-table operation works on, if it is one.
    pub fn pte(&self) -> Option<PteRef> {
        match *self {
            Op::SetPte { pte, .. }
            | Op::SetPtes { pte, .. }
            | Op::PteClear { pte }
            | Op::PtepGet { pte }
            | Op::PtepGetAndClear { pte }
            | Op::PtepGetAndClearFull { pte, .. }
            | Op::PtepTestAndClearYoung { pte }
            | Op::ModifyProtStart { pte }
            | Op::ModifyProtCommit { pte, .. }
            | Op::SetWrprotect { pte }
            | Op::PtepGetLockless { pte }
            | Op::PtepClearFlush { pte }
            | Op::Access { pte, .. } => Some(pte),
            _ => None,
        }
    }

    /// Every PTE the op may write (eagerly), in order, without allocating (the checkers
    /// ask at every step).
    pub fn written_ptes(&self) -> impl Iterator<Item = PteRef> {
        let (first, n) = match *self {
            Op::SetPtes { pte, n, .. } => (Some(pte), n),
            Op::PtepGet { .. } | Op::PtepGetLockless { .. } | Op::Access { .. } => (None, 0),
            _ => (self.pte(), 1),
        };
        first
            .into_iter()
            .flat_map(move |p| (0..n).map(move |k| p.offset(k)))
    }

    /// Whether the op (eagerly) writes `p`.
    pub fn writes(&self, p: PteRef) -> bool {
        self.written_ptes().any(|q| q == p)
    }

    /// Whether the op changes page-table values (eagerly).
    pub fn is_pte_update(&self) -> bool {
        self.pte().is_some()
            && !matches!(
                self,
                Op::PtepGet { .. } | Op::PtepGetLockless { .. } | Op::Access { .. }
            )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Program {
    pub format_version: u32,
    pub config: MachineConfig,
    pub steps: Vec<Step>,
}

impl Program {
    pub fn new(config: MachineConfig, steps: Vec<Step>) -> Self {
        Program {
            format_version: FORMAT_VERSION,
            config,
            steps,
        }
    }

    /// Checks that every step names CPUs, mms, tables and PTEs the machine has, and that
    /// ranges and counts are within what the language allows.
    pub fn validate(&self) -> Result<(), String> {
        self.config.validate()?;
        for (i, s) in self.steps.iter().enumerate() {
            self.validate_step(s)
                .map_err(|e| format!("step {i}: {e}"))?;
        }
        Ok(())
    }

    pub fn validate_step(&self, s: &Step) -> Result<(), String> {
        let c = &self.config;
        if s.cpu >= c.cpus {
            return Err(format!("cpu{} does not exist (cpus={})", s.cpu, c.cpus));
        }
        let pte_ok = |p: PteRef| {
            if c.has_pte(p) {
                Ok(())
            } else {
                Err(format!("{p} does not exist"))
            }
        };
        let mm_ok = |mm: u8| {
            if (mm as usize) < c.mms.len() {
                Ok(())
            } else {
                Err(format!("mm{mm} does not exist"))
            }
        };
        let table_ok = |mm: u8, t: u8| {
            mm_ok(mm)?;
            if c.has_table(mm, t) {
                Ok(())
            } else {
                Err(format!("mm{mm} t{t} does not exist"))
            }
        };
        match s.op {
            Op::EnableWithPtes { range, ptep } => {
                table_ok(range.mm, range.table)?;
                if range.start as usize >= PTRS_PER_PTE || range.end as usize > 2 * PTRS_PER_PTE {
                    return Err(format!(
                        "range [{}..{}) out of bounds",
                        range.start, range.end
                    ));
                }
                pte_ok(ptep)
            }
            Op::FlushTlbRange { range } => {
                table_ok(range.mm, range.table)?;
                if range.start > range.end || range.end as usize > PTRS_PER_PTE {
                    return Err(format!(
                        "range [{}..{}) out of bounds",
                        range.start, range.end
                    ));
                }
                Ok(())
            }
            Op::SetPtes { pte, n, .. } => {
                pte_ok(pte)?;
                if n == 0 || pte.index as usize + n as usize > PTRS_PER_PTE {
                    return Err(format!("set_ptes n={n} from {pte} leaves the table"));
                }
                Ok(())
            }
            Op::FlushTlbMm { mm } => mm_ok(mm),
            Op::SwitchMm { mm } => mm.map_or(Ok(()), mm_ok),
            Op::LockPtl { mm, table } | Op::UnlockPtl { mm, table } => table_ok(mm, table),
            ref op => op.pte().map_or(Ok(()), pte_ok),
        }
    }
}
