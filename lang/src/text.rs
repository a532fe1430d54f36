//! The `.ops` text format: readable in a mail, parsed back exactly.
//!
//! ```text
//! # comments run from '#' to the end of the line
//! lazymmu-ops v1 cpus=2 facility13=on tlb_lc=off mode=realistic
//! mm0 user attach=0,1 tables=1
//! mm1 init_mm attach=0,1 tables=1 protected
//! init mm0 t0[5] = 0x1a03d
//! cpu0 lock_ptl mm0 t0
//! cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..16]
//! cpu0 ptep_get_and_clear mm0 t0[5]
//! cpu0 lazy_mmu_mode_disable
//! ```
//! The first line is the header (format version and machine-wide settings), then one
//! line per mm, then the initial PTE values (entries not listed start as none, 0x400),
//! then one step per line: the CPU, the kernel function, its arguments.

use std::fmt::Write as _;

use crate::program::*;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line and column of the offending token.
    pub line: usize,
    pub col: usize,
    pub msg: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.msg)
    }
}

impl std::error::Error for ParseError {}

/// Renders a program; `parse(&to_text(p)) == Ok(p)` for every valid program.
pub fn to_text(p: &Program) -> String {
    let c = &p.config;
    let mut s = String::new();
    let on = |b: bool| if b { "on" } else { "off" };
    let mode = match c.mode {
        Mode::Realistic => "realistic",
        Mode::Adversarial => "adversarial",
    };
    writeln!(
        s,
        "lazymmu-ops v{} cpus={} facility13={} tlb_lc={} mode={}",
        p.format_version,
        c.cpus,
        on(c.facility13),
        on(c.tlb_lc),
        mode
    )
    .unwrap();
    for (i, mm) in c.mms.iter().enumerate() {
        let kind = match mm.kind {
            MmKind::User => "user",
            MmKind::Init => "init_mm",
        };
        let attach: Vec<String> = (0..8)
            .filter(|b| mm.attach_mask & (1 << b) != 0)
            .map(|b| b.to_string())
            .collect();
        let attach = if attach.is_empty() {
            "none".to_string()
        } else {
            attach.join(",")
        };
        write!(s, "mm{i} {kind} attach={attach} tables={}", mm.tables).unwrap();
        if mm.protected {
            s.push_str(" protected");
        }
        s.push('\n');
    }
    for i in &c.init {
        writeln!(s, "init {} = {:#x}", i.pte, i.value).unwrap();
    }
    for step in &p.steps {
        writeln!(s, "{}", step_to_text(step)).unwrap();
    }
    s
}

fn range_text(r: &PteRange) -> String {
    format!("mm{} t{}[{}..{}]", r.mm, r.table, r.start, r.end)
}

/// One step as a line of the text format (no newline).
pub fn step_to_text(step: &Step) -> String {
    let mut s = format!("cpu{} {}", step.cpu, step.op.name());
    let op = &step.op;
    match *op {
        Op::EnableWithPtes { range, ptep } => {
            write!(s, " {}", range_text(&range)).unwrap();
            if ptep != range.first() {
                write!(s, " ptep=t{}[{}]", ptep.table, ptep.index).unwrap();
                if ptep.mm != range.mm {
                    write!(s, "@mm{}", ptep.mm).unwrap();
                }
            }
        }
        Op::SetPte { pte, value } | Op::ModifyProtCommit { pte, value } => {
            write!(s, " {pte} = {value:#x}").unwrap()
        }
        Op::SetPtes { pte, value, n } => write!(s, " {pte} n={n} = {value:#x}").unwrap(),
        Op::PtepGetAndClearFull { pte, full } => write!(s, " {pte} full={}", full as u8).unwrap(),
        Op::Access { pte, write } => {
            write!(s, " {pte} {}", if write { "write" } else { "read" }).unwrap()
        }
        Op::FlushTlbRange { range } => write!(s, " {}", range_text(&range)).unwrap(),
        Op::FlushTlbMm { mm } => write!(s, " mm{mm}").unwrap(),
        Op::SwitchMm { mm } => match mm {
            Some(mm) => write!(s, " mm{mm}").unwrap(),
            None => s.push_str(" none"),
        },
        Op::LockPtl { mm, table } | Op::UnlockPtl { mm, table } => {
            write!(s, " mm{mm} t{table}").unwrap()
        }
        _ => {
            if let Some(pte) = op.pte() {
                write!(s, " {pte}").unwrap()
            }
        }
    }
    s
}

