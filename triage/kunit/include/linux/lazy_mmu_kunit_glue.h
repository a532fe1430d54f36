/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Glue for the KUnit cases the lazymmu rig exports (triage/src/export.rs): the test's
 * mms, vmas and page-table locks, the rig's machine settings, and the declarations the
 * cases call.
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
 * The rig's machine, set up by every exported case (no-ops in a kernel, which runs the
 * case on the machine it has):
 *
 *   lazy_mmu_test_machine(test, cpus, facility13, tlb_lc);  CPUs and facilities
 *   lazy_mmu_test_attach(test, mm, mask);                   CPUs the mm is attached to
 *   lazy_mmu_test_table(test, mm, pt);                      pt is a page table of mm
 *   lazy_mmu_test_cpu(test, cpu);                           the steps that follow run
 *                                                           as that CPU
 *
 * Sequencing of several CPUs: a case runs in one test thread. In userspace, the rig's
 * shim keeps a lazy-MMU state, lowcore, preemption and interrupt depth per simulated CPU
 * and a "current CPU"; lazy_mmu_test_cpu() switches that current CPU, and an exported
 * case calls it before every step of a multi-CPU program, so the steps run one after
 * the other, in program order, each as its own CPU, exactly as the rig ran them. Steps
 * a kernel task cannot make (another CPU's lazy-MMU calls and locks, interrupt entry,
 * hardware translations, context switches, hotplug) are in `#ifndef __KERNEL__` blocks
 * or glue calls that are no-ops in a kernel.
 *
 * In a kernel tree (__KERNEL__), copy this file to include/linux/ next to the tests.
 * The rig compiles and runs the userspace branch (triage/kunit/runner/); the kernel
 * branch is a starting point and has not been built by the rig.
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

/* The rig's machine model: nothing to do on a real machine. */
static inline void lazy_mmu_test_machine(struct kunit *test, int cpus, bool facility13,
					 bool tlb_lc) { }
static inline void lazy_mmu_test_attach(struct kunit *test, struct mm_struct *mm,
					unsigned long mask) { }
#define lazy_mmu_test_table(test, mm, pt)	((void)(test), (void)(mm), (void)(pt))
static inline void lazy_mmu_test_cpu(struct kunit *test, int cpu) { }
static inline void lazy_mmu_test_access(struct kunit *test, struct mm_struct *mm,
					unsigned long addr, pte_t *ptep, bool write) { }
static inline void lazy_mmu_test_irq_enter(struct kunit *test) { }
static inline void lazy_mmu_test_irq_exit(struct kunit *test) { }
static inline void lazy_mmu_test_switch_mm(struct kunit *test, struct mm_struct *mm) { }
static inline void lazy_mmu_test_cpu_offline(struct kunit *test) { }
static inline void lazy_mmu_test_cpu_online(struct kunit *test) { }

#else /* the rig's userspace shim */

#include <kunit/test.h>
#include <linux/pgtable.h>

/*
 * Test mms are the shim's own mm structures (struct lazymmu_shim), numbered in the
 * order the case asks for them, as the rig numbers a program's mms.
 */
struct mm_struct *lazy_mmu_test_mm(struct kunit *test);
struct mm_struct *lazy_mmu_test_protected_mm(struct kunit *test);
struct mm_struct *lazy_mmu_test_init_mm(struct kunit *test);

static inline struct vm_area_struct *lazy_mmu_test_vma(struct kunit *test,
							struct mm_struct *mm)
{
	struct vm_area_struct *vma = kunit_kzalloc(test, sizeof(*vma), GFP_KERNEL);

	if (vma)
		vma->vm_mm = mm;
	return vma;
}

/*
 * The machine (triage/kunit/runner/lazy_mmu_kunit_glue.c). It keeps a small model of
 * the rig's machine and reports, as failures of the case at the line of the call that
 * caused them: a store that changes a valid PTE without an IPTE first (on an mm some
 * other CPU may run), an ultravisor call on a valid PTE, a kernel assertion of the shim
 * (lockdep and friends), and a TLB entry of any CPU that still translates a changed
 * PTE after the caller's flush_tlb_range() / flush_tlb_mm() / flush_tlb_kernel_range().
 */
void lazy_mmu_test_machine(struct kunit *test, int cpus, bool facility13, bool tlb_lc);
void lazy_mmu_test_attach(struct kunit *test, struct mm_struct *mm, unsigned long mask);
void lazy_mmu_test_table_named(struct kunit *test, struct mm_struct *mm, pte_t *pt,
			       const char *name);
