//! Crash-proof execution: the implementation under test runs in a disposable executor
//! process, never in the process that holds the engine's state.
//!
//! The model is AFL++'s fork server and libFuzzer's `-fork`: the supervisor (the process
//! that owns the corpus, features and statistics) has the compiled implementation loaded
//! but never calls it; it is the ready zygote. An executor is a `fork()` of it, so it
//! starts in milliseconds with the implementation mapped at the same addresses and its
//! state pristine. Programs go to the executor in batches over a pipe; one result per
//! program comes back over another. A page of shared memory tells the supervisor where
//! the executor was (program, step, CPU, page-table addresses) and, when it dies, how
//! (signal, fault address, the faulting PC and the call chain, recorded by a signal
//! handler in the executor). When the executor dies or overruns the per-program timeout,
//! the supervisor turns that into a `CrashReport`, starts a fresh executor and goes on with
//! the rest of the batch.
//!
//! Executors die with their supervisor (`PR_SET_PDEATHSIG`), and they are replaced after a
//! bounded number of programs, so the history kept for the state-leak check stays small.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use lazymmu_harness::check::{self, Class, Finding, Verdict};
use lazymmu_harness::contract;
use lazymmu_lang::program::{Op, Program};
use lazymmu_model::exec::{Kernel, Ret, Trace};
use lazymmu_model::machine::Machine;
use serde::{Deserialize, Serialize};

use crate::symbolize::{site_in, Frame, Symbolizer};
use lazymmu_harness::Differ;

const MAX_FRAMES: usize = 64;
const MAX_BASES: usize = 64;
const MAX_ALLOCS: usize = 16;
const PANIC_BYTES: usize = 2048;
const IDLE: u32 = u32::MAX;

/// The page shared between a supervisor and its executors. Written by the executor (and
/// its signal handler, hence atomics only), read by the supervisor after a death.
#[repr(C)]
struct Shared {
    /// Index in the current batch of the program running; `IDLE` between batches.
    program: AtomicU32,
    step: AtomicU32,
    cpu: AtomicU32,
    /// 0 until a fatal signal arrived.
    signal: AtomicI32,
    fault_addr: AtomicUsize,
    pc: AtomicUsize,
    nframes: AtomicU32,
    frames: [AtomicUsize; MAX_FRAMES],
    /// The target machine's page tables: (mm, table, host address of entry 0).
    nbases: AtomicU32,
    bases: [AtomicUsize; 3 * MAX_BASES],
    /// The shim's live kzalloc() objects at the fault: (start, size).
    nallocs: AtomicU32,
    allocs: [AtomicUsize; 2 * MAX_ALLOCS],
    /// A panic of the rig's own code in the executor (a rig bug).
    panic_len: AtomicU32,
    panic: [AtomicU32; PANIC_BYTES / 4],
}

impl Shared {
    fn reset(&self) {
        self.program.store(IDLE, Relaxed);
        self.step.store(IDLE, Relaxed);
        self.cpu.store(0, Relaxed);
        self.signal.store(0, Relaxed);
        self.fault_addr.store(0, Relaxed);
        self.pc.store(0, Relaxed);
        self.nframes.store(0, Relaxed);
        self.nbases.store(0, Relaxed);
        self.nallocs.store(0, Relaxed);
        self.panic_len.store(0, Relaxed);
    }

    fn panic_message(&self) -> Option<String> {
        let n = (self.panic_len.load(Relaxed) as usize).min(PANIC_BYTES);
        if n == 0 {
            return None;
        }
        let bytes: Vec<u8> = self
            .panic
            .iter()
            .flat_map(|w| w.load(Relaxed).to_ne_bytes())
            .take(n)
            .collect();
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn set_panic(&self, msg: &str) {
        let bytes = msg.as_bytes();
        let n = bytes.len().min(PANIC_BYTES);
        for (i, chunk) in bytes[..n].chunks(4).enumerate() {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            self.panic[i].store(u32::from_ne_bytes(w), Relaxed);
        }
        self.panic_len.store(n as u32, Relaxed);
    }
}

/// The executor's shared page, for its signal handler.
static SHARED: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());
/// The implementation's `lazymmu_shim_allocations`, for its signal handler.
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

extern "C" {
    // glibc's unwinder-based backtrace; warmed up before any program runs, because its
    // first call loads libgcc_s.
    fn backtrace(buffer: *mut *mut libc::c_void, size: libc::c_int) -> libc::c_int;
}

