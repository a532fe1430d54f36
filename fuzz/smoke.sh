#!/usr/bin/env bash
# Builds the libFuzzer targets on stable (cargo fuzz build -s none, debug assertions on),
# replays the seed corpus through each, and runs each for SECS seconds (default 30).
# Every target runs, whatever happens to the others; a line per target says how it went,
# and the script fails at the end if any failed. A death of the rig itself (its own
# abort frame, lazymmu_rig_bug) is told apart from a finding in the implementation.
# Needs cargo-fuzz and clang (fuzz/setup.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
logs=build/fuzz-smoke
mkdir -p "$logs"
if ! cargo fuzz build -s none --debug-assertions >"$logs/build.log" 2>&1; then
    tail -30 "$logs/build.log"
    echo "smoke: the targets do not build"
    exit 1
fi
status=()
failed=0
for t in differential differential_multi program_decode; do
    corpus="build/fuzz-corpus/$t"
    artifacts="$logs/$t-artifacts/"
    mkdir -p "$corpus" "$artifacts"
    log="$logs/$t.log"
    if ! cargo fuzz run -s none --debug-assertions "$t" corpus/seeds -- -runs=0 \
        -max_len=16384 >"$log" 2>&1; then
        status+=("$t: FAILED replaying corpus/seeds (see $log)")
        failed=1
        continue
    fi
    cargo fuzz run -s none --debug-assertions "$t" "$corpus" corpus/seeds -- \
        -max_total_time="$secs" -max_len=16384 -print_final_stats=1 \
        -artifact_prefix="$artifacts" >>"$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    if [ $rc -eq 0 ]; then
        status+=("$t: ok, ${execs:-?} execs in ${secs}s")
    elif grep -q 'lazymmu_rig_bug\|rig bug' "$log"; then
        status+=("$t: FAILED: the rig itself died (lazymmu_rig_bug); input in $artifacts (see $log)")
        failed=1
    else
        status+=("$t: FAILED: a finding or crash after ${execs:-?} execs; artifact in $artifacts (see $log)")
        failed=1
    fi
done
printf '%s\n' "${status[@]}"
exit $failed
