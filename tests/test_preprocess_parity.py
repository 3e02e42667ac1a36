"""The device's numpy/Pillow preprocessing against torchvision's eval transform on real photos.

Measured: the tensors are identical (max |difference| 0.0) for bilinear and bicubic on 24 photos of
24 different sizes from three datasets — torchvision's eval transform on a PIL image resizes with
Pillow too, and our crop offsets and rounding follow its int() arithmetic. The test demands exact
equality, and identical top-1 of real pretrained weights on every photo.
"""
import numpy as np
import pytest

from conftest import SHARED
from edgetl.preprocess import Preprocess, load_image

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/datasets (real photos)")


def _photos(n=24):
    from PIL import Image

    paths = sorted(p for p in SHARED.glob("*/val/*/*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    by_size = {}
    for p in paths[:: max(1, len(paths) // 400)]:  # a spread of sizes and aspect ratios across datasets
        with Image.open(p) as im:
            by_size.setdefault(im.size, p)
    picked = list(by_size.values())[:: max(1, len(by_size) // n)][:n]
    assert len(picked) >= 20, f"only {len(picked)} distinct photo sizes under {SHARED}"
    return picked


@pytest.mark.parametrize("pp", [Preprocess(), Preprocess(mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                                                          interpolation="bicubic")],
                         ids=["imagenet-bilinear", "lite0-bicubic"])
def test_numpy_preprocessing_matches_torchvision(pp):
    import torch
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms._presets import ImageClassification

    from edgetl import zoo

    tv = ImageClassification(crop_size=pp.crop, resize_size=pp.resize, mean=pp.mean, std=pp.std,
                             interpolation=InterpolationMode(pp.interpolation), antialias=True)
    photos = _photos()
    ours = np.stack([pp.apply(load_image(p)) for p in photos])
    ref = torch.stack([tv(load_image(p)) for p in photos]).numpy()
    diff = np.abs(ours - ref)
    print(f"{pp.interpolation}: {len(photos)} photos, max |diff| {diff.max():.4f}, mean {diff.mean():.2e}")
    assert diff.max() == 0.0
    spec = zoo.get_spec("efficientnet_lite0")  # real ImageNet weights and their 1000-class head
    model = spec.build()
    zoo._strict_load(model, zoo._load_pretrained_state(spec), "lite0")
    model.eval()
    with torch.no_grad():
        a, b = model(torch.from_numpy(ours)).argmax(1), model(torch.from_numpy(ref)).argmax(1)
    assert torch.equal(a, b)
