#!/usr/bin/env bash
# Benchmark of duplicate detection: builds release, generates a realistic export of ROWS rows
# (default 1,000,000; shaped like DESIGN §9) and measures wall time and peak RSS of
#   devrev-merge --csv big.csv --preview --json > /dev/null
# RUNS times (default 3). Targets on a 2-core machine: < 1.5 s and < 250 MB peak RSS.
#
#   benches/detect.sh            # 1,000,000 rows, 3 runs
#   ROWS=200000 RUNS=1 benches/detect.sh
set -euo pipefail

ROWS="${ROWS:-1000000}"
RUNS="${RUNS:-3}"
SEED="${SEED:-7}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"

cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin devrev-merge --example gen_contacts
bin="$target/release/devrev-merge"
gen="$target/release/examples/gen_contacts"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$gen" --rows "$ROWS" --seed "$SEED" --out "$work/big.csv"
echo "input: $ROWS rows, $(du -h "$work/big.csv" | cut -f1) ($work/big.csv)"
cd "$work"
# Warm the page cache the way a second run would see it; the first read is timed too below.
cat big.csv > /dev/null

# Peak RSS: GNU time if present, else Python's getrusage of the child.
measure() {
  if /usr/bin/time -f '' true 2>/dev/null; then
    /usr/bin/time -f '%e %M %U %S' "$@" > /dev/null 2> time.txt || { cat time.txt; return 1; }
    tail -n1 time.txt
  else
    python3 - "$@" <<'PY'
import resource, subprocess, sys, time
t0 = time.monotonic()
rc = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL)
wall = time.monotonic() - t0
if rc != 0:
    sys.exit(rc)
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
print(f"{wall:.2f} {ru.ru_maxrss} {ru.ru_utime:.2f} {ru.ru_stime:.2f}")
PY
  fi
}

for i in $(seq 1 "$RUNS"); do
  read -r secs kb user sys < <(measure "$bin" --csv big.csv --preview --json -q)
  printf 'run %d: wall %.2f s, peak RSS %.1f MB (cpu: user %.2f s, sys %.2f s)\n' \
    "$i" "$secs" "$(echo "$kb / 1024" | bc -l)" "$user" "$sys"
done
plan="$(ls -t reports/plan-*.json | head -n1)"
echo "plan file: $(du -h "$plan" | cut -f1), $(grep -m1 -o '"rows_read": [0-9]*' "$plan"), $(grep -c '"secondary":{' "$plan") pairs"
echo "load average during the runs: $(cut -d' ' -f1-3 /proc/loadavg) (2 cores are shared with other work)"
