#!/usr/bin/env bash
# Speed of two revisions side by side (issue 16: "within 5 %"): bench/ablation_sweep.py and bench/circuit.py, each
# revision's own copy, run interleaved A B A B … on this machine, then the ratio B/A of every timed line (medians).
#
#   bash bench/engine_regression.sh                       # dc2ecbc (before issue 16's engine work) against HEAD
#   BASE=dc2ecbc NEW=engine ROUNDS=3 bash bench/engine_regression.sh
#   PROMPTS=8 CIRCUIT_PROMPTS=4 bash bench/engine_regression.sh     # shorter runs
#   MODE=cpu ROUNDS=3 PROMPTS=8 CIRCUIT_PROMPTS=4 bash bench/engine_regression.sh
#       # on a loaded machine: this checkout's bench/engine_cpu_ab.py in both trees, one torch thread, the median
#       # thread CPU seconds per job (what other processes' load barely moves) and B / A
#
# The revisions are exported with `git archive` into /tmp (no worktree is registered), with this checkout's .venv and
# cache/models linked in; results go to a private folder. Run it on a quiet machine (`uptime` load well under the
# core count): the timings of a loaded machine vary by more than the 5 % asked for. Logs stay in $WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BASE=${BASE:-dc2ecbc}
NEW=${NEW:-HEAD}
ROUNDS=${ROUNDS:-2}
PROMPTS=${PROMPTS:-16}
CIRCUIT_PROMPTS=${CIRCUIT_PROMPTS:-8}
METHOD=${METHOD:-mean}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
WORK=${WORK:-$(mktemp -d /tmp/engine-regression.XXXXXX)}
export HEADSCOPE_RESULTS_DIR="$WORK/results" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

export_tree() {  # export_tree REV DIR: the revision's files, with the shared venv and converted models linked in
  local rev=$1 dir=$2
  mkdir -p "$dir/cache"
  git -C "$ROOT" archive "$rev" | tar -x -C "$dir"
  ln -sfn "$(readlink -f "$ROOT/.venv")" "$dir/.venv"
  ln -sfn "$(readlink -f "$ROOT/cache/models")" "$dir/cache/models"
}

echo "A = $BASE ($(git rev-parse --short "$BASE")), B = $NEW ($(git rev-parse --short "$NEW")); $ROUNDS rounds;" \
     "ablation $PROMPTS prompts, circuit $CIRCUIT_PROMPTS prompts, $METHOD; logs in $WORK"
uptime
export_tree "$BASE" "$WORK/A"
export_tree "$NEW" "$WORK/B"

if [ "${MODE:-wall}" = cpu ]; then
  for round in $(seq 1 "$ROUNDS"); do
    for side in A B; do
      echo "== round $round, $side (thread CPU seconds)"
      (cd "$WORK/$side" && PYTHONPATH="$WORK/$side" "$PYTHON" "$ROOT/bench/engine_cpu_ab.py" --repeats 2 \
        --prompts "$PROMPTS" --circuit-prompts "$CIRCUIT_PROMPTS" --method "$METHOD" 2>"$WORK/cpu.$side.$round.err") \
        | tail -1 > "$WORK/cpu.$side.$round.json"
    done
  done
  "$PYTHON" - "$WORK" "$ROUNDS" <<'EOF'
import json
import statistics
import sys
from pathlib import Path

work, rounds = Path(sys.argv[1]), int(sys.argv[2])
runs = {side: [json.loads((work / f"cpu.{side}.{r}.json").read_text()) for r in range(1, rounds + 1)] for side in "AB"}
print(f"\n{'job':<28} {'A cpu s':>8} {'B cpu s':>8} {'B / A':>6}   loads {[round(run['load'], 1) for run in runs['A']]}")
for job in runs["A"][0]["jobs"]:
    a = statistics.median(run["jobs"][job]["cpu"] for run in runs["A"])
    b = statistics.median(run["jobs"][job]["cpu"] for run in runs["B"])
    print(f"{job:<28} {a:8.2f} {b:8.2f} {b / a:6.3f}")
EOF
  exit 0
fi

for round in $(seq 1 "$ROUNDS"); do
  for side in A B; do
    echo "== round $round, $side"
    (cd "$WORK/$side" && PYTHONPATH="$WORK/$side" "$PYTHON" bench/ablation_sweep.py --prompts "$PROMPTS" --method "$METHOD") \
      > "$WORK/ablation.$side.$round.log" 2>&1 || echo "   ablation failed: see $WORK/ablation.$side.$round.log"
    (cd "$WORK/$side" && PYTHONPATH="$WORK/$side" "$PYTHON" bench/circuit.py --prompts "$CIRCUIT_PROMPTS" --method "$METHOD" \
      --speculations adaptive) > "$WORK/circuit.$side.$round.log" 2>&1 \
      || echo "   circuit failed: see $WORK/circuit.$side.$round.log"
    grep -E "^  .* [0-9.]+ s" "$WORK/ablation.$side.$round.log" "$WORK/circuit.$side.$round.log" \
      | sed "s|$WORK/||" || true
  done
done
uptime

# Every timed line ("  label   12.34 s ..."): the median over rounds per side, and B / A
"$PYTHON" - "$WORK" "$ROUNDS" <<'EOF'
import re
import statistics
import sys
from pathlib import Path

work, rounds = Path(sys.argv[1]), int(sys.argv[2])
line = re.compile(r"^  (\S.*?)\s+([0-9.]+) s(\s|$)")
times: dict[tuple[str, str], dict[str, list[float]]] = {}
for bench in ("ablation", "circuit"):
    for side in "AB":
        for round_ in range(1, rounds + 1):
            log = work / f"{bench}.{side}.{round_}.log"
            if not log.is_file():
                continue
            for text in log.read_text().splitlines():
                match = line.match(text)
                if match:
                    times.setdefault((bench, match[1]), {}).setdefault(side, []).append(float(match[2]))
print(f"\n{'bench':<9} {'timed line':<52} {'A median':>9} {'B median':>9} {'B / A':>7}")
for (bench, label), sides in times.items():
    if "A" in sides and "B" in sides:
        a, b = statistics.median(sides["A"]), statistics.median(sides["B"])
        print(f"{bench:<9} {label[:52]:<52} {a:9.2f} {b:9.2f} {b / a:7.3f}   A {sides['A']} B {sides['B']}")
EOF
