#!/usr/bin/env bash
# The paper's point with Lathe itself: pre-training on unlabelled text, then
# fine-tuning on few labels, beats the same classifier trained from random
# initialisation on the same labels. Runs the training child directly
# (lathe-train, the process a worker runs) on the SpamAssassin e-mails that
# ./run setup prepares.
#
#   bench/paper/pretrain_then_finetune.sh [LABELLED_ROWS] [OUT_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BIN="${LATHE_BIN:-$ROOT/build/bin}"
ASSETS="${LATHE_ASSETS_DIR:-$ROOT/build/assets}"
N="${1:-200}"
OUT="${2:-$ROOT/build/paper}"
rm -rf "$OUT" && mkdir -p "$OUT"

# N labelled e-mails (the first N of the training split, which is shuffled).
head -n "$N" "$ASSETS/spam/train.jsonl" > "$OUT/few.jsonl"

spec() {  # name model task data epochs lr
  cat > "$OUT/$1.json" <<JSON
{"job_id": "$1", "task": "$3", "model": "$2",
 "train_data": "$4", "validation_data": "$ASSETS/spam/validation.jsonl",
 "params": {"epochs": "$5", "learning_rate": "$6", "batch_size": "32",
            "max_seq_length": "64", "eval_steps": "0", "save_steps": "0",
            "warmup_ratio": "0.1", "seed": "7", "logging_steps": "50"}}
JSON
}
run() {  # name
  "$BIN/lathe-train" --spec "$OUT/$1.json" --out "$OUT/$1" > "$OUT/$1.log"
  grep '"type":"eval"' "$OUT/$1.log" | tail -1
}

echo "1. masked-lm pre-training of preset:bert-tiny on the e-mail texts (labels unused)"
spec pretrain preset:bert-tiny masked-lm "$ASSETS/spam/train.jsonl" 2 1e-3
run pretrain
PRE="$(ls -d "$OUT"/pretrain/checkpoint-* | sort -t- -k2 -n | tail -1)"

echo "2. text-classification on $N labelled e-mails from the pre-trained model"
spec finetune "$PRE" text-classification "$OUT/few.jsonl" 10 5e-4
run finetune

echo "3. the same classifier from random initialisation"
spec scratch preset:bert-tiny text-classification "$OUT/few.jsonl" 10 5e-4
run scratch
