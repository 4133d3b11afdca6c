#!/usr/bin/env bash
# Training throughput: lathe-train vs a PyTorch eager reference (Debian's
# python3-torch 1.13.1, the same LibTorch kernels), side by side in one run,
# plus the machine's F32 GEMM rate. See bench/train/bench.py.
#
#   bench/train/run.sh [--quick | --smoke] [--device cuda:N] [--bf16]
#                      [--memory-only | --sharding-only | --images-only]
#
# --smoke (CI, through ctest): the correctness checks and a few steps of
# each part; nothing is timed against a target.
# --device runs both trainers on a GPU: lathe-train must then be built
# against a CUDA LibTorch (Torch_DIR) and /usr/bin/python3 must import a
# CUDA torch of the same version; times come from CUDA events.
#
# Needs build/bin/lathe-train and build/assets (./run setup && ./run build).
# Writes the Markdown table to $OUT_DIR/train.md when OUT_DIR is set, else to
# build/bench/train.md. Exit 1 only when the correctness check fails.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BUILD="${LATHE_BUILD_DIR:-$ROOT/build}"
QUICK=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK+=(--quick) ;;
    --smoke) QUICK+=(--smoke) ;;
    --bf16) QUICK+=(--bf16) ;;
    --memory-only) QUICK+=(--memory-only) ;;
    --sharding-only) QUICK+=(--sharding-only) ;;
    --images-only) QUICK+=(--images-only) ;;
    --device) [ $# -ge 2 ] || { echo "run.sh: --device needs a value" >&2; exit 2; }
              QUICK+=(--device "$2"); shift ;;
    *) echo "usage: bench/train/run.sh [--quick | --smoke] [--device cuda:N] [--bf16] [--memory-only | --sharding-only | --images-only]" >&2; exit 2 ;;
  esac
  shift
done

[ -x "$BUILD/bin/lathe-train" ] || { echo "run.sh: $BUILD/bin/lathe-train missing (./run build)" >&2; exit 2; }
[ -f "$BUILD/assets/spam/train.jsonl" ] || { echo "run.sh: $BUILD/assets missing (./run setup)" >&2; exit 2; }
if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "==> installing python3-torch (the reference)" >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch >&2
fi

OUT="${OUT_DIR:+$OUT_DIR/train.md}"
OUT="${OUT:-$BUILD/bench/train.md}"
# Debian's python3 (not one earlier on PATH): that is where python3-torch is.
exec /usr/bin/python3 "$HERE/bench.py" "${QUICK[@]}" --root "$ROOT" --build "$BUILD" --out "$OUT"
