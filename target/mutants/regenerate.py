#!/usr/bin/env python3
"""Regenerates target/mutants/*.patch from the reference: run after editing the reference.

Each mutant is a list of exact (old, new) edits of reference/arch/s390/mm/lazy_mmu.c;
an edit that no longer matches exactly once fails loudly, so stale mutants are noticed."""
import os, subprocess, shutil, tempfile
HERE = os.path.dirname(os.path.abspath(__file__))
REF = os.path.join(HERE, '..', 'reference')
SRC = os.path.join(REF, 'arch/s390/mm/lazy_mmu.c')
OUT = HERE
ref = open(SRC).read()

M = []
# Mutants whose bug only shows on contract-breaking programs: the rig must harden
# against them, so they are fuzzed with adversarial programs too (`Hardening: yes`).
# (full-no-apply shows on realistic programs since a set_pte may precede the first
# full=1 clear that begins an mm's teardown.)
HARDENING = {'interrupt-routing', 'pending-by-marker', 'range-crosses-pmd'}
def m(name, cls, desc, edits):
    M.append((name, cls, desc, edits))

m('lost-update-window', 'lost update',
  'slot_fill() widens the pending window with "else if", so the first update of a section only moves start_pte and the window stays empty;\na section with a single update (enable_with_ptes, get_and_clear of one valid PTE, disable) never writes it out and leaves the slot pending.',
  [('\tif (ptep < range->start_pte)\n\t\trange->start_pte = ptep;\n\tif (ptep >= range->end_pte)',
    '\tif (ptep < range->start_pte)\n\t\trange->start_pte = ptep;\n\telse if (ptep >= range->end_pte)')])

m('stale-ptep-get', 'stale ptep_get',
  'ptep_get() inside the range reads page-table memory instead of the pending slot:\nafter ptep_get_and_clear(p) in the section, ptep_get(p) still returns the old valid PTE instead of 0x400.',
  [('\trange = range_of(ptep, &idx);\n\tif (!range)\n\t\treturn false;\n\t*res = range_current(range, ptep, idx);',
    '\trange = range_of(ptep, &idx);\n\tif (!range)\n\t\treturn false;\n\t*res = range_read(ptep);')])

m('missed-ipte-run-skip', 'missed IPTE on part of a run',
  'After a sub-run ends, the scan also skips the entry that ended it, so a valid sub-run that starts there loses the IPTE of its first entry;\nget_and_clear of [none, valid, valid] on a two-CPU mm invalidates only the last entry and stores 0x400 over the middle one while it is valid.',
  [('\t\tptep += count;\n', '\t\tptep += count + 1;\n')])

m('local-ipte-test-cpu', 'local IPTE where global is needed',
  "The local IPTE-range is chosen when this CPU is in mm_cpumask() instead of being its only member:\non an mm attached to CPUs 0 and 1 with TLB-LC, a batched get_and_clear purges only CPU 0's TLB and CPU 1 keeps the old translation.",
  [('\tif (cpu_has_tlb_lc() && cpumask_equal(mm_cpumask(mm), cpumask_of(cpu)))\n\t\t__ptep_ipte_range(addr, count - 1, ptep, IPTE_LOCAL);',
    '\tif (cpu_has_tlb_lc() && cpumask_test_cpu(cpu, mm_cpumask(mm)))\n\t\t__ptep_ipte_range(addr, count - 1, ptep, IPTE_LOCAL);')])

m('marker-leak-dense-window', 'marker leak to memory',
  'range_store() writes every slot of [start_pte, end_pte) as if the window were dense:\nupdating entries 0 and 2 of a range writes the empty-slot marker 0x800 into entry 1, over a valid PTE and without IPTE.',
  [('\t\tidx = ptep - range->base_pte;\n\t\tif (!slot_pending(range, idx))\n\t\t\tcontinue;\n\t\t__set_pte(ptep, range->cache[idx]);',
    '\t\tidx = ptep - range->base_pte;\n\t\t__set_pte(ptep, range->cache[idx]);')])

