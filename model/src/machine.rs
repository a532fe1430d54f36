//! The simulated s390 machine: page-table memory, per-CPU TLBs, lowcore and task state,
//! the hardware primitives (IPTE, IPTE-range, RDP, IDTE, CSP, UV calls), attach masks and
//! owed flushes, and the rules every store and call is checked against.
//!
//! Both the oracle and the C target drive this same type, so hardware semantics are shared
//! and only the kernel logic differs. Nothing here is kernel policy: the invalidation
//! policies live in the oracle (Rust) and in the shim (C).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::guarded::{self, GuardedTable};
use lazymmu_lang::program::{MachineConfig, MmKind, PteRef, MAX_MMS};
use lazymmu_lang::pte::{self, PAGE_INVALID, PAGE_PROTECT, PAGE_UNUSED, PTRS_PER_PTE};

/// One page table: 256 PTEs, 2 KiB, aligned so that the table origin of any `ptep` is
/// `ptep & !0x7ff`, as the hardware computes it for IPTE-range. A machine's tables live in
/// guarded memory (`guarded`), not on the heap: the code under test may write past them.
#[repr(C, align(2048))]
#[derive(Clone)]
pub struct PageTable {
    pub entries: [u64; PTRS_PER_PTE],
}

/// The mm fields the kernel's flush logic reads and writes (`mm->context`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MmContext {
    /// `context.cpu_attach_mask`: CPUs running the mm now.
    pub attach_mask: u8,
    /// `mm_cpumask(mm)`: CPUs that may hold TLB entries for the mm.
    pub cpumask: u8,
    /// `context.flush_count`.
    pub flush_count: i32,
    /// `context.flush_mm`: a full flush is owed.
    pub flush_mm: bool,
}

pub struct Mm {
    pub kind: MmKind,
    pub protected: bool,
    /// Deref to `PageTable`; each sits between poison and a guard page.
    pub tables: Vec<GuardedTable>,
    pub ctx: MmContext,
}

/// Per-task lazy-MMU state, `current->lazy_mmu_state`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LazyState {
    pub enable_count: u8,
    pub pause_count: u8,
}

