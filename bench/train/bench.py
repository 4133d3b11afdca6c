#!/usr/bin/env python3
"""Training-throughput benchmark: lathe-train vs a PyTorch eager reference.

Driven by bench/train/run.sh. Each trainer runs in its own process; this
one only orchestrates (it loads torch once, to read weights for the
correctness check, and sits idle while the timed runs go).

Exit status: 1 when the correctness check fails, 0 otherwise (speed targets
are reported, never enforced).
"""
import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # No __pycache__ in the source tree.

PY = "/usr/bin/python3"  # Debian's python3 with python3-torch
REF = os.path.join(HERE, "reference.py")

# bert-mini (worker/models/bert_config.cc preset).
LAYERS, HIDDEN, INTER, SEQ, BATCH, LABELS = 4, 256, 1024, 128, 32, 2
LR, WARMUP, WD, CLIP, SEED = 1e-4, 0.1, 0.01, 1.0, 42
CHECK_LR, CHECK_STEPS = 1e-3, 4


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw)


def lathe_events(binary, spec, out_dir):
    os.makedirs(os.path.dirname(spec["__path"]), exist_ok=True)
    with open(spec["__path"], "w") as f:
        json.dump({k: v for k, v in spec.items() if k != "__path"}, f)
    shutil.rmtree(out_dir, ignore_errors=True)
    p = subprocess.run([binary, "--spec", spec["__path"], "--out", out_dir],
                       text=True, capture_output=True)
    events = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    if p.returncode != 0:
        raise SystemExit(f"lathe-train failed ({p.returncode}): {p.stderr[-2000:]}")
    return events


def lathe_spec(path, model, data, assets, steps, threads, lr, warmup, logging):
    params = {"max_steps": steps, "batch_size": BATCH, "max_seq_length": SEQ,
              "seed": SEED, "num_threads": threads, "save_steps": 0,
              "eval_steps": 0, "validation_split": 0, "logging_steps": logging,
              "learning_rate": lr, "warmup_ratio": warmup, "weight_decay": WD,
              "max_grad_norm": CLIP}
    return {"__path": path, "task": "text-classification", "model": model,
            "train_data": data, "device": "cpu", "assets_dir": assets,
            "params": {k: str(v) for k, v in params.items()}}