m('marker-returned', 'marker returned to a caller',
  'ptep_get() inside the range returns the cache slot whether or not it is pending:\nptep_get of an in-range PTE not updated in the section returns the marker 0x800 instead of its value in memory.',
  [('\trange = range_of(ptep, &idx);\n\tif (!range)\n\t\treturn false;\n\t*res = range_current(range, ptep, idx);',
    '\trange = range_of(ptep, &idx);\n\tif (!range)\n\t\treturn false;\n\t*res = range->cache[idx];')])

m('off-by-one-range-end', 'off-by-one range bound',
  "range_of() accepts the entry just past the range: with a full-PMD range, an update of the next table's first PTE (allowed, it must go the eager way)\nlands in cache[256] past the cache and corrupts the pending bitmap; with a shorter range that entry is batched and can stay KASAN-poisoned.",
  [('if (ptep < range->base_pte || ptep >= range->base_pte + range_nr(range))',
    'if (ptep < range->base_pte || ptep > range->base_pte + range_nr(range))')])

m('cache-not-reset', 'cache not reset after leave',
  'slot_empty() writes the marker but leaves the pending bit set, so slots survive the leave:\nin the next section on that CPU, ptep_get of a PTE updated in an earlier section returns 0x800, and the stale slot is written out again.',
  [('\trange->cache[idx] = __pte(PTE_POISON);\n\trange->pending[idx / RANGE_LONG_BITS] &= ~(1UL << (idx % RANGE_LONG_BITS));\n',
    '\trange->cache[idx] = __pte(PTE_POISON);\n')])

m('nested-disable-no-flush', 'nested disable not flushing',
  'arch_flush_lazy_mmu_mode() does nothing and leaves the batch to the outermost leave:\nafter a nested enable, update, disable the caller relies on the update being in memory, but it only arrives at the outer disable.',
  [('''void arch_flush_lazy_mmu_mode(void)
{
	struct ipte_range *range;

	if (!test_facility(13))
		return;
	range = this_cpu_read(ipte_range);
	if (range && range->base_pte)
		range_apply(range);
}''', '''void arch_flush_lazy_mmu_mode(void)
{
	/* The outermost arch_leave_lazy_mmu_mode() writes the batch out. */
}''')])

m('pause-no-flush', 'pause not flushing',
  'arch_leave_lazy_mmu_mode() keeps the batch while the section is still enabled, i.e. when lazy_mmu_mode_pause() calls it:\na read during the pause (the KASAN shadow pattern) sees the pre-batch value, and an eager write made during the pause is overwritten at the final leave.',
  [('\tif (range && range->base_pte) {\n\t\trange_apply(range);\n\t\tkasan_unpoison_pte',
    '\tif (range && range->base_pte && !current->lazy_mmu_state.enable_count) {\n\t\trange_apply(range);\n\t\tkasan_unpoison_pte')])

m('interrupt-routing', 'interrupt-context routing',
  "In interrupt context the pending value is written out, but the update is still routed into the batch instead of going the eager way;\n"
  "a set_pte or get_and_clear from an interrupt on a PTE of the interrupted section's range is not in memory when the interrupt returns.",
  [('''	if (range && in_interrupt()) {
		range_release(range, ptep, *idx);
		return NULL;
	}
	return range;''', '''	if (range && in_interrupt())
		range_release(range, ptep, *idx);
	return range;''')])

m('wrong-split-pending-value', 'wrong run splitting at leave',
  'Sub-runs are extended by the I bit of the pending values instead of the real I bit in memory:\nget_and_clear of [none, valid, valid] forms one "invalid" run (every pending value is 0x400), so no IPTE is issued and valid PTEs are overwritten.',
  [('\t\t       (pte_val(__ptep_get(ptep + count)) & _PAGE_INVALID) == invalid)',
    '\t\t       (pte_val(range->cache[ptep + count - range->base_pte]) & _PAGE_INVALID) == invalid)')])

m('store-before-invalidate', 'wrong run splitting at leave (store before invalidate)',
  'range_apply() stores the pending values before invalidating; the stores empty the slots, so the invalidation pass finds nothing:\na batched get_and_clear of valid PTEs on a two-CPU mm issues no IPTE at all, stores over valid PTEs and leaves stale TLB entries.',
  [('\trange_invalidate_runs(range);\n\trange_store(range);\n',
    '\trange_store(range);\n\trange_invalidate_runs(range);\n')])

