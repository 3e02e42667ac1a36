"""What the 'opencv' resampler (edgetl finetune --resampler opencv) costs and buys against PIL's resize (the
default, torchvision's), on the shared datasets, with Lite0's default linear probe trained on each.

    python benchmarks/resampler.py [--datasets hymenoptera trashnet vehicles] [--json PATH]

Per dataset and resampler: the run's val top-1 (fp32), int8's top-1 and agreement with fp32 (the export's
chosen candidate). Then, interleaved in one process on 16 hymenoptera val photos: camera input -> the model's
tensor (decode, resize, crop, normalise) for JPEG bytes as stored and for the same photos as raw 1280x720
frames, each resampler, and how far the two tensors are apart (grey levels). The rigs and the end-to-end rows
of an opencv bundle: benchmarks/bench_robot.py --bundle <its bundle> --json ...
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED, interleaved_median_ms, lite0_bundle, save  # noqa: E402


def _accuracy(bundle: Path) -> dict:
    run = json.loads((bundle.parent / "metrics.json").read_text())
    q = json.loads((bundle / "export.json").read_text())["quantization"]
    chosen = next(c for c in q["candidates"] if c.get("chosen"))
    return {"fp32_top1": run.get("best_val_acc"), "int8_top1": chosen["top1_int8"],
            "int8_agreement": chosen["top1_agreement"], "int8_method": chosen["method"]}


def _input_to_tensor(pps: dict, blobs: list[bytes], rounds: int = 7) -> dict:
    from edgetl.benchmark.end_to_end import camera_frames
    from edgetl.config import FrameSource
    from edgetl.runtime.preprocess import load_image

    frames = camera_frames([np.asarray(load_image(b)) for b in blobs], (1280, 720), FrameSource.raw)
    fns = {}
    for name, pp in pps.items():
        fns[f"photo_{name}"] = (lambda b, pp=pp: pp.normalize(pp.frame(load_image(b))[None]), blobs)
        fns[f"raw1280x720_{name}"] = (lambda f, pp=pp: pp.normalize(pp.frame(f)[None]), frames)
    median = interleaved_median_ms(fns, rounds)
    a, b = pps["pillow"], pps["opencv"]
    grey = {"photo": [np.abs(a.frame(load_image(x)).astype(int) - b.frame(load_image(x)).astype(int)) for x in blobs],
            "raw1280x720": [np.abs(a.frame(f).astype(int) - b.frame(f).astype(int)) for f in frames]}
    return {"median_ms": median,
            "pillow_vs_opencv_grey_levels": {k: {"max": int(max(d.max() for d in v)),
                                                 "mean": float(np.mean([d.mean() for d in v]))} for k, v in grey.items()}}


def main(argv=None) -> None:
    import dataclasses

    from edgetl import zoo
    from edgetl.runtime.cpu import cpu_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["hymenoptera", "trashnet", "vehicles"])
    ap.add_argument("--keep", type=Path, help="keep the bundles under this folder (<dataset>-<resampler>/run/bundle)")
    ap.add_argument("--json", type=Path, default=RESULTS / "resampler.json")
    a = ap.parse_args(argv)
    cpu = cpu_info()
    print(f"CPU: {cpu['model']}; flags: {' '.join(sorted(f for f in cpu['flags'] if 'avx' in f or 'vnni' in f))}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or Path(tmp)
        for ds in a.datasets:
            for r in ("pillow", "opencv"):
                t0 = time.perf_counter()
                acc = _accuracy(lite0_bundle(work / f"{ds}-{r}", ds, resampler=r))
                rows.append({"dataset": ds, "resampler": r, **acc, "finetune_export_s": time.perf_counter() - t0})
                print(f"{ds} {r}: fp32 top-1 {acc['fp32_top1']:.3f}, int8 top-1 {acc['int8_top1']:.3f}, "
                      f"agreement {acc['int8_agreement']:.3f}", flush=True)
    pp = zoo.get_spec("efficientnet_lite0").preprocess
    blobs = [p.read_bytes() for p in sorted((SHARED / "hymenoptera" / "val").glob("*/*"))[::10][:16]]
    speed = _input_to_tensor({"pillow": pp, "opencv": dataclasses.replace(pp, resampler="opencv")}, blobs)
    print("\n| dataset | resampler | fp32 top-1 | int8 top-1 | int8 agreement with fp32 |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['dataset']} | {r['resampler']} | {r['fp32_top1']:.1%} | {r['int8_top1']:.1%} | {r['int8_agreement']:.1%} |")
    m = speed["median_ms"]
    print("\ncamera input -> tensor (median ms, interleaved): "
          + ", ".join(f"{k} {v:.2f}" for k, v in m.items()))
    print("pillow vs opencv frames: " + ", ".join(f"{k} max {v['max']} mean {v['mean']:.2f} grey levels"
                                                 for k, v in speed["pillow_vs_opencv_grey_levels"].items()))
    import cv2

    save(a.json, {"date": datetime.date.today().isoformat(), "cpu": cpu["model"],
                  "cpu_flags": sorted(f for f in cpu["flags"] if "avx" in f or "vnni" in f or "sse4" in f),
                  "opencv": cv2.__version__, "rows": rows, **speed,
                  "speed_inputs": "16 hymenoptera val photos (JPEG bytes), and the same as raw 1280x720 frames; "
                                  "Lite0's preprocessing (256 -> 224)",
                  "command": "python benchmarks/resampler.py " + " ".join(argv or sys.argv[1:])})


if __name__ == "__main__":
    main()