def reference(args):
    p = subprocess.run([PY, REF] + [str(a) for a in args], text=True,
                       capture_output=True)
    if p.returncode != 0:
        raise SystemExit(f"reference.py {args[0]} failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def flops_per_sample():
    """Training FLOPs per sample (forward + backward = 3 x forward).

    6 x (encoder matmul weights) x tokens + 6 x (pooler + classifier weights)
    per sample + attention 12 x layers x hidden x seq^2 (QK^T and PV, 2 x 2 x
    seq^2 x hidden forward per layer, x3). Embeddings, LayerNorm, softmax,
    GELU and the optimizer are not counted.
    """
    enc = LAYERS * (4 * HIDDEN * HIDDEN + 2 * HIDDEN * INTER)
    head = HIDDEN * HIDDEN + HIDDEN * LABELS
    return 6 * enc * SEQ + 6 * head + 12 * LAYERS * HIDDEN * SEQ * SEQ, enc


def spread(xs):
    return statistics.median(xs), min(xs), max(xs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--root", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--out", required=True, help="Markdown result file")
    a = ap.parse_args()
    steps, reps = (8, 2) if a.quick else (30, 3)
    threads = os.cpu_count()
    binary = os.path.join(a.build, "bin", "lathe-train")
    data = os.path.join(a.build, "assets", "spam", "train.jsonl")
    assets = os.path.join(a.build, "assets")
    work = os.path.join(a.build, "bench", "train-work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    commands = []

    def log(msg):
        print(f"[bench/train] {msg}", file=sys.stderr, flush=True)

    # 1. Initial weights: a 1-step run whose only step has learning rate 0
    #    (warmup starts at 0), so checkpoint-1 holds the seed's initial weights.
    log("initial weights (lathe-train, 1 step at lr 0)")
    spec = lathe_spec(f"{work}/init.json", "preset:bert-mini", data, assets, 1,
                      threads, LR, WARMUP, 1)
    ev = lathe_events(binary, spec, f"{work}/init")
    ckpt = [e for e in ev if e["type"] == "checkpoint"][-1]["dir"]
    init_dir = f"{work}/init-model"          # as trained: dropout 0.1
    check_dir = f"{work}/init-model-nodrop"  # dropout 0 for the exact check
    for d, dropout in ((init_dir, None), (check_dir, 0.0)):
        os.makedirs(d)
        for f in ("model.safetensors", "vocab.txt"):
            shutil.copy(os.path.join(ckpt, f), d)
        with open(os.path.join(ckpt, "config.json")) as f:
            cfg = json.load(f)
        if dropout is not None:
            cfg["hidden_dropout_prob"] = cfg["attention_probs_dropout_prob"] = dropout
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)

    # 2. Correctness: same weights, dropout 0, lr 1e-3 without warmup, both
    #    trainers CHECK_STEPS steps: per-step losses, final weights, and the
    #    set of embedding rows Lathe updated vs the ids the reference fed.
    log(f"correctness check ({CHECK_STEPS} steps, dropout 0, both trainers)")
    spec = lathe_spec(f"{work}/check.json", check_dir, data, assets,
                      CHECK_STEPS, threads, CHECK_LR, 0.0, 1)
    ev = lathe_events(binary, spec, f"{work}/check")
    lathe_losses = [e["loss"] for e in ev if e["type"] == "train"]
    lathe_final = [e for e in ev if e["type"] == "checkpoint"][-1]["dir"]
    ref_final = f"{work}/reference-final.safetensors"
    ref_check_args = ["train", "--model", check_dir, "--data", data,
                      "--steps", CHECK_STEPS, "--lr", CHECK_LR,
                      "--warmup-ratio", 0, "--weight-decay", WD,
                      "--max-grad-norm", CLIP, "--seed", SEED,
                      "--threads", threads, "--dropout", 0,
                      "--save-final", ref_final, "--report-ids"]
    rc = reference(ref_check_args)
    import reference as refmod  # the reader only; torch loads lazily here
    lw = refmod.read_safetensors(os.path.join(lathe_final, "model.safetensors"))
    rw = refmod.read_safetensors(ref_final)
    w0 = refmod.read_safetensors(os.path.join(check_dir, "model.safetensors"))
    max_w_diff = max((lw[k] - rw[k]).abs().max().item() for k in lw)
    max_update = max((lw[k] - w0[k]).abs().max().item() for k in lw)
    emb = "bert.embeddings.word_embeddings.weight"
    touched = ((lw[emb] - w0[emb]).abs().max(dim=1).values > 1e-5)
    lathe_rows = set(touched.nonzero().flatten().tolist())
    ref_ids = set(rc["token_ids"]) - {0}  # [PAD]'s row gets no gradient
    loss_diffs = [abs(x - y) for x, y in zip(lathe_losses, rc["losses"])]
    checks = {
        "step-1 loss |diff| <= 1e-4": loss_diffs[0] <= 1e-4,
        f"all {CHECK_STEPS} losses |diff| <= 1e-4": len(loss_diffs) == CHECK_STEPS and max(loss_diffs) <= 1e-4,
        "final weights max |diff| <= 1e-4 (updates are ~1e-3)": max_w_diff <= 1e-4,
        "embedding rows Lathe updated == token ids the reference fed": lathe_rows == ref_ids,
    }
    ok = all(checks.values())
    log(f"correctness: {'PASS' if ok else 'FAIL'} {checks}")
    commands.append(f"{binary} --spec {work}/check.json --out {work}/check")
    commands.append(" ".join([PY, REF] + [str(x) for x in ref_check_args]))

    # 3. Machine limit, then the timed runs, interleaved Lathe / reference.
    gemm = {"gflops": []}
    lathe_sps, ref_sps, lathe_loss, ref_loss = [], [], [], []
    ref_time_args = ["train", "--model", init_dir, "--data", data, "--steps",
                     steps, "--lr", LR, "--warmup-ratio", WARMUP,
                     "--weight-decay", WD, "--max-grad-norm", CLIP,
                     "--seed", SEED, "--threads", threads]
    spec = lathe_spec(f"{work}/time.json", "preset:bert-mini", data, assets,
                      steps, threads, LR, WARMUP, steps)
    for r in range(reps):
        log(f"GEMM {r + 1}/{reps}")  # Interleaved too: the machine is shared.
        g = reference(["gemm", "--n", 2048, "--reps", 5, "--threads", threads])
        gemm.update({k: v for k, v in g.items() if k != "gflops"})
        gemm["gflops"] += g["gflops"]
        log(f"  {g['median_gflops']:.1f} GFLOP/s")
        log(f"timed run {r + 1}/{reps}: lathe-train, {steps} steps")
        ev = lathe_events(binary, spec, f"{work}/time")
        last = [e for e in ev if e["type"] == "train"][-1]
        lathe_sps.append(last["samples_per_second"])
        lathe_loss.append(last["loss"])  # mean over steps 2..N (logged at 1, N)
        log(f"  {lathe_sps[-1]:.2f} samples/s")
        log(f"timed run {r + 1}/{reps}: reference, {steps} steps")
        rt = reference(ref_time_args)
        ref_sps.append(rt["samples_per_second"])
        ref_loss.append(statistics.mean(rt["losses"][1:]))
        log(f"  {ref_sps[-1]:.2f} samples/s")
    commands.append(f"{binary} --spec {work}/time.json --out {work}/time")
    commands.append(" ".join([PY, REF] + [str(x) for x in ref_time_args]))
    commands.append(f"{PY} {REF} gemm --n 2048 --reps 5 --threads {threads}  # once per pair")

    # 4. Report.
    fps, enc_params = flops_per_sample()
    g_med, g_min, g_max = spread(gemm["gflops"])
    l_med, l_min, l_max = spread(lathe_sps)
    r_med, r_min, r_max = spread(ref_sps)
    ratios = [x / y for x, y in zip(lathe_sps, ref_sps)]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    lathe_blas = [l.split("=>")[1].split("(")[0].strip()
                  for l in sh(["ldd", binary]).stdout.splitlines() if "blas" in l]
    out = []
    w = out.append
    w(f"**Training throughput: lathe-train vs PyTorch eager ({'quick' if a.quick else 'full'})**\n")
    w(f"- machine: {threads} CPUs (nproc), {cpu}; threads used by both: {threads}")
    w(f"- torch (reference): {gemm['torch']} (Debian python3-torch 1.13.1); lathe-train links libtorch 1.13.1")
    w(f"- BLAS: reference process maps {', '.join(gemm['blas_libraries'])}; lathe-train links {', '.join(lathe_blas)}")
    w(f"- job: preset:bert-mini (4 layers, hidden 256, 4 heads, intermediate 1024, vocab 30522), "
      f"batch {BATCH} x seq {SEQ} (SpamAssassin train.jsonl, first batch {rc['batch_shape'][0]}x{rc['batch_shape'][1]}), "
      f"AdamW lr {LR} warmup {WARMUP} wd {WD} clip {CLIP}, seed {SEED}, dropout 0.1, "
      f"{steps} steps per run, first step excluded, {reps} runs each (interleaved)")
    w(f"- FLOPs per sample: 6 x {enc_params:,} (encoder matmul weights) x {SEQ} tokens "
      f"+ 6 x pooler/classifier weights + 12 x {LAYERS} x {HIDDEN} x {SEQ}^2 (attention) "
      f"= {fps / 1e9:.3f} GFLOP (embeddings, norms, softmax, GELU, optimizer not counted)\n")
    w("| measure | median | min | max |")
    w("| --- | ---: | ---: | ---: |")
    w(f"| Lathe samples/s | {l_med:.2f} | {l_min:.2f} | {l_max:.2f} |")
    w(f"| reference samples/s | {r_med:.2f} | {r_min:.2f} | {r_max:.2f} |")
    w(f"| ratio Lathe / reference (per interleaved pair) | {statistics.median(ratios):.3f} | {min(ratios):.3f} | {max(ratios):.3f} |")
    w(f"| GEMM 2048^2 F32 GFLOP/s (5 reps per pair, all pooled) | {g_med:.1f} | {g_min:.1f} | {g_max:.1f} |")
    w(f"| Lathe achieved GFLOP/s | {l_med * fps / 1e9:.1f} | {l_min * fps / 1e9:.1f} | {l_max * fps / 1e9:.1f} |")
    w(f"| reference achieved GFLOP/s | {r_med * fps / 1e9:.1f} | {r_min * fps / 1e9:.1f} | {r_max * fps / 1e9:.1f} |")
    w(f"| Lathe % of GEMM (median/median) | {100 * l_med * fps / 1e9 / g_med:.1f}% | | |")
    w(f"| reference % of GEMM (median/median) | {100 * r_med * fps / 1e9 / g_med:.1f}% | | |")
    w("")
    w(f"Targets (reported, not enforced): Lathe >= 1.0x reference: "
      f"{'met' if statistics.median(ratios) >= 1.0 else 'MISSED'}; "
      f">= 50% of GEMM: {'met' if l_med * fps / 1e9 / g_med >= 0.5 else 'MISSED'}.\n")
    w(f"### Correctness: {'PASS' if ok else 'FAIL'}\n")
    w(f"Both trainers start from the same weights (Lathe's checkpoint-1 of a step at lr 0), "
      f"dropout 0, lr {CHECK_LR} no warmup, {CHECK_STEPS} steps on the same rows:\n")
    w("| step | Lathe loss | reference loss | abs diff |")
    w("| ---: | ---: | ---: | ---: |")
    for i, (x, y) in enumerate(zip(lathe_losses, rc["losses"])):
        w(f"| {i + 1} | {x:.7f} | {y:.7f} | {abs(x - y):.2e} |")
    w("")
    w(f"- final weights: max |Lathe - reference| = {max_w_diff:.2e} (largest update {max_update:.2e})")
    w(f"- word-embedding rows Lathe updated: {len(lathe_rows)}; distinct non-pad token ids "
      f"the reference's tokenizer fed: {len(ref_ids)}; equal: {lathe_rows == ref_ids}")
    for name, passed in checks.items():
        w(f"- {'pass' if passed else 'FAIL'}: {name}")
    w(f"- timed runs (dropout 0.1, separate RNG streams, so not bitwise comparable): mean loss of steps 2..{steps}: "
      f"Lathe {statistics.median(lathe_loss):.4f}, reference {statistics.median(ref_loss):.4f} (medians over runs)\n")
    w("### Commands\n")
    w("```")
    w(f"bench/train/run.sh{' --quick' if a.quick else ''}")
    for c in commands:
        w(c)
    w("```")
    text = "\n".join(out) + "\n"
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text)
    log(f"wrote {a.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
