/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Customised test hooks: where the kernel would touch hardware, per-CPU data or the
 * scheduler, the shim calls into the rig's Rust machine model or indexes the simulated
 * CPU that runs the current step.
 *
 * Everything lives in one struct, lazymmu_shim, that the Rust side reads and writes
 * between calls (its layout is mirrored in target/src/ffi.rs and checked at load time).
 * Each implementation is its own shared object with its own copy, so several can run in
 * one process.
 */
#ifndef LAZYMMU_SHIM_HOOKS_H
#define LAZYMMU_SHIM_HOOKS_H

#include "types.h"

/* Callbacks into the machine model; ctx is the machine of the program being run. */
struct lazymmu_callbacks {
	void *ctx;
	u64 (*pte_read)(void *ctx, const unsigned long *ptep);
	void (*pte_write)(void *ctx, unsigned long *ptep, u64 val);
	/* IPTE on one entry; local != 0: this CPU only. */
	void (*ipte)(void *ctx, unsigned long addr, unsigned long *ptep, int local);
	/* IPTE-range: table origin from ptep, first index from addr, nr + 1 entries. */
	void (*ipte_range)(void *ctx, unsigned long addr, int nr, unsigned long *ptep, int local);
	/* IDTE of an mm's ASCE (whole-mm flush on every CPU). */
	void (*idte)(void *ctx, int mm);
	/* Ultravisor: kind 0 = convert_from_secure, 1 = destroy. */
	void (*uv)(void *ctx, unsigned long *ptep, int kind);
	/* KASAN-style shadow of PTE slots: poison != 0 poisons nr entries from ptep. */
	void (*kasan)(void *ctx, const unsigned long *ptep, int nr, int poison);
	/* A kernel assertion failed (lockdep and friends). */
	void (*report)(void *ctx, const char *what);
};

struct lazymmu_shim_cpu {
	int preempt_count;
	int irq_depth;
};

struct lazymmu_shim {
	/* The simulated CPU running the current step. */
	int cpu;
	int ncpus;
	int facility13;
	int tlb_lc;
	struct lazymmu_shim_cpu cpus[SHIM_NR_CPUS];
	struct lowcore lowcore[SHIM_NR_CPUS];
	struct task_struct tasks[SHIM_NR_CPUS];
	struct mm_struct mms[SHIM_NR_MMS];
	struct lazymmu_callbacks cb;
};

extern struct lazymmu_shim lazymmu_shim __attribute__((visibility("hidden")));

#define smp_processor_id()	(lazymmu_shim.cpu)
#define raw_smp_processor_id()	(lazymmu_shim.cpu)
#define current			(&lazymmu_shim.tasks[lazymmu_shim.cpu])
#define get_lowcore()		(&lazymmu_shim.lowcore[lazymmu_shim.cpu])
#define in_interrupt()		(lazymmu_shim.cpus[lazymmu_shim.cpu].irq_depth > 0)
#define in_task()		(!in_interrupt())

static inline void lazymmu_shim_report(const char *what)
{
	lazymmu_shim.cb.report(lazymmu_shim.cb.ctx, what);
}

/* Preemption: a count per simulated CPU that persists across calls. */
static inline void preempt_disable(void)
{
	lazymmu_shim.cpus[lazymmu_shim.cpu].preempt_count++;
}
static inline void preempt_enable(void)
{
	if (lazymmu_shim.cpus[lazymmu_shim.cpu].preempt_count <= 0)
		lazymmu_shim_report("preempt_enable() without preempt_disable()");
	else
		lazymmu_shim.cpus[lazymmu_shim.cpu].preempt_count--;
}
/* The file's base name only: reports must not depend on where it was compiled. */
#ifdef __FILE_NAME__
#define LAZYMMU_SHIM_FILE __FILE_NAME__
#else
#define LAZYMMU_SHIM_FILE "the implementation"
#endif
#define lockdep_assert_preemption_disabled() do {					\
	if (lazymmu_shim.cpus[lazymmu_shim.cpu].preempt_count <= 0)			\
		lazymmu_shim_report("lockdep_assert_preemption_disabled() failed in "	\
				    LAZYMMU_SHIM_FILE);					\
} while (0)
#define lockdep_assert_irqs_disabled()	do { } while (0)