m('pending-by-marker', 'marker mistaken for "nothing pending"',
  'Pending-ness is decided by comparing the slot with the marker instead of the bitmap:\nset_pte of the value 0x800 (_PAGE_LARGE, a legal software value) in a section is dropped; memory keeps the old value and ptep_get returns it.',
  [('\treturn range->pending[idx / RANGE_LONG_BITS] & (1UL << (idx % RANGE_LONG_BITS));',
    '\treturn pte_val(range->cache[idx]) != PTE_POISON;')])

m('full-no-apply', 'stale value in the full-mm clear',
  '__lazy_mmu_ptep_get_and_clear_full() falls back to the eager code without writing the batch out:\nafter set_pte(p, X) in the section, ptep_get_and_clear_full(p, 1) returns the old memory value and the leave writes X back over the cleared entry.',
  [('\t\treturn false;\n\trange_apply(range);\n\tkasan_unpoison_pte(ptep, 1);\n',
    '\t\treturn false;\n\tkasan_unpoison_pte(ptep, 1);\n')])

m('protected-mm-batched', 'protected mm batched',
  'range_sane() forgets mm_is_protected(), so a get_and_clear on a secure-execution guest is batched:\nthe wrapper then calls the ultravisor while the PTE is still valid in memory.',
  [('\tif (!mm || !pte || mm_is_protected(mm))', '\tif (!mm || !pte)')])

m('owed-flush-forgotten', 'owed TLB flush forgotten',
  "On an mm that only this CPU runs, the batch sets the I bit without IPTE but does not set flush_mm:\nthe caller's flush_tlb_range() then flushes nothing and this CPU's TLB keeps the translation of a cleared PTE.",
  [('\t\tmm->context.flush_mm = 1;\n', '')])

m('range-crosses-pmd', 'missing range hardening',
  'range_sane() no longer checks that [addr, end) stays in one PMD: an adversarial range running past the end of the page table is recorded,\nentries beyond the table are batched as if they belonged to it, and an IPTE-range can cross the end of the table.',
  [('\tif ((addr >> PMD_SHIFT) != ((end - 1) >> PMD_SHIFT))\n\t\treturn false;\n', '')])

m('null-range-apply', 'NULL dereference',
  'range_apply() raises mm->context.flush_count for the whole write-out, before its empty-window test, and arch_flush_lazy_mmu_mode() tests only "range"\n'
  '(not range->base_pte), relying on that empty-window return: a nested disable while no range is recorded (lazy_mmu_mode_enable, lazy_mmu_mode_enable,\n'
  'lazy_mmu_mode_disable; or a nested section after a pause/resume) calls range_apply() with range->mm == NULL, which faults on the flush_count increment.',
  [('''static void range_apply(struct ipte_range *range)
{
	pte_t *start = range->start_pte;
	pte_t *end = range->end_pte;

	if (start >= end)
		return;
	kasan_unpoison_pte(start, end - start);
	range_invalidate_runs(range);
	range_store(range);
	kasan_poison_pte(start, end - start);
	range_reset_window(range);
}''', '''static void range_apply(struct ipte_range *range)
{
	struct mm_struct *mm = range->mm;
	pte_t *start = range->start_pte;
	pte_t *end = range->end_pte;

	/* No switch_mm() may find the mm while its batch is written out. */
	atomic_inc(&mm->context.flush_count);
	if (start < end) {
		kasan_unpoison_pte(start, end - start);
		range_invalidate_runs(range);
		range_store(range);
		kasan_poison_pte(start, end - start);
		range_reset_window(range);
	}
	atomic_dec(&mm->context.flush_count);
}'''),
   ('''	range = this_cpu_read(ipte_range);
	if (range && range->base_pte)
		range_apply(range);
}''', '''	range = this_cpu_read(ipte_range);
	/* range_apply() returns at once when nothing is recorded. */
	if (range)
		range_apply(range);
}''')])

