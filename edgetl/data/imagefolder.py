"""ImageFolder datasets that survive real photos.

    ds = load_imagefolder("photos/", val_fraction=0.2, seed=0)   # -> DatasetSplit
    train = ImageDataset(ds.train, preprocess, augment="light", cache=ImageCache())

Layout: ``DATA/train/<class>/*`` and ``DATA/val/<class>/*``; with no ``val/`` (or a flat
``DATA/<class>/*``) a seeded, class-stratified split is drawn. Corrupt, truncated and non-image
files are skipped with a count and one warning; every image becomes RGB with EXIF orientation
applied. The decode-and-resize cache stores each image once, already resized to the backbone's
``resize`` side, so later epochs (and later runs) skip JPEG decoding entirely.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
from pathlib import Path
from typing import Sequence


from ..errors import DataError
from ..runtime.preprocess import IMAGE_EXTENSIONS

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclasses.dataclass
class DatasetSplit:
    """The files of a dataset, split, with class names in label order."""

    root: Path
    classes: list[str]
    train: list[Sample]
    val: list[Sample]
    val_source: str  # "val/ folder" or "stratified split of train (fraction F, seed S)"
    skipped: dict = dataclasses.field(default_factory=dict)  # reason -> count

    def summary(self) -> str:
        return (f"{len(self.classes)} classes, {len(self.train)} train / {len(self.val)} val images "
                f"({self.val_source})")


def _class_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _list_class(d: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under a class folder, recursively, sorted."""
    images, other = [], []
    for root, dirs, files in os.walk(d):
        dirs[:] = sorted(x for x in dirs if not x.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            p = Path(root) / name
            (images if p.suffix.lower() in IMAGE_EXTENSIONS else other).append(p)
    return images, other


def _scan(split_dir: Path, *, empty_classes: bool = False) -> tuple[dict[str, list[Path]], int]:
    """Class folder name -> image files. ``empty_classes``: a class folder without images is allowed
    (a folder to score: the class still counts, for the labels; training needs images in each)."""
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} is not a directory: point DATA at an ImageFolder tree (DATA/train/<class>/*.jpg)")
    classes = _class_dirs(split_dir)
    if not classes:
        raise DataError(
            f"{split_dir} has no class folders: put images in {split_dir}/<class_name>/ (one folder per class)")
    out, others = {}, 0
    for c in classes:
        images, other = _list_class(c)
        others += len(other)
        if not images and not empty_classes:
            raise DataError(f"class folder {c} has no images ({', '.join(IMAGE_EXTENSIONS[:4])}, ...): add some or remove the folder")
        out[c.name] = images
    if len(out) < 2:
        raise DataError(f"{split_dir} has only one class ({next(iter(out))}): a classifier needs at least 2 class folders")
    return out, others


def load_imagefolder(root: str | Path, *, val_fraction: float = 0.2, seed: int = 0) -> DatasetSplit:
    """Scan an ImageFolder tree into a :class:`DatasetSplit` (no image is decoded here)."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset directory not found: {root}")
    if not root.is_dir():
        raise DataError(f"{root} is not a directory: point DATA at an ImageFolder tree (DATA/train/<class>/*.jpg)")
    if not any(root.iterdir()):
        raise DataError(f"dataset directory {root} is empty: add DATA/train/<class>/*.jpg (and optionally DATA/val/)")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val fraction must be between 0 and 1, got {val_fraction}")
    train_dir = root / "train" if (root / "train").is_dir() else root
    train, other = _scan(train_dir)
    skipped = {"not an image": other} if other else {}
    classes = sorted(train)
    if (root / "val").is_dir():
        val, vother = _scan(root / "val")
        if vother:
            skipped["not an image"] = skipped.get("not an image", 0) + vother
        if sorted(val) != classes:
            only_t = sorted(set(classes) - set(val))
            only_v = sorted(set(val) - set(classes))
            raise DataError(
                f"class folders differ between {train_dir} and {root / 'val'} "
                f"(only in train: {only_t or '-'}; only in val: {only_v or '-'}): give both the same class folders")
        tr = [Sample(p, i) for i, c in enumerate(classes) for p in train[c]]
        va = [Sample(p, i) for i, c in enumerate(classes) for p in val[c]]
        source = "val/ folder"
    else:
        tr, va = [], []
        rng = random.Random(seed)
        for i, c in enumerate(classes):  # stratified: the same fraction of every class
            files = list(train[c])
            rng.shuffle(files)
            n_val = max(1, round(len(files) * val_fraction)) if len(files) > 1 else 0
            va += [Sample(p, i) for p in sorted(files[:n_val])]
            tr += [Sample(p, i) for p in sorted(files[n_val:])]
        source = f"stratified split of {train_dir.name} (val fraction {val_fraction}, seed {seed})"
    if not va:
        raise DataError(f"{root}: no validation images; add DATA/val/<class>/ or more images per class")
    split = DatasetSplit(root, classes, tr, va, source, skipped)
    if other:
        log.warning("skipped %d non-image file(s) under %s", sum(skipped.values()), root)
    return split


def labelled_images(root: str | Path) -> tuple[list[Sample], list[str], str]:
    """Every image a user means by "score this folder": (samples, classes, how they were chosen).

    ``root/val/<class>/``: the val split. A folder of class folders (no train/, no val/): every image
    in it. ``root/train/`` without ``val/``: the held-out part of the default seeded split, the part
    that fine-tuning did not train on.
    """
    root = Path(root)
    if root.is_dir() and not (root / "train").is_dir() and not (root / "val").is_dir():
        scanned, _ = _scan(root, empty_classes=True)
        if not any(scanned.values()):
            raise DataError(f"{root} has class folders but no images in them: add some")
        classes = sorted(scanned)
        return [Sample(p, i) for i, c in enumerate(classes) for p in scanned[c]], classes, "every image"
    ds = load_imagefolder(root)
    return ds.val, ds.classes, ("the val/ split" if ds.val_source == "val/ folder" else
                                f"the held-out part of train/ ({ds.val_source})")


def bench_samples(root: str | Path, max_images: int | None = None) -> tuple[list[Sample], list[str], str, int]:
    """The images a bench scores for ``root`` (see :func:`labelled_images`), at most ``max_images``
    of them (class-stratified): (samples, classes, how they were chosen, how many there were)."""
    samples, classes, how = labelled_images(root)
    total = len(samples)
    if max_images and total > max_images:
        samples = stratified_sample(samples, max_images)
    return samples, classes, how, total


def stratified_sample(samples: Sequence[Sample], n: int, seed: int = 0) -> list[Sample]:
    """Up to ``n`` samples, the same share from every class, reproducibly."""
    if n >= len(samples):
        return list(samples)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    rng = random.Random(seed)
    for v in by_class.values():
        rng.shuffle(v)
    out: list[Sample] = []
    # round-robin over classes so small classes are not squeezed out
    while len(out) < n:
        progressed = False
        for lbl in sorted(by_class):
            if by_class[lbl] and len(out) < n:
                out.append(by_class[lbl].pop())
                progressed = True
        if not progressed:
            break
    return sorted(out, key=lambda s: (s.label, str(s.path)))


def eval_samples(run_dir: Path, labels: Sequence[str], data: Path | None = None, *, which: str = "val",
                 seed: int = 0) -> tuple[list[Sample], Path]:
    """Labelled images for a fine-tuned run: ``data``'s split, else the run's own split (from run.json).

    Returns (samples of ``which`` split, the dataset folder). The classes must be the model's labels.
    """
    from .._io import read_json
    from ..errors import ArtifactError

    run_dir = Path(run_dir)
    if data is None:
        try:
            cfg = read_json(run_dir / "run.json", "run config")
        except ArtifactError:
            raise DataError(f"{run_dir} has no run.json telling where its images are: pass --eval-data DIR "
                            f"(and --calib-data DIR for int8)") from None
        data = Path(cfg["data"])
        if not data.is_absolute():  # runs written before paths were stored absolute
            data = (run_dir.parent.parent / data) if (run_dir.parent.parent / data).is_dir() else data.absolute()
        if not data.is_dir():
            raise DataError(f"the images {run_dir / 'run.json'} names are not at {data}: pass --eval-data DIR "
                            f"(and --calib-data DIR for int8) with the same classes")
        ds = load_imagefolder(data, val_fraction=cfg.get("val_fraction", 0.2), seed=cfg.get("seed", 0))
    else:
        ds = load_imagefolder(data, seed=seed)
    if ds.classes != list(labels):
        raise DataError(f"classes of {data} ({', '.join(ds.classes)}) differ from the model's labels "
                        f"({', '.join(labels)}): use images of the same classes")
    return (ds.train if which == "train" else ds.val), data


# --- decode-and-resize cache --------------------------------------------------------------