impl LazyState {
    /// A section is entered and not paused: the one definition of "active" (the generic
    /// layer's `is_lazy_mmu_mode_active()` also asks for task context).
    pub fn is_active(self) -> bool {
        self.enable_count > 0 && self.pause_count == 0
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cpu {
    pub online: bool,
    /// TLB entries, keyed by the PTE they were formed from, holding the value used.
    pub tlb: BTreeMap<PteRef, u64>,
    /// Nesting depth of interrupt context; `in_interrupt()` is `irq_depth > 0`.
    pub irq_depth: u8,
    pub preempt_count: i32,
    /// `get_lowcore()->lazy_mmu_count` (v3+).
    pub lazy_mmu_count: i32,
    /// The task running on this CPU.
    pub lazy: LazyState,
    /// The user mm this CPU runs, if any.
    pub current_mm: Option<u8>,
    /// What this CPU's last `ptep_modify_prot_start` returned, for the matching commit.
    pub prot_start: Option<(PteRef, u64)>,
}

impl Cpu {
    fn fresh(online: bool) -> Self {
        Cpu {
            online,
            tlb: BTreeMap::new(),
            irq_depth: 0,
            preempt_count: 0,
            lazy_mmu_count: 0,
            lazy: LazyState::default(),
            current_mm: None,
            prot_start: None,
        }
    }
    pub fn in_interrupt(&self) -> bool {
        self.irq_depth > 0
    }
}

/// What an address translation did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessResult {
    /// The CPU does not run this (user) mm, so it cannot translate its addresses.
    NotAttached,
    /// Translated from a TLB entry formed from `value` (which may be stale).
    TlbHit { value: u64 },
    /// The TLB missed; the walk found the valid `value` and filled the TLB.
    Walked { value: u64 },
    /// The PTE is invalid in memory: no translation, no TLB entry.
    TranslationFault { value: u64 },
    /// A store to a translation whose P bit is set (from the TLB or a fresh walk).
    ProtectionFault { value: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UvKind {
    /// `uv_convert_from_secure_pte(old)`.
    ConvertFromSecure,
    /// `uv_destroy_pte(old)`.
    Destroy,
}

/// One hardware instruction or firmware call, in the order issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HwEvent {
    Ipte {
        pte: PteRef,
        local: bool,
    },
    /// IPTE-range over `count` entries (the instruction's `nr + 1`) from `first`.
    IpteRange {
        mm: u8,
        table: u8,
        first: u16,
        count: u16,
        local: bool,
    },
    Rdp {
        pte: PteRef,
    },
    /// IDTE of the mm's ASCE: purges the mm's TLB entries on every CPU.
    Idte {
        mm: u8,
    },
    /// CSP / `__tlb_flush_global`: purges every TLB entry on every CPU.
    FlushGlobal,
    /// `__tlb_flush_local`: this CPU's TLB.
    FlushLocal,
    Uv {
        pte: PteRef,
        kind: UvKind,
    },
}

impl HwEvent {
    /// Whether the instruction may quiesce the whole machine.
    pub fn is_global(&self) -> bool {
        match *self {
            HwEvent::Ipte { local, .. } | HwEvent::IpteRange { local, .. } => !local,
            HwEvent::Idte { .. } | HwEvent::FlushGlobal => true,
            _ => false,
        }
    }
}

/// Instruction counters. Global IPTEs (single and range) are the quiesce events the
/// batching exists to avoid.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Counters {
    pub ipte_local: u64,
    pub ipte_global: u64,
    pub ipte_range_local: u64,
    pub ipte_range_global: u64,
    /// Entries covered by all IPTE-range instructions.
    pub ipte_range_entries: u64,
    pub rdp: u64,
    pub idte: u64,
    pub flush_global: u64,
    pub flush_local: u64,
    pub uv_calls: u64,
}

impl Counters {
    /// Global IPTE instructions, single or range.
    pub fn global_iptes(&self) -> u64 {
        self.ipte_global + self.ipte_range_global
    }
    /// Instructions that may quiesce the whole machine: global IPTE and IPTE-range,
    /// IDTE, CSP.
    pub fn quiesce_events(&self) -> u64 {
        self.global_iptes() + self.idte + self.flush_global
    }
    fn count(&mut self, e: &HwEvent) {
        match *e {
            HwEvent::Ipte { local: true, .. } => self.ipte_local += 1,
            HwEvent::Ipte { local: false, .. } => self.ipte_global += 1,
            HwEvent::IpteRange { local, count, .. } => {
                if local {
                    self.ipte_range_local += 1
                } else {
                    self.ipte_range_global += 1
                }
                self.ipte_range_entries += count as u64;
            }
            HwEvent::Rdp { .. } => self.rdp += 1,
            HwEvent::Idte { .. } => self.idte += 1,
            HwEvent::FlushGlobal => self.flush_global += 1,
            HwEvent::FlushLocal => self.flush_local += 1,
            HwEvent::Uv { .. } => self.uv_calls += 1,
        }
    }
}

/// A machine rule broken by the code under test (or by the oracle: a bug in it).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Event {
    /// A store changed a PTE that was valid in memory with no IPTE first, and it was not
    /// the lazy policy's store of `old | I` on a single-attached mm nor a store to an mm no
    /// CPU runs (full-mm teardown).
    StoreToValidPte { pte: PteRef, old: u64, new: u64 },
    /// The lazy policy's store of `old | I` without `flush_mm` set by the end of the step.
    LazyInvalidateWithoutOwedFlush { pte: PteRef },
    /// A page-table access through a pointer that is in no page table, given as a byte
    /// offset from the origin of the nearest table (host addresses differ between runs).
    WildAccess {
        mm: u8,
        table: u8,
        offset: i64,
        write: bool,
    },
    /// A plain store (not through the shim) into the poison before a table, found after
    /// the operation: `offset` is the byte offset of the overwritten 8-byte word from the
    /// table origin, negative (`-8` is one entry before the start).
    PoisonOverwritten { mm: u8, table: u8, offset: i64 },
    /// IPTE-range whose entries run past the end of the page table.
    IpteRangeCrossesTable {
        mm: u8,
        table: u8,
        first: u16,
        count: u16,
    },
    /// An ultravisor call while the PTE is still valid in memory.
    UvCallOnValidPte {
        pte: PteRef,
        value: u64,
        kind: UvKind,
    },
    /// A kernel assertion (lockdep and friends) that failed in the shim.
    Assertion { what: String },
    /// A page-table access, through the shim, to a PTE slot poisoned by CPU `owner`'s
    /// active range: a path that bypassed the batch (or another context reading it).
    ShadowAccess {
        pte: PteRef,
        write: bool,
        owner: u8,
        in_irq: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventRecord {
    pub step: usize,
    pub cpu: u8,
    pub event: Event,
}

/// What the machine looks like at a sync point.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    /// Every PTE of every table, in (mm, table, index) order.
    pub memory: Vec<u64>,
    /// Per CPU, its TLB entries in PTE order.
    pub tlbs: Vec<Vec<(PteRef, u64)>>,
    pub mms: Vec<MmContext>,
    pub counters: Counters,
}

impl Snapshot {
    /// The value of `p` in this image (the image follows the machine's table layout).
    pub fn pte(&self, layout: &[u8], p: PteRef) -> u64 {
        let before: usize = layout[..p.mm as usize].iter().map(|&t| t as usize).sum();
        self.memory[(before + p.table as usize) * PTRS_PER_PTE + p.index as usize]
    }
}

pub struct Machine {
    pub config: MachineConfig,
    pub mms: Vec<Mm>,
    pub cpus: Vec<Cpu>,
    pub counters: Counters,
    /// Owner CPU of each held page-table lock, by (mm, table).
    pub ptl: BTreeMap<(u8, u8), u8>,
    events: Vec<EventRecord>,
    step_hw: Vec<HwEvent>,
    step: usize,
    step_cpu: u8,
    /// Lazy-policy stores of this step, checked for the owed flush at its end.
    lazy_invalidated: Vec<PteRef>,
    /// KASAN-style shadow: per table, the CPU whose active range poisoned each slot.
    shadow: Vec<Vec<[u8; PTRS_PER_PTE]>>,
}

/// Shadow value of a slot nobody poisoned.
const UNPOISONED: u8 = 0xff;

/// Entries of a table that are not `PTE_NONE` (the comparison vectorizes).
fn used(entries: &[u64; PTRS_PER_PTE]) -> usize {
    entries.iter().filter(|&&v| v != pte::PTE_NONE).count()
}

/// What decides how a machine goes on from here, without its guarded memory: saved
/// between steps to resume a run later (`Machine::restore`), and compared to tell two
/// runs that will behave alike from here on. Sparse, since most entries are empty: the
/// engine keeps many of these per corpus program. The counters and events are not in it:
/// they only record what happened and never decide anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineState {
    /// The entries that are not `PTE_NONE`, in (mm, table, index) order.
    memory: Vec<(PteRef, u64)>,
    ctx: Vec<MmContext>,
    cpus: Vec<Cpu>,
    ptl: BTreeMap<(u8, u8), u8>,
    /// Poisoned shadow slots, in (mm, table, index) order.
    shadow: Vec<(PteRef, u8)>,
}

