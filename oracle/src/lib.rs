//! The eager-IPTE oracle: what the s390 kernel did before the batching series
//! (docs/semantics.md: #policies, #eager, #generic-layer), as a `Kernel` over the shared
//! simulated machine.
//!
//! Every page-table operation takes effect in memory at once, with the IPTE its
//! invalidation policy calls for; the generic lazy-MMU layer only counts (the s390 arch
//! hooks of the eager kernel do nothing).

use lazymmu_lang::program::{MmKind, Op, PteRef};
use lazymmu_lang::pte::{self, PTE_NONE};
use lazymmu_model::exec::{Kernel, Ret};
use lazymmu_model::machine::{Event, Machine, UvKind};

/// The eager kernel. Stateless: all state is the machine's.
#[derive(Clone, Copy, Debug, Default)]
pub struct Eager;

/// Runs a program through the oracle.
pub fn run(program: &lazymmu_lang::Program) -> lazymmu_model::Trace {
    lazymmu_model::run(program, &mut Eager)
}

impl Kernel for Eager {
    fn name(&self) -> String {
        "eager-oracle".into()
    }

    fn op(&mut self, m: &mut Machine, cpu: u8, op: &Op) -> Ret {
        match *op {
            Op::Enable | Op::EnableWithPtes { .. } => {
                lazy_mmu_mode_enable(m, cpu);
                Ret::None
            }
            Op::Disable => {
                lazy_mmu_mode_disable(m, cpu);
                Ret::None
            }
            Op::Pause => {
                lazy_mmu_mode_pause(m, cpu);
                Ret::None
            }
            Op::Resume => {
                lazy_mmu_mode_resume(m, cpu);
                Ret::None
            }
            Op::IsLazyActive => Ret::Bool(is_lazy_mmu_mode_active(m, cpu)),
            Op::SetPte { pte, value } => {
                set_pte(m, pte, value);
                Ret::None
            }
            Op::SetPtes { pte, value, n } => {
                let mut v = value;
                for i in 0..n {
                    set_pte(m, pte.offset(i), v);
                    v = pte::pte_next_pfn(v);
                }
                Ret::None
            }
            Op::PteClear { pte } => {
                set_pte(m, pte, PTE_NONE);
                Ret::None
            }
            Op::PtepGet { pte } | Op::PtepGetLockless { pte } => Ret::Pte(m.read(pte)),
            Op::PtepGetAndClear { pte } => Ret::Pte(ptep_get_and_clear_full(m, cpu, pte, false)),
            Op::PtepGetAndClearFull { pte, full } => {
                Ret::Pte(ptep_get_and_clear_full(m, cpu, pte, full))
            }
            Op::PtepTestAndClearYoung { pte } => {
                let old = m.read(pte);
                let old = ptep_xchg_direct(m, cpu, pte, pte::pte_mkold(old));
                Ret::Bool(pte::pte_young(old))
            }
            Op::ModifyProtStart { pte } => Ret::Pte(ptep_flush_lazy(m, cpu, pte)),
            Op::ModifyProtCommit { pte, value } => {
                m.cpus[cpu as usize].prot_start = None;
                set_pte(m, pte, value);
                Ret::None
            }
            Op::SetWrprotect { pte } => {
                let old = m.read(pte);
                if pte::pte_write(old) {
                    ptep_xchg_lazy(m, cpu, pte, pte::pte_wrprotect(old));
                }
                Ret::None
            }
            Op::PtepClearFlush { pte } => Ret::Pte(ptep_xchg_direct(m, cpu, pte, PTE_NONE)),
            Op::FlushTlbRange { range } => {
                if m.mms[range.mm as usize].kind == MmKind::Init {
                    // flush_tlb_kernel_range: unconditional.
                    m.idte(range.mm);
                } else {
                    tlb_flush_mm_lazy(m, range.mm);
                }
                Ret::None
            }
            Op::FlushTlbMm { mm } => {
                tlb_flush_mm_lazy(m, mm);
                Ret::None
            }
            Op::SwitchMm { mm } => {
                m.switch_attach(cpu, mm);
                if let Some(n) = mm {
                    // finish_arch_post_lock_switch: join mm_cpumask, do the owed flush.
                    m.mms[n as usize].ctx.cpumask |= Machine::cpu_bit(cpu);
                    tlb_flush_mm_lazy(m, n);
                }
                Ret::None
            }
            Op::CpuOffline => {
                m.cpu_offline(cpu);
                Ret::None
            }
            Op::CpuOnline => {
                m.cpu_online(cpu);
                Ret::None
            }
            // The run loop performs these on the machine; a kernel never sees them.
            Op::Access { .. }
            | Op::IrqEnter
            | Op::IrqExit
            | Op::LockPtl { .. }
            | Op::UnlockPtl { .. } => Ret::None,
        }
    }
}

// ---- the generic lazy-MMU layer (include/linux/pgtable.h) ----
// The eager s390 arch hooks are empty, so only the counts move.

fn lazy_mmu_mode_enable(m: &mut Machine, cpu: u8) {
    let c = &mut m.cpus[cpu as usize];
    if c.in_interrupt() || c.lazy.pause_count > 0 {
        return;
    }
    c.lazy.enable_count = c.lazy.enable_count.wrapping_add(1);
}

/// The generic layer's own warnings: the same words as the shim's copy of the layer
/// (target/shim/lazy_mmu_mode.c), so the checkers see the same event on both sides and
/// never blame an implementation for the generic layer's reaction.
pub const WARN_DISABLE_WITHOUT_ENABLE: &str = "lazy_mmu_mode_disable() without enable";
pub const WARN_RESUME_WITHOUT_PAUSE: &str = "lazy_mmu_mode_resume() without pause";

