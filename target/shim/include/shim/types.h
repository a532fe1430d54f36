/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Duplicated definitions: the kernel types and constants the lazy-MMU files use, written
 * again for userspace from docs/semantics.md and docs/abi.md (not copied from the kernel).
 */
#ifndef LAZYMMU_SHIM_TYPES_H
#define LAZYMMU_SHIM_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef unsigned int gfp_t;

#define GFP_ATOMIC	0x1u
#define GFP_KERNEL	0x2u
#define ENOMEM		12

#ifndef ARRAY_SIZE
#define ARRAY_SIZE(a)	(sizeof(a) / sizeof((a)[0]))
#endif

#define PAGE_SHIFT	12
#define PAGE_SIZE	(1UL << PAGE_SHIFT)
#define PTRS_PER_PTE	256
#define PMD_SHIFT	20

/* Hardware bits. */
#define _PAGE_LARGE	0x800UL
#define _PAGE_INVALID	0x400UL
#define _PAGE_PROTECT	0x200UL
#define _PAGE_NOEXEC	0x100UL
/* Software bits. */
#define _PAGE_PRESENT	0x001UL
#define _PAGE_SOFT_DIRTY 0x002UL
#define _PAGE_YOUNG	0x004UL
#define _PAGE_DIRTY	0x008UL
#define _PAGE_READ	0x010UL
#define _PAGE_WRITE	0x020UL
#define _PAGE_SPECIAL	0x040UL
#define _PAGE_UNUSED	0x080UL

typedef struct { unsigned long pte; } pte_t;
#define pte_val(x)	((x).pte)
#define __pte(x)	((pte_t){ (x) })

typedef struct { int counter; } atomic_t;

#define SHIM_NR_CPUS	8
#define SHIM_NR_MMS	4
typedef struct { unsigned long bits[1]; } cpumask_t;

struct mm_struct {
	struct {
		atomic_t flush_count;
		int flush_mm;
		/* mm_is_protected(): a secure-execution guest. */
		int is_protected;
		/* Which of the machine's mms this is. */
		int id;
		cpumask_t cpu_attach_mask;
	} context;
	/* mm_cpumask(): CPUs that may hold TLB entries for the mm. */
	cpumask_t cpu_bitmap;
};

struct vm_area_struct {
	struct mm_struct *vm_mm;
};

struct lazy_mmu_state {
	u8 enable_count;
	u8 pause_count;
};

struct task_struct {
	struct lazy_mmu_state lazy_mmu_state;
};

struct lowcore {
	int lazy_mmu_count;
};

#endif
