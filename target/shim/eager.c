// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Duplicated eager base code: the s390 page-table and TLB code the series builds on
 * (arch/s390/mm/pgtable.c and friends): ptep_xchg_direct/lazy, the modify-prot
 * transaction, ptep_clear_flush, the tlb_flush_* family, the owed flush at switch-in and
 * the Ultravisor call after a clear, written for userspace from docs/semantics.md#policies
 * and docs/semantics.md#eager.
 *
 * Separate because it is the baseline, the same for every generation: the wrappers
 * (wrappers.c) fall back to it when the implementation under test does not take an
 * operation, and the rig runs it directly for the operations no generation routes.
 *
 * Not compiled on its own: runtime.c includes it, so that its static helpers stay static
 * in the one runtime object (see the comment there).
 */
#ifndef LAZYMMU_SHIM_RUNTIME
#error "eager.c is part of runtime.c: compile runtime.c, which includes it"
#endif

#include <linux/pgtable.h>

static int mm_id(struct mm_struct *mm)
{
	return mm->context.id;
}

static void ptep_ipte_local_or_global(struct mm_struct *mm, unsigned long addr, pte_t *ptep,
				      int local)
{
	(void)mm;
	__ptep_ipte(addr, ptep, 0, 0, local);
}

/* Direct policy: local IPTE if only this CPU may hold TLB entries and TLB-LC is there. */
static pte_t ptep_flush_direct(struct mm_struct *mm, unsigned long addr, pte_t *ptep)
{
	pte_t old = __ptep_get(ptep);

	if (pte_val(old) & _PAGE_INVALID)
		return old;
	atomic_inc(&mm->context.flush_count);
	if (cpu_has_tlb_lc() && cpumask_equal(mm_cpumask(mm), cpumask_of(smp_processor_id())))
		ptep_ipte_local_or_global(mm, addr, ptep, IPTE_LOCAL);
	else
		ptep_ipte_local_or_global(mm, addr, ptep, IPTE_GLOBAL);
	atomic_dec(&mm->context.flush_count);
	return old;
}

/* Lazy policy: on an mm only this CPU runs, set I and owe a full flush. */
static pte_t ptep_flush_lazy(struct mm_struct *mm, unsigned long addr, pte_t *ptep)
{
	pte_t old = __ptep_get(ptep);

	if (pte_val(old) & _PAGE_INVALID)
		return old;
	atomic_inc(&mm->context.flush_count);
	if (cpumask_equal(&mm->context.cpu_attach_mask, cpumask_of(smp_processor_id()))) {
		__set_pte(ptep, set_pte_bit(old, _PAGE_INVALID));
		mm->context.flush_mm = 1;
	} else {
		ptep_ipte_local_or_global(mm, addr, ptep, IPTE_GLOBAL);
	}
	atomic_dec(&mm->context.flush_count);
	return old;
}

pte_t ptep_xchg_direct(struct mm_struct *mm, unsigned long addr, pte_t *ptep, pte_t new)
{
	pte_t old;

	preempt_disable();
	old = ptep_flush_direct(mm, addr, ptep);
	__set_pte(ptep, new);
	preempt_enable();
	return old;
}

pte_t ptep_xchg_lazy(struct mm_struct *mm, unsigned long addr, pte_t *ptep, pte_t new)
{
	pte_t old;

	preempt_disable();
	old = ptep_flush_lazy(mm, addr, ptep);
	__set_pte(ptep, new);
	preempt_enable();
	return old;
}

static pte_t ___ptep_modify_prot_start(struct mm_struct *mm, unsigned long addr, pte_t *ptep)
{
	pte_t old;

	preempt_disable();
	old = ptep_flush_lazy(mm, addr, ptep);
	preempt_enable();
	return old;
}

static void ___ptep_modify_prot_commit(pte_t *ptep, pte_t pte)
{
	__set_pte(ptep, pte);
}

/* Not routed by any generation. */
pte_t ptep_clear_flush(struct vm_area_struct *vma, unsigned long addr, pte_t *ptep)
{
	return ptep_xchg_direct(vma->vm_mm, addr, ptep, __pte(_PAGE_INVALID));
}

static void tlb_flush_mm(struct mm_struct *mm)
{
	atomic_inc(&mm->context.flush_count);
	cpumask_copy(mm_cpumask(mm), &mm->context.cpu_attach_mask);
	lazymmu_shim.cb.idte(lazymmu_shim.cb.ctx, mm_id(mm));
	atomic_dec(&mm->context.flush_count);
}

static void tlb_flush_mm_lazy(struct mm_struct *mm)
{
	if (mm->context.flush_mm) {
		mm->context.flush_mm = 0;
		tlb_flush_mm(mm);
	}
}

static void flush_tlb_range(struct mm_struct *mm, int is_init_mm)
{
	if (is_init_mm)
		lazymmu_shim.cb.idte(lazymmu_shim.cb.ctx, mm_id(mm)); /* flush_tlb_kernel_range */
	else
		tlb_flush_mm_lazy(mm);
}

/* finish_arch_post_lock_switch: join mm_cpumask, then the owed flush. */
static void switch_in(struct mm_struct *mm)
{
	if (atomic_read(&mm->context.flush_count))
		lazymmu_shim_report("switch_mm with a flush in progress");
	cpumask_set_cpu(smp_processor_id(), mm_cpumask(mm));
	tlb_flush_mm_lazy(mm);
}

static void uv_after_clear(struct mm_struct *mm, pte_t *ptep, pte_t old, int full)
{
	if (!mm_is_protected(mm) || !pte_present(old))
		return;
	lazymmu_shim.cb.uv(lazymmu_shim.cb.ctx, &ptep->pte, full ? 1 : 0);
}
