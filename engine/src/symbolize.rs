//! Turns the code addresses of a crashed executor (faulting PC and backtrace) into
//! readable frames: function and file:line in the implementation, from DWARF debug info.
//!
//! The executor is forked after the implementation was loaded, so its code addresses are
//! valid in this process too: each address is mapped to its object with `dladdr` here and
//! then resolved by binutils' `addr2line` (one process per object per call).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{c_void, CStr};
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// One source-level frame of a backtrace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub pc: usize,
    /// Path of the object the address lies in (the impl.so, or the rig binary for a
    /// statically linked implementation).
    pub module: String,
    /// Function name (demangled for Rust), "??" when unknown.
    pub function: String,
    /// Source file as recorded in the debug info (full path), "" when unknown.
    pub file: String,
    pub line: u32,
    /// True for the caller frames that `addr2line -i` reports for an inlined call chain
    /// (all but the innermost frame of one address are "inlined into" ones).
    pub inlined: bool,
}

/// Offsets of symbolized PCs into their ELF symbol, keyed by (module, pc): `render` shows
/// `function+0x..` like a kernel report without `Frame` having to carry it.
static SYMBOL_OFFSETS: Mutex<BTreeMap<(String, usize), (String, usize)>> =
    Mutex::new(BTreeMap::new());

impl Frame {
    fn unknown(pc: usize, module: String) -> Frame {
        Frame {
            pc,
            module,
            function: "??".to_string(),
            file: String::new(),
            line: 0,
            inlined: false,
        }
    }

    /// `range_apply+0x1c lazy_mmu.c:142`, `range_apply lazy_mmu.c:142 (inlined)`, or
    /// `?? in impl.so` when the source is unknown.
    pub fn render(&self) -> String {
        let mut s = self.function.clone();
        if !self.inlined {
            let offsets = SYMBOL_OFFSETS.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((sym, off)) = offsets.get(&(self.module.clone(), self.pc)) {
                // Only the frame that is the symbol itself, not a function inlined into it.
                if *sym == self.function {
                    s.push_str(&format!("+{off:#x}"));
                }
            }
        }
        if !self.file.is_empty() {
            s.push(' ');
            s.push_str(base_name(&self.file));
            if self.line != 0 {
                s.push_str(&format!(":{}", self.line));
            }
        } else if !self.module.is_empty() {
            s.push_str(" in ");
            s.push_str(base_name(&self.module));
        } else {
            s.push_str(&format!(" at {:#x}", self.pc));
        }
        if self.inlined {
            s.push_str(" (inlined)");
        }
        s
    }
}

/// The first frame (innermost first) whose source file has the given base name (e.g.
/// "lazy_mmu.c"): the crash site in the implementation file.
pub fn site_in<'a>(frames: &'a [Frame], file_name: &str) -> Option<&'a Frame> {
    frames
        .iter()
        .find(|f| !f.file.is_empty() && base_name(&f.file) == file_name)
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Source info of one address, without the pc (shared by every pc of the cache entry).
#[derive(Debug, Clone)]
struct SourceFrame {
    function: String,
    file: String,
    line: u32,
    inlined: bool,
}

/// A function symbol of a module's symbol table.
#[derive(Debug, Clone)]
struct Symbol {
    start: usize,
    size: usize,
    name: String,
}

/// Where a pc lies: its object and the address to look up in that object's ELF file.
#[derive(Clone)]
struct Location {
    module: String,
    /// `pc - load bias`: the ELF virtual address (equals `pc - dli_fbase` for shared
    /// objects and PIE executables).
    offset: usize,
    /// The dynamic symbol `dladdr` found, a fallback when the file has no symbol table.
    dyn_symbol: Option<(usize, String)>,
}

/// Symbolizes addresses of this process, caching results by (module, offset).
#[derive(Default)]
pub struct Symbolizer {
    cache: HashMap<(String, usize), Vec<SourceFrame>>,
    /// Sorted function symbols per module (`nm`), for offsets and for objects without DWARF.
    symbols: HashMap<String, Vec<Symbol>>,
    /// `locate` by looked-up address: a campaign sees the same crash site many times.
    located: HashMap<usize, Option<Location>>,
}

impl Symbolizer {
    pub fn new() -> Symbolizer {
        Symbolizer::default()
    }

