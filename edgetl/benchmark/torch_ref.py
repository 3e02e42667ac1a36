"""The eager PyTorch reference row, when torch and the bundle's source checkpoint are here."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .._io import read_json
from ..errors import EdgetlError

log = logging.getLogger(__name__)


class TorchReference:
    """Eager PyTorch on the bundle's source checkpoint, when torch and the checkpoint are here.
    ``run`` is None when there is no reference; ``note`` says why, or what ran."""

    def __init__(self, note: str, ck_path: Path | None = None, run=None):
        self.note, self.ck_path, self.run = note, ck_path, run

    @classmethod
    def find(cls, bundle_dir: Path | None, x: np.ndarray, threads: int) -> "TorchReference":
        if x.dtype != np.float32:
            return cls("skipped: the bundle takes uint8 frames (--embed-preprocess); torch takes float tensors")
        if bundle_dir is None or not (bundle_dir / "export.json").is_file():
            return cls("skipped: a lone .onnx has no source checkpoint (bench its bundle folder)")
        ck = read_json(bundle_dir / "export.json", "export report").get("checkpoint")
        if not ck:
            return cls("skipped: export.json names no checkpoint")
        ck = Path(ck) if Path(ck).is_absolute() else bundle_dir.parent / Path(ck).name  # (older bundles: relative)
        if not ck.is_file():
            return cls(f"skipped: the source checkpoint {ck} is not here")
        try:
            import torch

            from ..zoo.checkpoint import load_checkpoint, model_from_checkpoint

            model = model_from_checkpoint(load_checkpoint(ck))
        except ImportError as e:  # the device install, or torch without torchvision / timm
            return cls(f"skipped: {e.name or 'torch'} is not installed here (the device install has no torch)")
        except EdgetlError as e:  # a checkpoint that no longer loads: the ONNX rows still mean something
            return cls(f"skipped: {e}")
        xt = torch.from_numpy(x)

        def run():
            with torch.inference_mode():
                model(xt)
        return cls(f"eager PyTorch on {ck} ({threads or 'default'} threads)", ck, run)
