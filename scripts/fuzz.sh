#!/usr/bin/env bash
# `make fuzz`: runs every fuzz target (fuzz/fuzz_targets, harness in fuzz/src/lib.rs) under
# libFuzzer for FUZZ_SECONDS each (default 60), one after the other, and prints per target
# the executions and any crash. Exits non-zero if a target crashed (or failed to build).
#
# Needs a nightly toolchain (`cargo +nightly`): without one it says so and exits 0. Installs
# cargo-fuzz when missing. Corpora are built at run time in fuzz/corpus/<target> (kept between
# runs, not in git) from the checked-in seeds (fuzz/seeds/<target>) and the captured
# Prometheus requests in ../shared/fixtures (tests/fixtures' copy when that is missing).
#
#   FUZZ_SECONDS=10 scripts/fuzz.sh             # shorter
#   FUZZ_TARGETS="snappy ha_router" scripts/fuzz.sh
#
# A crashing input is left in fuzz/artifacts/<target>/; once fixed, copy it to
# tests/fixtures/fuzz/<target>/, where tests/fuzz_regressions.rs replays it on stable.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-remote_write remote_write_v2 remote_read snappy ha_router}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "no nightly toolchain: fuzzing skipped"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
echo "== fuzzing with $(cargo +nightly --version), $(cargo fuzz --version), ${seconds} s per target"

fixtures=../shared/fixtures/prometheus-2.42
if [ ! -d "$fixtures" ]; then
  echo "$fixtures is missing: seeding from tests/fixtures/prometheus-2.42"
  fixtures=tests/fixtures/prometheus-2.42
fi

# Every captured request goes to every target (each takes any bytes); the HA target also gets
# each of its op scripts followed by each request, which its harness decodes as a template.
for target in $targets; do
  corpus=fuzz/corpus/$target
  mkdir -p "$corpus"
  cp fuzz/seeds/"$target"/* "$corpus"/ 2>/dev/null || true
  for f in "$fixtures"/*.bin; do
    [ -e "$f" ] || continue
    cp "$f" "$corpus/fixture-$(basename "$f")"
    if [ "$target" = ha_router ]; then
      for s in fuzz/seeds/ha_router/*.ops; do
        cat "$s" "$f" > "$corpus/$(basename "$s" .ops)+$(basename "$f")"
      done
    fi
  done
done

# Release, with debug assertions and overflow checks, AddressSanitizer: cargo-fuzz's default.
(cd fuzz && cargo +nightly fuzz build --release --debug-assertions)

failed=()
summary=()
for target in $targets; do
  log=fuzz/artifacts/$target.log
  mkdir -p fuzz/artifacts/"$target"
  echo "== $target: ${seconds} s"
  status=0
  (cd fuzz && cargo +nightly fuzz run --release --debug-assertions "$target" "corpus/$target" -- \
      -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1) \
    > "$log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  corpus_size=$(find fuzz/corpus/"$target" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    line="$target: ${execs:-?} executions in ${seconds} s, corpus ${corpus_size} inputs, no crash"
  else
    crash=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)
    line="$target: CRASH after ${execs:-?} executions (exit $status): ${crash:-see $log}"
    failed+=("$target")
    grep -E 'panicked at|ERROR: AddressSanitizer|ERROR: libFuzzer|SUMMARY' "$log" | head -n 5 || true
  fi
  echo "$line"
  summary+=("$line")
done

echo "== fuzzing summary ($(date -u +%Y-%m-%dT%H:%MZ), FUZZ_SECONDS=$seconds)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/; logs fuzz/artifacts/<target>.log)"
  exit 1
fi
