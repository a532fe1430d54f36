//! Structure-aware mutation of programs: insert, delete, duplicate and swap steps, change
//! a step's CPU, change an argument within its class, splice two programs, grow and shrink
//! the machine. Realistic programs stay realistic: a mutation that breaks the contract is
//! repaired (open sections closed) or retried.

use lazymmu_harness::contract;
use lazymmu_harness::gen::{close_checked, propose_step, propose_step_resumed, Checkpoints};
use lazymmu_lang::program::{
    InitPte, MmConfig, MmKind, Mode, Op, Program, PteRange, PteRef, Step, MAX_CPUS, MAX_TABLES,
};
use lazymmu_lang::pte::{PteClass, PFNS, PTRS_PER_PTE};

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
    mutate_from(parent, None, other, rng)
}

/// `mutate`, replaying from `cp`, checkpoints of the parent (the built-in engine keeps
/// them per corpus program): the same children from the same `rng`, at a cost that grows
/// with the size of the change rather than with the length of the parent.
pub fn mutate_with(
    parent: &Program,
    cp: &Checkpoints,
    other: Option<&Program>,
    rng: &mut Rng,
) -> Option<Program> {
    mutate_from(parent, Some(cp), other, rng)
}

fn mutate_from(
    parent: &Program,
    cp: Option<&Checkpoints>,
    other: Option<&Program>,
    rng: &mut Rng,
) -> Option<Program> {
    for _ in 0..8 {
        let mut p = parent.clone();
        let n = 1 + rng.below(4);
        for _ in 0..n {
            let m = choose(rng, WEIGHTS);
            apply(&mut p, m, other, rng, cp);
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
            change_arg(p, i, rng);
        }
        Mutation::Splice => {
            if let Some(o) = other {
                splice(p, o, rng);
            }
        }
        Mutation::Grow => grow(p, rng),
        Mutation::Shrink => {
            shrink(p, rng);
            let config = p.config.clone();
            p.config.init.retain(|i| config.has_pte(i.pte));
        }
        Mutation::Adversarial => {
            p.config.mode = Mode::Adversarial;
        }
        _ => {}
    }
}

fn value_like(v: u64, rng: &mut Rng) -> u64 {
    let class = if rng.chance(3, 4) {
        PteClass::of(v)
    } else {
        *rng.pick(&PteClass::REALISTIC).unwrap()
    };
    class.value(*rng.pick(&PFNS).unwrap(), rng.next_u64())
}

fn nudge(i: u16, rng: &mut Rng, max: u16) -> u16 {
    let d = [1i32, -1, 2, -2, 8, -8][rng.below(6)];
    if rng.chance(1, 5) {
        rng.below(max as usize) as u16
    } else {
        (i as i32 + d).clamp(0, max as i32 - 1) as u16
    }
}

fn change_arg(p: &mut Program, i: usize, rng: &mut Rng) {
    let max = PTRS_PER_PTE as u16;
    let op = &mut p.steps[i].op;
    match op {
        Op::SetPte { pte, value } | Op::ModifyProtCommit { pte, value } => {
            if rng.chance(1, 2) {
                *value = value_like(*value, rng);
            } else {
                pte.index = nudge(pte.index, rng, max);
            }
        }
        Op::SetPtes { pte, value, n } => match rng.below(3) {
            0 => *value = value_like(*value, rng),
            1 => *n = (*n as i32 + if rng.chance(1, 2) { 1 } else { -1 }).clamp(1, 16) as u16,
            _ => pte.index = nudge(pte.index, rng, max),
        },
        Op::PtepGetAndClearFull { full, .. } if rng.chance(1, 3) => *full = !*full,
        Op::Access { write, .. } if rng.chance(1, 3) => *write = !*write,
        Op::EnableWithPtes { range, ptep } => {
            adjust_range(range, rng);
            if p.config.mode == Mode::Realistic || rng.chance(2, 3) {
                *ptep = range.first();
            } else {
                ptep.index = nudge(ptep.index, rng, max);
            }
        }
        Op::FlushTlbRange { range } => adjust_range(range, rng),
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
                    index: nudge(pte.index, rng, max),
                    ..pte
                };
                set_pte(op, new);
            }
        }
    }
}

fn adjust_range(r: &mut PteRange, rng: &mut Rng) {
    let max = PTRS_PER_PTE as u16;
    if rng.chance(1, 2) {
        r.start = nudge(r.start, rng, max);
    } else {
        r.end = nudge(r.end, rng, max + 1).max(1);
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

fn grow(p: &mut Program, rng: &mut Rng) {
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
                let class = *rng.pick(&PteClass::REALISTIC[..4]).unwrap();
                c.init.push(InitPte {
                    pte,
                    value: class.value(*rng.pick(&PFNS).unwrap(), 0),
                });
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
