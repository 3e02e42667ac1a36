"""How two models' outputs compare: numpy only, shared by export, quantize, bench and verify.

    parity_figures(fp32_logits, int8_logits)   # {"n", "max_abs_diff", "rel_diff", "top1_agreement"}
"""
from __future__ import annotations

import numpy as np


def parity_figures(ref: np.ndarray, got: np.ndarray) -> dict:
    """max abs diff, its size relative to the largest reference logit, and top-1 agreement of [N, C] logits."""
    diff = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = max(1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    return {"n": int(len(ref)), "max_abs_diff": diff, "rel_diff": diff / scale,
            "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))) if len(ref) else 1.0}


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(logits.argmax(1) == labels)) if len(labels) else 0.0
