//! Program generation from unstructured bytes (`arbitrary`).
//!
//! Realistic mode builds programs step by step from what `ContractState` allows, shaped
//! like the kernel's call sites: take a page-table lock, enter a section over a range of
//! that table, update PTEs mostly inside it, leave, flush the range, unlock. Other CPUs
//! interleave lockless reads and hardware accesses to recently touched PTEs, interrupts
//! and KASAN-style pause/lock/resume. Adversarial mode mixes in arbitrary steps that
//! break the contract. Any byte string decodes to a valid program.

use std::collections::VecDeque;

use arbitrary::{Result, Unstructured};

use crate::contract::{ContractSnapshot, ContractState, Frame};
use lazymmu_lang::program::*;
use lazymmu_lang::pte::{self, PteClass, PFNS, PTRS_PER_PTE};

mod checkpoints;
pub use checkpoints::{close_checked, Checkpoints, CHECKPOINT_EVERY};

/// Steps drawn from the input, before the closing steps that end open sections.
pub const MAX_STEPS: usize = 160;

/// Decodes any bytes into a valid program of the given mode.
pub fn from_bytes(data: &[u8], mode: Mode) -> Program {
    let mut u = Unstructured::new(data);
    // Running out of input only truncates: the generator never returns an error on it.
    generate(&mut u, mode).unwrap_or_else(|_| {
        Program::new(
            MachineConfig {
                mode,
                ..Default::default()
            },
            vec![],
        )
    })
}

/// Decodes a fuzzer input the way every engine does: a program in the `.ops` text format
/// (comment lines may come first) if it is one, generator bytes otherwise.
pub fn decode_input(data: &[u8], mode: Mode) -> Program {
    if let Some(text) = as_ops_text(data) {
        if let Ok(p) = lazymmu_lang::text::parse(text) {
            return p;
        }
    }
    from_bytes(data, mode)
}

/// The input as text, if it is meant as an `.ops` program (its first line that is not a
/// comment is the header).
pub fn as_ops_text(data: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(data).ok()?;
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'));
    first
        .is_some_and(|l| l.starts_with("lazymmu-ops"))
        .then_some(text)
}

pub fn generate(u: &mut Unstructured<'_>, mode: Mode) -> Result<Program> {
    let config = gen_config(u, mode)?;
    let mut g = Gen::new(config);
    let mut attempts = 0;
    while g.program.steps.len() < MAX_STEPS && !u.is_empty() && attempts < MAX_STEPS * 4 {
        attempts += 1;
        let cpu = u.int_in_range(0..=g.program.config.cpus - 1)?;
        // Kernel call sites walk their range PTE by PTE (zap, change_protection, the
        // young-bit scans): whole runs of one operation, which single steps rarely build.
        if u.ratio(1, 12)? && g.walk(u, cpu, mode)? {
            continue;
        }
        let op = if mode == Mode::Adversarial && u.ratio(1, 4)? {
            Some(random_op(u, &g.program.config)?)
        } else {
            g.realistic_op(u, cpu)?
        };
        if let Some(op) = op {
            g.push(Step { cpu, op }, mode);
        }
    }
    g.close_all(mode);
    Ok(g.program)
}

