#!/usr/bin/env bash
# Builds the libFuzzer targets on stable (cargo fuzz build -s none), replays the seed
# corpus through each, and runs each for SECS seconds (default 30). Needs cargo-fuzz and
# clang (for the C target's coverage instrumentation; gcc trace-pc otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
cargo fuzz build -s none
for t in differential differential_multi program_decode; do
    corpus="build/fuzz-corpus/$t"
    mkdir -p "$corpus"
    echo "== $t: replay of corpus/seeds"
    cargo fuzz run -s none "$t" corpus/seeds -- -runs=0 -max_len=16384
    echo "== $t: ${secs}s"
    cargo fuzz run -s none "$t" "$corpus" corpus/seeds -- -max_total_time="$secs" -max_len=16384 -print_final_stats=1
done
