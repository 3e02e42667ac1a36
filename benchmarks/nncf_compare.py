"""edgetl's int8 PTQ against OpenVINO NNCF's (`nncf.quantize`, ONNX backend) on the same bundles (issue #18).

    pip install nncf onnx          # in a separate venv; the ONNX backend needs no torch
    python benchmarks/nncf_compare.py BUNDLE [BUNDLE ...] [--data DATASET] [--rounds 15] [--json PATH]

The bundles of benchmarks/results/nncf_compare.json (edgetl's own venv, default settings):

    edgetl finetune ../shared/datasets/trashnet --out runs/trash && edgetl export runs/trash --int8
    edgetl finetune ../shared/datasets/hymenoptera --out runs/hymen && edgetl export runs/hymen --int8

Each BUNDLE is an `edgetl export --int8` folder. Its fp32 model.onnx is quantized by NNCF three ways,
on the very calibration images edgetl's export used (the run's train split, seeded and class-stratified,
as many as export.json records; subset_size = that count), fed through the bundle's own preprocessing:

  nncf          nncf.quantize defaults (preset None = PERFORMANCE for a CNN: symmetric int8 weights
                and activations, fast bias correction)
  nncf-mixed    preset=MIXED (asymmetric activations)
  nncf-bc       defaults with fast_bias_correction=False (the full, layer-by-layer BiasCorrection)
  edgetl        the bundle's own model.int8.onnx

All are scored against the fp32 model on the whole val split (the run's, from run.json, or --data's).
Columns: top-1; agree = share of images whose top-1 equals fp32's; differ = how many do not;
|diff| = mean |logit - fp32 logit|; size = file size / fp32's; p50 = median latency / fp32's (batch 1,
2 threads, interleaved rounds: edgetl.runtime.timing); s = NNCF's quantize wall time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, int8_figures, save  # noqa: E402

THREADS = 2
VARIANTS = {"nncf": {}, "nncf-mixed": {"preset": "MIXED"}, "nncf-bc": {"fast_bias_correction": False}}


def _inputs(samples, pp, where: str) -> np.ndarray:
    """The bundle's model inputs for ``samples`` (unreadable images dropped, as the export does)."""
    from edgetl.data import ImageCache, validate

    cache = ImageCache()
    samples, _ = validate(samples, pp, cache, where=where)
    frames = cache.frames(samples, pp)
    return frames if pp.layout == "NHWC-uint8" else pp.normalize(frames)


def load(bundle: Path, data: Path | None):
    """(manifest, export.json, calibration inputs, val inputs, val labels), all as the export saw them."""
    from edgetl.runtime.bundle import read_manifest, verify_files
    from edgetl.data import eval_samples
    from edgetl._config import from_dict
    from edgetl.config import ExportConfig
    from edgetl.exporter.int8 import calibration_samples as _calibration_samples

    m = read_manifest(bundle)
    verify_files(bundle, m)
    exp = json.loads((bundle / "export.json").read_text())
    cfg, q = exp["config"], exp["quantization"]
    run = Path(exp["checkpoint"]).parent
    val, _ = eval_samples(run, m.labels, data, seed=cfg["seed"])
    # the export's own draw (classes interleaved); the chosen recipe calibrated on the first
    # quantization.calib_size of them
    ecfg = from_dict(ExportConfig, cfg, source=str(bundle / "export.json"))
    ecfg = dataclasses.replace(ecfg, calib_data=ecfg.calib_data or data)
    src = types.SimpleNamespace(run_dir=run, labels=list(m.labels))
    picked, where = _calibration_samples(src, ecfg, ecfg.calib_draw)
    calib = _inputs(picked, m.preprocess, str(where))[: q["calib_size"]]
    return m, exp, calib, _inputs(val, m.preprocess, "val"), np.array([s.label for s in val])


