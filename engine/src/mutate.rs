//! Structure-aware mutation of programs: insert, delete, duplicate and swap steps, change
//! a step's CPU, change an argument within its class, splice two programs, grow and shrink
//! the machine. Realistic programs stay realistic: a mutation that breaks the contract is
//! repaired (open sections closed) or retried. With a value dictionary (`mutate_with`),
//! values the implementation compares against become candidate PTE values, indices and
//! counts.

use lazymmu_harness::contract;
use lazymmu_harness::gen::{close_checked, propose_step, propose_step_resumed, Checkpoints};
use lazymmu_lang::program::{
    InitPte, MmConfig, MmKind, Mode, Op, Program, PteRange, PteRef, Step, MAX_CPUS, MAX_TABLES,
};
use lazymmu_lang::pte::{PteClass, PAGE_SHIFT, PAGE_SIZE, PFNS, PTRS_PER_PTE};

use crate::dict::Dict;
use crate::rng::Rng;

/// Longest program the mutations build.
pub const MAX_STEPS: usize = 400;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mutation {
    Insert,
    Delete,
    DeleteRange,
    Duplicate,
    Swap,
    ChangeCpu,
    ChangeArg,
    Splice,
    Grow,
    Shrink,
    /// Repeat a PTE operation over the entries after it (a page-table walk).
    Walk,
    Adversarial,
}

const WEIGHTS: &[(u32, Mutation)] = &[
    (30, Mutation::Insert),
    (12, Mutation::Delete),
    (4, Mutation::DeleteRange),
    (8, Mutation::Duplicate),
    (8, Mutation::Swap),
    (8, Mutation::ChangeCpu),
    (16, Mutation::ChangeArg),
    (6, Mutation::Splice),
    (3, Mutation::Grow),
    (3, Mutation::Shrink),
    (4, Mutation::Walk),
];

fn choose(rng: &mut Rng, weights: &[(u32, Mutation)]) -> Mutation {
    let total: u32 = weights.iter().map(|w| w.0).sum();
    let mut x = rng.below(total as usize) as u32;
    for &(w, m) in weights {
        if x < w {
            return m;
        }
        x -= w;
    }
    weights[0].1
}

/// One mutation drawn as `mutate` draws them.
pub fn choose_mutation(rng: &mut Rng) -> Mutation {
    choose(rng, WEIGHTS)
}

/// Mutates `parent` 1..=4 times (`other` is a splice partner). Returns a valid program of
/// the parent's mode; a realistic parent gives a realistic child, or None if none was
/// found in a few tries.
pub fn mutate(parent: &Program, other: Option<&Program>, rng: &mut Rng) -> Option<Program> {
    // Checkpoints pay off over many mutations of one parent: for a single call (the
    // libFuzzer custom mutator), building them costs more than the replays they save.
    mutate_with(parent, None, other, rng, &Dict::new())
}

/// `mutate`, replaying from `cp`, checkpoints of the parent, if given (the built-in engine
/// keeps them per corpus program): the same children from the same `rng`, at a cost that
/// grows with the size of the change rather than with the length of the parent; and
/// drawing values from `dict` too (an empty one changes nothing, not even the draws of
/// `rng`).
pub fn mutate_with(
    parent: &Program,
    cp: Option<&Checkpoints>,
    other: Option<&Program>,
    rng: &mut Rng,
    dict: &Dict,
) -> Option<Program> {
    for _ in 0..8 {
        let mut p = parent.clone();
        let n = 1 + rng.below(4);
        for _ in 0..n {
            let m = choose(rng, WEIGHTS);
            apply(&mut p, m, other, rng, cp, dict);
        }
        if let Some(p) = finish(p, cp) {
            if p != *parent {
                return Some(p);
            }
        }
    }
    None
}