fn gen_config(u: &mut Unstructured<'_>, mode: Mode) -> Result<MachineConfig> {
    let cpus: u8 = *u.choose(&[2, 1, 2, 3, 4, 2, 4, 8])?;
    let facility13 = !u.ratio(1, 10)?;
    let tlb_lc = u.arbitrary()?;
    let users = u.int_in_range(1..=2)?;
    let with_init = u.arbitrary()?;
    let mut mms = vec![];
    for _ in 0..users {
        mms.push(MmConfig {
            kind: MmKind::User,
            protected: u.ratio(1, 5)?,
            attach_mask: 0,
            tables: u.int_in_range(1..=2)?,
        });
    }
    let all = ((1u16 << cpus) - 1) as u8;
    match mode {
        // Each CPU runs at most one user mm; some mms may run nowhere (exiting).
        Mode::Realistic => {
            for c in 0..cpus {
                let pick = u.int_in_range(0..=users)?;
                if pick < users {
                    mms[pick as usize].attach_mask |= 1 << c;
                }
            }
        }
        Mode::Adversarial => {
            for m in &mut mms {
                m.attach_mask = u.arbitrary::<u8>()? & all;
            }
        }
    }
    if with_init {
        mms.push(MmConfig {
            kind: MmKind::Init,
            protected: false,
            attach_mask: all,
            tables: u.int_in_range(1..=2)?,
        });
    }
    let classes: &[PteClass] = match mode {
        Mode::Realistic => &PteClass::REALISTIC,
        Mode::Adversarial => &PteClass::ALL,
    };
    let mut init = vec![];
    for (m, mm) in mms.iter().enumerate() {
        for t in 0..mm.tables {
            for _ in 0..u.int_in_range(0..=24)? {
                let index = u.int_in_range(0..=63u16)? * if u.ratio(1, 4)? { 4 } else { 1 };
                let value = gen_value(u, classes)?;
                if value != pte::PTE_NONE {
                    init.push(InitPte {
                        pte: PteRef::new(m as u8, t, index),
                        value,
                    });
                }
            }
        }
    }
    // Populated runs, as a mapped file or heap leaves them: consecutive valid entries.
    for (m, mm) in mms.iter().enumerate() {
        for t in 0..mm.tables {
            if u.ratio(1, 4)? {
                let start = u.int_in_range(0..=PTRS_PER_PTE as u16 - 1)?;
                let len = u.int_in_range(2..=64u16)?;
                let value = gen_value(u, &PteClass::REALISTIC[..4])?;
                for index in start..(start + len).min(PTRS_PER_PTE as u16) {
                    init.push(InitPte {
                        pte: PteRef::new(m as u8, t, index),
                        value,
                    });
                }
            }
        }
    }
    init.sort_by_key(|i| i.pte);
    init.dedup_by_key(|i| i.pte);
    Ok(MachineConfig {
        cpus,
        facility13,
        tlb_lc,
        mode,
        mms,
        init,
    })
}

fn gen_value(u: &mut Unstructured<'_>, classes: &[PteClass]) -> Result<u64> {
    // Valid values first in the list: they are the ones that need IPTEs.
    let class = *u.choose(classes)?;
    let pfn = *u.choose(&PFNS)?;
    let extra = if matches!(class, PteClass::Random | PteClass::Swap) {
        u.arbitrary()?
    } else {
        0
    };
    Ok(class.value(pfn, extra))
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    LockUser,
    LockInit,
    Unlock,
    EnableRange,
    EnablePlain,
    Disable,
    Pause,
    Resume,
    PteOp,
    Lockless,
    Access,
    FlushMm,
    Switch,
    IrqEnter,
    IrqExit,
    IsActive,
    Offline,
}

/// What `Gen::track` builds up, saved between steps. Two programs whose generators are in
/// equal states, `hot` aside, close alike and keep the contract alike from there on:
/// `hot` only aims the steps the generator proposes.
#[derive(Clone, Debug, PartialEq, Eq)]
struct GenState {
    st: ContractSnapshot,
    flush_owed: Vec<Option<PteRange>>,
    hot: VecDeque<PteRef>,
}

impl GenState {
    fn heap_bytes(&self) -> usize {
        self.st.heap_bytes()
            + self.flush_owed.len() * std::mem::size_of::<Option<PteRange>>()
            + self.hot.len() * std::mem::size_of::<PteRef>()
    }
}

fn pick<T: Copy>(u: &mut Unstructured<'_>, choices: &[(u32, T)]) -> Result<Option<T>> {
    let total: u32 = choices.iter().map(|c| c.0).sum();
    if total == 0 {
        return Ok(None);
    }
    let mut x = u.int_in_range(0..=total - 1)?;
    for &(w, t) in choices {
        if x < w {
            return Ok(Some(t));
        }
        x -= w;
    }
    Ok(None)
}

struct Gen {
    st: ContractState,
    program: Program,
    /// PTEs touched lately: other CPUs' reads and accesses aim here.
    hot: VecDeque<PteRef>,
    /// A `flush_tlb_range` the caller owes after leaving a section.
    flush_owed: Vec<Option<PteRange>>,
    /// Repairing a program someone else wrote (a mutant, a text input), which may break
    /// the contract already: a closing step the contract refuses is skipped, and the
    /// caller decides about the result (`mutate::finish` drops it). Generating, such a
    /// step is the generator's own bug.
    repairing: bool,
}

