"""Run every benchmark script and write benchmarks/RESULTS.md (one table per benchmark) and plots.

    python benchmarks/run_all.py            # runs them all (about an hour on 2 CPU cores), then writes
    python benchmarks/run_all.py --report   # only rewrites RESULTS.md from benchmarks/results/*.json

Each script also runs alone and writes its JSON to benchmarks/results/.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT  # noqa: E402

HERE = ROOT / "benchmarks"
SCRIPTS = ["int8_fidelity.py", "int8_zoo.py", "bench_fidelity.py", "bench_robot.py", "bench_robot.py --resampler opencv",
           "bench_robot.py --resampler opencv --embed", "preprocess_parity.py", "resampler.py", "sweep_targets.py", "cold_start.py", "endurance.py",
           "finetune_speed.py", "finetune_datasets.py"]


def _table(header: list[str], rows: list[list]) -> list[str]:
    fmt = lambda v: f"{v:.3g}" if isinstance(v, float) else str(v)
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]


def _int8_zoo(d: dict) -> list[str]:
    out = [f"### int8 vs fp32 per backbone (`int8_zoo.py`, {d['date']}, batch 1, {d['threads']} threads)", "",
           "Latency: random-init weights (latency does not depend on their values). `ort-defaults` is "
           "`quantize_static` with its defaults, the onnxruntime tutorial recipe.", ""]
    out += _table(["backbone", "fp32 p50 ms", "ort-defaults ms", "ratio", "edgetl int8 ms", "ratio", "edgetl choice",
                   "int8 size / fp32"],
                  [[r["backbone"], r["fp32_p50_ms"], r["ort_defaults_p50_ms"], r["ort_defaults_ratio"],
                    r["edgetl_p50_ms"], r["edgetl_ratio"], r["edgetl_choice"], r["edgetl_size_ratio"]]
                   for r in d["latency"]])
    return out + ["", "Accuracy on real photos with real weights: the int8 fidelity table above (`int8_fidelity.py`)."]


def _bench_fidelity(d: dict) -> list[str]:
    out = [f"### `edgetl bench` vs a plain onnxruntime loop per target (`bench_fidelity.py`, {d['date']})", "",
           "Each target's thread count capped at this host's cores, as bench does; the plain loop at the same "
           "threads and batch (the target's streams). Medians of alternating rounds.", ""]
    out += _table(["target", "variant", "threads (target's)", "batch", "edgetl bench p50 ms", "plain loop p50 ms",
                   "ratio", "within 5%"],
                  [[r["target"], r["variant"], f"{r['threads']} ({r['threads_target'] or 'default'})", r["batch"],
                    r["edgetl_p50_ms"], r["plain_p50_ms"], r["ratio"], r["within_5pct"]] for r in d["rows"]])
    if d.get("remote"):
        out += ["", "Through `edgetl bench --on` a throw-away OpenSSH server on 127.0.0.1, a base-only venv (no torch) "
                    "as the device; the copy is the first run's (bundle, content-addressed).", ""]
        out += _table(["target", "variant", "--on p50 ms", "local p50 ms", "ratio", "copy s", "MB sent", "bench run s"],
                      [[r["target"], r["variant"], r["remote_p50_ms"], r["local_p50_ms"], r["ratio"], r["copy_s"],
                        round(r["bytes_sent"] / 1e6, 1), r["run_s"]] for r in d["remote"]])
    return out


def _cpu(d: dict) -> str:
    """The CPU a benchmark's JSON says it ran on: model and flags."""
    return f"{d['cpu']}, {' '.join(d.get('cpu_flags', []))}"


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}%"


