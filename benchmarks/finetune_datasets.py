"""Best val accuracy of efficientnet_lite0, linear probe vs full fine-tuning, on every dataset.

    python benchmarks/finetune_datasets.py [--datasets DIR ...] [--epochs 10] [--json PATH]

Default settings of `edgetl finetune` (10 epochs; full starts with its LP-FT warm start), a cold
feature cache for each run, one process. Records best val top-1, the epoch it came at (0 = the
warm start's head), wall time and the per-epoch curve. Issue #4 asks for these figures.
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED, save  # noqa: E402
from finetune_speed import ours  # noqa: E402


def main(argv=None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="*", type=Path,
                    default=sorted(p for p in SHARED.iterdir() if (p / "train").is_dir()) if SHARED.is_dir() else [])
    ap.add_argument("--epochs", type=int, default=10, help="edgetl finetune's default")
    ap.add_argument("--json", type=Path, default=RESULTS / "finetune_datasets.json")
    a = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ds in a.datasets:
            row = {"dataset": ds.name, "train_images": sum(1 for p in (ds / "train").rglob("*") if p.is_file()),
                   "val_images": sum(1 for p in (ds / "val").rglob("*") if p.is_file())}
            for strategy in ("linear", "full"):
                row[strategy] = ours(ds, a.epochs, strategy, Path(tmp) / ds.name)
            rows.append(row)
            lin, full = row["linear"], row["full"]
            print(f"{ds.name:12s} linear {100 * lin['best_val_acc']:5.1f}% (epoch {lin['best_epoch']}, "
                  f"{lin['wall_s']:.0f} s)  full {100 * full['best_val_acc']:5.1f}% (epoch {full['best_epoch']}, "
                  f"{full['wall_s']:.0f} s)", flush=True)
    doc = {"benchmark": "finetune_datasets", "date": time.strftime("%Y-%m-%d"), "backbone": "efficientnet_lite0",
           "epochs": a.epochs, "machine": platform.machine(), "torch_threads": torch.get_num_threads(), "rows": rows}
    save(a.json, doc)
    return doc


if __name__ == "__main__":
    main()