impl Gen {
    fn new(config: MachineConfig) -> Gen {
        Gen {
            st: ContractState::new(&config),
            program: Program::new(config, vec![]),
            hot: VecDeque::new(),
            flush_owed: vec![None; 8],
            repairing: false,
        }
    }

    fn push(&mut self, step: Step, mode: Mode) {
        if self.program.validate_step(&step).is_err() {
            return;
        }
        if mode == Mode::Realistic && self.st.check(&step).is_err() {
            debug_assert!(
                self.repairing,
                "generator proposed {:?}: {:?}",
                step,
                self.st.check(&step)
            );
            return;
        }
        self.track(step);
    }

    /// Follows a step already in the program: state, hot PTEs, owed flushes.
    fn track(&mut self, step: Step) {
        let c = step.cpu as usize;
        // Leaving the outermost section of a range: the caller flushes it afterwards.
        if step.op == Op::Disable {
            let me = &self.st.cpus[c];
            if me.enable_count == 1 && me.pause_count == 0 && !me.in_irq() {
                if let Some(r) = me.range {
                    self.flush_owed[c] = Some(PteRange {
                        start: r.start,
                        end: r.end.min(PTRS_PER_PTE as u16),
                        ..r
                    });
                }
            }
        }
        for p in step.op.written_ptes().chain(step.op.pte()) {
            if self.hot.len() >= 16 {
                self.hot.pop_front();
            }
            self.hot.push_back(p);
        }
        self.st.apply(&step);
        self.program.steps.push(step);
    }

    fn config(&self) -> &MachineConfig {
        &self.program.config
    }

    fn user_mms(&self) -> Vec<u8> {
        (0..self.config().mms.len() as u8)
            .filter(|&m| self.config().mms[m as usize].kind == MmKind::User)
            .collect()
    }

