#!/usr/bin/env bash
# Large-plan benchmark (issue 13, point 4): a merge run on a PAIRS-pair plan (default 100,000)
# against the fake DevRev with a high rate limit and --max-merges, measuring what a user of a
# big export waits for and what it costs in memory:
#   1. start-up: `--max-merges 0` (plan + savepoint load + schedule + report, one API call)
#   2. a canary run: `--max-merges MERGES` (default 20) from an empty savepoint
#   3. the resumed run: `--max-merges MERGES` again, loading the savepoint of run 2
# Each is timed with GNU time (wall, peak RSS); the report's summary is printed and checked
# (every pair counted, exactly MERGES merged per run). Targets: start-up < 2 s, < 200 MB.
#
# The fake generates FAKE_PAIRS real pairs (default 200: its world generator is quadratic and
# needs minutes and gigabytes at 100,000); the CSV is completed to PAIRS pairs with rows of the
# same shape whose emails sort after the fake's, so the plan has PAIRS pairs and the run, in
# plan order, merges only contacts the fake knows before --max-merges stops it.
#
#   benches/large_plan.sh
#   PAIRS=10000 MERGES=5 benches/large_plan.sh
set -euo pipefail

PAIRS="${PAIRS:-100000}"
MERGES="${MERGES:-20}"
FAKE_PAIRS="${FAKE_PAIRS:-200}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"

cargo build --release --quiet --manifest-path "$repo/Cargo.toml" --bin devrev-merge --example fake_devrev
bin="$target/release/devrev-merge"
fake="$target/release/examples/fake_devrev"

work="$(mktemp -d)"
fake_pid=""
cleanup() {
  if [ -n "$fake_pid" ]; then kill "$fake_pid" 2>/dev/null || true; wait "$fake_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
cd "$work"

t0=$(date +%s.%N)
"$fake" --pairs "$FAKE_PAIRS" --review-groups 0 --singles 0 --write-csv contacts.csv \
  --rate-limit 1000000 --rate-window 60 --merge-delay-ms 50 > fake.out 2>&1 &
fake_pid=$!
for _ in $(seq 1 1200); do
  grep -q "listening on" fake.out && break
  kill -0 "$fake_pid" 2>/dev/null || { cat fake.out; exit 1; }
  sleep 0.5
done
python3 - "$PAIRS" "$FAKE_PAIRS" <<'PY'
import sys
pairs, fake_pairs = int(sys.argv[1]), int(sys.argv[2])
with open("contacts.csv", "a") as f:
    for n in range(max(0, pairs - fake_pairs)):
        email = f"zz.bench.{n:06d}@example.com"
        for kind, ref in (("R", f"REVU-B{n:06d}"), ("U", f"user_bench{n:06d}")):
            f.write(f"don:identity:dvrv-us-1:devo/Bench0:revu/{kind}{n:06d},Bench {n},{email},"
                    f"{ref},,2024-12-03 15:16:07.123,2024-12-03 15:16:07.123,{n % 4}\n")
PY
url="$(sed -n 's/.*listening on \(http[^ ]*\).*/\1/p' fake.out)"
token="$(sed -n 's/^ *token: //p' fake.out)"
echo "fake: $FAKE_PAIRS pairs at $url (CSV completed to $PAIRS pairs), ready in $(echo "$(date +%s.%N) - $t0" | bc) s; CSV $(du -h contacts.csv | cut -f1), $(($(wc -l < contacts.csv) - 1)) rows"

run() {
  local label="$1"; shift
  set +e
  env -i PATH="$PATH" HOME="$work" DEVREV_BASE_URL="$url" DEVREV_API_TOKEN="$token" \
    RATE_LIMIT_CALLS=60000 RATE_LIMIT_PERIOD=60 \
    /usr/bin/time -f '%e %M' -o time.txt \
    "$bin" --csv contacts.csv --yes --merge-timeout 30 "$@" > "out-$label.txt" 2> "err-$label.txt"
  local rc=$?
  set -e
  read -r wall rss < <(tail -n1 time.txt)
  local report
  report="$(ls -t reports/merge-*.json | head -n1)"
  python3 - "$report" "$label" "$wall" "$rss" "$rc" "$PAIRS" "$1" "$2" <<'PY'
import json, sys
path, label, wall, rss, rc, pairs, _, merges = sys.argv[1:9]
r = json.load(open(path))
s = r["summary"]
print(f"{label:>8}: {float(wall):6.2f} s wall, {int(rss)/1024:6.1f} MB peak RSS, exit {rc}; "
      f"pairs {s['pairs']}, merged this run {s['merged_this_run']}, merged {s['merged']}, "
      f"API calls {r['api']['calls']}")
assert s["pairs"] == int(pairs), f"summary counts {s['pairs']} pairs, the plan has {pairs}"
assert s["merged_this_run"] == int(merges), s
PY
  ls -l savepoint.json 2>/dev/null | awk '{print "          savepoint: " $5 " bytes"}' || true
}

run startup --max-merges 0
run canary --max-merges "$MERGES"
run resumed --max-merges "$MERGES"
grep -h "Pairs to merge" out-*.txt err-*.txt | head -n3 || true
