"""What a device can rely on: bundles an older reader still reads, image bytes parsed only by allowed
decoders, target profiles refused when they would bench nonsense."""
import dataclasses
import io
import json
import threading
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import assert_one_line_error, run_cli, tiny_run
from edgetl.config import ExportConfig
from edgetl.errors import ArtifactError, ConfigError, RuntimeInputError
from edgetl.exporter import export
from edgetl.runtime import Predictor, verify_bundle
from edgetl.runtime.preprocess import ALLOWED_FORMATS, load_image
from edgetl.targets import get_target


# --- old readers ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def int8_only(tmp_path_factory):
    """A fresh fp32 + int8 bundle (no fp16) of a tiny random-weight model."""
    r, _ = tiny_run(tmp_path_factory.mktemp("old-reader"), n_train=6)
    return export(r.out, ExportConfig(int8=True, max_drop=100, min_agreement=0.0, calib_size=8), force=True)


@pytest.fixture
def format1_reader(monkeypatch):
    """The previous release's rules: a reader that knows bundle format 1 only."""
    import edgetl.runtime.bundle as b

    monkeypatch.setattr(b, "BUNDLE_VERSION", 1)


def test_a_bundle_without_fp16_is_format_1_in_its_manifest_and_in_every_model(int8_only):
    import onnx

    assert json.loads((int8_only.path / "bundle.json").read_text())["format_version"] == 1
    for f in ("model.onnx", "model.int8.onnx"):
        props = {p.key: p.value for p in onnx.load(str(int8_only.path / f)).metadata_props}
        assert props["edgetl.bundle_format_version"] == "1", f


def test_an_older_reader_reads_a_fresh_fp32_int8_bundle(int8_only, format1_reader):
    for v in ("fp32", "int8"):
        p = Predictor(int8_only.path, variant=v)
        assert p.predict(np.zeros((40, 48, 3), np.uint8)).label in ("a", "b")
    assert verify_bundle(int8_only.path)["ok"]
    # a lone .onnx (no bundle.json) is read through its metadata: format 1 there too
    assert Predictor(int8_only.path / "model.int8.onnx").variant == "int8"


def test_verify_checks_this_machines_resize_and_catches_a_pillow_that_resamples_otherwise(int8_only, monkeypatch):
    """parity.npz carries a held-out photo (as decoded) and export's frame of it: a device whose Pillow
    resizes differently fails verify before any model runs, instead of drifting silently."""
    import edgetl.runtime.preprocess as pre

    r = verify_bundle(int8_only.path)
    assert r["ok"] and r["preprocess"] == {**r["preprocess"], "resampler": "pillow", "max_grey_levels": 0, "ok": True}
    assert json.loads((int8_only.path / "bundle.json").read_text())["created_by"]["pillow"] == Image.__version__
    monkeypatch.setitem(pre._RESAMPLE, "bilinear", Image.Resampling.NEAREST)
    monkeypatch.setitem(pre._RESAMPLE, "bicubic", Image.Resampling.NEAREST)
    r = verify_bundle(int8_only.path)
    assert not r["ok"] and r["preprocess"]["max_grey_levels"] > 1


def test_an_older_reader_says_upgrade_for_an_fp16_bundle(int8_bundle, format1_reader):
    b, _ = int8_bundle  # conftest: int8 + fp16, so format 2
    with pytest.raises(ArtifactError, match="upgrade edgetl on this device"):
        Predictor(b.path, variant="fp32")
    with pytest.raises(ArtifactError, match="upgrade edgetl"):
        Predictor(b.path / "model.fp16.onnx")


# --- image bytes ----------------------------------------------------------------------------------

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n/Times-Roman findfont 12 scalefont setfont\n"
       b"newpath 0 0 moveto (x) show showpage\n%%EOF\n")


def _encoded(fmt: str, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 120, np.uint8)).convert(mode).save(buf, fmt)
    return buf.getvalue()


def test_only_allowed_decoders_parse_input_bytes(monkeypatch):
    from PIL import EpsImagePlugin

    called = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: called.append(1))
    with pytest.raises(RuntimeInputError, match="allowed format.*JPEG, PNG") as e:
        load_image(EPS)
    assert not called, "the EPS plugin was handed untrusted bytes"
    assert "\n" not in str(e.value)
    for fmt in ("JPEG", "PNG", "BMP", "WEBP"):
        assert load_image(_encoded(fmt)).size == (8, 8), fmt
    assert {"JPEG", "PNG", "BMP", "WEBP"} <= set(ALLOWED_FORMATS)
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(buf, "TGA")  # a real image, not on the list
    with pytest.raises(RuntimeInputError, match="allowed format"):
        load_image(buf.getvalue())


def test_decoding_touches_no_process_wide_warning_filter(monkeypatch):
    """catch_warnings swaps the process's warning filters: not thread-safe in a Predictor called from many
    threads. The pixel limit is checked explicitly instead."""
    def refuse(*a, **k):
        raise AssertionError("warnings.catch_warnings in the decode path")

    monkeypatch.setattr(warnings, "catch_warnings", refuse)
    jpeg = _encoded("JPEG")
    errors = []

    def decode():
        try:
            for _ in range(50):
                load_image(jpeg)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=decode) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors, errors[0]


def test_the_pixel_limit_refuses_a_bomb_before_decoding(monkeypatch):
    import edgetl.runtime.preprocess as pre

    monkeypatch.setattr(pre, "MAX_IMAGE_PIXELS", 8 * 8 - 1)
    with pytest.raises(RuntimeInputError, match="too large"):
        load_image(_encoded("PNG"))


# --- target profiles ------------------------------------------------------------------------------

@pytest.mark.parametrize("field,value,needle", [
    ("fps", 0, "'fps' is 0"), ("streams", 0, "'streams' is 0"), ("deadline_ms", -1, "'deadline_ms' is -1"),
    ("threads", -2, "'threads' is -2"), ("providers", ["CUDAExecutionProviderr"], "unknown CUDAExecutionProviderr"),
    ("resolution", "1280*720", "resolution"),
])
def test_a_target_file_that_would_bench_nonsense_is_refused_naming_field_and_file(tmp_path, field, value, needle):
    t = {**dataclasses.asdict(get_target("robot-4cam")), "name": "bad", field: value}
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(t))
    with pytest.raises(ConfigError, match=needle) as e:
        get_target(str(f))
    assert str(f) in str(e.value)


def test_every_built_in_profile_passes_the_check():
    from edgetl.targets import list_targets, validate

    for t in list_targets():
        validate(t, t.name)


def test_bench_with_a_zero_fps_target_is_one_line_not_a_pass(tmp_path, int8_bundle):
    b, _ = int8_bundle
    t = {**dataclasses.asdict(get_target("robot-4cam")), "name": "bad", "fps": 0}
    (tmp_path / "bad.json").write_text(json.dumps(t))
    p = run_cli("bench", b.path, "--target", tmp_path / "bad.json", "--scenario", "camera-rig", "--no-rss")
    assert_one_line_error(p, "'fps' is 0", "bad.json")