#[cfg(target_arch = "x86_64")]
unsafe fn faulting_pc(uc: *mut libc::c_void) -> usize {
    (*(uc as *const libc::ucontext_t)).uc_mcontext.gregs[libc::REG_RIP as usize] as usize
}
#[cfg(target_arch = "aarch64")]
unsafe fn faulting_pc(uc: *mut libc::c_void) -> usize {
    (*(uc as *const libc::ucontext_t)).uc_mcontext.pc as usize
}
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
unsafe fn faulting_pc(_uc: *mut libc::c_void) -> usize {
    0
}

/// Records where and how the executor dies, then lets it die of the same signal.
/// SIGUSR1 is the supervisor asking a hung executor where it is: record, then exit.
extern "C" fn on_fatal_signal(sig: libc::c_int, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    let s = SHARED.load(Relaxed);
    // SAFETY: the shared page stays mapped for the executor's whole life; the handler only
    // does atomic stores and async-signal-tolerable calls.
    unsafe {
        if !s.is_null() && (*s).signal.load(Relaxed) == 0 {
            let s = &*s;
            // A raised signal (abort) has no fault address.
            if (*info).si_code > 0 {
                s.fault_addr.store((*info).si_addr() as usize, Relaxed);
            }
            s.pc.store(faulting_pc(uc), Relaxed);
            let mut buf = [std::ptr::null_mut::<libc::c_void>(); MAX_FRAMES];
            let n = backtrace(buf.as_mut_ptr(), MAX_FRAMES as libc::c_int).max(0) as usize;
            for (slot, pc) in s.frames.iter().zip(&buf[..n]) {
                slot.store(*pc as usize, Relaxed);
            }
            s.nframes.store(n as u32, Relaxed);
            let f = ALLOCATIONS.load(Relaxed);
            if f != 0 {
                let f: lazymmu_target::library::AllocationsFn = std::mem::transmute(f);
                let (mut start, mut size) = ([0usize; MAX_ALLOCS], [0usize; MAX_ALLOCS]);
                let n = f(
                    start.as_mut_ptr(),
                    size.as_mut_ptr(),
                    MAX_ALLOCS as libc::c_int,
                )
                .clamp(0, MAX_ALLOCS as libc::c_int) as usize;
                for i in 0..n {
                    s.allocs[2 * i].store(start[i], Relaxed);
                    s.allocs[2 * i + 1].store(size[i], Relaxed);
                }
                s.nallocs.store(n as u32, Relaxed);
            }
            s.signal.store(sig, Relaxed);
        }
        if sig == libc::SIGUSR1 {
            libc::_exit(HANG_EXIT);
        }
        // SA_RESETHAND put the default action back: a fault re-executes and kills us; a
        // raised signal (abort) needs raising again.
        if (*info).si_code <= 0 {
            libc::raise(sig);
        }
    }
}

const HANG_EXIT: i32 = 124;
/// How long a fresh executor may take to start its first program.
const STARTUP_GRACE: Duration = Duration::from_secs(10);
const FATAL_SIGNALS: [libc::c_int; 6] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
    libc::SIGTRAP,
];

/// What the supervisor asks an executor to do with a batch.
#[derive(Deserialize)]
struct Request {
    programs: Vec<Program>,
    /// Also render the target's trace (for a finding's report).
    want_trace: bool,
}

/// The same request, borrowed, as the supervisor writes it (same encoding).
#[derive(Serialize)]
struct RequestRef<'a> {
    programs: &'a [Program],
    want_trace: bool,
}

/// One program's result, as the executor sends it back.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub verdict: Verdict,
    /// The target's trace, when asked for (reports, replay, exports).
    pub target: Option<Trace>,
    /// What the C code did, when the implementation is the c-coverage flavour.
    pub c: Option<CFeedback>,
}

/// One program's coverage of the implementation (the c-coverage flavour): what the
/// built-in engine learns from besides the model features.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CFeedback {
    /// Edges taken: map index * 8 + hit-count bucket (AFL's: 1, 2, 3, 4-7, 8-15, 16-31,
    /// 32-127, 128+), in the order the program first took them.
    pub edges: Vec<u32>,
    /// Constants of the code it compared against (a constant comparison's constant, a
    /// switch's cases), then the operands it computed (the rest); each sorted, without
    /// repeats, trivial values or host addresses (`dict::interesting`).
    pub constants: Vec<u64>,
    pub operands: Vec<u64>,
}

