//! The API contract (docs/semantics.md#api-contract), as the in-tree callers keep it. A program
//! that keeps it is *realistic*; one that breaks it is *adversarial*, and what an
//! implementation does with it is hardening, never a bug.
//!
//! `ContractState` follows a program step by step. The generator asks it what is allowed;
//! `violations` replays a whole program and lists what it breaks. One set of rules serves
//! both, so generated realistic programs are realistic by construction.
//!
//! The rules, per CPU (each CPU runs one task):
//! * Lazy sections, pauses, page-table locks and interrupts nest LIFO and are all closed
//!   by the end of the program. A disable closes a section, a resume a pause, an unlock its
//!   lock, an irq_exit its interrupt.
//! * `enable_with_ptes` passes a range inside one table (`start < end <= 256`) and the
//!   matching `ptep`; for a user mm the caller holds that table's page-table lock.
//! * A page-table operation (anything but `ptep_get_lockless` and hardware access) on a
//!   user mm holds the table's lock. On init_mm it holds the lock, or the PTE is in the
//!   CPU's own active range, or nobody else holds the lock and no other CPU's active range
//!   covers it and no other CPU is between `ptep_modify_prot_start` and commit on it (the
//!   caller owns that kernel mapping). In interrupt context only init_mm
//!   PTEs outside the interrupted task's range are touched, and no lock is taken.
//! * `ptep_clear_flush`, which no generation routes, is not used on the CPU's own active
//!   range (its callers, faults and rmap walks, run outside sections).
//! * An init_mm PTE inside another CPU's active range is never touched (kernel ranges are
//!   owned); the init_mm lock justifies an update only outside a running section (the
//!   KASAN shadow callbacks pause first).
//! * `set_pte`, `set_ptes` and `pte_clear` only store over entries that are invalid (in
//!   eager terms), with values a kernel stores (never a marker value or random bits).
//! * `ptep_get_and_clear_full(full=1)` only runs in a user mm's teardown phase (exit_mmap):
//!   the first one begins it, on an mm no CPU runs and whose TLB entries are purged on every
//!   CPU; until `flush_tlb_mm` of the mm ends it, nothing stores a new PTE into the mm
//!   (`set_pte`, `set_ptes`, `ptep_modify_prot_start`), no CPU switches to it and no hardware
//!   access reaches it.
//! * `ptep_modify_prot_start` is followed by that CPU's `ptep_modify_prot_commit` on the
//!   same PTE, with nothing of that CPU in between.
//! * `switch_mm`, `cpu_offline` and `flush_tlb_*` run in task context with nothing open.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use lazymmu_lang::program::*;
use lazymmu_lang::pte::{self, PteClass, PTRS_PER_PTE};
use lazymmu_model::exec::Stepper;
use lazymmu_model::machine::{HwEvent, LazyState, MachineState};
use lazymmu_oracle::Eager;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    Irq,
    /// A lazy-MMU section opened by an enable in this context.
    Section,
    Pause,
    Lock {
        mm: u8,
        table: u8,
    },
}

impl std::fmt::Display for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Frame::Irq => write!(f, "an interrupt (irq_enter)"),
            Frame::Section => write!(f, "a lazy-MMU section"),
            Frame::Pause => write!(f, "a pause (lazy_mmu_mode_pause)"),
            Frame::Lock { mm, table } => write!(f, "the page-table lock of mm{mm} t{table}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub step: usize,
    pub cpu: u8,
    pub rule: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {} (cpu{}): {}", self.step, self.cpu, self.rule)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuState {
    pub online: bool,
    pub frames: Vec<Frame>,
    /// Generic-layer counts of the task (interrupt context leaves them alone).
    pub enable_count: u8,
    pub pause_count: u8,
    /// The range the active section was entered with, while it is in force.
    pub range: Option<PteRange>,
    /// An open `ptep_modify_prot_start`: the PTE and the value it returned.
    pub prot: Option<(PteRef, u64)>,
    pub current_mm: Option<u8>,
}

impl CpuState {
    /// The task's lazy-MMU counts.
    pub fn lazy(&self) -> LazyState {
        LazyState {
            enable_count: self.enable_count,
            pause_count: self.pause_count,
        }
    }

