//! The s390 4K PTE format (docs/semantics.md#pte-format) and the value helpers the
//! kernel uses on it. Pure functions on `u64`; no machine state here.

use serde::{Deserialize, Serialize};

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
pub const PTRS_PER_PTE: usize = 256;
pub const PMD_SHIFT: u32 = 20;

// Hardware bits.
pub const PAGE_INVALID: u64 = 0x400;
pub const PAGE_PROTECT: u64 = 0x200;
pub const PAGE_NOEXEC: u64 = 0x100;
/// Must be zero in a 4K PTE; the v3+ series uses exactly this value as "nothing pending".
pub const PAGE_LARGE: u64 = 0x800;

// Software bits.
pub const PAGE_PRESENT: u64 = 0x001;
pub const PAGE_SOFT_DIRTY: u64 = 0x002;
pub const PAGE_YOUNG: u64 = 0x004;
pub const PAGE_DIRTY: u64 = 0x008;
pub const PAGE_READ: u64 = 0x010;
pub const PAGE_WRITE: u64 = 0x020;
pub const PAGE_SPECIAL: u64 = 0x040;
pub const PAGE_UNUSED: u64 = 0x080;

pub const PFN_MASK: u64 = !0xfff;

/// `pte_none()` value, what `pte_clear()` stores.
pub const PTE_NONE: u64 = PAGE_INVALID;

/// "Nothing pending" marker of the RFC and v2 generations.
pub const MARKER_EARLY: u64 = 0;
/// "Nothing pending" marker (`PTE_POISON`) of v3 and later.
pub const MARKER_V3: u64 = PAGE_LARGE;

/// Hardware-valid: a TLB entry can be formed from it and changing it needs an IPTE.
pub fn valid(x: u64) -> bool {
    x & PAGE_INVALID == 0
}
pub fn pte_none(x: u64) -> bool {
    x == PTE_NONE
}
pub fn pte_present(x: u64) -> bool {
    x & PAGE_PRESENT != 0
}
pub fn pte_swap(x: u64) -> bool {
    x & (PAGE_PROTECT | PAGE_PRESENT) == PAGE_PROTECT
}
pub fn pte_young(x: u64) -> bool {
    x & PAGE_YOUNG != 0
}
pub fn pte_write(x: u64) -> bool {
    x & PAGE_WRITE != 0
}
pub fn pte_dirty(x: u64) -> bool {
    x & PAGE_DIRTY != 0
}
pub fn pte_pfn(x: u64) -> u64 {
    x >> PAGE_SHIFT
}

/// Old PTEs are hardware-invalid, so the next access faults and marks them young.
pub fn pte_mkold(x: u64) -> u64 {
    (x & !PAGE_YOUNG) | PAGE_INVALID
}
pub fn pte_mkyoung(x: u64) -> u64 {
    let x = x | PAGE_YOUNG;
    if x & PAGE_READ != 0 {
        x & !PAGE_INVALID
    } else {
        x
    }
}
/// Read-only is emulated with the P bit.
pub fn pte_wrprotect(x: u64) -> u64 {
    (x & !PAGE_WRITE) | PAGE_PROTECT
}
pub fn pte_mkwrite(x: u64) -> u64 {
    let x = x | PAGE_WRITE;
    if x & PAGE_DIRTY != 0 {
        x & !PAGE_PROTECT
    } else {
        x
    }
}
pub fn pte_mkdirty(x: u64) -> u64 {
    let x = x | PAGE_DIRTY | PAGE_SOFT_DIRTY;
    if x & PAGE_WRITE != 0 {
        x & !PAGE_PROTECT
    } else {
        x
    }
}
/// `set_ptes()` advances the page frame by one for each following entry.
pub fn pte_next_pfn(x: u64) -> u64 {
    x.wrapping_add(PAGE_SIZE)
}
/// What the newer `__set_pte()` stores: the UNUSED software bit is stripped from present values.
pub fn stored_value(x: u64) -> u64 {
    if pte_present(x) {
        x & !PAGE_UNUSED
    } else {
        x
    }
}

/// The meaningful value classes programs draw PTE values from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum PteClass {
    /// Valid, writable, young, dirty: `F|0x03d`.
    ValidRw,
    /// Valid, read-only (P set), young: `F|0x215`.
    ValidRo,
    /// Valid, writable but clean (so P set), young: `F|0x235`.
    ValidRwClean,
    /// Present but old (I set), clean: `F|0x631`.
    Old,
    /// `pte_none`: exactly 0x400.
    None,
    /// Swap entry: I and P set, not present; sometimes with the exclusive mark 0x800.
    Swap,
    /// The RFC/v2 marker value 0.
    MarkerEarly,
    /// The v3+ marker value 0x800.
    MarkerV3,
    /// Any 64 bits.
    Random,
}