def nncf_quantize(fp32: Path, out: Path, calib: np.ndarray, input_name: str, **kw) -> float:
    """nncf.quantize (ONNX backend) with ``kw``, one image per calibration item; its wall time."""
    import nncf
    import onnx

    if "preset" in kw:
        kw["preset"] = getattr(nncf.QuantizationPreset, kw["preset"])
    ds = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda b: {input_name: b})
    t = time.time()
    model = nncf.quantize(onnx.load(str(fp32)), ds, subset_size=len(calib), **kw)
    wall = time.time() - t
    onnx.save(model, str(out))
    return wall


def one(bundle: Path, data: Path | None, work: Path, rounds: int, variants: list[str]) -> dict:
    from edgetl.quantization.recipes import logits
    from edgetl.runtime.timing import interleaved_latency

    m, exp, calib, x, y = load(bundle, data)
    fp32, fp32_size = bundle / m.model_file("fp32"), (bundle / m.model_file("fp32")).stat().st_size
    ref = logits(fp32, x, THREADS)
    row = {"bundle": str(bundle), "backbone": m.backbone, "dataset": exp["parity"]["fp32"]["images"],
           "val_images": len(y), "calib_images": len(calib), "top1_fp32": float(np.mean(ref.argmax(1) == y)),
           "models": {"edgetl": {"method": exp["quantization"]["method"]}}}
    models = {"edgetl": bundle / m.model_file("int8")}
    for name in variants:
        models[name] = work / f"{name}.onnx"
        wall = nncf_quantize(fp32, models[name], calib, m.input_name, **VARIANTS[name])
        row["models"][name] = {"settings": {k: str(v) for k, v in VARIANTS[name].items()}, "quantize_s": round(wall, 1)}
    for name, path in models.items():
        row["models"][name].update(int8_figures(path, x, y, ref, fp32_size, THREADS))
    if rounds:
        ms = interleaved_latency([fp32, *models.values()], x[:1], rounds=rounds, threads=THREADS, budget_s=0.5)
        row["fp32_p50_ms"] = ms[0]
        for name, t in zip(models, ms[1:]):
            row["models"][name].update(p50_ms=t, p50_ratio=t / ms[0])
    return row


def table(row: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{row['backbone']} on {Path(row['dataset']).name}: fp32 top-1 {100 * row['top1_fp32']:.1f}% "
                    f"({row['val_images']} val images, {row['calib_images']} calibration)")
    for c in ("model", "top-1 %", "agree %", "differ", "|diff|", "size", "p50", "s"):
        t.add_column(c, justify="left" if c == "model" else "right")
    for name, r in row["models"].items():
        t.add_row(name, f"{100 * r['top1']:.1f}", f"{100 * r['agreement']:.1f}", str(r["differ"]),
                  f"{r['mean_abs_diff']:.3f}", f"{r['size_ratio']:.2f}x",
                  f"{r['p50_ratio']:.2f}x" if "p50_ratio" in r else "-", f"{r.get('quantize_s', '-')}")
    Console().print(t)


def main(argv=None) -> dict:
    import nncf
    import onnxruntime

    from edgetl.runtime.cpu import host_isa

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, help="dataset folder (default: the one the bundle's run.json names)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="NNCF variants to run")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (0: no timing)")
    ap.add_argument("--json", type=Path, default=RESULTS / "nncf_compare.json")
    a = ap.parse_args(argv)
    logging.getLogger().setLevel(logging.ERROR)
    doc = {"benchmark": "nncf_compare", "date": time.strftime("%Y-%m-%d"), "host": host_isa(),
           "machine": platform.machine(), "threads": THREADS, "nncf": nncf.__version__,
           "onnxruntime": onnxruntime.__version__, "timing": f"interleaved rounds, {a.rounds} per model", "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, b in enumerate(a.bundles):
            work = Path(tmp) / str(i)
            work.mkdir()
            doc["rows"].append(one(b, a.data, work, a.rounds, a.variants.split(",")))
            table(doc["rows"][-1])
            save(a.json, doc)  # after every bundle: a crash keeps what was measured
    return doc


if __name__ == "__main__":
    main()
