//! Reproducers people use, from a `Repro`:
//!
//! * `text`: a plain-text report for a mailing-list reply (every line at most 72
//!   columns), with the program in the `.ops` format between two marker lines so that
//!   `program_from_text` gets it back, a side-by-side trace and what diverged;
//! * `kunit`, `kunit_repro`, `kunit_suite`: a KUnit test case in C that makes the
//!   program's calls with the kernel's functions and expects what the eager code
//!   returns, and a suite around such cases (compiles against the rig's shim headers
//!   plus `triage/kunit/include`);
//! * `json`: the finding, the program and the verdict for tools;
//! * `svg`: a timeline picture, one lane per CPU.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use lazymmu_engine::executor::Executor;
use lazymmu_harness::check::Finding;
use lazymmu_harness::contract;
use lazymmu_lang::program::MmKind;
use lazymmu_lang::pte::PAGE_SHIFT;
use lazymmu_lang::text::{parse, step_to_text, to_text};
use lazymmu_lang::{MachineConfig, Op, Program, PteRef};
use lazymmu_model::exec::{Ret, StepRecord};
use lazymmu_model::machine::LazyState;
use lazymmu_model::report::{hw_text, memory_changes, ret_text};
use lazymmu_model::Machine;

use crate::Repro;

/// The widest line of a text report.
pub const WIDTH: usize = 72;
/// The line before the program in a text report.
pub const PROGRAM_BEGIN: &str = "--- program (.ops) ---";
/// The line after the program in a text report.
pub const PROGRAM_END: &str = "--- end of program ---";

// ---------------------------------------------------------------------------------
// Small text helpers.

fn width(s: &str) -> usize {
    s.chars().count()
}

/// `s` cut to at most `w` columns, with `...` in the middle where text was dropped
/// (the head and the tail of a name or path are the informative parts).
fn abbrev(s: &str, w: usize) -> String {
    let n = width(s);
    if n <= w {
        return s.to_string();
    }
    if w <= 3 {
        return s.chars().take(w).collect();
    }
    let keep = w - 3;
    let head = keep / 2;
    let tail = keep - head;
    let mut out: String = s.chars().take(head).collect();
    out.push_str("...");
    out.extend(s.chars().skip(n - tail));
    out
}

/// `s` cut to at most `w` columns, with `...` at the end.
fn truncate(s: &str, w: usize) -> String {
    if width(s) <= w {
        return s.to_string();
    }
    let mut out: String = s.chars().take(w.saturating_sub(3)).collect();
    out.push_str("...");
    out.chars().take(w).collect()
}

