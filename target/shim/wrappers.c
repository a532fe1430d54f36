// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The inline wrappers of arch/s390/include/asm/pgtable.h for the generation
 * (LAZYMMU_GEN: 1 = RFC, 2 = v2, 3 = v3 and later): set_pte, ptep_get, pte_clear,
 * ptep_get_and_clear(_full), ptep_test_and_clear_young, the modify-prot transaction and
 * ptep_set_wrprotect first try the routing function of the implementation under test
 * (__lazy_mmu_* in v3+, ipte_batch_* in RFC and v2), then fall back to the eager code
 * (eager.c).
 *
 * Separate because it is the one part that differs per generation: which function is
 * tried, with which arguments, and who tests whether lazy-MMU mode is active.
 *
 * Not compiled on its own: runtime.c includes it after eager.c, whose static functions
 * it calls.
 */
#ifndef LAZYMMU_SHIM_RUNTIME
#error "wrappers.c is part of runtime.c: compile runtime.c, which includes it"
#endif

#include <linux/pgtable.h>

#if LAZYMMU_GEN >= 3
/* v3+: the wrapper gates on this CPU's lowcore count; the functions check nothing. */
#define routed(call)	(get_lowcore()->lazy_mmu_count != 0 && (call))
#pragma weak __lazy_mmu_ptep_get_and_clear_full
#define R_SET_PTE(ptep, pte)		__lazy_mmu_set_pte(ptep, pte)
#define R_GET(ptep, res)		__lazy_mmu_ptep_get(ptep, res)
#define R_YOUNG(vma, addr, ptep, res)	__lazy_mmu_ptep_test_and_clear_young(addr, ptep, res)
#define R_GAC(mm, addr, ptep, res)	__lazy_mmu_ptep_get_and_clear(addr, ptep, res)
#define R_START(vma, addr, ptep, res)	__lazy_mmu_ptep_modify_prot_start(addr, ptep, res)
#define R_COMMIT(vma, addr, ptep, o, n)	__lazy_mmu_ptep_modify_prot_commit(addr, ptep, o, n)
#define R_WRPROTECT(mm, addr, ptep)	__lazy_mmu_ptep_set_wrprotect(addr, ptep)
#else
/* RFC, v2: the ipte_batch_* functions test is_lazy_mmu_mode_active() themselves. */
#define routed(call)	(call)
#define R_SET_PTE(ptep, pte)		ipte_batch_set_pte(ptep, pte)
#define R_GET(ptep, res)		ipte_batch_ptep_get(ptep, res)
#define R_YOUNG(vma, addr, ptep, res)	ipte_batch_ptep_test_and_clear_young(vma, addr, ptep, res)
#define R_GAC(mm, addr, ptep, res)	ipte_batch_ptep_get_and_clear(mm, addr, ptep, res)
#define R_START(vma, addr, ptep, res)	ipte_batch_ptep_modify_prot_start(vma, addr, ptep, res)
#define R_COMMIT(vma, addr, ptep, o, n)	ipte_batch_ptep_modify_prot_commit(vma, addr, ptep, o, n)
#define R_WRPROTECT(mm, addr, ptep)	ipte_batch_ptep_set_wrprotect(mm, addr, ptep)
#endif

void set_pte(pte_t *ptep, pte_t pte)
{
	if (routed(R_SET_PTE(ptep, pte)))
		return;
	__set_pte(ptep, pte);
}

pte_t ptep_get(pte_t *ptep)
{
	pte_t res;

	if (routed(R_GET(ptep, &res)))
		return res;
	return __ptep_get(ptep);
}

/* The generic ptep_get_lockless() is ptep_get(). */
pte_t ptep_get_lockless(pte_t *ptep)
{
	return ptep_get(ptep);
}

/* Not routed: the caller guarantees the old entry is invalid. */
void pte_clear(struct mm_struct *mm, unsigned long addr, pte_t *ptep)
{
	(void)mm;
	(void)addr;
	set_pte(ptep, __pte(_PAGE_INVALID));
}

int ptep_test_and_clear_young(struct vm_area_struct *vma, unsigned long addr, pte_t *ptep)
{
	int res;
	pte_t old;

	if (routed(R_YOUNG(vma, addr, ptep, &res)))
		return res;
	old = __ptep_get(ptep);
	old = ptep_xchg_direct(vma->vm_mm, addr, ptep, pte_mkold(old));
	return pte_young(old);
}

pte_t ptep_get_and_clear(struct mm_struct *mm, unsigned long addr, pte_t *ptep)
{
	pte_t res;

	if (!routed(R_GAC(mm, addr, ptep, &res)))
		res = ptep_xchg_lazy(mm, addr, ptep, __pte(_PAGE_INVALID));
	uv_after_clear(mm, ptep, res, 0);
	return res;
}

pte_t ptep_get_and_clear_full(struct mm_struct *mm, unsigned long addr, pte_t *ptep, int full)
{
	pte_t res;
	bool done;

#if LAZYMMU_GEN >= 3
	if (full && __lazy_mmu_ptep_get_and_clear_full)
		done = routed(__lazy_mmu_ptep_get_and_clear_full(addr, ptep, &res));
	else
		done = routed(__lazy_mmu_ptep_get_and_clear(addr, ptep, &res));
#elif LAZYMMU_GEN == 2
	done = ipte_batch_ptep_get_and_clear(mm, addr, ptep, &res);
#else
	done = ipte_batch_ptep_get_and_clear_full(mm, addr, ptep, full, &res);
#endif
	if (!done) {
		if (full) {
			/* exit_mmap: the whole mm is flushed once at teardown. */
			res = __ptep_get(ptep);
			__set_pte(ptep, __pte(_PAGE_INVALID));
		} else {
			res = ptep_xchg_lazy(mm, addr, ptep, __pte(_PAGE_INVALID));
		}
	}
	uv_after_clear(mm, ptep, res, full);
	return res;
}

pte_t ptep_modify_prot_start(struct vm_area_struct *vma, unsigned long addr, pte_t *ptep)
{
	pte_t res;

	if (routed(R_START(vma, addr, ptep, &res)))
		return res;
	return ___ptep_modify_prot_start(vma->vm_mm, addr, ptep);
}

void ptep_modify_prot_commit(struct vm_area_struct *vma, unsigned long addr, pte_t *ptep,
			     pte_t old_pte, pte_t pte)
{
	if (routed(R_COMMIT(vma, addr, ptep, old_pte, pte)))
		return;
	___ptep_modify_prot_commit(ptep, pte);
}

void ptep_set_wrprotect(struct mm_struct *mm, unsigned long addr, pte_t *ptep)
{
	pte_t pte;

	if (routed(R_WRPROTECT(mm, addr, ptep)))
		return;
	pte = __ptep_get(ptep);
	if (pte_write(pte))
		ptep_xchg_lazy(mm, addr, ptep, pte_wrprotect(pte));
}

#undef routed
#undef R_SET_PTE
#undef R_GET
#undef R_YOUNG
#undef R_GAC
#undef R_START
#undef R_COMMIT
#undef R_WRPROTECT
