//! Mutating a program without replaying it from step 0 (issue 12).
//!
//! A mutant differs from its parent in a few places. `Checkpoints` keeps the generator's
//! state (the contract state and the eager machine under it) every few steps of the
//! parent; a mutant's replay resumes from the last checkpoint before its first changed
//! step, and stops where the mutant is back on the parent's steps in a state equal to
//! the parent's at a checkpoint: from there on it keeps the contract and closes exactly
//! as the parent does, which is known. The answers are those of a replay from step 0
//! (harness/tests/checkpoints.rs and engine/tests/resumed_mutation.rs compare them on
//! thousands of edited programs and mutants).

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

use super::{Gen, GenState};
use lazymmu_lang::program::{MachineConfig, Mode, Program, Step};

/// Steps between two checkpoints. Measured (`lazymmu bench mutations`, mutants of kept
/// checkpoints): 8 and 16 are as fast, 4 no faster, 32 and 64 5 to 10 % slower; 16 keeps
/// half the memory of 8 (a checkpoint is a copy of the contract and machine state).
pub const CHECKPOINT_EVERY: usize = 16;

/// A program with its replay state saved every `every` steps, for mutating it.
pub struct Checkpoints {
    program: Program,
    every: usize,
    /// None for a program that is not valid (its mutants are replayed from step 0).
    replay: Option<Replay>,
}

thread_local! {
    /// The generator of the last resumed replay on this thread: the next one, mostly of
    /// the same parent, resets it instead of building a machine (a restore is worth
    /// dozens of steps). Only one: each holds guarded page-table memory (mappings).
    static SPARE: RefCell<Option<Gen>> = const { RefCell::new(None) };
}

/// A generator for one replay; one resumed from checkpoints becomes the spare after it.
pub(super) struct Lent {
    g: Option<Gen>,
    spare: bool,
}

impl Lent {
    fn new(program: &Program) -> Lent {
        Lent {
            g: Some(Gen::new(program.config.clone())),
            spare: false,
        }
    }
}

impl Deref for Lent {
    type Target = Gen;
    fn deref(&self) -> &Gen {
        self.g.as_ref().expect("lent")
    }
}

impl DerefMut for Lent {
    fn deref_mut(&mut self) -> &mut Gen {
        self.g.as_mut().expect("lent")
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if self.spare {
            // A thread being torn down has no spare any more: the generator just goes.
            let _ = SPARE.try_with(|s| *s.borrow_mut() = self.g.take());
        }
    }
}

struct Replay {
    /// `saved[k]`: the state after `k * every` steps.
    saved: Vec<GenState>,
    /// The state after the last step.
    end: GenState,
    /// The steps that break the contract.
    violations: Vec<usize>,
    /// By mode (realistic, adversarial): the steps `close_open` appends to the program
    /// and whether the contract's end check passes after them.
    closing: [(Vec<Step>, bool); 2],
}

fn mode_index(mode: Mode) -> usize {
    match mode {
        Mode::Realistic => 0,
        Mode::Adversarial => 1,
    }
}

/// Whether two configs build the same machine: the mode decides what is generated and
/// checked, never what a step does.
fn same_machine(a: &MachineConfig, b: &MachineConfig) -> bool {
    // Every field named, so that a new one is decided on here.
    let MachineConfig {
        cpus,
        facility13,
        tlb_lc,
        mode: _,
        mms,
        init,
    } = a;
    *cpus == b.cpus
        && *facility13 == b.facility13
        && *tlb_lc == b.tlb_lc
        && *mms == b.mms
        && *init == b.init
}

impl Checkpoints {
    /// Replays `program` once, saving the state every `CHECKPOINT_EVERY` steps.
    pub fn new(program: Program) -> Self {
        Self::with_interval(program, CHECKPOINT_EVERY)
    }

