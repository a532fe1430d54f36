/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * A stub <kunit/test.h> for the lazymmu rig, written for it (not derived from the
 * kernel's header): enough of the KUnit API for the exported test cases to compile in
 * userspace against the rig's shim headers, and to run if linked with an
 * implementation. Expectations record their failures in struct kunit; assertions
 * record and return from the test function, as the kernel's abort the test.
 */
#ifndef LAZYMMU_KUNIT_TEST_H
#define LAZYMMU_KUNIT_TEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define KUNIT_STUB_MAX_ALLOCS	64

struct kunit {
	const char *name;
	/* Failed expectations and assertions. */
	int failures;
	bool skipped;
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

static inline void kunit_stub_fail(struct kunit *test, const char *file, int line,
				   const char *expr, unsigned long long left,
				   unsigned long long right)
{
	if (test->failures++ == 0) {
		test->fail_file = file;
		test->fail_line = line;
		test->fail_expr = expr;
		test->fail_left = left;
		test->fail_right = right;
	}
}

#define KUNIT_STUB_CHECK(test, ok, expr, l, r, on_fail) do {			\
	if (!(ok)) {								\
		kunit_stub_fail((test), __FILE__, __LINE__, (expr),		\
				(unsigned long long)(l), (unsigned long long)(r)); \
		on_fail;							\
	}									\
} while (0)

#define KUNIT_STUB_BINARY(test, left, op, right, on_fail) do {			\
	__typeof__(left) __kunit_l = (left);					\
	__typeof__(right) __kunit_r = (right);					\
	KUNIT_STUB_CHECK(test, __kunit_l op __kunit_r, #left " " #op " " #right, \
			 __kunit_l, __kunit_r, on_fail);			\
} while (0)

#define KUNIT_EXPECT_EQ(test, left, right)	KUNIT_STUB_BINARY(test, left, ==, right, (void)0)
#define KUNIT_EXPECT_NE(test, left, right)	KUNIT_STUB_BINARY(test, left, !=, right, (void)0)
/* The condition is evaluated once (it is often the call under test). */
#define KUNIT_STUB_BOOL(test, cond, want, what, on_fail) do {			\
	bool __kunit_c = !!(cond);						\
	KUNIT_STUB_CHECK(test, __kunit_c == (want), #cond what, __kunit_c,	\
			 (want), on_fail);					\
} while (0)

#define KUNIT_EXPECT_TRUE(test, cond)	KUNIT_STUB_BOOL(test, cond, true, " is true", (void)0)
#define KUNIT_EXPECT_FALSE(test, cond)	KUNIT_STUB_BOOL(test, cond, false, " is false", (void)0)
#define KUNIT_EXPECT_NOT_NULL(test, ptr)					\
	KUNIT_STUB_CHECK(test, (ptr) != NULL, #ptr " != NULL", 0, 0, (void)0)
#define KUNIT_ASSERT_EQ(test, left, right)	KUNIT_STUB_BINARY(test, left, ==, right, return)
#define KUNIT_ASSERT_TRUE(test, cond)	KUNIT_STUB_BOOL(test, cond, true, " is true", return)
#define KUNIT_ASSERT_NOT_NULL(test, ptr)					\
	KUNIT_STUB_CHECK(test, (ptr) != NULL, #ptr " != NULL", 0, 0, return)

static inline __attribute__((format(printf, 2, 3)))
void kunit_stub_log(struct kunit *test, const char *fmt, ...)
{
	(void)test;
	(void)fmt;
}
#define kunit_info(test, ...)	kunit_stub_log((test), __VA_ARGS__)
#define kunit_err(test, ...)	kunit_stub_log((test), __VA_ARGS__)

/* Marks the case skipped and leaves it (the kernel's aborts the test thread). */
#define kunit_skip(test, ...) do {						\
	kunit_stub_log((test), __VA_ARGS__);					\
	(test)->skipped = true;							\
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

/* Runs every case of a suite; returns the number of failed cases. */
static inline int kunit_stub_run_suite(struct kunit_suite *suite)
{
	int failed = 0;

	for (struct kunit_case *c = suite->test_cases; c->run_case; c++) {
		struct kunit test = { .name = c->name };

		if (!suite->init || suite->init(&test) == 0) {
			c->run_case(&test);
			if (suite->exit)
				suite->exit(&test);
		}
		while (test.nr_allocs > 0)
			free(test.allocs[--test.nr_allocs]);
		failed += test.failures != 0;
	}
	return failed;
}

/* kunit_test_suites() defines an array of the suites; kunit_test_suite(s) a symbol. */
#define KUNIT_STUB_CAT2(a, b)	a##b
#define KUNIT_STUB_CAT(a, b)	KUNIT_STUB_CAT2(a, b)
#define kunit_test_suites(...)							\
	static struct kunit_suite *const KUNIT_STUB_CAT(kunit_stub_suites_, __LINE__)[] \
	__attribute__((used)) = { __VA_ARGS__, NULL }
#define kunit_test_suite(suite)							\
	struct kunit_suite *const kunit_stub_suite_##suite = &(suite)

/* <linux/module.h>, which the kernel's <kunit/test.h> brings in. */
#define MODULE_LICENSE(s)	extern int kunit_stub_module_unused
#define MODULE_DESCRIPTION(s)	extern int kunit_stub_module_unused
#define MODULE_AUTHOR(s)	extern int kunit_stub_module_unused

#endif
