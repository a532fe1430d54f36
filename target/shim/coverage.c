// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * Coverage of the implementation for the built-in engine (the c-coverage build flavour,
 * LAZYMMU_C_COVERAGE): the implementation file alone is compiled with gcc's
 * -fsanitize-coverage=trace-pc,trace-cmp, and these callbacks, compiled without it,
 * record per program:
 *
 *  - edges, AFL style: a hash of the previous block's PC xor the current one's, counted
 *    in a small byte map. PCs are offsets from the shared object's load base, so a
 *    program gives the same map in every process whatever the address layout;
 *  - comparison operands: both operands of each comparison (the constant first for a
 *    constant comparison, each case of a switch), the first few distinct pairs of each
 *    comparison site (a slot of its own, found by its PC), for the engine's value
 *    dictionary.
 *
 * Fixed-size tables, no allocation, no locks: an executor runs one program at a time.
 * The callbacks are hidden, so they bind inside this object only and no other copy in
 * the process (ASan's runtime, another implementation) can take their calls.
 * Mirrored in Rust by target/src/ffi.rs (CovState), checked by lazymmu_shim_coverage_size.
 *
 * Not compiled on its own: runtime.c includes it when LAZYMMU_C_COVERAGE is defined.
 */
#ifndef LAZYMMU_SHIM_RUNTIME
#error "coverage.c is part of runtime.c: compile runtime.c, which includes it"
#endif

#define COV_EDGES	4096	/* a power of two */
#define COV_SITES	512
#define COV_WAYS	4
#define COV_CONST	1	/* arg1 is a compile-time constant */

struct lazymmu_cmp {
	u64 arg1;
	u64 arg2;
	u32 size;	/* operand size in bytes */
	u32 flags;
};

struct lazymmu_cov {
	/*
	 * Comparison sites (hash slots) and edges used by this program, in first-use
	 * order: the rig reads and the reset clears only those.
	 */
	u32 nsites;
	u32 nedges;
	u16 sites[COV_SITES];
	u16 touched[COV_EDGES];
	u8 ways[COV_SITES];
	struct lazymmu_cmp cmps[COV_SITES][COV_WAYS];
	u8 edges[COV_EDGES];
};

static struct lazymmu_cov cov;
static u32 cov_prev;
/* The site each slot holds: its PC offset + 1 (0: free). */
static u32 cov_keys[COV_SITES];

/* The ELF header of this object: its load base. */
extern const char __ehdr_start[] __attribute__((visibility("hidden")));

static inline u64 cov_offset(uintptr_t pc)
{
	return (u64)(pc - (uintptr_t)__ehdr_start);
}

static inline u32 cov_hash(uintptr_t pc)
{
	return (u32)((cov_offset(pc) * 0x9e3779b97f4a7c15ULL) >> 32);
}

static inline void cov_cmp(uintptr_t pc, u64 a, u64 b, u32 size, u32 flags)
{
	u32 key = (u32)cov_offset(pc) + 1;
	u32 s = cov_hash(pc) % COV_SITES;
	u32 n, probes = 0;

	/*
	 * Open addressing: sites never share a slot, so a busy loop cannot crowd out a
	 * comparison that happens to hash alike.
	 */
	while (cov_keys[s] != key) {
		if (!cov_keys[s]) {
			cov_keys[s] = key;
			cov.sites[cov.nsites++] = (u16)s;
			break;
		}
		if (++probes == COV_SITES)
			return;
		s = (s + 1) % COV_SITES;
	}
	n = cov.ways[s];

	/* The first few distinct pairs of a site: a loop must not flood the table. */
	if (n == COV_WAYS)
		return;
	for (u32 i = 0; i < n; i++)
		if (cov.cmps[s][i].arg1 == a && cov.cmps[s][i].arg2 == b)
			return;
	cov.cmps[s][n] = (struct lazymmu_cmp){ a, b, size, flags };
	cov.ways[s] = (u8)(n + 1);
}

#define COV_CALLBACK __attribute__((visibility("hidden"), used))
#define COV_PC ((uintptr_t)__builtin_return_address(0))

COV_CALLBACK void __sanitizer_cov_trace_pc(void)
{
	u32 cur = cov_hash(COV_PC) & (COV_EDGES - 1);
	u32 i = cur ^ cov_prev;
	u8 n = cov.edges[i];

	if (!n)
		cov.touched[cov.nedges++] = (u16)i;
	cov.edges[i] = n + (n != 255);
	cov_prev = cur >> 1;
}

COV_CALLBACK void __sanitizer_cov_trace_cmp1(u8 a, u8 b) { cov_cmp(COV_PC, a, b, 1, 0); }
COV_CALLBACK void __sanitizer_cov_trace_cmp2(u16 a, u16 b) { cov_cmp(COV_PC, a, b, 2, 0); }
COV_CALLBACK void __sanitizer_cov_trace_cmp4(u32 a, u32 b) { cov_cmp(COV_PC, a, b, 4, 0); }
COV_CALLBACK void __sanitizer_cov_trace_cmp8(u64 a, u64 b) { cov_cmp(COV_PC, a, b, 8, 0); }

COV_CALLBACK void __sanitizer_cov_trace_const_cmp1(u8 a, u8 b)
{
	cov_cmp(COV_PC, a, b, 1, COV_CONST);
}
COV_CALLBACK void __sanitizer_cov_trace_const_cmp2(u16 a, u16 b)
{
	cov_cmp(COV_PC, a, b, 2, COV_CONST);
}
COV_CALLBACK void __sanitizer_cov_trace_const_cmp4(u32 a, u32 b)
{
	cov_cmp(COV_PC, a, b, 4, COV_CONST);
}
COV_CALLBACK void __sanitizer_cov_trace_const_cmp8(u64 a, u64 b)
{
	cov_cmp(COV_PC, a, b, 8, COV_CONST);
}

/* Floating point has no place in this code: emitted by gcc all the same, ignored. */
COV_CALLBACK void __sanitizer_cov_trace_cmpf(float a, float b) { (void)a; (void)b; }
COV_CALLBACK void __sanitizer_cov_trace_cmpd(double a, double b) { (void)a; (void)b; }

/* cases[0]: how many, cases[1]: bits, then the case values; each case is its own site. */
COV_CALLBACK void __sanitizer_cov_trace_switch(u64 val, u64 *cases)
{
	uintptr_t pc = COV_PC;

	for (u64 i = 0; i < cases[0]; i++)
		cov_cmp(pc + 0x10000 * (i + 1), cases[2 + i], val, (u32)(cases[1] / 8), COV_CONST);
}

/* Before each program (from lazymmu_shim_reset). */
static void cov_reset(void)
{
	for (u32 i = 0; i < cov.nsites; i++) {
		cov.ways[cov.sites[i]] = 0;
		cov_keys[cov.sites[i]] = 0;
	}
	for (u32 i = 0; i < cov.nedges; i++)
		cov.edges[cov.touched[i]] = 0;
	cov.nsites = 0;
	cov.nedges = 0;
	cov_prev = 0;
}

/* What the last program recorded; read by the rig after the program. */
struct lazymmu_cov *lazymmu_shim_coverage(void)
{
	return &cov;
}

size_t lazymmu_shim_coverage_size(void)
{
	return sizeof(struct lazymmu_cov);
}
