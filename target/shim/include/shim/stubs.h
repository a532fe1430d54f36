/* SPDX-License-Identifier: MIT OR Apache-2.0 */
/*
 * Stubs: kernel annotations and services with no meaning in the rig, reduced to what
 * keeps the implementation files compiling with the same types and side effects.
 */
#ifndef LAZYMMU_SHIM_STUBS_H
#define LAZYMMU_SHIM_STUBS_H

#include "types.h"

#define __init
#define __maybe_unused			__attribute__((unused))
#define EXPORT_SYMBOL_IF_KUNIT(sym)	extern int lazymmu_shim_export_unused
#define EXPORT_SYMBOL(sym)		extern int lazymmu_shim_export_unused
#define EXPORT_SYMBOL_GPL(sym)		extern int lazymmu_shim_export_unused
#define likely(x)			__builtin_expect(!!(x), 1)
#define unlikely(x)			__builtin_expect(!!(x), 0)
#define barrier()			__asm__ __volatile__("" ::: "memory")
#define cpu_relax()			barrier()
#define READ_ONCE(x)			(*(volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v)		(*(volatile __typeof__(x) *)&(x) = (v))

/* printk: checked format, no output (the rig reports through its own channels). */
static inline __attribute__((format(printf, 1, 2))) void lazymmu_shim_printk(const char *fmt, ...)
{
	(void)fmt;
}
#define pr_warn(...)	lazymmu_shim_printk(__VA_ARGS__)
#define pr_info(...)	lazymmu_shim_printk(__VA_ARGS__)
#define pr_err(...)	lazymmu_shim_printk(__VA_ARGS__)

/* Static keys (v2 6/6): a plain flag. */
struct static_key { int enabled; };
struct static_key_true { struct static_key key; };
struct static_key_false { struct static_key key; };
#define DEFINE_STATIC_KEY_TRUE(name)	struct static_key_true name = { .key = { .enabled = 1 } }
#define DEFINE_STATIC_KEY_TRUE_RO(name)	DEFINE_STATIC_KEY_TRUE(name)
#define DEFINE_STATIC_KEY_FALSE(name)	struct static_key_false name = { .key = { .enabled = 0 } }
#define static_branch_likely(k)		((k)->key.enabled != 0)
#define static_branch_unlikely(k)	((k)->key.enabled != 0)
#define static_key_disable(k)		((void)((k)->enabled = 0))
#define static_key_enable(k)		((void)((k)->enabled = 1))

/*
 * early_param(): recorded so that the rig can call the handler (e.g. with "off"), the only
 * way the v2 key is turned off.
 */
#define early_param(str, fn)	int (*lazymmu_early_param_fn)(char *) = fn; \
				const char *lazymmu_early_param_name = str

static inline int kstrtobool(const char *s, bool *res)
{
	if (!s)
		return -22;
	switch (s[0]) {
	case 'y': case 'Y': case '1':
		*res = true;
		return 0;
	case 'n': case 'N': case '0':
		*res = false;
		return 0;
	case 'o': case 'O':
		if (s[1] == 'n' || s[1] == 'N') { *res = true; return 0; }
		if (s[1] == 'f' || s[1] == 'F') { *res = false; return 0; }
		return -22;
	default:
		return -22;
	}
}

#endif