    pub fn in_irq(&self) -> bool {
        self.frames.contains(&Frame::Irq)
    }
    pub fn holds(&self, mm: u8, table: u8) -> bool {
        self.frames.contains(&Frame::Lock { mm, table })
    }
    pub fn locks(&self) -> usize {
        self.frames
            .iter()
            .filter(|f| matches!(f, Frame::Lock { .. }))
            .count()
    }
    /// The range in force for routing, if the section is active and was given one.
    pub fn active_range(&self) -> Option<PteRange> {
        if self.lazy().is_active() {
            self.range
        } else {
            None
        }
    }
}

/// A `ContractState` saved between steps, to resume from later (`ContractState::restore`)
/// or to compare: two states that are equal decide every later step alike.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractSnapshot {
    cpus: Vec<CpuState>,
    attach: Vec<u8>,
    teardown: Vec<bool>,
    owed: BTreeMap<PteRef, Vec<(u64, u8)>>,
    eager: MachineState,
}

impl ContractSnapshot {
    /// Bytes this snapshot takes on the heap, roughly.
    pub fn heap_bytes(&self) -> usize {
        self.eager.heap_bytes()
            + self.attach.len()
            + self.teardown.len()
            + self.owed.values().map(|v| 48 + v.len() * 16).sum::<usize>()
            + self
                .cpus
                .iter()
                .map(|c| std::mem::size_of::<CpuState>() + c.frames.len() * 4)
                .sum::<usize>()
    }
}

/// Follows a program through the contract. The eager value of every PTE comes from the
/// oracle itself, stepped along (`Stepper`): the eager semantics exist once, in
/// lazymmu-oracle.
pub struct ContractState {
    pub config: MachineConfig,
    pub cpus: Vec<CpuState>,
    /// The eager kernel on its own machine, at the steps applied so far.
    eager: Stepper<Eager>,
    /// Steps applied so far.
    applied: usize,
    pub attach: Vec<u8>,
    /// Per mm: in its teardown phase (from the first `full=1` clear to `flush_tlb_mm`).
    pub teardown: Vec<bool>,
    /// Purges the eager code owes (docs/semantics.md#rule-stale-tlb): per PTE, values it
    /// replaced with an invalidation and the CPUs whose TLB entries of them must go.
    owed: BTreeMap<PteRef, Vec<(u64, u8)>>,
}

impl ContractState {
    pub fn new(config: &MachineConfig) -> Self {
        let mut cpus: Vec<CpuState> = (0..config.cpus)
            .map(|_| CpuState {
                online: true,
                ..Default::default()
            })
            .collect();
        for (m, mm) in config.mms.iter().enumerate() {
            if mm.kind == MmKind::User {
                for (c, cpu) in cpus.iter_mut().enumerate() {
                    if mm.attach_mask & (1 << c) != 0 && cpu.current_mm.is_none() {
                        cpu.current_mm = Some(m as u8);
                    }
                }
            }
        }
        ContractState {
            config: config.clone(),
            cpus,
            eager: Stepper::new(config, Eager),
            applied: 0,
            attach: config.mms.iter().map(|m| m.attach_mask).collect(),
            teardown: vec![false; config.mms.len()],
            owed: BTreeMap::new(),
        }
    }

    /// Whether the eager code's own semantics owe the purge of a TLB entry of `cpu` that
    /// holds `value` for `p` (which memory no longer holds): the change that replaced it
    /// was made with an IPTE covering that CPU, or with a full flush owed. Changes that
    /// owe nothing (a `full=1` clear, a plain store) and purges that happen by accident
    /// (an IDTE owed by another PTE, an IPTE owed by a later value) do not count.
    pub fn owes_purge(&self, cpu: u8, p: PteRef, value: u64) -> bool {
        self.owed.get(&p).is_some_and(|v| {
            v.iter()
                .any(|&(x, mask)| x == value && mask & (1 << cpu) != 0)
        })
    }

    /// Whether a `full=1` clear may run on `mm` now: in its teardown phase, or able to begin
    /// one (a user mm no CPU runs, its TLB entries purged everywhere).
    pub fn full_clear_allowed(&self, mm: u8) -> bool {
        !self.is_init(mm)
            && self.attach[mm as usize] == 0
            && (self.teardown[mm as usize] || !self.tlb_holds(mm))
    }