/// The 1-based line number of every step of a program's source, in step order.
pub fn step_lines(src: &str) -> Vec<usize> {
    src.lines()
        .enumerate()
        .filter(|(_, l)| {
            tokenize(l)
                .first()
                .is_some_and(|t| t.text.starts_with("cpu"))
        })
        .map(|(i, _)| i + 1)
        .collect()
}

struct Tok<'a> {
    text: &'a str,
    col: usize,
}

/// The tokens of one line (comment stripped), with their 1-based columns.
fn tokenize(line: &str) -> Vec<Tok<'_>> {
    let line = match line.find('#') {
        Some(i) => &line[..i],
        None => line,
    };
    let mut out = vec![];
    let mut start = None;
    for (i, ch) in line.char_indices() {
        if ch.is_whitespace() {
            if let Some(s) = start.take() {
                out.push(Tok {
                    text: &line[s..i],
                    col: s + 1,
                });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push(Tok {
            text: &line[s..],
            col: s + 1,
        });
    }
    out
}

struct Line<'a> {
    no: usize,
    toks: Vec<Tok<'a>>,
    pos: usize,
    /// Column just past the last token, for "found end of line".
    end_col: usize,
}

impl<'a> Line<'a> {
    fn err(&self, col: usize, msg: String) -> ParseError {
        ParseError {
            line: self.no,
            col,
            msg,
        }
    }
    fn expected(&self, what: &str) -> ParseError {
        match self.toks.get(self.pos) {
            Some(t) => self.err(t.col, format!("expected {what}, found '{}'", t.text)),
            None => self.err(self.end_col, format!("expected {what}, found end of line")),
        }
    }
    fn next(&mut self, what: &str) -> Result<&'a str, ParseError> {
        match self.toks.get(self.pos) {
            Some(t) => {
                self.pos += 1;
                Ok(t.text)
            }
            None => Err(self.expected(what)),
        }
    }
    fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.pos).map(|t| t.text)
    }
    /// Runs `f` on the next token; on failure the error points at that token.
    fn parse<T>(&mut self, what: &str, f: impl FnOnce(&str) -> Option<T>) -> Result<T, ParseError> {
        let t = self.peek().ok_or_else(|| self.expected(what))?;
        match f(t) {
            Some(v) => {
                self.pos += 1;
                Ok(v)
            }
            None => Err(self.expected(what)),
        }
    }
    fn keyword(&mut self, kw: &str) -> Result<(), ParseError> {
        self.parse(&format!("'{kw}'"), |t| (t == kw).then_some(()))
    }
    fn done(&self) -> Result<(), ParseError> {
        if self.pos < self.toks.len() {
            Err(self.expected("end of line"))
        } else {
            Ok(())
        }
    }
    fn col(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end_col, |t| t.col)
    }
}

fn num<T: TryFrom<u64>>(t: &str) -> Option<T> {
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()?
    } else {
        t.parse::<u64>().ok()?
    };
    T::try_from(v).ok()
}

fn prefixed<T: TryFrom<u64>>(t: &str, prefix: &str) -> Option<T> {
    t.strip_prefix(prefix).and_then(num)
}

fn kv<'t>(t: &'t str, key: &str) -> Option<&'t str> {
    t.strip_prefix(key)?.strip_prefix('=')
}

fn on_off(v: &str) -> Option<bool> {
    match v {
        "on" | "1" | "yes" => Some(true),
        "off" | "0" | "no" => Some(false),
        _ => None,
    }
}

/// `t3[17]` -> (3, 17); `t3[4..12]` -> (3, 4, Some(12)).
fn table_index(t: &str) -> Option<(u8, u16, Option<u16>)> {
    let rest = t.strip_prefix('t')?;
    let (table, rest) = rest.split_once('[')?;
    let inner = rest.strip_suffix(']')?;
    let table = num(table)?;
    match inner.split_once("..") {
        Some((a, b)) => Some((table, num(a)?, Some(num(b)?))),
        None => Some((table, num(inner)?, None)),
    }
}

