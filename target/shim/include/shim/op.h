/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * The one entry point the rig calls for every step, lazymmu_shim_op(), and the record it
 * takes: shared by the runtime that implements it and by the userspace KUnit runner's glue
 * that calls it. Mirrored in Rust by target/src/ffi.rs (OpKind, OpRecord), checked by
 * LAZYMMU_SHIM_ABI.
 */
#ifndef LAZYMMU_SHIM_OP_H
#define LAZYMMU_SHIM_OP_H

#include "types.h"

enum lazymmu_op_kind {
	LAZYMMU_ENABLE = 0,
	LAZYMMU_ENABLE_WITH_PTES,
	LAZYMMU_DISABLE,
	LAZYMMU_PAUSE,
	LAZYMMU_RESUME,
	LAZYMMU_IS_ACTIVE,
	LAZYMMU_SET_PTE,
	LAZYMMU_SET_PTES,
	LAZYMMU_PTE_CLEAR,
	LAZYMMU_PTEP_GET,
	LAZYMMU_GET_AND_CLEAR,
	LAZYMMU_GET_AND_CLEAR_FULL,
	LAZYMMU_TEST_AND_CLEAR_YOUNG,
	LAZYMMU_MODIFY_PROT_START,
	LAZYMMU_MODIFY_PROT_COMMIT,
	LAZYMMU_SET_WRPROTECT,
	LAZYMMU_GET_LOCKLESS,
	LAZYMMU_CLEAR_FLUSH,
	LAZYMMU_FLUSH_TLB_RANGE,
	LAZYMMU_FLUSH_TLB_MM,
	LAZYMMU_SWITCH_IN,
	LAZYMMU_CPU_ONLINE,
	LAZYMMU_CPU_OFFLINE,
};

struct lazymmu_op {
	int kind;
	int mm;
	int is_init_mm;
	int full;
	unsigned long addr;
	unsigned long end;
	unsigned long *ptep;
	u64 value;
	u64 old;
	u64 n;
};

u64 lazymmu_shim_op(const struct lazymmu_op *op);

#endif