/// Drops steps the machine cannot run, closes what is open, and checks the contract
/// for realistic programs; replays from `cp` (checkpoints of the parent) where it can.
pub fn finish(mut p: Program, cp: Option<&Checkpoints>) -> Option<Program> {
    // Steps the parent has at the same place from its start or end are valid already.
    let (head, tail) = cp.and_then(|c| c.unchanged(&p)).unwrap_or((0, 0));
    let changed = head..p.steps.len() - tail;
    let steps = std::mem::take(&mut p.steps);
    p.steps = steps
        .into_iter()
        .enumerate()
        .filter(|(i, s)| !changed.contains(i) || p.validate_step(s).is_ok())
        .map(|(_, s)| s)
        .collect();
    let config = p.config.clone();
    p.config.init.retain(|i| config.has_pte(i.pte));
    // close_open, the cut at MAX_STEPS and contract::is_realistic in one resumed replay.
    let keeps_contract = close_checked(cp, &mut p, MAX_STEPS);
    if p.config.validate().is_err() {
        return None;
    }
    if p.config.mode == Mode::Realistic && !keeps_contract {
        return None;
    }
    Some(p)
}

/// Applies one mutation in place (the result may need `finish`); an insertion replays
/// from `cp` (checkpoints of the parent) where it can.
pub fn apply(
    p: &mut Program,
    m: Mutation,
    other: Option<&Program>,
    rng: &mut Rng,
    cp: Option<&Checkpoints>,
    dict: &Dict,
) {
    let len = p.steps.len();
    match m {
        Mutation::Insert => {
            let at = rng.below(len + 1);
            let bytes = rng.bytes(48);
            let proposed = match cp {
                Some(cp) => propose_step_resumed(cp, p, at, &bytes),
                None => propose_step(p, at, &bytes),
            };
            if let Some(s) = proposed {
                if len < MAX_STEPS {
                    p.steps.insert(at, s);
                }
            }
        }
        Mutation::Delete if len > 0 => {
            p.steps.remove(rng.below(len));
        }
        Mutation::DeleteRange if len > 1 => {
            let a = rng.below(len);
            let b = (a + 1 + rng.below(8)).min(len);
            p.steps.drain(a..b);
        }
        Mutation::Duplicate if len > 0 && len < MAX_STEPS => {
            let s = p.steps[rng.below(len)].clone();
            p.steps.insert(rng.below(len + 1), s);
        }
        Mutation::Swap if len > 1 => {
            let a = rng.below(len - 1);
            let b = if rng.chance(2, 3) {
                a + 1
            } else {
                rng.below(len)
            };
            p.steps.swap(a, b);
        }
        Mutation::ChangeCpu if len > 0 => {
            let i = rng.below(len);
            p.steps[i].cpu = rng.below(p.config.cpus as usize) as u8;
        }
        Mutation::ChangeArg if len > 0 => {
            let i = rng.below(len);
            change_arg(p, i, rng, dict);
        }
        Mutation::Splice => {
            if let Some(o) = other {
                splice(p, o, rng);
            }
        }
        Mutation::Grow => grow(p, rng, dict),
        Mutation::Shrink => {
            shrink(p, rng);
            let config = p.config.clone();
            p.config.init.retain(|i| config.has_pte(i.pte));
        }
        Mutation::Walk if len > 0 && len < MAX_STEPS => walk(p, rng.below(len), rng),
        Mutation::Adversarial => {
            p.config.mode = Mode::Adversarial;
        }
        _ => {}
    }
}

fn value_like(v: u64, rng: &mut Rng, dict: &Dict, mode: Mode) -> u64 {
    if !dict.is_empty() && rng.chance(1, 3) {
        if let Some(x) = dict_value(rng, dict, mode, &PteClass::REALISTIC) {
            return x;
        }
    }
    let class = if rng.chance(3, 4) {
        PteClass::of(v)
    } else {
        *rng.pick(&PteClass::REALISTIC).unwrap()
    };
    class.value(*rng.pick(&PFNS).unwrap(), rng.next_u64())
}

