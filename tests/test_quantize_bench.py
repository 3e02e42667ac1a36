"""int8 export and bench on a tiny random-weight run (behaviour, not speed: speed lives in benchmarks/)."""
import json
import os
from pathlib import Path

import pytest

from conftest import make_imagefolder, run_cli
from edgetl.bench import BenchConfig, bench
from edgetl.errors import ConfigError
from edgetl.export import ExportConfig, export
from edgetl.finetune import FinetuneConfig, finetune
from edgetl.quantize import PRESETS, pick_variant
from edgetl.runtime import Predictor, verify_bundle
from edgetl.targets import get_target, host_preset, list_targets


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    root = tmp_path_factory.mktemp("q")
    os.environ["EDGETL_CACHE"] = str(root / "cache")
    data = make_imagefolder(root / "data", classes=("a", "b"), n_train=10, n_val=6)
    r = finetune(FinetuneConfig(data=data, out=root / "run", backbone="resnet18", weights="none", image_size=32,
                                workers=0, epochs=3, lr=1e-2))
    return export(r.out, ExportConfig(int8=True, max_drop=100, min_agreement=0.0, calib_size=16, parity_images=12), force=True), data


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


def test_variant_pick_fastest_then_smallest_file_within_noise():
    v = lambda name, ms, size: {"name": name, "p50_ms": ms, "size": size}  # noqa: E731
    # faster than fp32: the fastest, but a smaller file within 3% of it wins the tie
    assert pick_variant([v("qdq", 4.00, 110), v("qop", 4.10, 100), v("islands", 3.00, 120)], 5.0)["name"] == "islands"
    assert pick_variant([v("qdq", 4.00, 110), v("qop", 4.10, 100)], 5.0)["name"] == "qop"
    assert pick_variant([v("qdq", 4.00, 110), v("qop", 4.30, 100)], 5.0)["name"] == "qdq"
    # a tie never crosses fp32: the smaller file is slower than fp32, the faster one is not
    assert pick_variant([v("qdq", 4.95, 110), v("qop", 5.05, 100)], 5.0)["name"] == "qdq"
    # nothing beats fp32: near-smallest files are equally small, the fastest of them is kept
    assert pick_variant([v("qop", 4.21, 1000), v("islands", 4.56, 997), v("qdq", 4.15, 1065)], 4.0)["name"] == "qop"


def test_targets_are_listed_with_their_providers():
    p = run_cli("targets", "--json", check=True)
    assert {t["name"] for t in json.loads(p.stdout)} >= {"host", "rpi4", "rpi5", "jetson-orin", "vehicle-6cam", "x86-ipc"}
    assert get_target("jetson-orin").providers[0] == "TensorrtExecutionProvider" and len(list_targets()) >= 6


