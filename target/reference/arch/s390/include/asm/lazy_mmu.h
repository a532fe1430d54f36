/* SPDX-License-Identifier: MIT OR Apache-2.0 */
#ifndef _ASM_S390_LAZY_MMU_H
#define _ASM_S390_LAZY_MMU_H

/*
 * Per-CPU state of the batched PTE updates (arch/s390/mm/lazy_mmu.c).
 * Nothing is included here: gfp_t comes from the includer.
 */
void lazy_mmu_online_boot_cpu(void);
int lazy_mmu_online_cpu(gfp_t gfp, unsigned int cpu);
void lazy_mmu_offline_cpu(unsigned int cpu);

#endif /* _ASM_S390_LAZY_MMU_H */
