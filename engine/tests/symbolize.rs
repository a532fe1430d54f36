//! The symbolizer on a C object compiled and dlopen'ed like an implementation under test,
//! on the test binary itself, and on addresses in no object.

use std::ffi::{c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lazymmu_engine::symbolize::{site_in, Frame, Symbolizer};

const FIXTURE: &str = "fixture.c";

fn fixture_source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/symbolize/fixture.c")
}

/// The 1-based line of the fixture that carries `marker`.
fn line_of(marker: &str) -> u32 {
    let text = std::fs::read_to_string(fixture_source()).unwrap();
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(marker))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(hits.len(), 1, "marker {marker}");
    hits[0] as u32
}

struct Loaded {
    so: PathBuf,
    handle: usize,
}

/// The fixture compiled (with `flags`) into `name` and dlopen'ed (never closed:
/// symbolizing needs it mapped).
fn compile_and_load(name: &str, flags: &[&str]) -> Loaded {
    let dir = std::env::temp_dir().join(format!("lazymmu-symbolize-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let so = dir.join(name);
    let status = Command::new("gcc")
        .args(flags)
        .args(["-fPIC", "-shared", "-o"])
        .arg(&so)
        .arg(fixture_source())
        .status()
        .expect("gcc");
    assert!(status.success());
    let path = CString::new(so.to_str().unwrap()).unwrap();
    // SAFETY: the fixture has no constructors.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!handle.is_null(), "dlopen {}", so.display());
    Loaded {
        so,
        handle: handle as usize,
    }
}

/// The fixture compiled like an implementation, loaded once for all tests.
fn loaded() -> &'static Loaded {
    static LOADED: OnceLock<Loaded> = OnceLock::new();
    LOADED.get_or_init(|| compile_and_load("fixture.so", &["-g", "-O1"]))
}

fn sym_in(lib: &Loaded, name: &str) -> usize {
    let name = CString::new(name).unwrap();
    // SAFETY: a live handle from dlopen.
    let p = unsafe { libc::dlsym(lib.handle as *mut c_void, name.as_ptr()) };
    assert!(!p.is_null());
    p as usize
}

fn sym(name: &str) -> usize {
    sym_in(loaded(), name)
}

fn base(path: &str) -> &str {
    Path::new(path).file_name().unwrap().to_str().unwrap()
}

#[test]
fn dlopened_object_with_inlining() {
    let entry = sym("fixture_outer");
    // SAFETY: the fixture's `void *fixture_outer(int)`.
    let outer: extern "C" fn(i32) -> *mut c_void = unsafe { std::mem::transmute(entry) };
    let ra = outer(1) as usize;
    assert_ne!(ra, 0);

    let mut s = Symbolizer::new();
    let frames = s.symbolize(&[entry, ra]);
    let so = std::fs::canonicalize(&loaded().so).unwrap();
    for f in &frames {
        assert_eq!(Path::new(&f.module), so, "{f:?}");
        assert_eq!(base(&f.file), FIXTURE, "{f:?}");
    }
    let got: Vec<(usize, &str, u32, bool)> = frames
        .iter()
        .map(|f| (f.pc, f.function.as_str(), f.line, f.inlined))
        .collect();
    assert_eq!(
        got,
        vec![
            (entry, "fixture_outer", line_of("MARK_ENTRY"), false),
            // The return address is looked up at ra-1: the call, inside the inlined
            // static function, then the line in its caller it was inlined at.
            (ra, "fixture_inner", line_of("MARK_INNER"), false),
            (ra, "fixture_outer", line_of("MARK_OUTER"), true),
        ]
    );

    let rendered: Vec<String> = frames.iter().map(Frame::render).collect();
    assert_eq!(
        rendered[0],
        format!("fixture_outer+0x0 fixture.c:{}", line_of("MARK_ENTRY"))
    );
    assert_eq!(
        rendered[1],
        format!("fixture_inner fixture.c:{}", line_of("MARK_INNER"))
    );
    assert_eq!(
        rendered[2],
        format!(
            "fixture_outer fixture.c:{} (inlined)",
            line_of("MARK_OUTER")
        )
    );

    // Served from the cache the second time, with the same result.
    assert_eq!(s.symbolize(&[entry, ra]), frames);
}

#[inline(never)]
fn symbolize_me_in_the_test_binary(x: u64) -> u64 {
    std::hint::black_box(x).wrapping_mul(3)
}

#[test]
fn address_in_the_test_binary() {
    let f: fn(u64) -> u64 = symbolize_me_in_the_test_binary;
    assert_eq!(f(2), 6);
    let frames = Symbolizer::new().symbolize(&[f as usize]);
    // Inlined callees (black_box) may come first; the outermost frame is the function.
    let frame = frames.last().unwrap();
    assert!(!frames[0].inlined);
    assert!(frames[1..].iter().all(|f| f.inlined));
    assert!(
        frame.function.contains("symbolize_me_in_the_test_binary"),
        "{frame:?}"
    );
    assert!(!frame.function.contains("_ZN"), "demangled: {frame:?}");
    assert_eq!(base(&frame.file), "symbolize.rs", "{frame:?}");
    let exe = std::fs::read_link("/proc/self/exe").unwrap();
    assert_eq!(Path::new(&frame.module), exe);
}

#[test]
fn address_in_no_object() {
    let heap = Box::new([0u8; 64]);
    let frames = Symbolizer::new().symbolize(&[0x10, heap.as_ptr() as usize]);
    assert_eq!(frames.len(), 2);
    for f in &frames {
        assert_eq!(f.function, "??");
        assert_eq!(f.module, "");
        assert_eq!(f.file, "");
    }
    assert_eq!(frames[0].render(), "?? at 0x10");
}

#[test]
fn site_in_skips_other_files() {
    let frame = |function: &str, file: &str, line: u32| Frame {
        pc: 0x1000,
        module: "/tmp/impl.so".to_string(),
        function: function.to_string(),
        file: file.to_string(),
        line,
        inlined: false,
    };
    let frames = vec![
        frame("??", "", 0),
        frame("memcpy", "/usr/src/glibc/string/memcpy.c", 10),
        frame("pte_store", "/src/shim/shim.c", 20),
        frame("range_apply", "/src/mm/lazy_mmu.c", 142),
        frame("flush", "/src/mm/lazy_mmu.c", 200),
    ];
    let site = site_in(&frames, "lazy_mmu.c").unwrap();
    assert_eq!((site.function.as_str(), site.line), ("range_apply", 142));
    assert_eq!(site_in(&frames, "shim.c").unwrap().function, "pte_store");
    // A base name, not a suffix.
    assert!(site_in(&frames, "mmu.c").is_none());
    assert!(site_in(&frames, "ipte_batch.c").is_none());
}

#[test]
fn real_crash_site_in_the_fixture() {
    let entry = sym("fixture_outer");
    // SAFETY: as above.
    let outer: extern "C" fn(i32) -> *mut c_void = unsafe { std::mem::transmute(entry) };
    let ra = outer(5) as usize;
    // A backtrace whose innermost frames are in the test binary, like a crash in the rig's
    // shim called from the implementation.
    let here = symbolize_me_in_the_test_binary as fn(u64) -> u64 as usize;
    let frames = Symbolizer::new().symbolize(&[here, ra]);
    let site = site_in(&frames, FIXTURE).unwrap();
    assert_eq!(site.function, "fixture_inner");
    assert_eq!(site.line, line_of("MARK_INNER"));
    assert_eq!(site.pc, ra);
}

#[test]
fn object_without_debug_info_falls_back_to_the_symbol_table() {
    let lib = compile_and_load("fixture_nodebug.so", &["-O1"]);
    let entry = sym_in(&lib, "fixture_outer");
    let frames = Symbolizer::new().symbolize(&[entry + 1]);
    assert_eq!(frames.len(), 1, "{frames:?}");
    let f = &frames[0];
    assert_eq!(
        (f.function.as_str(), f.file.as_str()),
        ("fixture_outer", "")
    );
    assert_eq!(f.render(), "fixture_outer+0x1 in fixture_nodebug.so");
}
