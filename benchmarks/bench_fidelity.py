"""Does `edgetl bench` measure what a plain onnxruntime loop measures, for every CPU target profile,
locally and through `--on` a device over ssh? (issues #7, #19)

    python benchmarks/bench_fidelity.py [--bundle DIR] [--rounds 3] [--targets host,rpi4,rpi5,x86-ipc]
                                        [--no-remote] [--json PATH]

For each target profile and each variant of a bundle (default: efficientnet_lite0 fine-tuned on
../shared/datasets/hymenoptera, exported with --int8), alternate rounds of `edgetl bench --target T`
(the Python API, same as the CLI: threads capped at this host's cores, variants interleaved) and of
the 20-line loop below at the same thread count and batch (the target's streams). Report both
p50s and their ratio (goal: within 5%). Then the same bench through `--on` a throw-away OpenSSH
server on 127.0.0.1 with a base-only venv (no torch) as the device: the copy time of the first
run, the copy of a second run (nothing to send), and each variant's p50 against the local bench.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _common import RESULTS, ROOT, lite0_bundle, save  # noqa: E402


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


def local_rows(bundle: Path, targets: list[str], rounds: int, tmp: Path) -> list[dict]:
    from edgetl.benchmark import bench
    from edgetl.benchmark.judge import plan_threads
    from edgetl.runtime.bundle import read_manifest
    from edgetl.config import BenchConfig
    from edgetl.targets import get_target
    from edgetl.runtime.cpu import cpu_info

    manifest = read_manifest(bundle)
    rows = []
    for tname in targets:
        t = get_target(tname)
        threads, _ = plan_threads(t, None, cpu_info()["cores"])
        shape = (t.streams, 3, manifest.preprocess.crop, manifest.preprocess.crop)
        ours: dict[str, list] = {v: [] for v in manifest.variants}
        plain: dict[str, list] = {v: [] for v in manifest.variants}
        for r in range(rounds):
            rep = bench(bundle, BenchConfig(target=tname, min_runs=300, min_time=0.0, rss=False, torch_reference=False,
                                            out=tmp / f"{tname}{r}"))
            for v, f in manifest.variants.items():
                ours[v].append(rep.variants[v]["latency"]["p50_ms"])
                plain[v].append(float(np.percentile(plain_loop(str(bundle / f), shape, threads), 50)))
        for v in manifest.variants:
            o, p = float(np.median(ours[v])), float(np.median(plain[v]))
            rows.append({"target": tname, "variant": v, "threads_target": t.threads, "threads": threads,
                         "batch": t.streams, "edgetl_p50_ms": o, "plain_p50_ms": p, "ratio": o / p,
                         "within_5pct": bool(abs(o / p - 1) <= 0.05),
                         "rounds": {"edgetl_p50_ms": ours[v], "plain_p50_ms": plain[v]}})
            print(f"{tname:8s} {v:5s} threads {threads} (target {t.threads}) edgetl {o:7.3f} ms  plain {p:7.3f} ms  "
                  f"ratio {o / p:.3f}", flush=True)
    return rows


def remote_rows(bundle: Path, targets: list[str], tmp: Path) -> list[dict]:
    """The same benches through `--on` 127.0.0.1 (copy time, and p50 against a local run)."""
    from sshd_server import local_sshd

    from edgetl.benchmark import bench
    from edgetl.config import BenchConfig
    from edgetl.benchmark.remote import Remote, bench_on

    venv = tmp / "device-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], check=True, capture_output=True)
    (tmp / "sshd").mkdir()
    rows = []
    with local_sshd(tmp / "sshd") as server:
        opts = tuple(o.split("=", 1)[1] for o in server.options())
        dev = Remote(server.host, opts, edgetl=str(venv / "bin" / "edgetl"), cache=str(tmp / "device-cache"))
        for tname in targets:
            cfg = dict(target=tname, min_runs=300, min_time=0.0, rss=False, torch_reference=False)
            t0 = time.perf_counter()
            far = bench_on(dev, bundle, BenchConfig(**cfg, out=tmp / f"r-{tname}"))
            first_wall = time.perf_counter() - t0
            near = bench(bundle, BenchConfig(**cfg, out=tmp / f"l-{tname}"))
            doc = far.data
            sent = __import__("json").loads((far.path / "bench.json").read_text())["remote"]
            for v in far.variants:
                o, loc = far.variants[v]["latency"]["p50_ms"], near.variants[v]["latency"]["p50_ms"]
                rows.append({"target": tname, "variant": v, "remote_p50_ms": o, "local_p50_ms": loc, "ratio": o / loc,
                             "copy_s": sent["copy_s"], "bytes_sent": sent["bytes_sent"], "files_sent": sent["sent"],
                             "run_s": sent["run_s"], "wall_s": round(first_wall, 2),
                             "measured_on": doc.get("measured_on")})
                print(f"--on {tname:8s} {v:5s} remote {o:7.3f} ms  local {loc:7.3f} ms  ratio {o / loc:.3f}  "
                      f"copy {sent['copy_s']:.2f} s ({sent['bytes_sent'] / 1e6:.1f} MB, {sent['sent']} files)",
                      flush=True)
    return rows


def main(argv=None) -> dict:
    from edgetl.runtime.cpu import host_isa

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--targets", default="host,rpi4,rpi5,x86-ipc")
    ap.add_argument("--no-remote", action="store_true")
    ap.add_argument("--json", type=Path, default=RESULTS / "bench_fidelity.json")
    a = ap.parse_args(argv)
    targets = a.targets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bundle = a.bundle or lite0_bundle(tmp)
        rows = local_rows(bundle, targets, a.rounds, tmp)
        remote = [] if a.no_remote else remote_rows(bundle, targets, tmp)
    doc = {"benchmark": "bench_fidelity", "date": time.strftime("%Y-%m-%d"), "host": host_isa(),
           "machine": platform.machine(), "rows": rows, "remote": remote}
    save(a.json, doc)
    return doc


if __name__ == "__main__":
    main()