m('store-past-table', 'store past the page table',
  'range_store() has a fast path for a dense window (every slot pending) that reaches the end of the page table: it stores the slots with plain C stores\n'
  '"*ptep = range->cache[idx]" in a loop bounded by "ptep <= range->end_pte", so it also stores one PTE past the 2 KiB table (entry 256);\n'
  'enable_with_ptes over t0[K..256], an update of t0[255] (and of every entry between the lowest updated one and 255), disable.',
  [('''/* Every pending entry is invalid in memory now: store the new values. */
static void range_store(struct ipte_range *range)
{
	unsigned int idx;
	pte_t *ptep;

	for (ptep''', '''/* Is every slot of the window pending? */
static bool range_window_dense(struct ipte_range *range)
{
	pte_t *ptep;

	for (ptep = range->start_pte; ptep < range->end_pte; ptep++)
		if (!slot_pending(range, ptep - range->base_pte))
			return false;
	return true;
}

/* Every pending entry is invalid in memory now: store the new values. */
static void range_store(struct ipte_range *range)
{
	unsigned int idx;
	pte_t *ptep;

	/*
	 * zap_pte_range() over the rest of a PMD: a dense window that runs to the
	 * end of the table is stored in one go, without testing the bitmap.
	 */
	if (!((unsigned long)range->end_pte & (PTRS_PER_PTE * sizeof(pte_t) - 1)) &&
	    range_window_dense(range)) {
		for (ptep = range->start_pte; ptep <= range->end_pte; ptep++) {
			idx = ptep - range->base_pte;
			*ptep = range->cache[idx];
			slot_empty(range, idx);
		}
		return;
	}
	for (ptep''')])

m('cache-index-oob', 'out-of-bounds cache index',
  'RANGE_LONG_BITS counts the bytes of a long (8) instead of its bits, while the pending bitmap is still sized for 256 bits (4 longs):\n'
  'slot idx uses pending[idx / 8], so any access to a slot 32 or more entries past the range start (set_pte of t0[40] in a section over t0[0..64])\n'
  "reads and writes pending[4..31], up to 224 bytes past the end of the kzalloc'd struct ipte_range; shorter offsets behave as the reference.",
  [('#define RANGE_LONG_BITS\t(8 * sizeof(unsigned long))\n#define RANGE_MAP_LONGS\t(PTRS_PER_PTE / RANGE_LONG_BITS)\n',
    '#define RANGE_LONG_BITS\t(sizeof(unsigned long))\n#define RANGE_MAP_LONGS\t(PTRS_PER_PTE / (8 * sizeof(unsigned long)))\n')])

m('endless-apply-loop', 'endless loop',
  'range_invalidate_runs() wants one IPTE-range to cover an invalid-in-memory run and the valid run right after it, so it ends the pass with "continue"\n'
  'without advancing; the next pass finds the same invalid run again and the leave spins forever. It takes a pending slot invalid in memory\n'
  'directly followed by a pending slot valid in memory: set_pte of t0[3] (over none) and ptep_get_and_clear of a valid t0[4] on an mm two CPUs run, then disable.',
  [('''		if (!invalid)
			range_invalidate(range, ptep, count);
		ptep += count;
	}''', '''		/*
		 * An IPTE of an invalid entry is harmless: an invalid run right
		 * before a valid one is left to the next pass, one IPTE-range for both.
		 */
		if (invalid && ptep + count < range->end_pte &&
		    slot_pending(range, ptep + count - range->base_pte))
			continue;
		if (!invalid)
			range_invalidate(range, ptep, count);
		ptep += count;
	}''')])

# Deep mutants: each needs a program shape that random generation rarely makes.

