//! The value dictionary of one implementation, learnt from the operands of its own
//! comparisons (the c-coverage flavour, `executor::CFeedback`), as AFL++'s CmpLog and
//! libFuzzer's value profile do: a PTE value the C code compares against becomes a
//! candidate PTE value of the mutations, a small one a candidate index or count
//! (`mutate`). Nothing about any implementation is written here: a version with another
//! "nothing pending" marker is learnt the same way.
//!
//! Bounded, deduplicated, and in learning order, so a run stays deterministic from its
//! seed.

use std::collections::HashSet;

use lazymmu_model::machine::Machine;

use crate::executor::CFeedback;
use crate::rng::Rng;

/// Most values kept.
pub const MAX_VALUES: usize = 256;
/// Values below this are also candidate indices and counts.
pub const SMALL: u64 = 256;
/// Operands seen in one program only, waiting for a second (cleared when full).
const MAX_PENDING: usize = 4096;

/// Whether an operand of `size` bytes is worth learning: not 0, 1 or all-ones, not in
/// the user-space pointer range (2^40..2^48), where it is a host address that differs
/// from one process to the next, and not one of the simulated addresses the rig passes.
pub fn interesting(v: u64, size: u32) -> bool {
    let ones = if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    };
    v > 1
        && v != ones
        && v != u64::MAX
        && !(1u64 << 40..1u64 << 48).contains(&v)
        && !Machine::is_vaddr(v)
}

#[derive(Clone, Debug, Default)]
pub struct Dict {
    /// In learning order.
    values: Vec<u64>,
    /// Parallel to `values`: a constant of the code (never evicted for an operand).
    constant: Vec<bool>,
    /// The constants among them, and those below `SMALL`, in learning order.
    constants: Vec<u64>,
    small: Vec<u64>,
    known: HashSet<u64>,
    pending: HashSet<u64>,
}

impl Dict {
    pub fn new() -> Dict {
        Dict::default()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn values(&self) -> &[u64] {
        &self.values
    }

    pub fn contains(&self, v: u64) -> bool {
        self.known.contains(&v)
    }

    /// Learns from one program's comparisons. A constant of the code is taken at once
    /// (evicting the oldest computed operand when full); a computed operand once a second
    /// program compared it too, so that one-off values of one program stay out.
    pub fn learn(&mut self, c: &CFeedback) {
        for &v in &c.constants {
            self.admit(v, true);
        }
        for &v in &c.operands {
            if self.known.contains(&v) {
                continue;
            }
            if self.pending.remove(&v) {
                self.admit(v, false);
            } else {
                if self.pending.len() >= MAX_PENDING {
                    self.pending.clear();
                }
                self.pending.insert(v);
            }
        }
    }

    fn admit(&mut self, v: u64, constant: bool) {
        if self.known.contains(&v) {
            return;
        }
        if self.values.len() >= MAX_VALUES {
            let victim = if constant {
                self.constant.iter().position(|c| !c)
            } else {
                None
            };
            let Some(i) = victim else { return };
            let old = self.values.remove(i);
            self.constant.remove(i);
            self.known.remove(&old);
            self.small.retain(|&s| s != old);
        }
        self.values.push(v);
        self.constant.push(constant);
        self.known.insert(v);
        if constant {
            self.constants.push(v);
        }
        if v < SMALL {
            self.small.push(v);
        }
    }

    /// A value (None when empty: then `rng` is not used). Half of the time one of the
    /// code's constants: computed operands include the program's own values, many of
    /// which the generator makes anyway.
    pub fn pick(&self, rng: &mut Rng) -> Option<u64> {
        if self.values.is_empty() {
            return None;
        }
        if !self.constants.is_empty() && rng.chance(1, 2) {
            return rng.pick(&self.constants).copied();
        }
        rng.pick(&self.values).copied()
    }

    /// A value below `below` (at most `SMALL`), as an index or a count; None when there
    /// is no small value (then `rng` is not used) or the one drawn is too large.
    pub fn pick_small(&self, rng: &mut Rng, below: u64) -> Option<u64> {
        rng.pick(&self.small).copied().filter(|&v| v < below)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fb(constants: &[u64], operands: &[u64]) -> CFeedback {
        CFeedback {
            edges: vec![],
            constants: constants.to_vec(),
            operands: operands.to_vec(),
        }
    }

    #[test]
    fn constants_at_once_operands_from_two_programs_trivial_values_never() {
        let mut d = Dict::new();
        d.learn(&fb(&[0x9e03d], &[0x1a03d]));
        assert!(d.contains(0x9e03d) && !d.contains(0x1a03d));
        d.learn(&fb(&[], &[0x1a03d]));
        assert!(d.contains(0x1a03d));
        assert_eq!(d.values(), &[0x9e03d, 0x1a03d]);
        assert!(!interesting(0, 8) && !interesting(1, 4) && !interesting(0xffff_ffff, 4));
        assert!(!interesting(0x7ffd_1234_5678, 8), "a host address");
        assert!(!interesting(0x1_0003_d000, 8), "a simulated address");
        assert!(interesting(0x800, 8) && interesting(0xffff_ffff, 8));
    }

    #[test]
    fn bounded_and_constants_displace_operands() {
        let mut d = Dict::new();
        for v in 2..2 + MAX_VALUES as u64 {
            d.learn(&fb(&[], &[v]));
            d.learn(&fb(&[], &[v]));
        }
        assert_eq!(d.len(), MAX_VALUES);
        d.learn(&fb(&[0x5000], &[0x6000]));
        d.learn(&fb(&[], &[0x6000]));
        assert_eq!(d.len(), MAX_VALUES);
        assert!(d.contains(0x5000) && !d.contains(2) && !d.contains(0x6000));
        let mut rng = Rng::new(1);
        assert!(d.pick_small(&mut rng, 300).is_some_and(|v| v < SMALL));
    }
}
