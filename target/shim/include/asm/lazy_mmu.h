/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Fallback for trees without their own asm/lazy_mmu.h: the per-CPU online/offline hooks
 * of the v3+ generation. A tree's own header takes precedence (the loader puts it first).
 */
#ifndef LAZYMMU_SHIM_ASM_LAZY_MMU_H
#define LAZYMMU_SHIM_ASM_LAZY_MMU_H
void lazy_mmu_online_boot_cpu(void);
int lazy_mmu_online_cpu(gfp_t gfp, unsigned int cpu);
void lazy_mmu_offline_cpu(unsigned int cpu);
#endif
