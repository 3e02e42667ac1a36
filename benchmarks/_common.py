"""Shared by the benchmark scripts: paths, and the reference bundle they measure."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "datasets"
RESULTS = ROOT / "benchmarks" / "results"


def lite0_bundle(work: Path, dataset: str = "hymenoptera") -> Path:
    """efficientnet_lite0 (real ImageNet weights) fine-tuned with the default linear probe, exported
    with --int8 (accuracy gate off: these benchmarks measure speed)."""
    from edgetl.config import ExportConfig
    from edgetl.exporter import export
    from edgetl.config import FinetuneConfig
    from edgetl.training import finetune

    run = finetune(FinetuneConfig(data=SHARED / dataset, backbone="efficientnet_lite0", out=work / "run"), force=True)
    return export(run.out, ExportConfig(int8=True, max_drop=100.0, min_agreement=0.0), force=True).path


def save(path: Path, doc: dict) -> None:
    """Write a benchmark's JSON (atomically, with edgetl's own writer) and say where."""
    from edgetl._io import write_json

    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, doc)
    print(f"wrote {path}")
