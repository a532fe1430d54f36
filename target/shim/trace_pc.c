// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Coverage of the C target for fuzzing builds made with gcc, which has no libFuzzer
 * instrumentation of its own: -fsanitize-coverage=trace-pc calls this at every basic
 * block, and the caller's address lands in libFuzzer's extra counters. (With clang the
 * build uses -fsanitize=fuzzer-no-link instead and this file is not linked.) Compiled
 * without the instrumentation, or it would call itself.
 */
#include <stdint.h>

#define LAZYMMU_PC_COUNTERS 8192

__attribute__((section("__libfuzzer_extra_counters"), used))
static uint8_t lazymmu_c_pcs[LAZYMMU_PC_COUNTERS];

void __sanitizer_cov_trace_pc(void)
{
	uintptr_t pc = (uintptr_t)__builtin_return_address(0);

	lazymmu_c_pcs[(pc ^ (pc >> 13)) % LAZYMMU_PC_COUNTERS]++;
}
