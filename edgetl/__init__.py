"""edgetl: fine-tune a pretrained image backbone, export it to int8 ONNX, prove it, bench it.

    import edgetl
    run = edgetl.finetune(edgetl.FinetuneConfig(data="photos/", backbone="efficientnet_lite0"))
    bundle = edgetl.export(run.out, edgetl.ExportConfig(int8=True))
    report = edgetl.bench(bundle.path)
    from edgetl.runtime import Predictor       # device side: no torch

Heavy modules load on first use, so ``import edgetl`` (and the device runtime) stay light.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "finetune": ("edgetl.finetune", "finetune"),
    "FinetuneConfig": ("edgetl.finetune", "FinetuneConfig"),
    "RunResult": ("edgetl.finetune", "RunResult"),
    "export": ("edgetl.export", "export"),
    "ExportConfig": ("edgetl.export", "ExportConfig"),
    "Bundle": ("edgetl.export", "Bundle"),
    "bench": ("edgetl.bench", "bench"),
    "BenchConfig": ("edgetl.bench", "BenchConfig"),
    "BenchReport": ("edgetl.bench", "BenchReport"),
    "Predictor": ("edgetl.runtime", "Predictor"),
    "EdgetlError": ("edgetl.errors", "EdgetlError"),
}


def __getattr__(name: str):
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    raise AttributeError(f"module 'edgetl' has no attribute '{name}'")


__all__ = ["__version__", *_LAZY]
