#!/usr/bin/env bash
# Builds the training child and its tests against another LibTorch (such as
# the official CUDA build), runs the worker tests, and trains a few steps of
# a tiny job on DEVICE. Everything else in Lathe is independent of LibTorch.
#
# usage: tools/check_torch_build.sh TORCH_CMAKE_PREFIX DEVICE [EXTRA_PREFIX]
#   TORCH_CMAKE_PREFIX  folder holding Torch/TorchConfig.cmake
#   DEVICE              cpu or cuda:N
#   EXTRA_PREFIX        optional root with Abseil, utf8proc and OpenSSL when
#                       the machine lacks their -dev packages (usr/ inside)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
TORCH_PREFIX="$1"
DEVICE="$2"
EXTRA="${3:-}"
WORK="${OUT:-/tmp}/torch-check"
mkdir -p "$WORK"
prefix="$TORCH_PREFIX"
if [ -n "$EXTRA" ]; then
  prefix="$prefix;$EXTRA/usr;$EXTRA/usr/lib/x86_64-linux-gnu/cmake"
  export LD_LIBRARY_PATH="$EXTRA/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
  export CPATH="$EXTRA/usr/include:${CPATH:-}"
fi
cmake -S "$ROOT" -B "$WORK/build" -DLATHE_TRAIN_ONLY=ON -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" >"$WORK/configure.log" 2>&1 || { tail -40 "$WORK/configure.log"; exit 1; }
cmake --build "$WORK/build" -j "$(nproc)" >"$WORK/build.log" 2>&1 || { grep -E "error" -A3 "$WORK/build.log" | head -60; exit 1; }
echo "== build ok"
# Tests that train presets (in separate lathe-train processes) read the
# tokenizers of the main build's assets.
LATHE_ASSETS_DIR="$ROOT/build/assets" "$WORK/build/bin/worker_test" --gtest_brief=1 2>&1 | tail -15
"$WORK/build/bin/common_test" --gtest_brief=1 2>&1 | tail -5

# A tiny, separable job on DEVICE.
data="$WORK/data.jsonl"
: >"$data"
for i in $(seq 1 64); do
  if [ $((i % 2)) -eq 0 ]; then echo '{"text":"a wonderful great movie","label":"pos"}' >>"$data"
  else echo '{"text":"an awful terrible movie","label":"neg"}' >>"$data"; fi
done
cat >"$WORK/spec.json" <<JSON
{"job_id":"torch-check","task":"text-classification","model":"preset:bert-tiny",
 "train_data":"$data","train_name":"data.jsonl","validation_data":"","validation_name":"",
 "params":{"max_steps":"40","batch_size":"16","learning_rate":"1e-3","eval_steps":"20","save_steps":"0","logging_steps":"10"},
 "device":"$DEVICE","assets_dir":"$ROOT/build/assets"}
JSON
set +e
"$WORK/build/bin/lathe-train" --spec "$WORK/spec.json" --out "$WORK/out" >"$WORK/train.jsonl" 2>"$WORK/train.err"
rc=$?
set -e
grep -E '"type":"(train|eval|checkpoint|error)"' "$WORK/train.jsonl" | tail -8
tail -5 "$WORK/train.err"
echo "== lathe-train on $DEVICE exited $rc"
exit $rc