    fn realistic_op(&mut self, u: &mut Unstructured<'_>, cpu: u8) -> Result<Option<Op>> {
        let c = cpu as usize;
        let me = self.st.cpus[c].clone();
        if !me.online {
            return Ok(u.ratio(1, 2)?.then_some(Op::CpuOnline));
        }
        if let Some((p, old)) = me.prot {
            let value = *u.choose(&[
                old,
                pte::pte_wrprotect(old),
                pte::pte_mkwrite(pte::pte_mkdirty(old)),
                pte::pte_mkold(old),
                pte::pte_mkyoung(old),
            ])?;
            return Ok(Some(Op::ModifyProtCommit { pte: p, value }));
        }
        if let Some(r) = self.flush_owed[c] {
            if !me.in_irq() && u.ratio(4, 5)? {
                self.flush_owed[c] = None;
                return Ok(Some(Op::FlushTlbRange { range: r }));
            }
        }
        let init = self.config().init_mm();
        let free_user_tables: Vec<(u8, u8)> = self
            .user_mms()
            .into_iter()
            .flat_map(|m| (0..self.config().mms[m as usize].tables).map(move |t| (m, t)))
            .filter(|&(m, t)| self.st.cpus.iter().all(|s| !s.holds(m, t)))
            .collect();
        let free_init_tables: Vec<(u8, u8)> = init
            .into_iter()
            .flat_map(|m| (0..self.config().mms[m as usize].tables).map(move |t| (m, t)))
            .filter(|&(m, t)| self.st.cpus.iter().all(|s| !s.holds(m, t)))
            .collect();
        let can_lock = me.locks() < 2;
        let w = |cond: bool, weight: u32| if cond { weight } else { 0 };
        let online = self.st.cpus.iter().filter(|s| s.online).count();
        let top = me.frames.last().copied();
        let choices: Vec<(u32, Kind)> = if me.in_irq() {
            match top {
                Some(Frame::Section) => {
                    vec![(30, Kind::Disable), (5, Kind::PteOp), (5, Kind::IsActive)]
                }
                Some(Frame::Pause) => vec![(30, Kind::Resume), (5, Kind::IsActive)],
                _ => vec![
                    (30, Kind::IrqExit),
                    (w(init.is_some(), 10), Kind::PteOp),
                    (10, Kind::Lockless),
                    (10, Kind::Access),
                    (3, Kind::EnablePlain),
                    (3, Kind::Pause),
                    (3, Kind::IsActive),
                ],
            }
        } else {
            match top {
                None => vec![
                    (w(!free_user_tables.is_empty(), 30), Kind::LockUser),
                    (w(!free_init_tables.is_empty(), 5), Kind::LockInit),
                    (w(init.is_some(), 8), Kind::EnableRange),
                    (3, Kind::EnablePlain),
                    (w(init.is_some(), 5), Kind::PteOp),
                    (8, Kind::Lockless),
                    (12, Kind::Access),
                    (3, Kind::FlushMm),
                    (4, Kind::Switch),
                    (5, Kind::IrqEnter),
                    (2, Kind::Pause),
                    (2, Kind::IsActive),
                    (w(online > 1, 1), Kind::Offline),
                ],
                Some(Frame::Lock { .. }) => vec![
                    (40, Kind::EnableRange),
                    (4, Kind::EnablePlain),
                    (20, Kind::PteOp),
                    (20, Kind::Unlock),
                    (
                        w(can_lock && !free_user_tables.is_empty(), 3),
                        Kind::LockUser,
                    ),
                    (4, Kind::Lockless),
                    (4, Kind::Access),
                    (3, Kind::IrqEnter),
                ],
                Some(Frame::Section) => vec![
                    (60, Kind::PteOp),
                    (20, Kind::Disable),
                    (4, Kind::EnableRange),
                    (3, Kind::EnablePlain),
                    (6, Kind::Pause),
                    (6, Kind::Access),
                    (4, Kind::Lockless),
                    (4, Kind::IrqEnter),
                    (3, Kind::IsActive),
                    (
                        w(can_lock && !free_init_tables.is_empty(), 2),
                        Kind::LockInit,
                    ),
                ],
                Some(Frame::Pause) => vec![
                    (
                        w(can_lock && !free_init_tables.is_empty(), 20),
                        Kind::LockInit,
                    ),
                    (25, Kind::Resume),
                    (10, Kind::PteOp),
                    (5, Kind::Access),
                    (2, Kind::EnablePlain),
                    (3, Kind::Lockless),
                ],
                Some(Frame::Irq) => vec![(1, Kind::IrqExit)],
            }
        };
        let Some(kind) = pick(u, &choices)? else {
            return Ok(None);
        };
        Ok(match kind {
            Kind::LockUser => u
                .choose(&free_user_tables)
                .ok()
                .map(|&(mm, table)| Op::LockPtl { mm, table }),
            Kind::LockInit => u
                .choose(&free_init_tables)
                .ok()
                .map(|&(mm, table)| Op::LockPtl { mm, table }),
            Kind::Unlock => match top {
                Some(Frame::Lock { mm, table }) => Some(Op::UnlockPtl { mm, table }),
                _ => None,
            },
            Kind::EnableRange => {
                // Over the innermost locked table, or (unlocked) a kernel range on init_mm.
                let target = me.frames.iter().rev().find_map(|f| match *f {
                    Frame::Lock { mm, table } => Some((mm, table)),
                    _ => None,
                });
                let target = match (target, init) {
                    (Some(t), _) => Some(t),
                    (None, Some(m)) => Some((
                        m,
                        u.int_in_range(0..=self.config().mms[m as usize].tables - 1)?,
                    )),
                    _ => None,
                };
                match target {
                    Some((mm, table)) => {
                        let range = self.gen_range(u, mm, table)?;
                        let ptep = range.first();
                        let free = !self.st.range_conflicts(cpu, range);
                        free.then_some(Op::EnableWithPtes { range, ptep })
                    }
                    None => None,
                }
            }
            Kind::EnablePlain => Some(Op::Enable),
            Kind::Disable => Some(Op::Disable),
            Kind::Pause => Some(Op::Pause),
            Kind::Resume => Some(Op::Resume),
            Kind::IrqEnter => Some(Op::IrqEnter),
            Kind::IrqExit => Some(Op::IrqExit),
            Kind::IsActive => Some(Op::IsLazyActive),
            Kind::FlushMm => Some(Op::FlushTlbMm {
                mm: u.int_in_range(0..=self.config().mms.len() as u8 - 1)?,
            }),
            Kind::Switch => {
                let users = self.user_mms();
                let i = u.int_in_range(0..=users.len())?;
                let mm = users.get(i).copied();
                // No CPU runs an mm being torn down.
                (!mm.is_some_and(|m| self.st.teardown[m as usize])).then_some(Op::SwitchMm { mm })
            }
            Kind::Offline => Some(Op::CpuOffline),
            Kind::Lockless => Some(Op::PtepGetLockless {
                pte: self.any_pte(u, cpu)?,
            }),
            Kind::Access => {
                let pte = self.any_pte(u, cpu)?;
                let write = u.arbitrary()?;
                (!self.st.teardown[pte.mm as usize]).then_some(Op::Access { pte, write })
            }
            Kind::PteOp => self.pte_op(u, cpu)?,
        })
    }