def _int8_fidelity(d: dict) -> list[str]:
    out = [f"### int8 fidelity: onnxruntime defaults vs edgetl before #18 vs PTQ vs QAT (`int8_fidelity.py`, "
           f"{d['date']})", "",
           "Whole val split; agreement = int8 top-1 equal to fp32's; file and p50 as ratios to fp32 (p50 timed "
           "interleaved in one process, batch 1, 2 threads). `before` is the exporter at f3e1acd on the same "
           "checkpoint (Lite0 only: Lite1/2 did not exist). QAT runs only where PTQ missed 99% on the fast kernels.", ""]
    rows = []
    for r in d["rows"]:
        for k in ("ort-defaults", "before", "ptq", "qat"):
            v = r.get(k)
            if k == "ptq" and r.get("ptq_refused"):
                rows.append([r["backbone"].replace("efficientnet_", ""), r["dataset"], r["strategy"], r["val_images"],
                             k, _pct(r["top1_fp32"]), "refused", "by --max-drop:", r["ptq_refused"].split(" (")[0],
                             "-", "-"])
            if not v:
                continue
            rows.append([r["backbone"].replace("efficientnet_", ""), r["dataset"], r["strategy"], r["val_images"], k,
                         _pct(r["top1_fp32"]), _pct(v["top1"]), _pct(v["agreement"]), v["differ"],
                         f"{v['size_ratio']:.2f}x", f"{v['p50_ratio']:.2f}x"])
    out += _table(["backbone", "dataset", "fine-tune", "val", "variant", "fp32 top-1", "int8 top-1", "agreement",
                   "differ", "file", "p50"], rows)
    out += ["", "Export wall time and what made the kept model:", ""]
    out += _table(["backbone", "dataset", "fine-tune", "PTQ export s", "PTQ method", "QAT export s", "QAT"],
                  [[r["backbone"].replace("efficientnet_", ""), r["dataset"], r["strategy"], r["ptq_export_s"],
                    r["ptq_method"], r.get("qat_export_s", "-"),
                    _qat_said(r)] for r in d["rows"]])
    return out


def _nncf_compare(d: dict) -> list[str]:
    out = [f"### edgetl int8 vs OpenVINO NNCF's PTQ on the same bundles (`nncf_compare.py`, {d['date']}, nncf "
           f"{d['nncf']}, onnxruntime {d['onnxruntime']})", "",
           "NNCF quantizes each bundle's fp32 model on the calibration images edgetl's export used, through the "
           "bundle's preprocessing; all scored on the whole val split against fp32 and timed interleaved in one "
           "process (batch 1, 2 threads). Needs `pip install nncf onnx` in its own venv, so `run_all.py` does not "
           "run it.", ""]
    rows = []
    for r in d["rows"]:
        for name, v in r["models"].items():
            rows.append([Path(r["dataset"]).name, r["val_images"], name, _pct(r["top1_fp32"]), _pct(v["top1"]),
                         _pct(v["agreement"]), v["differ"], f"{v['mean_abs_diff']:.3f}", f"{v['size_ratio']:.2f}x",
                         f"{v['p50_ratio']:.2f}x" if "p50_ratio" in v else "-", v.get("quantize_s", "-")])
    return out + _table(["dataset", "val", "model", "fp32 top-1", "int8 top-1", "agreement", "differ",
                         "mean abs logit diff", "file", "p50", "quantize s"], rows)


def _qat_said(r: dict) -> str:
    """What the QAT export did (rows measured before the benchmark kept it under "qat_info" lack it)."""
    info = r.get("qat_info")
    if not info:
        return "(not recorded)" if r.get("qat") else "-"
    hist = ", ".join(f"{100 * a:.1f}%" for a in info.get("history") or [])
    return info.get("skipped") or "; ".join(x for x in (info["method"], f"agreement by epoch {hist}" if hist else "",
                                                         info.get("dropped") or "") if x)


