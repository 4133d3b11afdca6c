#!/usr/bin/env bash
# The paper's thesis as a learning curve, run through the service itself: a
# lathe-server with one local worker, jobs submitted with the lathe CLI.
#
#  1. masked-lm pre-training of preset:bert-mini on the SpamAssassin
#     training e-mails' bodies, labels dropped (its masked-token accuracy
#     on the validation e-mails after every epoch is the pre-training
#     curve);
#  2. for each label count and seed: text-classification on that many
#     labelled training e-mails (a seeded sample), once from the
#     pre-trained checkpoint (job:ID, chained) and once from preset:bert-mini's
#     random initialisation, with the same data, seed and parameters;
#  3. accuracy and macro F1 on the 1,183 validation e-mails, as a table
#     (mean and standard deviation over seeds) and, with gnuplot, a PNG.
#
#   bench/paper/learning_curve.sh [--out DIR] [--pretrain-epochs N]
#       [--labels "50 100 200 500 1000 all"] [--seeds "1 2 3"]
#       [--steps N] [--max-steps N]
#
# Every fine-tune runs for about --steps optimizer steps of 32 rows (150 by
# default; at least one epoch and at most 50), from either start alike.
# --max-steps caps every job (a check of the plumbing in minutes, not a
# measurement).
#
# Needs ./run setup (the e-mails) and ./run build. gnuplot-nox draws the
# plot when it is installed (apt-get install gnuplot-nox); the table is
# written either way.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${LATHE_BIN:-$ROOT/build/bin}"
ASSETS="${LATHE_ASSETS_DIR:-$ROOT/build/assets}"
PY=/usr/bin/python3
OUT="$ROOT/build/paper/learning_curve"
PRETRAIN_EPOCHS=30
LABELS="50 100 200 500 1000 all"
SEEDS="1 2 3"
STEPS=150
MAX_STEPS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT="$2"; shift ;;
    --pretrain-epochs) PRETRAIN_EPOCHS="$2"; shift ;;
    --labels) LABELS="$2"; shift ;;
    --seeds) SEEDS="$2"; shift ;;
    --steps) STEPS="$2"; shift ;;
    --max-steps) MAX_STEPS=(--param max_steps="$2"); shift ;;
    *) echo "usage: $0 [--out DIR] [--pretrain-epochs N] [--labels \"50 ... all\"] [--seeds \"1 2 3\"] [--steps N] [--max-steps N]" >&2; exit 2 ;;
  esac
  shift
done
TRAIN="$ASSETS/spam/train.jsonl"
VAL="$ASSETS/spam/validation.jsonl"
[ -f "$TRAIN" ] || { echo "missing $TRAIN (./run setup)" >&2; exit 2; }
[ -x "$BIN/lathe-server" ] || { echo "missing $BIN/lathe-server (./run build)" >&2; exit 2; }
rm -rf "$OUT" && mkdir -p "$OUT/data" "$OUT/server"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
# json_field '["key"]...' < JSON: that value (objects and lists as JSON).
json_field() {
  "$PY" -c 'import json,sys; v=json.load(sys.stdin)'"$1"'
print(json.dumps(v) if isinstance(v, (dict, list)) else v)'
}

SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill -TERM "$SERVER_PID" 2>/dev/null || true
  [ -n "$SERVER_PID" ] && wait "$SERVER_PID" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
"$BIN/lathe-server" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --data-dir "$OUT/server" --local-workers 1 >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 300); do [ -f "$OUT/server/server.json" ] && break; sleep 0.1; done
[ -f "$OUT/server/server.json" ] || { echo "lathe-server did not start; see $OUT/server.log" >&2; exit 1; }
export LATHE_SERVER="$(json_field '["grpc"]' < "$OUT/server/server.json")"
export LATHE_TOKEN="$(cat "$OUT/server/admin.token")"
lathe() { "$BIN/lathe" "$@"; }

# submit ARGS...: the new job's id.
submit() { lathe submit "$@" --output json | json_field '["id"]'; }
# finish ID: waits; the job's final eval metrics as JSON.
finish() {
  lathe wait "$1" --timeout 86400 >/dev/null || {
    echo "job $1 did not succeed:" >&2; lathe get "$1" >&2; exit 1; }
  lathe get "$1" --output json | json_field '["eval_metrics"]'
}

# The e-mails without their labels, and seeded samples of the labelled ones.
"$PY" - "$TRAIN" "$VAL" "$OUT/data" "$LABELS" "$SEEDS" <<'PY'
import json, random, sys
train, val, out, labels, seeds = sys.argv[1:]
rows = [json.loads(l) for l in open(train)]
for name, path in (("unlabelled_train", train), ("unlabelled_validation", val)):
    with open(f"{out}/{name}.jsonl", "w") as f:
        for l in open(path):
            f.write(json.dumps({"text": json.loads(l)["text"]}) + "\n")
for seed in seeds.split():
    order = list(range(len(rows)))
    random.Random(int(seed)).shuffle(order)
    for n in labels.split():
        k = len(rows) if n == "all" else int(n)
        with open(f"{out}/labels-{n}-seed-{seed}.jsonl", "w") as f:
            for i in order[:k]:
                f.write(json.dumps(rows[i]) + "\n")
PY