impl CFeedback {
    pub fn of(cov: &lazymmu_target::ffi::CovState) -> CFeedback {
        use lazymmu_target::ffi::COV_CONST;
        let bucket = |n: u8| match n {
            1 => 0,
            2 => 1,
            3 => 2,
            4..=7 => 3,
            8..=15 => 4,
            16..=31 => 5,
            32..=127 => 6,
            _ => 7,
        };
        let edges = cov
            .edges()
            .map(|(i, n)| (i * 8 + bucket(n)) as u32)
            .collect();
        let (mut constants, mut operands) = (vec![], vec![]);
        for c in cov.comparisons() {
            let keep = |v: u64| crate::dict::interesting(v, c.size).then_some(v);
            if c.flags & COV_CONST != 0 {
                constants.extend(keep(c.arg1));
            } else {
                operands.extend(keep(c.arg1));
            }
            operands.extend(keep(c.arg2));
        }
        for v in [&mut constants, &mut operands] {
            v.sort_unstable();
            v.dedup();
        }
        operands.retain(|v| constants.binary_search(v).is_err());
        CFeedback {
            edges,
            constants,
            operands,
        }
    }
}

/// How an executor ended a program it did not finish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeathKind {
    /// Killed by a signal (SIGSEGV, SIGABRT, ...).
    Signal(i32),
    /// Did not finish within the per-program timeout.
    Hang { timeout_ms: u64 },
    /// Exited on its own (a sanitizer's exit code, say).
    Exit(i32),
    /// The rig's own code panicked in the executor.
    RigPanic(String),
}

/// A crash or hang, with everything a report needs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CrashReport {
    pub kind: DeathKind,
    /// The step running, its CPU and its kernel function.
    pub step: Option<usize>,
    pub cpu: Option<u8>,
    pub op: Option<String>,
    pub fault_addr: Option<usize>,
    /// The fault address as a kernel person reads it (`mm0 t0 + 0x808 (1 entry past
    /// the end)`, `NULL + 0x10`).
    pub fault_explained: Option<String>,
    /// Symbolized frames, innermost first.
    pub frames: Vec<Frame>,
    /// The function of the top frame inside the implementation file, if any.
    pub site: Option<String>,
    /// The last lines the executor wrote to stderr (a sanitizer report).
    pub stderr: String,
}

pub fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGTRAP => "SIGTRAP".into(),
        libc::SIGKILL => "SIGKILL".into(),
        n => format!("signal {n}"),
    }
}

impl CrashReport {
    pub fn class(&self) -> Class {
        match self.kind {
            DeathKind::Hang { .. } => Class::Hang,
            DeathKind::RigPanic(_) => Class::RigBug,
            _ => Class::Crash,
        }
    }

    /// What the signature names: the crash site in the implementation (or the best
    /// frame there is), the op of a hang.
    pub fn site_name(&self) -> String {
        match &self.kind {
            DeathKind::Hang { .. } => self.op.clone().unwrap_or_else(|| "run".into()),
            DeathKind::RigPanic(_) => "executor".into(),
            _ => self
                .site
                .clone()
                .or_else(|| {
                    self.frames
                        .iter()
                        .find(|f| f.function != "??")
                        .map(|f| f.function.clone())
                })
                .unwrap_or_else(|| "unknown".into()),
        }
    }

    /// One line: `SIGSEGV in range_apply at NULL + 0x18`.
    pub fn headline(&self) -> String {
        match &self.kind {
            DeathKind::Signal(s) => {
                // A sanitizer names the bug better than the abort that followed it.
                let what = self
                    .stderr
                    .lines()
                    .find_map(|l| l.split("ERROR: ").nth(1))
                    .and_then(|e| e.split(" on address").next())
                    .map_or_else(|| signal_name(*s), str::to_string);
                let mut h = format!("{what} in {}", self.site_name());
                if let Some(a) = &self.fault_explained {
                    h.push_str(&format!(" accessing {a}"));
                }
                h
            }
            DeathKind::Hang { timeout_ms } => format!(
                "hang: {} did not return within {timeout_ms} ms",
                self.op.as_deref().unwrap_or("the program")
            ),
            DeathKind::Exit(c) => {
                format!("executor exited with status {c} in {}", self.site_name())
            }
            DeathKind::RigPanic(m) => format!("rig bug: the rig's own code panicked: {m}"),
        }
    }

    /// The report body, syzbot style: what, where, the call trace, stderr.
    pub fn render(&self) -> String {
        let mut s = format!("{}\n", self.headline());
        if let (Some(addr), Some(e)) = (self.fault_addr, &self.fault_explained) {
            if e.starts_with("0x") {
                s.push_str(&format!("fault address: {e}\n"));
            } else {
                s.push_str(&format!("fault address: {addr:#x} ({e})\n"));
            }
        }
        match (self.step, self.cpu, &self.op) {
            (Some(step), Some(cpu), op) => s.push_str(&format!(
                "running: step {step} (cpu{cpu} {})\n",
                op.as_deref().unwrap_or("?")
            )),
            (None, _, Some(_)) => {
                s.push_str("running: the program's start (every CPU coming online)\n")
            }
            _ => {}
        }
        if !self.frames.is_empty() {
            s.push_str("Call trace:\n");
            for f in &self.frames {
                s.push_str(&format!("  {}\n", f.render()));
            }
        }
        if !self.stderr.is_empty() {
            s.push_str("stderr:\n");
            for l in self.stderr.lines() {
                s.push_str(&format!("  {l}\n"));
            }
        }
        s
    }