#define lazy_mmu_test_table(test, mm, pt)	lazy_mmu_test_table_named(test, mm, pt, #pt)
void lazy_mmu_test_cpu(struct kunit *test, int cpu);
/* A hardware translation by the current CPU: fills its TLB if the PTE is valid. */
void lazy_mmu_test_access(struct kunit *test, struct mm_struct *mm, unsigned long addr,
			  pte_t *ptep, bool write);
void lazy_mmu_test_irq_enter(struct kunit *test);
void lazy_mmu_test_irq_exit(struct kunit *test);
/* Switches the current CPU to mm (NULL: to no user mm). */
void lazy_mmu_test_switch_mm(struct kunit *test, struct mm_struct *mm);
void lazy_mmu_test_cpu_offline(struct kunit *test);
void lazy_mmu_test_cpu_online(struct kunit *test);

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
 * defines these static in runtime.c; the glue calls them through lazymmu_shim_op().
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

/*
 * Every kernel call of a case first records its file:line, so that what the machine
 * model finds during the call is reported there. (A function-like macro is not
 * expanded again inside its own expansion: the call itself is the function.)
 */
void lazy_mmu_test_at(const char *file, int line);
#ifndef LAZY_MMU_TEST_GLUE_IMPL
#define LAZY_MMU_TEST_AT(call)		(lazy_mmu_test_at(__FILE__, __LINE__), call)
#define lazy_mmu_mode_enable(...)	LAZY_MMU_TEST_AT(lazy_mmu_mode_enable(__VA_ARGS__))
#define lazy_mmu_mode_enable_with_ptes(...) \
	LAZY_MMU_TEST_AT(lazy_mmu_mode_enable_with_ptes(__VA_ARGS__))
#define lazy_mmu_mode_disable(...)	LAZY_MMU_TEST_AT(lazy_mmu_mode_disable(__VA_ARGS__))
#define lazy_mmu_mode_pause(...)	LAZY_MMU_TEST_AT(lazy_mmu_mode_pause(__VA_ARGS__))
#define lazy_mmu_mode_resume(...)	LAZY_MMU_TEST_AT(lazy_mmu_mode_resume(__VA_ARGS__))
#define is_lazy_mmu_mode_active(...)	LAZY_MMU_TEST_AT(is_lazy_mmu_mode_active(__VA_ARGS__))
#define set_pte(...)			LAZY_MMU_TEST_AT(set_pte(__VA_ARGS__))
#define set_ptes(...)			LAZY_MMU_TEST_AT(set_ptes(__VA_ARGS__))
#define pte_clear(...)			LAZY_MMU_TEST_AT(pte_clear(__VA_ARGS__))
#define ptep_get(...)			LAZY_MMU_TEST_AT(ptep_get(__VA_ARGS__))
#define ptep_get_lockless(...)		LAZY_MMU_TEST_AT(ptep_get_lockless(__VA_ARGS__))
#define ptep_get_and_clear(...)		LAZY_MMU_TEST_AT(ptep_get_and_clear(__VA_ARGS__))
#define ptep_get_and_clear_full(...)	LAZY_MMU_TEST_AT(ptep_get_and_clear_full(__VA_ARGS__))
#define ptep_clear_flush(...)		LAZY_MMU_TEST_AT(ptep_clear_flush(__VA_ARGS__))
#define ptep_test_and_clear_young(...)	LAZY_MMU_TEST_AT(ptep_test_and_clear_young(__VA_ARGS__))
#define ptep_modify_prot_start(...)	LAZY_MMU_TEST_AT(ptep_modify_prot_start(__VA_ARGS__))
#define ptep_modify_prot_commit(...)	LAZY_MMU_TEST_AT(ptep_modify_prot_commit(__VA_ARGS__))
#define ptep_set_wrprotect(...)		LAZY_MMU_TEST_AT(ptep_set_wrprotect(__VA_ARGS__))
#define flush_tlb_range(...)		LAZY_MMU_TEST_AT(flush_tlb_range(__VA_ARGS__))
#define flush_tlb_mm(...)		LAZY_MMU_TEST_AT(flush_tlb_mm(__VA_ARGS__))
#define flush_tlb_kernel_range(...)	LAZY_MMU_TEST_AT(flush_tlb_kernel_range(__VA_ARGS__))
#endif

#endif /* __KERNEL__ */

#endif