/// A PTE value from the dictionary: the value itself if the program may store it (any in
/// an adversarial program; in a realistic one, a value a kernel stores whose class, if
/// realistic, is one of `classes`), else its pfn (the value itself below a page) with
/// the low bits of one of `classes`, so that realistic programs stay realistic.
fn dict_value(rng: &mut Rng, dict: &Dict, mode: Mode, classes: &[PteClass]) -> Option<u64> {
    let d = dict.pick(rng)?;
    let class = PteClass::of(d);
    let whole = mode == Mode::Adversarial
        || (contract::realistic_value(d).is_ok()
            && (classes.contains(&class) || !PteClass::REALISTIC.contains(&class)));
    if whole && rng.chance(1, 2) {
        return Some(d);
    }
    let pfn = if d >= PAGE_SIZE { d >> PAGE_SHIFT } else { d };
    let class = *rng.pick(classes)?;
    Some(class.value(pfn, rng.next_u64()))
}

fn nudge(i: u16, rng: &mut Rng, max: u16, dict: &Dict) -> u16 {
    if !dict.is_empty() && rng.chance(1, 5) {
        if let Some(v) = dict.pick_small(rng, max as u64) {
            return v as u16;
        }
    }
    let d = [1i32, -1, 2, -2, 8, -8][rng.below(6)];
    if rng.chance(1, 10) {
        // The bounds: a range over the whole table, its last entry.
        if rng.chance(1, 2) {
            0
        } else {
            max - 1
        }
    } else if rng.chance(1, 5) {
        rng.below(max as usize) as u16
    } else {
        (i as i32 + d).clamp(0, max as i32 - 1) as u16
    }
}

fn change_arg(p: &mut Program, i: usize, rng: &mut Rng, dict: &Dict) {
    let max = PTRS_PER_PTE as u16;
    let mode = p.config.mode;
    let op = &mut p.steps[i].op;
    match op {
        Op::SetPte { pte, value } | Op::ModifyProtCommit { pte, value } => {
            if rng.chance(1, 2) {
                *value = value_like(*value, rng, dict, mode);
            } else {
                pte.index = nudge(pte.index, rng, max, dict);
            }
        }
        Op::SetPtes { pte, value, n } => match rng.below(3) {
            0 => *value = value_like(*value, rng, dict, mode),
            1 => *n = count_like(*n, rng, dict),
            _ => pte.index = nudge(pte.index, rng, max, dict),
        },
        Op::PtepGetAndClearFull { full, .. } if rng.chance(1, 3) => *full = !*full,
        Op::Access { write, .. } if rng.chance(1, 3) => *write = !*write,
        Op::EnableWithPtes { range, ptep } => {
            adjust_range(range, rng, dict);
            if mode == Mode::Realistic || rng.chance(2, 3) {
                *ptep = range.first();
            } else {
                ptep.index = nudge(ptep.index, rng, max, dict);
            }
        }
        Op::FlushTlbRange { range } => adjust_range(range, rng, dict),
        Op::SwitchMm { mm } => {
            *mm = if rng.chance(1, 4) {
                None
            } else {
                Some(rng.below(p.config.mms.len()) as u8)
            }
        }
        _ => {
            if let Some(pte) = op.pte() {
                let new = PteRef {
                    index: nudge(pte.index, rng, max, dict),
                    ..pte
                };
                set_pte(op, new);
            }
        }
    }
}

/// A `set_ptes` count: one more or less, or a small value from the dictionary.
fn count_like(n: u16, rng: &mut Rng, dict: &Dict) -> u16 {
    if !dict.is_empty() && rng.chance(1, 4) {
        if let Some(v) = dict.pick_small(rng, 17) {
            return v as u16;
        }
    }
    (n as i32 + if rng.chance(1, 2) { 1 } else { -1 }).clamp(1, 16) as u16
}