    /// The finding for `program`: class crash, hang or rig-bug, with the site in the
    /// signature (`lazymmu-crash-range_apply`, `lazymmu-hang-lazy_mmu_mode_disable`).
    pub fn verdict(&self, program: &Program) -> Verdict {
        let contract = contract::violations(program);
        let step = self.step.unwrap_or(program.steps.len());
        let class = self.class();
        Verdict {
            findings: vec![Finding {
                class,
                // A rig bug is never the implementation's hardening or bug.
                hardening: class != Class::RigBug && !contract.is_empty(),
                step,
                cpu: self.cpu.unwrap_or(0),
                op: self.site_name(),
                pte: program.steps.get(step).and_then(|s| s.op.pte()),
                target: self.headline(),
                oracle: "returns".into(),
                detail: self.render(),
            }],
            hazards: vec![],
            features: vec![check::feature(&[8, class as u64])],
            contract,
        }
    }
}

/// What happened to one program of a batch.
#[derive(Clone, Debug)]
pub enum Outcome {
    Ran(Box<RunResult>),
    /// The program killed its executor; with the programs that executor ran before it,
    /// oldest first (what to replay if the crash does not reproduce alone).
    Died(Box<CrashReport>, Vec<Program>),
}

impl Outcome {
    /// The verdict, whether the program ran or killed its executor.
    pub fn verdict(&self, p: &Program) -> Verdict {
        match self {
            Outcome::Ran(r) => r.verdict.clone(),
            Outcome::Died(c, _) => c.verdict(p),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ExecOptions {
    /// A program that runs longer is a hang.
    pub timeout: Duration,
    /// Programs per executor before it is replaced (bounds the leak-check history).
    pub recycle_after: usize,
    /// Programs per request.
    pub batch: usize,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            timeout: Duration::from_millis(1000),
            recycle_after: 5000,
            batch: 64,
        }
    }
}

/// Counters of the execution layer.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ExecStats {
    pub executors_started: u64,
    pub deaths: u64,
    pub hangs: u64,
    /// Microseconds spent starting executors.
    pub spawn_us: u64,
}

struct Child {
    pid: libc::pid_t,
    req: File,
    resp: File,
    stderr: File,
    ran: usize,
}

/// A supervisor's handle on its executors for one implementation.
pub struct Executor {
    differ: Differ,
    opts: ExecOptions,
    shared: *mut Shared,
    child: Option<Child>,
    /// Programs the current executor has run, oldest first: replayed when a crash does
    /// not reproduce alone (state leaked between programs).
    history: Vec<Program>,
    symbolizer: Symbolizer,
    /// Base name of the implementation file (`lazy_mmu.c`), to find the crash site.
    impl_file: String,
    pub stats: ExecStats,
}

impl Drop for Executor {
    fn drop(&mut self) {
        self.kill_child();
        // SAFETY: our own mapping, no executor uses it any more.
        unsafe {
            libc::munmap(
                self.shared as *mut libc::c_void,
                std::mem::size_of::<Shared>(),
            )
        };
    }
}

fn pipe() -> std::io::Result<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: a two-element array for pipe2.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fresh descriptors we own.
    Ok(unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) })
}

fn write_frame(w: &mut File, body: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(body.len() + 4);
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)
}

fn read_frame(r: &mut File) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_le_bytes(len) as usize];
    r.read_exact(&mut body)?;
    Ok(body)
}

/// Waits until `f` is readable or `timeout` passes; true if readable (or hung up).
fn poll_readable(f: &File, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        return r > 0;
    }
}

/// The target kernel, telling the shared page where it is: the step, its CPU and the
/// page tables of the machine it runs on.
struct Watched<'a> {
    kernel: &'a mut dyn Kernel,
    shared: &'a Shared,
}

impl Kernel for Watched<'_> {
    fn name(&self) -> String {
        self.kernel.name()
    }
    fn start(&mut self, m: &mut Machine) {
        let mut n = 0;
        for (mm, t) in m
            .mms
            .iter()
            .enumerate()
            .flat_map(|(i, mm)| (0..mm.tables.len()).map(move |t| (i, t)))
        {
            if n == MAX_BASES {
                break;
            }
            let base = m.mms[mm].tables[t].entries.as_ptr() as usize;
            self.shared.bases[3 * n].store(mm, Relaxed);
            self.shared.bases[3 * n + 1].store(t, Relaxed);
            self.shared.bases[3 * n + 2].store(base, Relaxed);
            n += 1;
        }
        self.shared.nbases.store(n as u32, Relaxed);
        self.shared.step.store(IDLE, Relaxed);
        self.kernel.start(m)
    }
    fn op(&mut self, m: &mut Machine, cpu: u8, op: &Op) -> Ret {
        let (step, _) = m.current_step();
        self.shared.step.store(step as u32, Relaxed);
        self.shared.cpu.store(cpu as u32, Relaxed);
        self.kernel.op(m, cpu, op)
    }
    fn finish(&mut self, m: &mut Machine) {
        self.kernel.finish(m)
    }
}

