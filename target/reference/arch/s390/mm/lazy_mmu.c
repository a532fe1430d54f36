// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Batched PTE updates in lazy MMU mode.
 *
 * While a CPU is in lazy MMU mode with a recorded PTE range, updates of the
 * PTEs in that range are kept in a per-CPU cache instead of being written to
 * the page table. When the mode is left or flushed, every run of updated
 * entries that is still valid in memory is invalidated with one IPTE-range,
 * and the new values are stored afterwards. This replaces one global IPTE
 * per PTE by one per run. Invalidations that need no global IPTE (a local
 * one, or the lazy policy's owed flush) are done at once, as eagerly.
 *
 * PTEs outside the range, and every update made in interrupt context, take
 * the normal, eager path.
 */

#include <linux/pgtable.h>
#include <asm/facility.h>
#include <kunit/visibility.h>
#include <linux/kasan.h>
#include <linux/slab.h>
#include <asm/lazy_mmu.h>

/*
 * Fills the empty cache slots, so that a slot leaking out is easy to spot.
 * Whether a slot is pending is decided by the bitmap alone: any value,
 * this one included, is a valid pending value.
 */
#define PTE_POISON	_PAGE_LARGE

#define RANGE_LONG_BITS	(8 * sizeof(unsigned long))
#define RANGE_MAP_LONGS	(PTRS_PER_PTE / RANGE_LONG_BITS)

struct ipte_range {
	struct mm_struct *mm;
	unsigned long base_addr;	/* address mapped by base_pte */
	unsigned long base_end;
	pte_t *base_pte;		/* NULL: no range recorded */
	pte_t *start_pte;		/* [start_pte, end_pte) holds every */
	pte_t *end_pte;			/* pending slot */
	pte_t cache[PTRS_PER_PTE];
	unsigned long pending[RANGE_MAP_LONGS];
};

static DEFINE_PER_CPU(struct ipte_range *, ipte_range);

static unsigned int range_nr(struct ipte_range *range)
{
	return (range->base_end - range->base_addr) / PAGE_SIZE;
}

static bool slot_pending(struct ipte_range *range, unsigned int idx)
{
	return range->pending[idx / RANGE_LONG_BITS] & (1UL << (idx % RANGE_LONG_BITS));
}

static void slot_fill(struct ipte_range *range, pte_t *ptep, unsigned int idx, pte_t pte)
{
	range->cache[idx] = pte;
	range->pending[idx / RANGE_LONG_BITS] |= 1UL << (idx % RANGE_LONG_BITS);
	if (ptep < range->start_pte)
		range->start_pte = ptep;
	if (ptep >= range->end_pte)
		range->end_pte = ptep + 1;
}

static void slot_empty(struct ipte_range *range, unsigned int idx)
{
	range->cache[idx] = __pte(PTE_POISON);
	range->pending[idx / RANGE_LONG_BITS] &= ~(1UL << (idx % RANGE_LONG_BITS));
}

/* Empty window: the first slot_fill() sets both ends. */
static void range_reset_window(struct ipte_range *range)
{
	range->start_pte = range->base_pte + range_nr(range);
	range->end_pte = range->base_pte;
}

static void range_forget(struct ipte_range *range)
{
	range->mm = NULL;
	range->base_addr = 0;
	range->base_end = 0;
	range->base_pte = NULL;
	range->start_pte = NULL;
	range->end_pte = NULL;
}

/*
 * The range is only a hint, but the cache index and IPTE-range rely on it:
 * it must lie in one page table, and @pte must be the entry for @addr in its
 * 2K-aligned table. A protected mm is not batched at all: the ultravisor
 * must find a cleared PTE invalid in memory right away.
 */
static bool range_sane(struct mm_struct *mm, unsigned long addr,
		       unsigned long end, pte_t *pte)
{
	unsigned long offset = (unsigned long)pte & (PTRS_PER_PTE * sizeof(pte_t) - 1);

	if (!mm || !pte || mm_is_protected(mm))
		return false;
	if (addr >= end || ((addr | end) & (PAGE_SIZE - 1)))
		return false;
	if ((addr >> PMD_SHIFT) != ((end - 1) >> PMD_SHIFT))
		return false;
	return offset == ((addr / PAGE_SIZE) % PTRS_PER_PTE) * sizeof(pte_t);
}

/*
 * The range's PTEs are poisoned while they are batched; the file's own
 * accesses unpoison them for the moment.
 */
static pte_t range_read(pte_t *ptep)
{
	pte_t pte;

	kasan_unpoison_pte(ptep, 1);
	pte = __ptep_get(ptep);
	kasan_poison_pte(ptep, 1);
	return pte;
}

/* What this CPU sees: the pending value, or else page-table memory. */
static pte_t range_current(struct ipte_range *range, pte_t *ptep, unsigned int idx)
{
	if (slot_pending(range, idx))
		return range->cache[idx];
	return range_read(ptep);
}

/*
 * Invalidate @count consecutive entries, all valid in memory, before new
 * values are stored: they are the updates the eager code would have
 * invalidated with global IPTEs, one each; now one IPTE-range does, a local
 * one if no other CPU can hold TLB entries for the mm by now.
 */
static void range_invalidate(struct ipte_range *range, pte_t *ptep, unsigned int count)
{
	struct mm_struct *mm = range->mm;
	int cpu = smp_processor_id();
	unsigned long addr;

	addr = range->base_addr + (ptep - range->base_pte) * PAGE_SIZE;
	atomic_inc(&mm->context.flush_count);
	if (cpu_has_tlb_lc() && cpumask_equal(mm_cpumask(mm), cpumask_of(cpu)))
		__ptep_ipte_range(addr, count - 1, ptep, IPTE_LOCAL);
	else
		__ptep_ipte_range(addr, count - 1, ptep, IPTE_GLOBAL);
	atomic_dec(&mm->context.flush_count);
}

/*
 * Invalidate the pending entries that are valid in memory: one IPTE-range
 * per run of consecutive pending slots whose entries agree on the I bit.
 */
static void range_invalidate_runs(struct ipte_range *range)
{
	pte_t *ptep = range->start_pte;
	unsigned long invalid;
	unsigned int count;

	while (ptep < range->end_pte) {
		if (!slot_pending(range, ptep - range->base_pte)) {
			ptep++;
			continue;
		}
		invalid = pte_val(__ptep_get(ptep)) & _PAGE_INVALID;
		count = 1;
		while (ptep + count < range->end_pte &&
		       slot_pending(range, ptep + count - range->base_pte) &&
		       (pte_val(__ptep_get(ptep + count)) & _PAGE_INVALID) == invalid)
			count++;
		if (!invalid)
			range_invalidate(range, ptep, count);
		ptep += count;
	}
}

/* Every pending entry is invalid in memory now: store the new values. */
static void range_store(struct ipte_range *range)
{
	unsigned int idx;
	pte_t *ptep;

	for (ptep = range->start_pte; ptep < range->end_pte; ptep++) {
		idx = ptep - range->base_pte;
		if (!slot_pending(range, idx))
			continue;
		__set_pte(ptep, range->cache[idx]);
		slot_empty(range, idx);
	}
}

/* Write every pending slot to the page table; the range stays recorded. */
static void range_apply(struct ipte_range *range)
{
	pte_t *start = range->start_pte;
	pte_t *end = range->end_pte;

	if (start >= end)
		return;
	kasan_unpoison_pte(start, end - start);
	range_invalidate_runs(range);
	range_store(range);
	kasan_poison_pte(start, end - start);
	range_reset_window(range);
}

/* The invalidation policy the eager code uses for an operation. */
enum eager_policy {
	POLICY_DIRECT,	/* ptep_flush_direct(): test_and_clear_young */
	POLICY_LAZY,	/* ptep_flush_lazy(): get_and_clear, modify_prot_start, wrprotect */
};

/*
 * What the eager code would invalidate without a machine-wide quiesce is
 * invalidated at once, the same way: the lazy policy's I bit with a flush
 * owed, or a local IPTE. Deferred to the leave, it could need a global
 * IPTE-range (another CPU may have joined the mm by then), and a different
 * choice would change when the owed flush resets mm_cpumask. Only what the
 * eager code would do with a global IPTE is batched: that is what batching
 * is for.
 */
static void range_invalidate_now(struct ipte_range *range, pte_t *ptep, pte_t cur,
				 enum eager_policy policy)
{
	struct mm_struct *mm = range->mm;
	int cpu = smp_processor_id();
	unsigned long addr;
	pte_t old;

	/* The eager code invalidates nothing if the current value is invalid. */
	if (pte_val(cur) & _PAGE_INVALID)
		return;
	old = range_read(ptep);
	addr = range->base_addr + (ptep - range->base_pte) * PAGE_SIZE;
	if (policy == POLICY_LAZY &&
	    cpumask_equal(&mm->context.cpu_attach_mask, cpumask_of(cpu))) {
		atomic_inc(&mm->context.flush_count);
		if (!(pte_val(old) & _PAGE_INVALID)) {
			kasan_unpoison_pte(ptep, 1);
			__set_pte(ptep, __pte(pte_val(old) | _PAGE_INVALID));
			kasan_poison_pte(ptep, 1);
		}
		/* Owed even if memory still holds an invalid value: as eagerly. */
		mm->context.flush_mm = 1;
		atomic_dec(&mm->context.flush_count);
	} else if (policy == POLICY_DIRECT && cpu_has_tlb_lc() &&
		   cpumask_equal(mm_cpumask(mm), cpumask_of(cpu)) &&
		   !(pte_val(old) & _PAGE_INVALID)) {
		atomic_inc(&mm->context.flush_count);
		__ptep_ipte_range(addr, 0, ptep, IPTE_LOCAL);
		atomic_dec(&mm->context.flush_count);
	}
}

/* This CPU's range, if @ptep lies in it. */
static struct ipte_range *range_of(pte_t *ptep, unsigned int *idx)
{
	struct ipte_range *range = this_cpu_read(ipte_range);

	lockdep_assert_preemption_disabled();
	if (!range || !range->base_pte)
		return NULL;
	if (ptep < range->base_pte || ptep >= range->base_pte + range_nr(range))
		return NULL;
	*idx = ptep - range->base_pte;
	return range;
}

/*
 * An interrupt is not part of the section it interrupted: its updates must
 * reach memory at once, so the eager code makes them. Write out this CPU's
 * pending value for @ptep first, so that the eager code starts from it.
 */
static void range_release(struct ipte_range *range, pte_t *ptep, unsigned int idx)
{
	kasan_unpoison_pte(ptep, 1);
	if (!slot_pending(range, idx))
		return;
	if (!(pte_val(__ptep_get(ptep)) & _PAGE_INVALID))
		range_invalidate(range, ptep, 1);
	__set_pte(ptep, range->cache[idx]);
	slot_empty(range, idx);
}

/* This CPU's range for an update of @ptep, NULL if the eager code does it. */
static struct ipte_range *range_for_update(pte_t *ptep, unsigned int *idx)
{
	struct ipte_range *range = range_of(ptep, idx);

	if (range && in_interrupt()) {
		range_release(range, ptep, *idx);
		return NULL;
	}
	return range;
}

bool __lazy_mmu_set_pte(pte_t *ptep, pte_t pte)
{
	struct ipte_range *range;
	unsigned int idx;

	range = range_for_update(ptep, &idx);
	if (!range)
		return false;
	slot_fill(range, ptep, idx, pte);
	return true;
}
EXPORT_SYMBOL_IF_KUNIT(__lazy_mmu_set_pte);

bool __lazy_mmu_ptep_get(pte_t *ptep, pte_t *res)
{
	struct ipte_range *range;
	unsigned int idx;

	/* Also in interrupt context: this CPU's view includes its pending values. */
	range = range_of(ptep, &idx);
	if (!range)
		return false;
	*res = range_current(range, ptep, idx);
	return true;
}
EXPORT_SYMBOL_IF_KUNIT(__lazy_mmu_ptep_get);

bool __lazy_mmu_ptep_test_and_clear_young(unsigned long addr, pte_t *ptep, int *res)
{
	struct ipte_range *range;
	unsigned int idx;
	pte_t pte;

	range = range_for_update(ptep, &idx);
	if (!range)
		return false;
	pte = range_current(range, ptep, idx);
	*res = pte_young(pte);
	range_invalidate_now(range, ptep, pte, POLICY_DIRECT);
	slot_fill(range, ptep, idx, pte_mkold(pte));
	return true;
}
EXPORT_SYMBOL_IF_KUNIT(__lazy_mmu_ptep_test_and_clear_young);

bool __lazy_mmu_ptep_get_and_clear(unsigned long addr, pte_t *ptep, pte_t *res)
{
	struct ipte_range *range;
	unsigned int idx;

	range = range_for_update(ptep, &idx);
	if (!range)
		return false;
	*res = range_current(range, ptep, idx);
	range_invalidate_now(range, ptep, *res, POLICY_LAZY);
	slot_fill(range, ptep, idx, __pte(_PAGE_INVALID));
	return true;
}
EXPORT_SYMBOL_IF_KUNIT(__lazy_mmu_ptep_get_and_clear);

/*
 * Full-mm teardown clears PTEs without any IPTE, the whole mm is flushed
 * once afterwards. Batching cannot beat that: write out what is pending
 * and let the eager code clear the entry in memory.
 */
bool __lazy_mmu_ptep_get_and_clear_full(unsigned long addr, pte_t *ptep, pte_t *res)
{
	struct ipte_range *range;
	unsigned int idx;

	range = range_for_update(ptep, &idx);
	if (!range)
		return false;
	range_apply(range);
	kasan_unpoison_pte(ptep, 1);
	return false;
}
EXPORT_SYMBOL_IF_KUNIT(__lazy_mmu_ptep_get_and_clear_full);

bool __lazy_mmu_ptep_modify_prot_start(unsigned long addr, pte_t *ptep, pte_t *res)
{
	struct ipte_range *range;
	unsigned int idx;
	pte_t pte;

	range = range_for_update(ptep, &idx);
	if (!range)
		return false;
	pte = range_current(range, ptep, idx);
	*res = pte;
	range_invalidate_now(range, ptep, pte, POLICY_LAZY);
	slot_fill(range, ptep, idx, __pte(pte_val(pte) | _PAGE_INVALID));
	return true;
}
EXPORT_SYMBOL_IF_KUNIT(__lazy_mmu_ptep_modify_prot_start);

bool __lazy_mmu_ptep_modify_prot_commit(unsigned long addr, pte_t *ptep,
					pte_t old_pte, pte_t pte)
{
	struct ipte_range *range;
	unsigned int idx;

	range = range_for_update(ptep, &idx);
	if (!range)
		return false;
	slot_fill(range, ptep, idx, pte);
	return true;
}
EXPORT_SYMBOL_IF_KUNIT(__lazy_mmu_ptep_modify_prot_commit);

bool __lazy_mmu_ptep_set_wrprotect(unsigned long addr, pte_t *ptep)
{
	struct ipte_range *range;
	unsigned int idx;
	pte_t pte;

	range = range_for_update(ptep, &idx);
	if (!range)
		return false;
	pte = range_current(range, ptep, idx);
	if (pte_write(pte)) {
		range_invalidate_now(range, ptep, pte, POLICY_LAZY);
		slot_fill(range, ptep, idx, pte_wrprotect(pte));
	}
	return true;
}
EXPORT_SYMBOL_IF_KUNIT(__lazy_mmu_ptep_set_wrprotect);

/* Write out and drop a recorded range: what leaving the mode does. */
static void range_finish(struct ipte_range *range)
{
	range_apply(range);
	kasan_unpoison_pte(range->base_pte, range_nr(range));
	range_forget(range);
}

/*
 * Preemption stays disabled until arch_leave_lazy_mmu_mode(). A range still
 * recorded here belongs to a section that was never left (the task state was
 * lost under it): its updates are written out rather than dropped.
 */
static struct ipte_range *lazy_mmu_enter(void)
{
	struct ipte_range *range;

	range = get_cpu_var(ipte_range);
	get_lowcore()->lazy_mmu_count++;
	if (range && range->base_pte)
		range_finish(range);
	return range;
}

void arch_enter_lazy_mmu_mode(void)
{
	if (!test_facility(13))
		return;
	lazy_mmu_enter();
}
EXPORT_SYMBOL_IF_KUNIT(arch_enter_lazy_mmu_mode);

void arch_enter_lazy_mmu_mode_with_ptes(struct mm_struct *mm, unsigned long addr,
					unsigned long end, pte_t *pte)
{
	struct ipte_range *range;

	if (!test_facility(13))
		return;
	range = lazy_mmu_enter();
	if (!range || !range_sane(mm, addr, end, pte))
		return;
	range->mm = mm;
	range->base_addr = addr;
	range->base_end = end;
	range->base_pte = pte;
	range_reset_window(range);
	/* From now on, only this file may touch these PTEs directly. */
	kasan_poison_pte(pte, range_nr(range));
}
EXPORT_SYMBOL_IF_KUNIT(arch_enter_lazy_mmu_mode_with_ptes);

void arch_leave_lazy_mmu_mode(void)
{
	struct ipte_range *range;

	if (!test_facility(13))
		return;
	range = this_cpu_read(ipte_range);
	if (range && range->base_pte) {
		range_apply(range);
		kasan_unpoison_pte(range->base_pte, range_nr(range));
		range_forget(range);
	}
	get_lowcore()->lazy_mmu_count--;
	put_cpu_var(ipte_range);
}
EXPORT_SYMBOL_IF_KUNIT(arch_leave_lazy_mmu_mode);

/* A nested section ended: its caller relies on every update being done. */
void arch_flush_lazy_mmu_mode(void)
{
	struct ipte_range *range;

	if (!test_facility(13))
		return;
	range = this_cpu_read(ipte_range);
	if (range && range->base_pte)
		range_apply(range);
}
EXPORT_SYMBOL_IF_KUNIT(arch_flush_lazy_mmu_mode);

int lazy_mmu_online_cpu(gfp_t gfp, unsigned int cpu)
{
	struct ipte_range *range;
	int i;

	/* Without IPTE-range there is nothing to batch. */
	if (!test_facility(13))
		return 0;
	range = per_cpu(ipte_range, cpu);
	if (range) {
		/* Online again under a section that was never left: write it out. */
		if (range->base_pte)
			range_finish(range);
		return 0;
	}
	range = kzalloc_obj(*range, gfp);
	if (!range)
		return -ENOMEM;
	for (i = 0; i < PTRS_PER_PTE; i++)
		range->cache[i] = __pte(PTE_POISON);
	per_cpu(ipte_range, cpu) = range;
	return 0;
}
EXPORT_SYMBOL_IF_KUNIT(lazy_mmu_online_cpu);

void lazy_mmu_offline_cpu(unsigned int cpu)
{
	struct ipte_range *range = per_cpu(ipte_range, cpu);

	/* Updates still batched when the CPU goes are written out, not lost. */
	if (range && range->base_pte)
		range_finish(range);
	kfree(range);
	per_cpu(ipte_range, cpu) = NULL;
}
EXPORT_SYMBOL_IF_KUNIT(lazy_mmu_offline_cpu);

/* A failure only leaves the boot CPU without batching. */
void __init lazy_mmu_online_boot_cpu(void)
{
	lazy_mmu_online_cpu(GFP_KERNEL, 0);
}
