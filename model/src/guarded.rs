//! Guarded page-table memory: the implementation under test is hostile, so its page
//! tables live outside the Rust heap, in mmap'd pages laid out so that a wild access is
//! caught where it happens.
//!
//! Per table, one page whose upper 2 KiB hold the table and whose lower part is filled
//! with `POISON`, followed by a PROT_NONE guard page; one more guard page precedes the
//! first table:
//!
//! ```text
//! | guard | poison | t0 | guard | poison | t1 | guard | ...
//! ```
//!
//! A load or store one entry past the end of a table faults at the instruction; a store
//! before its start lands in the poison, which `Machine::check_poison` finds after the
//! operation. Arenas are pooled per thread by number of tables, since two machines are
//! built per program at fuzzing rates: the hot path never calls mmap or mprotect.
//!
//! Also here: `explain_address`, which names a host address the way a kernel person
//! reads it (the executor's crash reports use it).

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Arc, OnceLock};

use crate::machine::PageTable;
use lazymmu_lang::pte::{PTE_NONE, PTRS_PER_PTE};

/// Bytes of one page table.
pub const TABLE_BYTES: usize = PTRS_PER_PTE * 8;

/// What the lower half of every table page holds (slab's in-use poison byte, which kernel
/// people recognise in a dump).
pub const POISON: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// Addresses below this are read as a NULL pointer plus an offset.
const NULL_AREA: usize = 0x10000;

/// How far from a table an address still counts as an access relative to it.
const NEAR: i128 = 4096;

/// Arenas kept per thread and per number of tables; a fuzzing loop alternates two
/// machines of one layout, so a few suffice.
const POOL_PER_SIZE: usize = 4;

fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let p = if p > 0 { p as usize } else { 4096 };
        // The poison half must exist: a table must not fill its page.
        assert!(p >= 2 * TABLE_BYTES, "page size {p} too small");
        p
    })
}

/// One mmap'd arena of `tables` tables with their guard pages.
struct Region {
    base: NonNull<u8>,
    len: usize,
    tables: usize,
}

impl Region {
    fn map(tables: usize) -> Region {
        let page = page_size();
        let len = page * (1 + 2 * tables);
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            base != libc::MAP_FAILED,
            "mmap of {len} bytes for page tables failed"
        );
        let r = Region {
            base: NonNull::new(base.cast()).expect("mmap returned NULL"),
            len,
            tables,
        };
        for i in 0..tables {
            // SAFETY: the table page lies inside the mapping made above.
            let rc = unsafe {
                libc::mprotect(
                    r.table_page(i).cast(),
                    page,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            assert_eq!(rc, 0, "mprotect of a page-table page failed");
        }
        r
    }

    fn table_page(&self, i: usize) -> *mut u8 {
        let page = page_size();
        // SAFETY: in bounds of the mapping for i < tables.
        unsafe { self.base.as_ptr().add(page * (1 + 2 * i)) }
    }

    /// The table sits at the end of its page, right against the next guard page.
    fn table(&self, i: usize) -> NonNull<PageTable> {
        // SAFETY: in bounds of the page; the page is aligned, so the table is 2 KiB aligned.
        let p = unsafe { self.table_page(i).add(page_size() - TABLE_BYTES) };
        NonNull::new(p.cast()).expect("table address")
    }

    /// Every table PTE_NONE, every poison word POISON: a reused arena reads exactly like a
    /// fresh one.
    fn reset(&self) {
        let words = page_size() / 8;
        let poison = words - PTRS_PER_PTE;
        for i in 0..self.tables {
            // SAFETY: the page is mapped read-write and no handle to it is alive.
            let all =
                unsafe { std::slice::from_raw_parts_mut(self.table_page(i).cast::<u64>(), words) };
            all[..poison].fill(POISON);
            all[poison..].fill(PTE_NONE);
        }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no handle into it is alive any more.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

thread_local! {
    static POOL: RefCell<Vec<Region>> = const { RefCell::new(Vec::new()) };
}

/// Shared by the tables of one arena; gives the region back to the pool when the last
/// table handle goes.
struct Arena {
    region: Option<Region>,
}

impl Drop for Arena {
    fn drop(&mut self) {
        let mut region = self.region.take();
        // A thread being torn down has no pool any more: the region is unmapped instead.
        let _ = POOL.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            let r = region.take().expect("region");
            if pool.iter().filter(|p| p.tables == r.tables).count() < POOL_PER_SIZE {
                pool.push(r);
            }
        });
    }
}

// SAFETY: the arena only owns a mapping; nothing in it is tied to a thread.
unsafe impl Send for Arena {}
// SAFETY: an `Arena` has no methods; it is only dropped.
unsafe impl Sync for Arena {}

/// A page table in a guarded arena: derefs to `PageTable`, like the `Box` it replaces.
pub struct GuardedTable {
    table: NonNull<PageTable>,
    _arena: Arc<Arena>,
}

// SAFETY: each handle is the only way to its table and poison, like a `Box`.
unsafe impl Send for GuardedTable {}
// SAFETY: shared access only hands out shared references.
unsafe impl Sync for GuardedTable {}

impl Deref for GuardedTable {
    type Target = PageTable;
    fn deref(&self) -> &PageTable {
        // SAFETY: the arena keeps the page mapped; this handle owns the table.
        unsafe { self.table.as_ref() }
    }
}

impl DerefMut for GuardedTable {
    fn deref_mut(&mut self) -> &mut PageTable {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { self.table.as_mut() }
    }
}

impl GuardedTable {
    fn poison_len() -> usize {
        (page_size() - TABLE_BYTES) / 8
    }