impl MachineState {
    /// Bytes this state takes on the heap, roughly (the engine's cache budget).
    pub fn heap_bytes(&self) -> usize {
        self.memory.len() * std::mem::size_of::<(PteRef, u64)>()
            + self.ctx.len() * std::mem::size_of::<MmContext>()
            + self
                .cpus
                .iter()
                .map(|c| std::mem::size_of::<Cpu>() + c.tlb.len() * 32)
                .sum::<usize>()
            + self.ptl.len() * 16
            + self.shadow.len() * std::mem::size_of::<(PteRef, u8)>()
    }
}

impl Machine {
    /// Builds the machine a program starts on. The config must have been validated.
    pub fn new(config: &MachineConfig) -> Machine {
        // One arena for all tables: a single pool lookup per machine.
        let total = config.mms.iter().map(|c| c.tables as usize).sum();
        let mut arena = guarded::alloc_tables(total).into_iter();
        let mut mms: Vec<Mm> = config
            .mms
            .iter()
            .map(|c| Mm {
                kind: c.kind,
                protected: c.protected,
                tables: arena.by_ref().take(c.tables as usize).collect(),
                ctx: MmContext {
                    attach_mask: c.attach_mask,
                    cpumask: c.attach_mask,
                    flush_count: 0,
                    flush_mm: false,
                },
            })
            .collect();
        for i in &config.init {
            mms[i.pte.mm as usize].tables[i.pte.table as usize].entries[i.pte.index as usize] =
                i.value;
        }
        let mut cpus: Vec<Cpu> = (0..config.cpus).map(|_| Cpu::fresh(true)).collect();
        for (m, mm) in config.mms.iter().enumerate() {
            if m < 256 && mm.kind == MmKind::User {
                for (c, cpu) in cpus.iter_mut().enumerate() {
                    if mm.attach_mask & (1 << c) != 0 && cpu.current_mm.is_none() {
                        cpu.current_mm = Some(m as u8);
                    }
                }
            }
        }
        Machine {
            config: config.clone(),
            mms,
            cpus,
            counters: Counters::default(),
            ptl: BTreeMap::new(),
            events: vec![],
            step_hw: vec![],
            step: 0,
            step_cpu: 0,
            lazy_invalidated: vec![],
            shadow: config
                .mms
                .iter()
                .map(|m| vec![[UNPOISONED; PTRS_PER_PTE]; m.tables as usize])
                .collect(),
        }
    }

    // ---- bookkeeping for the run loop ----

    pub fn begin_step(&mut self, step: usize, cpu: u8) {
        self.step = step;
        self.step_cpu = cpu;
    }

    /// The step being run and its CPU (for crash reports: where the C code was).
    pub fn current_step(&self) -> (usize, u8) {
        (self.step, self.step_cpu)
    }

    /// Closes a step: checks that every lazy-policy store was paired with an owed flush,
    /// and returns the instructions the step issued.
    pub fn end_step(&mut self) -> Vec<HwEvent> {
        for p in std::mem::take(&mut self.lazy_invalidated) {
            if !self.mms[p.mm as usize].ctx.flush_mm {
                self.report(Event::LazyInvalidateWithoutOwedFlush { pte: p });
            }
        }
        std::mem::take(&mut self.step_hw)
    }

    pub fn report(&mut self, event: Event) {
        self.events.push(EventRecord {
            step: self.step,
            cpu: self.step_cpu,
            event,
        });
    }

    pub fn take_events(&mut self) -> Vec<EventRecord> {
        std::mem::take(&mut self.events)
    }

    fn issue(&mut self, e: HwEvent) {
        self.counters.count(&e);
        self.step_hw.push(e);
    }