/* Per-CPU variables: one copy per simulated CPU. */
#define DEFINE_PER_CPU(type, name)	__typeof__(type) name[SHIM_NR_CPUS]
#define DECLARE_PER_CPU(type, name)	extern __typeof__(type) name[SHIM_NR_CPUS]
#define per_cpu(var, cpu)		((var)[(cpu)])
#define this_cpu_read(var)		((var)[smp_processor_id()])
#define this_cpu_write(var, v)		((void)((var)[smp_processor_id()] = (v)))
#define this_cpu_ptr(ptr)		(&(*(ptr))[smp_processor_id()])
/* An lvalue of the variable's own type, with preemption disabled (docs/abi.md#shapes). */
#define get_cpu_var(var)		(*({ preempt_disable(); &(var)[smp_processor_id()]; }))
#define put_cpu_var(var)		preempt_enable()
#define get_cpu()			({ preempt_disable(); smp_processor_id(); })
#define put_cpu()			preempt_enable()

/* CPU masks. */
extern const cpumask_t lazymmu_shim_cpu_masks[SHIM_NR_CPUS] __attribute__((visibility("hidden")));
#define cpumask_of(cpu)			(&lazymmu_shim_cpu_masks[(cpu)])
#define mm_cpumask(mm)			(&(mm)->cpu_bitmap)
static inline bool cpumask_equal(const cpumask_t *a, const cpumask_t *b)
{
	return a->bits[0] == b->bits[0];
}
static inline bool cpumask_test_cpu(int cpu, const cpumask_t *m)
{
	return (m->bits[0] >> cpu) & 1;
}
static inline void cpumask_set_cpu(int cpu, cpumask_t *m)
{
	m->bits[0] |= 1UL << cpu;
}
static inline void cpumask_clear_cpu(int cpu, cpumask_t *m)
{
	m->bits[0] &= ~(1UL << cpu);
}
static inline void cpumask_copy(cpumask_t *dst, const cpumask_t *src)
{
	*dst = *src;
}

static inline void atomic_inc(atomic_t *v) { v->counter++; }
static inline void atomic_dec(atomic_t *v) { v->counter--; }
static inline int atomic_read(const atomic_t *v) { return v->counter; }

static inline bool mm_is_protected(struct mm_struct *mm)
{
	return mm->context.is_protected != 0;
}

/* Facilities: 13 is IPTE-range. */
static inline int test_facility(unsigned long nr)
{
	return nr == 13 ? lazymmu_shim.facility13 : 0;
}
static inline bool cpu_has_tlb_lc(void)
{
	return lazymmu_shim.tlb_lc != 0;
}

/* Page-table memory: every access goes through the machine model, which checks it. */
static inline pte_t __ptep_get(pte_t *ptep)
{
	return __pte(lazymmu_shim.cb.pte_read(lazymmu_shim.cb.ctx, &ptep->pte));
}
/* The newer base strips the UNUSED software bit from present values. */
static inline void __set_pte(pte_t *ptep, pte_t pte)
{
	unsigned long v = pte_val(pte);

	if (v & _PAGE_PRESENT)
		v &= ~_PAGE_UNUSED;
	lazymmu_shim.cb.pte_write(lazymmu_shim.cb.ctx, &ptep->pte, v);
}

#define IPTE_GLOBAL	0
#define IPTE_LOCAL	1
#define IPTE_NODAT	0x400
static inline void __ptep_ipte(unsigned long addr, pte_t *ptep, unsigned long opt,
			       unsigned long asce, int local)
{
	(void)opt;
	(void)asce;
	lazymmu_shim.cb.ipte(lazymmu_shim.cb.ctx, addr, &ptep->pte, local);
}
static inline void __ptep_ipte_range(unsigned long addr, int nr, pte_t *ptep, int local)
{
	lazymmu_shim.cb.ipte_range(lazymmu_shim.cb.ctx, addr, nr, &ptep->pte, local);
}

/* KASAN shadow of PTE slots (statements, as docs/abi.md#shapes says). */
static inline void kasan_poison_pte(pte_t *ptep, int nr)
{
	lazymmu_shim.cb.kasan(lazymmu_shim.cb.ctx, &ptep->pte, nr, 1);
}
static inline void kasan_unpoison_pte(pte_t *ptep, int nr)
{
	lazymmu_shim.cb.kasan(lazymmu_shim.cb.ctx, &ptep->pte, nr, 0);
}

/* Allocation: tracked so that a reset between programs frees what a run leaked. */
void *lazymmu_shim_kzalloc(size_t size, gfp_t gfp) __attribute__((visibility("hidden")));
void lazymmu_shim_kfree(const void *p) __attribute__((visibility("hidden")));
#define kzalloc(size, gfp)		lazymmu_shim_kzalloc((size), (gfp))
#define kzalloc_obj(obj, gfp)		((__typeof__(obj) *)lazymmu_shim_kzalloc(sizeof(obj), (gfp)))
#define kfree(p)			lazymmu_shim_kfree(p)

#endif
