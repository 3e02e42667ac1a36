"""Scoring int8 candidates against fp32 on held-out images: the figures, the gate, and "most faithful".

    scorer = Scorer(ref_logits, labels, opts)
    c = scorer.score(path)                  # {"top1_int8", "drop_points", "top1_agreement", "mean_abs_diff", ...}
    scorer.fits(c), scorer.agrees(c), scorer.best(candidates)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..runtime.metrics import parity_figures
from .presets import QuantOptions
from .recipes import logits


class Scorer:
    """fp32's logits and the true labels of the held-out images, and what a candidate must reach."""

    def __init__(self, ref: np.ndarray, x: np.ndarray, y: np.ndarray, opts: QuantOptions):
        self.ref, self.x, self.y, self.opts = ref, x, y, opts
        self.top1_fp32 = float(np.mean(ref.argmax(1) == y))
        # a gate finer than one image cannot be measured: on N images it is at least one image (100/N points)
        self.gate = max(opts.max_drop, 100.0 / len(y)) if len(y) else opts.max_drop

    def score(self, path: Path) -> dict:
        """The accuracy figures of an int8 model on the held-out images, against fp32 and the labels."""
        q = logits(path, self.x)
        fig = parity_figures(self.ref, q)
        top1 = float(np.mean(q.argmax(1) == self.y))
        return {"top1_int8": top1, "drop_points": 100 * (self.top1_fp32 - top1),
                "top1_agreement": fig["top1_agreement"], "max_abs_diff": fig["max_abs_diff"],
                "mean_abs_diff": float(np.mean(np.abs(q - self.ref))), "size": path.stat().st_size}

    def fits(self, c: dict) -> bool:
        """Within the --max-drop gate."""
        return c["drop_points"] <= self.gate + 1e-9

    def agrees(self, c: dict) -> bool:
        """Within the gate and at the --min-agreement target."""
        return self.fits(c) and c["top1_agreement"] >= self.opts.min_agreement - 1e-12

    def best(self, pool: list[dict]) -> dict | None:
        """The most faithful candidate within the gate (any, if none fits). Agreement first, but a
        difference of one held-out image is noise on a few hundred: among those within one image of
        the best, the smallest mean |logit error| against fp32 wins (then the smaller file)."""
        if not pool:
            return None
        if any(self.fits(c) for c in pool):
            pool = [c for c in pool if self.fits(c)]
        top = max(c["top1_agreement"] for c in pool)
        near = [c for c in pool if (top - c["top1_agreement"]) * len(self.y) <= 1 + 1e-9]
        return min(near, key=lambda c: (c["mean_abs_diff"], c["size"]))

    def worth_their_float_layers(self, ok: list[dict]) -> list[dict]:
        """Target missed: layers kept in float (the fallback) must pay for their size and speed by halving
        the disagreement of the best all-int8 variant; one more agreeing image for a file twice the size
        is not kept (issue #18: 14 float nodes bought 1.7 points for 0.51x instead of 0.27x)."""
        full = [c for c in ok if c["kind"] != "fallback"]
        if not full:
            return ok
        a = self.best(full)["top1_agreement"]
        return full + [c for c in ok if c["kind"] == "fallback" and c["top1_agreement"] >= a + (1 - a) / 2]
