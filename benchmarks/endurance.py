"""Runtime endurance (issue #10): 10,000 predictions in one process must not grow its memory.

    python benchmarks/endurance.py [--bundle DIR] [--n 10000] [--warmup 500] [--json PATH]

A fresh process (torch never imported) loads the efficientnet_lite0 int8 bundle with the device
runtime and predicts --n real photos in a loop (from file: decode, resize, crop, normalise, run),
cycling over hymenoptera's val split. RSS (VmRSS) is sampled every 250 predictions; the figure is
the growth from the end of warm-up to the end. Goal: < 5%.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, SHARED, lite0_bundle, save  # noqa: E402

CHILD = r"""
import json, sys, time
from pathlib import Path
from edgetl.runtime import Predictor

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

bundle, n, warmup, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), 250
photos = sorted(p for p in Path(sys.argv[4]).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
p = Predictor(bundle, threads=2)
samples, t0, labels = [], time.perf_counter(), set()
for i in range(1, n + 1):
    labels.add(p.predict(photos[i % len(photos)], top_k=1).label)
    if i % every == 0 or i == warmup:
        samples.append({"i": i, "rss_mb": rss_mb(), "s": time.perf_counter() - t0})
print(json.dumps({"samples": samples, "variant": p.variant, "photos": len(photos), "labels": sorted(labels),
                  "torch_imported": "torch" in sys.modules}))
"""


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--json", type=Path, default=RESULTS / "endurance.json")
    a = ap.parse_args(argv)
    photos = SHARED / "hymenoptera" / "val"
    with tempfile.TemporaryDirectory() as tmp:
        bundle = a.bundle or lite0_bundle(Path(tmp))
        p = subprocess.run([sys.executable, "-c", CHILD, str(bundle), str(a.n), str(a.warmup), str(photos)],
                           capture_output=True, text=True, cwd=ROOT, check=True)
    child = json.loads(p.stdout.strip().splitlines()[-1])
    s = child["samples"]
    warm = next(x for x in s if x["i"] == a.warmup)
    end = s[-1]
    growth = (end["rss_mb"] - warm["rss_mb"]) / warm["rss_mb"]
    rate = (end["i"] - warm["i"]) / (end["s"] - warm["s"])
    print(f"{end['i']} predictions ({child['variant']} bundle, {child['photos']} photos cycled, "
          f"{rate:.0f} predictions/s): RSS {warm['rss_mb']:.1f} MB after {a.warmup} -> {end['rss_mb']:.1f} MB "
          f"at the end = {100 * growth:+.2f}% (max {max(x['rss_mb'] for x in s):.1f} MB); goal < 5%: "
          f"{'met' if growth < 0.05 else 'missed'}; torch imported: {child['torch_imported']}")
    doc = {"benchmark": "endurance", "date": time.strftime("%Y-%m-%d"), "machine": platform.machine(),
           "n": a.n, "warmup": a.warmup, "variant": child["variant"], "photos": child["photos"],
           "rss_after_warmup_mb": warm["rss_mb"], "rss_end_mb": end["rss_mb"],
           "rss_max_mb": max(x["rss_mb"] for x in s), "growth": growth, "predictions_per_s": rate,
           "goal_growth": 0.05, "met": growth < 0.05, "torch_imported": child["torch_imported"], "samples": s}
    save(a.json, doc)
    return doc


if __name__ == "__main__":
    main()
