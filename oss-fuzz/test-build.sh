#!/bin/bash -eu
# Runs oss-fuzz/build.sh here the way OSS-Fuzz runs it ($SRC, $OUT, $WORK, $CFLAGS,
# $SANITIZER, $FUZZING_ENGINE set as its builder sets them), then checks $OUT: each target,
# its seed corpus, dictionary and options, and that each target runs its seed corpus.
# On stable Rust, ASan needs RUSTC_BOOTSTRAP=1 (OSS-Fuzz itself uses nightly).
repo=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
mkdir -p "$tmp/src" "$tmp/out" "$tmp/work"
ln -s "$repo" "$tmp/src/lazymmu-rig"
export SRC="$tmp/src" OUT="$tmp/out" WORK="$tmp/work"
export SANITIZER=${SANITIZER:-address} FUZZING_ENGINE=libfuzzer ARCHITECTURE=x86_64
export CC=clang CXX=clang++
export CFLAGS="-O1 -fno-omit-frame-pointer -gline-tables-only -fsanitize=address -fsanitize-address-use-after-scope -fsanitize=fuzzer-no-link"
export CXXFLAGS="$CFLAGS"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$repo/build/oss-fuzz-target"
"$repo/oss-fuzz/build.sh"
for t in differential differential_multi program_decode; do
    for f in "$t" "$t.dict" "$t.options" "${t}_seed_corpus.zip"; do
        test -s "$OUT/$f" || { echo "missing $OUT/$f"; exit 1; }
    done
    seeds="$tmp/seeds-$t"
    mkdir -p "$seeds"
    unzip -q "$OUT/${t}_seed_corpus.zip" -d "$seeds"
    (cd "$OUT" && "./$t" -runs=0 -dict="$t.dict" "$seeds" >"$tmp/$t.log" 2>&1) || { tail -20 "$tmp/$t.log"; exit 1; }
    echo "$t: $(grep -c . <(ls "$seeds")) seeds replayed, $(grep -o 'INITED.*' "$tmp/$t.log" | head -1)"
done
ls -l "$OUT"
rm -rf "$tmp"
echo "oss-fuzz build.sh: OK"
