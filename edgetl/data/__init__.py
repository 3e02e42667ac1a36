"""The first stage: the user's photos. ImageFolder trees read and split (``imagefolder``, torch-free:
bench reads labelled folders with it on a device), decoded images cached (``cache``), and training
batches (``dataset``, the only module here that imports torch, lazily).

    split = load_imagefolder("photos/", val_fraction=0.2, seed=0)   # -> DatasetSplit
    train = ImageDataset(split.train, preprocess, augment="light", cache=ImageCache())
"""
from .cache import ImageCache, default_cache_dir, validate
from .dataset import ImageDataset, build_transform
from .imagefolder import (DatasetSplit, Sample, bench_samples, eval_samples, labelled_images, load_imagefolder,
                          stratified_sample)

__all__ = ["ImageCache", "default_cache_dir", "validate", "ImageDataset", "build_transform", "DatasetSplit", "Sample",
           "bench_samples", "eval_samples", "labelled_images", "load_imagefolder", "stratified_sample"]
