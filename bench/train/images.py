"""Part 7 of bench/train: the image presets (preset:cnn-small and
preset:vit-tiny) against the PyTorch reference, on the handwritten digits
./run setup writes: a correctness check (same weights, 3 steps, losses and
final weights) and samples/s side by side. Called from bench.py."""
import os
import shutil
import statistics

BATCH, LR, WD, CLIP, SEED, CHECK_LR = 32, 1e-3, 0.01, 1.0, 42, 1e-3


def image_section(ctx, w, lathe_spec, lathe_events, reference, py, ref):
    a, log, work = ctx["a"], ctx["log"], ctx["work"]
    binary, assets, threads = ctx["binary"], ctx["assets"], ctx["threads"]
    # The 2,000 validation pictures: enough for the timed steps, quick to load.
    data = os.path.join(assets, "digits", "validation")
    if not os.path.isdir(os.path.join(data, "9")):
        log(f"images: {data} missing (./run setup); part 7 skipped")
        w("### 7. Image presets\n\nSkipped: the digits are missing (./run setup).\n")
        return False
    steps, reps = (2, 1) if a.smoke else (10, 1) if a.quick else (30, 3)
    import reference as refmod
    ok, table, checks_out = True, [], []
    for preset in ("preset:cnn-small", "preset:vit-tiny"):
        tag = preset.split(":")[1]
        # Initial weights with the 10-class head: one step at learning rate 0.
        spec = lathe_spec(f"{work}/{tag}-init.json", preset, data, assets, 1,
                          threads, LR, 1.0, 1, task="image-classification",
                          batch=BATCH)
        ev = lathe_events(binary, spec, f"{work}/{tag}-init")
        ckpt = [e for e in ev if e["type"] == "checkpoint"][-1]["dir"]
        init_dir = f"{work}/{tag}-init-model"
        shutil.rmtree(init_dir, ignore_errors=True)
        os.makedirs(init_dir)
        for f in ("model.safetensors", "config.json"):
            shutil.copy(os.path.join(ckpt, f), init_dir)

        log(f"images: {tag} correctness check (3 steps, lr {CHECK_LR}, both trainers)")
        spec = lathe_spec(f"{work}/{tag}-check.json", init_dir, data, assets, 3,
                          threads, CHECK_LR, 0.0, 1, task="image-classification",
                          batch=BATCH)
        ev = lathe_events(binary, spec, f"{work}/{tag}-check")
        lathe_losses = [e["loss"] for e in ev if e["type"] == "train"]
        lathe_final = [e for e in ev if e["type"] == "checkpoint"][-1]["dir"]
        ref_final = f"{work}/{tag}-reference-final.safetensors"
        common = ["--task", "image-classification", "--model", init_dir,
                  "--data", data, "--batch-size", BATCH, "--weight-decay", WD,
                  "--max-grad-norm", CLIP, "--seed", SEED, "--threads", threads]
        check_args = ["train"] + common + ["--steps", 3, "--lr", CHECK_LR,
                                           "--warmup-ratio", 0,
                                           "--save-final", ref_final]
        rc = reference(check_args)
        lw = refmod.read_safetensors(os.path.join(lathe_final, "model.safetensors"))
        rw = refmod.read_safetensors(ref_final)
        w0 = refmod.read_safetensors(os.path.join(init_dir, "model.safetensors"))
        max_w_diff = max((lw[k] - rw[k]).abs().max().item() for k in lw)
        max_update = max((lw[k] - w0[k]).abs().max().item() for k in lw)
        diffs = [abs(x - y) for x, y in zip(lathe_losses, rc["losses"])]
        checks = {
            "all 3 losses |diff| <= 1e-4": len(diffs) == 3 and max(diffs) <= 1e-4,
            "final weights max |diff| <= 1e-4": max_w_diff <= 1e-4,
        }
        passed = all(checks.values())
        ok = ok and passed
        log(f"images: {tag} correctness: {'PASS' if passed else 'FAIL'} {checks}")
        checks_out.append((preset, lathe_losses, rc["losses"], max_w_diff,
                           max_update, checks))
        ctx["commands"].append(f"{binary} --spec {work}/{tag}-check.json --out {work}/{tag}-check")
        ctx["commands"].append(" ".join([py, ref] + [str(x) for x in check_args]))

        time_spec = lathe_spec(f"{work}/{tag}-time.json", init_dir, data, assets,
                               steps, threads, LR, 0.0, steps,
                               task="image-classification", batch=BATCH)
        time_args = ["train"] + common + ["--steps", steps, "--lr", LR,
                                          "--warmup-ratio", 0]
        l_sps, r_sps = [], []
        for r in range(reps):
            log(f"images: {tag} timed run {r + 1}/{reps}: lathe-train, {steps} steps")
            ev = lathe_events(binary, time_spec, f"{work}/{tag}-time")
            l_sps.append([e for e in ev if e["type"] == "train"][-1]["samples_per_second"])
            log(f"images: {tag} timed run {r + 1}/{reps}: reference, {steps} steps")
            r_sps.append(reference(time_args)["samples_per_second"])
        table.append((preset, statistics.median(l_sps), statistics.median(r_sps),
                      statistics.median([x / y for x, y in zip(l_sps, r_sps)])))
        ctx["commands"].append(f"{binary} --spec {work}/{tag}-time.json --out {work}/{tag}-time")
        ctx["commands"].append(" ".join([py, ref] + [str(x) for x in time_args]))

    w("### 7. Image presets\n")
    w(f"- data: the handwritten digits of ./run setup (validation folder, 2,000 "
      f"32x32 PNGs, 10 classes), batch {BATCH}, AdamW lr {LR} wd {WD} clip {CLIP}, "
      f"seed {SEED}, {steps} steps per run, first step excluded, {reps} run(s) each; "
      f"the reference decodes the PNGs itself\n")
    w("| model | Lathe samples/s | reference samples/s | ratio |")
    w("| --- | ---: | ---: | ---: |")
    for preset, l, r, ratio in table:
        w(f"| {preset} | {l:.1f} | {r:.1f} | {ratio:.3f} |")
    w("")
    for preset, ll, rl, wd, upd, checks in checks_out:
        w(f"#### Correctness, {preset}: {'PASS' if all(checks.values()) else 'FAIL'}\n")
        w("| step | Lathe loss | reference loss | abs diff |")
        w("| ---: | ---: | ---: | ---: |")
        for i, (x, y) in enumerate(zip(ll, rl)):
            w(f"| {i + 1} | {x:.7f} | {y:.7f} | {abs(x - y):.2e} |")
        w("")
        w(f"- final weights: max |Lathe - reference| = {wd:.2e} (largest update {upd:.2e})")
        for name, passed in checks.items():
            w(f"- {'pass' if passed else 'FAIL'}: {name}")
        w("")
    return ok
