#!/usr/bin/env bash
# The conv-tricks article's "somewhat faster" timed (issue #32): convnet_cifar's forward pass and
# train step at batch 128 on 24x24 inputs, full (--factorize=none), factorised (--factorize=2) and
# multi-branch (--multi_branch=2), each variant in its own process, alternated round by round so
# that all three see the same machine load. One JSON line per process into $OUT, then a markdown
# table of the median over rounds (BENCHMARKS.md "The conv tricks' cost"):
#   OUT=runs/bench/conv_tricks.jsonl ROUNDS=4 bash scripts/conv_tricks_speed.sh
# ROUNDS=0 only prints the table of an existing $OUT. Extra arguments go to every benchmark.
set -euo pipefail
OUT=${OUT:?set OUT to a .jsonl file}
ROUNDS=${ROUNDS:-4}
PYTHON=${PYTHON:-python}
mkdir -p "$(dirname "$OUT")"
for round in $(seq 1 "$ROUNDS"); do
  for variant in --factorize=none --factorize=2 --multi_branch=2; do
    echo "round $round: $variant" >&2
    "$PYTHON" -m experiments.benchmark --model=convnet_cifar --num_classes=10 --batch_size=128 \
      --image_size=24 --modes=forward,train_step --num_batches="${NUM_BATCHES:-40}" \
      --burn_in=5 --notorch --json "$variant" "$@" >> "$OUT"
  done
done
"$PYTHON" - "$OUT" <<'PY'
import collections, json, statistics, sys

rows = [json.loads(line) for line in open(sys.argv[1])]
by_variant = collections.defaultdict(list)
for row in rows:
    opts = row["config"]["options"]
    name = ("multi_branch=" + opts["multi_branch"]) if opts.get("multi_branch", "none") != "none" \
        else "factorize=" + opts.get("factorize", "none")
    by_variant[name].append(row)
base = None
print(f"{len(rows) // max(1, len(by_variant))} alternated rounds; {rows[0]['config']['machine']['cpu']}, "
      f"{rows[0]['config']['machine']['xla_threads']} XLA threads, device {rows[0]['config']['device']}; "
      f"1-min load before each mode {min(r['load_before'][0] for x in rows for r in x['results'])}"
      f" to {max(r['load_before'][0] for x in rows for r in x['results'])}")
print("| variant | params | MFLOPs / image (forward) | forward ms / batch | train step ms / batch "
      "| train images/s | train step vs full |")
print("|---|--:|--:|--:|--:|--:|--:|")
for name, runs in by_variant.items():
    ms = {mode: statistics.median(1e3 * r["mean_s"] for x in runs for r in x["results"]
                                  if r["mode"] == mode) for mode in ("forward", "train_step")}
    base = base or ms["train_step"]
    cfg = runs[0]["config"]
    print(f"| {name} | {cfg['params']:,} | {cfg['forward_flops_per_image'] / 1e6:.1f} | "
          f"{ms['forward']:.1f} | {ms['train_step']:.1f} | "
          f"{cfg['batch_size'] / ms['train_step'] * 1e3:,.0f} | {ms['train_step'] / base:.2f} |")
PY
