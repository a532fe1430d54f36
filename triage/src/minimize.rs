//! The minimizer: delta debugging over steps (ddmin), then simplification of what remains
//! (fewer CPUs, mms, tables and initial values, smaller indices, values moved to the
//! simplest class that keeps the finding, paired calls such as nested sections removed
//! together), repeated until nothing changes. The result keeps the finding's signature
//! and is 1-minimal: removing any single step loses it. Deterministic.

use std::collections::BTreeMap;

use std::time::Instant;

use lazymmu_engine::Checker;
use lazymmu_harness::contract;
use lazymmu_lang::program::{InitPte, MmConfig, Op, Program, PteRange, PteRef};
use lazymmu_lang::pte::{PteClass, PTE_NONE, PTRS_PER_PTE};

/// What a minimization did.
#[derive(Clone, Debug)]
pub struct Minimized {
    pub program: Program,
    pub signature: String,
    pub original_steps: usize,
    /// Programs run to decide.
    pub runs: u64,
}

/// Decides whether a program still shows the finding.
pub struct Oracle<'a> {
    differ: &'a mut dyn Checker,
    /// When set, candidates must also run clean here (a mutant's reproducer must not be
    /// a program the reference gets wrong too).
    clean_on: Option<&'a mut dyn Checker>,
    signature: String,
    /// Past it, no candidate holds: the minimizer ends soon with what it has.
    deadline: Option<Instant>,
    /// A crash found by a realistic program stays realistic (a bug), whatever shorter
    /// contract-breaking program would also crash.
    realistic_only: bool,
    pub runs: u64,
}

/// What a candidate must keep of a signature. A crash or hang keeps its site; whether
/// it is a bug or hardening is decided by the contract of the minimized program.
/// A crash or a hang (realistic or not): a finding that names a site, not a divergence.
fn is_crash_or_hang(signature: &str) -> bool {
    let plain = signature.replacen("lazymmu-hardening-", "lazymmu-", 1);
    plain.starts_with("lazymmu-crash-") || plain.starts_with("lazymmu-hang-")
}

/// What a candidate must keep of a signature. A crash or hang keeps its site; whether
/// it is a bug or hardening is decided by the contract of the minimized program.
pub fn keep_key(signature: &str) -> String {
    if is_crash_or_hang(signature) {
        signature.replacen("lazymmu-hardening-", "lazymmu-", 1)
    } else {
        signature.to_string()
    }
}

impl<'a> Oracle<'a> {
    pub fn new(differ: &'a mut dyn Checker, signature: &str) -> Self {
        let key = keep_key(signature);
        Oracle {
            differ,
            clean_on: None,
            realistic_only: is_crash_or_hang(signature) && !signature.contains("-hardening-"),
            signature: key,
            deadline: None,
            runs: 0,
        }
    }

    pub fn holds(&mut self, p: &Program) -> bool {
        if p.validate().is_err()
            || self.deadline.is_some_and(|d| Instant::now() >= d)
            || self.realistic_only && !contract::is_realistic(p)
        {
            return false;
        }
        self.runs += 1;
        let v = self.differ.verdict(p);
        v.findings
            .iter()
            .any(|f| keep_key(&f.signature()) == self.signature)
            && self
                .clean_on
                .as_mut()
                .is_none_or(|r| r.verdict(p).findings.is_empty())
    }
}

/// The first finding's signature of `program` on `differ`, if any.
pub fn first_signature(differ: &mut dyn Checker, program: &Program) -> Option<String> {
    differ
        .verdict(program)
        .findings
        .first()
        .map(|f| f.signature())
}

/// Minimizes `program` keeping a finding of `signature`.
pub fn minimize(
    differ: &mut dyn Checker,
    program: &Program,
    signature: &str,
) -> Result<Minimized, String> {
    minimize_against(differ, program, signature, None, None)
}

