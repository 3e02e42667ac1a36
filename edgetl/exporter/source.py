"""What an export starts from: the run folder, its checkpoint rebuilt as a torch model, and the held-out
images that prove the export (as the bundle's model takes them)."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from .. import __version__
from .._progress import Progress
from ..config import ExportConfig
from ..data import ImageCache, eval_samples, stratified_sample, validate
from ..errors import ArtifactError, DataError
from ..runtime.bundle import format_version, onnx_metadata
from ..runtime.preprocess import Preprocess, load_image

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Source:
    """The run being exported and the held-out images that prove the export."""

    run_dir: Path
    ck_path: Path
    ck: dict
    model: object  # the rebuilt torch classifier, eval mode
    labels: list[str]
    pp: Preprocess  # as the bundle's model takes it (NHWC-uint8 layout with --embed-preprocess)
    frames: np.ndarray  # uint8 [N, H, W, 3]
    floats: np.ndarray  # float32 [N, 3, H, W], normalised
    y: np.ndarray  # labels [N]
    data_dir: Path
    photo: np.ndarray  # uint8 HxWx3: a region of one held-out photo as decoded, for verify's resize check
    format_version: int = 1  # the bundle's (1 unless it will hold fp16): every model's metadata carries it

    @property
    def inputs(self) -> np.ndarray:
        return self.frames if self.pp.layout == "NHWC-uint8" else self.floats

    def metadata(self, ck_sha: str, embed: bool) -> dict[str, str]:
        return onnx_metadata(self.labels, self.pp, backbone=self.ck["backbone"],
                             weights_source=self.ck.get("weights_source"), version=__version__,
                             checkpoint_sha256=ck_sha, embed_preprocess=embed, format_version=self.format_version)


def resolve_run(run: str | Path) -> tuple[Path, Path]:
    """(run folder, checkpoint path), both absolute, from a run folder or a checkpoint file."""
    run = Path(run).expanduser().absolute()
    if run.is_file():
        return run.parent, run
    if not run.is_dir():
        raise ArtifactError(f"run folder not found: {run}; pass the folder edgetl finetune wrote (models/<run>)")
    ck = run / "best.pt"
    if not ck.is_file():
        raise ArtifactError(f"{run} has no best.pt: it is not a finished edgetl run; run edgetl finetune "
                            f"(or --resume it) first")
    return run, ck


def load_source(run_dir: Path, ck_path: Path, cfg: ExportConfig, progress: Progress) -> Source:
    from ..zoo.checkpoint import load_checkpoint, model_from_checkpoint

    ck = load_checkpoint(ck_path)
    model = model_from_checkpoint(ck)
    labels = list(ck["labels"])
    pp_train = Preprocess.from_dict(ck["preprocess"])
    pp = dataclasses.replace(pp_train, layout="NHWC-uint8") if cfg.embed_preprocess else pp_train
    # real validation images of the run (or --eval-data): parity, and int8's accuracy check
    samples, data_dir = eval_samples(run_dir, labels, cfg.eval_data, seed=cfg.seed)
    samples = stratified_sample(samples, max(cfg.parity_images, cfg.eval_size if cfg.int8 else 0), seed=cfg.seed)
    cache = ImageCache()
    with progress.task("load validation images", total=len(samples)) as adv:
        samples, _ = validate(samples, pp_train, cache, progress=adv, where=str(data_dir), frame=True)
    frames = cache.frames(samples, pp)  # [N,H,W,3]
    variants = ["fp32"] + ["int8"] * bool(cfg.int8) + ["fp16"] * bool(cfg.fp16)
    return Source(run_dir, ck_path, ck, model, labels, pp, frames, pp.normalize(frames),
                  np.array([s.label for s in samples]), data_dir, _photo_region(samples[0].path, pp),
                  format_version(variants, pp))


def _photo_region(path: Path, pp: Preprocess) -> np.ndarray:
    """The center of a held-out photo as decoded, at most twice the resize target a side (a crop: its pixels
    as the camera gave them; up to 0.8 MB in parity.npz), so verify can check the device resizes it to the
    frame export computed."""
    a = np.asarray(load_image(path), dtype=np.uint8)
    h, w = a.shape[:2]
    side = 2 * pp.resize
    top, left = max(0, (h - side) // 2), max(0, (w - side) // 2)
    return np.ascontiguousarray(a[top:top + side, left:left + side])


def prepared_inputs(src: Source, samples: list, where: Path, what: str, progress: Progress) -> np.ndarray:
    """Preprocessed float NCHW inputs of ``samples`` (decoded once, through the image cache)."""
    cache = ImageCache()
    pp = dataclasses.replace(src.pp, layout="NCHW")
    with progress.task(what, total=len(samples)) as adv:
        samples, _ = validate(samples, pp, cache, progress=adv, where=str(where), frame=True)
    x = pp.normalize(cache.frames(samples, pp))
    if x.shape[1:] != src.floats.shape[1:]:
        raise DataError(f"{what} give inputs {x.shape[1:]}, the model takes {src.floats.shape[1:]}")
    return x
