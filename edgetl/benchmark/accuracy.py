"""Accuracy per variant: top-1/top-5, agreement with fp32, per-class accuracy and confusion matrix, on a
labelled folder or the bundle's parity.npz."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .._progress import Progress
from ..config import BenchConfig
from ..data.imagefolder import bench_samples
from ..errors import DataError, RuntimeInputError

log = logging.getLogger(__name__)


def accuracy_inputs(predictors: dict, bundle_dir: Path | None, cfg: BenchConfig, progress: Progress):
    """(inputs per variant, labels or None, source line) from --data, else parity.npz."""
    ref = next(iter(predictors.values()))
    if cfg.data is not None:
        samples, classes, how, total = bench_samples(cfg.data, cfg.max_images)
        if classes != list(ref.labels):
            raise DataError(f"classes of {cfg.data} ({', '.join(classes)}) differ from the model's labels "
                            f"({', '.join(ref.labels)}): use images of the same classes")
        frames, labels, unreadable = [], [], 0
        with progress.task("accuracy images", total=len(samples)) as adv:
            for s in samples:
                try:
                    frames.append(ref._frame(s.path))
                    labels.append(s.label)
                except RuntimeInputError:
                    unreadable += 1
                adv(1)
        if not frames:
            raise DataError(f"no readable images in {cfg.data}")
        if unreadable:
            log.warning("skipped %d unreadable image(s) in %s", unreadable, cfg.data)
        frames = np.stack(frames)
        capped = f" (a stratified {len(samples)} of {total}: --max-images)" if len(samples) < total else ""
        bad = f", {unreadable} unreadable skipped" if unreadable else ""
        source = f"{cfg.data}: {how}, {len(frames)} images scored{capped}{bad}"
        return {v: (frames if p.embed else p.preprocess.normalize(frames)) for v, p in predictors.items()}, \
            np.array(labels), source
    if bundle_dir is not None:
        with np.load(bundle_dir / "parity.npz", allow_pickle=False) as z:
            x, y = z["inputs"], (z["labels"] if "labels" in z.files else None)
        return {v: x for v in predictors}, y, f"parity.npz (no --data given), {len(x)} images scored"
    return None, None, None


def score_accuracy(predictors: dict, bundle_dir: Path | None, cfg: BenchConfig, progress: Progress) -> dict:
    """Top-1/top-5, agreement with fp32, per-class accuracy and confusion matrix per variant."""
    inputs, y, source = accuracy_inputs(predictors, bundle_dir, cfg, progress)
    if inputs is None:
        return {"source": None, "variants": {}}
    ref = next(iter(predictors.values()))
    logits = {v: np.concatenate([p.run(inputs[v][i:i + 32]) for i in range(0, len(inputs[v]), 32)])
              for v, p in predictors.items()}
    base = logits.get("fp32", next(iter(logits.values())))
    n_cls = len(ref.labels)
    out = {"source": source, "n": int(len(base)), "labels": list(ref.labels), "variants": {}}
    for v, lg in logits.items():
        pred = lg.argmax(1)
        row = {"agreement_with_fp32": float(np.mean(pred == base.argmax(1))),
               "max_abs_diff_vs_fp32": float(np.max(np.abs(lg - base)))}
        if y is not None:
            top5 = np.argsort(-lg, 1)[:, : min(5, n_cls)]
            cm = np.zeros((n_cls, n_cls), dtype=int)
            np.add.at(cm, (y, pred), 1)
            row.update(top1=float(np.mean(pred == y)), top5=float(np.mean([t in r for t, r in zip(y, top5)])),
                       per_class={ref.labels[c]: (float(cm[c, c] / cm[c].sum()) if cm[c].sum() else None)
                                  for c in range(n_cls)},
                       confusion=cm.tolist())
        out["variants"][v] = row
    return out
