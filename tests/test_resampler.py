"""The 'opencv' resampler (edgetl finetune --resampler opencv): one definition from training to the device,
recorded in the bundle (format 3, which an older reader refuses instead of resizing with PIL)."""
import dataclasses
import json
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, make_imagefolder, run_cli, tiny_run
from edgetl.errors import ArtifactError, MissingDependencyError
from edgetl.runtime.preprocess import Preprocess, load_image

cv2 = pytest.importorskip("cv2", reason="the opencv extra (pip install 'edgetl[opencv]')")

CV = Preprocess(crop=96, resize=128, resampler="opencv")


def _photo(w, h, seed=0) -> np.ndarray:
    """A smooth gradient with noise and a sharp edge: resamplers disagree on it where they should."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x // 7 % 2) * 200], -1)
    return np.clip(a + rng.integers(0, 40, a.shape), 0, 255).astype(np.uint8)


def test_opencv_frame_is_the_integer_box_average_then_the_center_crop():
    a = _photo(512, 384)  # shorter side 384 -> 128: exactly 3x, long side 512 -> 170 (510 px kept)
    assert CV.resized_size(512, 384) == (170, 128)
    box = a[:384, :510].astype(np.float64).reshape(128, 3, 170, 3, 3).mean(axis=(1, 3))
    want = CV.center_crop(box)
    got = CV.frame(a)
    assert got.shape == (96, 96, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(np.float64) - want).max() <= 0.5 + 1e-9  # rounded, nothing else


def test_opencv_frame_is_the_same_from_an_array_a_pil_image_and_the_reference_order():
    for w, h in ((1280, 720), (333, 500), (100, 60), (96, 96)):  # reduce + bilinear, bilinear only, upscale, none
        a = _photo(w, h, seed=w)
        f = CV.frame(a)
        assert f.shape == (96, 96, 3)
        np.testing.assert_array_equal(f, CV.frame(Image.fromarray(a)))
        np.testing.assert_array_equal(f, CV.reference_frame(Image.fromarray(a)))
        if (w, h) != (96, 96):  # a different resampler, a different tensor: the setting is not ignored
            assert (f != dataclasses.replace(CV, resampler="pillow").frame(Image.fromarray(a))).any()


def test_the_setting_serialises_only_when_it_is_not_pil_and_unknown_ones_are_refused():
    assert "resampler" not in Preprocess().to_dict()  # a PIL model's preprocessing reads as before
    assert Preprocess.from_dict(json.loads(CV.to_json())) == CV
    with pytest.raises(ArtifactError, match="unknown resampler 'simd'.*upgrade edgetl"):
        Preprocess.from_dict({**CV.to_dict(), "resampler": "simd"})


def test_without_opencv_installed_the_device_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # import cv2 -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgetl\[opencv\]'"):
        CV.frame(_photo(200, 150))


@pytest.fixture(scope="module")
def opencv_run(tmp_path_factory):
    from edgetl.config import ExportConfig
    from edgetl.exporter import export

    r, data = tiny_run(tmp_path_factory.mktemp("opencv"), n_train=6, size=(300, 200), resampler="opencv")
    return r, export(r.out, ExportConfig(int8=True, max_drop=100, min_agreement=0.0, calib_size=8), force=True), data


def test_training_export_and_device_all_resize_with_opencv(opencv_run):
    import onnx

    from edgetl.data import ImageCache, ImageDataset, Sample
    from edgetl.runtime import Predictor, verify_bundle

    run, bundle, data = opencv_run
    assert json.loads((run.out / "run.json").read_text())["resampler"] == "opencv"
    manifest = json.loads((bundle.path / "bundle.json").read_text())
    assert manifest["format_version"] == 3 and manifest["preprocess"]["resampler"] == "opencv"
    props = {p.key: p.value for p in onnx.load(str(bundle.path / "model.int8.onnx")).metadata_props}
    assert props["edgetl.bundle_format_version"] == "3"
    assert json.loads(props["edgetl.preprocess"])["resampler"] == "opencv"
    p = Predictor(bundle.path, variant="fp32")
    assert p.preprocess.resampler == "opencv"
    photo = next((data / "val").glob("*/*"))
    decoded = np.asarray(load_image(photo))
    ds = ImageDataset([Sample(photo, 0)], p.preprocess, cache=ImageCache(run.out / "cache-test"))
    trained_on = ds[0][0].numpy()
    np.testing.assert_array_equal(trained_on, p.prepare(photo)[0])  # the file
    np.testing.assert_array_equal(trained_on, p.prepare(decoded)[0])  # a camera's raw frame
    pil = dataclasses.replace(p.preprocess, resampler="pillow")
    assert np.abs(trained_on - pil.normalize(pil.frame(Image.fromarray(decoded)))).max() > 0
    _, stages = p.predict_staged(decoded)
    assert set(stages) >= {"decode", "resize", "run"}
    assert verify_bundle(bundle.path)["ok"]


def test_a_format_2_reader_refuses_an_opencv_bundle_instead_of_resizing_with_pil(opencv_run, monkeypatch):
    import edgetl.runtime.bundle as b
    from edgetl.runtime import Predictor

    _, bundle, _ = opencv_run
    monkeypatch.setattr(b, "BUNDLE_VERSION", 2)
    with pytest.raises(ArtifactError, match="upgrade edgetl on this device"):
        Predictor(bundle.path, variant="int8")
    with pytest.raises(ArtifactError, match="upgrade edgetl"):
        Predictor(bundle.path / "model.int8.onnx")


def test_a_bad_resampler_on_the_command_line_is_one_line(tmp_path):
    data = make_imagefolder(tmp_path / "d", classes=("a", "b"), n_train=2, n_val=1)
    p = run_cli("finetune", str(data), "--resampler", "simd", "--out", str(tmp_path / "r"))
    assert_one_line_error(p, "resampler", "opencv")


def test_the_checkpoint_of_an_opencv_run_is_refused_by_an_older_reader(opencv_run, monkeypatch):
    import torch

    import edgetl.zoo.checkpoint as c

    run, _, _ = opencv_run
    assert torch.load(run.out / "best.pt", weights_only=True)["format_version"] == 2
    monkeypatch.setattr(c, "VERSION", 1)  # the previous release's reader would drop 'resampler' and export PIL frames
    with pytest.raises(ArtifactError, match="upgrade edgetl"):
        c.load_checkpoint(run.out)


def test_a_device_without_opencv_is_told_at_load_not_per_image(opencv_run, monkeypatch):
    from edgetl.runtime import Predictor

    _, bundle, _ = opencv_run
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(MissingDependencyError, match=r"edgetl\[opencv\]"):
        Predictor(bundle.path)


def test_verify_checks_this_machines_resize_of_a_held_out_photo(opencv_run, monkeypatch):
    import edgetl.runtime.preprocess as pre
    from edgetl.runtime import verify_bundle

    _, bundle, _ = opencv_run
    manifest = json.loads((bundle.path / "bundle.json").read_text())
    assert manifest["created_by"]["opencv"] == cv2.__version__
    r = verify_bundle(bundle.path)
    assert r["ok"] and r["preprocess"]["resampler"] == "opencv" and r["preprocess"]["max_grey_levels"] == 0
    assert max(r["preprocess"]["photo"][:2]) > 2 * 32  # a real resize (image_size 32), the box reduction included
    # an OpenCV that resamples otherwise (here: nearest neighbour) is caught before any model runs
    monkeypatch.setattr(pre, "opencv_resize", lambda a, size: cv2.resize(a, tuple(size), interpolation=cv2.INTER_NEAREST))
    r = verify_bundle(bundle.path)
    assert not r["ok"] and not r["preprocess"]["ok"] and r["preprocess"]["max_grey_levels"] > 1


def test_opencv_threads_are_set_inside_the_block_and_restored_after():
    from edgetl.runtime.preprocess import opencv_threads

    before = cv2.getNumThreads()
    with opencv_threads(1):
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == before
    with opencv_threads(None):  # the ways with one session for every core leave OpenCV's default
        assert cv2.getNumThreads() == before
    with pytest.raises(RuntimeError), opencv_threads(1):
        raise RuntimeError
    assert cv2.getNumThreads() == before