impl Line<'_> {
    fn mm(&mut self) -> Result<u8, ParseError> {
        self.parse("an mm like 'mm0'", |t| prefixed(t, "mm"))
    }
    fn pte(&mut self) -> Result<PteRef, ParseError> {
        let mm = self.mm()?;
        self.parse("a PTE like 't0[5]'", |t| match table_index(t)? {
            (table, index, None) => Some(PteRef { mm, table, index }),
            _ => None,
        })
    }
    fn range(&mut self) -> Result<PteRange, ParseError> {
        let mm = self.mm()?;
        self.parse("a range like 't0[4..12]'", |t| match table_index(t)? {
            (table, start, Some(end)) => Some(PteRange {
                mm,
                table,
                start,
                end,
            }),
            _ => None,
        })
    }
    fn table(&mut self) -> Result<(u8, u8), ParseError> {
        let mm = self.mm()?;
        let t = self.parse("a table like 't0'", |t| prefixed(t, "t"))?;
        Ok((mm, t))
    }
    fn value(&mut self) -> Result<u64, ParseError> {
        self.keyword("=")?;
        self.parse("a PTE value like '0x1a03d'", num)
    }
}

/// Parses a program. Errors name the line and column and what was expected there.
pub fn parse(src: &str) -> Result<Program, ParseError> {
    let mut lines = src.lines().enumerate().filter_map(|(i, l)| {
        let toks = tokenize(l);
        let end_col = toks.last().map_or(1, |t| t.col + t.text.len());
        (!toks.is_empty()).then_some(Line {
            no: i + 1,
            toks,
            pos: 0,
            end_col,
        })
    });
    let mut header = lines.next().ok_or(ParseError {
        line: 1,
        col: 1,
        msg: "expected a header line 'lazymmu-ops v1 ...', found an empty file".into(),
    })?;
    let mut config = MachineConfig {
        mms: vec![],
        ..MachineConfig::default()
    };
    header.keyword("lazymmu-ops")?;
    let version = header.parse("a format version like 'v1'", |t| prefixed::<u32>(t, "v"))?;
    if version != FORMAT_VERSION {
        return Err(header.err(
            header.toks[1].col,
            format!(
                "format version v{version} is not supported (this build reads v{FORMAT_VERSION})"
            ),
        ));
    }
    while header.peek().is_some() {
        if let Ok(v) = header.parse("", |t| kv(t, "cpus").and_then(num::<u8>)) {
            config.cpus = v;
        } else if let Ok(v) = header.parse("", |t| kv(t, "facility13").and_then(on_off)) {
            config.facility13 = v;
        } else if let Ok(v) = header.parse("", |t| kv(t, "tlb_lc").and_then(on_off)) {
            config.tlb_lc = v;
        } else if let Ok(v) = header.parse("", |t| match kv(t, "mode")? {
            "realistic" => Some(Mode::Realistic),
            "adversarial" => Some(Mode::Adversarial),
            _ => None,
        }) {
            config.mode = v;
        } else {
            return Err(header.expected(
                "a setting: cpus=N, facility13=on|off, tlb_lc=on|off, mode=realistic|adversarial",
            ));
        }
    }
    let mut steps = vec![];
    let mut program_ready = None::<Program>;
    for mut l in lines {
        let first = l.peek().unwrap_or_default();
        if first.starts_with("cpu") {
            let prog = match &mut program_ready {
                Some(p) => p,
                None => {
                    let p = Program::new(config.clone(), vec![]);
                    p.config
                        .validate()
                        .map_err(|e| l.err(1, format!("bad machine configuration: {e}")))?;
                    program_ready.insert(p)
                }
            };
            let step = parse_step(&mut l)?;
            prog.validate_step(&step).map_err(|e| l.err(1, e))?;
            steps.push(step);
        } else if program_ready.is_some() {
            return Err(l.expected("a step 'cpuN ...' (configuration lines come before the steps)"));
        } else if first == "init" {
            l.pos += 1;
            let pte = l.pte()?;
            let value = l.value()?;
            l.done()?;
            if !config.has_pte(pte) {
                return Err(l.err(l.toks[1].col, format!("{pte} is not in any declared table")));
            }
            config.init.push(InitPte { pte, value });
        } else if first.starts_with("mm") {
            let mm: u8 = l.mm()?;
            if mm as usize != config.mms.len() {
                return Err(l.err(
                    1,
                    format!(
                        "expected mm{} next (mms are declared in order), found 'mm{mm}'",
                        config.mms.len()
                    ),
                ));
            }
            let kind = l.parse("'user' or 'init_mm'", |t| match t {
                "user" => Some(MmKind::User),
                "init_mm" => Some(MmKind::Init),
                _ => None,
            })?;
            let attach_col = l.col();
            let attach = l.parse("attach=CPU,CPU,... or attach=none", |t| {
                let v = kv(t, "attach")?;
                if v == "none" {
                    return Some(0u8);
                }
                v.split(',').try_fold(0u8, |m, c| {
                    let cpu = num::<u32>(c).filter(|&c| c < 8)?;
                    Some(m | 1 << cpu)
                })
            })?;
            let tables = l.parse("tables=N", |t| kv(t, "tables").and_then(num::<u8>))?;
            let protected = l.peek() == Some("protected");
            if protected {
                l.pos += 1;
            }
            l.done()?;
            if (attach as u16) >> config.cpus.min(8) != 0 {
                return Err(l.err(
                    attach_col,
                    format!("attach names a cpu beyond cpus={}", config.cpus),
                ));
            }
            config.mms.push(MmConfig {
                kind,
                protected,
                attach_mask: attach,
                tables,
            });
        } else {
            return Err(l.expected("'mmN', 'init' or a step 'cpuN ...'"));
        }
    }
    config.init.sort_by_key(|i| i.pte);
    let p = Program::new(config, steps);
    p.config.validate().map_err(|e| ParseError {
        line: 1,
        col: 1,
        msg: format!("bad machine configuration: {e}"),
    })?;
    Ok(p)
}

