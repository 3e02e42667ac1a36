"""Export -> bundle -> runtime, on a tiny random-weight run."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from conftest import REPO, make_image, run_cli, tree_hashes
from edgetl.runtime.bundle import parse_manifest
from edgetl.errors import ArtifactError, ConfigError, ExistsError, RuntimeInputError
from edgetl.config import ExportConfig
from edgetl.exporter import export
from edgetl.runtime import Predictor, verify_bundle


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from conftest import tiny_run

    return tiny_run(tmp_path_factory.mktemp("exp"), classes=("a", "b", "c"), n_train=6, epochs=2)[0].out


@pytest.fixture(scope="module")
def bundle(run_dir):
    return export(run_dir, ExportConfig(parity_images=8), force=True)


def test_bundle_contents_and_metadata(bundle):
    import onnx

    names = set(os.listdir(bundle.path))
    assert {"model.onnx", "bundle.json", "parity.npz", "export.json"} <= names
    m = json.loads((bundle.path / "bundle.json").read_text())
    parse_manifest(m)
    assert m["labels"] == ["a", "b", "c"] and m["opset"] >= 17
    props = {p.key: p.value for p in onnx.load(str(bundle.model)).metadata_props}
    for k in ("labels", "preprocess", "backbone", "weights_source", "edgetl_version", "checkpoint_sha256",
              "bundle_format_version"):
        assert f"edgetl.{k}" in props
    assert bundle.parity["fp32"]["rel_diff"] <= 1e-4 and bundle.parity["fp32"]["top1_agreement"] == 1.0
    # dynamic batch axis
    p = Predictor(bundle.path)
    assert p.run(np.zeros((5, 3, 32, 32), np.float32)).shape == (5, 3)


def test_existing_bundle_needs_force(run_dir, bundle):
    before = tree_hashes(bundle.path)
    with pytest.raises(ExistsError, match="--force"):
        export(run_dir, ExportConfig())
    assert tree_hashes(bundle.path) == before


def test_embed_preprocess_matches_external(run_dir, bundle, tmp_path):
    """Every variant takes uint8 frames, int8 included, and gives the float-input model's logits bit for bit."""
    b2 = export(run_dir, ExportConfig(embed_preprocess=True, int8=True, fp16=True, out=tmp_path / "emb",
                                      parity_images=8))
    ext, emb = Predictor(bundle.path), Predictor(b2.path, variant="fp32")
    assert emb.embed and emb.input_shape[1:] == (32, 32, 3)
    imgs = [make_image(tmp_path / f"i{i}.png", (50 + 7 * i, 40), seed=i) for i in range(4)]
    np.testing.assert_array_equal(emb.run(emb.prepare(imgs)), ext.run(ext.prepare(imgs)))
    proof = b2.parity["embedded"]
    assert set(proof) == {"fp32", "int8", "fp16"} and all(p["max_abs_diff_vs_float_input"] == 0.0 for p in proof.values())
    assert proof["int8"]["method"].startswith("quantized input")  # the input QuantizeLinear became a table look-up
    for v in ("int8", "fp16"):
        p = Predictor(b2.path, variant=v)
        assert p.embed and p.prepare(imgs).dtype == np.uint8 and p.run(p.prepare(imgs)).shape == (4, 3)
    m = json.loads((b2.path / "bundle.json").read_text())
    assert m["input"] == {"name": "input", "shape": ["batch", 32, 32, 3], "dtype": "uint8", "layout": "NHWC"}
    assert verify_bundle(b2.path)["ok"]


def test_an_embedding_that_changes_the_logits_fails_the_export_and_writes_nothing(run_dir, tmp_path, monkeypatch):
    import dataclasses

    from edgetl.exporter import embed

    real = embed.embed_input
    monkeypatch.setattr(embed, "embed_input", lambda proto, pp, **kw: real(proto, dataclasses.replace(pp, mean=(0.4,) * 3), **kw))
    with pytest.raises(ArtifactError, match="embedding preprocessing changed the fp32 model's logits"):
        export(run_dir, ExportConfig(embed_preprocess=True, out=tmp_path / "emb", parity_images=8))
    assert not (tmp_path / "emb").exists() and not list(tmp_path.glob(".emb*"))