m('zero-page-no-ipte', 'missed IPTE for one PTE value',
  'range_invalidate_runs() treats a mapping of the shared zero page as needing no IPTE ("nothing writes to the zero page, a stale translation still\n'
  'reads zeroes"), compared by value against ZERO_PAGE_PTE (pfn 0x5f0, present, read, young, protected: 0x5f0215); the pending value is then stored\n'
  'over the entry while it is valid, and other CPUs keep translating it. Needs exactly that PTE value (a pfn random programs never use), valid in\n'
  'memory and batched on an mm another CPU runs: get_and_clear of it in a section, disable.',
  [('#define PTE_POISON\t_PAGE_LARGE\n',
    '#define PTE_POISON\t_PAGE_LARGE\n\n'
    '/*\n * The shared zero page, as do_anonymous_page() maps it on a read fault:\n'
    ' * present, readable, young and write-protected.\n */\n'
    '#define ZERO_PFN\t0x5f0UL\n'
    '#define ZERO_PAGE_PTE\t((ZERO_PFN << PAGE_SHIFT) | _PAGE_PROTECT | _PAGE_READ | \\\n'
    '\t\t\t _PAGE_YOUNG | _PAGE_PRESENT)\n'),
   ('\t\tinvalid = pte_val(__ptep_get(ptep)) & _PAGE_INVALID;\n\t\tcount = 1;\n',
    '\t\tinvalid = pte_val(__ptep_get(ptep)) & _PAGE_INVALID;\n'
    '\t\t/*\n\t\t * Nothing ever writes to the zero page: a translation of it\n'
    '\t\t * that outlives the batch still reads zeroes, no IPTE needed.\n\t\t */\n'
    '\t\tif (pte_val(__ptep_get(ptep)) == ZERO_PAGE_PTE)\n'
    '\t\t\tinvalid = _PAGE_INVALID;\n'
    '\t\tcount = 1;\n')])

m('ipte-gap-merge', 'IPTE of entries outside the batch',
  'When at least 16 pending entries of the window are valid in memory, range_invalidate_runs() covers them with one IPTE-range from the first to the\n'
  'last, assuming the entries in between are pending too or invalid already; a valid entry in between that the section did not touch is invalidated\n'
  'in memory and stays invalid. Needs 16 batched updates of valid PTEs in one flush interval on an mm another CPU runs, around a valid PTE the\n'
  'section leaves alone.',
  [('''/*
 * Invalidate the pending entries that are valid in memory: one IPTE-range
 * per run of consecutive pending slots whose entries agree on the I bit.
 */
static void range_invalidate_runs(struct ipte_range *range)
{
	pte_t *ptep = range->start_pte;
	unsigned long invalid;
	unsigned int count;

''', '''/*
 * zap_pte_range() over a populated stretch: when many pending entries are
 * valid, one IPTE-range from the first to the last of them is cheaper than one
 * per run. The entries in between are pending too, or invalid already.
 */
#define RANGE_MERGE_MIN	16

static bool range_invalidate_merged(struct ipte_range *range)
{
	pte_t *first = NULL, *last = NULL, *ptep;
	unsigned int valid = 0;

	for (ptep = range->start_pte; ptep < range->end_pte; ptep++) {
		if (!slot_pending(range, ptep - range->base_pte) ||
		    (pte_val(__ptep_get(ptep)) & _PAGE_INVALID))
			continue;
		if (!first)
			first = ptep;
		last = ptep;
		valid++;
	}
	if (valid < RANGE_MERGE_MIN)
		return false;
	range_invalidate(range, first, last - first + 1);
	return true;
}

/*
 * Invalidate the pending entries that are valid in memory: one IPTE-range
 * per run of consecutive pending slots whose entries agree on the I bit.
 */
static void range_invalidate_runs(struct ipte_range *range)
{
	pte_t *ptep = range->start_pte;
	unsigned long invalid;
	unsigned int count;

	if (range_invalidate_merged(range))
		return;
''')])

m('whole-table-window-ipte', 'IPTE of entries outside the batch',
  'A section whose range is a whole page table (t0[0..256]) is taken for the zap of a whole PMD: range_invalidate_runs() covers the whole window with one\n'
  'IPTE-range as soon as one pending entry is valid, although the caller may skip entries; a valid entry in the window that the section did not touch is\n'
  'invalidated in memory and stays invalid. Needs a full-table range, a batched update of a valid PTE and an untouched valid PTE between updated ones.',
  [('''static void range_invalidate_runs(struct ipte_range *range)
{
	pte_t *ptep = range->start_pte;
	unsigned long invalid;
	unsigned int count;

''', '''static void range_invalidate_runs(struct ipte_range *range)
{
	pte_t *ptep = range->start_pte;
	unsigned long invalid;
	unsigned int count;

	/*
	 * A range of a whole page table is the zap of a whole PMD: the window
	 * is being cleared, one IPTE-range covers it.
	 */
	if (range_nr(range) == PTRS_PER_PTE) {
		for (; ptep < range->end_pte; ptep++) {
			if (slot_pending(range, ptep - range->base_pte) &&
			    !(pte_val(__ptep_get(ptep)) & _PAGE_INVALID)) {
				range_invalidate(range, range->start_pte,
						 range->end_pte - range->start_pte);
				return;
			}
		}
		return;
	}
''')])

