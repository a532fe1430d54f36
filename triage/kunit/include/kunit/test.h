/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * A stub <kunit/test.h> for the lazymmu rig, written for it (not derived from the
 * kernel's header): enough of the KUnit API for the exported test cases to compile in
 * userspace against the rig's shim headers, and to run when linked with an
 * implementation, the shim runtime and the runner (triage/kunit/runner/, driven by
 * `lazymmu kunit-run`).
 *
 * Semantics, as in the kernel: a failed KUNIT_EXPECT_* prints what failed (file:line,
 * the expression and both values) and the case goes on; a failed KUNIT_ASSERT_* prints
 * the same and leaves the test function; kunit_skip() leaves it and marks it skipped.
 * The runner runs every kunit_case of every suite (each in a child process, so a crash
 * or a hang fails that case only) and prints KTAP: `ok N name`, `not ok N name`,
 * `ok N name # SKIP`; its exit status is 1 when any case failed.
 */
#ifndef LAZYMMU_KUNIT_TEST_H
#define LAZYMMU_KUNIT_TEST_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KUNIT_STUB_MAX_ALLOCS	64

struct kunit {
	const char *name;
	/* Failed expectations and assertions (and failures the glue reports). */
	int failures;
	bool skipped;
	char skip_reason[128];
	/* The first failure. */
	const char *fail_file;
	int fail_line;
	const char *fail_expr;
	unsigned long long fail_left, fail_right;
	/* kunit_kzalloc() memory, freed when the case ends. */
	void *allocs[KUNIT_STUB_MAX_ALLOCS];
	int nr_allocs;
};

struct kunit_case {
	void (*run_case)(struct kunit *test);
	const char *name;
};

struct kunit_suite {
	const char *name;
	struct kunit_case *test_cases;
	int (*init)(struct kunit *test);
	void (*exit)(struct kunit *test);
};

#define KUNIT_CASE(test_name)	{ .run_case = test_name, .name = #test_name }

/* The case being run (the runner sets it): kunit_get_current_test() of the kernel. */
extern struct kunit *kunit_stub_current;
static inline struct kunit *kunit_get_current_test(void)
{
	return kunit_stub_current;
}

/* Prints one failure as KUnit does (KTAP diagnostic lines of the subtest). */
static inline void kunit_stub_report(struct kunit *test, const char *file, int line,
				     bool assertion, const char *what, const char *detail)
{
	if (test->failures++ == 0) {
		test->fail_file = file;
		test->fail_line = line;
		test->fail_expr = what;
	}
	printf("    # %s: %s FAILED at %s:%d\n    %s\n", test->name,
	       assertion ? "ASSERTION" : "EXPECTATION", file, line, what);
	if (detail && *detail)
		printf("%s", detail);
	fflush(stdout);
}

static inline void kunit_stub_fail(struct kunit *test, const char *file, int line,
				   bool assertion, const char *expr, const char *op,
				   unsigned long long left, unsigned long long right)
{
	char what[512], detail[256];

	snprintf(what, sizeof(what), "Expected %s, but", expr);
	if (op)
		snprintf(detail, sizeof(detail), "        left == 0x%llx (%lld)\n"
			 "        right == 0x%llx (%lld)\n", left, (long long)left, right,
			 (long long)right);
	else
		snprintf(detail, sizeof(detail), "        it is %s\n",
			 left ? "true" : "false");
	kunit_stub_report(test, file, line, assertion, what, detail);
	if (test->failures == 1) {
		test->fail_expr = expr;
		test->fail_left = left;
		test->fail_right = right;
	}
}

/* `text` is the expression as written (stringified before any macro expands). */
#define KUNIT_STUB_BINARY(test, left, op, right, text, assertion, on_fail) do {	\
	__typeof__(left) __kunit_l = (left);					\
	__typeof__(right) __kunit_r = (right);					\
	if (!(__kunit_l op __kunit_r)) {					\
		kunit_stub_fail((test), __FILE__, __LINE__, (assertion),	\
				text, #op,					\
				(unsigned long long)__kunit_l,			\
				(unsigned long long)__kunit_r);			\
		on_fail;							\
	}									\
} while (0)

/* The condition is evaluated once (it is often the call under test). */
#define KUNIT_STUB_BOOL(test, cond, want, text, assertion, on_fail) do {	\
	bool __kunit_c = !!(cond);						\
	if (__kunit_c != (want)) {						\
		kunit_stub_fail((test), __FILE__, __LINE__, (assertion),	\
				text, NULL, __kunit_c, (want));			\
		on_fail;							\
	}									\
} while (0)

