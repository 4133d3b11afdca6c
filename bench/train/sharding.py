"""Part 6 of the training benchmark: what optimizer-state sharding
(zero_stage=1) saves in a data-parallel job.

The part-2 model (llama-mini shape) is fully fine-tuned as causal-lm three
ways on the CPU: one process; two ranks (c10d Gloo on the loopback) keeping
every AdamW moment on both; two ranks each keeping the moments of the
parameters it owns. Each process's peak resident memory is the kernel's
ru_maxrss for it (os.wait4). Both two-rank runs must report the same losses
step by step (sharding changes where the update runs, not its result), and
the one-process run, which sees the same global batches, agrees up to the
order of the gradient sums.
"""
import json
import os
import re
import shutil
import socket
import subprocess


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(binary, spec, world, out_dir):
    """Runs `world` ranks of `spec`; returns [(rc, stdout, stderr, MiB)]."""
    shutil.rmtree(out_dir, ignore_errors=True)
    os.makedirs(out_dir)
    port = free_port()
    procs = []
    for r in range(world):
        s = dict(spec)
        if world > 1:
            s["distributed"] = {"world_size": world, "rank": r, "store_port": port,
                                "store_prefix": "bench", "timeout_seconds": 600}
        path = f"{out_dir}/spec-{r}.json"
        with open(path, "w") as f:
            json.dump(s, f)
        out = open(f"{out_dir}/rank{r}.out", "w+b")
        err = open(f"{out_dir}/rank{r}.err", "w+b")
        p = subprocess.Popen([binary, "--spec", path, "--out", f"{out_dir}/rank{r}"],
                             stdout=out, stderr=err)
        procs.append((p, out, err, path))
    results = []
    for p, out, err, _ in procs:
        _, status, usage = os.wait4(p.pid, 0)
        rc = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        results.append((rc, out.read().decode(errors="replace"),
                        err.read().decode(errors="replace"), usage.ru_maxrss / 1024))
        out.close()
        err.close()
    return results, [path for _, _, _, path in procs]


def events(text):
    return [json.loads(l) for l in text.splitlines() if l.startswith("{")]


def sharding_section(ctx, w, lathe_spec):
    a, log, work = ctx["a"], ctx["log"], ctx["work"]
    binary, assets, data = ctx["binary"], ctx["assets"], ctx["data"]
    model = ctx["llama_init_dir"]
    steps = 2 if a.smoke else 6
    reps = 1 if a.smoke else 3
    runs = [("1 process", 1, 0), ("2 ranks", 2, 0), ("2 ranks, zero_stage=1", 2, 1)]
    results = {}
    for name, world, zero in runs:
        spec = lathe_spec(f"{work}/sharding.json", model, data, assets, steps, 1, 1e-4,
                          0.0, 1, task="causal-lm", batch=4, seq=128, zero_stage=zero)
        spec.pop("__path")
        out_dir = f"{work}/sharding-{world}-{zero}"
        # Peak RSS varies by tens of MiB between identical runs here
        # (allocator, thread start-up): the median of `reps` runs.
        peaks = []
        for rep in range(reps):
            log(f"sharding: {name} ({rep + 1} of {reps})")
            ranks, paths = run_ranks(binary, spec, world, out_dir)
            peaks.append([r[3] for r in ranks])
        ev = events(ranks[0][1])
        train = [e for e in ev if e.get("type") == "train"]
        moments = next((e["message"] for e in ev if e.get("type") == "log"
                        and e["message"].startswith("AdamW moments per rank")), "")
        trainable = next((int(m.group(1)) for e in ev if e.get("type") == "log"
                          for m in [re.search(r"trainable parameters (\d+)", e["message"])]
                          if m), 0)
        results[name] = {
            "ok": all(r[0] == 0 for r in ranks) and len(train) == steps,
            "rss": [sorted(p[i] for p in peaks)[len(peaks) // 2] for i in range(world)],
            "losses": [e["loss"] for e in train],
            "moments": moments, "trainable": trainable,
            "error": next((r[2].strip().splitlines()[-1] for r in ranks
                           if r[0] != 0 and r[2].strip()), ""),
        }
        for p in paths:
            ctx["commands"].append(f"{binary} --spec {p} --out {out_dir}/rank{paths.index(p)}")

    def diff(x, y):
        d = [abs(p - q) for p, q in zip(results[x]["losses"], results[y]["losses"])]
        return max(d) if d and results[x]["ok"] and results[y]["ok"] else None

    same = diff("2 ranks", "2 ranks, zero_stage=1")
    close = diff("1 process", "2 ranks")
    trainable = results["2 ranks"]["trainable"]
    w("### 6. Optimizer-state sharding (zero_stage=1)\n")
    w(f"- job: the part-2 model (llama-mini shape, {trainable:,} trainable parameters), "
      f"causal-lm, full fine-tuning, global batch 4 rows of 128 tokens, {steps} steps, "
      "AdamW in float32 on the CPU, one thread per process")
    w("- two ranks talk c10d Gloo over the loopback; with zero_stage=1 each keeps and "
      "updates the AdamW moments of the parameters it owns (whole tensors, balanced by "
      "size) and broadcasts those parameters after the step")
    w(f"- each cell: the peak resident memory of that process (ru_maxrss), the median of "
      f"{reps} runs\n")
    w("| run | rank 0 | rank 1 | saved per rank | AdamW moments per rank |")
    w("| --- | ---: | ---: | ---: | --- |")
    base = results["2 ranks"]["rss"]
    for name, world, zero in runs:
        r = results[name]
        if not r["ok"]:
            w(f"| {name} | failed: {r['error'][-120:]} | | | |")
            continue
        rss = r["rss"] + [None] * (2 - len(r["rss"]))
        saved = ""
        if zero and results["2 ranks"]["ok"]:
            saved = ", ".join(f"{(b - s):.0f} MiB" for b, s in zip(base, r["rss"]))
        unsharded = f"{trainable * 8 / 1048576:.1f} MiB on every rank"
        w(f"| {name} | {rss[0]:.0f} MiB | "
          f"{'' if rss[1] is None else f'{rss[1]:.0f} MiB'} | {saved} | "
          f"{r['moments'][len('AdamW moments per rank: '):] if zero else unsharded} |")
    w("")
    w(f"AdamW in float32 keeps 8 bytes of moments per parameter beside 4 of weights and 4 "
      f"of gradients; sharded over 2 ranks the moments cost 4 bytes per parameter per "
      f"rank, so the expected saving here is {trainable * 4 / 1048576:.1f} MiB per rank. "
      "Rank 0's peak includes the moments it gathers from the other rank to write the "
      "final checkpoint (a checkpoint holds the whole optimizer state); the saving grows "
      "with the model (8 bytes x parameters x (N-1)/N per rank).")
    ok = same is not None and same <= 1e-6 and close is not None and close <= 1e-4
    w(f"Losses step by step: 2 ranks with and without sharding differ by at most "
      f"{'n/a' if same is None else f'{same:.1e}'} (must be within 1e-6), one process "
      f"and 2 ranks (the same global batches) by "
      f"{'n/a' if close is None else f'{close:.1e}'} (within 1e-4): "
      f"{'yes' if ok else 'NO'}.\n")
    return ok
