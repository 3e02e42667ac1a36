"""The device's numpy/Pillow preprocessing against torchvision's eval transform on real photos.

The reference order (resize the whole image, then crop: ``Preprocess.reference_frame``) is identical to
torchvision's eval transform (max |difference| 0.0, bilinear and bicubic, 24 photos of 24 sizes from three
datasets): torchvision resizes a PIL image with Pillow too, and our crop offsets follow its int()
arithmetic. What every stage runs (``Preprocess.frame``) resamples only the crop's region, with the same
filter, scale and centres: Pillow's fixed-point weights can put a pixel one grey level apart, never more,
and the ImageNet classifier's top-1 (1000 classes, many near-ties) does not move on these photos. The
training pipeline (the decode cache), export and the device runtime (files, arrays) give the same tensor.
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
    images = [load_image(p) for p in photos]
    reference = np.stack([pp.normalize(pp.reference_frame(im)) for im in images])
    ref = torch.stack([tv(im) for im in images]).numpy()
    assert np.abs(reference - ref).max() == 0.0  # the reference order is torchvision's, exactly
    grey = np.stack([np.abs(pp.frame(im).astype(int) - pp.reference_frame(im).astype(int)).max() for im in images])
    fast = np.stack([pp.apply(im) for im in images])
    print(f"{pp.interpolation}: {len(photos)} photos, frame vs reference: max {grey.max()} grey level(s), "
          f"{np.mean(grey > 0):.0%} of photos differ somewhere")
    assert grey.max() <= 1
    assert np.abs(fast - ref).max() <= 1.0001 / 255 / min(pp.std)


def test_the_fast_frame_moves_no_imagenet_prediction_on_real_photos():
    """Lite0's own ImageNet classifier (real weights, 1000 classes): top-1 of the device's frame equals
    top-1 of the reference order on photos of many sizes; the logits move by a rounding's worth."""
    import torch

    from edgetl import zoo

    spec = zoo.get_spec("efficientnet_lite0")
    net = spec.build()
    zoo._strict_load(net, zoo._load_pretrained_state(spec), "lite0")
    pp = spec.preprocess
    images = [load_image(p) for p in _photos()]
    with torch.no_grad():
        a = net.eval()(torch.from_numpy(np.stack([pp.apply(im) for im in images]))).numpy()
        b = net(torch.from_numpy(np.stack([pp.normalize(pp.reference_frame(im)) for im in images]))).numpy()
    assert (a.argmax(1) == b.argmax(1)).all()
    assert np.abs(a - b).max() < 0.05 * np.abs(b).max()


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
