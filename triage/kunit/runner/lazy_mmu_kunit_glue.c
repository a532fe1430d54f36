// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The userspace side of <linux/lazy_mmu_kunit_glue.h>: runs an exported KUnit case on
 * the rig's shim, linked with an implementation's impl.o and the shim's runtime.o.
 *
 * The generic lazy-MMU layer, flush_tlb_* and set_ptes() are static in runtime.c: the
 * glue reaches them through lazymmu_shim_op(), the entry point the rig itself calls
 * (struct lazymmu_op below mirrors runtime.c, as target/src/ffi.rs does; the ABI
 * number is checked before the first case).
 *
 * The shim's callbacks go to a small model of the rig's machine: page-table memory is
 * plain memory; IPTE and IPTE-range set the invalid bit and purge TLB entries (of this
 * CPU for a local one, of every CPU otherwise); IDTE purges every CPU's entries of the
 * mm; lazy_mmu_test_access() fills the current CPU's TLB. It reports what KUnit's
 * expectations cannot see: a store that changes a valid PTE without an IPTE first
 * (docs/semantics.md#rule-store-valid; the lazy policy's `old | I` on an mm attached to
 * this CPU alone, and stores to an mm no CPU runs, are allowed, as in
 * model/src/machine.rs), an ultravisor call on a valid PTE, an assertion of the shim,
 * and a stale TLB entry after the caller's flush.
 */
#define LAZY_MMU_TEST_GLUE_IMPL
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <kunit/test.h>
#include <linux/pgtable.h>
#include <linux/lazy_mmu_kunit_glue.h>

/* runtime.c's entry point (LAZYMMU_SHIM_ABI 2). */
#include <shim/op.h>
int lazymmu_shim_abi(void);
void lazymmu_shim_init(void);
void lazymmu_shim_reset(void);

#define GLUE_SHIM_ABI		2
#define GLUE_MAX_TABLES		16
#define GLUE_MAX_TLB		256

static struct glue {
	bool machine_set;
	int nr_mms;
	int init_mm;		/* index of init_mm, -1: none yet */
	struct {
		pte_t *base;
		int mm;
		const char *name;
	} tables[GLUE_MAX_TABLES];
	int nr_tables;
	struct {
		int cpu, mm;
		unsigned long addr;
		unsigned long *ptep;
		u64 value;
	} tlb[GLUE_MAX_TLB];
	int nr_tlb;
	const char *file;
	int line;
} glue;

static struct kunit *glue_test(void)
{
	return kunit_get_current_test();
}

