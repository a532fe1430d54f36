// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The shim runtime, linked with one lazy-MMU implementation file into one shared object
 * (or, for the fuzz targets and the rig's built-in reference, into one static library):
 *
 *  - allocation tracking: kzalloc()/kfree() of the implementation, each object against a
 *    guard page outside ASan builds, so that an access past its end faults where it
 *    happens;
 *  - the reset between programs: tracked allocations freed, the implementation's static
 *    data restored to its load-time image;
 *  - lazymmu_shim_op(), the one entry point the rig calls for every step, and the other
 *    exported lazymmu_shim_* functions (ABI version, generation, state, early_param).
 *
 * The kernel code the rig needs around the implementation is in files of its own, split
 * like the headers in include/shim/ (types.h, stubs.h, hooks.h):
 *
 *  - eager.c: the duplicated eager base code the wrappers fall back to;
 *  - lazy_mmu_mode.c: the generic lazy-MMU layer with the generation's hook names;
 *  - wrappers.c: the inline wrappers of asm/pgtable.h for the generation (LAZYMMU_GEN);
 *  - coverage.c: edge and comparison callbacks for an implementation built with gcc's
 *    trace-pc,trace-cmp (the c-coverage flavour only, LAZYMMU_C_COVERAGE).
 *
 * This file #includes them (as tools/testing/vma #includes mm/vma.c) rather than having
 * them compiled and linked separately: everything stays one object
 * (runtime.o) with one symbol table, their helpers stay static, and the loader, build.rs
 * and the triage KUnit runner, which links runtime.o, need no change. Only runtime.c is
 * compiled; the parts refuse to compile on their own.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <linux/pgtable.h>
#include <asm/lazy_mmu.h>
#include <shim/op.h>

#ifndef LAZYMMU_GEN
#error "LAZYMMU_GEN must be 1 (RFC), 2 (v2) or 3 (v3+)"
#endif

#define LAZYMMU_SHIM_ABI 2

struct lazymmu_shim lazymmu_shim;

const cpumask_t lazymmu_shim_cpu_masks[SHIM_NR_CPUS] = {
	{ { 1UL << 0 } }, { { 1UL << 1 } }, { { 1UL << 2 } }, { { 1UL << 3 } },
	{ { 1UL << 4 } }, { { 1UL << 5 } }, { { 1UL << 6 } }, { { 1UL << 7 } },
};

/* ---- allocation tracking ---- */

/*
 * The implementation under test may index past its own objects. Outside ASan builds,
 * every object ends right against a PROT_NONE guard page (electric-fence style), so an
 * access past the end faults at the instruction instead of corrupting the rig's heap.
 * Online/offline runs at every program start, so freed blocks are cached by size and
 * reused; the hot path never calls mmap, munmap or mprotect. Under ASan, calloc/free
 * keep ASan's own redzone checks.
 */

#define SHIM_MAX_ALLOCS 64

#ifdef __SANITIZE_ADDRESS__
#define SHIM_GUARDED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SHIM_GUARDED 0
#endif
#endif
#ifndef SHIM_GUARDED
#define SHIM_GUARDED 1
#endif

#if SHIM_GUARDED

/* A block: `len` bytes of mapping whose last page is the guard. */
struct shim_block {
	char *base;
	size_t len;
};

static struct shim_alloc {
	void *ptr;
	size_t size;
	struct shim_block block;
} shim_allocs[SHIM_MAX_ALLOCS];
static struct shim_block shim_free_blocks[SHIM_MAX_ALLOCS];

static size_t shim_page_size(void)
{
	static size_t page;

	if (!page) {
		long p = sysconf(_SC_PAGESIZE);

		page = p > 0 ? (size_t)p : 4096;
	}
	return page;
}

/* Mapping length for an object of `size` bytes: data pages plus one guard page. */
static size_t shim_block_len(size_t size)
{
	size_t page = shim_page_size();

	return ((size + 15 + page - 1) / page + 1) * page;
}

static int shim_block_get(size_t len, struct shim_block *b)
{
	for (int i = 0; i < SHIM_MAX_ALLOCS; i++) {
		if (shim_free_blocks[i].base && shim_free_blocks[i].len == len) {
			*b = shim_free_blocks[i];
			shim_free_blocks[i].base = NULL;
			return 0;
		}
	}
	b->base = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (b->base == MAP_FAILED)
		return -1;
	b->len = len;
	if (mprotect(b->base + len - shim_page_size(), shim_page_size(), PROT_NONE)) {
		munmap(b->base, len);
		return -1;
	}
	return 0;
}

static void shim_block_put(struct shim_block b)
{
	for (int i = 0; i < SHIM_MAX_ALLOCS; i++) {
		if (!shim_free_blocks[i].base) {
			shim_free_blocks[i] = b;
			return;
		}
	}
	munmap(b.base, b.len);
}

void *lazymmu_shim_kzalloc(size_t size, gfp_t gfp)
{
	struct shim_block b;
	uintptr_t end;
	char *p;

	(void)gfp;
	for (int i = 0; i < SHIM_MAX_ALLOCS; i++) {
		if (shim_allocs[i].ptr)
			continue;
		if (shim_block_get(shim_block_len(size), &b))
			return NULL;
		/* The end against the guard page, the start 16-byte aligned like malloc's. */
		end = (uintptr_t)(b.base + b.len - shim_page_size());
		p = (char *)((end - size) & ~(uintptr_t)15);
		/* A reused block holds the last object's bytes: zero all but the guard. */
		memset(b.base, 0, b.len - shim_page_size());
		shim_allocs[i].ptr = p;
		shim_allocs[i].size = size;
		shim_allocs[i].block = b;
		return p;
	}
	return NULL; /* the implementation sees an allocation failure */
}

void lazymmu_shim_kfree(const void *p)
{
	if (!p)
		return;
	for (int i = 0; i < SHIM_MAX_ALLOCS; i++) {
		if (shim_allocs[i].ptr == p) {
			shim_block_put(shim_allocs[i].block);
			shim_allocs[i].ptr = NULL;
			return;
		}
	}
	lazymmu_shim_report("kfree() of a pointer kzalloc() did not return");
}

/* Between programs: what the last one leaked goes back to the cache. */
static void shim_free_all(void)
{
	for (int i = 0; i < SHIM_MAX_ALLOCS; i++) {
		if (shim_allocs[i].ptr) {
			shim_block_put(shim_allocs[i].block);
			shim_allocs[i].ptr = NULL;
		}
	}
}

/*
 * The live objects, for crash reports ("8 bytes past the end of a 2088-byte kzalloc()
 * object"): called from the executor's signal handler, so it only reads the table.
 */
int lazymmu_shim_allocations(unsigned long *start, unsigned long *size, int max)
{
	int n = 0;

	for (int i = 0; i < SHIM_MAX_ALLOCS && n < max; i++) {
		if (shim_allocs[i].ptr) {
			start[n] = (unsigned long)shim_allocs[i].ptr;
			size[n] = shim_allocs[i].size;
			n++;
		}
	}
	return n;
}

#else /* !SHIM_GUARDED */

static void *shim_allocs[SHIM_MAX_ALLOCS];

/* ASan names the object itself. */
int lazymmu_shim_allocations(unsigned long *start, unsigned long *size, int max)
{
	(void)start;
	(void)size;
	(void)max;
	return 0;
}

void *lazymmu_shim_kzalloc(size_t size, gfp_t gfp)
{
	(void)gfp;
	for (int i = 0; i < SHIM_MAX_ALLOCS; i++) {
		if (!shim_allocs[i]) {
			shim_allocs[i] = calloc(1, size);
			return shim_allocs[i];
		}
	}
	return NULL; /* the implementation sees an allocation failure */
}

void lazymmu_shim_kfree(const void *p)
{
	if (!p)
		return;
	for (int i = 0; i < SHIM_MAX_ALLOCS; i++) {
		if (shim_allocs[i] == p) {
			free(shim_allocs[i]);
			shim_allocs[i] = NULL;
			return;
		}
	}
	lazymmu_shim_report("kfree() of a pointer kzalloc() did not return");
}

static void shim_free_all(void)
{
	for (int i = 0; i < SHIM_MAX_ALLOCS; i++) {
		free(shim_allocs[i]);
		shim_allocs[i] = NULL;
	}
}

#endif /* SHIM_GUARDED */

/* ---- static data of the implementation (sections renamed by the loader) ---- */

extern char __start_lazymmu_impl_data[] __attribute__((weak, visibility("hidden")));
extern char __stop_lazymmu_impl_data[] __attribute__((weak, visibility("hidden")));
extern char __start_lazymmu_impl_bss[] __attribute__((weak, visibility("hidden")));
extern char __stop_lazymmu_impl_bss[] __attribute__((weak, visibility("hidden")));
static char *shim_data_image;

/* ---- the kernel code around the implementation (see the top of this file) ---- */

#define LAZYMMU_SHIM_RUNTIME
#include "eager.c"
#include "lazy_mmu_mode.c"
#include "wrappers.c"
#ifdef LAZYMMU_C_COVERAGE
#include "coverage.c"
#endif

/* ---- per-CPU online/offline of the implementation ---- */

#if LAZYMMU_GEN >= 3
#pragma weak lazy_mmu_online_boot_cpu
static void shim_cpu_online(int cpu)
{
	if (cpu == 0 && lazy_mmu_online_boot_cpu)
		lazy_mmu_online_boot_cpu();
	else if (lazy_mmu_online_cpu(GFP_KERNEL, cpu))
		lazymmu_shim_report("lazy_mmu_online_cpu() failed");
}
static void shim_cpu_offline(int cpu)
{
	lazy_mmu_offline_cpu(cpu);
}
#else
static void shim_cpu_online(int cpu) { (void)cpu; }
static void shim_cpu_offline(int cpu) { (void)cpu; }
#endif

/* ---- the entry points the rig calls ---- */

/* enum lazymmu_op_kind and struct lazymmu_op: <shim/op.h>. */


int lazymmu_shim_abi(void)
{
	return LAZYMMU_SHIM_ABI;
}

int lazymmu_shim_generation(void)
{
	return LAZYMMU_GEN;
}

size_t lazymmu_shim_state_size(void)
{
	return sizeof(struct lazymmu_shim);
}

struct lazymmu_shim *lazymmu_shim_state(void)
{
	return &lazymmu_shim;
}

/*
 * Copies static data byte by byte, outside ASan's view: with ASan the sections hold
 * poisoned redzones between globals, which an (intercepted) memcpy would report.
 */
__attribute__((no_sanitize_address)) static void copy_raw(char *dst, const char *src, size_t n)
{
	volatile char *d = dst;
	const volatile char *s = src;

	for (size_t i = 0; i < n; i++)
		d[i] = s ? s[i] : 0;
}

/* Called once after loading: remember the implementation's initial static data. */
void lazymmu_shim_init(void)
{
	size_t n = (size_t)(__stop_lazymmu_impl_data - __start_lazymmu_impl_data);

	if (__start_lazymmu_impl_data && n && !shim_data_image) {
		shim_data_image = malloc(n);
		copy_raw(shim_data_image, __start_lazymmu_impl_data, n);
	}
}

/* Between programs: free what the last one left allocated, restore the static data. */
void lazymmu_shim_reset(void)
{
#ifdef LAZYMMU_C_COVERAGE
	cov_reset();
#endif
	shim_free_all();
	if (shim_data_image)
		copy_raw(__start_lazymmu_impl_data, shim_data_image,
			 (size_t)(__stop_lazymmu_impl_data - __start_lazymmu_impl_data));
	if (__start_lazymmu_impl_bss)
		copy_raw(__start_lazymmu_impl_bss, NULL,
			 (size_t)(__stop_lazymmu_impl_bss - __start_lazymmu_impl_bss));
}

extern int (*lazymmu_early_param_fn)(char *) __attribute__((weak));

/* Calls the file's early_param handler (v2 6/6) with arg; -1 if it has none. */
int lazymmu_shim_early_param(const char *arg)
{
	char buf[64];

	if (!&lazymmu_early_param_fn || !lazymmu_early_param_fn)
		return -1;
	strncpy(buf, arg, sizeof(buf) - 1);
	buf[sizeof(buf) - 1] = 0;
	return lazymmu_early_param_fn(buf);
}

u64 lazymmu_shim_op(const struct lazymmu_op *op)
{
	struct mm_struct *mm = &lazymmu_shim.mms[op->mm];
	struct vm_area_struct vma = { .vm_mm = mm };
	pte_t *ptep = (pte_t *)op->ptep;

	switch (op->kind) {
	case LAZYMMU_ENABLE:
		lazy_mmu_mode_enable();
		return 0;
	case LAZYMMU_ENABLE_WITH_PTES:
		lazy_mmu_mode_enable_range(mm, op->addr, op->end, ptep);
		return 0;
	case LAZYMMU_DISABLE:
		lazy_mmu_mode_disable();
		return 0;
	case LAZYMMU_PAUSE:
		lazy_mmu_mode_pause();
		return 0;
	case LAZYMMU_RESUME:
		lazy_mmu_mode_resume();
		return 0;
	case LAZYMMU_IS_ACTIVE:
		return is_lazy_mmu_mode_active();
	case LAZYMMU_SET_PTE:
		set_pte(ptep, __pte(op->value));
		return 0;
	case LAZYMMU_SET_PTES: {
		/* set_ptes(): one entry after the other, the pfn advancing by one. */
		pte_t pte = __pte(op->value);

		for (u64 i = 0; i < op->n; i++) {
			set_pte(ptep + i, pte);
			pte = __pte(pte_val(pte) + PAGE_SIZE);
		}
		return 0;
	}
	case LAZYMMU_PTE_CLEAR:
		pte_clear(mm, op->addr, ptep);
		return 0;
	case LAZYMMU_PTEP_GET:
		return pte_val(ptep_get(ptep));
	case LAZYMMU_GET_AND_CLEAR:
		return pte_val(ptep_get_and_clear(mm, op->addr, ptep));
	case LAZYMMU_GET_AND_CLEAR_FULL:
		return pte_val(ptep_get_and_clear_full(mm, op->addr, ptep, op->full));
	case LAZYMMU_TEST_AND_CLEAR_YOUNG:
		return ptep_test_and_clear_young(&vma, op->addr, ptep) != 0;
	case LAZYMMU_MODIFY_PROT_START:
		return pte_val(ptep_modify_prot_start(&vma, op->addr, ptep));
	case LAZYMMU_MODIFY_PROT_COMMIT:
		ptep_modify_prot_commit(&vma, op->addr, ptep, __pte(op->old), __pte(op->value));
		return 0;
	case LAZYMMU_SET_WRPROTECT:
		ptep_set_wrprotect(mm, op->addr, ptep);
		return 0;
	case LAZYMMU_GET_LOCKLESS:
		return pte_val(ptep_get_lockless(ptep));
	case LAZYMMU_CLEAR_FLUSH:
		return pte_val(ptep_clear_flush(&vma, op->addr, ptep));
	case LAZYMMU_FLUSH_TLB_RANGE:
		flush_tlb_range(mm, op->is_init_mm);
		return 0;
	case LAZYMMU_FLUSH_TLB_MM:
		tlb_flush_mm_lazy(mm);
		return 0;
	case LAZYMMU_SWITCH_IN:
		switch_in(mm);
		return 0;
	case LAZYMMU_CPU_ONLINE:
		shim_cpu_online(lazymmu_shim.cpu);
		return 0;
	case LAZYMMU_CPU_OFFLINE:
		shim_cpu_offline(lazymmu_shim.cpu);
		return 0;
	}
	lazymmu_shim_report("unknown lazymmu_op kind");
	return 0;
}
