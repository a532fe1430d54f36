// SPDX-License-Identifier: MIT OR Apache-2.0
/*
 * The userspace KUnit runner of the lazymmu rig: runs every kunit_case of every suite
 * linked in (kunit_test_suite() puts them in the section kunit_stub_suites), each in a
 * child process on a fresh machine (lazy_mmu_test_reset()), and prints KTAP:
 *
 *   KTAP version 1
 *   1..1
 *       KTAP version 1
 *       # Subtest: lazy-mmu-repro
 *       1..1
 *       # lazy_mmu_repro: EXPECTATION FAILED at case.c:42
 *       Expected pte_val(ptep_get(&pt0_0[1])) == 0x400UL, but
 *           left == 0x1a03d (106557)
 *           right == 0x400 (1024)
 *       not ok 1 lazy_mmu_repro
 *   not ok 1 lazy-mmu-repro
 *
 * A case that crashes or runs longer than LAZYMMU_KUNIT_TIMEOUT seconds (default 10)
 * is `not ok` with the signal. Exit status: 0 when every case passed or was skipped,
 * 1 when one failed, 2 when the runner could not start.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kunit/test.h>

struct kunit *kunit_stub_current;

extern struct kunit_suite *const __start_kunit_stub_suites[] __attribute__((weak));
extern struct kunit_suite *const __stop_kunit_stub_suites[] __attribute__((weak));

int lazy_mmu_test_init(void);
void lazy_mmu_test_reset(void);

/* Runs one case in this process; the exit status of the child. */
static int run_case(struct kunit_suite *suite, struct kunit_case *c)
{
	struct kunit test = { .name = c->name };

	kunit_stub_current = &test;
	lazy_mmu_test_reset();
	if (!suite->init || suite->init(&test) == 0) {
		c->run_case(&test);
		if (suite->exit)
			suite->exit(&test);
	}
	while (test.nr_allocs > 0)
		free(test.allocs[--test.nr_allocs]);
	fflush(stdout);
	if (test.failures)
		return 1;
	if (test.skipped) {
		printf("    # %s: skipped: %s\n", c->name, test.skip_reason);
		return 3;
	}
	return 0;
}

int main(void)
{
	struct kunit_suite *const *s;
	const char *t = getenv("LAZYMMU_KUNIT_TIMEOUT");
	unsigned int timeout = t ? (unsigned int)atoi(t) : 10;
	int nsuites = (int)(__stop_kunit_stub_suites - __start_kunit_stub_suites);
	int failed_suites = 0;
	int si = 0;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!__start_kunit_stub_suites || nsuites <= 0) {
		fprintf(stderr, "kunit runner: no kunit_test_suite() linked in\n");
		return 2;
	}
	if (lazy_mmu_test_init())
		return 2;
	printf("KTAP version 1\n1..%d\n", nsuites);
	for (s = __start_kunit_stub_suites; s < __stop_kunit_stub_suites; s++) {
		struct kunit_suite *suite = *s;
		struct kunit_case *c;
		int n = 0, failed = 0, i = 0;

		for (c = suite->test_cases; c->run_case; c++)
			n++;
		printf("    KTAP version 1\n    # Subtest: %s\n    1..%d\n", suite->name, n);
		for (c = suite->test_cases; c->run_case; c++) {
			int status = 0;
			pid_t pid;

			i++;
			fflush(stdout);
			pid = fork();
			if (pid < 0) {
				perror("fork");
				return 2;
			}
			if (pid == 0) {
				alarm(timeout);
				_exit(run_case(suite, c));
			}
			while (waitpid(pid, &status, 0) < 0)
				;
			if (WIFSIGNALED(status)) {
				int sig = WTERMSIG(status);

				printf("    # %s: %s: signal %d (%s)\n", c->name,
				       sig == SIGALRM ? "timed out" : "crashed", sig, strsignal(sig));
				printf("    not ok %d %s\n", i, c->name);
				failed++;
			} else if (WEXITSTATUS(status) == 3) {
				printf("    ok %d %s # SKIP\n", i, c->name);
			} else if (WEXITSTATUS(status) == 0) {
				printf("    ok %d %s\n", i, c->name);
			} else {
				printf("    not ok %d %s\n", i, c->name);
				failed++;
			}
		}
		si++;
		printf("%s %d %s\n", failed ? "not ok" : "ok", si, suite->name);
		failed_suites += failed != 0;
	}
	return failed_suites ? 1 : 0;
}