/* A failure found by the model, at the last call of the case. */
static void glue_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void glue_fail(const char *fmt, ...)
{
	struct kunit *test = glue_test();
	char what[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (!test) {
		fprintf(stderr, "lazy_mmu glue: %s (outside a case)\n", what);
		return;
	}
	kunit_stub_report(test, glue.file ? glue.file : "(setup)", glue.line, false,
			  strdup(what), NULL);
}

/* The name of a PTE slot: pt0_0[5], or its address. */
static const char *glue_pte_name(const unsigned long *ptep, char *buf, size_t len)
{
	for (int i = 0; i < glue.nr_tables; i++) {
		const unsigned long *b = &glue.tables[i].base->pte;

		if (ptep >= b && ptep < b + PTRS_PER_PTE) {
			snprintf(buf, len, "%s[%ld]", glue.tables[i].name, (long)(ptep - b));
			return buf;
		}
	}
	snprintf(buf, len, "pte %p", (const void *)ptep);
	return buf;
}

/* The mm of a registered table, -1 if the slot is in none. */
static int glue_mm_of(const unsigned long *ptep)
{
	for (int i = 0; i < glue.nr_tables; i++) {
		const unsigned long *b = &glue.tables[i].base->pte;

		if (ptep >= b && ptep < b + PTRS_PER_PTE)
			return glue.tables[i].mm;
	}
	return -1;
}

static bool valid(u64 v)
{
	return !(v & _PAGE_INVALID);
}

/* ---- TLBs ---- */

static void tlb_purge(int cpu, int mm, const unsigned long *ptep)
{
	for (int i = 0; i < glue.nr_tlb; i++) {
		if ((cpu < 0 || glue.tlb[i].cpu == cpu) && (mm < 0 || glue.tlb[i].mm == mm) &&
		    (!ptep || glue.tlb[i].ptep == ptep))
			glue.tlb[i--] = glue.tlb[--glue.nr_tlb];
	}
}

/* What a TLB entry translates to: the page and whether it may be written. */
static bool tlb_stale(u64 tlb, u64 mem)
{
	if (!valid(mem))
		return true;
	if ((tlb >> PAGE_SHIFT) != (mem >> PAGE_SHIFT))
		return true;
	return !(tlb & _PAGE_PROTECT) && (mem & _PAGE_PROTECT);
}

/* After the caller's flush of [start, end) of mm (end 0: all of it). */
static void tlb_check(const char *flush, int mm, unsigned long start, unsigned long end)
{
	char name[64];

	for (int i = 0; i < glue.nr_tlb; i++) {
		if (glue.tlb[i].mm != mm)
			continue;
		if (end && (glue.tlb[i].addr < start || glue.tlb[i].addr >= end))
			continue;
		if (tlb_stale(glue.tlb[i].value, *glue.tlb[i].ptep))
			glue_fail("Expected no stale TLB entry after %s(), but cpu%d's TLB still "
				  "translates %s as 0x%llx where memory has 0x%llx", flush,
				  glue.tlb[i].cpu, glue_pte_name(glue.tlb[i].ptep, name, sizeof(name)),
				  (unsigned long long)glue.tlb[i].value,
				  (unsigned long long)*glue.tlb[i].ptep);
	}
}

/* ---- the shim's callbacks ---- */

static u64 cb_pte_read(void *ctx, const unsigned long *ptep)
{
	(void)ctx;
	return *(const volatile unsigned long *)ptep;
}

static void cb_pte_write(void *ctx, unsigned long *ptep, u64 new)
{
	u64 old = *ptep;
	int mm = glue_mm_of(ptep);
	char name[64];

	(void)ctx;
	if (mm >= 0 && valid(old) && new != old) {
		unsigned long cpu_bit = 1UL << lazymmu_shim.cpu;
		unsigned long attach = lazymmu_shim.mms[mm].context.cpu_attach_mask.bits[0];
		bool sets_only_i = !valid(new) && ((new ^ old) & ~(_PAGE_INVALID | _PAGE_UNUSED)) == 0;

		if (!(sets_only_i && attach == cpu_bit) && attach != 0)
			glue_fail("Expected an IPTE before a store changes a valid PTE, but %s "
				  "went from 0x%llx to 0x%llx without one",
				  glue_pte_name(ptep, name, sizeof(name)), (unsigned long long)old,
				  (unsigned long long)new);
	}
	*(volatile unsigned long *)ptep = new;
}

static void cb_ipte(void *ctx, unsigned long addr, unsigned long *ptep, int local)
{
	(void)ctx;
	(void)addr;
	*ptep |= _PAGE_INVALID;
	tlb_purge(local ? lazymmu_shim.cpu : -1, -1, ptep);
}

static void cb_ipte_range(void *ctx, unsigned long addr, int nr, unsigned long *ptep, int local)
{
	unsigned long *origin = (unsigned long *)((uintptr_t)ptep & ~(uintptr_t)0x7ff);
	unsigned long first = (addr >> PAGE_SHIFT) & (PTRS_PER_PTE - 1);
	char name[64];

	(void)ctx;
	if (first + nr >= PTRS_PER_PTE) {
		glue_fail("Expected an IPTE-range inside one page table, but it covers %s and "
			  "%d more entries", glue_pte_name(origin + first, name, sizeof(name)), nr);
		return;
	}
	for (unsigned long i = first; i <= first + nr; i++) {
		origin[i] |= _PAGE_INVALID;
		tlb_purge(local ? lazymmu_shim.cpu : -1, -1, &origin[i]);
	}
}

static void cb_idte(void *ctx, int mm)
{
	(void)ctx;
	tlb_purge(-1, mm, NULL);
}

static void cb_uv(void *ctx, unsigned long *ptep, int kind)
{
	char name[64];

	(void)ctx;
	if (valid(*ptep))
		glue_fail("Expected the ultravisor to be called on an invalid PTE, but %s "
			  "(%s) is valid: 0x%llx", glue_pte_name(ptep, name, sizeof(name)),
			  kind ? "destroy" : "convert_from_secure", (unsigned long long)*ptep);
}

static void cb_kasan(void *ctx, const unsigned long *ptep, int nr, int poison)
{
	(void)ctx;
	(void)ptep;
	(void)nr;
	(void)poison;
}

static void cb_report(void *ctx, const char *what)
{
	(void)ctx;
	glue_fail("Expected no kernel assertion, but: %s", what);
}

/* ---- the machine ---- */

static u64 glue_op(int kind, struct mm_struct *mm, unsigned long addr, pte_t *ptep)
{
	struct lazymmu_op op = { .kind = kind, .addr = addr, .ptep = ptep ? &ptep->pte : NULL };

	if (!glue.machine_set)
		lazy_mmu_test_machine(glue_test(), 1, true, true);
	if (mm) {
		op.mm = (int)(mm - lazymmu_shim.mms);
		op.is_init_mm = op.mm == glue.init_mm;
	}
	return lazymmu_shim_op(&op);
}

/* Called by the runner once, before the first case. */
int lazy_mmu_test_init(void)
{
	if (lazymmu_shim_abi() != GLUE_SHIM_ABI) {
		fprintf(stderr, "lazy_mmu glue: shim ABI %d, the glue knows %d\n",
			lazymmu_shim_abi(), GLUE_SHIM_ABI);
		return -1;
	}
	lazymmu_shim_init();
	return 0;
}

/* Called by the runner before every case: a fresh machine, as the rig's program start. */
void lazy_mmu_test_reset(void)
{
	lazymmu_shim_reset();
	memset(&glue, 0, sizeof(glue));
	glue.init_mm = -1;
	memset(lazymmu_shim.cpus, 0, sizeof(lazymmu_shim.cpus));
	memset(lazymmu_shim.tasks, 0, sizeof(lazymmu_shim.tasks));
	memset(lazymmu_shim.lowcore, 0, sizeof(lazymmu_shim.lowcore));
	memset(lazymmu_shim.mms, 0, sizeof(lazymmu_shim.mms));
	lazymmu_shim.cpu = 0;
	lazymmu_shim.cb.ctx = NULL;
	lazymmu_shim.cb.pte_read = cb_pte_read;
	lazymmu_shim.cb.pte_write = cb_pte_write;
	lazymmu_shim.cb.ipte = cb_ipte;
	lazymmu_shim.cb.ipte_range = cb_ipte_range;
	lazymmu_shim.cb.idte = cb_idte;
	lazymmu_shim.cb.uv = cb_uv;
	lazymmu_shim.cb.kasan = cb_kasan;
	lazymmu_shim.cb.report = cb_report;
}

void lazy_mmu_test_machine(struct kunit *test, int cpus, bool facility13, bool tlb_lc)
{
	struct lazymmu_op op = { .kind = LAZYMMU_CPU_ONLINE };

	(void)test;
	if (glue.machine_set)
		return;
	if (cpus < 1 || cpus > SHIM_NR_CPUS)
		cpus = SHIM_NR_CPUS;
	glue.machine_set = true;
	lazymmu_shim.ncpus = cpus;
	lazymmu_shim.facility13 = facility13;
	lazymmu_shim.tlb_lc = tlb_lc;
	/* Every CPU comes online, as at the start of a rig program. */
	for (int c = 0; c < cpus; c++) {
		lazymmu_shim.cpu = c;
		lazymmu_shim_op(&op);
	}
	lazymmu_shim.cpu = 0;
}

static struct mm_struct *glue_new_mm(struct kunit *test)
{
	struct mm_struct *mm;

	if (glue.nr_mms >= SHIM_NR_MMS) {
		glue_fail("Expected at most %d mms in a case", SHIM_NR_MMS);
		return NULL;
	}
	(void)test;
	mm = &lazymmu_shim.mms[glue.nr_mms];
	memset(mm, 0, sizeof(*mm));
	mm->context.id = glue.nr_mms++;
	return mm;
}

struct mm_struct *lazy_mmu_test_mm(struct kunit *test)
{
	return glue_new_mm(test);
}

struct mm_struct *lazy_mmu_test_protected_mm(struct kunit *test)
{
	struct mm_struct *mm = glue_new_mm(test);

	if (mm)
		mm->context.is_protected = 1;
	return mm;
}

struct mm_struct *lazy_mmu_test_init_mm(struct kunit *test)
{
	struct mm_struct *mm;

	if (glue.init_mm >= 0)
		return &lazymmu_shim.mms[glue.init_mm];
	mm = glue_new_mm(test);
	if (mm)
		glue.init_mm = mm->context.id;
	return mm;
}

void lazy_mmu_test_attach(struct kunit *test, struct mm_struct *mm, unsigned long mask)
{
	(void)test;
	if (!mm)
		return;
	mm->context.cpu_attach_mask.bits[0] = mask;
	mm->cpu_bitmap.bits[0] = mask;
}

void lazy_mmu_test_table_named(struct kunit *test, struct mm_struct *mm, pte_t *pt,
			       const char *name)
{
	(void)test;
	if (!mm || !pt || glue.nr_tables >= GLUE_MAX_TABLES)
		return;
	glue.tables[glue.nr_tables].base = pt;
	glue.tables[glue.nr_tables].mm = (int)(mm - lazymmu_shim.mms);
	glue.tables[glue.nr_tables].name = name;
	glue.nr_tables++;
}

void lazy_mmu_test_cpu(struct kunit *test, int cpu)
{
	(void)test;
	if (!glue.machine_set)
		lazy_mmu_test_machine(test, cpu + 1, true, true);
	if (cpu < 0 || cpu >= lazymmu_shim.ncpus) {
		glue_fail("Expected a CPU below %d, but the case runs as cpu%d",
			  lazymmu_shim.ncpus, cpu);
		return;
	}
	lazymmu_shim.cpu = cpu;
}

void lazy_mmu_test_at(const char *file, int line)
{
	glue.file = file;
	glue.line = line;
}

void lazy_mmu_test_access(struct kunit *test, struct mm_struct *mm, unsigned long addr,
			  pte_t *ptep, bool write)
{
	int c = lazymmu_shim.cpu;
	u64 v = ptep->pte;

	(void)test;
	(void)write;
	if (!mm || !valid(v))
		return;
	tlb_purge(c, -1, &ptep->pte);
	if (glue.nr_tlb < GLUE_MAX_TLB) {
		glue.tlb[glue.nr_tlb].cpu = c;
		glue.tlb[glue.nr_tlb].mm = (int)(mm - lazymmu_shim.mms);
		glue.tlb[glue.nr_tlb].addr = addr;
		glue.tlb[glue.nr_tlb].ptep = &ptep->pte;
		glue.tlb[glue.nr_tlb].value = v;
		glue.nr_tlb++;
	}
}

void lazy_mmu_test_irq_enter(struct kunit *test)
{
	(void)test;
	lazymmu_shim.cpus[lazymmu_shim.cpu].irq_depth++;
}

void lazy_mmu_test_irq_exit(struct kunit *test)
{
	(void)test;
	if (lazymmu_shim.cpus[lazymmu_shim.cpu].irq_depth > 0)
		lazymmu_shim.cpus[lazymmu_shim.cpu].irq_depth--;
}

void lazy_mmu_test_switch_mm(struct kunit *test, struct mm_struct *mm)
{
	int c = lazymmu_shim.cpu;

	(void)test;
	/* The CPU leaves the user mm it ran (attach masks of user mms), joins the new one. */
	for (int i = 0; i < glue.nr_mms; i++) {
		if (i != glue.init_mm)
			cpumask_clear_cpu(c, &lazymmu_shim.mms[i].context.cpu_attach_mask);
	}
	if (mm) {
		cpumask_set_cpu(c, &mm->context.cpu_attach_mask);
		glue_op(LAZYMMU_SWITCH_IN, mm, 0, NULL);
	}
}

void lazy_mmu_test_cpu_offline(struct kunit *test)
{
	(void)test;
	glue_op(LAZYMMU_CPU_OFFLINE, NULL, 0, NULL);
	tlb_purge(lazymmu_shim.cpu, -1, NULL);
}

void lazy_mmu_test_cpu_online(struct kunit *test)
{
	int c = lazymmu_shim.cpu;

	(void)test;
	memset(&lazymmu_shim.cpus[c], 0, sizeof(lazymmu_shim.cpus[c]));
	memset(&lazymmu_shim.tasks[c], 0, sizeof(lazymmu_shim.tasks[c]));
	lazymmu_shim.lowcore[c].lazy_mmu_count = 0;
	glue_op(LAZYMMU_CPU_ONLINE, NULL, 0, NULL);
}

/* ---- the kernel functions runtime.c keeps static ---- */

void lazy_mmu_mode_enable(void)
{
	glue_op(LAZYMMU_ENABLE, NULL, 0, NULL);
}

void lazy_mmu_mode_enable_with_ptes(struct mm_struct *mm, unsigned long addr,
				    unsigned long end, pte_t *ptep)
{
	struct lazymmu_op op = {
		.kind = LAZYMMU_ENABLE_WITH_PTES,
		.mm = (int)(mm - lazymmu_shim.mms),
		.addr = addr,
		.end = end,
		.ptep = &ptep->pte,
	};

	if (!glue.machine_set)
		lazy_mmu_test_machine(glue_test(), 1, true, true);
	lazymmu_shim_op(&op);
}

void lazy_mmu_mode_disable(void)
{
	glue_op(LAZYMMU_DISABLE, NULL, 0, NULL);
}

void lazy_mmu_mode_pause(void)
{
	glue_op(LAZYMMU_PAUSE, NULL, 0, NULL);
}

void lazy_mmu_mode_resume(void)
{
	glue_op(LAZYMMU_RESUME, NULL, 0, NULL);
}

/* set_ptes(): one entry after the other, the pfn advancing by one (runtime.c). */
void set_ptes(struct mm_struct *mm, unsigned long addr, pte_t *ptep, pte_t pte,
	      unsigned int nr)
{
	struct lazymmu_op op = {
		.kind = LAZYMMU_SET_PTES,
		.mm = (int)(mm - lazymmu_shim.mms),
		.addr = addr,
		.ptep = &ptep->pte,
		.value = pte_val(pte),
		.n = nr,
	};

	if (!glue.machine_set)
		lazy_mmu_test_machine(glue_test(), 1, true, true);
	lazymmu_shim_op(&op);
}

void flush_tlb_range(struct vm_area_struct *vma, unsigned long start, unsigned long end)
{
	glue_op(LAZYMMU_FLUSH_TLB_RANGE, vma->vm_mm, start, NULL);
	tlb_check("flush_tlb_range", (int)(vma->vm_mm - lazymmu_shim.mms), start, end);
}

void flush_tlb_mm(struct mm_struct *mm)
{
	glue_op(LAZYMMU_FLUSH_TLB_MM, mm, 0, NULL);
	tlb_check("flush_tlb_mm", (int)(mm - lazymmu_shim.mms), 0, 0);
}

void flush_tlb_kernel_range(unsigned long start, unsigned long end)
{
	struct mm_struct *mm = lazy_mmu_test_init_mm(glue_test());

	glue_op(LAZYMMU_FLUSH_TLB_RANGE, mm, start, NULL);
	tlb_check("flush_tlb_kernel_range", (int)(mm - lazymmu_shim.mms), start, end);
}
