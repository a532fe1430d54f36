//! Human-readable rendering of traces: one line per step with what it returned and the
//! instructions it issued, and at each sync point what memory, TLBs and counters hold.

use std::fmt::Write as _;

use crate::exec::{Ret, SyncKind, Trace};
use crate::machine::{AccessResult, Counters, HwEvent, Snapshot, UvKind};
use crate::program::{Program, PteRef};
use crate::pte::{self, PTE_NONE, PTRS_PER_PTE};
use crate::text::step_to_text;

pub fn ret_text(r: &Ret) -> Option<String> {
    Some(match *r {
        Ret::None => return None,
        Ret::Pte(v) => format!("{v:#x} ({})", pte::describe(v)),
        Ret::Bool(b) => b.to_string(),
        Ret::CpuOffline => "(cpu offline: not run)".into(),
        Ret::Access(a) => match a {
            AccessResult::NotAttached => "not attached: no translation".into(),
            AccessResult::TlbHit { value } => format!("tlb hit {value:#x}"),
            AccessResult::Walked { value } => format!("walked, tlb filled {value:#x}"),
            AccessResult::TranslationFault { value } => {
                format!("translation fault (pte {value:#x})")
            }
            AccessResult::ProtectionFault { value } => format!("protection fault (pte {value:#x})"),
        },
    })
}

pub fn hw_text(e: &HwEvent) -> String {
    let scope = |local: bool| if local { "local" } else { "global" };
    match *e {
        HwEvent::Ipte { pte, local } => format!("ipte {} {pte}", scope(local)),
        HwEvent::IpteRange {
            mm,
            table,
            first,
            count,
            local,
        } => format!(
            "ipte-range {} mm{mm} t{table}[{first}..{}] ({count} entries)",
            scope(local),
            first as u32 + count as u32
        ),
        HwEvent::Rdp { pte } => format!("rdp {pte}"),
        HwEvent::Idte { mm } => format!("idte mm{mm} (all CPUs)"),
        HwEvent::FlushGlobal => "csp: global TLB flush".into(),
        HwEvent::FlushLocal => "local TLB flush".into(),
        HwEvent::Uv { pte, kind } => format!(
            "uv {} {pte}",
            match kind {
                UvKind::ConvertFromSecure => "convert_from_secure",
                UvKind::Destroy => "destroy",
            }
        ),
    }
}

pub fn counters_text(c: &Counters) -> String {
    format!(
        "ipte local {} global {}; ipte-range local {} global {} ({} entries); idte {}; csp {}; rdp {}; uv {}",
        c.ipte_local,
        c.ipte_global,
        c.ipte_range_local,
        c.ipte_range_global,
        c.ipte_range_entries,
        c.idte,
        c.flush_global,
        c.rdp,
        c.uv_calls
    )
}

/// Memory entries that differ from the program's initial values, in PTE order.
pub fn memory_changes(program: &Program, layout: &[u8], s: &Snapshot) -> Vec<(PteRef, u64, u64)> {
    let mut out = vec![];
    let mut initial = program.config.init.iter().peekable();
    let mut flat = 0;
    for (mm, &tables) in layout.iter().enumerate() {
        for t in 0..tables {
            for i in 0..PTRS_PER_PTE {
                let p = PteRef::new(mm as u8, t, i as u16);
                let init = match initial.peek() {
                    Some(x) if x.pte == p => initial.next().unwrap().value,
                    _ => PTE_NONE,
                };
                let now = s.memory[flat];
                if now != init {
                    out.push((p, init, now));
                }
                flat += 1;
            }
        }
    }
    out
}

fn snapshot_text(out: &mut String, program: &Program, layout: &[u8], s: &Snapshot) {
    let changes = memory_changes(program, layout, s);
    if changes.is_empty() {
        writeln!(out, "      memory: as at the start").unwrap();
    }
    for (p, from, to) in changes {
        writeln!(
            out,
            "      memory {p}: {from:#x} -> {to:#x} ({})",
            pte::describe(to)
        )
        .unwrap();
    }
    for (c, tlb) in s.tlbs.iter().enumerate() {
        if !tlb.is_empty() {
            let entries: Vec<String> = tlb.iter().map(|(p, v)| format!("{p}={v:#x}")).collect();
            writeln!(out, "      tlb cpu{c}: {}", entries.join(", ")).unwrap();
        }
    }
    for (m, ctx) in s.mms.iter().enumerate() {
        if ctx.flush_mm {
            writeln!(out, "      mm{m}: full flush owed (flush_mm)").unwrap();
        }
    }
    writeln!(out, "      counters: {}", counters_text(&s.counters)).unwrap();
}

/// The whole trace, step by step.
pub fn trace_text(program: &Program, trace: &Trace) -> String {
    let mut out = String::new();
    writeln!(out, "implementation: {}", trace.implementation).unwrap();
    let mut syncs = trace.syncs.iter().peekable();
    for (i, (step, rec)) in program.steps.iter().zip(&trace.steps).enumerate() {
        let mut line = format!("#{i:<3} {}", step_to_text(step));
        if let Some(r) = ret_text(&rec.ret) {
            write!(line, "  -> {r}").unwrap();
        }
        writeln!(out, "{line}").unwrap();
        for e in &rec.hw {
            writeln!(out, "      {}", hw_text(e)).unwrap();
        }
        for e in trace.events.iter().filter(|e| e.step == i) {
            writeln!(out, "      !! {:?}", e.event).unwrap();
        }
        while let Some(s) = syncs.next_if(|s| s.step == i) {
            let kind = match s.kind {
                SyncKind::Disable => "leave",
                SyncKind::NestedDisable => "nested flush",
                SyncKind::Pause => "pause",
                SyncKind::Flush => "flush",
            };
            writeln!(out, "    == sync point ({kind}) of cpu{} ==", s.cpu).unwrap();
            snapshot_text(&mut out, program, &trace.layout, &s.snapshot);
        }
    }
    writeln!(out, "== end of program ==").unwrap();
    snapshot_text(&mut out, program, &trace.layout, &trace.end);
    if trace.events.is_empty() {
        writeln!(out, "machine rule events: none").unwrap();
    } else {
        writeln!(out, "machine rule events: {}", trace.events.len()).unwrap();
    }
    out
}