/// Word-wraps `text` to `w` columns: the first line starts with `first`, the others
/// with `rest`. Words longer than a line are split.
fn wrap(text: &str, w: usize, first: &str, rest: &str) -> Vec<String> {
    let mut lines = vec![];
    let mut line = first.to_string();
    let mut empty = true;
    for word in text.split_whitespace() {
        let mut word = word.to_string();
        loop {
            let sep = usize::from(!empty);
            if width(&line) + sep + width(&word) <= w {
                if !empty {
                    line.push(' ');
                }
                line.push_str(&word);
                empty = false;
                break;
            }
            if !empty {
                lines.push(std::mem::replace(&mut line, rest.to_string()));
                empty = true;
                continue;
            }
            // A word longer than a whole line: split it.
            let room = w.saturating_sub(width(&line)).max(1);
            let head: String = word.chars().take(room).collect();
            word = word.chars().skip(room).collect();
            line.push_str(&head);
            lines.push(std::mem::replace(&mut line, rest.to_string()));
            if word.is_empty() {
                break;
            }
        }
    }
    if !empty || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Drops ` (...)` asides: `0x1a03d (pfn 0x1a valid rw)` -> `0x1a03d`.
fn strip_aside(s: &str) -> String {
    let mut out = String::new();
    let mut depth = 0u32;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if depth == 0 && c == ' ' && chars.peek() == Some(&'(') {
            continue;
        }
        match c {
            '(' if !out.is_empty() || depth > 0 => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    if out.trim().is_empty() {
        s.to_string()
    } else {
        out.trim_end().to_string()
    }
}

/// The return and the instructions of one side of a step, fitted in `w` columns: in
/// full if it fits, else without the asides, else the first items and a count.
fn side_text(rec: &StepRecord, w: usize) -> String {
    let mut items: Vec<String> = ret_text(&rec.ret).into_iter().collect();
    items.extend(rec.hw.iter().map(hw_text));
    if items.is_empty() {
        return "-".into();
    }
    let full = items.join("; ");
    if width(&full) <= w {
        return full;
    }
    let short: Vec<String> = items.iter().map(|s| strip_aside(s)).collect();
    let joined = short.join("; ");
    if width(&joined) <= w {
        return joined;
    }
    for k in (1..short.len()).rev() {
        let s = format!("{}; +{} more", short[..k].join("; "), short.len() - k);
        if width(&s) <= w {
            return s;
        }
    }
    if short.len() > 1 {
        let more = format!(" +{}", short.len() - 1);
        return format!(
            "{}{more}",
            truncate(&short[0], w.saturating_sub(width(&more)))
        );
    }
    truncate(&short[0], w)
}

// ---------------------------------------------------------------------------------
// The plain-text report.

/// The `.ops` lines of a program. `to_text` lines fit in 72 columns for every program
/// the format can express; should one not, the header's default settings are dropped
/// (the parser supplies them), never wrapped, so that the block always parses back.
fn ops_lines(p: &Program) -> Vec<String> {
    to_text(p)
        .lines()
        .map(|l| {
            if width(l) <= WIDTH {
                return l.to_string();
            }
            let defaults = MachineConfig::default();
            let on = |b: bool| if b { "on" } else { "off" };
            let dropped = [
                format!("cpus={}", defaults.cpus),
                format!("facility13={}", on(defaults.facility13)),
                format!("tlb_lc={}", on(defaults.tlb_lc)),
                "mode=realistic".to_string(),
            ];
            let header = l.starts_with("lazymmu-ops ");
            l.split_whitespace()
                .filter(|t| !(header && dropped.iter().any(|d| d == t)))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// `, PTE mm0 t0[5]` for a finding about one PTE, nothing otherwise.
fn pte_or_none(p: Option<PteRef>) -> String {
    p.map_or_else(String::new, |p| format!(", PTE {p}"))
}

/// The steps the trace shows: up to and including the first finding's step (all of
/// them for findings at the end of the program, or without a finding).
fn shown_steps(r: &Repro) -> usize {
    let n = r.program.steps.len();
    r.first().map_or(n, |f| (f.step + 1).min(n))
}

/// A plain-text report fit to paste in a mailing-list reply: title, the program in the
/// `.ops` format (between `PROGRAM_BEGIN` and `PROGRAM_END`), the trace of both sides
/// up to the diverging step (marked `>>`), and what diverged. No line is wider than
/// `WIDTH` columns.
pub fn text(r: &Repro) -> String {
    let mut out: Vec<String> = vec![];
    let first = r.first();
    let sig = first.map_or_else(|| "no finding".to_string(), Finding::signature);

    // Title: signature, generation, implementation.
    let head = format!("{sig} ({})", r.generation);
    let room = WIDTH.saturating_sub(width(&head) + 4);
    if room >= 16 {
        out.push(format!("{head} on {}", abbrev(&r.implementation, room)));
    } else {
        out.push(abbrev(&head, WIDTH));
        out.push(format!("on {}", abbrev(&r.implementation, WIDTH - 3)));
    }
    let p = &r.program;
    let cpus: BTreeSet<u8> = p.steps.iter().map(|s| s.cpu).collect();
    let mut summary = format!(
        "{} steps on {} CPU{} ({} configured); nothing-pending marker {:#x}.",
        p.steps.len(),
        cpus.len(),
        if cpus.len() == 1 { "" } else { "s" },
        p.config.cpus,
        r.marker
    );
    if let Some(f) = first {
        if f.step < p.steps.len() {
            write!(
                summary,
                " First divergence at step {} (cpu{}, {}).",
                f.step, f.cpu, f.op
            )
            .unwrap();
        } else {
            summary.push_str(" First divergence at the end of the program.");
        }
    }
    out.extend(wrap(&summary, WIDTH, "", ""));
    out.push(String::new());

    // The program.
    out.push(PROGRAM_BEGIN.into());
    out.extend(ops_lines(p));
    out.push(PROGRAM_END.into());
    out.push(String::new());

    // The trace, side by side.
    let shown = shown_steps(r);
    let diverging = first.map(|f| f.step);
    let idx_w = width(&format!("#{}", p.steps.len()));
    let indent = 3 + idx_w + 1;
    let left_w = (WIDTH - indent - 3) / 2;
    let right_w = WIDTH - indent - 3 - left_w;
    out.push(truncate(
        &format!(
            "--- trace: steps 0..{} of {}, target | oracle (eager) ---",
            shown.saturating_sub(1),
            p.steps.len()
        ),
        WIDTH,
    ));
    out.push(
        format!("{:indent$}{:<left_w$} | {}", "", "target", "oracle (eager)")
            .trim_end()
            .to_string(),
    );
    for i in 0..shown {
        let mark = if diverging == Some(i) { ">> " } else { "   " };
        let idx = format!("#{i}");
        let prefix = format!("{mark}{idx:<idx_w$} ");
        let step = step_to_text(&p.steps[i]);
        out.push(format!("{prefix}{}", abbrev(&step, WIDTH - width(&prefix))));
        let (t, o) = (&r.target.steps[i], &r.oracle.steps[i]);
        let line = format!(
            "{:indent$}{:<left_w$} | {}",
            "",
            side_text(t, left_w),
            side_text(o, right_w)
        );
        out.push(line.trim_end().to_string());
    }
    if diverging.is_some_and(|s| s >= p.steps.len()) {
        out.push(format!(">> {:<idx_w$} end of program", "#end"));
    } else if shown < p.steps.len() {
        out.push(format!(
            "   ({} later step{} not shown)",
            p.steps.len() - shown,
            if p.steps.len() - shown == 1 { "" } else { "s" }
        ));
    }
    out.push(String::new());

    // What diverged.
    out.push("--- what diverged ---".into());
    match first {
        None => out.extend(wrap(
            "Nothing: the implementation agrees with the eager code on this program.",
            WIDTH,
            "",
            "",
        )),
        Some(f) => {
            let at = if f.step < p.steps.len() {
                format!(
                    "At step {} ({}){}:",
                    f.step,
                    step_to_text(&p.steps[f.step]),
                    pte_or_none(f.pte)
                )
            } else {
                format!("At the end of the program{}:", pte_or_none(f.pte))
            };
            out.extend(wrap(&format!("{at} {}.", f.detail), WIDTH, "", ""));
            out.extend(wrap(f.class.name(), WIDTH, "  class:  ", "          "));
            out.extend(wrap(&f.target, WIDTH, "  target: ", "          "));
            out.extend(wrap(&f.oracle, WIDTH, "  oracle: ", "          "));
            if f.hardening {
                out.extend(wrap(
                    "The program breaks the API contract, so this is hardening, not a bug:",
                    WIDTH,
                    "  ",
                    "  ",
                ));
                for v in &r.verdict.contract {
                    out.extend(wrap(&v.to_string(), WIDTH, "  - ", "    "));
                }
            }
            let rest = r.verdict.findings.len() - 1;
            if rest > 0 {
                let sigs = r.verdict.signatures().join(", ");
                out.extend(wrap(
                    &format!(
                        "{rest} more finding{} after it; all signatures: {sigs}",
                        if rest == 1 { "" } else { "s" }
                    ),
                    WIDTH,
                    "",
                    "",
                ));
            }
        }
    }
    if !r.verdict.hazards.is_empty() {
        out.extend(wrap(
            &format!(
                "Visibility hazards (not bugs by themselves, see \
                 docs/semantics.md#rule-hazards): {}.",
                r.verdict.hazards.len()
            ),
            WIDTH,
            "",
            "",
        ));
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// Extracts the program block of a text report (also from a quoted reply, `> `
/// prefixes and all) and parses it.
pub fn program_from_text(report: &str) -> Result<Program, String> {
    let lines: Vec<&str> = report.lines().collect();
    let is_quote = |q: &str| q.chars().all(|c| c == '>' || c == ' ' || c == '\t');
    let (start, quote) = lines
        .iter()
        .enumerate()
        .find_map(|(i, l)| {
            let q = l.trim_end().strip_suffix(PROGRAM_BEGIN)?;
            is_quote(q).then(|| (i, q.to_string()))
        })
        .ok_or_else(|| format!("no '{PROGRAM_BEGIN}' line in the report"))?;
    let bare_quote = quote.trim_end();
    let mut src = String::new();
    for l in &lines[start + 1..] {
        let body = l
            .strip_prefix(quote.as_str())
            .or_else(|| l.strip_prefix(bare_quote))
            .unwrap_or(l);
        if body.trim() == PROGRAM_END {
            return parse(&src).map_err(|e| format!("program block, line {e}"));
        }
        src.push_str(body);
        src.push('\n');
    }
    Err(format!("no '{PROGRAM_END}' line after the program"))
}

// ---------------------------------------------------------------------------------
// KUnit.

/// A C identifier from any name.
fn c_ident(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert_str(0, "case_");
    }
    s
}

/// Text safe inside a C block comment.
fn c_comment(s: &str) -> String {
    s.replace("*/", "* /").replace("/*", "/ *")
}

/// Text safe inside a C string literal.
fn c_string(s: &str) -> String {
    s.chars()
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c if c.is_ascii_graphic() || c == ' ' => vec![c],
            _ => vec!['?'],
        })
        .collect()
}

const KUNIT_INCLUDES: &str = "#include <kunit/test.h>\n#include <linux/pgtable.h>\n\
                              #include <linux/lazy_mmu_kunit_glue.h>\n";

fn table_var(mm: u8, table: u8) -> String {
    format!("pt{mm}_{table}")
}

fn ptep_c(p: PteRef) -> String {
    format!("&{}[{}]", table_var(p.mm, p.table), p.index)
}

fn addr_c(p: PteRef) -> String {
    format!("{:#x}UL", Machine::vaddr(p))
}

fn value_c(v: u64) -> String {
    format!("{v:#x}UL")
}

/// The KUnit comment that marks the first divergence (`place`: "here", "at the end").
fn divergence_comment(out: &mut String, r: &Repro, place: &str) {
    if let Some(f) = r.first() {
        let lines = wrap(
            &format!(
                ">> {} diverges {place}: {} where the eager code gives {}.",
                r.implementation, f.target, f.oracle
            ),
            90,
            "",
            "   ",
        );
        c_block_comment(out, "\t", &lines);
    }
}

/// Comment lines `/* ... */` wrapped for C, at one tab of indent.
fn c_block_comment(out: &mut String, indent: &str, text: &[String]) {
    writeln!(out, "{indent}/*").unwrap();
    for l in text {
        if l.is_empty() {
            writeln!(out, "{indent} *").unwrap();
        } else {
            writeln!(out, "{indent} * {}", c_comment(l)).unwrap();
        }
    }
    writeln!(out, "{indent} */").unwrap();
}

/// A `/* text */` comment at one tab of indent, as a block comment if it is long.
fn c_note(out: &mut String, text: &str) {
    if width(text) + 7 <= 96 {
        writeln!(out, "\t/* {} */", c_comment(text)).unwrap();
    } else {
        c_block_comment(out, "\t", &wrap(text, 88, "", "   "));
    }
}

/// What the body of a test case needs declared, collected from the steps.
#[derive(Default)]
struct Needs {
    mms: BTreeSet<u8>,
    vmas: BTreeSet<u8>,
    tables: BTreeSet<(u8, u8)>,
    locks: BTreeSet<(u8, u8)>,
    /// CPUs whose `ptep_modify_prot_start` result is kept for the commit.
    olds: BTreeSet<u8>,
}

/// How one step of the program is rendered in the single KUnit task.
enum Render {
    /// Made as a call, with a note on its context.
    Call(Option<&'static str>),
    /// Made by the rig's userspace runner only (a glue call that does nothing in a
    /// kernel, or kernel calls in an `#ifndef __KERNEL__` block), for the reason given.
    Rig(&'static str),
    /// Only described in a comment, for the reason given.
    Comment(&'static str),
}

/// The steps' rendering: `task` is the CPU whose lazy-MMU state the KUnit task has in
/// a kernel. Page-table calls of every CPU run in the task (the eager code returns the
/// same in any context); lazy-MMU calls and locks of other CPUs, hardware steps, CPU
/// and mm switches, interrupt entry and exit, and lazy-MMU calls made in interrupt
/// context (no-ops there) run in the rig's userspace runner only, where every step
/// runs as its own CPU (`lazy_mmu_test_cpu()`).
fn renderings(r: &Repro, task: u8) -> Vec<Render> {
    let mut irq = vec![0u32; r.program.config.cpus as usize];
    r.program
        .steps
        .iter()
        .zip(&r.oracle.steps)
        .map(|(s, rec)| {
            let c = s.cpu as usize;
            if rec.ret == Ret::CpuOffline {
                return Render::Comment("not run: the CPU is offline");
            }
            let lazy_op = matches!(
                s.op,
                Op::Enable
                    | Op::EnableWithPtes { .. }
                    | Op::Disable
                    | Op::Pause
                    | Op::Resume
                    | Op::IsLazyActive
            );
            match s.op {
                Op::Access { .. } => Render::Rig("a hardware translation"),
                Op::IrqEnter => {
                    irq[c] += 1;
                    Render::Rig("interrupt entry")
                }
                Op::IrqExit => {
                    irq[c] = irq[c].saturating_sub(1);
                    Render::Rig("interrupt exit")
                }
                Op::SwitchMm { .. } => Render::Rig("a context switch"),
                Op::CpuOffline | Op::CpuOnline => Render::Rig("CPU hotplug"),
                Op::LockPtl { .. } | Op::UnlockPtl { .. } if s.cpu != task => {
                    Render::Rig("another CPU's lock")
                }
                _ if lazy_op && s.cpu != task => Render::Rig("another CPU's lazy-MMU state"),
                _ if lazy_op && irq[c] > 0 => Render::Rig("in interrupt context"),
                _ if irq[c] > 0 => Render::Call(Some(
                    "in interrupt context on the rig; the eager code returns the same in a task",
                )),
                _ => Render::Call(None),
            }
        })
        .collect()
}

fn collect_needs(r: &Repro, rendering: &[Render]) -> Needs {
    let mut n = Needs::default();
    for i in &r.program.config.init {
        n.tables.insert((i.pte.mm, i.pte.table));
    }
    for (s, how) in r.program.steps.iter().zip(rendering) {
        if matches!(how, Render::Comment(_)) {
            continue;
        }
        let init = |mm: u8| r.program.config.mms[mm as usize].kind == MmKind::Init;
        match s.op {
            Op::Access { pte, .. } => {
                n.mms.insert(pte.mm);
            }
            Op::SwitchMm { mm: Some(mm) } => {
                n.mms.insert(mm);
            }
            Op::EnableWithPtes { range, ptep } => {
                n.mms.insert(range.mm);
                n.tables.insert((ptep.mm, ptep.table));
            }
            // init_mm's flush is flush_tlb_kernel_range(), without a vma.
            Op::FlushTlbRange { range } if !init(range.mm) => {
                n.mms.insert(range.mm);
                n.vmas.insert(range.mm);
            }
            Op::FlushTlbMm { mm } => {
                n.mms.insert(mm);
            }
            Op::LockPtl { mm, table } | Op::UnlockPtl { mm, table } => {
                n.locks.insert((mm, table));
            }
            Op::PtepTestAndClearYoung { pte } | Op::PtepClearFlush { pte } => {
                n.mms.insert(pte.mm);
                n.vmas.insert(pte.mm);
            }
            Op::ModifyProtStart { pte } | Op::ModifyProtCommit { pte, .. } => {
                n.mms.insert(pte.mm);
                n.vmas.insert(pte.mm);
                n.olds.insert(s.cpu);
            }
            Op::SetPtes { pte, .. }
            | Op::PteClear { pte }
            | Op::PtepGetAndClear { pte }
            | Op::PtepGetAndClearFull { pte, .. }
            | Op::SetWrprotect { pte } => {
                n.mms.insert(pte.mm);
            }
            _ => {}
        }
        if let Some(p) = s.op.pte() {
            n.tables.insert((p.mm, p.table));
        }
    }
    // The rig's machine model knows each table's mm (lazy_mmu_test_table()).
    let table_mms: Vec<u8> = n.tables.iter().map(|&(mm, _)| mm).collect();
    n.mms.extend(table_mms);
    n
}

/// One step as C statements (at one tab of indent).
fn step_c(out: &mut String, r: &Repro, i: usize, last_start: &mut BTreeMap<u8, PteRef>) {
    let s = &r.program.steps[i];
    let ret = r.oracle.steps[i].ret;
    let init = |mm: u8| r.program.config.mms[mm as usize].kind == MmKind::Init;
    let expect_pte = |out: &mut String, call: String| match ret {
        Ret::Pte(v) => writeln!(
            out,
            "\tKUNIT_EXPECT_EQ(test, pte_val({call}), {});",
            value_c(v)
        )
        .unwrap(),
        _ => writeln!(out, "\t{call};").unwrap(),
    };
    let range_c = |range: lazymmu_lang::PteRange| {
        let start = Machine::vaddr(range.first());
        let end = start + (((range.end as u64).saturating_sub(range.start as u64)) << PAGE_SHIFT);
        (format!("{start:#x}UL"), format!("{end:#x}UL"))
    };
    match s.op {
        Op::Enable => writeln!(out, "\tlazy_mmu_mode_enable();").unwrap(),
        Op::EnableWithPtes { range, ptep } => {
            let (a, e) = range_c(range);
            writeln!(
                out,
                "\tlazy_mmu_mode_enable_with_ptes(mm{}, {a}, {e}, {});",
                range.mm,
                ptep_c(ptep)
            )
            .unwrap()
        }
        Op::Disable => writeln!(out, "\tlazy_mmu_mode_disable();").unwrap(),
        Op::Pause => writeln!(out, "\tlazy_mmu_mode_pause();").unwrap(),
        Op::Resume => writeln!(out, "\tlazy_mmu_mode_resume();").unwrap(),
        Op::IsLazyActive => {
            let which = if ret == Ret::Bool(true) {
                "TRUE"
            } else {
                "FALSE"
            };
            writeln!(
                out,
                "\tKUNIT_EXPECT_{which}(test, is_lazy_mmu_mode_active());"
            )
            .unwrap()
        }
        Op::SetPte { pte, value } => writeln!(
            out,
            "\tset_pte({}, __pte({}));",
            ptep_c(pte),
            value_c(value)
        )
        .unwrap(),
        Op::SetPtes { pte, value, n } => writeln!(
            out,
            "\tset_ptes(mm{}, {}, {}, __pte({}), {n});",
            pte.mm,
            addr_c(pte),
            ptep_c(pte),
            value_c(value)
        )
        .unwrap(),
        Op::PteClear { pte } => writeln!(
            out,
            "\tpte_clear(mm{}, {}, {});",
            pte.mm,
            addr_c(pte),
            ptep_c(pte)
        )
        .unwrap(),
        Op::PtepGet { pte } => expect_pte(out, format!("ptep_get({})", ptep_c(pte))),
        Op::PtepGetLockless { pte } => {
            expect_pte(out, format!("ptep_get_lockless({})", ptep_c(pte)))
        }
        Op::PtepGetAndClear { pte } => expect_pte(
            out,
            format!(
                "ptep_get_and_clear(mm{}, {}, {})",
                pte.mm,
                addr_c(pte),
                ptep_c(pte)
            ),
        ),
        Op::PtepGetAndClearFull { pte, full } => expect_pte(
            out,
            format!(
                "ptep_get_and_clear_full(mm{}, {}, {}, {})",
                pte.mm,
                addr_c(pte),
                ptep_c(pte),
                full as u8
            ),
        ),
        Op::PtepClearFlush { pte } => expect_pte(
            out,
            format!(
                "ptep_clear_flush(vma{}, {}, {})",
                pte.mm,
                addr_c(pte),
                ptep_c(pte)
            ),
        ),
        Op::PtepTestAndClearYoung { pte } => {
            let call = format!(
                "ptep_test_and_clear_young(vma{}, {}, {})",
                pte.mm,
                addr_c(pte),
                ptep_c(pte)
            );
            match ret {
                Ret::Bool(b) => writeln!(
                    out,
                    "\tKUNIT_EXPECT_{}(test, {call});",
                    if b { "TRUE" } else { "FALSE" }
                )
                .unwrap(),
                _ => writeln!(out, "\t{call};").unwrap(),
            }
        }
        Op::ModifyProtStart { pte } => {
            let var = format!("old{}", s.cpu);
            writeln!(
                out,
                "\t{var} = ptep_modify_prot_start(vma{}, {}, {});",
                pte.mm,
                addr_c(pte),
                ptep_c(pte)
            )
            .unwrap();
            if let Ret::Pte(v) = ret {
                writeln!(
                    out,
                    "\tKUNIT_EXPECT_EQ(test, pte_val({var}), {});",
                    value_c(v)
                )
                .unwrap();
            }
            last_start.insert(s.cpu, pte);
        }
        Op::ModifyProtCommit { pte, value } => {
            // The caller passes what its start returned (the rig: memory without one).
            let old = match last_start.remove(&s.cpu) {
                Some(p) if p == pte => format!("old{}", s.cpu),
                _ => format!("READ_ONCE({}[{}])", table_var(pte.mm, pte.table), pte.index),
            };
            writeln!(
                out,
                "\tptep_modify_prot_commit(vma{}, {}, {}, {old}, __pte({}));",
                pte.mm,
                addr_c(pte),
                ptep_c(pte),
                value_c(value)
            )
            .unwrap()
        }
        Op::SetWrprotect { pte } => writeln!(
            out,
            "\tptep_set_wrprotect(mm{}, {}, {});",
            pte.mm,
            addr_c(pte),
            ptep_c(pte)
        )
        .unwrap(),
        Op::FlushTlbRange { range } => {
            let (a, e) = range_c(range);
            if init(range.mm) {
                writeln!(out, "\tflush_tlb_kernel_range({a}, {e});").unwrap()
            } else {
                writeln!(out, "\tflush_tlb_range(vma{}, {a}, {e});", range.mm).unwrap()
            }
        }
        Op::FlushTlbMm { mm } => writeln!(out, "\tflush_tlb_mm(mm{mm});").unwrap(),
        Op::LockPtl { mm, table } => writeln!(out, "\tspin_lock(&ptl{mm}_{table});").unwrap(),
        Op::UnlockPtl { mm, table } => writeln!(out, "\tspin_unlock(&ptl{mm}_{table});").unwrap(),
        Op::Access { pte, write } => writeln!(
            out,
            "\tlazy_mmu_test_access(test, mm{}, {}, {}, {write});",
            pte.mm,
            addr_c(pte),
            ptep_c(pte)
        )
        .unwrap(),
        Op::IrqEnter => writeln!(out, "\tlazy_mmu_test_irq_enter(test);").unwrap(),
        Op::IrqExit => writeln!(out, "\tlazy_mmu_test_irq_exit(test);").unwrap(),
        Op::SwitchMm { mm } => writeln!(
            out,
            "\tlazy_mmu_test_switch_mm(test, {});",
            mm.map_or("NULL".to_string(), |m| format!("mm{m}"))
        )
        .unwrap(),
        Op::CpuOffline => writeln!(out, "\tlazy_mmu_test_cpu_offline(test);").unwrap(),
        Op::CpuOnline => writeln!(out, "\tlazy_mmu_test_cpu_online(test);").unwrap(),
    }
}

/// Steps the glue makes with a `lazy_mmu_test_*()` call (a no-op in a kernel).
fn glue_step(op: &Op) -> bool {
    matches!(
        op,
        Op::Access { .. }
            | Op::IrqEnter
            | Op::IrqExit
            | Op::SwitchMm { .. }
            | Op::CpuOffline
            | Op::CpuOnline
    )
}

/// The rig's machine for the userspace runner (no-ops in a kernel): the CPUs and
/// facilities, each mm's attach mask, each table's mm, and the CPU the case starts as.
fn kunit_machine(out: &mut String, p: &Program, mms: &BTreeSet<u8>, needs: &Needs, task: u8) {
    let c = &p.config;
    writeln!(
        out,
        "\t/* The rig's machine (lazy_mmu_kunit_glue.h): no-ops in a kernel. */"
    )
    .unwrap();
    writeln!(
        out,
        "\tlazy_mmu_test_machine(test, {}, {}, {});",
        c.cpus, c.facility13, c.tlb_lc
    )
    .unwrap();
    for &mm in mms {
        writeln!(
            out,
            "\tlazy_mmu_test_attach(test, mm{mm}, {:#x}UL);",
            c.mms[mm as usize].attach_mask
        )
        .unwrap();
    }
    for &(mm, t) in &needs.tables {
        writeln!(
            out,
            "\tlazy_mmu_test_table(test, mm{mm}, {});",
            table_var(mm, t)
        )
        .unwrap();
    }
    writeln!(out, "\tlazy_mmu_test_cpu(test, {task});").unwrap();
}

fn memory_expect(out: &mut String, p: PteRef, v: u64) {
    writeln!(
        out,
        "\tKUNIT_EXPECT_EQ(test, pte_val(READ_ONCE({}[{}])), {});",
        table_var(p.mm, p.table),
        p.index,
        value_c(v)
    )
    .unwrap();
}

/// The test function for `r`'s program, run as the task of CPU `task`. `numbers` are
/// the step numbers the comments show (those of the original program of a projection).
fn kunit_function(r: &Repro, name: &str, task: u8, numbers: &[usize]) -> String {
    let p = &r.program;
    let rendering = renderings(r, task);
    let needs = collect_needs(r, &rendering);
    let mut out = String::new();
    writeln!(out, "static void {name}(struct kunit *test)\n{{").unwrap();

    // Declarations.
    if !needs.mms.is_empty() || !needs.vmas.is_empty() {
        writeln!(
            out,
            "\t/* The test's mms and vmas (lazy_mmu_kunit_glue.h), not current->mm. */"
        )
        .unwrap();
    }
    let mms: BTreeSet<u8> = needs.mms.union(&needs.vmas).copied().collect();
    for &mm in &mms {
        let c = &p.config.mms[mm as usize];
        let init = match (c.kind, c.protected) {
            (MmKind::Init, _) => "lazy_mmu_test_init_mm(test)",
            (MmKind::User, true) => "lazy_mmu_test_protected_mm(test)",
            (MmKind::User, false) => "lazy_mmu_test_mm(test)",
        };
        writeln!(out, "\tstruct mm_struct *mm{mm} = {init};").unwrap();
    }
    for &mm in &needs.vmas {
        writeln!(
            out,
            "\tstruct vm_area_struct *vma{mm} = lazy_mmu_test_vma(test, mm{mm});"
        )
        .unwrap();
    }
    for &(mm, t) in &needs.tables {
        writeln!(
            out,
            "\tpte_t *{} = kunit_kzalloc(test, PTRS_PER_PTE * sizeof(pte_t), GFP_KERNEL);",
            table_var(mm, t)
        )
        .unwrap();
    }
    for &(mm, t) in &needs.locks {
        writeln!(out, "\tspinlock_t ptl{mm}_{t};").unwrap();
    }
    for &c in &needs.olds {
        writeln!(out, "\tpte_t old{c};").unwrap();
    }
    if !needs.tables.is_empty() {
        writeln!(out, "\tint i;").unwrap();
    }
    writeln!(out).unwrap();

    // Setup.
    for &mm in &mms {
        let c = &p.config.mms[mm as usize];
        if c.kind == MmKind::User && c.protected {
            writeln!(
                out,
                "\tif (!mm{mm})\n\t\tkunit_skip(test, \"mm{mm} must be a protected (secure-execution) mm\");"
            )
            .unwrap();
        }
    }
    for &(mm, t) in &needs.tables {
        let v = table_var(mm, t);
        writeln!(out, "\tKUNIT_ASSERT_NOT_NULL(test, {v});").unwrap();
        writeln!(
            out,
            "\t/* 2 KiB aligned: IPTE-range takes the table origin as ptep & ~0x7ff. */"
        )
        .unwrap();
        writeln!(
            out,
            "\tKUNIT_ASSERT_EQ(test, (unsigned long){v} & 0x7ffUL, 0UL);"
        )
        .unwrap();
        writeln!(
            out,
            "\tfor (i = 0; i < PTRS_PER_PTE; i++)\n\t\t{v}[i] = __pte(_PAGE_INVALID);"
        )
        .unwrap();
        for ini in p
            .config
            .init
            .iter()
            .filter(|x| x.pte.mm == mm && x.pte.table == t)
        {
            writeln!(
                out,
                "\t{v}[{}] = __pte({});",
                ini.pte.index,
                value_c(ini.value)
            )
            .unwrap();
        }
    }
    for &(mm, t) in &needs.locks {
        writeln!(out, "\tspin_lock_init(&ptl{mm}_{t});").unwrap();
    }
    kunit_machine(&mut out, p, &mms, &needs, task);

    // The steps, with memory checks where the caller may rely on memory.
    let multi = p.steps.iter().any(|s| s.cpu != task);
    let diverging = r.first().map(|f| f.step);
    let mut last_start = BTreeMap::new();
    let mut written: BTreeSet<PteRef> = BTreeSet::new();
    let mut syncs = r.oracle.syncs.iter().peekable();
    for (i, (s, how)) in p.steps.iter().zip(&rendering).enumerate() {
        writeln!(out).unwrap();
        let no = numbers.get(i).copied().unwrap_or(i);
        let who = if multi {
            format!("cpu{} ", s.cpu)
        } else {
            String::new()
        };
        let op = step_to_text(s);
        let op = op.split_once(' ').map_or(op.as_str(), |x| x.1);
        match how {
            Render::Call(None) => c_note(&mut out, &format!("#{no} {who}{op}")),
            Render::Call(Some(note)) => c_note(&mut out, &format!("#{no} {who}{op}: {note}")),
            Render::Comment(why) => {
                let eager = ret_text(&r.oracle.steps[i].ret)
                    .map(|t| format!(" (eager: {t})"))
                    .unwrap_or_default();
                c_note(
                    &mut out,
                    &format!("#{no} {who}{op}: {why}, not expressible in a KUnit task{eager}"),
                )
            }
            Render::Rig(why) => {
                let eager = ret_text(&r.oracle.steps[i].ret)
                    .map(|t| format!(" (eager: {t})"))
                    .unwrap_or_default();
                c_note(
                    &mut out,
                    &format!(
                        "#{no} {who}{op}: {why}, not expressible in a KUnit task: the rig's \
                         userspace runner only{eager}"
                    ),
                )
            }
        }
        if diverging == Some(i) {
            divergence_comment(&mut out, r, "here");
        }
        if multi && !matches!(how, Render::Comment(_)) {
            writeln!(out, "\tlazy_mmu_test_cpu(test, {});", s.cpu).unwrap();
        }
        match how {
            Render::Call(_) => {
                step_c(&mut out, r, i, &mut last_start);
                written.extend(s.op.written_ptes());
            }
            // Glue calls: no-ops in a kernel.
            Render::Rig(_) if glue_step(&s.op) => step_c(&mut out, r, i, &mut last_start),
            // Kernel calls a kernel task cannot make as that CPU.
            Render::Rig(_) => {
                writeln!(out, "#ifndef __KERNEL__").unwrap();
                step_c(&mut out, r, i, &mut last_start);
                writeln!(out, "#endif").unwrap();
            }
            Render::Comment(_) => {}
        }
        while let Some(sp) = syncs.next_if(|sp| sp.step <= i) {
            if sp.step != i
                || sp.cpu != task
                || !matches!(how, Render::Call(_))
                || written.is_empty()
            {
                continue;
            }
            writeln!(
                out,
                "\t/* After the {}, every earlier change is in memory. */",
                s.op.name()
            )
            .unwrap();
            for &q in &written {
                memory_expect(&mut out, q, sp.snapshot.pte(&r.oracle.layout, q));
            }
            written.clear();
        }
    }
    if diverging.is_some_and(|d| d >= p.steps.len()) && r.first().is_some() {
        writeln!(out).unwrap();
        divergence_comment(&mut out, r, "at the end");
    }

    // Memory at the end: every entry either side changed, and the finding's.
    let layout = &r.oracle.layout;
    let mut changed: BTreeSet<PteRef> = memory_changes(p, layout, &r.oracle.end)
        .into_iter()
        .chain(memory_changes(p, &r.target.layout, &r.target.end))
        .map(|(q, _, _)| q)
        .collect();
    changed.extend(r.first().and_then(|f| f.pte));
    changed.retain(|q| needs.tables.contains(&(q.mm, q.table)) && p.config.has_pte(*q));
    if !changed.is_empty() {
        writeln!(
            out,
            "\n\t/* Page-table memory at the end, as the eager code leaves it. */"
        )
        .unwrap();
        for q in changed {
            memory_expect(&mut out, q, r.oracle.end.pte(layout, q));
        }
    }
    writeln!(out, "}}").unwrap();
    out
}

/// The comment block that heads a test case: the finding, the settings a KUnit test
/// cannot make, and the program.
fn kunit_header(r: &Repro, shown: &Program, extra: &[String]) -> Vec<String> {
    let mut lines = vec![];
    match r.first() {
        Some(f) => {
            lines.extend(wrap(
                &format!(
                    "{}: found by the lazymmu rig on {} ({}).",
                    f.signature(),
                    r.implementation,
                    r.generation
                ),
                90,
                "",
                "",
            ));
            let at = if f.step < r.program.steps.len() {
                format!(
                    "step {} ({})",
                    f.step,
                    step_to_text(&r.program.steps[f.step])
                )
            } else {
                "the end of the program".to_string()
            };
            lines.extend(wrap(
                &format!(
                    "At {at}: {}. Target: {}; eager: {}.",
                    f.detail, f.target, f.oracle
                ),
                90,
                "",
                "",
            ));
        }
        None => lines.push(format!(
            "No finding on {} ({}): a regression test.",
            r.implementation, r.generation
        )),
    }
    lines.push(String::new());
    lines.extend(wrap(
        "The expected values are what the eager (pre-series) code returns and \
         leaves in memory.",
        90,
        "",
        "",
    ));
    let c = &shown.config;
    let mut machine = vec![];
    if !c.facility13 {
        machine.push("without facility 13 (IPTE-range): every lazy-MMU hook is a no-op".into());
    } else {
        machine.push("with facility 13 (IPTE-range)".to_string());
    }
    machine.push(format!(
        "{} the TLB-local-clearing facility",
        if c.tlb_lc { "with" } else { "without" }
    ));
    for (i, m) in c.mms.iter().enumerate() {
        let cpus: Vec<String> = (0..8)
            .filter(|b| m.attach_mask & (1 << b) != 0)
            .map(|b| format!("cpu{b}"))
            .collect();
        machine.push(format!(
            "mm{i} ({}) attached to {}",
            match m.kind {
                MmKind::User if m.protected => "user, protected",
                MmKind::User => "user",
                MmKind::Init => "init_mm",
            },
            if cpus.is_empty() {
                "no CPU".into()
            } else {
                cpus.join(",")
            }
        ));
    }
    lines.extend(wrap(
        &format!(
            "The rig's machine: {}; {} CPUs. Attach masks decide local or global IPTEs; \
             the returns and memory do not depend on them.",
            machine.join("; "),
            c.cpus
        ),
        90,
        "",
        "",
    ));
    lines.extend_from_slice(extra);
    lines.push(String::new());
    lines.push("The program (.ops):".into());
    lines.extend(to_text(shown).lines().map(|l| format!("  {l}")));
    lines
}

/// The interleaving of a multi-CPU program, one line per step.
fn interleaving(r: &Repro) -> Vec<String> {
    let mut lines = vec![
        String::new(),
        format!(
            "The rig ran this on {} CPUs, interleaved in this order:",
            r.program.config.cpus
        ),
    ];
    for (i, s) in r.program.steps.iter().enumerate() {
        let mark = match r.first() {
            Some(f) if f.step == i => ">>",
            _ => "  ",
        };
        let text = step_to_text(s);
        let op = text.split_once(' ').map_or(text.as_str(), |x| x.1);
        lines.push(format!("{mark} #{i:<3} cpu{}  {op}", s.cpu));
    }
    lines
}

/// The CPU a single KUnit task stands for: the first finding's (or the first step's).
fn task_cpu(r: &Repro) -> u8 {
    r.first()
        .filter(|f| f.step < r.program.steps.len())
        .map(|f| f.cpu)
        .or_else(|| r.program.steps.first().map(|s| s.cpu))
        .unwrap_or(0)
}

fn is_multi_cpu(p: &Program) -> bool {
    p.steps.windows(2).any(|w| w[0].cpu != w[1].cpu)
}

/// A case for the finding `r`, whose test runs `run` (`r` itself or its projection,
/// with the original step numbers in `numbers`).
fn kunit_with(r: &Repro, run: &Repro, numbers: &[usize], name: &str, extra: Vec<String>) -> String {
    let name = c_ident(name);
    let mut out = String::from(KUNIT_INCLUDES);
    out.push('\n');
    let mut header_extra = vec![];
    if is_multi_cpu(&r.program) {
        header_extra.extend(interleaving(r));
    }
    header_extra.extend(extra);
    c_block_comment(&mut out, "", &kunit_header(r, &run.program, &header_extra));
    out.push_str(&kunit_function(run, &name, task_cpu(run), numbers));
    out
}

/// A self-contained KUnit test case for `r`: `static void <name>(struct kunit *test)`
/// that sets up the page tables from the configuration, makes the program's calls in
/// order with the kernel's functions and expects what the eager code returns, and the
/// eager memory at every sync point of the task and at the end. A multi-CPU program is
/// described step by step in a comment and run in the one task (see `kunit_repro` for
/// a checked single-CPU projection).
pub fn kunit(r: &Repro, name: &str) -> String {
    let mut extra = vec![];
    if is_multi_cpu(&r.program) {
        extra.push(String::new());
        extra.extend(wrap(
            &format!(
                "A KUnit test is one task. How the steps of several CPUs are sequenced: \
                 before each step the case calls lazy_mmu_test_cpu(test, N), and the \
                 steps run one after the other in program order. In the rig's userspace \
                 runner (lazymmu kunit-run) that call switches the shim's current CPU, \
                 whose lazy-MMU state, lowcore, preemption and interrupt depth are its \
                 own, so every step runs as its CPU, exactly as the rig ran the program. \
                 In a kernel it does nothing: every CPU's page-table calls run in the \
                 test task with the lazy-MMU state of cpu{}; the other CPUs' lazy-MMU \
                 calls and locks are compiled for the rig only (#ifndef __KERNEL__) and \
                 the hardware steps are glue calls that do nothing there. It keeps the \
                 eager values but need not reproduce a cross-CPU finding in a kernel.",
                task_cpu(r)
            ),
            90,
            "",
            "",
        ));
    }
    let numbers: Vec<usize> = (0..r.program.steps.len()).collect();
    kunit_with(r, r, &numbers, name, extra)
}

/// The program restricted to the steps of the first finding's CPU, if that is a
/// different program.
pub fn projection(r: &Repro) -> Option<Program> {
    if !is_multi_cpu(&r.program) {
        return None;
    }
    let cpu = task_cpu(r);
    let mut p = r.program.clone();
    p.steps.retain(|s| s.cpu == cpu);
    Some(p)
}

/// `kunit`, but for a multi-CPU program the test runs its single-CPU projection (the
/// steps of the first finding's CPU alone) when that program keeps the API contract
/// and, re-run through `differ`, still yields a first finding with the same signature.
pub fn kunit_repro(differ: &mut Executor, r: &Repro, name: &str) -> String {
    let Some(projected) = projection(r) else {
        return kunit(r, name);
    };
    let sig = r.first().map(Finding::signature);
    let cpu = task_cpu(r);
    let why = if !contract::is_realistic(&projected) {
        format!("cpu{cpu}'s steps alone break the API contract")
    } else {
        let pr = Repro::new(differ, projected);
        let psig = pr
            .as_ref()
            .ok()
            .and_then(|pr| pr.first().map(Finding::signature));
        if let (Ok(pr), true) = (&pr, psig.is_some() && psig == sig) {
            let mut extra = vec![String::new()];
            extra.extend(wrap(
                &format!(
                    "The single-CPU projection (cpu{cpu}'s steps alone) reproduces {} on {}: \
                     the test below runs it, with the eager values of that program and the \
                     step numbers above.",
                    sig.unwrap_or_default(),
                    pr.implementation
                ),
                90,
                "",
                "",
            ));
            let numbers: Vec<usize> = r
                .program
                .steps
                .iter()
                .enumerate()
                .filter(|(_, s)| s.cpu == cpu)
                .map(|(i, _)| i)
                .collect();
            return kunit_with(r, pr, &numbers, name, extra);
        }
        match psig {
            Some(s) => format!("cpu{cpu}'s steps alone give {s} instead"),
            None => format!("cpu{cpu}'s steps alone give no finding"),
        }
    };
    let mut out = kunit(r, name);
    let mut note = String::new();
    c_block_comment(
        &mut note,
        "",
        &wrap(
            &format!("No single-CPU projection reproduces this finding: {why}."),
            90,
            "",
            "",
        ),
    );
    let at = out.find("static void ").unwrap_or(out.len());
    out.insert_str(at, &note);
    out
}

/// The name of the test function of a `kunit` case.
fn case_name(case: &str) -> Option<String> {
    case.lines().find_map(|l| {
        let rest = l.strip_prefix("static void ")?;
        let (name, args) = rest.split_once('(')?;
        args.starts_with("struct kunit *test)")
            .then(|| name.trim().to_string())
    })
}

/// A KUnit suite file around `kunit` cases: the includes once, the cases, the
/// `kunit_case` array, the `kunit_suite` and `kunit_test_suite()`.
pub fn kunit_suite(cases: &[String], suite: &str) -> String {
    let ident = c_ident(suite);
    let mut out = String::new();
    out.push_str("// SPDX-License-Identifier: GPL-2.0\n");
    c_block_comment(
        &mut out,
        "",
        &[format!(
            "KUnit reproducers of lazy-MMU findings, exported by the lazymmu rig ({} case{}).",
            cases.len(),
            if cases.len() == 1 { "" } else { "s" }
        )],
    );
    out.push_str(KUNIT_INCLUDES);
    let mut names = vec![];
    for case in cases {
        out.push('\n');
        for l in case.lines().filter(|l| !l.starts_with("#include ")) {
            out.push_str(l);
            out.push('\n');
        }
        names.extend(case_name(case));
    }
    writeln!(out, "\nstatic struct kunit_case {ident}_cases[] = {{").unwrap();
    for n in &names {
        writeln!(out, "\tKUNIT_CASE({n}),").unwrap();
    }
    writeln!(out, "\t{{}}\n}};\n").unwrap();
    writeln!(
        out,
        "static struct kunit_suite {ident} = {{\n\t.name = \"{}\",\n\t.test_cases = {ident}_cases,\n}};\n",
        c_string(suite)
    )
    .unwrap();
    writeln!(out, "kunit_test_suite({ident});\n").unwrap();
    writeln!(
        out,
        "MODULE_DESCRIPTION(\"KUnit reproducers of lazy-MMU findings\");\nMODULE_LICENSE(\"GPL\");"
    )
    .unwrap();
    out
}

// ---------------------------------------------------------------------------------
// JSON.

/// The finding, the implementation and the program (in `.ops` text) and the whole
/// verdict, as pretty-printed JSON. The finding fields are `null` without a finding.
pub fn json(r: &Repro) -> String {
    let f = r.first();
    let v = serde_json::json!({
        "signature": f.map(Finding::signature),
        "class": f.map(|f| f.class.name()),
        "hardening": f.map(|f| f.hardening),
        "step": f.map(|f| f.step),
        "cpu": f.map(|f| f.cpu),
        "op": f.map(|f| f.op.clone()),
        "pte": f.and_then(|f| f.pte).map(|p| p.to_string()),
        "target": f.map(|f| f.target.clone()),
        "oracle": f.map(|f| f.oracle.clone()),
        "detail": f.map(|f| f.detail.clone()),
        "implementation": r.implementation,
        "generation": r.generation,
        "marker": r.marker,
        "program": to_text(&r.program),
        "verdict": r.verdict,
    });
    let mut s = serde_json::to_string_pretty(&v).expect("a verdict serializes");
    s.push('\n');
    s
}

// ---------------------------------------------------------------------------------
// SVG.

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A short label of an op, for a timeline box.
fn short_op(op: &Op) -> &'static str {
    match op {
        Op::Enable => "enable",
        Op::EnableWithPtes { .. } => "enable_ptes",
        Op::Disable => "disable",
        Op::Pause => "pause",
        Op::Resume => "resume",
        Op::IsLazyActive => "active?",
        Op::SetPte { .. } => "set_pte",
        Op::SetPtes { .. } => "set_ptes",
        Op::PteClear { .. } => "pte_clear",
        Op::PtepGet { .. } => "get",
        Op::PtepGetAndClear { .. } => "get_clear",
        Op::PtepGetAndClearFull { .. } => "get_clr_full",
        Op::PtepTestAndClearYoung { .. } => "young",
        Op::ModifyProtStart { .. } => "prot_start",
        Op::ModifyProtCommit { .. } => "prot_commit",
        Op::SetWrprotect { .. } => "wrprotect",
        Op::PtepGetLockless { .. } => "lockless",
        Op::PtepClearFlush { .. } => "clear_flush",
        Op::Access { write: true, .. } => "access w",
        Op::Access { write: false, .. } => "access r",
        Op::FlushTlbRange { .. } => "flush_range",
        Op::FlushTlbMm { .. } => "flush_mm",
        Op::SwitchMm { .. } => "switch_mm",
        Op::IrqEnter => "irq_enter",
        Op::IrqExit => "irq_exit",
        Op::LockPtl { .. } => "lock",
        Op::UnlockPtl { .. } => "unlock",
        Op::CpuOffline => "offline",
        Op::CpuOnline => "online",
    }
}

/// Runs of columns `[a, b)` where `state[col]` holds.
fn runs(state: &[bool]) -> Vec<(usize, usize)> {
    let mut out = vec![];
    let mut start = None;
    for (i, &s) in state.iter().chain(std::iter::once(&false)).enumerate() {
        match (s, start) {
            (true, None) => start = Some(i),
            (false, Some(a)) => {
                out.push((a, i));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// A timeline of the program: one lane per CPU, one box per step in program order
/// (labelled with a short op name), each CPU's lazy-MMU sections shaded (from the
/// oracle's task state), interrupt context marked, and the diverging step in red.
pub fn svg(r: &Repro) -> String {
    const LEFT: usize = 56;
    const TOP: usize = 44;
    const COL: usize = 74;
    const LANE: usize = 46;
    const BOX_H: usize = 24;
    let p = &r.program;
    let n = p.steps.len();
    let cpus = p.config.cpus as usize;
    let cols = n + 1; // one more for the end of the program
    let title = match r.first() {
        Some(f) => format!(
            "{} on {} ({})",
            f.signature(),
            r.implementation,
            r.generation
        ),
        None => format!("no finding on {} ({})", r.implementation, r.generation),
    };
    // Wide enough for the steps, the heading (12px monospace) and the legend.
    let w = (LEFT + cols * COL + 16)
        .max(16 + width(&title) * 15 / 2)
        .max(480);
    let h = TOP + cpus * LANE + 34;
    let x = |col: usize| LEFT + col * COL;
    let lane_y = |cpu: usize| TOP + cpu * LANE;

    let mut s = String::new();
    writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         viewBox=\"0 0 {w} {h}\" font-family=\"monospace\" font-size=\"10\">"
    )
    .unwrap();
    writeln!(s, "<title>{}</title>", xml(&title)).unwrap();
    writeln!(
        s,
        "<rect class=\"background\" x=\"0\" y=\"0\" width=\"{w}\" height=\"{h}\" fill=\"white\"/>"
    )
    .unwrap();
    writeln!(
        s,
        "<text class=\"heading\" x=\"8\" y=\"16\" font-size=\"12\">{}</text>",
        xml(&title)
    )
    .unwrap();

    // Lanes.
    for c in 0..cpus {
        let fill = if c % 2 == 0 { "#f4f4f4" } else { "#eaeaea" };
        writeln!(
            s,
            "<rect class=\"lane\" data-cpu=\"{c}\" x=\"0\" y=\"{}\" width=\"{w}\" height=\"{LANE}\" fill=\"{fill}\"/>",
            lane_y(c)
        )
        .unwrap();
        writeln!(
            s,
            "<text class=\"lane-label\" x=\"6\" y=\"{}\">cpu{c}</text>",
            lane_y(c) + LANE / 2 + 4
        )
        .unwrap();
    }

    // Per CPU, per column: lazy section active, in interrupt context.
    let mut lazy = vec![LazyState::default(); cpus];
    let mut irq = vec![0u32; cpus];
    let mut lazy_cols = vec![vec![false; n]; cpus];
    let mut irq_cols = vec![vec![false; n]; cpus];
    for (i, (st, rec)) in p.steps.iter().zip(&r.oracle.steps).enumerate() {
        let c = st.cpu as usize;
        lazy[c] = rec.lazy;
        if rec.ret != Ret::CpuOffline {
            match st.op {
                Op::IrqEnter => irq[c] += 1,
                Op::IrqExit => irq[c] = irq[c].saturating_sub(1),
                _ => {}
            }
        }
        for d in 0..cpus {
            lazy_cols[d][i] = lazy[d].is_active();
            irq_cols[d][i] = irq[d] > 0 || (d == c && st.op == Op::IrqExit);
        }
    }
    for c in 0..cpus {
        for (a, b) in runs(&lazy_cols[c]) {
            // The section shows from its enabling step through the step that ends it.
            let end = if b < n { x(b) + COL } else { x(n) };
            writeln!(
                s,
                "<rect class=\"lazy\" data-cpu=\"{c}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#cfe0ff\"/>",
                x(a),
                lane_y(c) + 3,
                end - x(a),
                LANE - 6
            )
            .unwrap();
        }
        for (a, b) in runs(&irq_cols[c]) {
            writeln!(
                s,
                "<rect class=\"irq\" data-cpu=\"{c}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"5\" fill=\"#f08c00\"/>",
                x(a),
                lane_y(c) + LANE - 8,
                x(b) - x(a)
            )
            .unwrap();
        }
    }

    // Steps.
    let diverging = r.first().map(|f| f.step);
    for (i, st) in p.steps.iter().enumerate() {
        let c = st.cpu as usize;
        let bx = x(i) + 3;
        let by = lane_y(c) + (LANE - BOX_H) / 2 - 2;
        let (stroke, sw, class) = if diverging == Some(i) {
            ("red", 3, "step diverge")
        } else if matches!(st.op, Op::IrqEnter | Op::IrqExit) {
            ("#f08c00", 2, "step irq-mark")
        } else {
            ("#555555", 1, "step")
        };
        let fill = if r.oracle.steps[i].ret == Ret::CpuOffline {
            "#dddddd"
        } else {
            "white"
        };
        writeln!(s, "<g class=\"{class}\" data-step=\"{i}\">").unwrap();
        writeln!(s, "<title>#{i} {}</title>", xml(&step_to_text(st))).unwrap();
        writeln!(
            s,
            "<rect x=\"{bx}\" y=\"{by}\" width=\"{}\" height=\"{BOX_H}\" rx=\"3\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"{sw}\"/>",
            COL - 6
        )
        .unwrap();
        writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            x(i) + COL / 2,
            by + BOX_H / 2 + 4,
            xml(short_op(&st.op))
        )
        .unwrap();
        writeln!(s, "</g>").unwrap();
        writeln!(
            s,
            "<text class=\"step-number\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#777777\">{i}</text>",
            x(i) + COL / 2,
            TOP + cpus * LANE + 12
        )
        .unwrap();
    }

    // The divergence label (or the end-of-program marker).
    if let Some(f) = r.first() {
        let col = f.step.min(n);
        let cpu = if f.step < n { f.cpu as usize } else { 0 };
        if f.step >= n {
            writeln!(
                s,
                "<rect class=\"diverge-end\" x=\"{}\" y=\"{TOP}\" width=\"3\" height=\"{}\" fill=\"red\"/>",
                x(n) + COL / 2,
                cpus * LANE
            )
            .unwrap();
        }
        let anchor = if col + 1 >= cols / 2 && cols > 2 {
            "end"
        } else {
            "start"
        };
        let lx = if anchor == "end" {
            x(col) + COL
        } else {
            x(col)
        };
        writeln!(
            s,
            "<text class=\"diverge-label\" x=\"{lx}\" y=\"{}\" fill=\"red\" text-anchor=\"{anchor}\">{}</text>",
            if f.step < n { lane_y(cpu) + 9 } else { TOP - 4 },
            xml(&format!(
                "{} {}",
                if f.step < n {
                    format!("step {}:", f.step)
                } else {
                    "end:".to_string()
                },
                f.signature()
            ))
        )
        .unwrap();
    }

    // Legend.
    let ly = TOP + cpus * LANE + 20;
    writeln!(
        s,
        "<rect class=\"legend\" x=\"8\" y=\"{ly}\" width=\"12\" height=\"10\" fill=\"#cfe0ff\"/>"
    )
    .unwrap();
    writeln!(
        s,
        "<text class=\"legend\" x=\"24\" y=\"{}\">lazy-MMU section (oracle)</text>",
        ly + 9
    )
    .unwrap();
    writeln!(
        s,
        "<rect class=\"legend\" x=\"200\" y=\"{}\" width=\"12\" height=\"5\" fill=\"#f08c00\"/>",
        ly + 3
    )
    .unwrap();
    writeln!(
        s,
        "<text class=\"legend\" x=\"216\" y=\"{}\">interrupt context</text>",
        ly + 9
    )
    .unwrap();
    writeln!(
        s,
        "<rect class=\"legend\" x=\"340\" y=\"{ly}\" width=\"12\" height=\"10\" fill=\"white\" stroke=\"red\" stroke-width=\"2\"/>"
    )
    .unwrap();
    writeln!(
        s,
        "<text class=\"legend\" x=\"356\" y=\"{}\">first divergence</text>",
        ly + 9
    )
    .unwrap();
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_keeps_width_and_words() {
        let t = "a ".repeat(100) + &"x".repeat(200);
        for l in wrap(&t, 72, "  class: ", "         ") {
            assert!(width(&l) <= 72, "{l}");
        }
        let joined: String = wrap("one two three", 8, "", "").join("|");
        assert_eq!(joined, "one two|three");
    }

    #[test]
    fn abbreviations_fit() {
        assert_eq!(abbrev("abcdefghij", 7), "ab...ij");
        assert_eq!(truncate("abcdefghij", 7), "abcd...");
        assert_eq!(strip_aside("0x1a03d (pfn 0x1a valid)"), "0x1a03d");
        assert_eq!(
            strip_aside("(cpu offline: not run)"),
            "(cpu offline: not run)"
        );
    }
}