/// Runs one program in the executor: target (watched), oracle, checks.
fn run_watched(differ: &mut Differ, shared: &Shared, p: &Program, want_trace: bool) -> RunResult {
    let marker = differ.marker;
    let target = lazymmu_model::run(
        p,
        &mut Watched {
            kernel: &mut differ.kernel,
            shared,
        },
    );
    // Read before anything else runs C code: the next program's start resets it.
    let c = differ.kernel.library().coverage().map(CFeedback::of);
    let oracle = lazymmu_oracle::run(p);
    let verdict = check::check(p, &target, &oracle, marker);
    RunResult {
        target: want_trace.then_some(target),
        verdict,
        c,
    }
}

impl Executor {
    pub fn new(differ: Differ, opts: ExecOptions) -> std::io::Result<Executor> {
        // SAFETY: an anonymous shared mapping, sized for `Shared` (all zero = valid atomics).
        let shared = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Shared>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if shared == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // glibc loads its unwinder on the first backtrace(): do it here, once, so that
        // no executor pays for it.
        let mut buf = [std::ptr::null_mut::<libc::c_void>(); 4];
        // SAFETY: a buffer of four frames.
        unsafe { backtrace(buf.as_mut_ptr(), 4) };
        let impl_file = differ.kernel.library().source_file.clone();
        Ok(Executor {
            differ,
            opts,
            shared: shared as *mut Shared,
            child: None,
            history: vec![],
            symbolizer: Symbolizer::new(),
            impl_file,
            stats: ExecStats::default(),
        })
    }

    pub fn name(&self) -> String {
        self.differ.name()
    }

    pub fn differ(&self) -> &Differ {
        &self.differ
    }

    /// Whether its programs' results carry the implementation's coverage (`RunResult::c`).
    pub fn c_coverage(&self) -> bool {
        self.differ.kernel.library().coverage().is_some()
    }

    pub fn options(&self) -> &ExecOptions {
        &self.opts
    }

