"""Does `edgetl bench` measure what a plain onnxruntime loop measures? (issue #7)

    python benchmarks/bench_fidelity.py [--bundle DIR] [--rounds 3] [--json PATH]

For each variant of a bundle (default: efficientnet_lite0 fine-tuned on ../shared/datasets/hymenoptera,
exported with --int8), alternate rounds of `edgetl bench --target host` (the Python API, same as the
CLI) and of the 20-line loop below, with the same model, session options (2 intra-op threads), input
shape and batch 1. Report both p50s, their ratio (goal: within 5%) and each side's coefficient of
variation.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, lite0_bundle, save  # noqa: E402

THREADS = 2


def plain_loop(model: str, shape: tuple, threads: int, warmup: int = 10, runs: int = 300) -> list[float]:
    """What a careful engineer writes by hand: one session, fixed input, perf_counter around run()."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    for _ in range(warmup):
        sess.run(None, {name: x})
    ts = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {name: x})
        ts.append((time.perf_counter() - t) * 1e3)
    return ts


def main(argv=None) -> dict:
    from edgetl.bench import BenchConfig, bench
    from edgetl.bundle import read_manifest
    from edgetl.targets import host_isa

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, default=RESULTS / "bench_fidelity.json")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = a.bundle or lite0_bundle(Path(tmp))
        manifest = read_manifest(bundle)
        rows = []
        for variant, fname in manifest.variants.items():
            model = bundle / fname
            ours, plain = [], []
            for r in range(a.rounds):
                rep = bench(model, BenchConfig(target="host", threads=THREADS, min_runs=300, min_time=0.0,
                                               rss=False, torch_reference=False, out=Path(tmp) / f"b{variant}{r}"))
                lat = rep.variants[next(iter(rep.variants))]["latency"]
                shape = (1, 3, manifest.preprocess.crop, manifest.preprocess.crop)
                ts = plain_loop(str(model), shape, THREADS)
                ours.append((lat["p50_ms"], lat["cv"]))
                plain.append((float(np.percentile(ts, 50)), float(np.std(ts) / np.mean(ts))))
            o, p = np.median([x[0] for x in ours]), np.median([x[0] for x in plain])
            rows.append({"variant": variant, "edgetl_p50_ms": float(o), "plain_p50_ms": float(p),
                         "ratio": float(o / p), "within_5pct": bool(abs(o / p - 1) <= 0.05),
                         "edgetl_cv": float(np.median([x[1] for x in ours])),
                         "plain_cv": float(np.median([x[1] for x in plain])),
                         "rounds": {"edgetl_p50_ms": [x[0] for x in ours], "plain_p50_ms": [x[0] for x in plain]}})
            r = rows[-1]
            print(f"{variant:5s} edgetl bench p50 {o:7.3f} ms (CV {r['edgetl_cv']:.3f})  plain loop p50 {p:7.3f} ms "
                  f"(CV {r['plain_cv']:.3f})  ratio {r['ratio']:.3f}  {'OK' if r['within_5pct'] else 'OUTSIDE 5%'}",
                  flush=True)
    doc = {"benchmark": "bench_fidelity", "date": time.strftime("%Y-%m-%d"), "host": host_isa(),
           "machine": platform.machine(), "threads": THREADS, "rows": rows}
    save(a.json, doc)
    return doc


if __name__ == "__main__":
    main()