    /// A range of `table`, mostly short and starting at a populated entry.
    fn gen_range(&self, u: &mut Unstructured<'_>, mm: u8, table: u8) -> Result<PteRange> {
        let populated: Vec<u16> = self
            .config()
            .init
            .iter()
            .filter(|i| i.pte.mm == mm && i.pte.table == table)
            .map(|i| i.pte.index)
            .collect();
        // A whole PMD, as zap and mprotect of a large mapping pass it.
        if u.ratio(1, 8)? {
            return Ok(PteRange {
                mm,
                table,
                start: 0,
                end: PTRS_PER_PTE as u16,
            });
        }
        let start = match u.choose(&populated) {
            Ok(&i) if u.ratio(2, 3)? => i.saturating_sub(u.int_in_range(0..=3)?),
            _ => u.int_in_range(0..=255)?,
        };
        let len = if u.ratio(1, 8)? {
            u.int_in_range(1..=256)?
        } else {
            u.int_in_range(1..=24)?
        };
        let end = (start + len).min(PTRS_PER_PTE as u16);
        Ok(PteRange {
            mm,
            table,
            start,
            end,
        })
    }

    /// Any PTE, aimed at recently touched ones; user mms only where this CPU runs them.
    fn any_pte(&self, u: &mut Unstructured<'_>, cpu: u8) -> Result<PteRef> {
        let hot: Vec<PteRef> = self.hot.iter().copied().collect();
        if let (true, Ok(&p)) = (u.ratio(3, 4)?, u.choose(&hot)) {
            return Ok(p);
        }
        let mm = match self.st.cpus[cpu as usize].current_mm {
            Some(m) if u.arbitrary()? => m,
            _ => u.int_in_range(0..=self.config().mms.len() as u8 - 1)?,
        };
        let table = u.int_in_range(0..=self.config().mms[mm as usize].tables - 1)?;
        Ok(PteRef::new(mm, table, u.int_in_range(0..=255)?))
    }

