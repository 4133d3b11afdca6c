#!/usr/bin/env python3
"""Training-throughput benchmark: lathe-train vs a PyTorch eager reference.

Driven by bench/train/run.sh. Each trainer runs in its own process; this
one only orchestrates (it loads torch once, to read weights for the
correctness check, and sits idle while the timed runs go). Three parts:
  1. BERT classification (bert-mini, seq 128, batch 32) vs the reference,
     with a correctness check, and against the machine's GEMM rate;
  2. a Llama causal LM (llama-mini, seq 256) the same way;
  3. the data path on variable-length data (SpamAssassin at seq 256):
     padding to max_length vs to each batch's longest row vs
     group_by_length, and the share of step time spent building batches;
  4. bf16 autocast against float32;
  5. peak memory and tokens/s against sequence length (512 to 8192) with
     and without gradient checkpointing and packing (bench/train/memory.py).
  6. the memory optimizer-state sharding (zero_stage=1) saves on two
     data-parallel ranks (bench/train/sharding.py);
  7. the image presets (cnn-small, vit-tiny) on real digits, with a
     correctness check each (bench/train/images.py).

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


DEVICE, BF16 = "cpu", False  # set from the command line in main()


def lathe_spec(path, model, data, assets, steps, threads, lr, warmup, logging,
               task="text-classification", batch=BATCH, seq=SEQ, **extra):
    params = {"max_steps": steps, "batch_size": batch, "max_seq_length": seq,
              "seed": SEED, "num_threads": threads, "save_steps": 0,
              "eval_steps": 0, "validation_split": 0, "logging_steps": logging,
              "learning_rate": lr, "warmup_ratio": warmup, "weight_decay": WD,
              "max_grad_norm": CLIP, "bf16": int(BF16)}
    params.update(extra)
    return {"__path": path, "task": task, "model": model,
            "train_data": data, "device": DEVICE, "assets_dir": assets,
            "params": {k: str(v) for k, v in params.items()}}


def reference(args):
    if args[0] == "train":
        args = list(args) + ["--device", DEVICE] + (["--bf16"] if BF16 else [])
    elif args[0] == "gemm":
        args = list(args) + ["--device", DEVICE]
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
    ap.add_argument("--smoke", action="store_true",
                    help="CI: the correctness checks and a few steps of each part")
    ap.add_argument("--root", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--out", required=True, help="Markdown result file")
    ap.add_argument("--device", default="cpu", help="cpu or cuda:N, for both trainers")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast in both trainers")
    ap.add_argument("--memory-only", action="store_true",
                    help="only part 5, memory and speed against sequence length")
    ap.add_argument("--sharding-only", action="store_true",
                    help="only part 6, optimizer-state sharding on two ranks")
    ap.add_argument("--images-only", action="store_true",
                    help="only part 7, the image presets")
    a = ap.parse_args()
    global DEVICE, BF16
    DEVICE, BF16 = a.device, a.bf16
    if a.smoke:
        a.quick = True
    steps, reps = (3, 1) if a.smoke else (8, 2) if a.quick else (30, 3)
    threads = os.cpu_count()
    binary = os.path.join(a.build, "bin", "lathe-train")
    data = os.path.join(a.build, "assets", "spam", "train.jsonl")
    assets = os.path.join(a.build, "assets")
    work = os.path.join(a.build, "bench", "train-work-smoke" if a.smoke else "train-work")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    commands = []

    def log(msg):
        print(f"[bench/train] {msg}", file=sys.stderr, flush=True)

    if a.images_only:
        from images import image_section
        out = []
        ctx = {"a": a, "binary": binary, "assets": assets, "work": work,
               "threads": threads, "log": log, "commands": commands}
        ok = image_section(ctx, out.append, lathe_spec, lathe_events, reference, PY, REF)
        out += ["### Commands\n", "```", "bench/train/run.sh --images-only"] + commands + ["```"]
        text = "\n".join(out) + "\n"
        print(text)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text)
        return 0 if ok else 1

    if a.memory_only or a.sharding_only:
        out = []
        ctx = {"a": a, "binary": binary, "assets": assets, "data": data, "work": work,
               "threads": threads, "log": log, "commands": commands}
        llama_init(ctx)
        if a.memory_only:
            from memory import memory_section
            ok = memory_section(ctx, out.append, lathe_spec,
                                os.path.join(a.build, "bin", "lathe"), PY, REF)
        else:
            from sharding import sharding_section
            ok = sharding_section(ctx, out.append, lathe_spec)
        flag = "--memory-only" if a.memory_only else "--sharding-only"
        out += ["### Commands\n", "```", f"bench/train/run.sh {flag}"] + commands + ["```"]
        text = "\n".join(out) + "\n"
        print(text)
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(text)
        return 0 if ok else 1

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
    bert_data_share, bert_prepare = [], []
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
        bert_data_share.append(last.get("data_time_share", 0.0))
        bert_prepare.append(([e for e in ev if e["type"] == "train"][0].get("prepare_seconds", 0.0),
                             [e for e in ev if e["type"] == "train"][0].get("train_tokens", 0)))
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
    lathe_blas = [os.path.realpath(l.split("=>")[1].split("(")[0].strip())
                  for l in sh(["ldd", binary]).stdout.splitlines() if "blas" in l]
    out = []
    w = out.append
    w(f"**Training throughput: lathe-train vs PyTorch eager ({'quick' if a.quick else 'full'}), "
      f"device {DEVICE}{', bf16 autocast' if BF16 else ', float32'}**\n")
    w("### 1. BERT classification\n")
    w(f"- machine: {threads} CPUs (nproc), {cpu}; threads used by both: {threads}")
    w(f"- torch (reference): {gemm['torch']} (Debian python3-torch 1.13.1); lathe-train links libtorch 1.13.1")
    w(f"- BLAS: reference process maps {', '.join(gemm['blas_libraries'])}; lathe-train links "
      f"{', '.join(lathe_blas)} (symbolic links resolved)")
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
    w(f"#### Correctness: {'PASS' if ok else 'FAIL'}\n")
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
    ctx = {"bert_sps": l_med, "a": a, "binary": binary, "assets": assets, "data": data,
           "work": work, "threads": threads, "log": log, "commands": commands,
           "gemm": g_med, "bert_data_share": bert_data_share,
           "bert_prepare": bert_prepare}
    ctx["bert_ref_sps"] = r_med
    ctx["time_spec"] = spec
    ctx["ref_time_args"] = ref_time_args
    ok = llama_section(ctx, w) and ok
    data_section(ctx, w)
    if not BF16 and not a.smoke:
        bf16_section(ctx, w)
    if DEVICE == "cpu" and not BF16:
        from memory import memory_section
        ok = memory_section(ctx, w, lathe_spec, os.path.join(a.build, "bin", "lathe"),
                            PY, REF) and ok
    if DEVICE == "cpu" and not BF16:
        from sharding import sharding_section
        ok = sharding_section(ctx, w, lathe_spec) and ok
    from images import image_section
    ok = image_section(ctx, w, lathe_spec, lathe_events, reference, PY, REF) and ok
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

# Llama causal LM (llama-mini, worker/models/model_config.cc).
L_LAYERS, L_HIDDEN, L_INTER, L_VOCAB, L_SEQ, L_BATCH = 4, 256, 688, 32000, 256, 8


def llama_flops_per_sample():
    """6 x matmul weights (layers + lm_head) x tokens + 12 x L x h x T^2."""
    w = L_LAYERS * (4 * L_HIDDEN * L_HIDDEN + 3 * L_HIDDEN * L_INTER) + L_HIDDEN * L_VOCAB
    return 6 * w * L_SEQ + 12 * L_LAYERS * L_HIDDEN * L_SEQ * L_SEQ, w


def llama_init(ctx):
    """preset:llama-mini's initial weights as a model directory, as for BERT:
    one step at learning rate 0."""
    a, log, work = ctx["a"], ctx["log"], ctx["work"]
    binary, assets, data, threads = ctx["binary"], ctx["assets"], ctx["data"], ctx["threads"]
    log("llama: initial weights (lathe-train causal-lm, 1 step at lr 0)")
    spec = lathe_spec(f"{work}/llama-init.json", "preset:llama-mini", data, assets,
                      1, threads, LR, WARMUP, 1, task="causal-lm",
                      batch=L_BATCH, seq=L_SEQ)
    ev = lathe_events(binary, spec, f"{work}/llama-init")
    ckpt = [e for e in ev if e["type"] == "checkpoint"][-1]["dir"]
    init_dir = f"{work}/llama-init-model"
    ctx["llama_init_dir"] = init_dir
    shutil.copytree(ckpt, init_dir, ignore=shutil.ignore_patterns("training_state*", "trainer_state*"))
    return init_dir


def llama_section(ctx, w):
    a, log, work = ctx["a"], ctx["log"], ctx["work"]
    binary, assets, data, threads = ctx["binary"], ctx["assets"], ctx["data"], ctx["threads"]
    steps, reps = (2, 1) if a.smoke else (3, 1) if a.quick else (8, 3)
    lathe_cli = os.path.join(a.build, "bin", "lathe")
    # Initial weights, as for BERT: one step at learning rate 0.
    init_dir = llama_init(ctx)
    # The reference's token ids: Lathe's tokenizer through `lathe tokenize`.
    ids_path = f"{work}/llama-ids.jsonl"
    t0 = time.perf_counter()
    with open(data) as fin, open(ids_path, "w") as fout:
        subprocess.run([lathe_cli, "tokenize", "--tokenizer", init_dir, "--jsonl"],
                       stdin=fin, stdout=fout, check=True)
    tokenize_seconds = time.perf_counter() - t0
    ctx["commands"].append(f"{lathe_cli} tokenize --tokenizer {init_dir} --jsonl < {data} > {ids_path}")

    log("llama: correctness check (3 steps, lr 1e-3, both trainers)")
    spec = lathe_spec(f"{work}/llama-check.json", init_dir, data, assets, 3,
                      threads, CHECK_LR, 0.0, 1, task="causal-lm",
                      batch=L_BATCH, seq=L_SEQ)
    ev = lathe_events(binary, spec, f"{work}/llama-check")
    lathe_losses = [e["loss"] for e in ev if e["type"] == "train"]
    lathe_final = [e for e in ev if e["type"] == "checkpoint"][-1]["dir"]
    ref_final = f"{work}/llama-reference-final.safetensors"
    common = ["--task", "causal-lm", "--model", init_dir, "--data", data,
              "--ids", ids_path, "--batch-size", L_BATCH, "--max-length", L_SEQ,
              "--weight-decay", WD, "--max-grad-norm", CLIP, "--seed", SEED,
              "--threads", threads]
    check_args = ["train"] + common + ["--steps", 3, "--lr", CHECK_LR,
                                       "--warmup-ratio", 0, "--save-final", ref_final]
    rc = reference(check_args)
    import reference as refmod
    lw = refmod.read_safetensors(os.path.join(lathe_final, "model.safetensors"))
    rw = refmod.read_safetensors(ref_final)
    w0 = refmod.read_safetensors(os.path.join(init_dir, "model.safetensors"))
    max_w_diff = max((lw[k] - rw[k]).abs().max().item() for k in lw)
    max_update = max((lw[k] - w0[k]).abs().max().item() for k in lw)
    diffs = [abs(x - y) for x, y in zip(lathe_losses, rc["losses"])]
    checks = {
        "all 3 losses |diff| <= 1e-4": len(diffs) == 3 and max(diffs) <= 1e-4,
        "final weights max |diff| <= 1e-4 (updates are ~1e-3)": max_w_diff <= 1e-4,
    }
    ok = all(checks.values())
    log(f"llama correctness: {'PASS' if ok else 'FAIL'} {checks}")
    ctx["commands"].append(f"{binary} --spec {work}/llama-check.json --out {work}/llama-check")
    ctx["commands"].append(" ".join([PY, REF] + [str(x) for x in check_args]))

    time_spec = lathe_spec(f"{work}/llama-time.json", init_dir, data, assets, steps,
                           threads, LR, WARMUP, steps, task="causal-lm",
                           batch=L_BATCH, seq=L_SEQ)
    time_args = ["train"] + common + ["--steps", steps, "--lr", LR,
                                      "--warmup-ratio", WARMUP]
    l_sps, r_sps, l_tps, r_tps, shares, gemms = [], [], [], [], [], []
    for r in range(reps):
        gemms += reference(["gemm", "--n", 2048, "--reps", 5, "--threads", threads])["gflops"]
        log(f"llama timed run {r + 1}/{reps}: lathe-train, {steps} steps")
        ev = lathe_events(binary, time_spec, f"{work}/llama-time")
        last = [e for e in ev if e["type"] == "train"][-1]
        l_sps.append(last["samples_per_second"])
        l_tps.append(last.get("tokens_per_second", 0.0))
        shares.append(last.get("data_time_share", 0.0))
        log(f"  {l_sps[-1]:.2f} samples/s")
        log(f"llama timed run {r + 1}/{reps}: reference, {steps} steps")
        rt = reference(time_args)
        r_sps.append(rt["samples_per_second"])
        r_tps.append(rt["tokens_per_second"] or 0.0)
        log(f"  {r_sps[-1]:.2f} samples/s")
    ctx["commands"].append(f"{binary} --spec {work}/llama-time.json --out {work}/llama-time")
    ctx["commands"].append(" ".join([PY, REF] + [str(x) for x in time_args]))
    ctx["llama_data_share"] = shares
    ctx["llama_tokenize"] = tokenize_seconds

    fps, weights = llama_flops_per_sample()
    ratios = [x / y for x, y in zip(l_sps, r_sps)]
    lm, lmin, lmax = spread(l_sps)
    rm, rmin, rmax = spread(r_sps)
    g = statistics.median(gemms)
    w("### 2. Llama causal LM\n")
    w(f"- job: preset:llama-mini (4 layers, hidden 256, 4 heads, intermediate 688, vocab 32000, "
      f"untied lm_head), causal-lm on SpamAssassin train.jsonl as raw text (loss on every token), "
      f"batch {L_BATCH} x seq {L_SEQ} (first batch {rc['batch_shape'][0]}x{rc['batch_shape'][1]}), "
      f"AdamW lr {LR} warmup {WARMUP}, no dropout, {steps} steps per run, first excluded, "
      f"{reps} runs each (interleaved)")
    w(f"- FLOPs per sample: 6 x {weights:,} (matmul weights incl. lm_head) x {L_SEQ} "
      f"+ 12 x {L_LAYERS} x {L_HIDDEN} x {L_SEQ}^2 = {fps / 1e9:.3f} GFLOP\n")
    w("| measure | median | min | max |")
    w("| --- | ---: | ---: | ---: |")
    w(f"| Lathe samples/s | {lm:.3f} | {lmin:.3f} | {lmax:.3f} |")
    w(f"| reference samples/s | {rm:.3f} | {rmin:.3f} | {rmax:.3f} |")
    w(f"| Lathe tokens/s | {statistics.median(l_tps):.0f} | {min(l_tps):.0f} | {max(l_tps):.0f} |")
    w(f"| reference tokens/s | {statistics.median(r_tps):.0f} | {min(r_tps):.0f} | {max(r_tps):.0f} |")
    w(f"| ratio Lathe / reference (per interleaved pair) | {statistics.median(ratios):.3f} | {min(ratios):.3f} | {max(ratios):.3f} |")
    w(f"| Lathe achieved GFLOP/s | {lm * fps / 1e9:.1f} | {lmin * fps / 1e9:.1f} | {lmax * fps / 1e9:.1f} |")
    gm, gmin, gmax = spread(gemms)
    w(f"| GEMM 2048^2 GFLOP/s (5 reps before each pair, pooled) | {gm:.1f} | {gmin:.1f} | {gmax:.1f} |")
    w(f"| Lathe % of GEMM (median/median) | {100 * lm * fps / 1e9 / g:.1f}% | | |")
    w(f"| reference % of GEMM | {100 * rm * fps / 1e9 / g:.1f}% | | |")
    w("")
    w(f"Target (reported, not enforced): Lathe >= 1.0x reference: "
      f"{'met' if statistics.median(ratios) >= 1.0 else 'MISSED'}.\n")
    w(f"#### Correctness: {'PASS' if ok else 'FAIL'}\n")
    w("Same initial weights, lr 1e-3 without warmup, 3 steps on the same rows:\n")
    w("| step | Lathe loss | reference loss | abs diff |")
    w("| ---: | ---: | ---: | ---: |")
    for i, (x, y) in enumerate(zip(lathe_losses, rc["losses"])):
        w(f"| {i + 1} | {x:.7f} | {y:.7f} | {abs(x - y):.2e} |")
    w("")
    w(f"- final weights: max |Lathe - reference| = {max_w_diff:.2e} (largest update {max_update:.2e})")
    for name, passed in checks.items():
        w(f"- {'pass' if passed else 'FAIL'}: {name}")
    w("")
    return ok


V_SEQ, V_BATCH = 256, 32


def data_section(ctx, w):
    """Padding and grouping on variable-length rows, and the data path."""
    a, log, work = ctx["a"], ctx["log"], ctx["work"]
    binary, assets, data, threads = ctx["binary"], ctx["assets"], ctx["data"], ctx["threads"]
    steps = 2 if a.smoke else 3 if a.quick else 12
    init_dir = f"{work}/init-model"  # bert-mini's initial weights from part 1
    runs = {}
    order = [("Lathe", "longest"), ("reference", "longest"), ("Lathe", "grouped"),
             ("reference", "grouped"), ("reference", "max_length")]
    for who, mode in order:
        log(f"variable length: {who}, {mode}, {steps} steps")
        if who == "Lathe":
            spec = lathe_spec(f"{work}/var-{mode}.json", init_dir, data, assets, steps,
                              threads, LR, WARMUP, steps, seq=V_SEQ, batch=V_BATCH,
                              group_by_length=int(mode == "grouped"))
            ev = lathe_events(binary, spec, f"{work}/var-{mode}")
            last = [e for e in ev if e["type"] == "train"][-1]
            runs[(who, mode)] = (last["samples_per_second"], last.get("padding_efficiency"),
                                 last.get("data_time_share"))
            ctx["commands"].append(f"{binary} --spec {work}/var-{mode}.json --out {work}/var-{mode}")
        else:
            args = ["train", "--model", init_dir, "--data", data, "--steps", steps,
                    "--batch-size", V_BATCH, "--max-length", V_SEQ, "--lr", LR,
                    "--warmup-ratio", WARMUP, "--weight-decay", WD,
                    "--max-grad-norm", CLIP, "--seed", SEED, "--threads", threads,
                    "--padding", "max_length" if mode == "max_length" else "longest"]
            if mode == "grouped":
                args.append("--group-by-length")
            rt = reference(args)
            runs[(who, mode)] = (rt["samples_per_second"], rt["padding_efficiency"], None)
            ctx["commands"].append(" ".join([PY, REF] + [str(x) for x in args]))
        log(f"  {runs[(who, mode)][0]:.2f} samples/s")

    def cell(v, fmt):
        return "" if v is None else format(v, fmt)

    w("### 3. Data path on variable-length data\n")
    w(f"preset:bert-mini classification (initial weights of part 1), SpamAssassin train.jsonl, "
      f"max_seq_length {V_SEQ}, batch {V_BATCH}, {steps} steps per run, one run each. "
      f"At {V_SEQ} tokens about 31% of the e-mails are shorter than the limit, so a random batch "
      f"of {V_BATCH} nearly always holds a full-length row.\n")
    w("| trainer | batches padded to | samples/s | real tokens / token slots | data time share |")
    w("| --- | --- | ---: | ---: | ---: |")
    names = {"longest": "their longest row", "grouped": "their longest row, group_by_length",
             "max_length": f"max_seq_length ({V_SEQ})"}
    for who, mode in order:
        sps, eff, share = runs[(who, mode)]
        w(f"| {who} | {names[mode]} | {sps:.2f} | {cell(eff, '.3f')} | "
          f"{cell(None if share is None else 100 * share, '.3f')}{'%' if share is not None else ''} |")
    lg, ll = runs[("Lathe", "grouped")][0], runs[("Lathe", "longest")][0]
    rg, rl, rmx = (runs[("reference", m)][0] for m in ("grouped", "longest", "max_length"))
    w("")
    w(f"- Lathe with group_by_length vs the reference padding to max_length: **{lg / rmx:.2f}x** "
      f"(target: aim at 1.2x on real variable-length data)")
    w(f"- Lathe vs reference, same batches: {ll / rl:.2f}x padded to the longest row, "
      f"{lg / rg:.2f}x grouped")
    w(f"- effect of grouping (Lathe): {lg / ll:.2f}x; of padding to the longest row instead of "
      f"max_length (reference): {rl / rmx:.2f}x")
    shares = ctx["bert_data_share"] + ctx.get("llama_data_share", [])
    shares += [runs[("Lathe", m)][2] or 0.0 for m in ("longest", "grouped")]
    w(f"- share of Lathe's step time spent building batches (collating cached token ids, "
      f"copying them to the device), over every Lathe timed run of parts 1-3: at most "
      f"{100 * max(shares):.3f}% (target < 5%: {'met' if max(shares) < 0.05 else 'MISSED'}). "
      f"Tokenization happens once, before the first step, and is cached.")
    prep = ctx["bert_prepare"]
    if prep and prep[0][0] > 0:
        secs = statistics.median(p[0] for p in prep)
        toks = prep[0][1]
        epoch = 4732 / ctx["bert_sps"]  # seconds of training per epoch in part 1
        w(f"- tokenization in lathe-train (bert-base-uncased WordPiece, 4,732 e-mails truncated "
          f"to {SEQ}): {secs:.2f} s for {toks:,} tokens ({toks / secs:,.0f} tokens/s, "
          f"{4732 / secs:,.0f} rows/s), once per job: {100 * secs / (secs + epoch):.2f}% of "
          f"the time of one epoch at part 1's speed")
    if "llama_tokenize" in ctx:
        w(f"- `lathe tokenize --jsonl` with the Llama-2 tokenizer over the same 4,732 e-mails "
          f"(untruncated, JSON out with offsets): {ctx['llama_tokenize']:.2f} s")
    w("")


def bf16_section(ctx, w):
    """bf16 autocast against float32 on the part-1 job, both trainers."""
    global BF16
    a, log, work, binary = ctx["a"], ctx["log"], ctx["work"], ctx["binary"]
    flags = sorted({f for l in open("/proc/cpuinfo") if l.startswith("flags")
                    for f in l.split() if "bf16" in f or f == "amx_tile"})
    BF16 = True
    try:
        spec = dict(ctx["time_spec"], __path=f"{work}/time-bf16.json")
        spec["params"] = dict(spec["params"], bf16="1")
        log("bf16: lathe-train, part-1 job with bf16=1")
        ev = lathe_events(binary, spec, f"{work}/time-bf16")
        lathe_bf16 = [e for e in ev if e["type"] == "train"][-1]
        log("bf16: reference with torch.autocast(bfloat16)")
        ref_bf16 = reference(ctx["ref_time_args"])
        ctx["commands"].append(f"{binary} --spec {work}/time-bf16.json --out {work}/time-bf16")
        ctx["commands"].append(" ".join([PY, REF] + [str(x) for x in ctx["ref_time_args"]]) + " --bf16")
    finally:
        BF16 = False
    l32, r32 = ctx["bert_sps"], ctx["bert_ref_sps"]
    l16, r16 = lathe_bf16["samples_per_second"], ref_bf16["samples_per_second"]
    w("### 4. bf16 autocast on this machine\n")
    w(f"The part-1 job (bert-mini, batch 32 x 128) with `bf16=1` (autocast of forward and "
      f"loss; float32 weights and optimizer), one run each. CPU bf16 flags: "
      f"{', '.join(flags) or 'none'}.\n")
    w("| trainer | float32 samples/s (part 1 median) | bf16 samples/s | bf16 / float32 | mean loss, steps 2..N |")
    w("| --- | ---: | ---: | ---: | ---: |")
    w(f"| Lathe | {l32:.2f} | {l16:.2f} | {l16 / l32:.2f}x | {lathe_bf16['loss']:.4f} |")
    w(f"| reference | {r32:.2f} | {r16:.2f} | {r16 / r32:.2f}x | "
      f"{statistics.mean(ref_bf16['losses'][1:]):.4f} |")
    w("")
    w(f"Lathe / reference under bf16: {l16 / r16:.2f}x. On a GPU the same harness runs with "
      f"`bench/train/run.sh --device cuda:0 --bf16`.\n")


if __name__ == "__main__":
    sys.exit(main())
