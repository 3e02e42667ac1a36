"""int8 export and bench on a tiny random-weight run (behaviour, not speed: speed lives in benchmarks/)."""
import json
import os
from pathlib import Path

import pytest

from conftest import assert_one_line_error, make_imagefolder, run_cli
from edgetl.bench import BenchConfig, bench
from edgetl.errors import ConfigError
from edgetl.export import ExportConfig, export
from edgetl.finetune import FinetuneConfig, finetune
from edgetl.quantize import PRESETS
from edgetl.runtime import Predictor, verify_bundle
from edgetl.targets import get_target, host_preset, list_targets


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("q")
    os.environ["EDGETL_CACHE"] = str(root / "cache")
    data = make_imagefolder(root / "data", classes=("a", "b"), n_train=10, n_val=6)
    r = finetune(FinetuneConfig(data=data, out=root / "run", backbone="resnet18", weights="none", image_size=32,
                                workers=0, epochs=3, lr=1e-2))
    return export(r.out, ExportConfig(int8=True, max_drop=100, calib_size=16, parity_images=12), force=True), data


def test_int8_bundle_is_verified_and_smaller(int8_bundle):
    b, _ = int8_bundle
    assert b.int8_model is not None
    m = json.loads((b.path / "bundle.json").read_text())
    assert m["variants"]["int8"] == "model.int8.onnx" and m["quantization"]["preset"] == host_preset()
    assert m["files"]["model.int8.onnx"]["size"] <= 0.35 * m["files"]["model.onnx"]["size"]
    q = b.quantization
    assert q["verdict"] and len(q["candidates"]) >= 1 and q["parity"]["n"] == 12
    assert (b.path / "sensitivity.png").is_file() or not q["most_sensitive"]
    assert Predictor(b.path).variant == "int8"
    assert verify_bundle(b.path)["ok"]


def test_presets_are_data_and_impossible_combinations_rejected():
    assert {"x86-avx2", "x86-vnni", "arm64", "tensorrt"} <= set(PRESETS)
    assert PRESETS["x86-avx2"].reduce_range and not PRESETS["x86-vnni"].reduce_range
    assert PRESETS["tensorrt"].symmetric_activations
    with pytest.raises(ConfigError, match="per-channel"):
        ExportConfig(int8=True, preset="tensorrt", per_channel=False)
    with pytest.raises(ConfigError, match="--int8"):
        ExportConfig(calib_size=50)


def test_bench_json_schema_report_and_plots(int8_bundle, tmp_path):
    import jsonschema

    b, data = int8_bundle
    r = bench(b.path, BenchConfig(target="host", data=data, min_runs=5, min_time=0.05, out=tmp_path / "bench"))
    doc = json.loads((r.path / "bench.json").read_text())
    schema = json.loads((Path(__file__).parents[1] / "edgetl" / "schemas" / "bench.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert {"fp32", "int8"} <= set(doc["variants"])
    assert doc["variants"]["fp32"]["latency"]["runs"] >= 5 and doc["variants"]["fp32"]["peak_rss_mb"] > 10
    assert doc["accuracy"]["variants"]["fp32"]["agreement_with_fp32"] == 1.0
    assert len(doc["accuracy"]["variants"]["int8"]["confusion"]) == 2
    for f in ("report.md", "latency.png", "accuracy_vs_latency.png"):
        assert (r.path / f).is_file()
    # an ARM profile on this host says so
    r2 = bench(b.path, BenchConfig(target="rpi5", min_runs=3, min_time=0.0, out=tmp_path / "pi", rss=False))
    assert any("aarch64" in e for e in r2.data["emulated"]) or os.uname().machine == "aarch64"
    assert json.loads((r2.path / "bench.json").read_text())["accuracy"]["source"].startswith("parity.npz")


def test_bench_and_targets_bad_input(int8_bundle, tmp_path):
    b, _ = int8_bundle
    assert_one_line_error(run_cli("bench", b.path, "--target", "rpi6"), "did you mean 'rpi5'")
    assert_one_line_error(run_cli("bench", b.path, "--providers", "CUDAExecutionProvider"), "not installed")
    assert_one_line_error(run_cli("bench", tmp_path / "nothing"), "nothing to bench")
    other = make_imagefolder(tmp_path / "other", classes=("x", "y"), n_train=2, n_val=2)
    assert_one_line_error(run_cli("bench", b.path, "--data", other, "--no-rss"), "differ")
    p = run_cli("targets", "--json", check=True)
    assert {t["name"] for t in json.loads(p.stdout)} >= {"host", "rpi4", "rpi5", "jetson-orin", "vehicle-6cam", "x86-ipc"}
    assert get_target("jetson-orin").providers[0] == "TensorrtExecutionProvider" and len(list_targets()) >= 6
