/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Glue for the KUnit cases the lazymmu rig exports (triage/src/export.rs): the test's
 * mms, vmas and page-table locks, and the declarations the cases call.
 *
 *   struct mm_struct *mm = lazy_mmu_test_mm(test);          a user mm of the test
 *   struct mm_struct *mm = lazy_mmu_test_protected_mm(test); a secure-execution mm,
 *                                                            NULL if the test has none
 *   struct mm_struct *mm = lazy_mmu_test_init_mm(test);     init_mm (kernel mappings)
 *   struct vm_area_struct *vma = lazy_mmu_test_vma(test, mm);
 *
 * A test never uses current->mm: the calls would then act on the KUnit thread's own
 * address space (and its CPUs' TLBs).
 *
 * In a kernel tree (__KERNEL__), copy this file to include/linux/ next to the tests.
 * The rig only compiles the userspace branch (gcc -fsyntax-only against its shim); the
 * kernel branch is a starting point and has not been built by the rig.
 */
#ifndef LAZYMMU_KUNIT_GLUE_H
#define LAZYMMU_KUNIT_GLUE_H

#ifdef __KERNEL__

#include <kunit/test.h>
#include <linux/mm.h>
#include <linux/pgtable.h>
#include <linux/sched/mm.h>
#include <linux/spinlock.h>
#include <asm/tlbflush.h>

static void lazy_mmu_test_mmput(void *mm)
{
	mmput(mm);
}

static inline struct mm_struct *lazy_mmu_test_mm(struct kunit *test)
{
	struct mm_struct *mm = mm_alloc();

	KUNIT_ASSERT_NOT_NULL(test, mm);
	KUNIT_ASSERT_EQ(test, kunit_add_action_or_reset(test, lazy_mmu_test_mmput, mm), 0);
	return mm;
}

/* A KUnit test cannot make a secure-execution guest: the case skips. */
static inline struct mm_struct *lazy_mmu_test_protected_mm(struct kunit *test)
{
	(void)test;
	return NULL;
}

#define lazy_mmu_test_init_mm(test)	(&init_mm)

static inline struct vm_area_struct *lazy_mmu_test_vma(struct kunit *test,
							struct mm_struct *mm)
{
	struct vm_area_struct *vma = kunit_kzalloc(test, sizeof(*vma), GFP_KERNEL);

	KUNIT_ASSERT_NOT_NULL(test, vma);
	vma_init(vma, mm);
	return vma;
}

#else /* the rig's userspace shim */

#include <kunit/test.h>
#include <linux/pgtable.h>

/* Test mms and vmas: zeroed structures that live as long as the case. */
static inline struct mm_struct *lazy_mmu_test_mm(struct kunit *test)
{
	return kunit_kzalloc(test, sizeof(struct mm_struct), GFP_KERNEL);
}

static inline struct mm_struct *lazy_mmu_test_protected_mm(struct kunit *test)
{
	struct mm_struct *mm = lazy_mmu_test_mm(test);

	if (mm)
		mm->context.is_protected = 1;
	return mm;
}

extern struct mm_struct init_mm;
#define lazy_mmu_test_init_mm(test)	((void)(test), &init_mm)

static inline struct vm_area_struct *lazy_mmu_test_vma(struct kunit *test,
							struct mm_struct *mm)
{
	struct vm_area_struct *vma = kunit_kzalloc(test, sizeof(*vma), GFP_KERNEL);

	if (vma)
		vma->vm_mm = mm;
	return vma;
}

/* Page-table locks: one task, so a flag that catches unbalanced use. */
typedef struct {
	int locked;
} spinlock_t;

static inline void spin_lock_init(spinlock_t *lock)
{
	lock->locked = 0;
}
static inline void spin_lock(spinlock_t *lock)
{
	lock->locked++;
}
static inline void spin_unlock(spinlock_t *lock)
{
	lock->locked--;
}

/*
 * The generic lazy-MMU layer (include/linux/pgtable.h of the series). The shim
 * defines these static in runtime.c; the exported tests only need to compile here.
 * is_lazy_mmu_mode_active() is in the shim's <linux/pgtable.h>.
 */
void lazy_mmu_mode_enable(void);
void lazy_mmu_mode_enable_with_ptes(struct mm_struct *mm, unsigned long addr,
				    unsigned long end, pte_t *ptep);
void lazy_mmu_mode_disable(void);
void lazy_mmu_mode_pause(void);
void lazy_mmu_mode_resume(void);

/* Page-table and TLB functions the shim's headers do not declare. */
void set_ptes(struct mm_struct *mm, unsigned long addr, pte_t *ptep, pte_t pte,
	      unsigned int nr);
void flush_tlb_range(struct vm_area_struct *vma, unsigned long start, unsigned long end);
void flush_tlb_mm(struct mm_struct *mm);
void flush_tlb_kernel_range(unsigned long start, unsigned long end);

#endif /* __KERNEL__ */

#endif
