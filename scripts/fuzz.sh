#!/usr/bin/env bash
# Runs each fuzz target for a bounded time: bash scripts/fuzz.sh [SECONDS per target] [TARGET...]
# Needs cargo-fuzz (cargo install cargo-fuzz). On a stable toolchain the sanitizer flags are
# enabled with RUSTC_BOOTSTRAP=1. Seeds come from scripts/fuzz-seeds.sh output in fuzz/corpus.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(format_reader archive_validator manifest_reader pack_reader)
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  echo "== fuzzing $t for ${secs}s"
  mkdir -p logs
  cargo fuzz run "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=1048576 >"logs/$t.log" 2>&1 \
    || { echo "fuzzer $t failed; see fuzz/logs/$t.log and fuzz/artifacts/$t"; tail -n 30 "logs/$t.log"; exit 1; }
  grep -E "^#[0-9]+.*(DONE|pulse)|Done [0-9]+ runs" "logs/$t.log" | tail -n 2
done