m('batch-limit-orphan', 'lost update',
  'slot_fill() bounds the time preemption stays off by writing the batch out once it has taken RANGE_BATCH_MAX (32) updates, but it does so after\n'
  'widening the window and before storing the new slot: the write-out empties the window, and the 33rd update is left pending outside it. An\n'
  'ascending run of 33 updates in one flush interval (e.g. two set_ptes of 16 and one set_pte) loses the last one: memory keeps the old value.',
  [('''static void slot_fill(struct ipte_range *range, pte_t *ptep, unsigned int idx, pte_t pte)
{
	range->cache[idx] = pte;
	range->pending[idx / RANGE_LONG_BITS] |= 1UL << (idx % RANGE_LONG_BITS);
	if (ptep < range->start_pte)
		range->start_pte = ptep;
	if (ptep >= range->end_pte)
		range->end_pte = ptep + 1;
}''', '''static void range_apply(struct ipte_range *range);

/* Updates a batch takes before it is written out: preemption is off meanwhile. */
#define RANGE_BATCH_MAX	32

static void slot_fill(struct ipte_range *range, pte_t *ptep, unsigned int idx, pte_t pte)
{
	if (ptep < range->start_pte)
		range->start_pte = ptep;
	if (ptep >= range->end_pte)
		range->end_pte = ptep + 1;
	/* A full batch is written out before the next update joins it. */
	if (range->fills++ == RANGE_BATCH_MAX)
		range_apply(range);
	range->cache[idx] = pte;
	range->pending[idx / RANGE_LONG_BITS] |= 1UL << (idx % RANGE_LONG_BITS);
}'''),
   ('\tpte_t *end_pte;\t\t\t/* pending slot */\n',
    '\tpte_t *end_pte;\t\t\t/* pending slot */\n\tunsigned int fills;\t\t/* updates since the last write-out */\n'),
   ('''static void range_reset_window(struct ipte_range *range)
{
''', '''static void range_reset_window(struct ipte_range *range)
{
	range->fills = 0;
''')])

m('run-split-past-window', 'out-of-bounds bitmap read',
  'The run splitter\'s extension loop in range_invalidate_runs() tests "ptep + count <= range->end_pte" (one too far) and so also asks slot_pending()\n'
  'about the slot just past the window. Harmless while that slot exists (it is never pending), but a range of a whole page table (t0[0..256]) whose\n'
  'window reaches entry 255 makes it read pending[4], past the end of the kzalloc\'d struct ipte_range. Needs the full-table range and an update of t0[255].',
  [('\t\twhile (ptep + count < range->end_pte &&\n',
    '\t\twhile (ptep + count <= range->end_pte &&\n')])

m('owed-flush-skips-ipte', 'store over a valid PTE, no IPTE',
  'range_invalidate() skips the IPTE-range of a run of 8 or more entries when this CPU runs the mm and a full flush of it is owed (flush_mm), and\n'
  'only sets the I bits by store ("the caller\'s flush pays the owed flush, cheaper than a long IPTE-range"): the lazy policy\'s shortcut, allowed\n'
  'only while no other CPU runs the mm. A user mm\'s owed flush is paid when a second CPU switches it in, but init_mm\'s is not paid when a CPU comes\n'
  'back online. Needs a lazy invalidation on init_mm while the other CPUs are offline, a CPU back online, then a batched run of 8 valid kernel PTEs.',
  [('''/*
 * Invalidate @count consecutive entries, all valid in memory, before new''', '''#define RANGE_OWED_MIN	8

/*
 * Invalidate @count consecutive entries, all valid in memory, before new'''),
   ('''	atomic_inc(&mm->context.flush_count);
	if (cpu_has_tlb_lc() && cpumask_equal(mm_cpumask(mm), cpumask_of(cpu)))
		__ptep_ipte_range(addr, count - 1, ptep, IPTE_LOCAL);''', '''	atomic_inc(&mm->context.flush_count);
	if (count >= RANGE_OWED_MIN && mm->context.flush_mm &&
	    cpumask_test_cpu(cpu, &mm->context.cpu_attach_mask)) {
		/*
		 * This CPU runs the mm and owes it a full flush: the caller's
		 * flush pays it, cheaper than a long IPTE-range.
		 */
		for (; count; count--, ptep++)
			__set_pte(ptep, __pte(pte_val(__ptep_get(ptep)) | _PAGE_INVALID));
	} else if (cpu_has_tlb_lc() && cpumask_equal(mm_cpumask(mm), cpumask_of(cpu)))
		__ptep_ipte_range(addr, count - 1, ptep, IPTE_LOCAL);''')])

