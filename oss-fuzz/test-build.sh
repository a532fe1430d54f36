#!/bin/bash -u
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
#
# Checks the OSS-Fuzz / ClusterFuzzLite files without Docker (no Docker engine here):
#
# 1. presubmit-style checks of what OSS-Fuzz's own presubmit and helper check: license
#    headers, project.yaml fields, a Dockerfile meant for the projects/<name>/ context;
#    fields only the maintainer can fill are listed as UNFILLED, not failed;
# 2. oss-fuzz/build.sh run for SANITIZER=address and SANITIZER=coverage with the
#    environment the builder sets ($SRC $OUT $WORK, $CC $CFLAGS, $RUSTFLAGS, and clang's
#    libFuzzer as the prebuilt engine through CUSTOM_LIBFUZZER_PATH), then every target
#    run on its seed corpus; for coverage, a report (llvm-profdata + llvm-cov) of the
#    implementation file.
#
# Usage: oss-fuzz/test-build.sh [presubmit|address|coverage]...   (default: all three)
# Needs fuzz/setup.sh (clang, llvm, libclang-rt-14-dev, cargo-fuzz). On stable Rust, ASan
# needs RUSTC_BOOTSTRAP=1 (OSS-Fuzz itself uses nightly).
repo=$(cd "$(dirname "$0")/.." && pwd)
steps=("$@")
[ ${#steps[@]} -gt 0 ] || steps=(presubmit address coverage)
failed=0
fail() { echo "FAIL: $*"; failed=1; }

presubmit() {
    echo "== presubmit"
    local f
    for f in oss-fuzz/Dockerfile oss-fuzz/build.sh oss-fuzz/test-build.sh \
        .clusterfuzzlite/Dockerfile .clusterfuzzlite/build.sh; do
        grep -q "Licensed under the Apache License, Version 2.0" "$repo/$f" ||
            fail "$f: no license header"
    done
    local y="$repo/oss-fuzz/project.yaml" unfilled=()
    for k in homepage main_repo primary_contact language sanitizers fuzzing_engines; do
        grep -q "^$k:" "$y" || fail "project.yaml: no $k"
    done
    grep -q '^language: rust$' "$y" || fail "project.yaml: language is not rust"
    local contact
    contact=$(sed -n 's/^primary_contact: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$y")
    if [[ "$contact" == FILL-IN* ]]; then
        unfilled+=(primary_contact)
    elif ! [[ "$contact" =~ ^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$ ]]; then
        fail "project.yaml: primary_contact '$contact' is not an e-mail address"
    fi
    for k in homepage main_repo; do
        local v
        v=$(sed -n "s/^$k: *\"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" "$y")
        if [[ "$v" == FILL-IN* ]]; then
            unfilled+=("$k")
        elif ! [[ "$v" =~ ^https:// ]]; then
            fail "project.yaml: $k '$v' is not an https URL"
        fi
    done
    local d="$repo/oss-fuzz/Dockerfile"
    grep -q '^FROM gcr.io/oss-fuzz-base/base-builder-rust' "$d" || fail "Dockerfile: not the Rust base builder"
    grep -qE '^COPY +\. ' "$d" && fail "Dockerfile: copies its context (OSS-Fuzz builds with projects/<name>/ as context)"
    grep -qE '^COPY +build\.sh +\$SRC/?$' "$d" || fail "Dockerfile: does not COPY build.sh \$SRC/"
    if grep -q '^RUN git clone .*FILL-IN' "$d"; then
        unfilled+=("Dockerfile clone URL")
    elif ! grep -q '^RUN git clone ' "$d"; then
        fail "Dockerfile: does not git clone the repository"
    fi
    grep -qE '^COPY +\. +\$SRC/lazymmu-rig' "$repo/.clusterfuzzlite/Dockerfile" ||
        fail ".clusterfuzzlite/Dockerfile: does not copy the repository (its context)"
    test -f "$repo/.dockerignore" && grep -q '^build/' "$repo/.dockerignore" ||
        fail ".dockerignore: build/ is not ignored"
    test -f "$repo/.github/workflows/cflite_build.yml" || fail "no cflite_build.yml"
    if [ ${#unfilled[@]} -gt 0 ]; then
        echo "UNFILLED (the maintainer's): ${unfilled[*]}"
    fi
    [ $failed = 0 ] && echo "presubmit: OK"
}

# The builder's environment for one sanitizer (as base-builder and base-builder-rust set
# it; clang 14 from Debian stands in for OSS-Fuzz's pinned clang).
builder_env() {
    local san=$1 common="-O1 -fno-omit-frame-pointer -gline-tables-only -DFUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION"
    export SANITIZER=$san FUZZING_ENGINE=libfuzzer ARCHITECTURE=x86_64 FUZZING_LANGUAGE=rust
    export CC=clang CXX=clang++
    local rt
    rt=$(dirname "$(clang -print-file-name=libclang_rt.fuzzer-x86_64.a)")
    [ -f "$rt/libclang_rt.fuzzer-x86_64.a" ] || rt=$(ls -d /usr/lib/llvm-*/lib/clang/*/lib/linux | head -1)
    export LIB_FUZZING_ENGINE="$rt/libclang_rt.fuzzer-x86_64.a"
    # libfuzzer-sys links the prebuilt engine instead of building its own, as on OSS-Fuzz.
    export CUSTOM_LIBFUZZER_PATH="$LIB_FUZZING_ENGINE" CUSTOM_LIBFUZZER_STD_CXX=stdc++
    export RUSTFLAGS="--cfg fuzzing -Cdebuginfo=1 -Cforce-frame-pointers"
    case $san in
        address)
            export CFLAGS="$common -fsanitize=address -fsanitize-address-use-after-scope -fsanitize=fuzzer-no-link"
            ;;
        coverage)
            export CFLAGS="$common -fprofile-instr-generate -fcoverage-mapping -pthread -Wl,--no-as-needed -Wl,-ldl -Wl,-lm -Wno-unused-command-line-argument -fsanitize=fuzzer-no-link"
            # OSS-Fuzz adds -Cinstrument-coverage here, with rustc and clang on one LLVM.
            # Here clang 14 and rustc's LLVM differ and their profile runtimes do not
            # mix: the C side (the code under test) is instrumented with clang's
            # runtime linked in; the Rust side is not.
            export RUSTFLAGS="$RUSTFLAGS -Clink-arg=-Wl,-u,__llvm_profile_runtime -Clink-arg=$rt/libclang_rt.profile-x86_64.a"
            ;;
    esac
    export CXXFLAGS="$CFLAGS" RUSTC_BOOTSTRAP=1
}

build_and_run() {
    local san=$1
    echo "== SANITIZER=$san"
    local tmp
    tmp=$(mktemp -d)
    mkdir -p "$tmp/src" "$tmp/out" "$tmp/work"
    ln -s "$repo" "$tmp/src/lazymmu-rig"
    (
        builder_env "$san"
        export SRC="$tmp/src" OUT="$tmp/out" WORK="$tmp/work"
        export CARGO_TARGET_DIR="$repo/build/oss-fuzz-$san"
        "$repo/oss-fuzz/build.sh" >"$tmp/build.log" 2>&1 || { tail -30 "$tmp/build.log"; exit 1; }
        grep -o 'lazymmu C target for fuzzing: .*' "$tmp/build.log" | head -1
        cd "$OUT" || exit 1
        for t in differential differential_multi program_decode; do
            for f in "$t" "$t.dict" "$t.options" "${t}_seed_corpus.zip"; do
                test -s "$f" || { echo "missing \$OUT/$f"; exit 1; }
            done
            seeds="$tmp/seeds-$t"
            mkdir -p "$seeds"
            unzip -q "${t}_seed_corpus.zip" -d "$seeds"
            LLVM_PROFILE_FILE="$tmp/$t-%p.profraw" "./$t" -runs=0 -dict="$t.dict" "$seeds" \
                >"$tmp/$t.log" 2>&1 || { tail -20 "$tmp/$t.log"; exit 1; }
            echo "$t: $(ls "$seeds" | wc -l) seeds replayed, $(grep -o 'INITED.*' "$tmp/$t.log" | head -1)"
        done
        if [ "$san" = coverage ]; then
            llvm-profdata merge -sparse "$tmp"/differential-*.profraw -o "$tmp/differential.profdata" ||
                exit 1
            echo "coverage of the implementation by the differential target's seeds:"
            llvm-cov report ./differential -instr-profile="$tmp/differential.profdata" \
                2>/dev/null | grep -E '^Filename|lazy_mmu\.c|runtime\.c' || exit 1
        fi
    ) || fail "SANITIZER=$san"
    rm -rf "$tmp"
}

for s in "${steps[@]}"; do
    case $s in
        presubmit) presubmit ;;
        address | coverage) build_and_run "$s" ;;
        *) fail "unknown step '$s' (presubmit, address, coverage)" ;;
    esac
done
if [ $failed = 0 ]; then
    echo "oss-fuzz checks: OK (${steps[*]})"
else
    echo "oss-fuzz checks: FAILED"
fi
exit $failed
