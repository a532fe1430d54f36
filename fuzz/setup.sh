#!/usr/bin/env bash
# Installs what the libFuzzer and AFL++ targets need on a fresh machine (run as root, or
# with the apt part done): clang and llvm (the C target's coverage instrumentation,
# AFL++'s LLVM mode, llvm-profdata/llvm-cov for coverage reports), clang's libFuzzer
# runtime (OSS-Fuzz-style builds link it as the fuzzing engine), cargo-fuzz, cargo-afl
# and AFL++'s runtime. Idempotent: it says what it installed and what was already there.
set -euo pipefail
say() { printf 'setup: %s\n' "$*"; }

apt_pkgs=(clang llvm lld libclang-rt-14-dev zip unzip bc patch)
missing=()
for p in "${apt_pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]} (apt)"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "already there: ${apt_pkgs[*]}"
fi

for tool in fuzz afl; do
    if cargo "$tool" --version >/dev/null 2>&1; then
        say "already there: cargo-$tool ($(cargo "$tool" --version 2>/dev/null | head -1))"
    else
        say "installing cargo-$tool (cargo install --locked)"
        cargo install --locked --quiet "cargo-$tool"
    fi
done

# AFL++ itself, built per rustc (cargo-afl 0.18 builds it at install time; its
# `config --build` then refuses, which is fine).
if out=$(cargo afl config --build 2>&1); then
    say "built AFL++ for this rustc (cargo afl config --build)"
elif grep -q "already built" <<<"$out"; then
    say "already there: AFL++ for this rustc"
else
    printf '%s\n' "$out" | tail -5
    say "building AFL++ failed"
    exit 1
fi
say "done"