def _fragile_model(path: Path, classifier: bool = False) -> Path:
    """conv1+clip -> conv2+clip -> conv3: conv2's weights hold one huge outlier, so int8 crushes its
    other output channels to zero. ``classifier``: 1x1 inputs and flat [N, 4] logits."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32)
    w2[:, :, 0, 0] *= 0.01
    w2[0, 0, 0, 0] = 50.0  # per-output-channel scale set by one outlier: channel 0 is destroyed
    w3 = rng.normal(0, 0.3, (4, 8, 1, 1)).astype(np.float32)
    if classifier:  # the class then depends on the channels that int8 crushes, not on the outlier channel
        w3[:, 0], w3[:, 1:] = 0.0, w3[:, 1:] * 100
    init = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (w2, "w2"), (w3, "w3"))]
    init += [numpy_helper.from_array(np.array(v, np.float32), n) for v, n in ((0.0, "lo"), (6.0, "hi"))]
    last = "c3" if classifier else "logits"
    side = 1 if classifier else 8
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"], name="clip1"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
             helper.make_node("Clip", ["c2", "lo", "hi"], ["r2"], name="clip2"),
             helper.make_node("Conv", ["r2", "w3"], [last], name="conv3")]
    out_shape = [None, 4, 8, 8]
    if classifier:
        nodes.append(helper.make_node("Flatten", ["c3"], ["logits"], name="flat"))
        out_shape = [None, 4]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 3, side, side])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape)], init)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_sensitivity_ranks_fused_layers_and_finds_the_fragile_one(tmp_path):
    """Conv+Clip count as one layer; the conv whose weights hold one huge outlier must come out as
    the most sensitive layer, with its fused Clip in `nodes`."""
    import numpy as np

    from edgetl.quantize import _quantize, sensitivity

    pre = _fragile_model(tmp_path / "pre.onnx")
    x = np.random.default_rng(1).normal(0, 1, (16, 3, 8, 8)).astype(np.float32)
    qdq = tmp_path / "qdq.onnx"
    _quantize(pre, qdq, x, PRESETS["x86-avx2"], "QDQ", True, "minmax", [])
    rows = sensitivity(pre, qdq, x, tmp_path)
    assert {r["node"] for r in rows} == {"conv1", "conv2", "conv3"}
    assert rows[0]["node"] == "conv2" and rows[0]["nodes"] == ["conv2", "clip2"]
    assert all(r["sqnr_loss_db"] == pytest.approx(r["sqnr_loss_db"]) for r in rows)  # finite, no NaN


def test_agreement_target_sends_the_fragile_layer_back_to_float(tmp_path):
    """With no top-1 gate (max_drop 100), int8 that disagrees with fp32 is still refined: under
    min_agreement the most sensitive layer goes back to float (and a target still missed is reported);
    with the target off it stays int8."""
    import numpy as np

    from edgetl.quantize import _logits, quantize_model

    fp32 = _fragile_model(tmp_path / "m.onnx", classifier=True)
    rng = np.random.default_rng(2)
    calib = rng.normal(0, 1, (32, 3, 1, 1)).astype(np.float32)
    x = rng.normal(0, 1, (128, 3, 1, 1)).astype(np.float32)
    ref = _logits(fp32, x)
    y = ref.argmax(1)
    assert len(set(y.tolist())) > 1
    off = quantize_model(fp32, tmp_path / "off.onnx", calib, x, y, ref, max_drop=100, min_agreement=0.0,
                         report_sensitivity=False)
    assert "conv2" not in off["nodes_excluded"] and off["parity"]["top1_agreement"] < 0.99, off["parity"]
    on = quantize_model(fp32, tmp_path / "on.onnx", calib, x, y, ref, max_drop=100, min_agreement=0.99,
                        report_sensitivity=False)
    assert "conv2" in on["nodes_excluded"], on["nodes_excluded"]
    assert on["parity"]["top1_agreement"] > off["parity"]["top1_agreement"]
    assert on["parity"]["agreement_met"] == (on["parity"]["top1_agreement"] >= 0.99)
    if not on["parity"]["agreement_met"]:  # then it must say so, with the figure
        assert "--min-agreement" in on["verdict"] and f"{100 * on['parity']['top1_agreement']:.1f}%" in on["verdict"]


def test_peak_rss_is_the_fresh_process_not_its_parent(int8_bundle):
    """ru_maxrss survives fork+exec on Linux: a fat parent (a trainer holding GBs) must not leak its
    size into the fresh process's figure."""
    import numpy as np

    from edgetl.bench import _peak_rss_mb

    b, _ = int8_bundle
    x = np.zeros((1, 3, 32, 32), np.float32)
    lean = _peak_rss_mb(b.model, ["CPUExecutionProvider"], 1, x)
    ballast = np.ones(600 * 2**20, np.uint8)  # 600 MB resident in this (parent) process
    fat = _peak_rss_mb(b.model, ["CPUExecutionProvider"], 1, x)
    del ballast
    assert lean and fat and fat < lean + 100, (lean, fat)
