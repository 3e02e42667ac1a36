"""`edgetl bench` as the robot runs it (issue #21): model vs end-to-end, camera rigs, the streams this
host sustains, and a sustained run's drift.

    python benchmarks/bench_robot.py [--bundle DIR] [--rig-seconds 10] [--sustained 600] [--max-streams 8]
                                     [--json PATH]

On efficientnet_lite0 fine-tuned on ../shared/datasets/hymenoptera (linear probe, real ImageNet weights),
exported with --int8 --fp16, through the Python API (what the CLI calls), the val photos as data:

1. host, single-stream: each variant's model p50 against its end-to-end p50 (JPEG bytes -> label through
   the device runtime), and where the end-to-end time goes.
2. The vehicle-6cam and robot-4cam rigs on this host: per-stream p99, frames missed, which session mode.
3. The streams this host sustains at 30 FPS (deadline 33.3 ms): the largest N whose camera-rig passes,
   N = 1, 2, ... until every variant fails.
4. A sustained run (--sustained seconds, default 600): p50 per interval, drift first -> last interval.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED, lite0_bundle, save  # noqa: E402


def _rig_row(target: str, v: str, row: dict) -> dict:
    rig = row["rig"]
    p99 = sorted(s["p99_ms"] for s in rig["streams"] if s["p99_ms"] is not None)
    return {"target": target, "variant": v, "streams": rig["streams_n"], "fps": rig["fps"], "mode": rig["mode"],
            "threads_per_session": rig["threads_per_session"], "worst_p99_ms": rig["worst_p99_ms"],
            "median_stream_p99_ms": p99[len(p99) // 2] if p99 else None, "missed": rig["missed"],
            "captured": rig["captured"], "dropped": sum(s["dropped"] for s in rig["streams"]),
            "late": sum(s["late"] for s in rig["streams"]), "achieved_fps_per_stream":
            sum(s["fps"] for s in rig["streams"]) / len(rig["streams"]), "pass": rig["pass"]}


def main(argv=None) -> None:
    from edgetl.benchmark import bench, machine_info
    from edgetl.config import BenchConfig

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, help="a bundle (default: Lite0 on hymenoptera, exported here)")
    ap.add_argument("--rig-seconds", type=float, default=10.0)
    ap.add_argument("--sustained", type=float, default=600.0)
    ap.add_argument("--max-streams", type=int, default=8)
    ap.add_argument("--json", type=Path, default=RESULTS / "bench_robot.json")
    a = ap.parse_args(argv)
    data = SHARED / "hymenoptera" / "val"
    work = Path(tempfile.mkdtemp(prefix="edgetl-robot-"))
    t0 = time.time()
    bundle = a.bundle or lite0_bundle(work, fp16=True)
    print(f"bundle {bundle} ({time.time() - t0:.0f} s)", flush=True)
    quiet = dict(rss=False, torch_reference=False)

    # 1. model vs end-to-end
    r = bench(bundle, BenchConfig(target="host", data=data, min_runs=200, min_time=5.0, rss=False, out=work / "e2e"))
    e2e = []
    for v, row in r.variants.items():
        if v == "torch" or not row.get("end_to_end"):
            continue
        e = row["end_to_end"]
        e2e.append({"variant": v, "model_p50_ms": row["latency"]["p50_ms"], "e2e_p50_ms": e["latency"]["p50_ms"],
                    "model_share": e["model_share"], "stages_mean_ms": e["stages_mean_ms"],
                    "stages_p50_ms": e["stages_p50_ms"],
                    "unaccounted_ms": e["unaccounted_ms"], "runs": e["latency"]["runs"]})
        print(f"{v}: model p50 {row['latency']['p50_ms']:.2f} ms, end-to-end {e['latency']['p50_ms']:.2f} ms "
              f"(model {100 * e['model_share']:.0f}%)", flush=True)
    images = r.data["images"]

    # 2. the rigs as profiled
    rigs = []
    for target in ("vehicle-6cam", "robot-4cam"):
        rep = bench(bundle, BenchConfig(target=target, data=data, min_runs=10, min_time=0.0, end_to_end=False,
                                        rig_seconds=a.rig_seconds, out=work / target, **quiet))
        for v, row in rep.variants.items():
            rigs.append(_rig_row(target, v, row))
            print(f"{target} {v}: {row['rig']['summary']}", flush=True)

    # 3. streams sustained at 30 FPS (robot-4cam's fps and deadline, --streams N)
    sustain, best = [], {}
    for n in range(1, a.max_streams + 1):
        rep = bench(bundle, BenchConfig(target="robot-4cam", scenario="camera-rig", data=data, streams=n, min_runs=10, min_time=0.0,
                                        end_to_end=False, rig_seconds=a.rig_seconds, out=work / f"n{n}", **quiet))
        for v, row in rep.variants.items():
            sustain.append(_rig_row("robot-4cam", v, row))
            if row["rig"]["pass"]:
                best[v] = n
            print(f"{n} streams {v}: {row['rig']['summary']}", flush=True)
        if not any(row["rig"]["pass"] for row in rep.variants.values()):
            break

    # 4. sustained run
    rep = bench(bundle, BenchConfig(target="host", min_runs=10, min_time=0.0, end_to_end=False,
                                    duration=a.sustained, out=work / "sustained", **quiet))
    run = rep.data["sustained"]
    print(f"sustained {a.sustained:g} s: drift " + ", ".join(f"{v} {d:+.1f}%" for v, d in run["drift_pct"].items()))
    for line in run["notes"]:
        print("  " + line)
    save(a.json, {"date": datetime.date.today().isoformat(), "machine": machine_info(), "bundle": str(bundle),
                  "data": str(data), "images": images, "skipped": r.data.get("skipped", {}),
                  "fp16_parity": fp16_parity(bundle), "end_to_end": e2e,
                  "rigs": rigs, "streams_search": sustain, "streams_sustained_30fps": best, "sustained": run,
                  "rig_seconds": a.rig_seconds, "command": "python benchmarks/bench_robot.py " + " ".join(argv or sys.argv[1:])})


def fp16_parity(bundle: Path) -> dict | None:
    """The export's fp16 figures (against torch's float16 forward) and the three files' sizes."""
    import json

    p = json.loads((bundle / "export.json").read_text())["parity"].get("fp16")
    sizes = {f: (bundle / f).stat().st_size / 1e6 for f in ("model.onnx", "model.int8.onnx", "model.fp16.onnx")
             if (bundle / f).is_file()}
    return p and {**{k: v for k, v in p.items() if k != "verify"}, "sizes_mb": sizes}


if __name__ == "__main__":
    main()
