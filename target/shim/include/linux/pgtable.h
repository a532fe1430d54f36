/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The shim's <linux/pgtable.h>: PTE helpers, the generic lazy-MMU layer's state test, and
 * the prototypes of every generation's arch hooks and routing functions, so that any of
 * the posted implementation files compiles unchanged against it. The wrappers themselves
 * (set_pte, ptep_get, ...) are defined in wrappers.c for the detected generation, the eager
 * code they fall back to in eager.c (both part of runtime.c).
 */
#ifndef LAZYMMU_SHIM_LINUX_PGTABLE_H
#define LAZYMMU_SHIM_LINUX_PGTABLE_H

#include <shim/types.h>
#include <shim/stubs.h>
#include <shim/hooks.h>

/* PTE helpers (docs/semantics.md#pte-format). */
static inline int pte_none(pte_t pte) { return pte_val(pte) == _PAGE_INVALID; }
static inline int pte_present(pte_t pte) { return (pte_val(pte) & _PAGE_PRESENT) != 0; }
static inline int pte_young(pte_t pte) { return (pte_val(pte) & _PAGE_YOUNG) != 0; }
static inline int pte_dirty(pte_t pte) { return (pte_val(pte) & _PAGE_DIRTY) != 0; }
static inline int pte_write(pte_t pte) { return (pte_val(pte) & _PAGE_WRITE) != 0; }
static inline unsigned long pte_pfn(pte_t pte) { return pte_val(pte) >> PAGE_SHIFT; }
static inline pte_t pte_mkold(pte_t pte)
{
	return __pte((pte_val(pte) & ~_PAGE_YOUNG) | _PAGE_INVALID);
}
static inline pte_t pte_mkyoung(pte_t pte)
{
	unsigned long v = pte_val(pte) | _PAGE_YOUNG;

	if (v & _PAGE_READ)
		v &= ~_PAGE_INVALID;
	return __pte(v);
}
static inline pte_t pte_wrprotect(pte_t pte)
{
	return __pte((pte_val(pte) & ~_PAGE_WRITE) | _PAGE_PROTECT);
}
static inline pte_t pte_mkwrite_novma(pte_t pte)
{
	unsigned long v = pte_val(pte) | _PAGE_WRITE;

	if (v & _PAGE_DIRTY)
		v &= ~_PAGE_PROTECT;
	return __pte(v);
}
static inline pte_t set_pte_bit(pte_t pte, unsigned long bits) { return __pte(pte_val(pte) | bits); }
static inline pte_t clear_pte_bit(pte_t pte, unsigned long bits) { return __pte(pte_val(pte) & ~bits); }

/* The generic layer's test (include/linux/pgtable.h); RFC and v2 route through it. */
static inline bool is_lazy_mmu_mode_active(void)
{
	struct lazy_mmu_state *state = &current->lazy_mmu_state;

	return !in_interrupt() && state->enable_count > 0 && state->pause_count == 0;
}

/* Arch hooks, every generation (each file defines its own subset). */
void arch_enter_lazy_mmu_mode(void);
void arch_leave_lazy_mmu_mode(void);
void arch_flush_lazy_mmu_mode(void);
void arch_enter_lazy_mmu_mode_with_ptes(struct mm_struct *mm, unsigned long addr,
					unsigned long end, pte_t *pte);		/* v3+ */
void arch_enter_lazy_mmu_mode_for_pte_range(struct mm_struct *mm, unsigned long addr,
					    unsigned long end, pte_t *pte);	/* v2 */
void arch_enter_lazy_mmu_mode_pte(struct mm_struct *mm, unsigned long addr,
				  unsigned long end, pte_t *pte);		/* RFC */

/* Routing functions, v3+. */
bool __lazy_mmu_set_pte(pte_t *ptep, pte_t pte);
bool __lazy_mmu_ptep_get(pte_t *ptep, pte_t *res);
bool __lazy_mmu_ptep_test_and_clear_young(unsigned long addr, pte_t *ptep, int *res);
bool __lazy_mmu_ptep_get_and_clear(unsigned long addr, pte_t *ptep, pte_t *res);
bool __lazy_mmu_ptep_get_and_clear_full(unsigned long addr, pte_t *ptep, pte_t *res);
bool __lazy_mmu_ptep_modify_prot_start(unsigned long addr, pte_t *ptep, pte_t *res);
bool __lazy_mmu_ptep_modify_prot_commit(unsigned long addr, pte_t *ptep, pte_t old_pte, pte_t pte);
bool __lazy_mmu_ptep_set_wrprotect(unsigned long addr, pte_t *ptep);

/* Routing functions, RFC and v2. */
bool ipte_batch_set_pte(pte_t *ptep, pte_t pte);
bool ipte_batch_ptep_get(pte_t *ptep, pte_t *res);
bool ipte_batch_ptep_test_and_clear_young(struct vm_area_struct *vma, unsigned long addr,
					  pte_t *ptep, int *res);
bool ipte_batch_ptep_get_and_clear(struct mm_struct *mm, unsigned long addr, pte_t *ptep,
				   pte_t *res);
bool ipte_batch_ptep_get_and_clear_full(struct mm_struct *mm, unsigned long addr, pte_t *ptep,
					int full, pte_t *res);
bool ipte_batch_ptep_modify_prot_start(struct vm_area_struct *vma, unsigned long addr,
				       pte_t *ptep, pte_t *res);
bool ipte_batch_ptep_modify_prot_commit(struct vm_area_struct *vma, unsigned long addr,
					pte_t *ptep, pte_t old_pte, pte_t pte);
bool ipte_batch_ptep_set_wrprotect(struct mm_struct *mm, unsigned long addr, pte_t *ptep);

/* The wrappers (wrappers.c) and the eager base code (eager.c). */
void set_pte(pte_t *ptep, pte_t pte);
pte_t ptep_get(pte_t *ptep);
pte_t ptep_get_lockless(pte_t *ptep);
void pte_clear(struct mm_struct *mm, unsigned long addr, pte_t *ptep);
int ptep_test_and_clear_young(struct vm_area_struct *vma, unsigned long addr, pte_t *ptep);
pte_t ptep_get_and_clear(struct mm_struct *mm, unsigned long addr, pte_t *ptep);
pte_t ptep_get_and_clear_full(struct mm_struct *mm, unsigned long addr, pte_t *ptep, int full);
pte_t ptep_modify_prot_start(struct vm_area_struct *vma, unsigned long addr, pte_t *ptep);
void ptep_modify_prot_commit(struct vm_area_struct *vma, unsigned long addr, pte_t *ptep,
			     pte_t old_pte, pte_t pte);
void ptep_set_wrprotect(struct mm_struct *mm, unsigned long addr, pte_t *ptep);
pte_t ptep_clear_flush(struct vm_area_struct *vma, unsigned long addr, pte_t *ptep);
pte_t ptep_xchg_direct(struct mm_struct *mm, unsigned long addr, pte_t *ptep, pte_t new);
pte_t ptep_xchg_lazy(struct mm_struct *mm, unsigned long addr, pte_t *ptep, pte_t new);

#endif
