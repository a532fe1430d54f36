//! The C implementation as a `Kernel`: each step becomes one call of `lazymmu_shim_op`,
//! with the machine's mm and CPU state copied into the shim before the call and the
//! kernel-owned state (lazy counts, lowcore, preemption, flush state) copied back after.

use lazymmu_lang::program::{MmKind, Op, PteRef};
use lazymmu_model::exec::{Kernel, Ret};
use lazymmu_model::machine::Machine;

use crate::ffi::{callbacks, MmStruct, OpKind, OpRecord, ShimCpu, Task, NR_CPUS};
use crate::library::Library;

pub struct CKernel {
    lib: Library,
    /// Passed to the file's `early_param` handler at the start of every program (e.g.
    /// "off" to turn the v2 static key off).
    pub early_param: Option<String>,
}

impl CKernel {
    pub fn new(lib: Library) -> Self {
        CKernel {
            lib,
            early_param: None,
        }
    }

    pub fn library(&self) -> &Library {
        &self.lib
    }

    fn state(&mut self) -> &mut crate::ffi::ShimState {
        // SAFETY: the state lives as long as the library, which we own.
        unsafe { &mut *self.lib.state }
    }

    /// Machine -> shim: the current CPU, interrupt depth and every mm's flush state.
    fn sync_in(&mut self, m: &mut Machine, cpu: u8) {
        let cb = callbacks(m as *mut Machine);
        let s = self.state();
        s.cpu = cpu as i32;
        s.cb = cb;
        for (c, mc) in m.cpus.iter().enumerate().take(NR_CPUS) {
            s.cpus[c].irq_depth = mc.irq_depth as i32;
        }
        for (i, mm) in m.mms.iter().enumerate() {
            let x = &mut s.mms[i];
            x.context.cpu_attach_mask = mm.ctx.attach_mask as _;
            x.cpu_bitmap = mm.ctx.cpumask as _;
            x.context.flush_mm = mm.ctx.flush_mm as i32;
            x.context.flush_count = mm.ctx.flush_count;
        }
    }

    /// Shim -> machine: what kernel code may have changed.
    fn sync_out(&mut self, m: &mut Machine) {
        let s = self.state();
        for (i, mm) in m.mms.iter_mut().enumerate() {
            let x = &s.mms[i];
            mm.ctx.attach_mask = x.context.cpu_attach_mask as u8;
            mm.ctx.cpumask = x.cpu_bitmap as u8;
            mm.ctx.flush_mm = x.context.flush_mm != 0;
            mm.ctx.flush_count = x.context.flush_count;
        }
        for (c, mc) in m.cpus.iter_mut().enumerate().take(NR_CPUS) {
            mc.lazy.enable_count = s.tasks[c].enable_count;
            mc.lazy.pause_count = s.tasks[c].pause_count;
            mc.lazy_mmu_count = s.lowcore[c].lazy_mmu_count;
            mc.preempt_count = s.cpus[c].preempt_count;
        }
    }

    fn call(&mut self, m: &mut Machine, cpu: u8, rec: OpRecord) -> u64 {
        self.sync_in(m, cpu);
        // SAFETY: the record's pointers point into the machine's tables, which outlive
        // the call; the callbacks' ctx is `m`, exclusively borrowed for the call.
        let r = unsafe { (self.lib.op)(&rec) };
        self.sync_out(m);
        // A plain store into the poisoned half of a table's page is reported at the call
        // that made it (a store past the end faults at the instruction instead).
        m.check_poison();
        r
    }

    fn record(m: &Machine, kind: OpKind, pte: PteRef) -> OpRecord {
        let mut r = OpRecord::new(kind);
        r.mm = pte.mm as i32;
        r.is_init_mm = (m.mms[pte.mm as usize].kind == MmKind::Init) as i32;
        r.addr = Machine::vaddr(pte) as _;
        r.ptep = m.host_addr(pte) as *mut _;
        r
    }

    /// Brings `cpu` online in the shim and in the implementation (v3+ allocates there).
    fn online(&mut self, m: &mut Machine, cpu: u8) {
        let s = self.state();
        s.cpus[cpu as usize] = ShimCpu::default();
        s.tasks[cpu as usize] = Task::default();
        s.lowcore[cpu as usize].lazy_mmu_count = 0;
        self.call(m, cpu, OpRecord::new(OpKind::CpuOnline));
    }
}

impl Kernel for CKernel {
    fn name(&self) -> String {
        self.lib.name.clone()
    }

    /// Fresh per-CPU state for every program: the previous program's allocations are
    /// freed and the implementation's statics restored to their load-time image, then
    /// every simulated CPU comes online again.
    fn start(&mut self, m: &mut Machine) {
        // SAFETY: no call into the library is in progress.
        unsafe { (self.lib.reset)() };
        let cfg = m.config.clone();
        let s = self.state();
        s.ncpus = cfg.cpus as i32;
        s.facility13 = cfg.facility13 as i32;
        s.tlb_lc = cfg.tlb_lc as i32;
        s.cpus = [ShimCpu::default(); NR_CPUS];
        s.tasks = [Task::default(); NR_CPUS];
        for l in &mut s.lowcore {
            l.lazy_mmu_count = 0;
        }
        for (i, mm) in cfg.mms.iter().enumerate() {
            s.mms[i] = MmStruct::default();
            s.mms[i].context.id = i as i32;
            s.mms[i].context.is_protected = mm.protected as i32;
        }
        if let Some(arg) = self.early_param.clone() {
            self.sync_in(m, 0);
            self.lib.early_param(&arg);
        }
        for c in 0..cfg.cpus {
            m.begin_step(0, c);
            self.online(m, c);
        }
        m.end_step();
    }