    /// Whether any CPU's TLB (in eager terms) holds an entry of `mm`.
    fn tlb_holds(&self, mm: u8) -> bool {
        let (lo, hi) = (PteRef::new(mm, 0, 0), PteRef::new(mm, u8::MAX, u16::MAX));
        self.eager
            .machine
            .cpus
            .iter()
            .any(|c| c.tlb.range(lo..=hi).next().is_some())
    }

    /// The eager kernel's machine at the steps applied so far: the hardware's and the
    /// generic layer's view (interrupt depth, lazy-MMU counts), whatever the caller's
    /// frames say.
    pub fn machine(&self) -> &lazymmu_model::machine::Machine {
        &self.eager.machine
    }

    /// The state now (between steps), for `restore`.
    pub fn save(&self) -> ContractSnapshot {
        // Every field named: one added later must be saved here too (or be the config).
        let ContractState {
            config: _,
            cpus,
            eager,
            applied: _,
            attach,
            teardown,
            owed,
        } = self;
        ContractSnapshot {
            cpus: cpus.clone(),
            attach: attach.clone(),
            teardown: teardown.clone(),
            owed: owed.clone(),
            eager: eager.machine.save(),
        }
    }

    /// The state `s` (saved with this `config`) after `applied` steps.
    pub fn restore(config: &MachineConfig, s: &ContractSnapshot, applied: usize) -> Self {
        let mut st = ContractState::new(config);
        st.reset_to(s, applied);
        st
    }

    /// Puts this state (of the same machine) in the state `s` after `applied` steps:
    /// `restore` without building a new machine.
    pub fn reset_to(&mut self, s: &ContractSnapshot, applied: usize) {
        // Every field named, as in `save`.
        let ContractState {
            config: _,
            cpus,
            eager,
            applied: steps,
            attach,
            teardown,
            owed,
        } = self;
        cpus.clone_from(&s.cpus);
        attach.clone_from(&s.attach);
        teardown.clone_from(&s.teardown);
        owed.clone_from(&s.owed);
        eager.machine.restore(&s.eager);
        // Only recorded, never read here: dropped so that a reused state does not grow.
        eager.machine.take_events();
        *steps = applied;
    }

    /// Whether the state now is `s`: `self.save() == *s` without building it.
    pub fn matches(&self, s: &ContractSnapshot) -> bool {
        let ContractState {
            config: _,
            cpus,
            eager,
            applied: _,
            attach,
            teardown,
            owed,
        } = self;
        *cpus == s.cpus
            && *attach == s.attach
            && *teardown == s.teardown
            && *owed == s.owed
            && eager.machine.matches(&s.eager)
    }

    /// The eager value of `p` now.
    pub fn value(&self, p: PteRef) -> u64 {
        self.eager.machine.pte(p)
    }

    fn is_init(&self, mm: u8) -> bool {
        self.config.mms[mm as usize].kind == MmKind::Init
    }

    /// Whether `cpu` may run a locked page-table operation on `p` now (the ownership rule).
    pub fn may_touch(&self, cpu: u8, p: PteRef) -> bool {
        let me = &self.cpus[cpu as usize];
        let others_free = || {
            self.cpus.iter().enumerate().all(|(c, s)| {
                c == cpu as usize
                    || (!s.holds(p.mm, p.table) && !s.active_range().is_some_and(|r| r.contains(p)))
            })
        };
        // An open modify-prot transaction of another CPU owns its PTE, whatever else holds.
        let in_transaction = self
            .cpus
            .iter()
            .enumerate()
            .any(|(c, s)| c != cpu as usize && s.prot.is_some_and(|(q, _)| q == p));
        if in_transaction {
            return false;
        }
        if me.in_irq() {
            return self.is_init(p.mm)
                && !me.active_range().is_some_and(|r| r.contains(p))
                && !me.holds(p.mm, p.table)
                && others_free();
        }
        if !self.is_init(p.mm) {
            return me.holds(p.mm, p.table);
        }
        // init_mm: a kernel range belongs to the CPU whose section covers it; nobody else
        // touches it, not even under the lock.
        if self
            .cpus
            .iter()
            .enumerate()
            .any(|(c, s)| c != cpu as usize && s.active_range().is_some_and(|r| r.contains(p)))
        {
            return false;
        }
        if me.active_range().is_some_and(|r| r.contains(p)) {
            return true;
        }
        // Elsewhere the init_mm lock orders updates (the KASAN shadow callbacks), and its
        // holders pause any section of theirs first; or the caller owns the mapping.
        let section_running = me.lazy().is_active();
        (me.holds(p.mm, p.table) && !section_running) || others_free()
    }