    /// A page-table operation on a PTE this CPU owns, fitting its eager value.
    fn pte_op(&mut self, u: &mut Unstructured<'_>, cpu: u8) -> Result<Option<Op>> {
        let me = &self.st.cpus[cpu as usize];
        let mut regions: Vec<PteRange> = vec![];
        if let Some(r) = me.active_range() {
            regions.extend([r, r, r]);
        }
        for f in &me.frames {
            if let Frame::Lock { mm, table } = *f {
                regions.push(PteRange {
                    mm,
                    table,
                    start: 0,
                    end: PTRS_PER_PTE as u16,
                });
            }
        }
        if let Some(m) = self.config().init_mm() {
            for t in 0..self.config().mms[m as usize].tables {
                regions.push(PteRange {
                    mm: m,
                    table: t,
                    start: 0,
                    end: PTRS_PER_PTE as u16,
                });
            }
        }
        let Ok(&region) = u.choose(&regions) else {
            return Ok(None);
        };
        let end = region.end.min(PTRS_PER_PTE as u16);
        if region.start >= end {
            return Ok(None); // an adversarial range with nothing in it
        }
        // Callers walk populated entries more than empty ones.
        let populated: Vec<u16> = (region.start..end)
            .filter(|&i| self.st.value(PteRef::new(region.mm, region.table, i)) != pte::PTE_NONE)
            .collect();
        let index = match u.choose(&populated) {
            // The region's first and last entries: where bounds go wrong.
            _ if u.ratio(1, 10)? => {
                if u.arbitrary()? {
                    region.start
                } else {
                    end - 1
                }
            }
            Ok(&i) if u.ratio(2, 3)? => i,
            _ => u.int_in_range(region.start..=end - 1)?,
        };
        let pte = PteRef::new(region.mm, region.table, index);
        if !self.st.may_touch(cpu, pte) {
            return Ok(None);
        }
        let v = self.st.value(pte);
        let user = self.config().mms[pte.mm as usize].kind == MmKind::User;
        let exiting = user && self.st.full_clear_allowed(pte.mm);
        // Nothing stores a new PTE into an mm being torn down.
        let storable = !self.st.teardown[pte.mm as usize];
        #[derive(Clone, Copy)]
        enum P {
            Set,
            Sets,
            Clear,
            Get,
            Gac,
            GacFull(bool),
            Young,
            ProtStart,
            Wrprotect,
            ClearFlush,
        }
        let invalid = !pte::valid(v);
        let own_range = self.st.cpus[cpu as usize].active_range();
        let me_range_has = |p: PteRef| own_range.is_some_and(|r| r.contains(p));
        let w = |cond: bool, weight: u32| if cond { weight } else { 0 };
        let choice = pick(
            u,
            &[
                (w(invalid && storable, 30), P::Set),
                (w(invalid && storable, 6), P::Sets),
                (w(invalid, 3), P::Clear),
                (10, P::Get),
                (15, P::Gac),
                (5, P::GacFull(false)),
                (w(exiting, 8), P::GacFull(true)),
                (8, P::Young),
                (w(pte::pte_present(v) && storable, 8), P::ProtStart),
                (8, P::Wrprotect),
                (w(!me_range_has(pte), 5), P::ClearFlush),
            ],
        )?;
        Ok(choice.and_then(|c| {
            Some(match c {
                P::Set => Op::SetPte {
                    pte,
                    value: gen_value(u, &PteClass::REALISTIC).ok()?,
                },
                P::Sets => {
                    let value = gen_value(u, &PteClass::REALISTIC[..4]).ok()?;
                    let room = (PTRS_PER_PTE as u16 - pte.index).min(8);
                    let mut n = u.int_in_range(1..=room).ok()?;
                    while n > 1
                        && !(0..n).all(|i| {
                            !pte::valid(self.st.value(pte.offset(i)))
                                && self.st.may_touch(cpu, pte.offset(i))
                        })
                    {
                        n -= 1;
                    }
                    Op::SetPtes { pte, value, n }
                }
                P::Clear => Op::PteClear { pte },
                P::Get => Op::PtepGet { pte },
                P::Gac => Op::PtepGetAndClear { pte },
                P::GacFull(full) => Op::PtepGetAndClearFull { pte, full },
                P::Young => Op::PtepTestAndClearYoung { pte },
                P::ProtStart => Op::ModifyProtStart { pte },
                P::Wrprotect => Op::SetWrprotect { pte },
                P::ClearFlush => Op::PtepClearFlush { pte },
            })
        }))
    }

    /// A walk over (part of) the CPU's own active range: one operation on every entry, or
    /// every other one, as the kernel's page-table walkers do. Each step is checked
    /// against the contract; returns whether any was added.
    fn walk(&mut self, u: &mut Unstructured<'_>, cpu: u8, mode: Mode) -> Result<bool> {
        let me = &self.st.cpus[cpu as usize];
        let Some(r) = me
            .active_range()
            .filter(|_| !me.in_irq() && me.prot.is_none())
        else {
            return Ok(false);
        };
        let end = r.end.min(PTRS_PER_PTE as u16);
        if r.start >= end {
            return Ok(false);
        }
        let start = if u.ratio(1, 2)? {
            r.start
        } else {
            u.int_in_range(r.start..=end - 1)?
        };
        let stride = if u.ratio(1, 4)? { 2 } else { 1 };
        let len = u.int_in_range(1..=64usize)?;
        let value = gen_value(u, &PteClass::REALISTIC[..4])?;
        let kind = u.int_in_range(0..=4u8)?;
        let before = self.program.steps.len();
        for index in (start..end).step_by(stride).take(len) {
            if self.program.steps.len() >= MAX_STEPS {
                break;
            }
            let pte = PteRef::new(r.mm, r.table, index);
            let op = match kind {
                0 => Op::PtepGetAndClear { pte },
                1 => Op::PtepTestAndClearYoung { pte },
                2 => Op::SetWrprotect { pte },
                3 => Op::PtepGet { pte },
                _ => Op::SetPte { pte, value },
            };
            let step = Step { cpu, op };
            if self.program.validate_step(&step).is_ok() && self.st.check(&step).is_ok() {
                self.push(step, mode);
            }
        }
        Ok(self.program.steps.len() > before)
    }