    fn op(&mut self, m: &mut Machine, cpu: u8, op: &Op) -> Ret {
        let pte_ret = |v: u64| Ret::Pte(v);
        match *op {
            Op::Enable => {
                self.call(m, cpu, OpRecord::new(OpKind::Enable));
                Ret::None
            }
            Op::EnableWithPtes { range, ptep } => {
                let mut r = Self::record(m, OpKind::EnableWithPtes, range.first());
                r.end = Machine::vaddr(PteRef {
                    index: 0,
                    ..range.first()
                }) as libc_ulong
                    + ((range.end as u64) << 12) as libc_ulong;
                r.ptep = m.host_addr(ptep) as *mut _;
                self.call(m, cpu, r);
                Ret::None
            }
            Op::Disable => {
                self.call(m, cpu, OpRecord::new(OpKind::Disable));
                Ret::None
            }
            Op::Pause => {
                self.call(m, cpu, OpRecord::new(OpKind::Pause));
                Ret::None
            }
            Op::Resume => {
                self.call(m, cpu, OpRecord::new(OpKind::Resume));
                Ret::None
            }
            Op::IsLazyActive => Ret::Bool(self.call(m, cpu, OpRecord::new(OpKind::IsActive)) != 0),
            Op::SetPte { pte, value } => {
                let mut r = Self::record(m, OpKind::SetPte, pte);
                r.value = value;
                self.call(m, cpu, r);
                Ret::None
            }
            Op::SetPtes { pte, value, n } => {
                let mut r = Self::record(m, OpKind::SetPtes, pte);
                r.value = value;
                r.n = n as u64;
                self.call(m, cpu, r);
                Ret::None
            }
            Op::PteClear { pte } => {
                self.call(m, cpu, Self::record(m, OpKind::PteClear, pte));
                Ret::None
            }
            Op::PtepGet { pte } => {
                pte_ret(self.call(m, cpu, Self::record(m, OpKind::PtepGet, pte)))
            }
            Op::PtepGetLockless { pte } => {
                pte_ret(self.call(m, cpu, Self::record(m, OpKind::GetLockless, pte)))
            }
            Op::PtepGetAndClear { pte } => {
                pte_ret(self.call(m, cpu, Self::record(m, OpKind::GetAndClear, pte)))
            }
            Op::PtepGetAndClearFull { pte, full } => {
                let mut r = Self::record(m, OpKind::GetAndClearFull, pte);
                r.full = full as i32;
                pte_ret(self.call(m, cpu, r))
            }
            Op::PtepTestAndClearYoung { pte } => {
                Ret::Bool(self.call(m, cpu, Self::record(m, OpKind::TestAndClearYoung, pte)) != 0)
            }
            Op::ModifyProtStart { pte } => {
                pte_ret(self.call(m, cpu, Self::record(m, OpKind::ModifyProtStart, pte)))
            }
            Op::ModifyProtCommit { pte, value } => {
                let mut r = Self::record(m, OpKind::ModifyProtCommit, pte);
                r.value = value;
                // The caller passes what its start returned.
                r.old = match m.cpus[cpu as usize].prot_start.take() {
                    Some((p, old)) if p == pte => old,
                    _ => m.pte(pte),
                };
                self.call(m, cpu, r);
                Ret::None
            }
            Op::SetWrprotect { pte } => {
                self.call(m, cpu, Self::record(m, OpKind::SetWrprotect, pte));
                Ret::None
            }
            Op::PtepClearFlush { pte } => {
                pte_ret(self.call(m, cpu, Self::record(m, OpKind::ClearFlush, pte)))
            }
            Op::FlushTlbRange { range } => {
                self.call(
                    m,
                    cpu,
                    Self::record(m, OpKind::FlushTlbRange, range.first()),
                );
                Ret::None
            }
            Op::FlushTlbMm { mm } => {
                let mut r = OpRecord::new(OpKind::FlushTlbMm);
                r.mm = mm as i32;
                self.call(m, cpu, r);
                Ret::None
            }
            Op::SwitchMm { mm } => {
                m.switch_attach(cpu, mm);
                if let Some(n) = mm {
                    let mut r = OpRecord::new(OpKind::SwitchIn);
                    r.mm = n as i32;
                    self.call(m, cpu, r);
                }
                Ret::None
            }
            Op::CpuOffline => {
                self.call(m, cpu, OpRecord::new(OpKind::CpuOffline));
                m.cpu_offline(cpu);
                Ret::None
            }
            Op::CpuOnline => {
                m.cpu_online(cpu);
                self.online(m, cpu);
                Ret::None
            }
            Op::Access { .. }
            | Op::IrqEnter
            | Op::IrqExit
            | Op::LockPtl { .. }
            | Op::UnlockPtl { .. } => Ret::None,
        }
    }
}

#[allow(non_camel_case_types)]
type libc_ulong = std::ffi::c_ulong;
