#!/usr/bin/env bash
# Runs one fuzz target long (libFuzzer through cargo fuzz), over its committed corpus.
#
#   scripts/fuzz.sh                      # lists the targets
#   scripts/fuzz.sh TARGET               # 10 million runs or an hour, whichever comes first
#   scripts/fuzz.sh TARGET -runs=1000    # any libFuzzer flags instead of the defaults
#   FUZZ_TARGET_DIR=DIR scripts/fuzz.sh TARGET   # builds in DIR instead of fuzz/target
#
# New interesting inputs are added to fuzz/corpus/TARGET; minimise before committing them
# (`cargo fuzz cmin -a TARGET fuzz/corpus/TARGET` in fuzz/). A crash is saved under
# fuzz/artifacts/TARGET/; replay it with `cargo fuzz run -a TARGET fuzz/artifacts/TARGET/<file>`.
# Works on a stable toolchain: RUSTC_BOOTSTRAP=1 lets it take cargo fuzz's nightly-only flags.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
unset CARGO_TARGET_DIR # the fuzz builds (sanitizer flags) keep to fuzz/target, or FUZZ_TARGET_DIR
target_dir=()
if [[ -n "${FUZZ_TARGET_DIR:-}" ]]; then
    target_dir=(--target-dir "$FUZZ_TARGET_DIR")
fi

if ! command -v cargo-fuzz > /dev/null; then
    echo "cargo-fuzz is missing; installing it (cargo install cargo-fuzz --locked)" >&2
    cargo install cargo-fuzz --locked || {
        echo "installing cargo-fuzz failed: check that crates can be downloaded, then retry" >&2
        exit 1
    }
fi

if [[ $# -eq 0 ]]; then
    cargo fuzz list
    exit 0
fi
target=$1
shift
if [[ $# -eq 0 ]]; then
    set -- -runs=10000000 -max_total_time=3600 -timeout=5 -rss_limit_mb=2048 -print_final_stats=1
fi
mkdir -p "corpus/$target"
# -a: debug assertions and overflow checks on, as in `cargo test`.
exec nice -n 10 cargo fuzz run -a "${target_dir[@]}" "$target" "corpus/$target" -- "$@"
