//! Human-readable rendering of traces: one line per step with what it returned and the
//! instructions it issued, and at each sync point what memory, TLBs and counters hold.

use std::fmt::Write as _;

use crate::exec::{Ret, SyncKind, Trace};
use crate::machine::{Counters, HwEvent, Snapshot};
use crate::render::{event_text, pte_bits};
use lazymmu_lang::program::{Program, PteRef};
use lazymmu_lang::pte::{PTE_NONE, PTRS_PER_PTE};
use lazymmu_lang::text::step_to_text;

/// What a step returned, for traces and reports (`None` for a void function). See
/// `render` for the wording.
pub fn ret_text(r: &Ret) -> Option<String> {
    match r {
        Ret::None => None,
        r => Some(r.to_string()),
    }
}

/// One instruction or firmware call, as its mnemonic (`ipte global mm0 t0[5]`).
pub fn hw_text(e: &HwEvent) -> String {
    e.to_string()
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
            pte_bits(to)
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
            writeln!(
                out,
                "      !! {}",
                event_text(&e.event, Some(step.op.name()))
            )
            .unwrap();
        }
        while let Some(s) = syncs.next_if(|s| s.step == i) {
            let kind = match s.kind {
                SyncKind::Disable => "leave",
                SyncKind::NestedDisable => "nested flush",
                SyncKind::Pause => "pause",
                SyncKind::IrqExit => "interrupt exit",
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
