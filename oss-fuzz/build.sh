#!/bin/bash -eu
# OSS-Fuzz / ClusterFuzzLite build script: builds the cargo-fuzz targets (the C target is
# compiled by target/build.rs with clang and libFuzzer coverage, plus ASan when the Rust
# side has it) and puts each target, its seed corpus, dictionary and options into $OUT.
cd "$SRC/lazymmu-rig"
case "${SANITIZER:-address}" in
    address) san=address ;;
    memory) san=memory ;;
    *) san=none ;;
esac
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/build}"
cargo fuzz build -O -s "$san"
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
for t in differential differential_multi program_decode; do
    cp "$bin/$t" "$OUT/"
    cp fuzz/lazymmu.dict "$OUT/$t.dict"
    cp fuzz/differential.options "$OUT/$t.options"
    rm -f "$OUT/${t}_seed_corpus.zip"
    zip -q -j "$OUT/${t}_seed_corpus.zip" corpus/seeds/*.ops corpus/regressions/*.ops
done
