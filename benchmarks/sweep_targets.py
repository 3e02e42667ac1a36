"""`edgetl sweep` on the shared datasets for a Raspberry Pi 5 profile and this host (issue #20).

    python benchmarks/sweep_targets.py [--datasets DIR ...] [--targets host,rpi5]
                                       [--backbones efficientnet_lite0,efficientnet_lite1,efficientnet_lite2]

Rows of datasets not run this time are kept from --json. Per dataset: the first sweep runs with a cold edgetl cache (decoded images and backbone features
computed from scratch), the later ones (other targets, and the first target again) with the warm
cache, as a user's second sweep would. Reports per backbone and variant: val top-1, p50/p90 on the
target (emulated on this host, threads capped at its cores), the recommendation, and the wall time
of each sweep.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED, save  # noqa: E402


def main(argv=None) -> dict:
    from edgetl.sweeps import SweepConfig, sweep
    from edgetl.runtime.cpu import host_isa

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", type=Path,
                    default=[SHARED / d for d in ("hymenoptera", "trashnet", "vehicles")])
    ap.add_argument("--targets", default="host,rpi5")
    ap.add_argument("--backbones", default="efficientnet_lite0,efficientnet_lite1,efficientnet_lite2")
    ap.add_argument("--json", type=Path, default=RESULTS / "sweep_targets.json")
    a = ap.parse_args(argv)
    names = {d.name for d in a.datasets}  # other datasets' rows in --json stay (one dataset can be rerun alone)
    rows = [r for r in (json.loads(a.json.read_text())["rows"] if a.json.is_file() else []) if r["dataset"] not in names]
    with tempfile.TemporaryDirectory() as tmp:
        for data in a.datasets:
            os.environ["EDGETL_CACHE"] = str(Path(tmp) / f"cache-{data.name}")  # cold for the first sweep
            targets = a.targets.split(",")
            for i, target in enumerate(targets + targets[:1]):
                t0 = time.perf_counter()
                r = sweep(SweepConfig(data=data, target=target, backbones=tuple(a.backbones.split(",")),
                                      out=Path(tmp) / f"{data.name}-{target}-{i}"))
                wall = time.perf_counter() - t0
                rows.append({"dataset": data.name, "target": target, "cache": "cold" if i == 0 else "warm",
                             "wall_s": round(wall, 1), "summary": r.summary, "recommendation": r.recommendation,
                             "skipped": r.skipped,
                             "backbones": {row["backbone"]: {"best_val": row.get("best_val"),
                                                             "finetune_s": row.get("finetune_s"),
                                                             "seconds": row.get("seconds"),
                                                             "int8_method": row.get("int8_method"),
                                                             "variants": row.get("variants")} for row in r.rows}})
                print(f"{data.name:12s} {target:6s} {'cold' if i == 0 else 'warm'}  {wall:6.1f} s  {r.summary}",
                      flush=True)
                save(a.json, {"benchmark": "sweep_targets", "date": time.strftime("%Y-%m-%d"), "host": host_isa(),
                              "machine": platform.machine(), "rows": rows})
    return {"rows": rows}


if __name__ == "__main__":
    main()
