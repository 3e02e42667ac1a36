"""Bench: latency, memory, size and accuracy, as the robot runs the model. No torch needed.

``orchestrate`` (bench(): what to measure, in which order, and the bench.json it writes) calls the
measurements, one module each: ``model_rows`` (the model alone, interleaved), ``end_to_end`` (encoded
bytes -> label), ``rig`` (concurrent camera streams), ``sustained`` (minutes-long runs), ``memory``
(peak RSS), ``accuracy`` (top-1, agreement), ``torch_ref`` (eager PyTorch), ``judge`` (PASS/FAIL).
``remote`` runs a bench on a device over
ssh, ``report`` writes report.md and the plots.

    from edgetl.benchmark import bench          # also edgetl.bench / edgetl.BenchConfig
"""
import importlib

__all__ = ["bench", "BenchReport", "read_bench", "write_bench"]


def __getattr__(name: str):
    # on first use, not at import: edgetl.config reads edgetl.targets, and orchestrate reads the configs
    if name in __all__:
        return getattr(importlib.import_module(f"{__name__}.orchestrate"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
