//! How the machine's events, instructions and returns read in reports, traces, mails and
//! CLI messages: the way the kernel reports its counterpart (a KASAN-like line for an
//! access to a poisoned slot, the IPTE rules, the ultravisor calls), PTE references in
//! the `.ops` notation (`mm0 t0[5]`, `mm0 t0[0..16]`) and PTE values in hex with their
//! decoded bits. No user-facing text uses Debug formatting; JSON (serde) stays the
//! machine-readable form.

use std::fmt;

use crate::exec::Ret;
use crate::guarded::explain_offset;
use crate::machine::{AccessResult, Event, HwEvent, UvKind};
use lazymmu_lang::pte::{self, MARKER_EARLY, MARKER_V3};

/// The decoded bits of a PTE value: `pfn 0x1a valid rw young dirty`, `none`,
/// `v3 marker`.
pub fn pte_bits(v: u64) -> String {
    match v {
        MARKER_V3 => "v3 marker".into(),
        MARKER_EARLY => "early marker".into(),
        _ => pte::describe(v),
    }
}

/// A PTE value in hex with its decoded bits: `0x1a03d (pfn 0x1a valid rw young dirty)`.
pub fn pte_value(v: u64) -> String {
    format!("{v:#x} ({})", pte_bits(v))
}

impl fmt::Display for UvKind {
    /// The ultravisor call, as `uv_<name>_pte()` names it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UvKind::ConvertFromSecure => "convert-from-secure",
            UvKind::Destroy => "destroy",
        })
    }
}

impl fmt::Display for AccessResult {
    /// What the CPU's translation did: `walked, tlb filled 0x1a03d (pfn 0x1a valid rw
    /// young dirty)`, `translation fault, pte 0x400 (none)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AccessResult::NotAttached => f.write_str("not attached: no translation"),
            AccessResult::TlbHit { value } => write!(f, "tlb hit {}", pte_value(value)),
            AccessResult::Walked { value } => write!(f, "walked, tlb filled {}", pte_value(value)),
            AccessResult::TranslationFault { value } => {
                write!(f, "translation fault, pte {}", pte_value(value))
            }
            AccessResult::ProtectionFault { value } => {
                write!(f, "protection fault, pte {}", pte_value(value))
            }
        }
    }
}

impl fmt::Display for Ret {
    /// What a step returned: a PTE value with its bits, `true`/`false`, a translation,
    /// `nothing` for a void function.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Ret::None => f.write_str("nothing"),
            Ret::Pte(v) => f.write_str(&pte_value(v)),
            Ret::Bool(b) => write!(f, "{b}"),
            Ret::Access(a) => write!(f, "{a}"),
            Ret::CpuOffline => f.write_str("(cpu offline: not run)"),
        }
    }
}

impl fmt::Display for HwEvent {
    /// One instruction or firmware call: `ipte global mm0 t0[5]`,
    /// `ipte-range local mm0 t0[0..16] (16 entries)`, `idte mm0 (all CPUs)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scope = |local: bool| if local { "local" } else { "global" };
        match *self {
            HwEvent::Ipte { pte, local } => write!(f, "ipte {} {pte}", scope(local)),
            HwEvent::IpteRange {
                mm,
                table,
                first,
                count,
                local,
            } => write!(
                f,
                "ipte-range {} mm{mm} t{table}[{first}..{}] ({count} entr{})",
                scope(local),
                first as u32 + count as u32,
                if count == 1 { "y" } else { "ies" }
            ),
            HwEvent::Rdp { pte } => write!(f, "rdp {pte}"),
            HwEvent::Idte { mm } => write!(f, "idte mm{mm} (all CPUs)"),
            HwEvent::FlushGlobal => f.write_str("csp: global TLB flush"),
            HwEvent::FlushLocal => f.write_str("local TLB flush"),
            HwEvent::Uv { pte, kind } => write!(f, "uv {kind} {pte}"),
        }
    }
}

