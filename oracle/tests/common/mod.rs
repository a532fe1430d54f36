//! Helpers shared by the oracle's hand-worked tests: parse a `.ops` program, run it
//! through the eager oracle, and read values out of the trace.

#![allow(dead_code)]

use lazymmu_harness::contract;
use lazymmu_lang::{text, Program, PteRef};
use lazymmu_model::exec::SyncKind;
use lazymmu_model::machine::{HwEvent, UvKind};
use lazymmu_model::{report, Trace};

pub const LOCAL: bool = true;
pub const GLOBAL: bool = false;

/// RW young dirty, valid: `F|0x03d`.
pub const RW: u64 = 0x1a03d;
/// RO young, valid, protected: `F|0x215`.
pub const RO: u64 = 0x1a215;
/// Old clean, present but hardware-invalid: `F|0x631`.
pub const OLD: u64 = 0x1a631;
/// `pte_none`.
pub const NONE: u64 = 0x400;
/// A swap entry: I and P set, not present.
pub const SWAP: u64 = 0x1a600;

/// Parses a program, panicking with the parse error and the source.
pub fn parse(src: &str) -> Program {
    text::parse(src).unwrap_or_else(|e| panic!("parse error {e}\n{src}"))
}

/// Parses and runs a program through the oracle, whatever it does.
pub fn run(src: &str) -> (Program, Trace) {
    let p = parse(src);
    let t = lazymmu_oracle::run(&p);
    (p, t)
}

/// Runs a program that must keep the API contract (realistic) and break no machine
/// rule; returns its trace.
pub fn run_clean(src: &str) -> Trace {
    let p = parse(src);
    let v = contract::violations(&p);
    assert!(
        v.is_empty(),
        "program is not realistic: {}\n{src}",
        v.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    );
    let t = lazymmu_oracle::run(&p);
    assert!(
        t.events.is_empty(),
        "machine rule events {:?}\n{}",
        t.events,
        report::trace_text(&p, &t)
    );
    t
}

/// Runs a program that breaks no machine rule but need not be realistic.
pub fn run_no_events(src: &str) -> Trace {
    let (p, t) = run(src);
    assert!(
        t.events.is_empty(),
        "machine rule events {:?}\n{}",
        t.events,
        report::trace_text(&p, &t)
    );
    t
}

/// The header line: `cpus` CPUs, facility 13 on, the given TLB-LC setting and mode.
pub fn header(cpus: u8, tlb_lc: bool, mode: &str) -> String {
    format!(
        "lazymmu-ops v1 cpus={cpus} facility13=on tlb_lc={} mode={mode}\n",
        if tlb_lc { "on" } else { "off" }
    )
}

pub fn pte(mm: u8, table: u8, index: u16) -> PteRef {
    PteRef::new(mm, table, index)
}

/// The value of `mm{mm} t{table}[{index}]` at the end of the program.
pub fn mem(t: &Trace, mm: u8, table: u8, index: u16) -> u64 {
    t.end.pte(&t.layout, pte(mm, table, index))
}

pub fn ipte(mm: u8, table: u8, index: u16, local: bool) -> HwEvent {
    HwEvent::Ipte {
        pte: pte(mm, table, index),
        local,
    }
}

pub fn uv(mm: u8, table: u8, index: u16, kind: UvKind) -> HwEvent {
    HwEvent::Uv {
        pte: pte(mm, table, index),
        kind,
    }
}

/// The sync points of a trace as (step, cpu, kind).
pub fn syncs(t: &Trace) -> Vec<(usize, u8, SyncKind)> {
    t.syncs.iter().map(|s| (s.step, s.cpu, s.kind)).collect()
}

/// Every instruction of the whole program, in order.
pub fn all_hw(t: &Trace) -> Vec<HwEvent> {
    t.steps.iter().flat_map(|s| s.hw.iter().copied()).collect()
}