/// Like `minimize`, and every candidate must also be clean on `clean_on` (for a mutant:
/// the reference), so the result still tells the two apart. Past `deadline` it stops
/// shrinking and returns what it has (still showing the finding, maybe not 1-minimal).
pub fn minimize_against<'a>(
    differ: &'a mut dyn Checker,
    program: &Program,
    signature: &str,
    clean_on: Option<&'a mut dyn Checker>,
    deadline: Option<Instant>,
) -> Result<Minimized, String> {
    let mut o = Oracle::new(differ, signature);
    o.clean_on = clean_on;
    o.deadline = deadline;
    if !o.holds(program) {
        return Err(format!("the program does not show {signature}"));
    }
    let mut p = program.clone();
    for _ in 0..6 {
        let before = p.clone();
        p = ddmin_steps(&mut o, p);
        p = remove_pairs(&mut o, p);
        p = compact_cpus(&mut o, p);
        p = compact_mms(&mut o, p);
        p = ddmin_init(&mut o, p);
        p = compact_indices(&mut o, p);
        p = simplify_values(&mut o, p);
        if p == before {
            break;
        }
    }
    // 1-minimality: no single step can go (unless the deadline cut the search short).
    for i in 0..p.steps.len() {
        if o.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut q = p.clone();
        q.steps.remove(i);
        assert!(
            !o.holds(&q),
            "minimizer bug: step {i} of the result is removable"
        );
    }
    Ok(Minimized {
        program: p,
        signature: signature.to_string(),
        original_steps: program.steps.len(),
        runs: o.runs,
    })
}

/// Classic ddmin (Zeller) over a list, testing complements of ever smaller chunks.
fn ddmin<T: Clone>(items: Vec<T>, mut test: impl FnMut(&[T]) -> bool) -> Vec<T> {
    let mut c = items;
    let mut n = 2usize;
    while c.len() >= 2 {
        let chunk = c.len().div_ceil(n);
        let mut reduced = false;
        let mut start = 0;
        while start < c.len() {
            let end = (start + chunk).min(c.len());
            let complement: Vec<T> = c[..start].iter().chain(&c[end..]).cloned().collect();
            if test(&complement) {
                c = complement;
                n = (n - 1).max(2);
                reduced = true;
                break;
            }
            start = end;
        }
        if !reduced {
            if n >= c.len() {
                break;
            }
            n = (n * 2).min(c.len());
        }
    }
    // A single remaining item may be removable too.
    if c.len() == 1 && test(&[]) {
        c.clear();
    }
    c
}

fn ddmin_steps(o: &mut Oracle, p: Program) -> Program {
    let steps = ddmin(p.steps.clone(), |s| {
        let q = Program {
            steps: s.to_vec(),
            ..p.clone()
        };
        o.holds(&q)
    });
    Program { steps, ..p }
}

fn ddmin_init(o: &mut Oracle, p: Program) -> Program {
    let init = ddmin(p.config.init.clone(), |i| {
        let mut q = p.clone();
        q.config.init = i.to_vec();
        o.holds(&q)
    });
    let mut q = p;
    q.config.init = init;
    q
}