def _sweep_targets(d: dict) -> list[str]:
    out = [f"### `edgetl sweep` per dataset and target (`sweep_targets.py`, {d['date']}, Lite0/1/2, linear probe, "
           "export --int8, bench; targets emulated on this host)", ""]
    from edgetl.sweeps import recommend
    from edgetl.targets import get_target

    def now(r):  # the current rule on the same measured rows (the tie-break changed after some rows ran)
        best, _ = recommend([{"backbone": b, "variants": x["variants"]} for b, x in r["backbones"].items()
                             if x.get("variants")], get_target(r["target"]), 0.2)
        return f"{best['backbone'].replace('efficientnet_', '')} {best['variant']}" if best else "none meets it"

    out += _table(["dataset", "target", "cache", "sweep wall s", "recommendation (as the sweep printed it)",
                   "with the current tie-break"],
                  [[r["dataset"], r["target"], r["cache"], r["wall_s"], r["summary"], now(r)] for r in d["rows"]])
    out += ["", "Per backbone (the cold sweep of each dataset, target host; p50 on this host):", ""]
    rows = []
    for r in d["rows"]:
        if r["cache"] != "cold":
            continue
        for b, x in r["backbones"].items():
            for v, y in (x.get("variants") or {}).items():
                rows.append([r["dataset"], b.replace("efficientnet_", ""), v, y["top1"], y["agreement"], y["p50_ms"],
                             y["p90_ms"], y["size_mb"], x.get("seconds")])
    return out + _table(["dataset", "backbone", "variant", "top-1", "agreement", "p50 ms", "p90 ms", "MB",
                         "backbone s"], rows)