/// A machine rule event as the kernel would report it; `call` is the kernel function
/// that was running (the step's), named where the kernel's report names it (the
/// KASAN-like line of a poisoned-slot access).
pub fn event_text(e: &Event, call: Option<&str>) -> String {
    match e {
        Event::StoreToValidPte { pte, old, new } => format!(
            "store to valid PTE {pte}: {old:#x} -> {new:#x} without IPTE ({} -> {})",
            pte_bits(*old),
            pte_bits(*new)
        ),
        Event::LazyInvalidateWithoutOwedFlush { pte } => format!(
            "PTE {pte} invalidated by a plain store (no IPTE) without an owed flush: \
             flush_mm not set by the end of the call"
        ),
        Event::WildAccess {
            mm,
            table,
            offset,
            write,
        } => format!(
            "wild access: {} {}",
            if *write { "write to" } else { "read from" },
            explain_offset(*mm, *table, *offset)
        ),
        Event::PoisonOverwritten { mm, table, offset } => {
            let at = explain_offset(*mm, *table, *offset);
            let at = match at.strip_prefix(&format!("mm{mm} t{table} ")) {
                Some(rest) if !rest.starts_with('[') => rest.to_string(),
                _ => at,
            };
            format!("poisoned half of mm{mm} t{table}'s page overwritten at {at}")
        }
        Event::IpteRangeCrossesTable {
            mm,
            table,
            first,
            count,
        } => format!(
            "IPTE-range of mm{mm} t{table}[{first}..{}] crosses the end of the table",
            *first as u32 + *count as u32
        ),
        Event::UvCallOnValidPte { pte, value, kind } => {
            format!("UV {kind} while {pte} = {} is valid", pte_value(*value))
        }
        Event::Assertion { what } => what.clone(),
        Event::ShadowAccess {
            pte,
            write,
            owner,
            in_irq,
        } => {
            let mut s = format!(
                "lazy-MMU PTE access: {} of {pte}",
                if *write { "write" } else { "read" }
            );
            if let Some(call) = call {
                s.push_str(" in ");
                s.push_str(call);
            }
            if *in_irq {
                s.push_str(" from an interrupt");
            }
            s.push_str(&format!(", poisoned by cpu{owner}'s section"));
            s
        }
    }
}

impl fmt::Display for Event {
    /// The event without the call it happened in (see `event_text`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&event_text(self, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lazymmu_lang::program::{PteRange, PteRef};

    fn p(mm: u8, table: u8, index: u16) -> PteRef {
        PteRef::new(mm, table, index)
    }

    /// No Debug formatting: no struct braces, no type or variant names.
    fn plain(s: &str) {
        for artefact in ["{", "}", "PteRef", "Some(", "None", "value:", "kind:"] {
            assert!(!s.contains(artefact), "{artefact:?} in {s}");
        }
    }

    #[test]
    fn pte_values_are_hex_with_their_bits() {
        assert_eq!(
            pte_value(0x1a03d),
            "0x1a03d (pfn 0x1a valid rw young dirty)"
        );
        assert_eq!(pte_value(0x400), "0x400 (none)");
        assert_eq!(pte_value(0x800), "0x800 (v3 marker)");
        assert_eq!(pte_value(0), "0x0 (early marker)");
        assert_eq!(pte_value(0x2b215), "0x2b215 (pfn 0x2b valid ro young)");
    }

    #[test]
    fn pte_ranges_use_the_ops_notation() {
        let r = PteRange {
            mm: 1,
            table: 2,
            start: 0,
            end: 16,
        };
        assert_eq!(r.to_string(), "mm1 t2[0..16]");
        assert_eq!(p(0, 0, 5).to_string(), "mm0 t0[5]");
    }

    #[test]
    fn every_event_reads_as_the_kernel_reports_it() {
        let cases = [
            (
                Event::ShadowAccess {
                    pte: p(0, 0, 255),
                    write: false,
                    owner: 0,
                    in_irq: false,
                },
                "lazy-MMU PTE access: read of mm0 t0[255], poisoned by cpu0's section",
            ),
            (
                Event::UvCallOnValidPte {
                    pte: p(0, 0, 1),
                    value: 0x1a03d,
                    kind: UvKind::ConvertFromSecure,
                },
                "UV convert-from-secure while mm0 t0[1] = 0x1a03d (pfn 0x1a valid rw young \
                 dirty) is valid",
            ),
            (
                Event::UvCallOnValidPte {
                    pte: p(0, 0, 2),
                    value: 0x2b215,
                    kind: UvKind::Destroy,
                },
                "UV destroy while mm0 t0[2] = 0x2b215 (pfn 0x2b valid ro young) is valid",
            ),
            (
                Event::StoreToValidPte {
                    pte: p(0, 0, 3),
                    old: 0x1a03d,
                    new: 0x400,
                },
                "store to valid PTE mm0 t0[3]: 0x1a03d -> 0x400 without IPTE \
                 (pfn 0x1a valid rw young dirty -> none)",
            ),
            (
                Event::LazyInvalidateWithoutOwedFlush { pte: p(0, 0, 5) },
                "PTE mm0 t0[5] invalidated by a plain store (no IPTE) without an owed flush: \
                 flush_mm not set by the end of the call",
            ),
            (
                Event::IpteRangeCrossesTable {
                    mm: 0,
                    table: 0,
                    first: 250,
                    count: 10,
                },
                "IPTE-range of mm0 t0[250..260] crosses the end of the table",
            ),
            (
                Event::WildAccess {
                    mm: 0,
                    table: 0,
                    offset: 0x800,
                    write: true,
                },
                "wild access: write to mm0 t0 + 0x800 (1 entry past the end)",
            ),
            (
                Event::WildAccess {
                    mm: 1,
                    table: 2,
                    offset: -16,
                    write: false,
                },
                "wild access: read from mm1 t2 - 0x10 (2 entries before the start)",
            ),
            (
                Event::PoisonOverwritten {
                    mm: 0,
                    table: 1,
                    offset: -8,
                },
                "poisoned half of mm0 t1's page overwritten at - 0x8 (1 entry before the start)",
            ),
            (
                Event::Assertion {
                    what: "preempt_enable() without preempt_disable()".into(),
                },
                "preempt_enable() without preempt_disable()",
            ),
        ];
        for (e, want) in cases {
            let got = e.to_string();
            assert_eq!(got, want);
            plain(&got);
        }
    }

