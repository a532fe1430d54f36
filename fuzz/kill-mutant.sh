#!/usr/bin/env bash
# Time for libFuzzer to kill a planted mutant, from an empty corpus or from the .ops
# programs of a seed directory (e.g. corpus/seeds, as users run it):
#   fuzz/kill-mutant.sh 03 [auto|none|gcc] [max-seconds] [seed-dir]
# The mutant is applied to a copy of the reference tree, linked into the differential
# target through LAZYMMU_KERNEL_TREE; the third argument is LAZYMMU_C_COVERAGE (C
# instrumentation on, off, or gcc trace-pc). Prints the seconds to the first finding.
set -euo pipefail
cd "$(dirname "$0")/.."
mutant=$(ls target/mutants/"$1"*.patch | head -1)
coverage=${2:-auto}
max=${3:-300}
tree=$(mktemp -d)
cp -r target/reference/. "$tree"
patch -s -p1 -d "$tree" < "$mutant"
export LAZYMMU_KERNEL_TREE="$tree" LAZYMMU_C_COVERAGE="$coverage"
cargo fuzz build -s none differential 2>/dev/null
work=$(mktemp -d)
if [ -n "${4:-}" ]; then
    cp "$4"/*.ops "$work"/
fi
start=$(date +%s.%N)
set +e
cargo fuzz run -s none differential "$work" -- -max_total_time="$max" -max_len=16384 \
    -artifact_prefix="$work/" -seed=1 >"$work/log" 2>&1
set -e
end=$(date +%s.%N)
if grep -q "==lazymmu==" "$work/log"; then
    sig=$(grep -m1 "==lazymmu==" "$work/log" | awk '{print $2}')
    runs=$(grep -Eo "^#[0-9]+" "$work/log" | tail -1)
    printf '%s coverage=%s killed in %.1fs (%s execs logged last): %s\n' "$(basename "$mutant" .patch)" "$coverage" "$(echo "$end - $start" | bc)" "$runs" "$sig"
else
    printf '%s coverage=%s survived %ss\n' "$(basename "$mutant" .patch)" "$coverage" "$max"
fi
rm -rf "$tree" "$work"
