"""Shared by the benchmark scripts: paths, and the reference bundle they measure."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "benchmarks" / "results"


def lite0_bundle(work: Path, dataset: str = "hymenoptera", fp16: bool = False, resampler: str = "pillow") -> Path:
    """efficientnet_lite0 (real ImageNet weights) fine-tuned with the default linear probe, exported
    with --int8 (accuracy gate off: these benchmarks measure speed), and --fp16 when asked; images resized
    by ``resampler`` (finetune --resampler)."""
    from edgetl.config import FinetuneConfig
    from edgetl.training import finetune

    run = finetune(FinetuneConfig(data=SHARED / dataset, backbone="efficientnet_lite0", out=work / "run",
                                  resampler=resampler), force=True)
    return speed_export(run.out, fp16=fp16)


def speed_export(run: Path, **cfg) -> Path:
    """The run exported with --int8, accuracy gate off (these benchmarks measure speed), and ``cfg``'s other
    ExportConfig fields (e.g. embed_preprocess=True, out=...)."""
    from edgetl.config import ExportConfig
    from edgetl.exporter import export

    return export(run, ExportConfig(int8=True, max_drop=100.0, min_agreement=0.0, **cfg), force=True).path


def interleaved_median_ms(fns: dict, rounds: int) -> dict[str, float]:
    """{name: (fn, items)} -> {name: median ms of fn(item)}, every fn over its items in turn, ``rounds`` times
    in one process: a VM's drift between two separate runs is larger than many differences worth measuring."""
    import time

    ts = {k: [] for k in fns}
    for _ in range(rounds):
        for k, (fn, items) in fns.items():
            for it in items:
                t = time.perf_counter()
                fn(it)
                ts[k].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in ts.items()}


def save(path: Path, doc: dict) -> None:
    """Write a benchmark's JSON (atomically, with edgetl's own writer) and say where."""
    from edgetl._io import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)
    print(f"wrote {path}")


def int8_figures(model: Path, x: np.ndarray, y: np.ndarray, ref: np.ndarray, fp32_size: int, threads: int = 2) -> dict:
    """An int8 model against fp32 on (x, y): top-1, top-1 agreement with ``ref`` (fp32's logits), how many
    images differ, mean |logit difference|, and its file size as a ratio to fp32's."""
    from edgetl.quantization.recipes import logits

    q = logits(model, x, threads)
    return {"top1": float(np.mean(q.argmax(1) == y)), "agreement": float(np.mean(q.argmax(1) == ref.argmax(1))),
            "differ": int(np.sum(q.argmax(1) != ref.argmax(1))), "mean_abs_diff": float(np.mean(np.abs(q - ref))),
            "size_ratio": model.stat().st_size / fp32_size}


def ort_defaults(fp32: Path, out: Path, calib: np.ndarray) -> None:
    """The onnxruntime tutorial recipe: quantize_static with its defaults."""
    from onnxruntime.quantization import quantize_static

    from edgetl.quantization.recipes import BatchReader, batches

    quantize_static(str(fp32), str(out), BatchReader("input", batches(calib, 16)))