    /// The step `propose_step` proposes from this state.
    fn propose(&mut self, program: &Program, bytes: &[u8]) -> Option<Step> {
        let mut u = Unstructured::new(bytes);
        let cpu = u.int_in_range(0..=program.config.cpus - 1).ok()?;
        let op = if program.config.mode == Mode::Adversarial && u.ratio(1, 4).ok()? {
            random_op(&mut u, &program.config).ok()?
        } else {
            self.realistic_op(&mut u, cpu).ok()??
        };
        let step = Step { cpu, op };
        program.validate_step(&step).ok().map(|_| step)
    }

    /// The state `track` has built (the steps themselves are not kept).
    fn save(&self) -> GenState {
        // Every field named: one added later must be saved too, or be the output.
        let Gen {
            st,
            program: _,
            hot,
            flush_owed,
            repairing: _,
        } = self;
        GenState {
            st: st.save(),
            flush_owed: flush_owed.clone(),
            hot: hot.clone(),
        }
    }

    /// Whether this generator closes and keeps the contract from here on as one in state
    /// `s` does (`hot` aside, see `GenState`).
    fn closes_like(&self, s: &GenState) -> bool {
        self.flush_owed == s.flush_owed && self.st.matches(&s.st)
    }

    /// A generator in state `s` (saved with this machine config, mode aside) after
    /// `applied` steps; its program has no steps yet.
    fn restore(config: &MachineConfig, s: &GenState, applied: usize) -> Gen {
        Gen {
            st: ContractState::restore(config, &s.st, applied),
            program: Program::new(config.clone(), vec![]),
            hot: s.hot.clone(),
            flush_owed: s.flush_owed.clone(),
            repairing: false,
        }
    }

    /// Puts this generator (of the same machine) in state `s` after `applied` steps, for
    /// a program of mode `mode`; its program has no steps. `restore`, reusing the machine.
    fn reset_to(&mut self, mode: Mode, s: &GenState, applied: usize) {
        self.st.reset_to(&s.st, applied);
        self.st.config.mode = mode;
        self.program.config.mode = mode;
        self.program.steps.clear();
        self.hot.clone_from(&s.hot);
        self.flush_owed.clone_from(&s.flush_owed);
        self.repairing = false;
    }

    /// Ends the program as callers do: commit, close everything LIFO, and end each mm's
    /// teardown with its flush.
    fn close_all(&mut self, mode: Mode) {
        for c in 0..self.st.cpus.len() {
            let cpu = c as u8;
            if let Some((pte, old)) = self.st.cpus[c].prot {
                self.push(
                    Step {
                        cpu,
                        op: Op::ModifyProtCommit { pte, value: old },
                    },
                    mode,
                );
            }
            while let Some(&f) = self.st.cpus[c].frames.last() {
                let op = match f {
                    Frame::Irq => Op::IrqExit,
                    Frame::Section => Op::Disable,
                    Frame::Pause => Op::Resume,
                    Frame::Lock { mm, table } => Op::UnlockPtl { mm, table },
                };
                let before = self.program.steps.len();
                self.push(Step { cpu, op }, mode);
                if self.program.steps.len() == before {
                    break; // cannot happen for a tracked frame; never loop forever
                }
                if let (false, Some(range)) = (self.st.cpus[c].in_irq(), self.flush_owed[c].take())
                {
                    self.push(
                        Step {
                            cpu,
                            op: Op::FlushTlbRange { range },
                        },
                        mode,
                    );
                }
            }
        }
        if let Some(cpu) = self.st.cpus.iter().position(|s| s.online) {
            for mm in 0..self.st.teardown.len() as u8 {
                if self.st.teardown[mm as usize] {
                    let cpu = cpu as u8;
                    self.push(
                        Step {
                            cpu,
                            op: Op::FlushTlbMm { mm },
                        },
                        mode,
                    );
                }
            }
        }
    }
}

