"""edgetl: fine-tune a pretrained image backbone, export it to int8 ONNX, prove it, bench it.

    import edgetl
    run = edgetl.finetune(edgetl.FinetuneConfig(data="photos/", backbone="efficientnet_lite0"))
    bundle = edgetl.export(run.out, edgetl.ExportConfig(int8=True))
    report = edgetl.bench(bundle.path)
    from edgetl.runtime import Predictor       # device side: no torch

The tree, top to bottom as the data flows (README "Layout"): ``runtime/`` is the device side
(torch-free, imports nothing else of edgetl); ``data/`` -> ``zoo/`` -> ``training/`` -> ``exporter/``
-> ``quantization/`` -> ``benchmark/`` are the stages; ``report/`` plots and tables; ``cli/`` the
command; ``sweeps`` and ``demo`` run whole chains. Stage packages are named for their stage, never
like the functions exported here, so ``edgetl.finetune`` stays the function however often it is
called and whatever was imported before. Heavy modules load on first use, so ``import edgetl``
(and the device runtime) stay light.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "finetune": ("edgetl.training.loop", "finetune"),
    "FinetuneConfig": ("edgetl.config", "FinetuneConfig"),
    "RunResult": ("edgetl.training.loop", "RunResult"),
    "export": ("edgetl.exporter.export_run", "export"),
    "ExportConfig": ("edgetl.config", "ExportConfig"),
    "Bundle": ("edgetl.exporter.export_run", "Bundle"),
    "bench": ("edgetl.benchmark.orchestrate", "bench"),
    "BenchConfig": ("edgetl.config", "BenchConfig"),
    "BenchReport": ("edgetl.benchmark.orchestrate", "BenchReport"),
    "sweep": ("edgetl.sweeps", "sweep"),
    "SweepConfig": ("edgetl.sweeps", "SweepConfig"),
    "Predictor": ("edgetl.runtime.predictor", "Predictor"),
    "EdgetlError": ("edgetl.runtime.errors", "EdgetlError"),
}


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        value = getattr(importlib.import_module(mod), attr)
        globals()[name] = value  # later look-ups skip __getattr__
        return value
    raise AttributeError(f"module 'edgetl' has no attribute '{name}'")


__all__ = ["__version__", *_LAZY]