    /// Whether an init_mm range of `cpu` would cover what another CPU owns: its active
    /// range or the PTE of its open modify-prot transaction.
    pub fn range_conflicts(&self, cpu: u8, r: PteRange) -> bool {
        self.is_init(r.mm)
            && self.cpus.iter().enumerate().any(|(c, s)| {
                c != cpu as usize
                    && (s.prot.is_some_and(|(q, _)| r.contains(q))
                        || s.active_range().is_some_and(|o| {
                            o.mm == r.mm && o.table == r.table && o.start < r.end && r.start < o.end
                        }))
            })
    }

    fn lock_free(&self, mm: u8, table: u8) -> bool {
        self.cpus.iter().all(|s| !s.holds(mm, table))
    }

    /// The first rule `step` breaks in the current state, if any.
    pub fn check(&self, step: &Step) -> Result<(), String> {
        let c = step.cpu as usize;
        let me = &self.cpus[c];
        if !me.online {
            return if step.op == Op::CpuOnline {
                Ok(())
            } else {
                Err("step on an offline CPU".into())
            };
        }
        if let Some((p, old)) = me.prot {
            return match step.op {
                // Committing what the start returned is a change of nothing (the kernel's
                // pte_modify() with the same protection): fine whatever that value is.
                Op::ModifyProtCommit { pte, value } if pte == p && value == old => Ok(()),
                Op::ModifyProtCommit { pte, value } if pte == p => realistic_value(value),
                _ => Err(format!(
                    "ptep_modify_prot_start on {p} is not followed by its commit"
                )),
            };
        }
        let quiet = || -> Result<(), String> {
            if me.frames.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{} with {} still open",
                    step.op.name(),
                    me.frames.last().unwrap()
                ))
            }
        };
        let top = me.frames.last().copied();
        let touch = |p: PteRef| {
            if self.may_touch(step.cpu, p) {
                Ok(())
            } else {
                Err(format!(
                    "{} on {p} without owning it (page-table lock or own range)",
                    step.op.name()
                ))
            }
        };
        let store_over_invalid = |p: PteRef| {
            let v = self.value(p);
            if pte::valid(v) {
                Err(format!(
                    "{} over {p} which is valid ({v:#x})",
                    step.op.name()
                ))
            } else {
                Ok(())
            }
        };
        self.teardown_allows(step)?;
        match step.op {
            Op::Enable | Op::Pause | Op::IsLazyActive => Ok(()),
            Op::EnableWithPtes { range, ptep } => {
                if range.start >= range.end || range.end as usize > PTRS_PER_PTE {
                    return Err(format!(
                        "range [{}..{}) is not inside one table",
                        range.start, range.end
                    ));
                }
                if ptep != range.first() {
                    return Err(format!("ptep {ptep} does not match the range start"));
                }
                if self.range_conflicts(step.cpu, range) {
                    return Err(format!(
                        "init_mm range [{}..{}) overlaps what another CPU owns",
                        range.start, range.end
                    ));
                }
                if !self.is_init(range.mm) && !me.in_irq() && !me.holds(range.mm, range.table) {
                    return Err(format!(
                        "section on mm{} t{} without its page-table lock",
                        range.mm, range.table
                    ));
                }
                Ok(())
            }
            Op::Disable => match top {
                Some(Frame::Section) => Ok(()),
                _ => Err("disable without a matching enable".into()),
            },
            Op::Resume => match top {
                Some(Frame::Pause) => Ok(()),
                _ => Err("resume without a matching pause".into()),
            },
            Op::IrqEnter => {
                if me.frames.iter().filter(|f| **f == Frame::Irq).count() >= 2 {
                    Err("interrupts nested deeper than 2".into())
                } else {
                    Ok(())
                }
            }
            Op::IrqExit => match top {
                Some(Frame::Irq) => Ok(()),
                _ => Err("irq_exit with something else open or no interrupt".into()),
            },
            Op::LockPtl { mm, table } => {
                if me.in_irq() {
                    Err("page-table lock taken in interrupt context".into())
                } else if !self.lock_free(mm, table) {
                    Err(format!(
                        "page-table lock of mm{mm} t{table} is already held"
                    ))
                } else if me.locks() >= 2 {
                    Err("more than two page-table locks held".into())
                } else {
                    Ok(())
                }
            }
            Op::UnlockPtl { mm, table } => match top {
                Some(Frame::Lock { mm: m, table: t }) if m == mm && t == table => Ok(()),
                _ => Err(format!(
                    "unlock of mm{mm} t{table} which is not the innermost thing held"
                )),
            },
            Op::SetPte { pte, value } => {
                touch(pte)?;
                store_over_invalid(pte)?;
                realistic_value(value)
            }
            Op::SetPtes { pte, value, n } => {
                for i in 0..n {
                    touch(pte.offset(i))?;
                    store_over_invalid(pte.offset(i))?;
                }
                if !pte::pte_present(value) {
                    return Err("set_ptes with a value that is not present".into());
                }
                realistic_value(value)
            }
            Op::PteClear { pte } => {
                touch(pte)?;
                store_over_invalid(pte)
            }
            Op::PtepGetAndClearFull { pte, full: true } => {
                touch(pte)?;
                if self.is_init(pte.mm) || self.attach[pte.mm as usize] != 0 {
                    Err("ptep_get_and_clear_full(full=1) on an mm that is still running".into())
                } else if !self.teardown[pte.mm as usize] && self.tlb_holds(pte.mm) {
                    Err(format!(
                        "ptep_get_and_clear_full(full=1) begins the teardown of mm{} while a \
                         CPU's TLB still holds its entries",
                        pte.mm
                    ))
                } else {
                    Ok(())
                }
            }
            Op::ModifyProtCommit { pte, .. } => {
                Err(format!("ptep_modify_prot_commit on {pte} without a start"))
            }
            Op::PtepGet { pte }
            | Op::PtepGetAndClear { pte }
            | Op::PtepGetAndClearFull { pte, full: false }
            | Op::PtepTestAndClearYoung { pte }
            | Op::ModifyProtStart { pte }
            | Op::SetWrprotect { pte } => touch(pte),
            Op::PtepClearFlush { pte } => {
                touch(pte)?;
                // Never routed; its callers (faults, rmap walks) run outside sections.
                if me.active_range().is_some_and(|r| r.contains(pte)) {
                    Err(format!(
                        "ptep_clear_flush on {pte} inside the CPU's own active range"
                    ))
                } else {
                    Ok(())
                }
            }
            Op::PtepGetLockless { .. } | Op::Access { .. } => Ok(()),
            Op::FlushTlbRange { range } => {
                if me.in_irq() {
                    Err("flush_tlb_range in interrupt context".into())
                } else if range.start >= range.end {
                    Err("empty flush range".into())
                } else {
                    Ok(())
                }
            }
            Op::FlushTlbMm { .. } => {
                if me.in_irq() {
                    Err("flush_tlb_mm in interrupt context".into())
                } else {
                    Ok(())
                }
            }
            Op::SwitchMm { mm } => {
                quiet()?;
                match mm {
                    Some(m) if self.is_init(m) => Err("switch_mm to init_mm".into()),
                    _ => Ok(()),
                }
            }
            Op::CpuOffline => {
                quiet()?;
                if self.cpus.iter().filter(|s| s.online).count() < 2 {
                    Err("offlining the last online CPU".into())
                } else {
                    Ok(())
                }
            }
            Op::CpuOnline => Err("cpu_online on a CPU that is online".into()),
        }
    }

    /// What an mm's teardown phase forbids: new PTEs, a CPU running it, hardware access.
    fn teardown_allows(&self, step: &Step) -> Result<(), String> {
        let (mm, what) = match step.op {
            Op::SetPte { pte, .. } | Op::SetPtes { pte, .. } | Op::ModifyProtStart { pte } => {
                (pte.mm, step.op.name())
            }
            Op::SwitchMm { mm: Some(m) } => (m, "switch_mm"),
            Op::Access { pte, .. } => (pte.mm, "a hardware access"),
            _ => return Ok(()),
        };
        if self.teardown[mm as usize] {
            Err(format!(
                "{what} into mm{mm} during its teardown (from ptep_get_and_clear_full(full=1) \
                 to flush_tlb_mm)"
            ))
        } else {
            Ok(())
        }
    }

    /// Follows `step` (whether or not it keeps the contract): frames, generic-layer counts,
    /// eager values and the purges they owe. Never panics on a valid program.
    pub fn apply(&mut self, step: &Step) {
        let c = step.cpu as usize;
        // The caller's state first: a modify-prot start records the value before the
        // eager kernel runs the step.
        if self.cpus[c].online || step.op == Op::CpuOnline {
            self.track(step);
        }
        let invalidated = match step.op {
            Op::PtepGetAndClear { pte }
            | Op::PtepGetAndClearFull { pte, full: false }
            | Op::PtepTestAndClearYoung { pte }
            | Op::ModifyProtStart { pte }
            | Op::SetWrprotect { pte }
            | Op::PtepClearFlush { pte } => Some((pte, self.value(pte))),
            _ => None,
        };
        let (_, events) = self.eager.step(self.applied, step);
        self.applied += 1;
        if !step.op.is_pte_update() {
            return;
        }
        // A value stored again may be cached again: its old obligations lapse.
        for p in step.op.written_ptes() {
            if let Some(v) = self.owed.get_mut(&p) {
                let now = self.eager.machine.pte(p);
                v.retain(|&(x, _)| x != now);
            }
        }
        let Some((p, old)) = invalidated.filter(|&(_, old)| pte::valid(old)) else {
            return;
        };
        let mask = owed_mask(&events, p, step.cpu).or(self.eager.machine.mms[p.mm as usize]
            .ctx
            .flush_mm
            .then_some(u8::MAX));
        if let Some(mask) = mask {
            let v = self.owed.entry(p).or_default();
            match v.iter_mut().find(|(x, _)| *x == old) {
                Some((_, m)) => *m |= mask,
                None => v.push((old, mask)),
            }
        }
    }

    /// The caller's side of a step: sections, pauses, interrupts, locks, transactions,
    /// attach masks and CPUs online.
    fn track(&mut self, step: &Step) {
        let c = step.cpu as usize;
        let in_irq = self.cpus[c].in_irq();
        match step.op {
            Op::Enable | Op::EnableWithPtes { .. } => {
                let me = &mut self.cpus[c];
                me.frames.push(Frame::Section);
                if !in_irq && me.pause_count == 0 {
                    if me.enable_count == 0 {
                        me.range = match step.op {
                            Op::EnableWithPtes { range, .. } => Some(range),
                            _ => None,
                        };
                    }
                    me.enable_count = me.enable_count.wrapping_add(1);
                }
            }
            Op::Disable => {
                let me = &mut self.cpus[c];
                pop(&mut me.frames, Frame::Section);
                if !in_irq && me.pause_count == 0 {
                    me.enable_count = me.enable_count.wrapping_sub(1);
                    if me.enable_count == 0 {
                        me.range = None;
                    }
                }
            }
            Op::Pause => {
                let me = &mut self.cpus[c];
                me.frames.push(Frame::Pause);
                if !in_irq {
                    if me.lazy().is_active() {
                        me.range = None; // resume re-enters without a range
                    }
                    me.pause_count = me.pause_count.wrapping_add(1);
                }
            }
            Op::Resume => {
                let me = &mut self.cpus[c];
                pop(&mut me.frames, Frame::Pause);
                if !in_irq {
                    me.pause_count = me.pause_count.wrapping_sub(1);
                }
            }
            Op::IrqEnter => self.cpus[c].frames.push(Frame::Irq),
            Op::IrqExit => pop(&mut self.cpus[c].frames, Frame::Irq),
            Op::LockPtl { mm, table } => self.cpus[c].frames.push(Frame::Lock { mm, table }),
            Op::UnlockPtl { mm, table } => pop(&mut self.cpus[c].frames, Frame::Lock { mm, table }),
            Op::ModifyProtStart { pte } => {
                let v = self.value(pte);
                self.cpus[c].prot = Some((pte, v));
            }
            Op::ModifyProtCommit { .. } => self.cpus[c].prot = None,
            Op::PtepGetAndClearFull { pte, full: true } => self.teardown[pte.mm as usize] = true,
            Op::FlushTlbMm { mm } => self.teardown[mm as usize] = false,
            Op::SwitchMm { mm } => {
                for (m, cfg) in self.config.mms.iter().enumerate() {
                    if cfg.kind == MmKind::User {
                        self.attach[m] &= !(1 << c);
                    }
                }
                self.cpus[c].current_mm = mm;
                if let Some(n) = mm {
                    self.attach[n as usize] |= 1 << c;
                }
            }
            Op::CpuOffline => {
                self.cpus[c] = CpuState::default();
                for a in &mut self.attach {
                    *a &= !(1 << c);
                }
            }
            Op::CpuOnline => {
                self.cpus[c] = CpuState {
                    online: true,
                    ..Default::default()
                };
                for (m, mm) in self.config.mms.iter().enumerate() {
                    if mm.kind == MmKind::Init {
                        self.attach[m] |= 1 << c;
                    }
                }
            }
            _ => {}
        }
    }

    /// What must still be closed at the end of the program.
    pub fn check_end(&self) -> Vec<(u8, String)> {
        let mut out = vec![];
        for (c, s) in self.cpus.iter().enumerate() {
            if let Some((p, _)) = s.prot {
                out.push((
                    c as u8,
                    format!("ptep_modify_prot_start on {p} never committed"),
                ));
            }
            if let Some(f) = s.frames.last() {
                out.push((c as u8, format!("{f} still open at the end")));
            }
        }
        for (m, _) in self.teardown.iter().enumerate().filter(|(_, t)| **t) {
            out.push((
                0,
                format!("the teardown of mm{m} is not ended by flush_tlb_mm"),
            ));
        }
        out
    }
}

