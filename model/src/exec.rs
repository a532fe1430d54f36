//! The run loop: drives a `Program` through one kernel implementation on a fresh
//! `Machine` and records a `Trace`. The oracle and the C target are both `Kernel`s, so
//! their traces have the same shape and can be compared field by field.

use serde::{Deserialize, Serialize};

use crate::machine::{AccessResult, EventRecord, HwEvent, LazyState, Machine, Snapshot};
use lazymmu_lang::program::{MachineConfig, Op, Program, Step};

/// What a step returned to its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Ret {
    /// A void function.
    None,
    /// A PTE value (`ptep_get`, `ptep_get_and_clear`, `ptep_modify_prot_start`, ...).
    Pte(u64),
    /// A truth value (`ptep_test_and_clear_young`, `is_lazy_mmu_mode_active`).
    Bool(bool),
    /// What the CPU's translation did.
    Access(AccessResult),
    /// The step's CPU is offline, so nothing ran.
    CpuOffline,
}

/// The kernel logic under test or of reference. The hardware ops (`Access`, interrupts,
/// page-table locks) are the machine's and never reach a `Kernel`.
pub trait Kernel {
    /// Identifies the implementation in traces and reports.
    fn name(&self) -> String;
    /// Called on the fresh machine before the first step of every program.
    fn start(&mut self, _m: &mut Machine) {}
    /// Runs one kernel op on `cpu`. Must keep `m.cpus[cpu].lazy` equal to the task's
    /// lazy-MMU state after the op.
    fn op(&mut self, m: &mut Machine, cpu: u8, op: &Op) -> Ret;
    /// Called after the last step.
    fn finish(&mut self, _m: &mut Machine) {}
}