/// Repeats step `i`'s PTE operation on the next entries (stride 1 or 2, up to 32 of
/// them, within the table), right after it, as a page-table walk does. Steps the
/// contract then refuses are dropped by `finish`.
fn walk(p: &mut Program, i: usize, rng: &mut Rng) {
    let step = p.steps[i].clone();
    let Some(first) = step.op.pte() else {
        return;
    };
    if matches!(
        step.op,
        Op::ModifyProtStart { .. } | Op::ModifyProtCommit { .. }
    ) {
        return; // a transaction is one PTE's
    }
    let stride = if rng.chance(1, 4) { 2 } else { 1 };
    let n = 1 + rng.below(32);
    let copies: Vec<Step> = (1..=n as u16)
        .map(|k| first.index as usize + (k * stride) as usize)
        .take_while(|&x| x < PTRS_PER_PTE)
        .take(MAX_STEPS - p.steps.len())
        .map(|x| {
            let mut s = step.clone();
            set_pte(
                &mut s.op,
                PteRef {
                    index: x as u16,
                    ..first
                },
            );
            s
        })
        .collect();
    p.steps.splice(i + 1..i + 1, copies);
}

fn adjust_range(r: &mut PteRange, rng: &mut Rng, dict: &Dict) {
    let max = PTRS_PER_PTE as u16;
    if rng.chance(1, 2) {
        r.start = nudge(r.start, rng, max, dict);
    } else {
        r.end = nudge(r.end, rng, max + 1, dict).max(1);
    }
    if r.start >= r.end {
        r.end = (r.start + 1).min(max);
        r.start = r.end - 1;
    }
}

fn set_pte(op: &mut Op, new: PteRef) {
    match op {
        Op::PteClear { pte }
        | Op::PtepGet { pte }
        | Op::PtepGetAndClear { pte }
        | Op::PtepGetAndClearFull { pte, .. }
        | Op::PtepTestAndClearYoung { pte }
        | Op::ModifyProtStart { pte }
        | Op::SetWrprotect { pte }
        | Op::PtepGetLockless { pte }
        | Op::PtepClearFlush { pte }
        | Op::Access { pte, .. } => *pte = new,
        _ => {}
    }
}

fn splice(p: &mut Program, o: &Program, rng: &mut Rng) {
    let cut = rng.below(p.steps.len() + 1);
    let from = rng.below(o.steps.len() + 1);
    let tail: Vec<Step> = o.steps[from..]
        .iter()
        .filter(|s| p.validate_step(s).is_ok())
        .cloned()
        .collect();
    p.steps.truncate(cut);
    p.steps.extend(tail);
    p.steps.truncate(MAX_STEPS);
}

fn grow(p: &mut Program, rng: &mut Rng, dict: &Dict) {
    let c = &mut p.config;
    match rng.below(4) {
        0 if (c.cpus as usize) < MAX_CPUS => {
            c.cpus += 1;
            // The new CPU runs init_mm, if there is one, like every online CPU.
            let bit = 1u8 << (c.cpus - 1);
            for mm in &mut c.mms {
                if mm.kind == MmKind::Init {
                    mm.attach_mask |= bit;
                }
            }
        }
        1 => {
            let i = rng.below(c.mms.len());
            if (c.mms[i].tables as usize) < MAX_TABLES {
                c.mms[i].tables += 1;
            }
        }
        2 if c.mms.len() < lazymmu_lang::program::MAX_MMS => {
            c.mms.push(MmConfig {
                kind: MmKind::User,
                protected: rng.chance(1, 4),
                attach_mask: 0,
                tables: 1,
            });
        }
        _ => {
            let mm = rng.below(c.mms.len()) as u8;
            let table = rng.below(c.mms[mm as usize].tables as usize) as u8;
            let pte = PteRef::new(mm, table, rng.below(PTRS_PER_PTE) as u16);
            if !c.init.iter().any(|x| x.pte == pte) {
                // Initial values of present classes, or learnt ones.
                let classes = &PteClass::REALISTIC[..4];
                let learnt = if !dict.is_empty() && rng.chance(1, 3) {
                    dict_value(rng, dict, c.mode, classes)
                } else {
                    None
                };
                let value = learnt.unwrap_or_else(|| {
                    let class = *rng.pick(classes).unwrap();
                    class.value(*rng.pick(&PFNS).unwrap(), 0)
                });
                c.init.push(InitPte { pte, value });
                c.init.sort_by_key(|x| x.pte);
            }
        }
    }
}