say "pre-training preset:bert-mini with masked-lm for $PRETRAIN_EPOCHS epochs on $(wc -l < "$TRAIN") e-mail bodies"
STEPS_PER_EPOCH=$(( ($(wc -l < "$TRAIN") + 31) / 32 ))
PRE=$(submit --task masked-lm --model preset:bert-mini \
  --train-data "$OUT/data/unlabelled_train.jsonl" \
  --validation-data "$OUT/data/unlabelled_validation.jsonl" \
  --param epochs="$PRETRAIN_EPOCHS" --param batch_size=32 \
  --param max_seq_length=128 --param learning_rate=5e-4 \
  --param warmup_ratio=0.05 --param eval_steps="$STEPS_PER_EPOCH" \
  --param save_steps="$STEPS_PER_EPOCH" --param seed=1 "${MAX_STEPS[@]}")
finish "$PRE" > "$OUT/pretrain_final.json"
# The curve is the job's evaluation events (the server keeps only the
# latest checkpoints, so their metrics would miss the early epochs).
lathe watch "$PRE" --output json > "$OUT/pretrain_events.jsonl"
"$PY" - "$OUT/pretrain_events.jsonl" "$STEPS_PER_EPOCH" > "$OUT/pretrain_curve.tsv" <<'PY'
import json, sys
print("epoch\tstep\tmasked_token_accuracy\tperplexity")
for line in open(sys.argv[1]):
    e = json.loads(line).get("event", {})
    if e.get("type") == "EVENT_TYPE_EVAL_METRICS" and "accuracy" in e.get("eval", {}):
        m, step = e["eval"], int(e["step"])
        print(f"{step / int(sys.argv[2]):.0f}\t{step}\t{m['accuracy']:.4f}\t{m.get('perplexity', float('nan')):.1f}")
PY
say "pre-training curve:"; cat "$OUT/pretrain_curve.tsv" >&2

echo -e "labels\tseed\tstart\taccuracy\tf1" > "$OUT/runs.tsv"
for n in $LABELS; do
  for seed in $SEEDS; do
    data="$OUT/data/labels-$n-seed-$seed.jsonl"
    rows=$(wc -l < "$data")
    # About $STEPS steps of 32 rows: at least one epoch, at most 50.
    epochs=$(( (STEPS * 32 + rows - 1) / rows )); [ "$epochs" -gt 50 ] && epochs=50
    [ "$epochs" -lt 1 ] && epochs=1
    for start in pretrained scratch; do
      model="job:$PRE"; [ "$start" = scratch ] && model=preset:bert-mini
      say "$rows labels, seed $seed, from $start ($epochs epochs)"
      id=$(submit --task text-classification --model "$model" \
        --train-data "$data" --validation-data "$VAL" \
        --param epochs="$epochs" --param batch_size=32 --param max_seq_length=128 \
        --param learning_rate=5e-4 --param warmup_ratio=0.1 --param seed="$seed" \
        --param eval_steps=0 --param save_steps=0 "${MAX_STEPS[@]}")
      m=$(finish "$id")
      echo -e "$rows\t$seed\t$start\t$(echo "$m" | json_field '["accuracy"]')\t$(echo "$m" | json_field '["f1"]')" >> "$OUT/runs.tsv"
    done
  done
done

"$PY" - "$OUT/runs.tsv" "$OUT/learning_curve.tsv" <<'PY'
import csv, statistics, sys
runs = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
out = open(sys.argv[2], "w")
out.write("labels\tpretrained_accuracy\tpretrained_accuracy_sd\tscratch_accuracy\tscratch_accuracy_sd\tpretrained_f1\tpretrained_f1_sd\tscratch_f1\tscratch_f1_sd\n")
print("| labels | pre-trained accuracy | scratch accuracy | pre-trained macro F1 | scratch macro F1 |")
print("| --- | --- | --- | --- | --- |")
for n in sorted({int(r["labels"]) for r in runs}):
    cols, cells = [], []
    for metric in ("accuracy", "f1"):
        for start in ("pretrained", "scratch"):
            v = [float(r[metric]) for r in runs if int(r["labels"]) == n and r["start"] == start]
            mean, sd = statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)
            cols += [f"{mean:.4f}", f"{sd:.4f}"]
            cells.append(f"{mean:.3f} ± {sd:.3f}")
    out.write(f"{n}\t" + "\t".join(cols[:2] + cols[2:4] + cols[4:6] + cols[6:8]) + "\n")
    print(f"| {n} | {cells[0]} | {cells[1]} | {cells[2]} | {cells[3]} |")
PY

if command -v gnuplot >/dev/null; then
  gnuplot <<GP
set terminal png size 900,420 noenhanced
set output "$OUT/learning_curve.png"
set datafile separator "\t"
set key autotitle columnhead bottom right
set logscale x
set xlabel "labelled e-mails"
set multiplot layout 1,2
set ylabel "validation accuracy"
plot "$OUT/learning_curve.tsv" using 1:2:3 with yerrorlines title "pre-trained (masked-lm)", \
     "" using 1:4:5 with yerrorlines title "random initialisation"
set ylabel "validation macro F1"
plot "$OUT/learning_curve.tsv" using 1:6:7 with yerrorlines title "pre-trained (masked-lm)", \
     "" using 1:8:9 with yerrorlines title "random initialisation"
unset multiplot
GP
  say "plot: $OUT/learning_curve.png"
else
  say "gnuplot is not installed: no plot (apt-get install gnuplot-nox); the table is $OUT/learning_curve.tsv"
fi
