"""Every bad input of DESIGN.md section 7, through the real CLI, as a user would hit it.

One workspace holds a good dataset, a fine-tuned run and its bundle, plus one broken copy per case.
All cases run (two at a time, each its own process forked from one that imported torch once) against it; each must exit 1 with exactly one `error:` line that
names the thing and the fix, and no traceback. Afterwards every file of the workspace is
byte-identical and no new file appeared: a refused command writes nothing and loses nothing.
"""
from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path

import pytest
import torch

from conftest import PWNED, PickledCode, assert_one_line_error, make_image, make_imagefolder, run_cli, run_cli_batch, tiny_run, tree_hashes


def _png_header_only(path: Path, w: int, h: int) -> None:
    """A PNG that claims w x h pixels (a decompression bomb as far as any decoder is concerned)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def _edit_json(path: Path, fn) -> None:
    d = json.loads(path.read_text())
    fn(d)
    path.write_text(json.dumps(d))


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}
TINY = ["--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--workers", "0", "--epochs", "1"]

# (case id, argv, env, what the one line must say). "{w}" is the workspace, "{o}" a fresh output path.
CASES = [
    # data
    ("data-missing", ["finetune", "{w}/nope", *TINY], None, ["{w}/nope", "not found"]),
    ("data-empty", ["finetune", "{w}/empty", *TINY], None, ["{w}/empty", "empty"]),
    ("data-one-class", ["finetune", "{w}/oneclass", *TINY], None, ["only one class"]),
    ("data-classes-differ", ["finetune", "{w}/differ", *TINY], None, ["differ"]),
    ("data-class-without-images", ["finetune", "{w}/hollow", *TINY], None, ["has no images"]),
    ("data-all-unreadable", ["finetune", "{w}/allbad", *TINY], None, ["{w}/allbad"]),
    ("data-is-a-file", ["finetune", "{w}/data/train/a/a0.png", *TINY], None, ["a0.png"]),
    # fine-tune options and configs
    ("backbone-unknown", ["finetune", "{w}/data", "--backbone", "resnet81", "--weights", "none"], None,
     ["did you mean 'resnet18'"]),
    ("strategy-unknown", ["finetune", "{w}/data", "--strategy", "gradul", *TINY], None, ["did you mean 'gradual'"]),
    ("l2sp-with-linear", ["finetune", "{w}/data", "--l2sp", "0.1", *TINY], None, ["full or gradual"]),
    ("lp-epochs-with-linear", ["finetune", "{w}/data", "--lp-epochs", "5", *TINY], None, ["--lp-epochs", "drop"]),
    ("epochs-zero", ["finetune", "{w}/data", *TINY, "--epochs", "0"], None, ["--epochs"]),
    ("config-unknown-key", ["finetune", "{w}/data", "--config", "{w}/typo.json", *TINY], None,
     ["typo.json", "did you mean 'epochs'"]),
    ("config-not-json", ["finetune", "{w}/data", "--config", "{w}/broken.json", *TINY], None, ["broken.json"]),
    ("config-missing", ["finetune", "{w}/data", "--config", "{w}/absent.json", *TINY], None, ["absent.json"]),
    ("config-wrong-type", ["finetune", "{w}/data", "--config", "{w}/wrongtype.json", *TINY], None, ["lr"]),
    ("weights-offline", ["finetune", "{w}/data", "--backbone", "resnet18", "--image-size", "32", "--workers", "0",
                         "--epochs", "1", "--out", "{o}"], {**OFFLINE, "TORCH_HOME": "{w}/torch-home"},
     ["resnet18-f37072fd.pth", "TORCH_HOME", "--weights none"]),
    ("weights-missing-file", ["finetune", "{w}/data", "--backbone", "resnet18", "--weights", "{w}/none.pt",
                              "--image-size", "32", "--epochs", "1", "--out", "{o}"], None, ["none.pt", "not found"]),
    ("weights-pickled-code", ["finetune", "{w}/data", "--backbone", "resnet18", "--weights", "{w}/evil.pt",
                              "--image-size", "32", "--epochs", "1", "--out", "{o}"], None, ["evil.pt", "pickled code"]),
    ("weights-other-architecture", ["finetune", "{w}/data", "--backbone", "mobilenet_v3_small", "--weights",
                                    "{w}/run/best.pt", "--image-size", "32", "--epochs", "1", "--out", "{o}"], None,
     ["do not fit"]),
    ("run-exists", ["finetune", "{w}/data", *TINY, "--out", "{w}/run"], None, ["--force"]),
    ("resume-changed-config", ["finetune", "{w}/data", *TINY, "--lr", "0.5", "--out", "{w}/run", "--resume"], None,
     ["differ"]),
    ("resume-nothing", ["finetune", "{w}/data", *TINY, "--out", "{w}/empty", "--resume"], None, ["last.pt"]),
    ("run-locked", ["finetune", "{w}/data", *TINY, "--out", "{w}/locked", "--force"], None,
     ["another edgetl process"]),
    # export
    ("export-no-checkpoint", ["export", "{w}/empty"], None, ["best.pt"]),
    ("export-truncated-checkpoint", ["export", "{w}/run-trunc", "--out", "{o}"], None, ["best.pt", "re-run"]),
    ("export-pickled-checkpoint", ["export", "{w}/run-evil", "--out", "{o}"], None, ["best.pt", "pickled code"]),
    ("export-newer-checkpoint", ["export", "{w}/run-newer", "--out", "{o}"], None, ["upgrade edgetl"]),
    ("export-bundle-exists", ["export", "{w}/run", "--out", "{w}/bundle"], None, ["--force"]),
    ("export-int8-option-without-int8", ["export", "{w}/run", "--preset", "arm64", "--out", "{o}"], None, ["--int8"]),
    ("export-calib-method-unknown", ["export", "{w}/run", "--int8", "--calib-method", "entrpy", "--out", "{o}"], None,
     ["did you mean 'entropy'"]),
    ("export-calib-size-zero", ["export", "{w}/run", "--int8", "--calib-size", "0", "--out", "{o}"], None,
     ["--calib-size"]),
    ("export-calib-no-images", ["export", "{w}/run", "--int8", "--calib-data", "{w}/calib-empty", "--out", "{o}"],
     None, ["calib-empty"]),
    ("export-opset-unsupported", ["export", "{w}/run", "--opset", "9", "--out", "{o}"], None, ["opset"]),
    ("export-qat-without-train-images", ["export", "{w}/run-moved", "--int8", "--qat", "--eval-data", "{w}/data",
                                         "--out", "{o}"], None, ["--qat", "train images", "--calib-data"]),
    ("export-qat-without-int8", ["export", "{w}/run", "--qat", "--out", "{o}"], None, ["--int8"]),
    ("timm-unknown-model", ["finetune", "{w}/data", "--backbone", "timm/mobilenetv4_conv_smal", "--weights", "none",
                            "--out", "{o}"], None, ["did you mean timm/mobilenetv4_conv_small"]),
    ("timm-weights-offline", ["finetune", "{w}/data", "--backbone", "timm/mobilenetv4_conv_small", "--image-size", "32",
                              "--epochs", "1", "--out", "{o}"], {"HF_HUB_CACHE": "{w}/hf-empty"},
     ["hf-empty", "--weights none"]),
    ("sweep-empty-backbones", ["sweep", "{w}/data", "--backbones", ",", "--out", "{o}"], None, ["--backbones"]),
    # bundle on the device: predict / verify / bench
    ("bundle-missing", ["predict", "{w}/nothing", "{w}/data/val/a/a0.png"], None, ["{w}/nothing"]),
    ("bundle-bitflip", ["verify", "{w}/b-flip"], None, ["model.onnx", "sha256"]),
    ("bundle-truncated", ["predict", "{w}/b-trunc", "{w}/data/val/a/a0.png"], None, ["model.onnx"]),
    ("bundle-swapped-file", ["verify", "{w}/b-swap"], None, ["model.onnx"]),
    ("bundle-newer-format", ["predict", "{w}/b-newer", "{w}/data/val/a/a0.png"], None, ["upgrade edgetl"]),
    ("bundle-json-garbage", ["verify", "{w}/b-garbage"], None, ["bundle.json"]),
    ("bundle-json-wrong-type", ["verify", "{w}/b-types"], None, ["labels"]),
    ("bundle-json-missing-key", ["verify", "{w}/b-nokey"], None, ["preprocess"]),
    ("bundle-json-huge-size", ["verify", "{w}/b-huge"], None, ["size"]),
    ("bundle-path-traversal", ["verify", "{w}/b-traversal"], None, ["../../x"]),
    ("onnx-without-labels", ["predict", "{w}/bare.onnx", "{w}/data/val/a/a0.png"], None, ["label table"]),
    ("predict-not-an-image", ["predict", "{w}/bundle", "{w}/notes.jpg"], None, ["notes.jpg"]),
    ("predict-image-missing", ["predict", "{w}/bundle", "{w}/gone.png"], None, ["gone.png"]),
    ("predict-decompression-bomb", ["predict", "{w}/bundle", "{w}/bomb.png"], None, ["bomb.png", "too large"]),
    ("predict-int8-absent", ["predict", "{w}/bundle", "{w}/data/val/a/a0.png", "--int8"], None, ["--int8"]),
    ("bench-target-unknown", ["bench", "{w}/bundle", "--target", "rpi6", "--out", "{o}"], None,
     ["did you mean 'rpi5'"]),
    ("bench-provider-missing", ["bench", "{w}/bundle", "--providers", "CUDAExecutionProvider", "--out", "{o}"], None,
     ["not installed"]),
    ("bench-nothing", ["bench", "{w}/nothing", "--out", "{o}"], None, ["nothing to bench"]),
    ("bench-data-other-classes", ["bench", "{w}/bundle", "--data", "{w}/other", "--no-rss", "--out", "{o}"], None,
     ["differ"]),
    ("bench-scenario-unknown", ["bench", "{w}/bundle", "--scenario", "offlin", "--out", "{o}"], None,
     ["did you mean 'offline'"]),
    ("bench-streams-zero", ["bench", "{w}/bundle", "--streams", "0", "--out", "{o}"], None, ["--streams 0"]),
    ("bench-duration-negative", ["bench", "{w}/bundle", "--duration", "-5", "--out", "{o}"], None, ["--duration"]),
    ("predict-fp16-absent", ["predict", "{w}/bundle", "{w}/data/val/a/a0.png", "--fp16"], None, ["fp16"]),
    ("predict-two-variants", ["predict", "{w}/bundle", "{w}/data/val/a/a0.png", "--fp16", "--int8"], None,
     ["--fp16"]),
]
if not torch.cuda.is_available():
    CASES.append(("cuda-absent", ["finetune", "{w}/data", *TINY, "--device", "cuda", "--out", "{o}"], None,
                  ["--device cpu"]))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from edgetl.config import ExportConfig
    from edgetl.exporter import export

    w = tmp_path_factory.mktemp("ws")
    run = tiny_run(w, n_train=4, n_val=2)[0].out
    bundle = export(run, ExportConfig(parity_images=4)).path
    shutil.move(str(bundle), w / "bundle")
    bundle = w / "bundle"
    # broken datasets
    (w / "empty").mkdir()
    make_imagefolder(w / "oneclass", classes=("only",), n_train=3, n_val=1)
    make_imagefolder(w / "differ", n_train=3, n_val=1)
    (w / "differ" / "val" / "dog").rename(w / "differ" / "val" / "wolf")
    make_imagefolder(w / "hollow", n_train=3, n_val=1)
    (w / "hollow" / "train" / "bird").mkdir()
    for c in ("x", "y"):
        for i in range(2):
            (w / "allbad" / "train" / c).mkdir(parents=True, exist_ok=True)
            (w / "allbad" / "train" / c / f"{i}.jpg").write_bytes(b"not a jpeg")
    make_imagefolder(w / "other", classes=("x", "y"), n_train=2, n_val=2)
    make_imagefolder(w / "calib-empty", classes=("a", "b"), n_train=0, n_val=0, val=False)
    (w / "calib-empty" / "train" / "a").mkdir(parents=True, exist_ok=True)
    # configs and weights
    (w / "typo.json").write_text(json.dumps({"epochz": 3}))
    (w / "broken.json").write_text('{"epochs": 3,')
    (w / "wrongtype.json").write_text(json.dumps({"lr": "fast"}))
    torch.save({"x": PickledCode()}, w / "evil.pt")
    (w / "locked").mkdir()
    from edgetl._io import RunLock

    held = RunLock(w / "locked").__enter__()  # held by a live process (this one) while the cases run
    # broken runs
    _edit_json(_copy(run, w / "run-moved") / "run.json", lambda d: d.update(data=str(w / "moved-away")))
    for name, fn in (("run-trunc", lambda p: p.write_bytes(p.read_bytes()[:5000])),
                     ("run-evil", lambda p: torch.save({"format": "edgetl-checkpoint", "x": PickledCode()}, p)),
                     ("run-newer", lambda p: torch.save({**torch.load(p, weights_only=True), "format_version": 99}, p))):
        fn(_copy(run, w / name) / "best.pt")
    # broken bundles
    for name in ("flip", "trunc", "swap", "newer", "garbage", "types", "nokey", "huge", "traversal"):
        _copy(bundle, w / f"b-{name}")
    m = w / "b-flip" / "model.onnx"
    data_ = bytearray(m.read_bytes())
    data_[len(data_) // 2] ^= 1
    m.write_bytes(bytes(data_))
    m = w / "b-trunc" / "model.onnx"
    m.write_bytes(m.read_bytes()[: m.stat().st_size // 3])
    shutil.copy(w / "b-swap" / "parity.npz", w / "b-swap" / "model.onnx")
    _edit_json(w / "b-newer" / "bundle.json", lambda d: d.update(format_version=99))
    (w / "b-garbage" / "bundle.json").write_bytes(b"\x00\xff{not json")
    _edit_json(w / "b-types" / "bundle.json", lambda d: d.update(labels="a,b"))
    _edit_json(w / "b-nokey" / "bundle.json", lambda d: d.pop("preprocess"))
    _edit_json(w / "b-huge" / "bundle.json", lambda d: d["files"]["model.onnx"].update(size=10 ** 15))
    _edit_json(w / "b-traversal" / "bundle.json",
               lambda d: d["files"].update({"../../x": d["files"]["model.onnx"]}))
    import onnx

    proto = onnx.load(str(bundle / "model.onnx"))
    del proto.metadata_props[:]
    onnx.save(proto, str(w / "bare.onnx"))
    (w / "notes.jpg").write_text("shopping list")
    _png_header_only(w / "bomb.png", 20000, 20000)
    make_image(w / "ok.png", (40, 40))
    yield w
    held.__exit__(None, None, None)


@pytest.fixture(scope="module")
def outcomes(workspace, tmp_path_factory):
    w = workspace
    outs = tmp_path_factory.mktemp("outs")
    before = tree_hashes(w)

    def sub(s: str, cid: str) -> str:
        return s.replace("{w}", str(w)).replace("{o}", str(outs / cid))

    batch = {cid: {"argv": [sub(a, cid) for a in argv], "env": {k: sub(v, cid) for k, v in (env or {}).items()},
                   "cwd": w} for cid, argv, env, _ in CASES}
    done = run_cli_batch(batch, jobs=2)
    results = {cid: (done[cid], [sub(n, cid) for n in needles]) for cid, _, _, needles in CASES}
    return results, before, tree_hashes(w), outs


@pytest.mark.parametrize("cid", [c[0] for c in CASES])
def test_bad_input_is_one_clear_line(outcomes, cid):
    results, *_ = outcomes
    p, needles = results[cid]
    assert_one_line_error(p, *needles)


def test_nothing_existing_was_changed_and_nothing_half_written(outcomes):
    _, before, after, outs = outcomes
    assert after == before, {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert not [p for p in outs.rglob("*") if p.is_file()], "a refused command left files behind"
    assert not PWNED.exists()


def test_debug_env_shows_the_traceback(workspace):
    p = run_cli("predict", workspace / "nothing", workspace / "ok.png", env={"EDGETL_DEBUG": "1"})
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_unreadable_images_are_skipped_with_a_count_not_a_crash(workspace, tmp_path):
    data = _copy(workspace / "data", tmp_path / "mixed")
    (data / "train" / "a" / "notes.txt").write_text("not an image")
    (data / "train" / "a" / "fake.jpg").write_bytes(b"not a jpeg")
    _png_header_only(data / "train" / "b" / "bomb.png", 20000, 20000)
    p = run_cli("finetune", data, *TINY, "--out", tmp_path / "r", check=True)
    assert "skipped 2 unreadable" in p.stderr and "Traceback" not in p.stderr
    assert (tmp_path / "r" / "best.pt").is_file()