def _bench_robot(d: dict) -> list[str]:
    m = d["machine"]
    how = ("" if d.get("resampler", "pillow") == "pillow" else f", trained with --resampler {d['resampler']}") + \
        (", exported with --embed-preprocess (uint8 frames in, normalisation in the graph)" if d.get("embed_preprocess") else "")
    out = [f"### Bench as the robot runs it (`bench_robot.py`, {d['date']}, efficientnet_lite0 on hymenoptera{how}, "
           f"--int8; {m['cpu']}, {m['cores']} cores, {' '.join(d.get('cpu_flags', []))})", "",
           "Command: " + ("; ".join(f"`{c}` ({', '.join(p for p, x in d['commands'].items() if x == c)})"
                                    for c in dict.fromkeys(d["commands"].values())) if d.get("commands")
                           else f"`{d['command']}`") + ". Model: the model alone on a prepared tensor, batch 1" +
           (", timed in the same interleaved rounds as end to end (the ratio's denominator)"
            if any("model_p50_own_phase_ms" in r for r in d.get("end_to_end_photos") or []) else "") +
           ". End to end: camera input -> label through the device runtime (decode, resize, crop, normalize, run, "
           "softmax/top-k); p50 ms per stage. 2 threads.", ""]
    before = d.get("before", {})
    for key, what, goal in (("end_to_end_photos", "JPEG bytes of the val photos as stored", 1.5),
                            ("end_to_end_raw_1280x720", "a raw 1280x720 frame", 1.2)):
        rows = d.get(key) or []
        if not rows:
            continue
        stages = list(rows[0]["stages_p50_ms"])
        out += [f"**{what} -> label** ({d.get(key + '_images', '')}); goal: int8 end to end <= {goal}x its model:", ""]
        bkey = "e2e_p50_ms" if key == "end_to_end_photos" else "raw720_p50_ms"
        out += _table(["variant", "model p50 ms", "end to end p50 ms", "ratio", "goal met", *stages,
                       f"before ({before.get('rev', '-')}) end to end p50 ms"],
                      [[r["variant"], round(r["model_p50_ms"], 2), round(r["e2e_p50_ms"], 2), f"{r['ratio']:.2f}x",
                        "yes" if r["ratio"] <= goal else "no", *(round(r["stages_p50_ms"][s], 2) for s in stages),
                        round(before[r["variant"]][bkey], 2) if r["variant"] in before else "-"] for r in rows]) + [
            "", "(*before* here: the old code's plain predict() loop; the rows beside it are bench's interleaved "
                "rounds, where the run stage is slower than the model alone: compare before and now in the table "
                "of same loops below.)" if before else "(no *before* run in this file)", ""]
    ev = d.get("embed_vs_plain")
    if ev:
        ms = ev["median_ms"]
        out += [f"One int8 model (the plain bundle's) with and without preprocessing in the graph (`edgetl.exporter.embed`, "
                f"as `export --embed-preprocess` does), `Predictor.predict` interleaved in {ev['rounds']} rounds in one "
                f"process ({ev['inputs']}); median ms:", ""]
        out += _table(["", "plain (float input, normalize in numpy)", "embedded (uint8 frame in)", "change"],
                      [[k, round(ms[f"plain {k}"], 2), round(ms[f"embedded {k}"], 2),
                        f"{100 * (ms[f'embedded {k}'] / ms[f'plain {k}'] - 1):+.0f}%"] for k in ("model", "photo", "1280x720")])
        out += [""]
    for r in d.get("end_to_end_photos_embedded") or []:
        out += [f"Normalisation folded into the graph (`export --embed-preprocess`, an fp32-only bundle, measured before "
                f"int8 could embed it): "
                f"model p50 {r['model_p50_ms']:.2f} ms, end to end {r['e2e_p50_ms']:.2f} ms ({r['ratio']:.2f}x), "
                f"normalize stage {r['stages_p50_ms']['normalize']:.2f} ms.", ""]
    out += [f"Camera rigs at 30 FPS, 33.3 ms deadline, {d['rig_seconds']:g} s per run after "
            f"{'two probes' if 'rigs' in d.get('commands', {}) else 'a probe'} of each serving way, {d['repeats']} runs each (the verdict is the worst run's; PASS when every stream answers 99% of "
            f"its frames in time, dropped frames counted as misses):", ""]
    out += _table(["rig", "variant", "streams", "serving", "worst-stream p99 ms (worst run)", "missed (worst run)",
                   "runs: missed / worst p99", "status"],
                  [[r["rig"], r["variant"], r["streams"], r["serving"], r["worst_p99_ms"] and round(r["worst_p99_ms"], 1),
                    f"{r['missed']} of {r['captured']}",
                    "; ".join(f"{x['missed']} / {x['worst_p99_ms'] and round(x['worst_p99_ms'], 1)}" for x in r["repeats"] or []),
                    "PASS" if r["pass"] else "FAIL"] for r in d["rigs"]])
    if before:
        now = before.get("after_same_loops", {})
        out += ["", f"Before ({before['rev']}) and now, measured by the same loops in one run (plain `predict()` calls, "
                    f"p50 of 60; a worker per camera with shared or per-stream sessions, the better one, "
                    f"{d['rig_seconds']:g} s, the same 1280x720 frames):", ""]
        rows = []
        for v in ("fp32", "int8"):
            b, n = before.get(v), now.get(v)
            if not (b and n):
                continue
            rows.append([v, "model alone", round(b["model_p50_ms"], 2), round(n["model_p50_ms"], 2)])
            rows.append([v, "JPEG photo -> label", round(b["e2e_p50_ms"], 2), round(n["e2e_p50_ms"], 2)])
            rows.append([v, "1280x720 raw frame -> label", round(b["raw720_p50_ms"], 2), round(n["raw720_p50_ms"], 2)])
            for k in b["rigs_1280x720"]:
                rb, rn = b["rigs_1280x720"][k], n["rigs_1280x720"][k]
                rows.append([v, f"{k} rig, missed (worst p99 ms)",
                             f"{rb['missed']} of {rb['captured']} ({rb['worst_p99_ms'] and round(rb['worst_p99_ms'], 1)})",
                             f"{rn['missed']} of {rn['captured']} ({rn['worst_p99_ms'] and round(rn['worst_p99_ms'], 1)})"])
        out += _table(["variant", "what", f"before ({before['rev']})", "now"], rows)
    sm = d.get("streams_max_30fps_1280x720") or {}
    if sm:
        out += ["", "Streams this host sustains at 30 FPS, 33.3 ms deadline, 1280x720 raw frames (`--target robot-4cam "
                    "--streams max`): " + ", ".join(f"**{v}: {r.get('streams_max')}** (tried " + ", ".join(
                        f"{n} {'PASS' if t['pass'] else 'FAIL'}" for n, t in r.get("tried", {}).items()) + ")"
                        for v, r in sm.items()) + "."]
    return out