    /// Replays `program` once, saving the state every `every` steps.
    pub fn with_interval(program: Program, every: usize) -> Self {
        let every = every.max(1);
        let replay = program
            .validate()
            .is_ok()
            .then(|| Replay::of(&program, every));
        Checkpoints {
            program,
            every,
            replay,
        }
    }

    /// The program the checkpoints are of.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Bytes the saved states take on the heap, roughly (for a cache budget).
    pub fn heap_bytes(&self) -> usize {
        self.replay.as_ref().map_or(0, |r| {
            r.saved
                .iter()
                .chain([&r.end])
                .map(GenState::heap_bytes)
                .sum::<usize>()
                + r.violations.len() * 8
                + r.closing.iter().map(|c| c.0.len()).sum::<usize>() * std::mem::size_of::<Step>()
        }) + self.program.steps.len() * std::mem::size_of::<Step>()
    }

    /// How many first and last steps `program` shares with ours (not overlapping), if it
    /// runs on the same machine and ours is valid: those steps are valid in it too.
    pub fn unchanged(&self, program: &Program) -> Option<(usize, usize)> {
        let (_, lcp) = self.shared_prefix(program)?;
        Some((lcp, common_suffix(program, &self.program, lcp)))
    }

    /// The replay, and how many first steps `program` shares with ours, if it runs on
    /// the same machine.
    fn shared_prefix(&self, program: &Program) -> Option<(&Replay, usize)> {
        self.shared_prefix_upto(program, program.steps.len())
    }

    /// `shared_prefix`, looking at the first `n` steps only.
    fn shared_prefix_upto(&self, program: &Program, n: usize) -> Option<(&Replay, usize)> {
        let r = self.replay.as_ref()?;
        if !same_machine(&program.config, &self.program.config) {
            return None;
        }
        let lcp = program.steps[..n]
            .iter()
            .zip(&self.program.steps)
            .take_while(|(a, b)| a == b)
            .count();
        Some((r, lcp))
    }

    /// A generator for `program`, in the state after some `from <= index` of its steps
    /// (the last checkpoint on the shared prefix, or 0): the caller replays the rest.
    pub(super) fn resume(&self, program: &Program, index: usize) -> (Lent, usize) {
        match self.shared_prefix_upto(program, index) {
            Some((r, lcp)) => self.lend(r, program, lcp),
            None => (Lent::new(program), 0),
        }
    }

    /// A generator in the state of the last checkpoint at or before `index` (steps our
    /// program shares with `program`, which runs on our machine), and its step.
    fn lend(&self, r: &Replay, program: &Program, index: usize) -> (Lent, usize) {
        let k = (index / self.every).min(r.saved.len() - 1);
        let from = k * self.every;
        let spare = SPARE
            .with(|s| s.borrow_mut().take())
            .filter(|g| same_machine(&g.program.config, &program.config));
        let g = match spare {
            Some(mut g) => {
                g.reset_to(program.config.mode, &r.saved[k], from);
                g
            }
            None => Gen::restore(&program.config, &r.saved[k], from),
        };
        (
            Lent {
                g: Some(g),
                spare: true,
            },
            from,
        )
    }
}

impl Replay {
    fn of(program: &Program, every: usize) -> Replay {
        let mut g = Gen::new(program.config.clone());
        g.repairing = true;
        let mut saved = vec![g.save()];
        let mut violations = vec![];
        for (i, s) in program.steps.iter().enumerate() {
            if g.st.check(s).is_err() {
                violations.push(i);
            }
            g.track(s.clone());
            if (i + 1) % every == 0 {
                saved.push(g.save());
            }
        }
        let end = g.save();
        let len = program.steps.len();
        let closing = [Mode::Realistic, Mode::Adversarial].map(|mode| {
            let mut g = Gen::restore(&program.config, &end, len);
            g.repairing = true;
            g.close_all(mode);
            let ok = g.st.check_end().is_empty();
            (g.program.steps, ok)
        });
        Replay {
            saved,
            end,
            violations,
            closing,
        }
    }