/// Why a snapshot was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SyncKind {
    /// The outermost disable of a section (`arch_leave_lazy_mmu_mode`).
    Disable,
    /// A nested disable (`arch_flush_lazy_mmu_mode`).
    NestedDisable,
    /// A pause that left an active section.
    Pause,
    /// The end of an interrupt taken while the task's section was active: what the
    /// interrupt updated is in memory (interrupt context never batches).
    IrqExit,
    /// The caller's TLB flush (`flush_tlb_range`, `flush_tlb_mm`): after it, no TLB may hold
    /// a translation that differs from memory (docs/semantics.md#rule-stale-tlb).
    Flush,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SyncPoint {
    pub step: usize,
    pub cpu: u8,
    pub kind: SyncKind,
    pub snapshot: Snapshot,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepRecord {
    pub ret: Ret,
    /// Instructions the step issued, in order.
    pub hw: Vec<HwEvent>,
    /// The step's CPU's task lazy-MMU state after the step.
    pub lazy: LazyState,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Trace {
    pub implementation: String,
    /// Number of tables per mm: the layout of every snapshot's memory image.
    pub layout: Vec<u8>,
    pub steps: Vec<StepRecord>,
    pub syncs: Vec<SyncPoint>,
    /// Snapshots right after every `flush_tlb_range` / `flush_tlb_mm` / switch-in.
    pub flushes: Vec<SyncPoint>,
    /// Machine rule events, in the order they happened.
    pub events: Vec<EventRecord>,
    /// The machine after the last step.
    pub end: Snapshot,
}

/// Which sync point, if any, a lazy-MMU op made: read off the task state before and
/// after (and whether the CPU was in an interrupt), so it holds for any implementation of
/// the generic layer.
pub fn sync_kind(op: &Op, before: LazyState, after: LazyState, in_irq: bool) -> Option<SyncKind> {
    match op {
        Op::Disable if after.enable_count != before.enable_count => {
            Some(if after.enable_count == 0 {
                SyncKind::Disable
            } else {
                SyncKind::NestedDisable
            })
        }
        Op::Pause if before.is_active() && after.pause_count == 1 => Some(SyncKind::Pause),
        Op::IrqExit if in_irq && after.is_active() => Some(SyncKind::IrqExit),
        _ => None,
    }
}

/// The hardware half of a step, if the op is one the machine performs alone.
fn hardware_op(m: &mut Machine, cpu: u8, op: &Op) -> Option<Ret> {
    let c = cpu as usize;
    Some(match *op {
        Op::Access { pte, write } => Ret::Access(m.access(cpu, pte, write)),
        Op::IrqEnter => {
            m.cpus[c].irq_depth = m.cpus[c].irq_depth.saturating_add(1);
            Ret::None
        }
        Op::IrqExit => {
            m.cpus[c].irq_depth = m.cpus[c].irq_depth.saturating_sub(1);
            Ret::None
        }
        Op::LockPtl { mm, table } => {
            m.lock_ptl(cpu, mm, table);
            Ret::None
        }
        Op::UnlockPtl { mm, table } => {
            m.unlock_ptl(cpu, mm, table);
            Ret::None
        }
        _ => return None,
    })
}

/// A program run one step at a time: the machine, the kernel, and the step logic of the
/// run loop (offline CPUs, hardware ops, the open modify-prot transaction). `run` records
/// a trace with it; the API contract follows the eager values with it, so the eager
/// semantics exist once.
pub struct Stepper<K: Kernel> {
    pub machine: Machine,
    pub kernel: K,
}

impl<K: Kernel> Stepper<K> {
    /// A fresh machine for `config`, with the kernel started on it.
    pub fn new(config: &MachineConfig, mut kernel: K) -> Self {
        let mut machine = Machine::new(config);
        kernel.start(&mut machine);
        Stepper { machine, kernel }
    }

    /// Runs step `i`; returns what it returned and the instructions it issued.
    pub fn step(&mut self, i: usize, step: &Step) -> (Ret, Vec<HwEvent>) {
        let m = &mut self.machine;
        let cpu = step.cpu;
        let c = cpu as usize;
        m.begin_step(i, cpu);
        if !m.cpus[c].online && step.op != Op::CpuOnline {
            m.end_step();
            return (Ret::CpuOffline, vec![]);
        }
        let ret = match hardware_op(m, cpu, &step.op) {
            Some(r) => r,
            None => self.kernel.op(m, cpu, &step.op),
        };
        if let (Op::ModifyProtStart { pte }, Ret::Pte(old)) = (&step.op, ret) {
            m.cpus[c].prot_start = Some((*pte, old));
        }
        (ret, m.end_step())
    }
}

/// Runs `program` through `kernel` on a fresh machine. The program must be valid
/// (`Program::validate`).
pub fn run<K: Kernel + ?Sized>(program: &Program, kernel: &mut K) -> Trace {
    let mut s = Stepper::new(&program.config, &mut *kernel);
    let mut steps = Vec::with_capacity(program.steps.len());
    let mut syncs = vec![];
    let mut flushes = vec![];
    for (i, step) in program.steps.iter().enumerate() {
        let c = step.cpu as usize;
        let before = s.machine.cpus[c].lazy;
        let in_irq = s.machine.cpus[c].in_interrupt();
        let (ret, hw) = s.step(i, step);
        let m = &s.machine;
        let after = m.cpus[c].lazy;
        steps.push(StepRecord {
            ret,
            hw,
            lazy: after,
        });
        if ret == Ret::CpuOffline {
            continue;
        }
        if let Some(kind) = sync_kind(&step.op, before, after, in_irq) {
            syncs.push(SyncPoint {
                step: i,
                cpu: step.cpu,
                kind,
                snapshot: m.snapshot(),
            });
        }
        if matches!(
            step.op,
            Op::FlushTlbRange { .. } | Op::FlushTlbMm { .. } | Op::SwitchMm { mm: Some(_) }
        ) {
            flushes.push(SyncPoint {
                step: i,
                cpu: step.cpu,
                kind: SyncKind::Flush,
                snapshot: m.snapshot(),
            });
        }
    }
    s.kernel.finish(&mut s.machine);
    Trace {
        implementation: s.kernel.name(),
        layout: s.machine.layout(),
        steps,
        syncs,
        flushes,
        events: s.machine.take_events(),
        end: s.machine.snapshot(),
    }
}

/// A kernel borrowed for a run.
impl<K: Kernel + ?Sized> Kernel for &mut K {
    fn name(&self) -> String {
        (**self).name()
    }
    fn start(&mut self, m: &mut Machine) {
        (**self).start(m)
    }
    fn op(&mut self, m: &mut Machine, cpu: u8, op: &Op) -> Ret {
        (**self).op(m, cpu, op)
    }
    fn finish(&mut self, m: &mut Machine) {
        (**self).finish(m)
    }
}