def test_predict_inputs_and_threads(bundle, tmp_path):
    from PIL import Image

    p = Predictor(bundle.path)
    f = make_image(tmp_path / "x.jpg", (64, 48), fmt="JPEG")
    img = Image.open(f)
    arr = np.asarray(img.convert("RGB"))
    r = p.predict(f, top_k=2)
    assert r.label in ("a", "b", "c") and len(r.top_k) == 2 and abs(sum(pr for _, pr in p.predict(f, 3).top_k) - 1) < 1e-6
    assert p.predict(img).label == r.label == p.predict(arr).label
    assert [x.label for x in p.predict([f, arr])] == [r.label, r.label]
    with pytest.raises(RuntimeInputError, match="HxWx3"):
        p.predict(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(RuntimeInputError, match="uint8"):
        p.predict(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(RuntimeInputError, match="takes"):
        p.run(np.zeros((1, 3, 64, 64), np.float32))
    # 8 threads x 200 calls == serial
    imgs = [make_image(tmp_path / f"t{i}.png", (40 + i, 36), seed=i) for i in range(8)]
    serial = [p.run(p.prepare(i)) for i in imgs]
    results, errors = {}, []

    def work(k):
        try:
            for _ in range(200):
                out = p.run(p.prepare(imgs[k]))
                assert np.array_equal(out, serial[k])
            results[k] = True
        except Exception as e:  # surfaced below
            errors.append(e)

    ts = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors and len(results) == 8


def test_a_camera_frame_gives_the_same_logits_as_the_same_frame_saved_as_a_file(bundle, tmp_path):
    """A crop x crop uint8 array is resized then cropped like any image (it used to go in untouched,
    so the same frame as an array and as a PNG gave different logits)."""
    from PIL import Image

    p = Predictor(bundle.path)
    crop = p.preprocess.crop
    frame = np.random.default_rng(3).integers(0, 256, (crop, crop, 3), dtype=np.uint8)
    Image.fromarray(frame).save(tmp_path / "frame.png")
    np.testing.assert_array_equal(p.prepare(frame), p.prepare(tmp_path / "frame.png"))
    assert p.predict(frame).prob == p.predict(tmp_path / "frame.png").prob


def test_runs_work_from_any_working_directory(tmp_path):
    """finetune with a relative DATA in one folder, export --int8 and bench from another: the run
    records absolute paths, so calibration finds the images and bench finds the checkpoint."""
    from conftest import make_imagefolder

    proj, elsewhere = tmp_path / "proj", tmp_path / "elsewhere"
    make_imagefolder(proj / "photos", classes=("a", "b"), n_train=6, n_val=3)
    elsewhere.mkdir()
    run_cli("finetune", "photos", "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--workers",
            "0", "--epochs", "1", "--out", "models/run", cwd=proj, check=True)
    assert json.loads((proj / "models/run/run.json").read_text())["data"] == str(proj / "photos")
    run_cli("export", proj / "models/run", "--int8", "--max-drop", "100", "--min-agreement", "0", "--calib-size", "8",
            cwd=elsewhere, check=True)
    ex = json.loads((proj / "models/run/bundle/export.json").read_text())
    assert ex["checkpoint"] == str(proj / "models/run/best.pt")
    run_cli("bench", proj / "models/run", "--min-runs", "3", "--min-time", "0", "--no-rss", "--out", "b",
            cwd=tmp_path, check=True)
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    assert "torch" in doc["variants"] and doc["torch_reference"].startswith("eager PyTorch")


def test_tampered_and_truncated_models_refused(bundle, tmp_path):
    import shutil

    for kind in ("flip", "truncate", "swap"):
        b = tmp_path / kind
        shutil.copytree(bundle.path, b)
        model = b / "model.onnx"
        data = bytearray(model.read_bytes())
        if kind == "flip":
            data[len(data) // 2] ^= 0x01
        elif kind == "truncate":
            data = data[: len(data) // 3]
        else:
            data = (b / "parity.npz").read_bytes()
        model.write_bytes(bytes(data))
        with pytest.raises(ArtifactError, match="sha256|bytes but"):
            Predictor(b)


def test_cli_export_verify_predict(run_dir, tmp_path):
    p = run_cli("export", run_dir, "--out", tmp_path / "b", check=True)
    assert "edgetl bench" in p.stdout and "edgetl predict" in p.stdout
    assert run_cli("verify", tmp_path / "b", check=True).returncode == 0
    good = make_image(tmp_path / "g.png", (40, 40))
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    p = run_cli("predict", tmp_path / "b", good, tmp_path / "bad.jpg", "--json")
    assert p.returncode == 1 and "bad.jpg" in p.stderr and "Traceback" not in p.stderr
    assert json.loads(p.stdout.splitlines()[0])["label"] in ("a", "b", "c")


def test_export_config_rejects_typos_up_front():
    with pytest.raises(ConfigError, match="Did you mean"):
        ExportConfig(int8=True, calib_method="entrpy")


def test_runtime_imports_no_torch(bundle, tmp_path):
    code = ("import sys; sys.modules['torch'] = None; sys.modules['torchvision'] = None; sys.modules['onnx'] = None\n"
            "from edgetl.runtime import Predictor, verify_bundle\n"
            f"assert verify_bundle({str(bundle.path)!r})['ok']\n"
            f"print(Predictor({str(bundle.path)!r}).predict(__import__('numpy').zeros((40,40,3),'uint8')).label)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0, p.stderr


# --- hostile manifests (property-based) ---------------------------------------------------------

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
                           max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_manifest_parser_never_crashes_on_garbage(value):
    try:
        parse_manifest(value)
    except ArtifactError:
        pass


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(["format_version", "labels", "preprocess", "files", "variants", "embed_preprocess", "input"]),
       json_values)
def test_manifest_parser_rejects_mutations_cleanly(bundle_manifest, key, value):
    m = dict(bundle_manifest)
    m[key] = value
    try:
        parse_manifest(m)
    except ArtifactError as e:
        assert "\n" not in str(e)


@pytest.fixture(scope="module")
def bundle_manifest(bundle):
    return json.loads((bundle.path / "bundle.json").read_text())


@pytest.mark.parametrize("name", ["../../x", "/etc/passwd", "a/b.onnx", "..", "", "x\x00y"])
def test_path_traversal_in_file_names_refused(bundle_manifest, name):
    m = json.loads(json.dumps(bundle_manifest))
    m["files"][name] = m["files"]["model.onnx"]
    with pytest.raises(ArtifactError, match="plain name|not a plain"):
        parse_manifest(m)


def test_base_install_alone_runs_predict_verify_bench(bundle, device_venv, tmp_path_factory):
    """The device story: a venv with only `pip install edgetl` (no extras: no torch, no onnx) runs
    predict, verify and bench on a bundle this (training) venv exported."""
    root = tmp_path_factory.mktemp("device-run")
    py, cli = device_venv / "bin" / "python", device_venv / "bin" / "edgetl"
    p = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in ('torch', 'torchvision', 'onnx') "
                        "if u.find_spec(m)])"], capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "[]", f"the base install pulled {p.stdout}"
    img = make_image(root / "photo.jpg", (50, 37))
    env = {**os.environ, "EDGETL_CACHE": str(root / "cache")}
    env.pop("PYTHONPATH", None)
    run = lambda *a: subprocess.run([str(cli), *map(str, a)], capture_output=True, text=True, cwd=root, env=env)
    v = run("verify", bundle.path)
    assert v.returncode == 0 and "PASS" in v.stdout, v.stdout + v.stderr
    pr = run("predict", bundle.path, img, "--json")
    assert pr.returncode == 0, pr.stderr
    assert json.loads(pr.stdout.splitlines()[0])["label"] in bundle.labels
    b = run("bench", bundle.path, "--min-runs", "3", "--min-time", "0", "--no-rss", "--out", root / "bench")
    assert b.returncode == 0, b.stdout + b.stderr
    doc = json.loads((root / "bench" / "bench.json").read_text())
    assert doc["variants"]["fp32"]["latency"]["runs"] >= 3 and "torch is not installed" in doc["torch_reference"]
    # the training side on the device install: one line naming the extra, never a traceback
    for argv in (["zoo"], ["export", bundle.path.parent], ["finetune", root]):
        p = run(*argv)
        assert p.returncode == 1 and "Traceback" not in p.stderr, (argv, p.stderr)
        assert "pip install 'edgetl[train]'" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_export_with_qat_trains_from_the_ptq_model_and_reports_it(tmp_path):
    """`export --int8 --qat` runs QAT (here: the 100% target is out of PTQ's reach on random weights),
    from a QDQ twin of the most faithful fast PTQ candidate, and export.json says what it did."""
    from conftest import make_imagefolder

    data = make_imagefolder(tmp_path / "data", classes=("a", "b", "c"), n_train=10, n_val=10)
    run_cli("finetune", data, "--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--workers", "0",
            "--epochs", "1", "--out", tmp_path / "run", check=True)
    p = run_cli("export", tmp_path / "run", "--int8", "--qat", "--qat-epochs", "2", "--min-agreement", "1.0",
                "--max-drop", "100", "--calib-size", "8", check=True)
    q = json.loads((tmp_path / "run" / "bundle" / "export.json").read_text())["quantization"]
    qat = q["qat"]
    assert "int8 made by" in p.stdout and q["method"] in p.stdout
    if "skipped" not in qat:  # PTQ on the fast kernels may already agree on every image by luck
        assert [h["epoch"] for h in qat["history"]] == [0, 1, 2] and qat["device"] == "cpu"
        assert qat["started_from"].startswith("ptq:") and "QAT: 2 epoch(s)" in p.stdout
        assert any(c["method"].startswith("qat:") for c in q["candidates"]) or qat.get("dropped")
