#!/usr/bin/env bash
# Criterion before/after on this machine: builds and runs the benches of BASE_REV (a temporary
# git worktree) with `--save-baseline base`, then the same benches of HEAD (the current checkout,
# uncommitted changes included; or HEAD_REV in a second worktree) with `--baseline base`, so
# Criterion reports each bench's change against BASE_REV; then prints a summary table
# (bench, base, head, change %, Criterion's verdict) from the estimates.json files.
#
# usage:    bash perf/bench-compare.sh BASE_REV [HEAD_REV] [-- CRITERION_ARGS...]
#           CRITERION_ARGS default: --warm-up-time 1 --measurement-time 3
# env:      BENCHES="router sigv4" (default: every [[bench]] in the HEAD Cargo.toml);
#           CARGO_TARGET_DIR (default target/): shared by both builds, so dependencies compile once
#           and both runs use the same profile; Criterion's data goes to a fresh directory,
#           perf/out/bench-compare/criterion (CRITERION_HOME), so the summary holds this run only.
# installs: nothing. Runs cargo under the caller's niceness (use `nice -n 19` on a shared machine).
#
# A bench that does not exist at BASE_REV (no benches/NAME.rs or no [[bench]] entry) is skipped
# with a message; a bench function new at HEAD shows "new" (--baseline-lenient). Sends no network
# traffic. The worktrees are removed on exit (`git worktree remove --force`), also on error.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BASE_REV=${1:?usage: perf/bench-compare.sh BASE_REV [HEAD_REV] [-- CRITERION_ARGS...]}; shift
HEAD_REV=""
if [[ $# -gt 0 && $1 != -- ]]; then HEAD_REV=$1; shift; fi
[[ ${1:-} == -- ]] && shift
CRIT_ARGS=("$@")
((${#CRIT_ARGS[@]})) || CRIT_ARGS=(--warm-up-time 1 --measurement-time 3)

BASE_SHA=$(git rev-parse --verify "$BASE_REV^{commit}")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
mkdir -p "$CARGO_TARGET_DIR"
export CARGO_TARGET_DIR=$(cd "$CARGO_TARGET_DIR" && pwd)
OUT=$ROOT/perf/out/bench-compare
rm -rf "$OUT/criterion"
mkdir -p "$OUT/criterion"
export CRITERION_HOME=$OUT/criterion
TMP=$(mktemp -d /tmp/yata-bench-compare.XXXXXX)
WORKTREES=()
cleanup() {
  local rc=$? w
  for w in "${WORKTREES[@]}"; do git -C "$ROOT" worktree remove --force "$w" >/dev/null 2>&1 || true; done
  git -C "$ROOT" worktree prune >/dev/null 2>&1 || true
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# bench_names DIR: the [[bench]] names in DIR/Cargo.toml.
bench_names() {
  awk '/^\[\[bench\]\]/ {b=1; next} /^\[/ {b=0} b && /^name *=/ {gsub(/[" ]/, "", $0); sub(/name=/, ""); print}' "$1/Cargo.toml"
}

git worktree add --detach "$TMP/base" "$BASE_SHA" >/dev/null 2>&1
WORKTREES+=("$TMP/base")
HEAD_DIR=$ROOT
HEAD_DESC="working tree at $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+dirty')"
if [[ -n $HEAD_REV ]]; then
  git worktree add --detach "$TMP/head" "$(git rev-parse --verify "$HEAD_REV^{commit}")" >/dev/null 2>&1
  WORKTREES+=("$TMP/head")
  HEAD_DIR=$TMP/head
  HEAD_DESC="$HEAD_REV ($(git rev-parse --short "$HEAD_REV"))"
fi

if [[ -n ${BENCHES:-} ]]; then read -r -a WANT <<<"$BENCHES"; else mapfile -t WANT < <(bench_names "$HEAD_DIR"); fi
mapfile -t AT_BASE < <(bench_names "$TMP/base")
RUN=()
for b in "${WANT[@]}"; do
  if [[ " ${AT_BASE[*]} " == *" $b "* && -f $TMP/base/benches/$b.rs ]]; then RUN+=("$b")
  else echo "bench-compare: skipping '$b': it does not exist at $BASE_REV"; fi
done
((${#RUN[@]})) || { echo "bench-compare: nothing to compare"; exit 1; }

echo "== base: $BASE_REV ($(git rev-parse --short "$BASE_SHA")), benches: ${RUN[*]}"
for b in "${RUN[@]}"; do
  (cd "$TMP/base" && cargo bench --quiet --bench "$b" -- --save-baseline base "${CRIT_ARGS[@]}") \
    >"$OUT/base-$b.log" 2>&1 || { tail -n 30 "$OUT/base-$b.log"; echo "bench-compare: base bench $b failed"; exit 1; }
done
echo "== head: $HEAD_DESC"
for b in "${RUN[@]}"; do
  (cd "$HEAD_DIR" && cargo bench --quiet --bench "$b" -- --baseline-lenient base "${CRIT_ARGS[@]}") \
    2>&1 | tee "$OUT/head-$b.log" | grep -E '^[^ ].*time:|change:|Performance has|No change|Change within' || true
  [[ ${PIPESTATUS[0]} == 0 ]] || { tail -n 30 "$OUT/head-$b.log"; echo "bench-compare: head bench $b failed"; exit 1; }
done

echo
echo "== summary: $BASE_REV -> $HEAD_DESC (mean time per iteration; change = Criterion's estimate of the mean, 95% CI)"
/usr/bin/python3 - "$CRITERION_HOME" <<'EOF'
import json, os, sys

def fmt(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= div:
            return f"{ns / div:.3f} {unit}"
    return f"{ns:.2f} ns"

rows = []
for d, subdirs, files in os.walk(sys.argv[1]):
    if os.path.basename(d) != "new" or "estimates.json" not in files:
        continue
    bench_dir = os.path.dirname(d)
    try:
        full_id = json.load(open(os.path.join(d, "benchmark.json")))["full_id"]
    except (OSError, KeyError, ValueError):
        full_id = os.path.relpath(bench_dir, sys.argv[1])
    head = json.load(open(os.path.join(d, "estimates.json")))["mean"]["point_estimate"]
    base_f = os.path.join(bench_dir, "base", "estimates.json")
    change_f = os.path.join(bench_dir, "change", "estimates.json")
    base = json.load(open(base_f))["mean"]["point_estimate"] if os.path.exists(base_f) else None
    if os.path.exists(change_f) and base is not None:
        m = json.load(open(change_f))["mean"]
        lo, hi = m["confidence_interval"]["lower_bound"], m["confidence_interval"]["upper_bound"]
        pct = f"{m['point_estimate'] * 100:+.2f}% [{lo * 100:+.2f}%, {hi * 100:+.2f}%]"
        # Criterion's noise threshold is 1%: a change counts only when the whole CI is beyond it.
        verdict = "faster" if hi < -0.01 else "slower" if lo > 0.01 else "no change"
    else:
        pct, verdict = "new", "-"
    rows.append((full_id, fmt(base) if base is not None else "-", fmt(head), pct, verdict))
rows.sort()
w = max([len(r[0]) for r in rows] + [5])
print(f"{'bench':<{w}}  {'base':>12}  {'head':>12}  {'change':<32}  verdict")
for r in rows:
    print(f"{r[0]:<{w}}  {r[1]:>12}  {r[2]:>12}  {r[3]:<32}  {r[4]}")
if not rows:
    print("(no Criterion estimates found)")
EOF