m('run-table-overflow', 'missed IPTE on part of a window',
  'range_invalidate_runs() first collects the valid runs in an array of RANGE_MAX_RUNS (8) and issues their IPTE-ranges after the scan ("the IPTEs\n'
  'change the I bits the scan reads"); runs beyond the eighth are silently dropped, and their pending values are stored over valid entries. Needs nine\n'
  'separate runs of batched updates of valid PTEs (separated by untouched or invalid entries) in one flush interval on an mm another CPU runs.',
  [('''static void range_invalidate_runs(struct ipte_range *range)
{
	pte_t *ptep = range->start_pte;
	unsigned long invalid;
	unsigned int count;
''', '''#define RANGE_MAX_RUNS	8

static void range_invalidate_runs(struct ipte_range *range)
{
	/* Scan first, invalidate afterwards: the IPTEs change the I bits the scan reads. */
	struct {
		pte_t *ptep;
		unsigned int count;
	} runs[RANGE_MAX_RUNS];
	pte_t *ptep = range->start_pte;
	unsigned int count, nr = 0, i;
	unsigned long invalid;
'''), ('''		if (!invalid)
			range_invalidate(range, ptep, count);
		ptep += count;
	}
}''', '''		if (!invalid && nr < RANGE_MAX_RUNS) {
			runs[nr].ptep = ptep;
			runs[nr].count = count;
			nr++;
		}
		ptep += count;
	}
	for (i = 0; i < nr; i++)
		range_invalidate(range, runs[i].ptep, runs[i].count);
}''')])

m('window-len-u8', 'truncated window length',
  'range_apply() keeps the window length in a u8 ("the window lies in one page table: at most PTRS_PER_PTE entries"): a window of all 256 entries of\n'
  'a table (updates of both t0[0] and t0[255] in one flush interval of a full-table range) has length 0, so nothing is unpoisoned before the write-out,\n'
  'which then reads and writes the poisoned entries as the eager code would, and nothing is poisoned again afterwards.',
  [('''	pte_t *start = range->start_pte;
	pte_t *end = range->end_pte;

	if (start >= end)
		return;
	kasan_unpoison_pte(start, end - start);
	range_invalidate_runs(range);
	range_store(range);
	kasan_poison_pte(start, end - start);
	range_reset_window(range);''', '''	pte_t *start = range->start_pte;
	/* The window lies in one page table: at most PTRS_PER_PTE entries. */
	u8 nr = range->end_pte - start;

	if (start >= range->end_pte)
		return;
	kasan_unpoison_pte(start, nr);
	range_invalidate_runs(range);
	range_store(range);
	kasan_poison_pte(start, nr);
	range_reset_window(range);''')])