    /// Number of tables per mm, the layout of `Snapshot::memory`.
    pub fn layout(&self) -> Vec<u8> {
        self.mms.iter().map(|m| m.tables.len() as u8).collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            memory: {
                let n: usize = self.mms.iter().map(|m| m.tables.len()).sum();
                let mut v = Vec::with_capacity(n * PTRS_PER_PTE);
                for t in self.mms.iter().flat_map(|m| &m.tables) {
                    v.extend_from_slice(&t.entries);
                }
                v
            },
            tlbs: self
                .cpus
                .iter()
                .map(|c| c.tlb.iter().map(|(&p, &v)| (p, v)).collect())
                .collect(),
            mms: self.mms.iter().map(|m| m.ctx).collect(),
            counters: self.counters,
        }
    }

    /// The machine's state between two steps (see `MachineState`).
    pub fn save(&self) -> MachineState {
        // Every field named: one added later must be placed here or in the list of
        // fields that only record.
        let Machine {
            config: _,
            mms,
            cpus,
            counters: _,
            ptl,
            events: _,
            step_hw,
            step: _,
            step_cpu: _,
            lazy_invalidated,
            shadow,
        } = self;
        debug_assert!(
            step_hw.is_empty() && lazy_invalidated.is_empty(),
            "mid-step"
        );
        let tables = || mms.iter().flat_map(|mm| &mm.tables);
        let mut memory = Vec::with_capacity(tables().map(|t| used(&t.entries)).sum());
        let mut poisoned = vec![];
        for (m, mm) in mms.iter().enumerate() {
            for (t, table) in mm.tables.iter().enumerate() {
                // Most of a table is empty: skip it eight entries at a time.
                for (k, chunk) in table.entries.chunks_exact(8).enumerate() {
                    if chunk.iter().all(|&v| v == pte::PTE_NONE) {
                        continue;
                    }
                    for (i, &v) in chunk.iter().enumerate() {
                        if v != pte::PTE_NONE {
                            memory.push((PteRef::new(m as u8, t as u8, (k * 8 + i) as u16), v));
                        }
                    }
                }
            }
        }
        for (m, tables) in shadow.iter().enumerate() {
            for (t, slots) in tables.iter().enumerate() {
                // Only the C target's KASAN hooks poison: mostly nothing to see.
                if slots.iter().all(|&o| o == UNPOISONED) {
                    continue;
                }
                for (i, &owner) in slots.iter().enumerate() {
                    if owner != UNPOISONED {
                        poisoned.push((PteRef::new(m as u8, t as u8, i as u16), owner));
                    }
                }
            }
        }
        MachineState {
            memory,
            ctx: mms.iter().map(|m| m.ctx).collect(),
            cpus: cpus.clone(),
            ptl: ptl.clone(),
            shadow: poisoned,
        }
    }

    /// Whether the machine is in state `s` (saved from a machine of the same config):
    /// `self.save() == *s`, without building the state, and soon false when it is.
    pub fn matches(&self, s: &MachineState) -> bool {
        let Machine {
            config: _,
            mms,
            cpus,
            counters: _,
            ptl,
            events: _,
            step_hw: _,
            step: _,
            step_cpu: _,
            lazy_invalidated: _,
            shadow,
        } = self;
        if mms.len() != s.ctx.len()
            || mms.iter().zip(&s.ctx).any(|(m, c)| m.ctx != *c)
            || *cpus != s.cpus
            || *ptl != s.ptl
        {
            return false;
        }
        // Per table: the saved entries have their values, and no other is used.
        let mut memory = &s.memory[..];
        for (m, mm) in mms.iter().enumerate() {
            for (t, table) in mm.tables.iter().enumerate() {
                let n = memory
                    .iter()
                    .take_while(|(p, _)| (p.mm, p.table) == (m as u8, t as u8))
                    .count();
                let (here, rest) = memory.split_at(n);
                memory = rest;
                let used = table
                    .entries
                    .iter()
                    .filter(|&&v| v != pte::PTE_NONE)
                    .count();
                if used != n
                    || here
                        .iter()
                        .any(|&(p, v)| table.entries[p.index as usize] != v)
                {
                    return false;
                }
            }
        }
        if !memory.is_empty() {
            return false;
        }
        let mut poisoned = s.shadow.iter();
        for (m, tables) in shadow.iter().enumerate() {
            for (t, slots) in tables.iter().enumerate() {
                if slots.iter().all(|&o| o == UNPOISONED) {
                    continue;
                }
                for (i, &owner) in slots.iter().enumerate() {
                    if owner != UNPOISONED
                        && poisoned.next()
                            != Some(&(PteRef::new(m as u8, t as u8, i as u16), owner))
                    {
                        return false;
                    }
                }
            }
        }
        poisoned.next().is_none()
    }

    /// Puts the machine in a state saved from a machine of the same config (counters
    /// and events are left as they are).
    pub fn restore(&mut self, s: &MachineState) {
        // Every field named, as in `save`.
        let Machine {
            config: _,
            mms,
            cpus,
            counters: _,
            ptl,
            events: _,
            step_hw: _,
            step: _,
            step_cpu: _,
            lazy_invalidated: _,
            shadow,
        } = self;
        for mm in mms.iter_mut() {
            for t in &mut mm.tables {
                t.entries.fill(pte::PTE_NONE);
            }
        }
        for &(p, v) in &s.memory {
            mms[p.mm as usize].tables[p.table as usize].entries[p.index as usize] = v;
        }
        for (mm, &ctx) in mms.iter_mut().zip(&s.ctx) {
            mm.ctx = ctx;
        }
        cpus.clone_from(&s.cpus);
        ptl.clone_from(&s.ptl);
        for tables in shadow.iter_mut() {
            for slots in tables.iter_mut() {
                slots.fill(UNPOISONED);
            }
        }
        for &(p, owner) in &s.shadow {
            shadow[p.mm as usize][p.table as usize][p.index as usize] = owner;
        }
    }

    // ---- page-table memory ----

    /// Host address of entry 0 of every table, as (mm, table, address): what
    /// `guarded::explain_address` needs to name a fault address.
    pub fn table_bases(&self) -> Vec<(u8, u8, usize)> {
        let mut v = vec![];
        for (m, mm) in self.mms.iter().enumerate() {
            for (t, table) in mm.tables.iter().enumerate() {
                v.push((m as u8, t as u8, table.base()));
            }
        }
        v
    }

    /// Checks the poison before every table, after a kernel operation: each overwritten
    /// word is reported (as `PoisonOverwritten` against the current step) and restored,
    /// so one bad store is reported once.
    pub fn check_poison(&mut self) {
        let mut hits = vec![];
        for (m, mm) in self.mms.iter_mut().enumerate() {
            for (t, table) in mm.tables.iter_mut().enumerate() {
                for (offset, _) in table.take_poison_hits() {
                    hits.push(Event::PoisonOverwritten {
                        mm: m as u8,
                        table: t as u8,
                        offset,
                    });
                }
            }
        }
        for e in hits {
            self.report(e);
        }
    }

    pub fn exists(&self, p: PteRef) -> bool {
        self.config.has_pte(p)
    }

    /// The value in memory, without any check: for snapshots and for the run loop.
    pub fn pte(&self, p: PteRef) -> u64 {
        self.mms[p.mm as usize].tables[p.table as usize].entries[p.index as usize]
    }

    /// A kernel load of a PTE (`__ptep_get`). A PTE that does not exist is a wild access.
    pub fn read(&mut self, p: PteRef) -> u64 {
        if !self.exists(p) {
            self.wild_ref(p, false);
            return 0;
        }
        self.pte(p)
    }

    /// A kernel store to a PTE (`__set_pte`), checked against the IPTE rule.
    pub fn store(&mut self, p: PteRef, new: u64) {
        if !self.exists(p) {
            self.wild_ref(p, true);
            return;
        }
        let old = self.pte(p);
        if pte::valid(old) && new != old {
            let cpu_bit = 1u8 << self.step_cpu;
            let ctx = self.mms[p.mm as usize].ctx;
            // `old | I`, give or take the UNUSED bit that `__set_pte` strips.
            let sets_only_i = !pte::valid(new) && (new ^ old) & !(PAGE_INVALID | PAGE_UNUSED) == 0;
            if sets_only_i && ctx.attach_mask == cpu_bit {
                // ptep_flush_lazy on a single-attached mm: the TLB purge is owed.
                self.lazy_invalidated.push(p);
            } else if ctx.attach_mask == 0 {
                // No CPU runs the mm (exit_mmap teardown): the full-mm flush follows.
            } else {
                self.report(Event::StoreToValidPte { pte: p, old, new });
            }
        }
        self.mms[p.mm as usize].tables[p.table as usize].entries[p.index as usize] = new;
    }

    /// An access to a PTE the program's tables do not have.
    fn wild_ref(&mut self, p: PteRef, write: bool) {
        self.report(Event::WildAccess {
            mm: p.mm,
            table: p.table,
            offset: p.index as i64 * 8,
            write,
        });
    }

    /// A wild access through a host pointer, reported against the nearest table.
    fn wild(&mut self, addr: usize, write: bool) {
        let mut best = (0u8, 0u8, i64::MAX);
        for (m, mm) in self.mms.iter().enumerate() {
            for (t, table) in mm.tables.iter().enumerate() {
                let off = addr as i64 - table.entries.as_ptr() as i64;
                if off.unsigned_abs() < best.2.unsigned_abs() {
                    best = (m as u8, t as u8, off);
                }
            }
        }
        self.report(Event::WildAccess {
            mm: best.0,
            table: best.1,
            offset: best.2,
            write,
        });
    }

    /// Host address of a PTE slot; the C target gets these as `pte_t *`.
    pub fn host_addr(&self, p: PteRef) -> usize {
        &self.mms[p.mm as usize].tables[p.table as usize].entries[p.index as usize] as *const u64
            as usize
    }

    /// Maps a host pointer back to the PTE it points at, if it points at one.
    pub fn resolve_host_addr(&self, addr: usize) -> Option<PteRef> {
        for (m, mm) in self.mms.iter().enumerate() {
            for (t, table) in mm.tables.iter().enumerate() {
                let base = table.entries.as_ptr() as usize;
                if addr >= base && addr < base + PTRS_PER_PTE * 8 && (addr - base).is_multiple_of(8)
                {
                    return Some(PteRef::new(m as u8, t as u8, ((addr - base) / 8) as u16));
                }
            }
        }
        None
    }

    fn check_shadow(&mut self, p: PteRef, write: bool) {
        let owner = self.shadow[p.mm as usize][p.table as usize][p.index as usize];
        if owner != UNPOISONED {
            let in_irq = self.cpus[self.step_cpu as usize].in_interrupt();
            self.report(Event::ShadowAccess {
                pte: p,
                write,
                owner,
                in_irq,
            });
        }
    }

    /// Poisons (or unpoisons) `nr` slots from the one `addr` points at, for this CPU.
    pub fn kasan_host(&mut self, addr: usize, nr: i32, poison: bool) {
        let Some(p) = self.resolve_host_addr(addr) else {
            self.wild(addr, false);
            return;
        };
        let owner = if poison { self.step_cpu } else { UNPOISONED };
        let want = p.index as i64 + nr.max(0) as i64;
        if want > PTRS_PER_PTE as i64 {
            // The shadow past the table belongs to other memory: (un)poisoning it would
            // make KASAN report, or miss, accesses the page table has nothing to do with.
            self.report(Event::WildAccess {
                mm: p.mm,
                table: p.table,
                offset: PTRS_PER_PTE as i64 * 8,
                write: true,
            });
        }
        let end = want.min(PTRS_PER_PTE as i64) as usize;
        for slot in &mut self.shadow[p.mm as usize][p.table as usize][p.index as usize..end] {
            *slot = owner;
        }
    }

    /// Whether any slot is poisoned (by any CPU).
    pub fn any_poisoned(&self) -> bool {
        self.shadow
            .iter()
            .flatten()
            .any(|t| t.iter().any(|&o| o != UNPOISONED))
    }

    /// A load through a host pointer (the shim's `__ptep_get`).
    pub fn read_host(&mut self, addr: usize) -> u64 {
        match self.resolve_host_addr(addr) {
            Some(p) => {
                self.check_shadow(p, false);
                self.pte(p)
            }
            None => {
                self.wild(addr, false);
                0
            }
        }
    }

    /// A store through a host pointer (the shim's `__set_pte`).
    pub fn store_host(&mut self, addr: usize, value: u64) {
        match self.resolve_host_addr(addr) {
            Some(p) => {
                self.check_shadow(p, true);
                self.store(p, value)
            }
            None => self.wild(addr, true),
        }
    }

    /// Virtual address mapped by a PTE: each mm has its own 4 GiB window, each table maps
    /// one 1 MiB PMD of it.
    pub fn vaddr(p: PteRef) -> u64 {
        (p.mm as u64 + 1) << 32 | (p.table as u64) << pte::PMD_SHIFT | (p.index as u64) << 12
    }

    /// Whether `v` is a page address in the mms' windows (`vaddr`, a range's end): what
    /// the rig hands the implementation as an address, never a PTE value of its own.
    pub fn is_vaddr(v: u64) -> bool {
        let mm = v >> 32;
        v & (pte::PAGE_SIZE - 1) == 0 && (1..=MAX_MMS as u64).contains(&mm)
    }

    // ---- TLB and hardware primitives ----

    fn purge(&mut self, cpu: Option<u8>, p: PteRef) {
        match cpu {
            Some(c) => {
                self.cpus[c as usize].tlb.remove(&p);
            }
            None => {
                for c in &mut self.cpus {
                    c.tlb.remove(&p);
                }
            }
        }
    }

    /// IPTE on one entry: sets I in memory and purges the TLB entries formed from it on
    /// this CPU (`local`) or on every CPU.
    pub fn ipte(&mut self, p: PteRef, local: bool) {
        if !self.exists(p) {
            self.wild_ref(p, true);
            return;
        }
        self.issue(HwEvent::Ipte { pte: p, local });
        let v = self.pte(p);
        self.mms[p.mm as usize].tables[p.table as usize].entries[p.index as usize] =
            v | PAGE_INVALID;
        self.purge(local.then_some(self.step_cpu), p);
    }

    /// IPTE-range over `count` (= nr + 1) entries of table `table` from index `first`.
    /// A range past the end of the table is reported and cut at the end.
    pub fn ipte_range(&mut self, mm: u8, table: u8, first: u16, count: u16, local: bool) {
        if !self.config.has_table(mm, table) || first as usize >= PTRS_PER_PTE {
            self.report(Event::WildAccess {
                mm,
                table,
                offset: first as i64 * 8,
                write: true,
            });
            return;
        }
        self.issue(HwEvent::IpteRange {
            mm,
            table,
            first,
            count,
            local,
        });
        let end = first as usize + count as usize;
        if end > PTRS_PER_PTE {
            self.report(Event::IpteRangeCrossesTable {
                mm,
                table,
                first,
                count,
            });
        }
        for i in first as usize..end.min(PTRS_PER_PTE) {
            let p = PteRef::new(mm, table, i as u16);
            self.mms[mm as usize].tables[table as usize].entries[i] |= PAGE_INVALID;
            self.purge(local.then_some(self.step_cpu), p);
        }
    }

    /// IPTE-range as the instruction takes its operands: the table origin from `ptep`
    /// (rounded down to the 2 KiB table), the first index from `addr`, `nr + 1` entries.
    pub fn ipte_range_host(&mut self, addr: u64, nr: u32, ptep: usize, local: bool) {
        let origin = ptep & !(PTRS_PER_PTE * 8 - 1);
        match self.resolve_host_addr(origin) {
            Some(p) => {
                let first = ((addr >> 12) & 0xff) as u16;
                self.ipte_range(
                    p.mm,
                    p.table,
                    first,
                    (nr + 1).min(u16::MAX as u32) as u16,
                    local,
                )
            }
            None => self.wild(ptep, true),
        }
    }

    /// IPTE as the instruction takes its operands: table origin from `ptep`, page index
    /// from `addr`.
    pub fn ipte_host(&mut self, addr: u64, ptep: usize, local: bool) {
        let origin = ptep & !(PTRS_PER_PTE * 8 - 1);
        match self.resolve_host_addr(origin) {
            Some(t) => self.ipte(
                PteRef::new(t.mm, t.table, ((addr >> 12) & 0xff) as u16),
                local,
            ),
            None => self.wild(ptep, true),
        }
    }

    /// An ultravisor call on the PTE a host pointer points at.
    pub fn uv_host(&mut self, ptep: usize, kind: UvKind) {
        match self.resolve_host_addr(ptep) {
            Some(p) => self.uv_call(p, kind),
            None => self.wild(ptep, false),
        }
    }

    /// RDP: clears the P bit; the entry stays valid and TLB entries are refreshed.
    pub fn rdp(&mut self, p: PteRef) {
        if !self.exists(p) {
            self.wild_ref(p, true);
            return;
        }
        self.issue(HwEvent::Rdp { pte: p });
        let v = self.pte(p) & !PAGE_PROTECT;
        self.mms[p.mm as usize].tables[p.table as usize].entries[p.index as usize] = v;
        for c in &mut self.cpus {
            if let Some(e) = c.tlb.get_mut(&p) {
                *e &= !PAGE_PROTECT;
            }
        }
    }

    /// IDTE of the mm's ASCE: every CPU drops the mm's entries.
    pub fn idte(&mut self, mm: u8) {
        self.issue(HwEvent::Idte { mm });
        for c in &mut self.cpus {
            c.tlb.retain(|p, _| p.mm != mm);
        }
    }

    pub fn flush_global(&mut self) {
        self.issue(HwEvent::FlushGlobal);
        for c in &mut self.cpus {
            c.tlb.clear();
        }
    }

    pub fn flush_local(&mut self) {
        self.issue(HwEvent::FlushLocal);
        self.cpus[self.step_cpu as usize].tlb.clear();
    }

    /// An ultravisor call for a secure page; only legal once the PTE is invalid in memory.
    pub fn uv_call(&mut self, p: PteRef, kind: UvKind) {
        self.issue(HwEvent::Uv { pte: p, kind });
        if self.exists(p) && pte::valid(self.pte(p)) {
            let value = self.pte(p);
            self.report(Event::UvCallOnValidPte {
                pte: p,
                value,
                kind,
            });
        }
    }

    /// The CPU translates the address `p` maps.
    pub fn access(&mut self, cpu: u8, p: PteRef, write: bool) -> AccessResult {
        let mm = &self.mms[p.mm as usize];
        if mm.kind == MmKind::User && mm.ctx.attach_mask & (1 << cpu) == 0 {
            return AccessResult::NotAttached;
        }
        let prot = |value: u64| write && value & PAGE_PROTECT != 0;
        if let Some(&value) = self.cpus[cpu as usize].tlb.get(&p) {
            return if prot(value) {
                AccessResult::ProtectionFault { value }
            } else {
                AccessResult::TlbHit { value }
            };
        }
        let value = self.pte(p);
        if !pte::valid(value) {
            return AccessResult::TranslationFault { value };
        }
        self.cpus[cpu as usize].tlb.insert(p, value);
        self.mms[p.mm as usize].ctx.cpumask |= 1 << cpu;
        if prot(value) {
            AccessResult::ProtectionFault { value }
        } else {
            AccessResult::Walked { value }
        }
    }

    // ---- CPU, context and mm state ----

    pub fn cpu_bit(cpu: u8) -> u8 {
        1 << cpu
    }

    /// A CPU goes offline: it stops running its mm and its TLB content is gone.
    pub fn cpu_offline(&mut self, cpu: u8) {
        let c = &mut self.cpus[cpu as usize];
        c.online = false;
        c.tlb.clear();
        c.current_mm = None;
        for mm in &mut self.mms {
            mm.ctx.attach_mask &= !Self::cpu_bit(cpu);
        }
    }

    /// A CPU comes online with fresh lowcore and task state, running no user mm.
    pub fn cpu_online(&mut self, cpu: u8) {
        self.cpus[cpu as usize] = Cpu::fresh(true);
        for mm in &mut self.mms {
            if mm.kind == MmKind::Init {
                mm.ctx.attach_mask |= Self::cpu_bit(cpu);
            }
        }
    }

    /// The attach-mask half of `switch_mm`: leave the current user mm, run `next`.
    /// The caller (kernel logic) adds `mm_cpumask` and the owed flush.
    pub fn switch_attach(&mut self, cpu: u8, next: Option<u8>) {
        // A CPU runs one user mm; adversarial configs may attach it to several.
        for mm in self.mms.iter_mut().filter(|mm| mm.kind == MmKind::User) {
            mm.ctx.attach_mask &= !Self::cpu_bit(cpu);
        }
        self.cpus[cpu as usize].current_mm = next;
        if let Some(n) = next {
            self.mms[n as usize].ctx.attach_mask |= Self::cpu_bit(cpu);
        }
    }

    pub fn lock_ptl(&mut self, cpu: u8, mm: u8, table: u8) {
        self.ptl.insert((mm, table), cpu);
    }

    pub fn unlock_ptl(&mut self, cpu: u8, mm: u8, table: u8) {
        if self.ptl.get(&(mm, table)) == Some(&cpu) {
            self.ptl.remove(&(mm, table));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazymmu_lang::program::{InitPte, MmConfig};
    use lazymmu_lang::pte::PTE_NONE;

    fn machine(cpus: u8, attach: u8) -> Machine {
        let config = MachineConfig {
            cpus,
            mms: vec![MmConfig {
                kind: MmKind::User,
                protected: false,
                attach_mask: attach,
                tables: 2,
            }],
            init: vec![InitPte {
                pte: PteRef::new(0, 0, 5),
                value: 0x1a03d,
            }],
            ..MachineConfig::default()
        };
        Machine::new(&config)
    }

    #[test]
    fn tables_are_aligned_and_host_addresses_resolve() {
        let m = machine(1, 1);
        let p = PteRef::new(0, 1, 17);
        let a = m.host_addr(p);
        assert_eq!(m.host_addr(PteRef::new(0, 1, 0)) % 2048, 0);
        assert_eq!(m.resolve_host_addr(a), Some(p));
        assert_eq!(m.resolve_host_addr(a + 1), None);
        assert_eq!(
            m.resolve_host_addr(m.host_addr(PteRef::new(0, 1, 255)) + 8),
            None
        );
    }

    #[test]
    fn a_store_before_a_table_is_reported_once_against_its_step() {
        let mut m = machine(1, 1);
        m.begin_step(3, 0);
        m.check_poison();
        assert!(m.take_events().is_empty());
        // What a plain C store to `table[-1]` of mm0 t1 does.
        let before = m.host_addr(PteRef::new(0, 1, 0)) - 8;
        // SAFETY: the word before a table is its poison, mapped and owned by the machine.
        unsafe { (before as *mut u64).write_volatile(0x1a03d) };
        m.check_poison();
        m.check_poison();
        let ev = m.take_events();
        assert_eq!(
            ev,
            vec![EventRecord {
                step: 3,
                cpu: 0,
                event: Event::PoisonOverwritten {
                    mm: 0,
                    table: 1,
                    offset: -8
                },
            }]
        );
        let bases = m.table_bases();
        assert_eq!(bases.len(), 2);
        assert_eq!(bases[1], (0, 1, m.host_addr(PteRef::new(0, 1, 0))));
        assert_eq!(
            guarded::explain_address(before, &bases),
            "mm0 t1 - 0x8 (1 entry before the start)"
        );
    }

    #[test]
    fn machines_of_one_layout_reuse_their_tables_fresh() {
        let mut m = machine(1, 1);
        let bases = m.table_bases();
        m.mms[0].tables[1].entries[9] = 0x2b03d;
        drop(m);
        let m = machine(1, 1);
        assert_eq!(m.table_bases(), bases);
        assert_eq!(m.pte(PteRef::new(0, 1, 9)), PTE_NONE);
        assert_eq!(m.pte(PteRef::new(0, 0, 5)), 0x1a03d);
    }

    #[test]
    fn a_saved_state_restores_on_a_fresh_machine() {
        let mut m = machine(2, 0b01);
        let p = PteRef::new(0, 1, 7);
        m.store(p, 0x2b03d);
        m.store(PteRef::new(0, 0, 5), PTE_NONE);
        m.access(0, p, false);
        m.lock_ptl(1, 0, 1);
        m.switch_attach(1, Some(0));
        m.mms[0].ctx.flush_mm = true;
        m.end_step();
        let s = m.save();
        let mut fresh = machine(2, 0b01);
        assert_ne!(fresh.save(), s);
        assert!(!fresh.matches(&s));
        fresh.restore(&s);
        assert_eq!(fresh.save(), s);
        assert!(fresh.matches(&s) && m.matches(&s));
        // One entry more, one less, one other value: another state.
        for (p, v) in [(PteRef::new(0, 1, 8), 0x1a03d), (p, PTE_NONE), (p, 0x2b03f)] {
            let old = fresh.pte(p);
            fresh.mms[0].tables[1].entries[p.index as usize] = v;
            assert!(!fresh.matches(&s), "{p} {v:#x}");
            fresh.mms[0].tables[1].entries[p.index as usize] = old;
        }
        assert!(fresh.matches(&s));
        let (a, b) = (m.snapshot(), fresh.snapshot());
        assert_eq!((a.memory, a.tlbs, a.mms), (b.memory, b.tlbs, b.mms));
        assert_eq!(fresh.ptl, m.ptl);
        // A state is restored whole: what the fresh machine had is gone.
        let mut other = machine(2, 0b01);
        other.store(PteRef::new(0, 0, 9), 0x3c03d);
        other.restore(&s);
        assert_eq!(other.save(), s);
    }

    #[test]
    fn store_to_valid_pte_without_ipte_is_reported() {
        let mut m = machine(2, 0b11);
        let p = PteRef::new(0, 0, 5);
        m.store(p, 0x2b03d);
        assert!(matches!(
            m.take_events()[..],
            [EventRecord {
                event: Event::StoreToValidPte { .. },
                ..
            }]
        ));
        // After an IPTE the entry is invalid and the store is fine.
        m.ipte(p, false);
        m.store(p, 0x3c03d);
        assert!(m.take_events().is_empty());
    }

    #[test]
    fn lazy_invalidate_needs_single_attach_and_owed_flush() {
        let mut m = machine(2, 0b01);
        let p = PteRef::new(0, 0, 5);
        m.store(p, 0x1a03d | PAGE_INVALID);
        m.end_step();
        assert!(matches!(
            m.take_events()[..],
            [EventRecord {
                event: Event::LazyInvalidateWithoutOwedFlush { .. },
                ..
            }]
        ));
        let mut m = machine(2, 0b01);
        m.store(p, 0x1a03d | PAGE_INVALID);
        m.mms[0].ctx.flush_mm = true;
        m.end_step();
        assert!(m.take_events().is_empty());
        // With two CPUs attached, setting I by a plain store is a rule violation.
        let mut m = machine(2, 0b11);
        m.store(p, 0x1a03d | PAGE_INVALID);
        assert_eq!(m.take_events().len(), 1);
    }

    #[test]
    fn wild_host_access_is_reported_with_its_address() {
        let mut m = machine(1, 1);
        let bad = m.host_addr(PteRef::new(0, 0, 255)) + 8;
        assert_eq!(m.read_host(bad), 0);
        m.store_host(bad, 1);
        let ev = m.take_events();
        // One entry past the end of mm0 t0: an offset, the same in any process.
        let w = |write| Event::WildAccess {
            mm: 0,
            table: 0,
            offset: 256 * 8,
            write,
        };
        assert_eq!(ev[0].event, w(false));
        assert_eq!(ev[1].event, w(true));
    }

    #[test]
    fn ipte_range_takes_origin_from_ptep_and_index_from_addr() {
        let mut m = machine(1, 1);
        for i in 0..4 {
            m.mms[0].tables[1].entries[10 + i] = 0x1a03d;
        }
        // ptep points into table 1 (entry 200) but addr names index 10: the hardware uses
        // table 1's origin and index 10.
        let ptep = m.host_addr(PteRef::new(0, 1, 200));
        let addr = Machine::vaddr(PteRef::new(0, 0, 10));
        m.ipte_range_host(addr, 3, ptep, true);
        assert!((10..14).all(|i| !pte::valid(m.mms[0].tables[1].entries[i])));
        assert_eq!(m.counters.ipte_range_local, 1);
        assert_eq!(m.counters.ipte_range_entries, 4);
        assert!(m.take_events().is_empty());
        m.ipte_range(0, 1, 250, 10, false);
        assert!(matches!(
            m.take_events()[..],
            [EventRecord {
                event: Event::IpteRangeCrossesTable {
                    first: 250,
                    count: 10,
                    ..
                },
                ..
            }]
        ));
    }

    #[test]
    fn access_fills_hits_and_faults() {
        let mut m = machine(2, 0b11);
        let p = PteRef::new(0, 0, 5);
        assert_eq!(
            m.access(0, p, false),
            AccessResult::Walked { value: 0x1a03d }
        );
        assert_eq!(
            m.access(0, p, true),
            AccessResult::TlbHit { value: 0x1a03d }
        );
        assert_eq!(
            m.access(1, PteRef::new(0, 0, 6), false),
            AccessResult::TranslationFault { value: PTE_NONE }
        );
        m.ipte(p, true);
        assert!(m.cpus[0].tlb.is_empty());
        m.access(1, p, false);
        m.store(p, 0x1a215);
        assert_eq!(
            m.access(1, p, true),
            AccessResult::ProtectionFault { value: 0x1a215 }
        );
    }
}