fn parse_step(l: &mut Line<'_>) -> Result<Step, ParseError> {
    let cpu = l.parse("a CPU like 'cpu0'", |t| prefixed(t, "cpu"))?;
    let name_col = l.col();
    let name = l.next("a kernel function name")?;
    let op = match name {
        "lazy_mmu_mode_enable" => Op::Enable,
        "lazy_mmu_mode_enable_with_ptes" => {
            let range = l.range()?;
            let mut ptep = range.first();
            if let Some(t) = l.peek() {
                if let Some(v) = kv(t, "ptep") {
                    let (spec, mm) = match v.split_once('@') {
                        Some((s, m)) => (s, prefixed(m, "mm")),
                        None => (v, Some(range.mm)),
                    };
                    match (table_index(spec), mm) {
                        (Some((table, index, None)), Some(mm)) => ptep = PteRef { mm, table, index },
                        _ => return Err(l.expected("ptep=tN[I] or ptep=tN[I]@mmM")),
                    }
                    l.pos += 1;
                }
            }
            Op::EnableWithPtes { range, ptep }
        }
        "lazy_mmu_mode_disable" => Op::Disable,
        "lazy_mmu_mode_pause" => Op::Pause,
        "lazy_mmu_mode_resume" => Op::Resume,
        "is_lazy_mmu_mode_active" => Op::IsLazyActive,
        "set_pte" => {
            let pte = l.pte()?;
            Op::SetPte { pte, value: l.value()? }
        }
        "set_ptes" => {
            let pte = l.pte()?;
            let n = l.parse("n=COUNT", |t| kv(t, "n").and_then(num))?;
            Op::SetPtes { pte, value: l.value()?, n }
        }
        "pte_clear" => Op::PteClear { pte: l.pte()? },
        "ptep_get" => Op::PtepGet { pte: l.pte()? },
        "ptep_get_and_clear" => Op::PtepGetAndClear { pte: l.pte()? },
        "ptep_get_and_clear_full" => {
            let pte = l.pte()?;
            let full = l.parse("full=0 or full=1", |t| kv(t, "full").and_then(on_off))?;
            Op::PtepGetAndClearFull { pte, full }
        }
        "ptep_test_and_clear_young" => Op::PtepTestAndClearYoung { pte: l.pte()? },
        "ptep_modify_prot_start" => Op::ModifyProtStart { pte: l.pte()? },
        "ptep_modify_prot_commit" => {
            let pte = l.pte()?;
            Op::ModifyProtCommit { pte, value: l.value()? }
        }
        "ptep_set_wrprotect" => Op::SetWrprotect { pte: l.pte()? },
        "ptep_get_lockless" => Op::PtepGetLockless { pte: l.pte()? },
        "ptep_clear_flush" => Op::PtepClearFlush { pte: l.pte()? },
        "access" => {
            let pte = l.pte()?;
            let write = l.parse("'read' or 'write'", |t| match t {
                "read" => Some(false),
                "write" => Some(true),
                _ => None,
            })?;
            Op::Access { pte, write }
        }
        "flush_tlb_range" => Op::FlushTlbRange { range: l.range()? },
        "flush_tlb_mm" => Op::FlushTlbMm { mm: l.mm()? },
        "switch_mm" => {
            if l.peek() == Some("none") {
                l.pos += 1;
                Op::SwitchMm { mm: None }
            } else {
                Op::SwitchMm { mm: Some(l.parse("an mm like 'mm0' or 'none'", |t| prefixed(t, "mm"))?) }
            }
        }
        "irq_enter" => Op::IrqEnter,
        "irq_exit" => Op::IrqExit,
        "lock_ptl" => {
            let (mm, table) = l.table()?;
            Op::LockPtl { mm, table }
        }
        "unlock_ptl" => {
            let (mm, table) = l.table()?;
            Op::UnlockPtl { mm, table }
        }
        "cpu_offline" => Op::CpuOffline,
        "cpu_online" => Op::CpuOnline,
        other => {
            return Err(l.err(
                name_col,
                format!("expected a kernel function (e.g. set_pte, ptep_get, lazy_mmu_mode_enable), found '{other}'"),
            ))
        }
    };
    l.done()?;
    Ok(Step { cpu, op })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# a comment
lazymmu-ops v1 cpus=2 facility13=on tlb_lc=off mode=realistic
mm0 user attach=0,1 tables=2   # two CPUs run it
mm1 init_mm attach=0,1 tables=1 protected
init mm0 t0[5] = 0x1a03d
init mm0 t1[0] = 0x2b215
cpu0 lock_ptl mm0 t0
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..16]
cpu0 lazy_mmu_mode_enable_with_ptes mm0 t0[0..16] ptep=t1[3]
cpu0 set_ptes mm0 t0[8] n=4 = 0x1a03d
cpu1 access mm0 t0[5] write
cpu0 ptep_get_and_clear_full mm0 t0[5] full=1
cpu0 switch_mm none
cpu0 flush_tlb_range mm0 t0[0..16]
";

    #[test]
    fn parses_and_round_trips() {
        let p = parse(SAMPLE).unwrap();
        assert_eq!(p.config.cpus, 2);
        assert!(!p.config.tlb_lc);
        assert_eq!(p.config.mms[0].attach_mask, 0b11);
        assert!(p.config.mms[1].protected);
        assert_eq!(p.config.init.len(), 2);
        assert_eq!(p.steps.len(), 8);
        assert_eq!(
            p.steps[2].op,
            Op::EnableWithPtes {
                range: PteRange {
                    mm: 0,
                    table: 0,
                    start: 0,
                    end: 16
                },
                ptep: PteRef::new(0, 1, 3)
            }
        );
        assert_eq!(parse(&to_text(&p)).unwrap(), p);
    }

    fn err(src: &str) -> ParseError {
        parse(src).unwrap_err()
    }

    #[test]
    fn errors_name_line_column_and_expectation() {
        let base = "lazymmu-ops v1 cpus=1\nmm0 user attach=0 tables=1\n";
        let e = err(&format!("{base}cpu0 set_pte mm0 t0[5] 0x3d\n"));
        assert_eq!((e.line, e.col), (3, 24));
        assert!(
            e.msg.contains("expected '='") && e.msg.contains("found '0x3d'"),
            "{e}"
        );

        let e = err(&format!("{base}cpu0 ptep_get mm0\n"));
        assert_eq!((e.line, e.col), (3, 18));
        assert!(e.msg.contains("found end of line"), "{e}");

        let e = err(&format!("{base}cpu0 set_pty mm0 t0[5]\n"));
        assert_eq!((e.line, e.col), (3, 6));
        assert!(e.msg.contains("found 'set_pty'"), "{e}");

        let e = err(&format!("{base}\ncpu3 ptep_get mm0 t0[1]\n"));
        assert_eq!(e.line, 4);
        assert!(e.msg.contains("cpu3 does not exist"), "{e}");

        let e = err(&format!("{base}cpu0 ptep_get mm0 t1[1]\n"));
        assert!(e.msg.contains("mm0 t1[1] does not exist"), "{e}");

        let e = err("lazymmu-ops v2 cpus=1\n");
        assert!(e.msg.contains("v2 is not supported"), "{e}");

        let e = err("lazymmu-ops v1 cpus=1 colour=blue\n");
        assert_eq!((e.line, e.col), (1, 23));

        let e = err(&format!(
            "{base}cpu0 ptep_get mm0 t0[1]\nmm1 user attach=0 tables=1\n"
        ));
        assert_eq!(e.line, 4);
        assert!(e.msg.contains("configuration lines come before"), "{e}");
    }
}