    /// `pcs[0]` is the exact faulting instruction; the others are return addresses (looked
    /// up at pc-1 so the line is the call's). Each address may expand to several frames
    /// (inlining), innermost first. Addresses in no loaded object give a frame with
    /// function "??" and module "".
    pub fn symbolize(&mut self, pcs: &[usize]) -> Vec<Frame> {
        let lookups: Vec<Option<Location>> = pcs
            .iter()
            .enumerate()
            // A return address may lie just past its function (a call to a noreturn
            // function at the end), so even the object is looked up at pc-1.
            .map(|(i, &pc)| {
                let at = pc.wrapping_sub(back(i));
                self.located.entry(at).or_insert_with(|| locate(at)).clone()
            })
            .collect();

        // One addr2line per module for all addresses not cached yet.
        let mut missing: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for l in lookups.iter().flatten() {
            if !self.cache.contains_key(&(l.module.clone(), l.offset)) {
                let v = missing.entry(&l.module).or_default();
                if !v.contains(&l.offset) {
                    v.push(l.offset);
                }
            }
        }
        for (module, offsets) in missing {
            let resolved = addr2line(module, &offsets);
            for (offset, frames) in offsets.into_iter().zip(resolved) {
                self.cache.insert((module.to_string(), offset), frames);
            }
        }

        let mut out = Vec::new();
        for (i, (&pc, l)) in pcs.iter().zip(&lookups).enumerate() {
            let Some(l) = l else {
                out.push(Frame::unknown(pc, String::new()));
                continue;
            };
            let symbol = self.symbol_at(&l.module, l.offset).or_else(|| {
                let (start, name) = l.dyn_symbol.clone()?;
                Some(Symbol {
                    start,
                    size: 0,
                    name,
                })
            });
            if let Some(sym) = &symbol {
                // The offset is from the address as reported (the return address for
                // callers), like a kernel backtrace.
                let at = l.offset + back(i);
                SYMBOL_OFFSETS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        (l.module.clone(), pc),
                        (sym.name.clone(), at.wrapping_sub(sym.start)),
                    );
            }
            let cached = self
                .cache
                .get(&(l.module.clone(), l.offset))
                .cloned()
                .unwrap_or_default();
            if cached.is_empty() {
                let mut f = Frame::unknown(pc, l.module.clone());
                if let Some(sym) = symbol {
                    f.function = sym.name;
                }
                out.push(f);
                continue;
            }
            let n = cached.len();
            for (k, s) in cached.into_iter().enumerate() {
                let mut function = s.function;
                // Without debug info addr2line only knows the outermost function if at all.
                if function == "??" && k + 1 == n {
                    if let Some(sym) = &symbol {
                        function = sym.name.clone();
                    }
                }
                out.push(Frame {
                    pc,
                    module: l.module.clone(),
                    function,
                    file: s.file,
                    line: s.line,
                    inlined: s.inlined,
                });
            }
        }
        out
    }

    fn symbol_at(&mut self, module: &str, offset: usize) -> Option<Symbol> {
        let syms = self
            .symbols
            .entry(module.to_string())
            .or_insert_with(|| function_symbols(module));
        let i = syms.partition_point(|s| s.start <= offset);
        let s = syms[..i].iter().rev().find(|s| offset < s.start + s.size)?;
        Some(s.clone())
    }
}

/// How far before the reported address of `pcs[i]` its call lies.
fn back(i: usize) -> usize {
    usize::from(i > 0)
}

/// Maps `pc` to its object with `dladdr`, and to the address in the object's ELF file with
/// the load bias from `dl_iterate_phdr` (which also tells the main program apart: its
/// `dli_fname` is argv[0]-like).
fn locate(pc: usize) -> Option<Location> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the loader's tables; `info` is a valid out-pointer.
    if pc == 0 || unsafe { libc::dladdr(pc as *const c_void, &mut info) } == 0 {
        return None;
    }
    let fname = if info.dli_fname.is_null() {
        String::new()
    } else {
        // SAFETY: dladdr returned a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned()
    };
    let dyn_symbol = if info.dli_sname.is_null() || info.dli_saddr.is_null() {
        None
    } else {
        // SAFETY: as above.
        let name = unsafe { CStr::from_ptr(info.dli_sname) }.to_string_lossy();
        Some((info.dli_saddr as usize, name.into_owned()))
    };
    let fbase = info.dli_fbase as usize;
    let (bias, is_main) = match object_of(pc) {
        Some(o) => o,
        None => (fbase, false),
    };
    let module = if is_main {
        std::fs::read_link("/proc/self/exe")
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or(fname)
    } else if !fname.starts_with('/') && Path::new(&fname).exists() {
        std::fs::canonicalize(&fname)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or(fname)
    } else {
        fname
    };
    let dyn_symbol = dyn_symbol.map(|(a, n)| (a.wrapping_sub(bias), n));
    Some(Location {
        module,
        offset: pc.wrapping_sub(bias),
        dyn_symbol,
    })
}