m('dense-window-count', 'missed IPTE on part of a run',
  'range_invalidate_runs() has a fast path for a dense window of at least 32 entries, every one pending and valid in memory (a zap of a populated\n'
  'stretch): one IPTE-range over the window, called with range_invalidate(range, start, len - 1), the "nr" convention of the instruction, although\n'
  'range_invalidate() takes a count. The last entry of the window is not invalidated, and its pending value is stored over it while it is valid.\n'
  'Needs 32 consecutive batched updates of valid PTEs in one flush interval on an mm another CPU runs.',
  [('''static void range_invalidate_runs(struct ipte_range *range)
{
	pte_t *ptep = range->start_pte;
	unsigned long invalid;
	unsigned int count;

''', '''#define RANGE_DENSE_MIN	32

static void range_invalidate_runs(struct ipte_range *range)
{
	pte_t *ptep = range->start_pte;
	unsigned long invalid;
	unsigned int count;

	/*
	 * A dense window of valid entries (a zap of a populated stretch): one
	 * IPTE-range for all of it.
	 */
	if (range->end_pte - range->start_pte >= RANGE_DENSE_MIN) {
		for (; ptep < range->end_pte; ptep++)
			if (!slot_pending(range, ptep - range->base_pte) ||
			    (pte_val(__ptep_get(ptep)) & _PAGE_INVALID))
				break;
		if (ptep == range->end_pte) {
			range_invalidate(range, range->start_pte,
					 range->end_pte - range->start_pte - 1);
			return;
		}
		ptep = range->start_pte;
	}
''')])

m('long-ipte-range-as-flush', 'CPU dropped from mm_cpumask',
  'After a global IPTE-range of 16 or more entries, range_invalidate() shrinks mm_cpumask() to the CPUs attached to the mm, as __tlb_flush_mm() does\n'
  'after an IDTE ("the machine carries a long IPTE-range out as a purge of the whole TLB"), but the instruction only purges its own entries: a CPU that\n'
  'ran the mm before keeps its translations of other PTEs, and the next direct-policy invalidation of one of them (test_and_clear_young) takes a\n'
  'local IPTE. Needs a CPU that read a PTE and switched away, 16 batched young-bit clears of valid PTEs in one run, then a young-bit clear of that PTE.',
  [('''	else
		__ptep_ipte_range(addr, count - 1, ptep, IPTE_GLOBAL);
	atomic_dec(&mm->context.flush_count);
}''', '''	else {
		__ptep_ipte_range(addr, count - 1, ptep, IPTE_GLOBAL);
		/*
		 * The machine carries a long global IPTE-range out as a purge of
		 * the whole TLB: now only the CPUs that run the mm can hold
		 * entries for it, as after __tlb_flush_mm().
		 */
		if (count >= RANGE_PURGE_MIN)
			cpumask_copy(mm_cpumask(mm), &mm->context.cpu_attach_mask);
	}
	atomic_dec(&mm->context.flush_count);
}'''),
   ('''/*
 * Invalidate @count consecutive entries, all valid in memory, before new''', '''#define RANGE_PURGE_MIN	16

/*
 * Invalidate @count consecutive entries, all valid in memory, before new''')])

# Compute every patch first: a stale edit fails before anything is written.
patches = []
for n, (name, cls, desc, edits) in enumerate(M, 1):
    s = ref
    for old, new in edits:
        assert s.count(old) == 1, (name, old, s.count(old))
        s = s.replace(old, new)
    d = tempfile.mkdtemp()
    os.makedirs(d + '/a/arch/s390/mm'); os.makedirs(d + '/b/arch/s390/mm')
    shutil.copy(SRC, d + '/a/arch/s390/mm/lazy_mmu.c')
    open(d + '/b/arch/s390/mm/lazy_mmu.c', 'w').write(s)
    diff = subprocess.run(['diff', '-u', 'a/arch/s390/mm/lazy_mmu.c', 'b/arch/s390/mm/lazy_mmu.c'],
                          cwd=d, capture_output=True, text=True).stdout
    shutil.rmtree(d)
    # drop timestamps from the file header lines
    lines = diff.splitlines(True)
    lines[0] = '--- a/arch/s390/mm/lazy_mmu.c\n'
    lines[1] = '+++ b/arch/s390/mm/lazy_mmu.c\n'
    hdr = 'Bug-class: %s\n' % cls
    if name in HARDENING:
        hdr += 'Hardening: yes\n'
    hdr += 'Description: %s\n\n' % desc.replace('\n', '\n ')
    patches.append(('%s/%02d-%s.patch' % (OUT, n, name), hdr + ''.join(lines)))

for f in os.listdir(OUT):
    if f.endswith('.patch'):
        os.remove(os.path.join(OUT, f))
for fn, text in patches:
    open(fn, 'w').write(text)
    print(fn)
