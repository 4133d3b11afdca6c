"""Part 5 of the training benchmark: peak memory and tokens/s against
sequence length for a Llama-shaped causal LM, with and without gradient
checkpointing and packing, lathe-train and the PyTorch reference side by
side (the reference has the same switches: torch.utils.checkpoint per layer,
and the same best-fit packing with per-row positions and masks).

Each run is one process; its peak resident memory is the kernel's ru_maxrss
for that child (os.wait4), and each runs under an address-space limit so a
length that does not fit fails instead of taking the machine down: such a
run is reported as out of memory at that limit.

LATHE_BENCH_MEMORY_LENGTHS=512,1024 picks the lengths (default 512 to 8192;
on two CPU cores the 8192 rows take about five minutes a run), and
LATHE_BENCH_MEMORY_LIMIT_GB the limit (default 20).
"""
import json
import os
import resource
import shutil
import subprocess

LENGTHS = [512, 1024, 2048, 4096, 8192]
VARIANTS = [  # (name, gradient_checkpointing, packing)
    ("plain", False, False),
    ("checkpointing", True, False),
    ("packing", False, True),
    ("checkpointing + packing", True, True),
]


def wait_measured(cmd, limit_bytes, scratch):
    """(returncode, stdout, stderr, peak RSS in MiB) of `cmd`, run under an
    address-space limit of `limit_bytes`; output goes through files in
    `scratch` so the child is reaped by wait4, which reports its own peak."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    with open(f"{scratch}.out", "w+b") as out, open(f"{scratch}.err", "w+b") as err:
        p = subprocess.Popen(cmd, stdout=out, stderr=err, preexec_fn=limit)
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (p.returncode, out.read().decode(errors="replace"),
                err.read().decode(errors="replace"), usage.ru_maxrss / 1024)


def long_rows(data, path, min_chars):
    """Rows of at least `min_chars` characters, each several texts joined,
    so every row fills the sequence length without packing."""
    texts = []
    with open(data, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
    rows, cur = [], []
    for t in texts * 4:
        cur.append(t)
        if sum(len(x) for x in cur) >= min_chars:
            rows.append("\n\n".join(cur))
            cur = []
        if len(rows) >= 64:
            break
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"text": r}) + "\n")
    return len(rows)


def memory_section(ctx, w, lathe_spec, lathe_cli, py, ref):
    a, log, work = ctx["a"], ctx["log"], ctx["work"]
    binary, assets, data, threads = ctx["binary"], ctx["assets"], ctx["data"], ctx["threads"]
    init_dir = ctx["llama_init_dir"]
    lengths = [256] if a.smoke else LENGTHS
    if os.environ.get("LATHE_BENCH_MEMORY_LENGTHS"):
        lengths = [int(x) for x in os.environ["LATHE_BENCH_MEMORY_LENGTHS"].split(",")]
    variants = VARIANTS[-1:] if a.smoke else VARIANTS
    steps = 2 if a.smoke else 3
    limit = int(os.environ.get("LATHE_BENCH_MEMORY_LIMIT_GB", "20")) << 30
    # The model with room for the longest sequence.
    model = f"{work}/memory-model"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(init_dir, model)
    with open(os.path.join(model, "config.json")) as f:
        cfg = json.load(f)
    cfg["max_position_embeddings"] = max(cfg["max_position_embeddings"], max(lengths))
    with open(os.path.join(model, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    # Data: long rows (each fills any length here) for the unpacked runs,
    # the natural rows for packing; token ids for the reference from
    # `lathe tokenize`, as in part 2.
    sources = {False: f"{work}/memory-long.jsonl", True: data}
    long_rows(data, sources[False], 8 * max(lengths))
    ids = {}
    for packed, path in sources.items():
        ids[packed] = f"{work}/memory-ids-{int(packed)}.jsonl"
        with open(path) as fin, open(ids[packed], "w") as fout:
            subprocess.run([lathe_cli, "tokenize", "--tokenizer", model, "--jsonl"],
                           stdin=fin, stdout=fout, check=True)
    results = {}
    for length in lengths:
        for name, ckpt, packed in variants:
            extra = {}
            if ckpt:
                extra["gradient_checkpointing"] = 1
            if packed:
                extra["packing"] = 1
            spec = lathe_spec(f"{work}/memory-{length}-{name}.json".replace(" ", ""),
                              model, sources[packed], assets, steps, threads, 1e-4, 0.0,
                              1, task="causal-lm", batch=1, seq=length, **extra)
            path = spec.pop("__path")
            with open(path, "w") as f:
                json.dump(spec, f)
            out_dir = path[:-5]
            shutil.rmtree(out_dir, ignore_errors=True)
            log(f"memory: {length} tokens, {name}: lathe-train")
            rc, out, err, rss = wait_measured(
                [binary, "--spec", path, "--out", out_dir], limit, out_dir + "-lathe")
            events = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
            train = [e for e in events if e.get("type") == "train"]
            lathe = {"ok": rc == 0 and bool(train), "rss": rss,
                     "losses": [e["loss"] for e in train],
                     "tps": train[-1].get("tokens_per_second") if train else None,
                     "error": "" if rc == 0 else (err.strip().splitlines() or ["killed"])[-1][-160:]}
            args = ["train", "--task", "causal-lm", "--model", model, "--data", sources[packed],
                    "--ids", ids[packed], "--batch-size", 1, "--max-length", length,
                    "--steps", steps, "--lr", 1e-4, "--warmup-ratio", 0,
                    "--seed", 42, "--threads", threads, "--device", "cpu"]
            if ckpt:
                args.append("--checkpointing")
            if packed:
                args.append("--packing")
            log(f"memory: {length} tokens, {name}: reference")
            rc, out, err, rss = wait_measured([py, ref] + [str(x) for x in args], limit,
                                              out_dir + "-reference")
            try:
                rj = json.loads(out.strip().splitlines()[-1]) if rc == 0 else {}
            except (ValueError, IndexError):
                rj = {}
            refr = {"ok": bool(rj), "rss": rss, "tps": rj.get("tokens_per_second"),
                    "error": "" if rj else (err.strip().splitlines() or ["killed"])[-1][-160:]}
            diffs = [abs(x - y) for x, y in zip(lathe.get("losses", []), rj.get("losses", []))]
            refr["loss_diff"] = max(diffs) if diffs and lathe["ok"] else None
            results[(length, name)] = (lathe, refr)
            ctx["commands"].append(f"{binary} --spec {path} --out {out_dir}")
            ctx["commands"].append(" ".join([py, ref] + [str(x) for x in args]))

    def cell(r):
        if not r["ok"]:
            return f"out of memory ({limit >> 30} GiB limit)" if "memory" in r["error"].lower() \
                or "alloc" in r["error"].lower() or r["error"] == "killed" \
                else f"failed: {r['error']}"
        return f"{r['rss'] / 1024:.2f} GiB, {r['tps']:.0f} tok/s" if r["tps"] else \
            f"{r['rss'] / 1024:.2f} GiB"

    w("### 5. Memory and speed against sequence length\n")
    w(f"- job: the part-2 model (llama-mini shape: 4 layers, hidden 256, vocab 32000) with "
      f"max_position_embeddings {cfg['max_position_embeddings']}, causal-lm, batch 1 sequence, "
      f"{steps} steps (first excluded from tokens/s), AdamW, float32 on the CPU")
    w("- unpacked runs train on rows that fill the whole length (several SpamAssassin texts "
      "joined); packed runs pack the natural rows into sequences of that length "
      "(best fit, attention and positions confined to each row)")
    w(f"- each cell: peak resident memory of the process (ru_maxrss) and steady tokens/s; "
      f"every run is limited to {limit >> 30} GiB of address space, and a run that "
      f"exceeds it is reported as out of memory\n")
    w("Both trainers start from the same weights and see the same sequences in the same "
      "order (the same packing plan and shuffle), so their per-step losses must agree; the "
      "last column is the largest difference over the steps (a check of packing and "
      "checkpointing against an independent implementation).\n")
    w("| tokens | variant | Lathe | reference | max loss diff |")
    w("| ---: | --- | --- | --- | ---: |")
    agree = True
    for length in lengths:
        for name, _, _ in variants:
            lathe, refr = results[(length, name)]
            d = refr["loss_diff"]
            agree = agree and (d is None or d <= 1e-3)
            w(f"| {length} | {name} | {cell(lathe)} | {cell(refr)} | "
              f"{'' if d is None else f'{d:.1e}'} |")
    w("")
    for who, i in (("Lathe", 0), ("reference", 1)):
        for name, _, _ in variants:
            fits = [l for l in lengths if results[(l, name)][i]["ok"]]
            first_out = next((l for l in lengths if not results[(l, name)][i]["ok"]), None)
            w(f"- {who}, {name}: longest that ran {max(fits) if fits else 'none'}"
              + (f"; first out of memory or failed at {first_out}" if first_out else
                 f"; all lengths up to {max(lengths)} fit"))
    w("")
    w(f"Losses agree within 1e-3 wherever both ran: {'yes' if agree else 'NO'}.\n")
    ran = all(r[0]["ok"] and r[1]["ok"] for r in results.values())
    return agree and (ran or not a.smoke)