def _arm64_drift(d: dict) -> list[str]:
    h, dev = d["host"], d["device"]
    out = [f"### int8 and fp16 on ARM's kernels against x86's (`arm64_drift.py`, {d['date']})", "",
           f"Command: `{d['command']}` ({d['seconds'] / 60:.0f} min). Lite0 linear probe per dataset, exported with "
           f"`--int8 --fp16` on this host (int8 preset {d['rows'][0]['build']['quantization']['preset']}) and again "
           f"with `--preset arm64`; {d['images_per_dataset']} val images per dataset (class-stratified), fp16 on "
           f"{d['fp16_images_per_dataset']} of them. x86: {h['model']}, {' '.join(h['flags'])}, onnxruntime "
           f"{h.get('onnxruntime', '')}. aarch64: {dev['how'].split(' (')[0]}, QEMU_CPU=cortex-a76 (HWCAP "
           f"{dev['hwcap']['AT_HWCAP']}: asimdhp, asimddp, no i8mm), onnxruntime {dev['onnxruntime']}: ARM's arithmetic, not ARM's timing. "
           f"*agree fp32*: with the same platform's fp32; *flips*: images whose prediction differs between x86 "
           f"and aarch64.", "", d["markdown"]]
    return out


def _preprocess_parity(d: dict) -> list[str]:
    out = [f"### Preprocessing: the device's frame against the training reference (`preprocess_parity.py`, {d['date']}, "
           f"{_cpu(d)})", "",
           f"Every val photo of each dataset. *frame*: only the columns that survive the crop resampled, the default everywhere "
           f"(training, export, device); *reference*: the whole image resized, then cropped (torchvision's order). "
           f"*fast decode* (opt-in): JPEG decoded at a reduced DCT scale. Predictions: {d['classifier']}, top-1 "
           f"against the reference's. Timings: mean of the best of 5 calls on 24 photos per dataset.", ""]
    out += _table(["dataset (photos)", "frame: max grey diff", "photos differing", "max tensor diff",
                   "top-1 flips", "fast decode: max tensor diff", "top-1 flips", "resize+crop ms ref -> frame",
                   "normalize ms old -> LUT (max diff)", "decode ms -> fast decode"],
                  [[f"{r['dataset']} ({r['photos']})", r["frame_max_grey_levels"], r["frame_photos_differing"],
                    round(r["frame_max_abs_tensor_diff"], 4), r["frame_top1_flips"],
                    round(r["fast_decode_max_abs_tensor_diff"], 3), r["fast_decode_top1_flips"],
                    f"{r['mean_ms']['resize_crop_ref']:.2f} -> {r['mean_ms']['resize_crop_frame']:.2f}",
                    f"{r['mean_ms']['normalize_old']:.2f} -> {r['mean_ms']['normalize_lut']:.2f} ({r['lut_max_abs_diff']:g})",
                    f"{r['mean_ms']['decode']:.2f} -> {r['mean_ms']['decode_draft']:.2f}"] for r in d["rows"]])
    bn = d.get("before_vs_now_ms")
    if bn:
        out += ["", f"Camera input -> the model's tensor (no model), the code before #27 against now, interleaved in "
                    f"rounds in one process ({d['before_vs_now_inputs']}); median ms per call:", ""]
        out += _table(["input", "before", "now", "change"],
                      [[k, round(bn[f"{k}_before"], 2), round(bn[f"{k}_now"], 2),
                        f"{100 * (bn[f'{k}_now'] / bn[f'{k}_before'] - 1):+.0f}%"] for k in ("photo", "raw1280x720")])
    return out