    /// Host address of entry 0.
    pub fn base(&self) -> usize {
        self.table.as_ptr() as usize
    }

    /// The poison words right before the table, lowest address first: the last word is
    /// at offset -8 from the table origin.
    pub fn poison(&self) -> &[u64] {
        let n = Self::poison_len();
        // SAFETY: the poison lies in the same read-write page, just before the table, and
        // belongs to this handle.
        unsafe { std::slice::from_raw_parts(self.table.as_ptr().cast::<u64>().sub(n), n) }
    }

    pub fn poison_mut(&mut self) -> &mut [u64] {
        let n = Self::poison_len();
        // SAFETY: as in `poison`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.table.as_ptr().cast::<u64>().sub(n), n) }
    }

    /// The overwritten poison words, as (byte offset from the table origin, value), each
    /// restored to `POISON`. Empty in the common case after one pass with no branch.
    pub fn take_poison_hits(&mut self) -> Vec<(i64, u64)> {
        let words = self.poison_mut();
        if words.iter().fold(0, |acc, &w| acc | (w ^ POISON)) == 0 {
            return vec![];
        }
        let n = words.len() as i64;
        let mut hits = vec![];
        for (k, w) in words.iter_mut().enumerate() {
            if *w != POISON {
                hits.push(((k as i64 - n) * 8, *w));
                *w = POISON;
            }
        }
        hits
    }
}

/// `n` fresh tables (every entry PTE_NONE) in one guarded arena, reused from this
/// thread's pool when one of that size is there. Consecutive tables are at increasing
/// addresses.
pub fn alloc_tables(n: usize) -> Vec<GuardedTable> {
    if n == 0 {
        return vec![];
    }
    let pooled = POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        // The most recently returned arena first: a machine built after another one of
        // the same layout was dropped gets the same addresses.
        let at = pool.iter().rposition(|r| r.tables == n)?;
        Some(pool.swap_remove(at))
    });
    let region = match pooled {
        Some(r) => r,
        None => Region::map(n),
    };
    region.reset();
    let tables: Vec<NonNull<PageTable>> = (0..n).map(|i| region.table(i)).collect();
    let arena = Arc::new(Arena {
        region: Some(region),
    });
    tables
        .into_iter()
        .map(|table| GuardedTable {
            table,
            _arena: arena.clone(),
        })
        .collect()
}

fn entries(n: i128) -> String {
    if n == 1 {
        "1 entry".into()
    } else {
        format!("{n} entries")
    }
}

/// A byte offset from the origin of table `table` of mm `mm`, as a kernel person reads
/// it: `mm0 t0[5]`, `mm0 t0 + 0x800 (1 entry past the end)`, `mm0 t1 - 0x8 (1 entry
/// before the start)`.
pub fn explain_offset(mm: u8, table: u8, offset: i64) -> String {
    let off = offset as i128;
    let size = TABLE_BYTES as i128;
    if off < 0 {
        let n = (-off + 7) / 8;
        format!(
            "mm{mm} t{table} - {:#x} ({} before the start)",
            -off,
            entries(n)
        )
    } else if off >= size {
        let n = (off - size) / 8 + 1;
        format!("mm{mm} t{table} + {off:#x} ({} past the end)", entries(n))
    } else if off % 8 == 0 {
        format!("mm{mm} t{table}[{}]", off / 8)
    } else {
        format!("mm{mm} t{table}[{}] + {:#x}", off / 8, off % 8)
    }
}