#define KUNIT_EXPECT_EQ(test, left, right)	\
	KUNIT_STUB_BINARY(test, left, ==, right, #left " == " #right, false, (void)0)
#define KUNIT_EXPECT_NE(test, left, right)	\
	KUNIT_STUB_BINARY(test, left, !=, right, #left " != " #right, false, (void)0)
#define KUNIT_EXPECT_LT(test, left, right)	\
	KUNIT_STUB_BINARY(test, left, <, right, #left " < " #right, false, (void)0)
#define KUNIT_EXPECT_LE(test, left, right)	\
	KUNIT_STUB_BINARY(test, left, <=, right, #left " <= " #right, false, (void)0)
#define KUNIT_EXPECT_GT(test, left, right)	\
	KUNIT_STUB_BINARY(test, left, >, right, #left " > " #right, false, (void)0)
#define KUNIT_EXPECT_GE(test, left, right)	\
	KUNIT_STUB_BINARY(test, left, >=, right, #left " >= " #right, false, (void)0)
#define KUNIT_EXPECT_TRUE(test, cond)	KUNIT_STUB_BOOL(test, cond, true, #cond " is true", false, (void)0)
#define KUNIT_EXPECT_FALSE(test, cond)	KUNIT_STUB_BOOL(test, cond, false, #cond " is false", false, (void)0)
#define KUNIT_EXPECT_NOT_NULL(test, ptr)					\
	KUNIT_STUB_BOOL(test, (ptr) != NULL, true, #ptr " != NULL", false, (void)0)
#define KUNIT_EXPECT_NULL(test, ptr)						\
	KUNIT_STUB_BOOL(test, (ptr) == NULL, true, #ptr " == NULL", false, (void)0)
#define KUNIT_ASSERT_EQ(test, left, right)	\
	KUNIT_STUB_BINARY(test, left, ==, right, #left " == " #right, true, return)
#define KUNIT_ASSERT_NE(test, left, right)	\
	KUNIT_STUB_BINARY(test, left, !=, right, #left " != " #right, true, return)
#define KUNIT_ASSERT_TRUE(test, cond)	KUNIT_STUB_BOOL(test, cond, true, #cond " is true", true, return)
#define KUNIT_ASSERT_FALSE(test, cond)	KUNIT_STUB_BOOL(test, cond, false, #cond " is false", true, return)
#define KUNIT_ASSERT_NOT_NULL(test, ptr)					\
	KUNIT_STUB_BOOL(test, (ptr) != NULL, true, #ptr " != NULL", true, return)
#define KUNIT_FAIL(test, ...) do {						\
	char __kunit_m[256];							\
	snprintf(__kunit_m, sizeof(__kunit_m), __VA_ARGS__);			\
	kunit_stub_report((test), __FILE__, __LINE__, false, __kunit_m, NULL); \
} while (0)

static inline __attribute__((format(printf, 2, 3)))
void kunit_stub_log(struct kunit *test, const char *fmt, ...)
{
	va_list ap;

	printf("    # %s: ", test->name);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
}
#define kunit_info(test, ...)	kunit_stub_log((test), __VA_ARGS__)
#define kunit_err(test, ...)	kunit_stub_log((test), __VA_ARGS__)

static inline __attribute__((format(printf, 2, 3)))
void kunit_stub_mark_skipped(struct kunit *test, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(test->skip_reason, sizeof(test->skip_reason), fmt, ap);
	va_end(ap);
	test->skipped = true;
}

/* Marks the case skipped and leaves it (the kernel's aborts the test thread). */
#define kunit_skip(test, ...) do {						\
	kunit_stub_mark_skipped((test), __VA_ARGS__);				\
	return;									\
} while (0)

/*
 * Zeroed memory that lives until the case ends. Like kmalloc(), power-of-two sizes up
 * to a page are naturally aligned (a 2 KiB page table is 2 KiB aligned).
 */
static inline void *kunit_kzalloc(struct kunit *test, size_t size, unsigned int gfp)
{
	size_t align = sizeof(void *);
	void *p;

	(void)gfp;
	while (align < 4096 && align * 2 <= size)
		align *= 2;
	if (test->nr_allocs >= KUNIT_STUB_MAX_ALLOCS)
		return NULL;
	p = aligned_alloc(align, (size + align - 1) / align * align);
	if (p) {
		memset(p, 0, size);
		test->allocs[test->nr_allocs++] = p;
	}
	return p;
}

/*
 * kunit_test_suite(s) and kunit_test_suites(...) put pointers to the suites into the
 * section kunit_stub_suites, where the runner finds them (__start_/__stop_ symbols).
 */
#define KUNIT_STUB_CAT2(a, b)	a##b
#define KUNIT_STUB_CAT(a, b)	KUNIT_STUB_CAT2(a, b)
#define kunit_test_suites(...)							\
	static struct kunit_suite *const KUNIT_STUB_CAT(kunit_stub_suites_, __LINE__)[] \
	__attribute__((used, section("kunit_stub_suites"), aligned(sizeof(void *)))) = \
	{ __VA_ARGS__ }
#define kunit_test_suite(suite)	kunit_test_suites(&(suite))

/* <linux/module.h>, which the kernel's <kunit/test.h> brings in. */
#define MODULE_LICENSE(s)	extern int kunit_stub_module_unused
#define MODULE_DESCRIPTION(s)	extern int kunit_stub_module_unused
#define MODULE_AUTHOR(s)	extern int kunit_stub_module_unused

#endif