/// Opening and closing calls that only go away together: sections, pauses, locks,
/// interrupts, modify-prot transactions.
fn remove_pairs(o: &mut Oracle, mut p: Program) -> Program {
    let mut i = 0;
    while i < p.steps.len() {
        let s = &p.steps[i];
        let closer = |op: &Op| -> bool {
            match (&s.op, op) {
                (Op::Enable | Op::EnableWithPtes { .. }, Op::Disable) => true,
                (Op::Pause, Op::Resume) | (Op::IrqEnter, Op::IrqExit) => true,
                (Op::LockPtl { mm, table }, Op::UnlockPtl { mm: m, table: t }) => {
                    mm == m && table == t
                }
                (Op::ModifyProtStart { pte }, Op::ModifyProtCommit { pte: q, .. }) => pte == q,
                _ => false,
            }
        };
        let opener = matches!(
            s.op,
            Op::Enable
                | Op::EnableWithPtes { .. }
                | Op::Pause
                | Op::IrqEnter
                | Op::LockPtl { .. }
                | Op::ModifyProtStart { .. }
        );
        if opener {
            // The matching closer: the first one of the same CPU at the same depth.
            let cpu = s.cpu;
            let mut depth = 0;
            let mut found = None;
            for (j, t) in p.steps.iter().enumerate().skip(i + 1) {
                if t.cpu != cpu {
                    continue;
                }
                if std::mem::discriminant(&t.op) == std::mem::discriminant(&s.op)
                    || (matches!(s.op, Op::Enable | Op::EnableWithPtes { .. })
                        && matches!(t.op, Op::Enable | Op::EnableWithPtes { .. }))
                {
                    depth += 1;
                } else if closer(&t.op) {
                    if depth == 0 {
                        found = Some(j);
                        break;
                    }
                    depth -= 1;
                }
            }
            if let Some(j) = found {
                let mut q = p.clone();
                q.steps.remove(j);
                q.steps.remove(i);
                if o.holds(&q) {
                    p = q;
                    continue;
                }
            }
        }
        i += 1;
    }
    p
}

/// CPUs renumbered 0..k in order of use; unused ones dropped.
fn compact_cpus(o: &mut Oracle, p: Program) -> Program {
    let mut used: Vec<u8> = p.steps.iter().map(|s| s.cpu).collect();
    used.sort_unstable();
    used.dedup();
    if used.is_empty() || used.len() == p.config.cpus as usize {
        return p;
    }
    let map: BTreeMap<u8, u8> = used
        .iter()
        .enumerate()
        .map(|(n, &c)| (c, n as u8))
        .collect();
    let mut q = p.clone();
    q.config.cpus = used.len() as u8;
    for s in &mut q.steps {
        s.cpu = map[&s.cpu];
    }
    for mm in &mut q.config.mms {
        mm.attach_mask = map
            .iter()
            .filter(|(&c, _)| mm.attach_mask & (1 << c) != 0)
            .fold(0, |m, (_, &n)| m | 1 << n);
    }
    if o.holds(&q) {
        q
    } else {
        p
    }
}

fn map_pte(p: PteRef, f: &impl Fn(PteRef) -> PteRef) -> PteRef {
    f(p)
}

/// Applies `f` to every PTE reference of the program (steps, ranges, initial values).
fn remap(p: &Program, f: impl Fn(PteRef) -> PteRef) -> Program {
    let mut q = p.clone();
    let range = |r: PteRange| {
        let a = f(r.first());
        let len = r.end as i32 - r.start as i32;
        PteRange {
            mm: a.mm,
            table: a.table,
            start: a.index,
            end: (a.index as i32 + len).clamp(0, u16::MAX as i32) as u16,
        }
    };
    for s in &mut q.steps {
        s.op = match s.op.clone() {
            Op::EnableWithPtes { range: r, ptep } => Op::EnableWithPtes {
                range: range(r),
                ptep: map_pte(ptep, &f),
            },
            Op::FlushTlbRange { range: r } => Op::FlushTlbRange { range: range(r) },
            Op::SetPte { pte, value } => Op::SetPte { pte: f(pte), value },
            Op::SetPtes { pte, value, n } => Op::SetPtes {
                pte: f(pte),
                value,
                n,
            },
            Op::PteClear { pte } => Op::PteClear { pte: f(pte) },
            Op::PtepGet { pte } => Op::PtepGet { pte: f(pte) },
            Op::PtepGetAndClear { pte } => Op::PtepGetAndClear { pte: f(pte) },
            Op::PtepGetAndClearFull { pte, full } => Op::PtepGetAndClearFull { pte: f(pte), full },
            Op::PtepTestAndClearYoung { pte } => Op::PtepTestAndClearYoung { pte: f(pte) },
            Op::ModifyProtStart { pte } => Op::ModifyProtStart { pte: f(pte) },
            Op::ModifyProtCommit { pte, value } => Op::ModifyProtCommit { pte: f(pte), value },
            Op::SetWrprotect { pte } => Op::SetWrprotect { pte: f(pte) },
            Op::PtepGetLockless { pte } => Op::PtepGetLockless { pte: f(pte) },
            Op::PtepClearFlush { pte } => Op::PtepClearFlush { pte: f(pte) },
            Op::Access { pte, write } => Op::Access { pte: f(pte), write },
            Op::LockPtl { mm, table } => {
                let a = f(PteRef::new(mm, table, 0));
                Op::LockPtl {
                    mm: a.mm,
                    table: a.table,
                }
            }
            Op::UnlockPtl { mm, table } => {
                let a = f(PteRef::new(mm, table, 0));
                Op::UnlockPtl {
                    mm: a.mm,
                    table: a.table,
                }
            }
            Op::FlushTlbMm { mm } => Op::FlushTlbMm {
                mm: f(PteRef::new(mm, 0, 0)).mm,
            },
            Op::SwitchMm { mm } => Op::SwitchMm {
                mm: mm.map(|m| f(PteRef::new(m, 0, 0)).mm),
            },
            other => other,
        };
    }
    q.config.init = p
        .config
        .init
        .iter()
        .map(|i| InitPte {
            pte: f(i.pte),
            value: i.value,
        })
        .collect();
    q.config.init.sort_by_key(|i| i.pte);
    q.config.init.dedup_by_key(|i| i.pte);
    q
}