def _resampler(d: dict) -> list[str]:
    out = [f"### The opencv resampler against PIL's resize (`resampler.py`, {d['date']}, {_cpu(d)}, "
           f"OpenCV {d['opencv']})", "",
           f"Command: `{d['command']}`. Lite0's default linear probe trained with each resampler (`finetune "
           f"--resampler`), exported with --int8 (gates off); val top-1 of the run, int8's top-1 and agreement with "
           f"fp32 (the export's chosen candidate).", ""]
    out += _table(["dataset", "resampler", "fp32 top-1", "int8 top-1", "int8 agreement with fp32"],
                  [[r["dataset"], r["resampler"], _pct(r["fp32_top1"]), _pct(r["int8_top1"]), _pct(r["int8_agreement"])]
                   for r in d["rows"]])
    m, g = d["median_ms"], d["pillow_vs_opencv_grey_levels"]
    out += ["", f"Camera input -> the model's tensor, interleaved in one process ({d['speed_inputs']}); median ms per "
                f"call, and how far the two frames are apart:", ""]
    out += _table(["input", "pillow ms", "opencv ms", "change", "max / mean grey levels apart"],
                  [[k, round(m[f"{k}_pillow"], 2), round(m[f"{k}_opencv"], 2),
                    f"{100 * (m[f'{k}_opencv'] / m[f'{k}_pillow'] - 1):+.0f}%", f"{g[k]['max']} / {g[k]['mean']:.2f}"]
                   for k in ("photo", "raw1280x720")])
    return out


def _cold_start(d: dict) -> list[str]:
    m = d["median"]
    out = [f"### Cold start of the device runtime (`cold_start.py`, {d['date']}, median of {len(d['runs'])})", ""]
    return out + _table(["process wall s", "import s", "load s", "first prediction s", "goal < 1 s"],
                        [[m["wall_s"], m["import_s"], m["load_s"], m["first_predict_s"], "met" if d["met"] else "missed"]])


def _endurance(d: dict) -> list[str]:
    out = [f"### Runtime endurance (`endurance.py`, {d['date']}, {d['variant']} bundle, one process)", ""]
    return out + _table(["predictions", "RSS after warm-up MB", "RSS at end MB", "growth", "predictions/s",
                         "torch imported", "goal < 5%"],
                        [[d["n"], d["rss_after_warmup_mb"], d["rss_end_mb"], f"{100 * d['growth']:+.2f}%",
                          d["predictions_per_s"], d["torch_imported"], "met" if d["met"] else "missed"]])


def _finetune_speed(d: dict) -> list[str]:
    out = [f"### Fine-tuning vs the PyTorch tutorial loop (`finetune_speed.py`, {d['date']}, {d['dataset']}, "
           f"{d['epochs']} epochs, efficientnet_lite0)", ""]
    out += _table(["method", "wall s", "best val top-1"],
                  [[k, v["wall_s"], v["best_val_acc"]] for k, v in d["results"].items()])
    out += ["", "Same epochs: the tutorial's wall time / edgetl's. Time to accuracy: the tutorial's wall time until "
                "its best val accuracy / edgetl's wall time until the same accuracy (edgetl's clock includes decoding "
                "and, for linear, the cold-cache feature extraction).", ""]
    out += _table(["pair", "same epochs", "val points vs tutorial", "tutorial's best", "time to it: tutorial s",
                   "edgetl s", "time-to-accuracy ratio", "goal"],
                  [[k, f"{v['speedup']:.1f}x", f"{v['acc_delta_points']:+.1f}", v.get("target_acc", ""),
                    v.get("tutorial_time_to_target_s", ""), v.get("edgetl_time_to_target_s", ""),
                    f"{v['time_to_accuracy_speedup']:.1f}x" if v.get("time_to_accuracy_speedup") else "n/a",
                    f">= {v['goal']:.0f}x" if "goal" in v else ""] for k, v in d["ratios"].items()])
    full, tut = d["results"].get("edgetl_full", {}), d["results"].get("tutorial_full", {})
    if full.get("warm_start") and tut:
        target = tut["best_val_acc"]
        after = next((c for c in full["curve"] if c["epoch"] > 0 and c["val_acc"] >= target - 1e-9), None)
        t_tut = next((c["elapsed_s"] for c in tut["curve"] if c["val_acc"] >= target - 1e-9), None)
        w = full["warm_start"]
        out += ["", f"edgetl full starts with its LP-FT warm start ({w['epochs']} head epochs on cached features, "
                    f"val {100 * w['val_acc']:.1f}%; that model is best.pt's first candidate, epoch 0 on the curve). "
                    + (f"Counting full-model epochs only, it reaches the tutorial's {100 * target:.1f}% at epoch "
                       f"{after['epoch']}, {after['elapsed_s']:.0f} s vs the tutorial's {t_tut:.0f} s "
                       f"({t_tut / after['elapsed_s']:.1f}x)." if after and t_tut else
                       f"Its full-model epochs alone never reach the tutorial's {100 * target:.1f}%.")]
    return out


