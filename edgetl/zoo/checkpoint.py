"""edgetl checkpoints: written by fine-tuning, read by export, bench and resume.

    ck = load_checkpoint("models/run")            # best.pt, tensors only, format checked
    model = model_from_checkpoint(ck)             # the fine-tuned classifier, rebuilt alone (eval mode)
    save(checkpoint_dict(model, ...), path)       # atomic

A checkpoint is self-describing: backbone name, labels, preprocessing, head dropout and the run's
config travel with the weights, so no dataset and no download is needed to rebuild the model.
Loading uses ``weights_only=True``: a file that carries pickled code is refused, never run.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from .. import zoo
from .._io import atomic_path
from ..errors import ArtifactError

FORMAT = "edgetl-checkpoint"
VERSION = 2  # the newest this reader takes; 2: preprocessing with a resampler other than PIL
_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return model.module if hasattr(model, "module") else model


def checkpoint_dict(model: nn.Module, *, config: dict, labels, weights_source: str | None, preprocess: dict,
                    epoch: int, val_acc: float) -> dict:
    """What best.pt holds: the weights and everything needed to rebuild and re-export them."""
    return {
        # 1 unless the preprocessing needs a newer reader (one that drops 'resampler' would export PIL frames)
        "format": FORMAT, "format_version": VERSION if "resampler" in preprocess else 1,
        "edgetl_version": __version__,
        "backbone": config["backbone"], "weights": config["weights"], "weights_source": weights_source,
        "num_classes": len(labels), "labels": list(labels), "head_dropout": config["head_dropout"],
        "preprocess": preprocess, "config": config, "epoch": epoch, "val_acc": val_acc,
        "model": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
    }


def save(obj: dict, path: Path) -> None:
    """torch.save, atomically (a kill -9 mid-write leaves the previous file intact)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path) -> dict:
    """Read an edgetl checkpoint (a run folder means its best.pt) and check its format."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise ArtifactError(f"no checkpoint at {path}: run edgetl finetune first (it writes best.pt)")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except _READ_ERRORS as e:
        raise ArtifactError(f"{path} is not a readable edgetl checkpoint ({type(e).__name__}; "
                            f"truncated, or it holds pickled code): re-run edgetl finetune") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise ArtifactError(f"{path} is not an edgetl checkpoint (no '{FORMAT}' format tag)")
    v = ck.get("format_version")
    if not isinstance(v, int) or v > VERSION:
        raise ArtifactError(f"{path} has checkpoint format version {v!r}, newer than this edgetl "
                            f"({__version__}) reads ({VERSION}): upgrade edgetl")
    for key in ("backbone", "labels", "model", "preprocess", "num_classes"):
        if key not in ck:
            raise ArtifactError(f"{path} lacks '{key}': re-run edgetl finetune")
    return ck


def load_state(path: Path) -> dict:
    """A run's last.pt (training state for --resume), or one line saying it is damaged."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except _READ_ERRORS as e:
        raise ArtifactError(f"{path} is damaged ({type(e).__name__}): delete it and re-run without --resume") from None


def model_from_checkpoint(ck: dict) -> nn.Module:
    """Rebuild the fine-tuned classifier from a checkpoint alone (no dataset, no download)."""
    model = zoo.create_model(ck["backbone"], ck["num_classes"], weights="none", dropout=ck.get("head_dropout", 0.2))
    try:
        model.load_state_dict(ck["model"], strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"checkpoint weights do not fit backbone {ck['backbone']}: "
                            f"{str(e).splitlines()[0]}") from None
    return model.eval()
