// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The generic lazy-MMU layer of include/linux/pgtable.h (docs/semantics.md#generic-layer):
 * lazy_mmu_mode_enable, lazy_mmu_mode_enable_with_ptes, lazy_mmu_mode_disable,
 * lazy_mmu_mode_pause and lazy_mmu_mode_resume, calling the arch hooks under the names
 * of the generation (LAZYMMU_GEN). is_lazy_mmu_mode_active() is in the shim's
 * <linux/pgtable.h>, since the RFC and v2 implementation files call it themselves.
 *
 * Separate because it is mm/ code, not s390 code: the nesting and pause counting is the
 * same for every generation, only the arch hook names differ.
 *
 * Not compiled on its own: runtime.c includes it, so that these functions stay static
 * in the one runtime object (see the comment there).
 */
#ifndef LAZYMMU_SHIM_RUNTIME
#error "lazy_mmu_mode.c is part of runtime.c: compile runtime.c, which includes it"
#endif

#include <linux/pgtable.h>

#if LAZYMMU_GEN >= 3
#define gen_arch_enter()	arch_enter_lazy_mmu_mode()
#define gen_arch_enter_range(mm, addr, end, ptep) \
	arch_enter_lazy_mmu_mode_with_ptes(mm, addr, end, ptep)
#elif LAZYMMU_GEN == 2
#define gen_arch_enter()	do { } while (0)	/* empty inline on s390 */
#define gen_arch_enter_range(mm, addr, end, ptep) \
	arch_enter_lazy_mmu_mode_for_pte_range(mm, addr, end, ptep)
#else
#define gen_arch_enter()	do { } while (0)
#define gen_arch_enter_range(mm, addr, end, ptep) \
	arch_enter_lazy_mmu_mode_pte(mm, addr, end, ptep)
#endif

static void lazy_mmu_mode_enable(void)
{
	struct lazy_mmu_state *state = &current->lazy_mmu_state;

	if (in_interrupt() || state->pause_count > 0)
		return;
	if (state->enable_count++ == 0)
		gen_arch_enter();
}

/* lazy_mmu_mode_enable_with_ptes (v2: _for_pte_range, RFC: _pte). */
static void lazy_mmu_mode_enable_range(struct mm_struct *mm, unsigned long addr,
				       unsigned long end, pte_t *ptep)
{
	struct lazy_mmu_state *state = &current->lazy_mmu_state;

	if (in_interrupt() || state->pause_count > 0)
		return;
	if (state->enable_count++ == 0)
		gen_arch_enter_range(mm, addr, end, ptep);
}

static void lazy_mmu_mode_disable(void)
{
	struct lazy_mmu_state *state = &current->lazy_mmu_state;

	if (in_interrupt() || state->pause_count > 0)
		return;
	if (state->enable_count == 0)
		lazymmu_shim_report("lazy_mmu_mode_disable() without enable");
	if (--state->enable_count == 0)
		arch_leave_lazy_mmu_mode();
	else
		arch_flush_lazy_mmu_mode();
}

static void lazy_mmu_mode_pause(void)
{
	struct lazy_mmu_state *state = &current->lazy_mmu_state;

	if (in_interrupt())
		return;
	if (state->pause_count++ == 0 && state->enable_count > 0)
		arch_leave_lazy_mmu_mode();
}

static void lazy_mmu_mode_resume(void)
{
	struct lazy_mmu_state *state = &current->lazy_mmu_state;

	if (in_interrupt())
		return;
	if (state->pause_count == 0)
		lazymmu_shim_report("lazy_mmu_mode_resume() without pause");
	if (--state->pause_count == 0 && state->enable_count > 0)
		gen_arch_enter();
}

#undef gen_arch_enter
#undef gen_arch_enter_range