def _finetune_datasets(d: dict) -> list[str]:
    out = [f"### Linear probe vs full fine-tuning per dataset (`finetune_datasets.py`, {d['date']}, {d['backbone']}, "
           f"default settings, {d['epochs']} epochs, cold caches)", ""]
    out += _table(["dataset", "train / val images", "linear best val", "epoch", "wall s", "full (LP-FT) best val",
                   "epoch", "wall s"],
                  [[r["dataset"], f"{r['train_images']} / {r['val_images']}", r["linear"]["best_val_acc"],
                    r["linear"]["best_epoch"], r["linear"]["wall_s"], r["full"]["best_val_acc"],
                    r["full"]["best_epoch"], r["full"]["wall_s"]] for r in d["rows"]])
    out += ["", "Epoch 0 is full's LP-FT warm start (the head trained on cached features before the backbone moves)."]
    return out


def _plots(docs: dict) -> list[str]:
    try:
        from edgetl.report.plots import plot_bars
    except ImportError:
        return []
    lines = []
    if "int8_zoo" in docs and docs["int8_zoo"]["latency"]:
        rows = docs["int8_zoo"]["latency"]
        vals = {"onnxruntime defaults": [r["ort_defaults_ratio"] for r in rows],
                "edgetl --int8": [r["edgetl_ratio"] for r in rows]}
        plot_bars([r["backbone"] for r in rows], vals, HERE / "int8_latency_ratio.png", xlabel="int8 p50 / fp32 p50 (lower is faster; 1 = fp32)",
                  title="int8 latency relative to fp32, this CPU, batch 1", ref=1.0)
        lines = ["", "![int8 latency ratio](int8_latency_ratio.png)"]
    return lines


RENDER = {"int8_fidelity": _int8_fidelity, "nncf_compare": _nncf_compare, "int8_zoo": _int8_zoo, "bench_fidelity": _bench_fidelity,
          "bench_robot": _bench_robot, "bench_robot_opencv": _bench_robot,
          "bench_robot_opencv_embed": _bench_robot, "preprocess_parity": _preprocess_parity,
          "resampler": _resampler, "arm64_drift": _arm64_drift,
          "sweep_targets": _sweep_targets, "cold_start": _cold_start,
          "endurance": _endurance, "finetune_speed": _finetune_speed,
          "finetune_datasets": _finetune_datasets}


def write_report() -> Path:
    from edgetl.benchmark.orchestrate import machine_info

    docs = {p.stem: json.loads(p.read_text()) for p in sorted(RESULTS.glob("*.json"))}
    m = machine_info()
    lines = ["# Benchmark results", "",
             f"Written by `benchmarks/run_all.py` on {time.strftime('%Y-%m-%d')}: {m['cpu']}, {m['cores']} cores, "
             f"VNNI: {m['isa']['vnni'] or 'no'}, onnxruntime {m['onnxruntime']}, Python {platform.python_version()}. "
             "Each table's own date is when its script ran; the JSON is in `benchmarks/results/`.", ""]
    for name in RENDER:
        if name in docs:
            lines += RENDER[name](docs[name]) + [""]
        else:
            lines += [f"### {name}: not run yet (`python benchmarks/{name}.py`)", ""]
    lines += _plots(docs)
    out = HERE / "RESULTS.md"
    out.write_text("\n".join(lines) + "\n")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true", help="only rewrite RESULTS.md from the JSON files")
    a = ap.parse_args(argv)
    if not a.report:
        for s in SCRIPTS:
            print(f"== {s}", flush=True)
            script, *args = s.split()
            subprocess.run([sys.executable, str(HERE / script), *args], check=True, cwd=ROOT)
    print(f"wrote {write_report()}")


if __name__ == "__main__":
    main()