/// A step the generator would issue after `program.steps[..index]`, from `bytes`: for
/// the engines' insert mutation. Realistic unless the program is adversarial (then one in
/// four is arbitrary).
pub fn propose_step(program: &Program, index: usize, bytes: &[u8]) -> Option<Step> {
    let mut g = Gen::new(program.config.clone());
    for s in &program.steps[..index.min(program.steps.len())] {
        if program.validate_step(s).is_ok() {
            g.track(s.clone());
        }
    }
    g.propose(program, bytes)
}

/// `propose_step`, with the generator resumed from the last checkpoint of `cp` on the
/// steps `program` shares with `cp`'s program instead of replayed from step 0.
pub fn propose_step_resumed(
    cp: &Checkpoints,
    program: &Program,
    index: usize,
    bytes: &[u8],
) -> Option<Step> {
    let index = index.min(program.steps.len());
    let (mut g, from) = cp.resume(program, index);
    for s in &program.steps[from..index] {
        if program.validate_step(s).is_ok() {
            g.track(s.clone());
        }
    }
    g.propose(program, bytes)
}

/// Appends what callers do at the end: commit open transactions, close every open
/// interrupt, section, pause and lock, LIFO, with the owed flush after a section.
pub fn close_open(program: &mut Program) {
    let mut g = Gen::new(program.config.clone());
    g.repairing = true;
    for s in &program.steps {
        g.track(s.clone());
    }
    g.close_all(program.config.mode);
    *program = g.program;
}

/// Any step the language can express, contract or not.
fn random_op(u: &mut Unstructured<'_>, config: &MachineConfig) -> Result<Op> {
    let mm = u.int_in_range(0..=config.mms.len() as u8 - 1)?;
    let table = u.int_in_range(0..=config.mms[mm as usize].tables - 1)?;
    // Half the time a populated entry: breaking the contract on a valid PTE (a store
    // over it, say) is where hardening matters.
    let pte = match u.choose(&config.init) {
        Ok(i) if u.arbitrary()? => i.pte,
        _ => PteRef::new(mm, table, u.int_in_range(0..=255)?),
    };
    let value = gen_value(u, &PteClass::ALL)?;
    let start = u.int_in_range(0..=255u16)?;
    Ok(match u.int_in_range(0..=27u8)? {
        0 => Op::Enable,
        1 => {
            let end = u.int_in_range(0..=(2 * PTRS_PER_PTE) as u16)?;
            let ptab = u.int_in_range(0..=config.mms[mm as usize].tables - 1)?;
            Op::EnableWithPtes {
                range: PteRange {
                    mm,
                    table,
                    start,
                    end,
                },
                ptep: if u.arbitrary()? {
                    PteRef::new(mm, table, start)
                } else {
                    PteRef::new(mm, ptab, u.int_in_range(0..=255)?)
                },
            }
        }
        2 => Op::Disable,
        3 => Op::Pause,
        4 => Op::Resume,
        5 => Op::IsLazyActive,
        6 => Op::SetPte { pte, value },
        7 => Op::SetPtes {
            pte,
            value,
            n: u.int_in_range(1..=(PTRS_PER_PTE as u16 - pte.index).min(16))?,
        },
        8 => Op::PteClear { pte },
        9 => Op::PtepGet { pte },
        10 => Op::PtepGetAndClear { pte },
        11 => Op::PtepGetAndClearFull {
            pte,
            full: u.arbitrary()?,
        },
        12 => Op::PtepTestAndClearYoung { pte },
        13 => Op::ModifyProtStart { pte },
        14 => Op::ModifyProtCommit { pte, value },
        15 => Op::SetWrprotect { pte },
        16 => Op::PtepGetLockless { pte },
        17 => Op::PtepClearFlush { pte },
        18 => Op::Access {
            pte,
            write: u.arbitrary()?,
        },
        19 => Op::FlushTlbRange {
            range: PteRange {
                mm,
                table,
                start,
                end: u.int_in_range(start..=PTRS_PER_PTE as u16)?,
            },
        },
        20 => Op::FlushTlbMm { mm },
        21 => Op::SwitchMm {
            mm: if u.arbitrary()? { Some(mm) } else { None },
        },
        22 => Op::IrqEnter,
        23 => Op::IrqExit,
        24 => Op::LockPtl { mm, table },
        25 => Op::UnlockPtl { mm, table },
        26 => Op::CpuOffline,
        _ => Op::CpuOnline,
    })
}
