#!/bin/bash -eu
# Copyright 2026 the lazymmu-rig authors
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
#
################################################################################

# OSS-Fuzz / ClusterFuzzLite build script. Builds the cargo-fuzz targets optimized with
# debug assertions on (the rig's invariants stay checked), with the C implementation
# compiled by target/build.rs with the builder's $CC and $CFLAGS (ASan and libFuzzer
# coverage, or clang's source coverage in a coverage build), and puts each target with
# its seed corpus, dictionary and options into $OUT.
cd "$SRC/lazymmu-rig"
case "${SANITIZER:-address}" in
    address) san=address ;;
    memory) san=memory ;;
    *) san=none ;; # coverage, undefined: flags come from RUSTFLAGS and CFLAGS
esac
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/build}"
cargo fuzz build -O --debug-assertions -s "$san"
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release"
for t in differential differential_multi program_decode; do
    cp "$bin/$t" "$OUT/"
    cp fuzz/lazymmu.dict "$OUT/$t.dict"
    cp fuzz/differential.options "$OUT/$t.options"
    rm -f "$OUT/${t}_seed_corpus.zip"
    zip -q -j "$OUT/${t}_seed_corpus.zip" corpus/seeds/*.ops corpus/regressions/*.ops
done