fn lazy_mmu_mode_disable(m: &mut Machine, cpu: u8) {
    let c = &mut m.cpus[cpu as usize];
    if c.in_interrupt() || c.lazy.pause_count > 0 {
        return;
    }
    let unbalanced = c.lazy.enable_count == 0;
    c.lazy.enable_count = c.lazy.enable_count.wrapping_sub(1);
    if unbalanced {
        m.report(Event::Assertion {
            what: WARN_DISABLE_WITHOUT_ENABLE.into(),
        });
    }
}

fn lazy_mmu_mode_pause(m: &mut Machine, cpu: u8) {
    let c = &mut m.cpus[cpu as usize];
    if c.in_interrupt() {
        return;
    }
    c.lazy.pause_count = c.lazy.pause_count.wrapping_add(1);
}

fn lazy_mmu_mode_resume(m: &mut Machine, cpu: u8) {
    let c = &mut m.cpus[cpu as usize];
    if c.in_interrupt() {
        return;
    }
    let unbalanced = c.lazy.pause_count == 0;
    c.lazy.pause_count = c.lazy.pause_count.wrapping_sub(1);
    if unbalanced {
        m.report(Event::Assertion {
            what: WARN_RESUME_WITHOUT_PAUSE.into(),
        });
    }
}

fn is_lazy_mmu_mode_active(m: &Machine, cpu: u8) -> bool {
    let c = &m.cpus[cpu as usize];
    !c.in_interrupt() && c.lazy.is_active()
}

// ---- eager page-table code (arch/s390/mm/pgtable.c and asm/pgtable.h) ----

/// `set_pte`: a plain store; the newer base strips the UNUSED bit from present values.
pub fn set_pte(m: &mut Machine, p: PteRef, value: u64) {
    m.store(p, pte::stored_value(value));
}

/// `ptep_flush_direct`: local IPTE when this CPU is the only one that may hold TLB
/// entries for the mm and TLB-LC is there, global IPTE otherwise. Returns the old value.
fn ptep_flush_direct(m: &mut Machine, cpu: u8, p: PteRef) -> u64 {
    let old = m.read(p);
    if !pte::valid(old) {
        return old;
    }
    let mm = p.mm as usize;
    m.mms[mm].ctx.flush_count += 1;
    let local = m.config.tlb_lc && m.mms[mm].ctx.cpumask == Machine::cpu_bit(cpu);
    m.ipte(p, local);
    m.mms[mm].ctx.flush_count -= 1;
    old
}

/// `ptep_flush_lazy`: on an mm only this CPU runs, no IPTE: set I and owe a full flush;
/// otherwise a global IPTE. Leaves `old | I` in memory and returns the old value.
fn ptep_flush_lazy(m: &mut Machine, cpu: u8, p: PteRef) -> u64 {
    let old = m.read(p);
    if !pte::valid(old) {
        return old;
    }
    let mm = p.mm as usize;
    m.mms[mm].ctx.flush_count += 1;
    if m.mms[mm].ctx.attach_mask == Machine::cpu_bit(cpu) {
        set_pte(m, p, old | pte::PAGE_INVALID);
        m.mms[mm].ctx.flush_mm = true;
    } else {
        m.ipte(p, false);
    }
    m.mms[mm].ctx.flush_count -= 1;
    old
}

/// `ptep_xchg_direct`: flush with the direct policy, store `new`, return the old value.
fn ptep_xchg_direct(m: &mut Machine, cpu: u8, p: PteRef, new: u64) -> u64 {
    m.cpus[cpu as usize].preempt_count += 1;
    let old = ptep_flush_direct(m, cpu, p);
    set_pte(m, p, new);
    m.cpus[cpu as usize].preempt_count -= 1;
    old
}

/// `ptep_xchg_lazy`: flush with the lazy policy, store `new`, return the old value.
fn ptep_xchg_lazy(m: &mut Machine, cpu: u8, p: PteRef, new: u64) -> u64 {
    m.cpus[cpu as usize].preempt_count += 1;
    let old = ptep_flush_lazy(m, cpu, p);
    set_pte(m, p, new);
    m.cpus[cpu as usize].preempt_count -= 1;
    old
}

/// `ptep_get_and_clear_full`; with `full == false` it is `ptep_get_and_clear`.
fn ptep_get_and_clear_full(m: &mut Machine, cpu: u8, p: PteRef, full: bool) -> u64 {
    let old = if full {
        // exit_mmap: plain read and store; the whole mm is flushed once at teardown.
        let old = m.read(p);
        set_pte(m, p, PTE_NONE);
        old
    } else {
        ptep_xchg_lazy(m, cpu, p, PTE_NONE)
    };
    if m.mms[p.mm as usize].protected && pte::pte_present(old) {
        m.uv_call(
            p,
            if full {
                UvKind::Destroy
            } else {
                UvKind::ConvertFromSecure
            },
        );
    }
    old
}

/// `__tlb_flush_mm_lazy`: the owed full flush, if one is owed.
fn tlb_flush_mm_lazy(m: &mut Machine, mm: u8) {
    if m.mms[mm as usize].ctx.flush_mm {
        m.mms[mm as usize].ctx.flush_mm = false;
        tlb_flush_mm(m, mm);
    }
}

/// `__tlb_flush_mm`: IDTE of the mm; `mm_cpumask` shrinks back to the attached CPUs.
fn tlb_flush_mm(m: &mut Machine, mm: u8) {
    let ctx = &mut m.mms[mm as usize].ctx;
    ctx.flush_count += 1;
    ctx.cpumask = ctx.attach_mask;
    m.idte(mm);
    m.mms[mm as usize].ctx.flush_count -= 1;
}