    /// The saved state after `i` steps of `len`, if one was saved there.
    fn state_at(&self, i: usize, len: usize, every: usize) -> Option<&GenState> {
        if i == len {
            Some(&self.end)
        } else if i.is_multiple_of(every) {
            self.saved.get(i / every)
        } else {
            None
        }
    }
}

/// How many last steps `a` and `b` share, given that they share `prefix` first ones (the
/// two never overlap).
fn common_suffix(a: &Program, b: &Program, prefix: usize) -> usize {
    let room = a.steps.len().min(b.steps.len()) - prefix;
    a.steps
        .iter()
        .rev()
        .zip(b.steps.iter().rev())
        .take(room)
        .take_while(|(x, y)| x == y)
        .count()
}

/// What `mutate::finish` needs of a mutant, with the replay resumed from `cp` (its
/// parent's checkpoints) where it can be: `close_open`, the program cut to `max_steps`,
/// and, for a realistic program, whether the result keeps the contract
/// (`contract::is_realistic`). Returns false as soon as a realistic program is known to
/// break it, leaving the program as it is then; true for an adversarial program.
pub fn close_checked(cp: Option<&Checkpoints>, program: &mut Program, max_steps: usize) -> bool {
    let mode = program.config.mode;
    let check = mode == Mode::Realistic;
    let len = program.steps.len();
    let shared = cp.and_then(|c| c.shared_prefix(program).map(|(r, lcp)| (c, r, lcp)));
    let (mut g, from) = match shared {
        Some((c, r, lcp)) => c.lend(r, program, lcp),
        None => (Lent::new(program), 0),
    };
    g.repairing = true;
    // The steps before `from` are the parent's, and so are their violations.
    if let (true, Some((_, r, _))) = (check, shared) {
        // (Steps past the cut do not count: they are dropped.)
        if r.violations
            .first()
            .is_some_and(|&v| v < from.min(max_steps))
        {
            return false;
        }
    }
    // From `back` on, the program's steps are the parent's last ones: step i is the
    // parent's i + plen - len.
    let back = shared.map(|(c, _, lcp)| len - common_suffix(program, &c.program, lcp));
    let mut converged = None;
    let mut i = from;
    loop {
        if let (Some((c, r, _)), Some(back)) = (shared, back) {
            let plen = c.program.steps.len();
            if i >= back {
                let pi = i + plen - len;
                if let Some(state) = r.state_at(pi, plen, c.every) {
                    if g.closes_like(state) {
                        converged = Some((r, pi));
                        break;
                    }
                }
            }
        }
        if i == len {
            break;
        }
        let s = &program.steps[i];
        if check && i < max_steps && g.st.check(s).is_err() {
            return false;
        }
        g.track(s.clone());
        i += 1;
    }
    let (tail, end_ok) = match converged {
        Some((r, pi)) => {
            // The parent's steps from `pi` on are ours from `i` on, from an equal state.
            if check
                && r.violations
                    .iter()
                    .any(|&v| v >= pi && i + (v - pi) < max_steps)
            {
                return false;
            }
            let (tail, ok) = &r.closing[mode_index(mode)];
            (tail.clone(), *ok)
        }
        None => {
            let before = g.program.steps.len();
            g.close_all(mode);
            (
                g.program.steps.split_off(before),
                g.st.check_end().is_empty(),
            )
        }
    };
    program.steps.extend(tail);
    if program.steps.len() <= max_steps {
        return !check || end_ok;
    }
    program.steps.truncate(max_steps);
    if !check {
        return true;
    }
    // Every step kept was checked (a closing step is only added if it keeps the
    // contract); only the end check of the cut program is left.
    let n = program.steps.len();
    let (mut g, from) = match cp {
        Some(c) => c.resume(program, n),
        None => (Lent::new(program), 0),
    };
    for s in &program.steps[from..n] {
        g.track(s.clone());
    }
    g.st.check_end().is_empty()
}
