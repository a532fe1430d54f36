#!/usr/bin/env bash
# AFL++ on the differential target (afl.rs, persistent mode), SECS seconds (default 30):
# first on the reference with the seed corpus (expects no crash), then on a planted
# mutant (default 03) from a one-byte input (expects a crash, which it minimizes).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
mutant=${2:-03}
export AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_UI=1
(cd fuzz/afl && cargo afl build --release)
rm -rf build/afl-ref
cargo afl fuzz -i corpus/seeds -o build/afl-ref -V "$secs" -- build/release/differential_afl >/dev/null 2>&1 || true
grep -E "execs_done|saved_crashes" build/afl-ref/default/fuzzer_stats
test "$(awk '/saved_crashes/ {print $3}' build/afl-ref/default/fuzzer_stats)" = 0
tree=$(mktemp -d)
cp -r target/reference/. "$tree"
patch -s -p1 -d "$tree" < "$(ls target/mutants/"$mutant"*.patch | head -1)"
(cd fuzz/afl && LAZYMMU_KERNEL_TREE="$tree" cargo afl build --release)
mkdir -p build/afl-in && printf x > build/afl-in/one
rm -rf build/afl-mutant
AFL_BENCH_UNTIL_CRASH=1 cargo afl fuzz -i build/afl-in -o build/afl-mutant -V "$secs" -- build/release/differential_afl >/dev/null 2>&1 || true
grep -E "run_time|execs_done|saved_crashes" build/afl-mutant/default/fuzzer_stats
crash=$(ls build/afl-mutant/default/crashes/id* | head -1)
cargo run --release -q -- minimize "$crash" --mutant "$mutant"
(cd fuzz/afl && cargo afl build --release)   # back to the reference
rm -rf "$tree"
