#!/usr/bin/env bash
# Installs what the libFuzzer and AFL++ targets need on a fresh machine (run as root, or
# with the apt part done): clang and llvm (the C target's coverage instrumentation,
# AFL++'s LLVM mode), cargo-fuzz and cargo-afl, and AFL++'s runtime.
set -euo pipefail
if ! command -v clang >/dev/null || ! command -v llvm-config >/dev/null; then
    apt-get update
    apt-get install -y --no-install-recommends clang llvm lld zip unzip bc patch
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
command -v cargo-afl >/dev/null || cargo install --locked cargo-afl
# Builds AFL++ for this rustc; says so and exits non-zero if it is already built.
cargo afl config --build 2>&1 | tail -1 || true