/// The load bias of the object whose PT_LOAD segments contain `pc`, and whether it is the
/// main program (the loader reports it with an empty name).
fn object_of(pc: usize) -> Option<(usize, bool)> {
    struct Search {
        pc: usize,
        found: Option<(usize, bool)>,
    }
    unsafe extern "C" fn callback(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid info; `data` is our `Search`.
        let (info, search) = unsafe { (&*info, &mut *(data as *mut Search)) };
        let bias = info.dlpi_addr as usize;
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: dlpi_phdr has dlpi_phnum entries.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type != libc::PT_LOAD {
                continue;
            }
            let start = bias.wrapping_add(ph.p_vaddr as usize);
            if search.pc >= start && search.pc < start.wrapping_add(ph.p_memsz as usize) {
                let is_main = info.dlpi_name.is_null()
                    // SAFETY: a NUL-terminated string owned by the loader.
                    || unsafe { *info.dlpi_name } == 0;
                search.found = Some((bias, is_main));
                return 1;
            }
        }
        0
    }
    let mut search = Search { pc, found: None };
    // SAFETY: the callback only touches `search`, which outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(callback), &mut search as *mut Search as *mut c_void) };
    search.found
}

/// Resolves `offsets` in `module` with `addr2line -a -f -i -C`: one group of frames per
/// offset (innermost first), empty when nothing is known. The `-a` address line starts
/// each group, which is how groups of several inlined frames are told apart.
fn addr2line(module: &str, offsets: &[usize]) -> Vec<Vec<SourceFrame>> {
    let empty = vec![Vec::new(); offsets.len()];
    if !Path::new(module).is_file() {
        return empty;
    }
    let output = Command::new("addr2line")
        .args(["-a", "-f", "-i", "-C", "-e", module])
        .args(offsets.iter().map(|o| format!("{o:#x}")))
        .output();
    let Ok(output) = output else {
        return empty;
    };
    if !output.status.success() {
        return empty;
    }
    let groups = parse_addr2line(&String::from_utf8_lossy(&output.stdout));
    if groups.len() != offsets.len() {
        return empty;
    }
    groups
}

fn parse_addr2line(text: &str) -> Vec<Vec<SourceFrame>> {
    let mut groups: Vec<Vec<SourceFrame>> = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        // Function names never start with "0x", so this is the next address's header.
        if line.starts_with("0x") {
            groups.push(Vec::new());
            continue;
        }
        let Some(group) = groups.last_mut() else {
            continue;
        };
        let function = line.trim().to_string();
        let location = lines.next().unwrap_or("??:0");
        let location = match location.find(" (discriminator") {
            Some(i) => &location[..i],
            None => location,
        };
        let (file, line) = location.rsplit_once(':').unwrap_or((location, "0"));
        let file = if file == "??" { "" } else { file };
        let line = line.trim().parse().unwrap_or(0);
        if function == "??" && file.is_empty() {
            continue;
        }
        let inlined = !group.is_empty();
        group.push(SourceFrame {
            function,
            file: file.to_string(),
            line,
            inlined,
        });
    }
    groups
}

/// The sized function symbols of `module` (`nm -C -S -n`), sorted by address.
fn function_symbols(module: &str) -> Vec<Symbol> {
    if !Path::new(module).is_file() {
        return Vec::new();
    }
    let Ok(output) = Command::new("nm")
        .args(["-C", "-S", "-n", "--defined-only", module])
        .output()
    else {
        return Vec::new();
    };
    let mut syms: Vec<Symbol> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            // "ADDR SIZE TYPE NAME"; demangled names may contain spaces.
            let mut parts = line.splitn(4, ' ');
            let start = usize::from_str_radix(parts.next()?, 16).ok()?;
            let size = usize::from_str_radix(parts.next()?, 16).ok()?;
            let kind = parts.next()?;
            if !matches!(kind, "T" | "t" | "W" | "w" | "i") || size == 0 {
                return None;
            }
            Some(Symbol {
                start,
                size,
                name: parts.next()?.to_string(),
            })
        })
        .collect();
    syms.sort_by_key(|s| s.start);
    syms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_inlined_groups() {
        let text = "0x0000000000001139\ninner\n/src/a.c:5\nouter\n/src/a.c:12\n\
                    0x0000000000001200\n??\n??:0\n\
                    0x0000000000001300\nf\n/src/b.c:7 (discriminator 2)\n";
        let g = parse_addr2line(text);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].len(), 2);
        assert_eq!(
            (g[0][0].function.as_str(), g[0][0].line, g[0][0].inlined),
            ("inner", 5, false)
        );
        assert_eq!(
            (g[0][1].function.as_str(), g[0][1].line, g[0][1].inlined),
            ("outer", 12, true)
        );
        assert!(g[1].is_empty());
        assert_eq!((g[2][0].file.as_str(), g[2][0].line), ("/src/b.c", 7));
    }

    #[test]
    fn renders_unknown_frames() {
        let mut f = Frame::unknown(0x10, String::new());
        assert_eq!(f.render(), "?? at 0x10");
        f.module = "/tmp/x/impl.so".to_string();
        assert_eq!(f.render(), "?? in impl.so");
        f.function = "range_apply".to_string();
        f.file = "/src/lazy_mmu.c".to_string();
        f.line = 142;
        f.inlined = true;
        assert_eq!(f.render(), "range_apply lazy_mmu.c:142 (inlined)");
    }
}