    #[test]
    fn a_poisoned_slot_access_names_the_call_and_the_context() {
        let e = Event::ShadowAccess {
            pte: p(0, 0, 255),
            write: false,
            owner: 0,
            in_irq: false,
        };
        assert_eq!(
            event_text(&e, Some("ptep_get_and_clear_full")),
            "lazy-MMU PTE access: read of mm0 t0[255] in ptep_get_and_clear_full, \
             poisoned by cpu0's section"
        );
        let e = Event::ShadowAccess {
            pte: p(1, 0, 7),
            write: true,
            owner: 2,
            in_irq: true,
        };
        assert_eq!(
            event_text(&e, Some("set_pte")),
            "lazy-MMU PTE access: write of mm1 t0[7] in set_pte from an interrupt, \
             poisoned by cpu2's section"
        );
        // Other events read the same with or without the call.
        let w = Event::IpteRangeCrossesTable {
            mm: 0,
            table: 0,
            first: 250,
            count: 10,
        };
        assert_eq!(event_text(&w, Some("lazy_mmu_mode_disable")), w.to_string());
    }

    #[test]
    fn every_instruction_reads_as_its_mnemonic() {
        let cases = [
            (
                HwEvent::Ipte {
                    pte: p(0, 0, 5),
                    local: false,
                },
                "ipte global mm0 t0[5]",
            ),
            (
                HwEvent::Ipte {
                    pte: p(0, 1, 5),
                    local: true,
                },
                "ipte local mm0 t1[5]",
            ),
            (
                HwEvent::IpteRange {
                    mm: 0,
                    table: 0,
                    first: 0,
                    count: 16,
                    local: true,
                },
                "ipte-range local mm0 t0[0..16] (16 entries)",
            ),
            (
                HwEvent::IpteRange {
                    mm: 1,
                    table: 0,
                    first: 7,
                    count: 1,
                    local: false,
                },
                "ipte-range global mm1 t0[7..8] (1 entry)",
            ),
            (HwEvent::Rdp { pte: p(0, 0, 9) }, "rdp mm0 t0[9]"),
            (HwEvent::Idte { mm: 2 }, "idte mm2 (all CPUs)"),
            (HwEvent::FlushGlobal, "csp: global TLB flush"),
            (HwEvent::FlushLocal, "local TLB flush"),
            (
                HwEvent::Uv {
                    pte: p(0, 0, 1),
                    kind: UvKind::ConvertFromSecure,
                },
                "uv convert-from-secure mm0 t0[1]",
            ),
            (
                HwEvent::Uv {
                    pte: p(0, 0, 1),
                    kind: UvKind::Destroy,
                },
                "uv destroy mm0 t0[1]",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
            plain(&e.to_string());
        }
    }

    #[test]
    fn every_return_and_translation_reads_with_decoded_values() {
        let cases = [
            (Ret::None, "nothing"),
            (Ret::Pte(0x1a03d), "0x1a03d (pfn 0x1a valid rw young dirty)"),
            (Ret::Pte(0x800), "0x800 (v3 marker)"),
            (Ret::Bool(true), "true"),
            (Ret::CpuOffline, "(cpu offline: not run)"),
            (
                Ret::Access(AccessResult::NotAttached),
                "not attached: no translation",
            ),
            (
                Ret::Access(AccessResult::TlbHit { value: 0x1a03d }),
                "tlb hit 0x1a03d (pfn 0x1a valid rw young dirty)",
            ),
            (
                Ret::Access(AccessResult::Walked { value: 0x2b215 }),
                "walked, tlb filled 0x2b215 (pfn 0x2b valid ro young)",
            ),
            (
                Ret::Access(AccessResult::TranslationFault { value: 0x400 }),
                "translation fault, pte 0x400 (none)",
            ),
            (
                Ret::Access(AccessResult::ProtectionFault { value: 0x1a235 }),
                "protection fault, pte 0x1a235 (pfn 0x1a valid rw-clean (P) young)",
            ),
        ];
        for (r, want) in cases {
            assert_eq!(r.to_string(), want);
            plain(&r.to_string());
        }
    }
}
