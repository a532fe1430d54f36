/* Fixture for the symbolizer tests: a global function, and a static function inlined
 * into it that calls a noinline helper reporting its own return address. The MARK_*
 * comments are how the test finds the expected line numbers. */

volatile int fixture_sink;

__attribute__((noinline)) void *fixture_return_address(void)
{
	void *ra = __builtin_return_address(0);
	__asm__ volatile("" : : "r"(ra) : "memory");
	return ra;
}

static inline __attribute__((always_inline)) void *fixture_inner(int x)
{
	void *ra = 0;
	if (x > 0)
		ra = fixture_return_address(); /* MARK_INNER */
	fixture_sink = x;
	return ra;
}

__attribute__((noinline)) void *fixture_outer(int x) { /* MARK_ENTRY */
	void *ra = fixture_inner(x); /* MARK_OUTER */
	fixture_sink = 2 * x;
	return ra;
}
