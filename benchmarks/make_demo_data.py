"""Draw the demo dataset shipped in edgetl/demo_data/trashnet_mini from ../shared/datasets/trashnet.

6 classes x (40 train + 15 val), drawn with random.Random("edgetl-demo/<class>/<split>").sample from
the sorted file lists of the shared split (so no val image is near a train image), re-encoded as
JPEG (quality 80) at 192x256 to keep the whole set under 3 MB.

    python benchmarks/make_demo_data.py [--src ../shared/datasets/trashnet]
"""
import argparse
import random
from pathlib import Path

from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("--src", default=Path(__file__).resolve().parents[2] / "shared" / "datasets" / "trashnet", type=Path)
ap.add_argument("--dst", default=Path(__file__).resolve().parents[1] / "edgetl" / "demo_data" / "trashnet_mini", type=Path)
args = ap.parse_args()
for split, n in (("train", 40), ("val", 15)):
    for cdir in sorted((args.src / split).iterdir()):
        files = sorted(cdir.iterdir())
        for f in random.Random(f"edgetl-demo/{cdir.name}/{split}").sample(files, n):
            out = args.dst / split / cdir.name / (f.stem + ".jpg")
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.open(f).convert("RGB").resize((192, 256), Image.Resampling.LANCZOS).save(out, quality=80)
print(sum(p.stat().st_size for p in args.dst.rglob("*.jpg")) / 1e6, "MB")