/// The (mm, table) pairs a program's steps refer to.
fn used_tables(p: &Program) -> Vec<(u8, u8)> {
    let mut v = vec![];
    for s in &p.steps {
        match s.op {
            Op::EnableWithPtes { range, ptep } => {
                v.push((range.mm, range.table));
                v.push((ptep.mm, ptep.table));
            }
            Op::FlushTlbRange { range } => v.push((range.mm, range.table)),
            Op::LockPtl { mm, table } | Op::UnlockPtl { mm, table } => v.push((mm, table)),
            _ => v.extend(s.op.pte().map(|p| (p.mm, p.table))),
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Drops mms and tables no step refers to (an mm only switched to or flushed keeps one
/// table), renumbering the rest.
fn compact_mms(o: &mut Oracle, p: Program) -> Program {
    let tables = used_tables(&p);
    let mut mms_used: Vec<u8> = tables.iter().map(|t| t.0).collect();
    for s in &p.steps {
        match s.op {
            Op::FlushTlbMm { mm } | Op::SwitchMm { mm: Some(mm) } => mms_used.push(mm),
            _ => {}
        }
    }
    mms_used.sort_unstable();
    mms_used.dedup();
    let mm_map: BTreeMap<u8, u8> = mms_used
        .iter()
        .enumerate()
        .map(|(n, &m)| (m, n as u8))
        .collect();
    let mut table_map: BTreeMap<(u8, u8), u8> = BTreeMap::new();
    for &m in &mms_used {
        let ts: Vec<u8> = tables.iter().filter(|t| t.0 == m).map(|t| t.1).collect();
        for (n, t) in ts.iter().enumerate() {
            table_map.insert((m, *t), n as u8);
        }
    }
    if mms_used.len() == p.config.mms.len()
        && mms_used.iter().all(|&m| {
            p.config.mms[m as usize].tables as usize
                == tables.iter().filter(|t| t.0 == m).count().max(1)
        })
    {
        return p;
    }
    let mut q = remap(&p, |r| PteRef {
        mm: *mm_map.get(&r.mm).unwrap_or(&u8::MAX),
        table: *table_map.get(&(r.mm, r.table)).unwrap_or(&u8::MAX),
        index: r.index,
    });
    q.config.mms = mms_used
        .iter()
        .map(|&m| MmConfig {
            tables: tables.iter().filter(|t| t.0 == m).count().max(1) as u8,
            ..p.config.mms[m as usize].clone()
        })
        .collect();
    if q.config.mms.is_empty() {
        q.config.mms.push(p.config.mms[0].clone());
    }
    q.config
        .init
        .retain(|i| i.pte.mm != u8::MAX && i.pte.table != u8::MAX);
    if o.holds(&q) {
        q
    } else {
        p
    }
}

/// Shifts each table's indices down so the lowest used one is 0 (distances kept).
fn compact_indices(o: &mut Oracle, p: Program) -> Program {
    let mut lowest: BTreeMap<(u8, u8), u16> = BTreeMap::new();
    let mut note = |r: PteRef| {
        let e = lowest.entry((r.mm, r.table)).or_insert(u16::MAX);
        *e = (*e).min(r.index);
    };
    for s in &p.steps {
        match s.op {
            Op::EnableWithPtes { range, ptep } => {
                note(range.first());
                note(ptep);
            }
            Op::FlushTlbRange { range } => note(range.first()),
            _ => {
                if let Some(r) = s.op.pte() {
                    note(r)
                }
            }
        }
    }
    for i in &p.config.init {
        note(i.pte);
    }
    if lowest.values().all(|&l| l == 0 || l == u16::MAX) {
        return p;
    }
    let q = remap(&p, |r| match lowest.get(&(r.mm, r.table)) {
        Some(&l) if l != u16::MAX => PteRef {
            index: r.index - l.min(r.index),
            ..r
        },
        _ => r,
    });
    if o.holds(&q) {
        q
    } else {
        p
    }
}

/// Simpler values, in order: none, then the class's value with the first pfn.
fn candidates(v: u64) -> Vec<u64> {
    let class = PteClass::of(v);
    let mut c = vec![PTE_NONE, class.value(0x1a, 0)];
    if class == PteClass::Random {
        c.push(PteClass::ValidRw.value(0x1a, 0));
    }
    // Each candidate is a fixed point of this list, so repeated rounds terminate.
    c.retain(|&x| x != v);
    c
}

fn simplify_values(o: &mut Oracle, mut p: Program) -> Program {
    for i in 0..p.steps.len() {
        let value = match p.steps[i].op {
            Op::SetPte { value, .. }
            | Op::SetPtes { value, .. }
            | Op::ModifyProtCommit { value, .. } => value,
            _ => continue,
        };
        for c in candidates(value) {
            let mut q = p.clone();
            match &mut q.steps[i].op {
                Op::SetPte { value, .. }
                | Op::SetPtes { value, .. }
                | Op::ModifyProtCommit { value, .. } => *value = c,
                _ => unreachable!(),
            }
            if o.holds(&q) {
                p = q;
                break;
            }
        }
        if let Op::SetPtes { n, .. } = p.steps[i].op {
            if n > 1 {
                let mut q = p.clone();
                if let Op::SetPtes { n, .. } = &mut q.steps[i].op {
                    *n = 1;
                }
                if o.holds(&q) {
                    p = q;
                }
            }
        }
    }
    for i in 0..p.config.init.len() {
        for c in candidates(p.config.init[i].value) {
            if c == PTE_NONE {
                continue; // dropping initial values is ddmin_init's job
            }
            let mut q = p.clone();
            q.config.init[i].value = c;
            if o.holds(&q) {
                p = q;
                break;
            }
        }
    }
    // Ranges as short as still shows it.
    for i in 0..p.steps.len() {
        if let Op::EnableWithPtes { range, ptep } = p.steps[i].op {
            for end in [range.start + 1, range.end.saturating_sub(1)] {
                if end <= range.start || end >= range.end || end as usize > 2 * PTRS_PER_PTE {
                    continue;
                }
                let mut q = p.clone();
                q.steps[i].op = Op::EnableWithPtes {
                    range: PteRange { end, ..range },
                    ptep,
                };
                if o.holds(&q) {
                    p = q;
                    break;
                }
            }
        }
    }
    p
}