impl PteClass {
    pub const ALL: [PteClass; 9] = [
        PteClass::ValidRw,
        PteClass::ValidRo,
        PteClass::ValidRwClean,
        PteClass::Old,
        PteClass::None,
        PteClass::Swap,
        PteClass::MarkerEarly,
        PteClass::MarkerV3,
        PteClass::Random,
    ];
    /// Classes a real kernel call site stores.
    pub const REALISTIC: [PteClass; 6] = [
        PteClass::ValidRw,
        PteClass::ValidRo,
        PteClass::ValidRwClean,
        PteClass::Old,
        PteClass::None,
        PteClass::Swap,
    ];

    /// Builds a value of this class. `pfn` picks from a small set so that values collide
    /// often; `extra` supplies the bits of swap and random values.
    pub fn value(self, pfn: u64, extra: u64) -> u64 {
        let f = pfn << PAGE_SHIFT;
        match self {
            PteClass::ValidRw => f | 0x03d,
            PteClass::ValidRo => f | 0x215,
            PteClass::ValidRwClean => f | 0x235,
            PteClass::Old => f | 0x631,
            PteClass::None => PTE_NONE,
            PteClass::Swap => f | 0x600 | (extra & 0x1) << 11 | (extra >> 1 & 0x7) << 1,
            PteClass::MarkerEarly => MARKER_EARLY,
            PteClass::MarkerV3 => MARKER_V3,
            PteClass::Random => extra,
        }
    }

    /// The class a value belongs to (the first that matches, Random otherwise).
    pub fn of(x: u64) -> PteClass {
        let low = x & 0xfff;
        match x {
            PTE_NONE => PteClass::None,
            MARKER_EARLY => PteClass::MarkerEarly,
            MARKER_V3 => PteClass::MarkerV3,
            _ if low == 0x03d => PteClass::ValidRw,
            _ if low == 0x215 => PteClass::ValidRo,
            _ if low == 0x235 => PteClass::ValidRwClean,
            _ if low == 0x631 => PteClass::Old,
            _ if low & !0x80e == 0x600 => PteClass::Swap,
            _ => PteClass::Random,
        }
    }
}

/// The pfns values are drawn from: few, so that updates collide on purpose.
pub const PFNS: [u64; 4] = [0x1a, 0x2b, 0x3c, 0x4d];

/// A short human description of a PTE value, for traces and mails.
pub fn describe(x: u64) -> String {
    if pte_none(x) {
        return "none".into();
    }
    if x == MARKER_V3 {
        return "0x800 (v3 marker)".into();
    }
    if x == MARKER_EARLY {
        return "0 (early marker)".into();
    }
    let mut parts = vec![format!("pfn {:#x}", pte_pfn(x))];
    if pte_swap(x) {
        parts.push("swap".into());
    } else {
        parts.push(if valid(x) { "valid" } else { "invalid" }.into());
        if pte_present(x) {
            parts.push(
                match (pte_write(x), x & PAGE_PROTECT != 0) {
                    (true, false) => "rw",
                    (true, true) => "rw-clean (P)",
                    (false, _) => "ro",
                }
                .into(),
            );
            if pte_young(x) {
                parts.push("young".into());
            }
            if pte_dirty(x) {
                parts.push("dirty".into());
            }
        } else {
            parts.push("not-present".into());
        }
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handy_values_from_semantics() {
        let f = 0x1a000;
        assert!(valid(f | 0x03d) && pte_write(f | 0x03d) && pte_young(f | 0x03d));
        assert!(valid(f | 0x215) && f & PAGE_PROTECT == 0 && (f | 0x215) & PAGE_PROTECT != 0);
        assert!(!valid(f | 0x631) && pte_present(f | 0x631));
        assert!(pte_none(0x400) && !valid(0x400));
    }

    #[test]
    fn old_is_invalid_and_young_clears_i_when_readable() {
        let rw = 0x1a03d;
        let old = pte_mkold(rw);
        assert!(!valid(old) && !pte_young(old));
        assert_eq!(pte_mkyoung(old), rw);
    }

    #[test]
    fn wrprotect_sets_p_and_mkwrite_needs_dirty() {
        let rw = 0x1a03d;
        let ro = pte_wrprotect(rw);
        assert_eq!(ro & PAGE_PROTECT, PAGE_PROTECT);
        assert!(!pte_write(ro));
        assert_eq!(pte_mkwrite(ro), rw);
        let clean = 0x1a235;
        assert_eq!(pte_mkwrite(clean) & PAGE_PROTECT, PAGE_PROTECT);
    }

    #[test]
    fn classes_roundtrip() {
        for c in PteClass::ALL {
            if c == PteClass::Random {
                continue;
            }
            for &pfn in &PFNS {
                for extra in 0..16 {
                    assert_eq!(PteClass::of(c.value(pfn, extra)), c, "{c:?} {pfn} {extra}");
                }
            }
        }
        assert!(PteClass::REALISTIC
            .iter()
            .all(|c| { c.value(0x1a, 3) != MARKER_V3 && c.value(0x1a, 3) != MARKER_EARLY }));
    }

    #[test]
    fn unused_bit_is_stripped_only_from_present_values() {
        assert_eq!(stored_value(0x1a03d | PAGE_UNUSED), 0x1a03d);
        assert_eq!(stored_value(0x680), 0x680);
    }
}
