"""The device's numpy/Pillow preprocessing against torchvision's eval transform on real photos.

Measured: the tensors are identical (max |difference| 0.0) for bilinear and bicubic on 24 photos of
24 different sizes from three datasets — torchvision's eval transform on a PIL image resizes with
Pillow too, and our crop offsets and rounding follow its int() arithmetic. The test demands exact
equality. A second test holds the training pipeline (the decode cache) and the device runtime
(files, arrays) to the same tensor.
"""
import numpy as np
import pytest

from conftest import SHARED
from edgetl.runtime.preprocess import Preprocess, load_image

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/datasets (real photos)")


def _photos(n=24):
    from PIL import Image

    paths = sorted(p for p in SHARED.glob("*/val/*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    by_size = {}
    for p in paths[:: max(1, len(paths) // 400)]:  # a spread of sizes and aspect ratios across datasets
        with Image.open(p) as im:
            by_size.setdefault(im.size, p)
    picked = list(by_size.values())[:: max(1, len(by_size) // n)][:n]
    assert len(picked) >= min(n, 8), f"only {len(picked)} distinct photo sizes under {SHARED}"
    return picked


@pytest.mark.parametrize("pp", [Preprocess(), Preprocess(mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                                                          interpolation="bicubic")],
                         ids=["imagenet-bilinear", "lite0-bicubic"])
def test_numpy_preprocessing_matches_torchvision(pp):
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification


    tv = ImageClassification(crop_size=pp.crop, resize_size=pp.resize, mean=pp.mean, std=pp.std,
                             interpolation=InterpolationMode(pp.interpolation), antialias=True)
    photos = _photos()
    ours = np.stack([pp.apply(load_image(p)) for p in photos])
    ref = torch.stack([tv(load_image(p)) for p in photos]).numpy()
    diff = np.abs(ours - ref)
    print(f"{pp.interpolation}: {len(photos)} photos, max |diff| {diff.max():.4f}, mean {diff.mean():.2e}")
    assert diff.max() == 0.0


def test_training_and_device_pipelines_give_the_same_tensor(tmp_path):
    """What the model trains on (ImageDataset through the decode cache, a cache hit the second time) is
    what the device feeds it (Predictor.prepare from the file, from the decoded array, and from the
    frame already cropped to the model's size), on real photos of many sizes."""
    from edgetl.config import ExportConfig, FinetuneConfig
    from edgetl.data import ImageCache, ImageDataset, Sample
    from edgetl.exporter import export
    from edgetl.runtime import Predictor
    from edgetl.training import finetune

    from conftest import make_imagefolder

    data = make_imagefolder(tmp_path / "d", classes=("a", "b"), n_train=4, n_val=2)
    run = finetune(FinetuneConfig(data=data, out=tmp_path / "run", backbone="efficientnet_lite0", weights="none",
                                  epochs=1, workers=0))
    p = Predictor(export(run.out, ExportConfig(parity_images=4)).path)
    photos = _photos(8)
    ds = ImageDataset([Sample(f, 0) for f in photos], p.preprocess, cache=ImageCache(tmp_path / "cache"))
    for i, f in enumerate(photos):
        first, again = ds[i][0].numpy(), ds[i][0].numpy()  # decoded, then from the cache
        device = p.prepare(f)[0]
        decoded = np.asarray(load_image(f))
        np.testing.assert_array_equal(first, again)
        np.testing.assert_array_equal(first, device)
        np.testing.assert_array_equal(device, p.prepare(decoded)[0])
