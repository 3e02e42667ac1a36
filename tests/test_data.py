
import numpy as np
import pytest
from PIL import Image

from conftest import make_image, make_imagefolder
from edgetl.data import ImageCache, ImageDataset, load_imagefolder, stratified_sample, validate
from edgetl.errors import DataError
from edgetl.runtime.preprocess import Preprocess, load_image

PP = Preprocess(crop=32, resize=36)


def test_train_val_layout(tiny_data):
    ds = load_imagefolder(tiny_data)
    assert ds.classes == ["cat", "dog"]
    assert len(ds.train) == 16 and len(ds.val) == 6
    assert ds.val_source == "val/ folder"


def test_stratified_split_is_seeded_and_disjoint(tmp_path):
    root = make_imagefolder(tmp_path / "d", n_train=10, val=False)
    a = load_imagefolder(root, val_fraction=0.3, seed=1)
    b = load_imagefolder(root, val_fraction=0.3, seed=1)
    c = load_imagefolder(root, val_fraction=0.3, seed=2)
    assert [s.path for s in a.val] == [s.path for s in b.val]
    assert [s.path for s in a.val] != [s.path for s in c.val]
    assert not {s.path for s in a.val} & {s.path for s in a.train}
    assert sorted(s.label for s in a.val) == [0, 0, 0, 1, 1, 1]  # 30% of each class


@pytest.mark.parametrize("setup,needle", [
    (lambda r: None, "not found"),
    (lambda r: r.mkdir(), "is empty"),
    (lambda r: make_imagefolder(r, classes=("only",)), "only one class"),
    (lambda r: (make_imagefolder(r), (r / "val" / "dog").rename(r / "val" / "wolf")), "differ"),
    (lambda r: (make_imagefolder(r), (r / "train" / "empty").mkdir()), "has no images"),
])
def test_bad_directories_are_one_clear_error(tmp_path, setup, needle):
    root = tmp_path / "d"
    setup(root)
    with pytest.raises(DataError, match=needle) as e:
        load_imagefolder(root)
    assert str(root) in str(e.value)


def test_corrupt_truncated_and_non_images_are_skipped(tmp_path, caplog):
    root = make_imagefolder(tmp_path / "d")
    (root / "train" / "cat" / "notes.txt").write_text("hello")
    (root / "train" / "cat" / "fake.jpg").write_bytes(b"not a jpeg at all")
    good = make_image(tmp_path / "x.jpg", (64, 64), fmt="JPEG")
    data = good.read_bytes()
    (root / "train" / "dog" / "trunc.jpg").write_bytes(data[: len(data) // 2])
    ds = load_imagefolder(root)
    assert ds.skipped == {"not an image": 1}
    ok, bad = validate(ds.train, PP, ImageCache(tmp_path / "c"))
    assert len(ok) == 16 and bad == {"corrupt or unreadable": 2}
    assert sum("skipped 2 unreadable" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    p = tmp_path / f"img.{'tif' if mode in ('CMYK', 'I;16') else 'png'}"
    if mode == "I;16":
        Image.fromarray((np.arange(48 * 40).reshape(40, 48) * 30).astype(np.uint16)).save(p)
    else:
        make_image(p, mode=mode)
    img = load_image(p)
    assert img.mode == "RGB" and img.size == (48, 40)


def test_exif_orientation_is_honoured(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif)
    assert load_image(p).size == (20, 40)


def test_cache_hits_and_invalidation(tmp_path):
    p = make_image(tmp_path / "a.png", (64, 48))
    cache = ImageCache(tmp_path / "c")
    first = np.asarray(cache.load(p, PP))
    assert first.shape == (36, 48, 3)
    assert len(list((tmp_path / "c").rglob("*.npy"))) == 1
    np.testing.assert_array_equal(np.asarray(cache.load(p, PP)), first)
    make_image(p, (64, 48), seed=9)  # edited photo -> new key
    import os
    os.utime(p, ns=(1, 1))
    assert not np.array_equal(np.asarray(cache.load(p, PP)), first)


def test_dataset_eval_matches_runtime_preprocessing(tiny_data, tmp_path):
    ds = load_imagefolder(tiny_data)
    d = ImageDataset(ds.val, PP, cache=ImageCache(tmp_path / "c"))
    x, y = d[0]
    ref = PP.apply(load_image(ds.val[0].path))
    np.testing.assert_array_equal(x.numpy(), ref)
    aug = ImageDataset(ds.train, PP, augment="strong")
    assert tuple(aug[0][0].shape) == (3, 32, 32)


def test_stratified_sample_is_balanced(tiny_data):
    ds = load_imagefolder(tiny_data)
    s = stratified_sample(ds.train, 6, seed=0)
    assert [x.label for x in s].count(0) == 3
    assert stratified_sample(ds.train, 6, seed=0) == s