/// The CPUs whose TLB entries of `p` the step's own IPTE purged: every CPU for a global
/// IPTE or IPTE-range covering `p`, the issuing CPU for a local one.
fn owed_mask(events: &[HwEvent], p: PteRef, cpu: u8) -> Option<u8> {
    let mut mask = 0u8;
    for e in events {
        let (covers, local) = match *e {
            HwEvent::Ipte { pte, local } => (pte == p, local),
            HwEvent::IpteRange {
                mm,
                table,
                first,
                count,
                local,
            } => (
                mm == p.mm && table == p.table && p.index >= first && p.index < first + count,
                local,
            ),
            _ => continue,
        };
        if covers {
            mask |= if local { 1 << cpu } else { u8::MAX };
        }
    }
    (mask != 0).then_some(mask)
}

fn pop(frames: &mut Vec<Frame>, want: Frame) {
    if frames.last() == Some(&want) {
        frames.pop();
    }
}

/// Bits the kernel's helpers (mkold, wrprotect, mkwrite, mkdirty, ...) may leave in a
/// present, readable PTE.
const HELPER_BITS: u64 = pte::PAGE_INVALID
    | pte::PAGE_PROTECT
    | pte::PAGE_WRITE
    | pte::PAGE_READ
    | pte::PAGE_DIRTY
    | pte::PAGE_YOUNG
    | pte::PAGE_SOFT_DIRTY
    | pte::PAGE_PRESENT;

/// A value a kernel stores: one of the realistic classes, or one the PTE helpers derive
/// from them. Never a marker value or random bits.
pub fn realistic_value(v: u64) -> Result<(), String> {
    let derived = pte::pte_present(v) && v & pte::PAGE_READ != 0 && v & 0xfff & !HELPER_BITS == 0;
    if PteClass::REALISTIC.contains(&PteClass::of(v)) || derived {
        Ok(())
    } else {
        Err(format!("value {v:#x} is not one a kernel stores"))
    }
}

/// Every contract rule `program` breaks, in order.
pub fn violations(program: &Program) -> Vec<Violation> {
    let mut st = ContractState::new(&program.config);
    let mut out = vec![];
    for (i, s) in program.steps.iter().enumerate() {
        if let Err(rule) = st.check(s) {
            out.push(Violation {
                step: i,
                cpu: s.cpu,
                rule,
            });
        }
        st.apply(s);
    }
    for (cpu, rule) in st.check_end() {
        out.push(Violation {
            step: program.steps.len(),
            cpu,
            rule,
        });
    }
    out
}

/// Whether the program keeps the contract (see the module documentation).
pub fn is_realistic(program: &Program) -> bool {
    violations(program).is_empty()
}