fn shrink(p: &mut Program, rng: &mut Rng) {
    let c = &mut p.config;
    match rng.below(3) {
        0 if c.cpus > 1 => {
            c.cpus -= 1;
            let keep = ((1u16 << c.cpus) - 1) as u8;
            for mm in &mut c.mms {
                mm.attach_mask &= keep;
            }
        }
        1 => {
            let i = rng.below(c.mms.len());
            if c.mms[i].tables > 1 {
                c.mms[i].tables -= 1;
            }
        }
        _ if !c.init.is_empty() => {
            let i = rng.below(c.init.len());
            c.init.remove(i);
        }
        _ => {}
    }
}

/// The custom mutator of the libFuzzer and AFL++ targets, on raw inputs: the input is
/// decoded as the targets decode it, mutated structurally and written back as `.ops`
/// text; one time in four (or when no mutant fits) `byte_mutate` does it instead.
///
/// It never hands the fuzzer an input the rig would then reject: a mutant is returned
/// only if it decodes back to exactly itself, is valid, and keeps the contract when its
/// header says realistic. A panic here is a rig bug, never a finding: libFuzzer would
/// save the input it was *executing*, not the one being mutated, so the input is saved
/// first (`lazymmu-rig-bug-<hash>.input` in the working directory) and the process
/// aborts from `lazymmu_rig_bug`, its own frame.
pub fn mutate_input(
    data: &mut [u8],
    size: usize,
    max_size: usize,
    seed: u32,
    byte_mutate: impl FnOnce(&mut [u8], usize, usize) -> usize,
) -> usize {
    if seed.is_multiple_of(4) {
        return byte_mutate(data, size, max_size);
    }
    let input = &data[..size.min(data.len())];
    let child = std::panic::catch_unwind(|| structural_mutant(input, seed, max_size));
    match child {
        Ok(Some(text)) => {
            data[..text.len()].copy_from_slice(text.as_bytes());
            text.len()
        }
        Ok(None) => byte_mutate(data, size, max_size),
        Err(_) => {
            let name = format!(
                "lazymmu-rig-bug-{}.input",
                crate::out::program_hash(&String::from_utf8_lossy(input))
            );
            let _ = std::fs::write(&name, input);
            eprintln!("lazymmu: rig bug in the custom mutator; its input is saved as {name}");
            lazymmu_rig_bug()
        }
    }
}

/// The decoding mode of the fuzz targets (adversarial when `LAZYMMU_ADVERSARIAL` is set).
pub fn target_mode() -> Mode {
    if std::env::var_os("LAZYMMU_ADVERSARIAL").is_some() {
        Mode::Adversarial
    } else {
        Mode::Realistic
    }
}

/// A structural mutant of `input` as `.ops` text of at most `max_size` bytes, checked as
/// the rig will check it.
fn structural_mutant(input: &[u8], seed: u32, max_size: usize) -> Option<String> {
    let p = lazymmu_harness::gen::decode_input(input, target_mode());
    let mut rng = Rng::new(seed as u64);
    let child = mutate(&p, None, &mut rng)?;
    let text = lazymmu_lang::text::to_text(&child);
    let back = lazymmu_harness::gen::decode_input(text.as_bytes(), target_mode());
    let accepted = text.len() <= max_size
        && back == child
        && child.validate().is_ok()
        && (child.config.mode != Mode::Realistic || contract::is_realistic(&child));
    accepted.then_some(text)
}

/// The rig itself failed (a panic in its own code, reached from a fuzz target): abort
/// from a frame of its own, so crash deduplication never mistakes it for a finding in
/// the implementation.
#[inline(never)]
#[cold]
pub fn lazymmu_rig_bug() -> ! {
    eprintln!("==lazymmu== rig bug: the rig's own code failed (not a finding)");
    std::process::abort()
}