    /// Changes the per-program timeout from the next program on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.opts.timeout = timeout;
    }

    fn shared(&self) -> &Shared {
        // SAFETY: mapped for our whole life.
        unsafe { &*self.shared }
    }

    /// Programs the current executor has run since it started.
    pub fn history(&self) -> &[Program] {
        &self.history
    }

    fn kill_child(&mut self) {
        if let Some(c) = self.child.take() {
            // SAFETY: our own child.
            unsafe {
                libc::kill(c.pid, libc::SIGKILL);
                libc::waitpid(c.pid, std::ptr::null_mut(), 0);
            }
        }
        self.history.clear();
    }

    /// Forks a fresh executor from this process (the zygote).
    fn spawn(&mut self) -> std::io::Result<()> {
        let t0 = Instant::now();
        self.kill_child();
        self.shared().reset();
        let (req_r, req_w) = pipe()?;
        let (resp_r, resp_w) = pipe()?;
        // The executor's stderr: a memory file the supervisor reads after a death (a
        // pipe could fill up and stall the executor).
        // SAFETY: plain syscall with a static name.
        let errfd =
            unsafe { libc::memfd_create(c"lazymmu-executor-stderr".as_ptr(), libc::MFD_CLOEXEC) };
        if errfd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a descriptor we own.
        let stderr = unsafe { File::from_raw_fd(errfd) };
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the supervisor is single-threaded where it forks executors; the child
        // runs only the executor loop and leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if pid == 0 {
            drop(req_w);
            drop(resp_r);
            // SAFETY: fd plumbing in the child.
            unsafe { libc::dup2(errfd, 2) };
            let shared = self.shared;
            executor_main(&mut self.differ, shared, req_r, resp_w, parent);
        }
        drop(req_r);
        drop(resp_w);
        self.child = Some(Child {
            pid,
            req: req_w,
            resp: resp_r,
            stderr,
            ran: 0,
        });
        self.stats.executors_started += 1;
        self.stats.spawn_us += t0.elapsed().as_micros() as u64;
        Ok(())
    }

    /// Runs `programs` in order; returns one outcome per program run. Stops early (with
    /// fewer outcomes) when `deadline` passes. A crash or hang costs the executor, which
    /// is replaced; the batch goes on in the new one.
    pub fn run_batch(
        &mut self,
        programs: &[Program],
        want_trace: bool,
        deadline: Option<Instant>,
    ) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(programs.len());
        let mut next = 0;
        while next < programs.len() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if self
                .child
                .as_ref()
                .is_none_or(|c| c.ran >= self.opts.recycle_after)
                && self.spawn().is_err()
            {
                // Cannot fork: report it as the rig's failure for this program.
                let r = self.rig_failure("cannot start an executor");
                out.push(Outcome::Died(Box::new(r), vec![]));
                next += 1;
                continue;
            }
            let room = self.opts.recycle_after - self.child.as_ref().map_or(0, |c| c.ran);
            let end = programs.len().min(next + self.opts.batch.min(room).max(1));
            let chunk = &programs[next..end];
            let req = RequestRef {
                programs: chunk,
                want_trace,
            };
            let body = bincode::serialize(&req).expect("programs serialize");
            let sent = write_frame(&mut self.child.as_mut().unwrap().req, &body).is_ok();
            let mut done = 0;
            let mut died = !sent;
            while !died && done < chunk.len() {
                let waiting_since = Instant::now();
                let mut cut_by_deadline = false;
                let ready = loop {
                    let mut wait = self.opts.timeout;
                    if let Some(d) = deadline {
                        let left = d.saturating_duration_since(Instant::now());
                        if left < wait {
                            wait = left;
                            cut_by_deadline = true;
                        }
                    }
                    if poll_readable(&self.child.as_ref().unwrap().resp, wait) {
                        break true;
                    }
                    // Not started yet (a fresh executor on a loaded machine): the
                    // timeout is for the program, not for the executor's start.
                    let started = self.shared().program.load(Relaxed) == done as u32;
                    if cut_by_deadline || started || waiting_since.elapsed() > STARTUP_GRACE {
                        break false;
                    }
                };
                if !ready {
                    if cut_by_deadline {
                        // Out of time: the program in flight is not a finding.
                        self.kill_child();
                        return out;
                    }
                    let report = self.hang(chunk);
                    out.push(Outcome::Died(
                        Box::new(report),
                        std::mem::take(&mut self.history),
                    ));
                    self.stats.hangs += 1;
                    done += 1;
                    died = true;
                    break;
                }
                let child = self.child.as_mut().unwrap();
                match read_frame(&mut child.resp)
                    .ok()
                    .and_then(|b| bincode::deserialize::<RunResult>(&b).ok())
                {
                    Some(r) => {
                        child.ran += 1;
                        self.history.push(chunk[done].clone());
                        out.push(Outcome::Ran(Box::new(r)));
                        done += 1;
                    }
                    None => {
                        let report = self.death(chunk);
                        out.push(Outcome::Died(
                            Box::new(report),
                            std::mem::take(&mut self.history),
                        ));
                        self.stats.deaths += 1;
                        done += 1;
                        died = true;
                    }
                }
            }
            if died && sent {
                // The child is gone (reaped in death/hang); its history goes with it.
                self.child = None;
            } else if died {
                // The request could not even be sent: the executor died between batches.
                let report = self.death(chunk);
                out.push(Outcome::Died(
                    Box::new(report),
                    std::mem::take(&mut self.history),
                ));
                self.stats.deaths += 1;
                self.child = None;
                done = 1;
            }
            next += done;
        }
        out
    }

    /// One program, crash-proof.
    pub fn run_one(&mut self, p: &Program, want_trace: bool) -> Outcome {
        self.run_batch(std::slice::from_ref(p), want_trace, None)
            .pop()
            .expect("no deadline: the program ran")
    }

    /// The verdict of one program: a crash or hang is a finding like any other.
    pub fn verdict(&mut self, p: &Program) -> Verdict {
        self.run_one(p, false).verdict(p)
    }

    /// Runs `p` in a fresh executor, as the first program of its life.
    pub fn run_alone(&mut self, p: &Program, want_trace: bool) -> Outcome {
        self.kill_child();
        self.run_one(p, want_trace)
    }

    fn rig_failure(&self, what: &str) -> CrashReport {
        CrashReport {
            kind: DeathKind::RigPanic(what.into()),
            step: None,
            cpu: None,
            op: None,
            fault_addr: None,
            fault_explained: None,
            frames: vec![],
            site: None,
            stderr: String::new(),
        }
    }

    /// The executor overran the timeout: ask it where it is, then kill it.
    fn hang(&mut self, chunk: &[Program]) -> CrashReport {
        let c = self.child.take().expect("a running executor");
        // SAFETY: our own child; SIGUSR1 makes its handler record the stack and exit.
        unsafe { libc::kill(c.pid, libc::SIGUSR1) };
        let t0 = Instant::now();
        let mut status = 0;
        loop {
            // SAFETY: our own child.
            let r = unsafe { libc::waitpid(c.pid, &mut status, libc::WNOHANG) };
            if r == c.pid {
                break;
            }
            if t0.elapsed() > Duration::from_millis(200) {
                // SAFETY: our own child.
                unsafe {
                    libc::kill(c.pid, libc::SIGKILL);
                    libc::waitpid(c.pid, &mut status, 0);
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let mut r = self.report_from_shared(
            chunk,
            DeathKind::Hang {
                timeout_ms: self.opts.timeout.as_millis() as u64,
            },
            c.stderr,
        );
        // A hang's site is where it spun (the signal handler saw SIGUSR1, not a fault).
        r.fault_addr = None;
        r.fault_explained = None;
        r
    }

    /// The executor died: reap it and say how.
    fn death(&mut self, chunk: &[Program]) -> CrashReport {
        let c = self.child.take().expect("a running executor");
        let mut status = 0;
        // SAFETY: our own child; its pipe hung up, so it is dead or dying.
        unsafe { libc::waitpid(c.pid, &mut status, 0) };
        let kind = if libc::WIFSIGNALED(status) {
            DeathKind::Signal(libc::WTERMSIG(status))
        } else {
            DeathKind::Exit(libc::WEXITSTATUS(status))
        };
        let kind = match self.shared().panic_message() {
            Some(m) => DeathKind::RigPanic(m),
            None => kind,
        };
        self.report_from_shared(chunk, kind, c.stderr)
    }

    fn report_from_shared(
        &mut self,
        chunk: &[Program],
        kind: DeathKind,
        mut stderr: File,
    ) -> CrashReport {
        let s = self.shared();
        let index = s.program.load(Relaxed) as usize;
        let program = chunk.get(index);
        let step = s.step.load(Relaxed);
        let step = (step != IDLE).then_some(step as usize);
        let cpu = step.map(|_| s.cpu.load(Relaxed) as u8);
        let op = match step {
            Some(i) => program
                .and_then(|p| p.steps.get(i))
                .map(|st| st.op.name().to_string()),
            // Before the first step: the CPUs coming online (lazy_mmu_online_cpu).
            None if program.is_some() => Some("cpu_online".into()),
            None => None,
        };
        let signal = s.signal.load(Relaxed);
        let fault_addr =
            matches!(signal, libc::SIGSEGV | libc::SIGBUS).then(|| s.fault_addr.load(Relaxed));
        let allocs: Vec<(usize, usize)> = (0..s.nallocs.load(Relaxed) as usize)
            .map(|i| {
                (
                    s.allocs[2 * i].load(Relaxed),
                    s.allocs[2 * i + 1].load(Relaxed),
                )
            })
            .collect();
        let bases: Vec<(u8, u8, usize)> = (0..s.nbases.load(Relaxed) as usize)
            .map(|i| {
                (
                    s.bases[3 * i].load(Relaxed) as u8,
                    s.bases[3 * i + 1].load(Relaxed) as u8,
                    s.bases[3 * i + 2].load(Relaxed),
                )
            })
            .collect();
        let mut pcs: Vec<usize> = (0..s.nframes.load(Relaxed) as usize)
            .map(|i| s.frames[i].load(Relaxed))
            .collect();
        let pc = s.pc.load(Relaxed);
        // The unwinder reports the interrupted PC exactly as the frame after the signal
        // trampoline: drop the handler's own frames.
        if let Some(i) = pcs.iter().position(|&f| f == pc) {
            pcs.drain(..i);
        } else if pc != 0 {
            pcs.insert(0, pc);
        }
        let mut frames = trim_frames(self.symbolizer.symbolize(&pcs));
        let site = site_in(&frames, &self.impl_file).cloned();
        // Frames of abort() and a sanitizer's report come first: start at the
        // implementation's object.
        if let Some(site) = &site {
            if let Some(i) = frames.iter().position(|f| f.module == site.module) {
                frames.drain(..i);
            }
        }
        let site = site.map(|f| f.function);
        let mut err = String::new();
        let _ = std::io::Seek::seek(&mut stderr, std::io::SeekFrom::Start(0));
        let _ = stderr.read_to_string(&mut err);
        let stderr = stderr_excerpt(&err);
        CrashReport {
            kind,
            step,
            cpu,
            op,
            fault_explained: fault_addr.map(|a| explain_address(a, &bases, &allocs)),
            fault_addr,
            frames,
            site,
            stderr,
        }
    }
}

/// What a report keeps of an executor's stderr: a sanitizer's report up to its shadow
/// map, or the last lines; build-cache paths shortened to the file names.
fn stderr_excerpt(err: &str) -> String {
    let lines: Vec<&str> = match err.find("==ERROR:") {
        Some(i) => {
            let start = err[..i].rfind('\n').map_or(0, |n| n + 1);
            err[start..]
                .lines()
                .take_while(|l| !l.contains("Shadow bytes around"))
                .take(60)
                .collect()
        }
        None => {
            let all: Vec<&str> = err.lines().collect();
            all[all.len().saturating_sub(40)..].to_vec()
        }
    };
    let cache = lazymmu_target::loader::cache_dir().display().to_string();
    lines
        .iter()
        .map(|l| {
            let mut l = l.to_string();
            while let Some(i) = l.find(&cache) {
                // <cache>/<build dir>/x.c -> x.c
                let rest = &l[i + cache.len()..];
                let skip = rest
                    .trim_start_matches('/')
                    .find('/')
                    .map_or(rest.len(), |j| j + 2);
                l.replace_range(i..i + cache.len() + skip, "");
            }
            l
        })
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

/// Keeps the frames a reader needs: from the fault up to the rig's entry into the C code.
fn trim_frames(frames: Vec<Frame>) -> Vec<Frame> {
    let mut out = vec![];
    for f in frames {
        let stop = f.function.contains("lazymmu_target::kernel") || f.function.contains("Watched");
        if stop && !out.is_empty() {
            break;
        }
        out.push(f);
        if out.len() == 24 {
            break;
        }
    }
    out
}

/// Explains a host address against the machine's page tables and the shim's kzalloc()
/// objects (`(start, size)`; each ends against a guard page).
pub fn explain_address(
    addr: usize,
    bases: &[(u8, u8, usize)],
    allocs: &[(usize, usize)],
) -> String {
    for &(start, size) in allocs {
        let end = start + size;
        if (start..end).contains(&addr) {
            return format!("{size}-byte kzalloc() object + {:#x}", addr - start);
        }
        if (end..end + 4096).contains(&addr) {
            return format!(
                "{} bytes past the end of a {size}-byte kzalloc() object",
                addr - end
            );
        }
    }
    lazymmu_model::guarded::explain_address(addr, bases)
}

/// The executor's life: set up, then serve batches until the supervisor hangs up.
fn executor_main(
    differ: &mut Differ,
    shared: *mut Shared,
    mut req: File,
    mut resp: File,
    parent: libc::pid_t,
) -> ! {
    // SAFETY: process setup in the fresh child; every call is checked or harmless.
    unsafe {
        // Die with the supervisor, even if it was killed with SIGKILL.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        // The handler runs on its own stack: a stack overflow in C must be reported too.
        let stack_size = 256 * 1024;
        let stack = libc::mmap(
            std::ptr::null_mut(),
            stack_size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if stack != libc::MAP_FAILED {
            let ss = libc::stack_t {
                ss_sp: stack,
                ss_flags: 0,
                ss_size: stack_size,
            };
            libc::sigaltstack(&ss, std::ptr::null_mut());
        }
        SHARED.store(shared, Relaxed);
        ALLOCATIONS.store(differ.kernel.library().allocations as usize, Relaxed);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_fatal_signal as *const () as usize;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESETHAND | libc::SA_NODEFER;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in FATAL_SIGNALS.iter().chain(&[libc::SIGUSR1]) {
            libc::sigaction(*sig, &sa, std::ptr::null_mut());
        }
    }
    // A panic of the rig's own code: record it for the supervisor, then abort.
    std::panic::set_hook(Box::new(|info| {
        let s = SHARED.load(Relaxed);
        if !s.is_null() {
            // SAFETY: the shared page is mapped.
            unsafe { (*s).set_panic(&info.to_string()) };
        }
    }));
    // SAFETY: mapped by the supervisor before the fork, for the executor's whole life.
    let s = unsafe { &*shared };
    loop {
        let Ok(frame) = read_frame(&mut req) else {
            // SAFETY: leaving without the supervisor's destructors.
            unsafe { libc::_exit(0) };
        };
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let r: Request = bincode::deserialize(&frame).expect("a request from the supervisor");
            for (i, p) in r.programs.iter().enumerate() {
                s.program.store(i as u32, Relaxed);
                let res = run_watched(differ, s, p, r.want_trace);
                let body = bincode::serialize(&res).expect("results serialize");
                if write_frame(&mut resp, &body).is_err() {
                    // SAFETY: the supervisor hung up; nothing left to do.
                    unsafe { libc::_exit(0) };
                }
            }
            s.program.store(IDLE, Relaxed);
        }));
        if result.is_err() {
            std::process::abort();
        }
    }
}
