"""``edgetl verify`` on the device: every file's size and sha256, the device's resize of a held-out photo
against the frame export computed (bundles that carry one), then parity.npz through each variant.

    report = verify_bundle("bundle/")          # report["ok"], report["variants"]["int8"]["top1_agreement"]
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .bundle import read_manifest, verify_files
from .errors import ArtifactError
from .metrics import parity_figures
from .predictor import Predictor


def verify_bundle(bundle_dir: str | os.PathLike, *, providers=None, threads: int = 0) -> dict:
    """Check every file's sha256/size, then run parity.npz through each variant.

    Returns a report dict with ``ok``; raises ArtifactError for a tampered/unreadable bundle.
    """
    bundle_dir = Path(bundle_dir)
    m = read_manifest(bundle_dir)
    checked = verify_files(bundle_dir, m)
    if "parity.npz" not in m.files:
        raise ArtifactError(f"{bundle_dir} has no parity.npz listed in bundle.json: re-export the bundle")
    try:
        with np.load(bundle_dir / "parity.npz", allow_pickle=False) as z:
            inputs, ref = z["inputs"], z["logits"]
            photo = (z["photo"], z["photo_frame"]) if "photo" in z.files else None
    except (ValueError, KeyError, OSError) as e:
        raise ArtifactError(f"{bundle_dir / 'parity.npz'} is unreadable ({type(e).__name__}): re-export the bundle") from None
    report = {"bundle": str(bundle_dir), "files_checked": checked, "variants": {}, "ok": True}
    if photo is not None:
        report["preprocess"] = _resize_check(m.preprocess, *photo)
        report["ok"] &= report["preprocess"]["ok"]
    for variant in m.variants:
        p = Predictor(bundle_dir, variant=variant, providers=providers, threads=threads, verified=m)
        fig = parity_figures(ref, p.run(inputs))
        diff, agree = fig["max_abs_diff"], fig["top1_agreement"]
        spec = m.parity.get(variant, {})
        if variant == "fp32":
            tol = float(spec.get("tolerance", 1e-4)) * max(1.0, float(np.max(np.abs(ref))))
            min_agree = 1.0
        else:
            tol = float(spec.get("max_abs_diff_tol", np.inf))
            min_agree = float(spec.get("min_agreement", 1.0))
        ok = diff <= tol and agree >= min_agree
        report["variants"][variant] = {"max_abs_diff": diff, "tolerance": tol, "top1_agreement": agree,
                                       "min_agreement": min_agree, "n": int(len(ref)), "ok": ok,
                                       "providers": p.providers}
        report["ok"] &= ok
    return report


def _resize_check(pp, photo: np.ndarray, want: np.ndarray) -> dict:
    """This machine's frame of the stored photo against export's: a Pillow or OpenCV here that resamples
    differently shows up as grey levels, before any model runs (1 level is rounding; more fails)."""
    if photo.dtype != np.uint8 or photo.ndim != 3 or want.shape != (pp.crop, pp.crop, 3):
        raise ArtifactError("parity.npz holds a malformed photo check: re-export the bundle")
    got = pp.frame(photo)
    grey = int(np.abs(got.astype(np.int16) - want.astype(np.int16)).max())
    return {"resampler": pp.resampler, "photo": list(photo.shape), "max_grey_levels": grey, "tolerance": 1,
            "ok": grey <= 1}