/// Names a host address (a fault address, a wild pointer) relative to the machine's
/// tables, given as `Machine::table_bases()`: `NULL + 0x10`, an entry, or an offset from
/// the nearest table within 4 KiB of it.
pub fn explain_address(addr: usize, bases: &[(u8, u8, usize)]) -> String {
    if addr == 0 {
        return "NULL".into();
    }
    if addr < NULL_AREA {
        return format!("NULL + {addr:#x}");
    }
    // Distance from the table's extent, 0 inside it.
    let distance = |off: i128| {
        if off < 0 {
            -off
        } else {
            (off - (TABLE_BYTES as i128 - 1)).max(0)
        }
    };
    let nearest = bases
        .iter()
        .map(|&(m, t, b)| (m, t, addr as i128 - b as i128))
        .min_by_key(|&(_, _, off)| distance(off));
    match nearest {
        Some((m, t, off)) if distance(off) <= NEAR => explain_offset(m, t, off as i64),
        _ => format!("{addr:#x} (not near any page table)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isolate::run_in_child;

    #[test]
    fn explains_null_entries_and_neighbours() {
        let bases = [(0u8, 0u8, 0x7f00_0000_0800usize), (0, 1, 0x7f00_0000_2800)];
        let e = |a| explain_address(a, &bases);
        assert_eq!(e(0), "NULL");
        assert_eq!(e(0x10), "NULL + 0x10");
        assert_eq!(e(0xfff8), "NULL + 0xfff8");
        assert_eq!(e(0x7f00_0000_0800 + 5 * 8), "mm0 t0[5]");
        assert_eq!(e(0x7f00_0000_0800 + 5 * 8 + 3), "mm0 t0[5] + 0x3");
        assert_eq!(e(0x7f00_0000_0800 + 255 * 8), "mm0 t0[255]");
        assert_eq!(e(0x7f00_0000_1000), "mm0 t0 + 0x800 (1 entry past the end)");
        assert_eq!(
            e(0x7f00_0000_1008),
            "mm0 t0 + 0x808 (2 entries past the end)"
        );
        assert_eq!(e(0x7f00_0000_1004), "mm0 t0 + 0x804 (1 entry past the end)");
        assert_eq!(
            e(0x7f00_0000_27f8),
            "mm0 t1 - 0x8 (1 entry before the start)"
        );
        assert_eq!(
            e(0x7f00_0000_27fc),
            "mm0 t1 - 0x4 (1 entry before the start)"
        );
        assert_eq!(
            e(0x7f00_0000_2800 - 0x800),
            "mm0 t1 - 0x800 (256 entries before the start)"
        );
        // 4 KiB past the end of t1 is still near it; one byte more is not.
        assert_eq!(
            e(0x7f00_0000_3000 + 4095),
            "mm0 t1 + 0x17ff (512 entries past the end)"
        );
        assert_eq!(
            e(0x7f00_0000_4000),
            "0x7f0000004000 (not near any page table)"
        );
        assert_eq!(
            explain_address(0x1234_5678, &[]),
            "0x12345678 (not near any page table)"
        );
        assert_eq!(
            explain_offset(2, 3, -0x10),
            "mm2 t3 - 0x10 (2 entries before the start)"
        );
    }

    #[test]
    fn tables_are_aligned_poisoned_and_guarded() {
        let t = alloc_tables(3);
        for w in t.windows(2) {
            assert!(w[1].base() > w[0].base());
        }
        for table in &t {
            assert_eq!(table.base() % TABLE_BYTES, 0);
            assert!(table.entries.iter().all(|&e| e == PTE_NONE));
            assert!(table.poison().iter().all(|&w| w == POISON));
        }
        for (i, table) in t.iter().enumerate() {
            let end = table.base() + TABLE_BYTES;
            let r: Result<u64, _> = run_in_child(|| {
                // SAFETY: deliberately one entry past the end: the guard page faults.
                unsafe { (end as *const u64).read_volatile() }
            });
            assert_eq!(r.unwrap_err().signal, Some(libc::SIGSEGV), "table {i}");
        }
        // The page before the first table is a guard page too.
        let before = t[0].base() - page_size() + TABLE_BYTES - 8;
        let r: Result<u64, _> = run_in_child(|| {
            // SAFETY: deliberately in the leading guard page.
            unsafe { (before as *const u64).read_volatile() }
        });
        assert_eq!(r.unwrap_err().signal, Some(libc::SIGSEGV));
    }

    #[test]
    fn arenas_are_reused_and_reset() {
        let mut t = alloc_tables(2);
        let bases: Vec<usize> = t.iter().map(|t| t.base()).collect();
        t[1].entries[7] = 0x1a03d;
        let n = t[0].poison().len();
        t[0].poison_mut()[n - 1] = 42;
        drop(t);
        let t = alloc_tables(2);
        assert_eq!(t.iter().map(|t| t.base()).collect::<Vec<_>>(), bases);
        assert_eq!(t[1].entries[7], PTE_NONE);
        assert!(t[0].poison().iter().all(|&w| w == POISON));
        // Another size is another arena.
        let u = alloc_tables(1);
        assert!(!bases.contains(&u[0].base()));
    }

    #[test]
    fn poison_hits_are_reported_once_and_restored() {
        let mut t = alloc_tables(1);
        assert!(t[0].take_poison_hits().is_empty());
        let n = t[0].poison().len();
        t[0].poison_mut()[n - 1] = 7;
        t[0].poison_mut()[0] = 9;
        assert_eq!(t[0].take_poison_hits(), vec![(-(n as i64) * 8, 9), (-8, 7)]);
        assert!(t[0].take_poison_hits().is_empty());
    }
}
