"""The int8 bundle and `edgetl bench` on a tiny random-weight run (behaviour, not speed: speed lives in benchmarks/)."""
import json
import os
from pathlib import Path

import pytest

from conftest import run_cli
from edgetl.benchmark import bench
from edgetl.config import BenchConfig, ExportConfig
from edgetl.errors import ConfigError
from edgetl.quantization.search import PRESETS
from edgetl.runtime import Predictor, verify_bundle
from edgetl.targets import get_target, list_targets
from edgetl.runtime.cpu import host_preset


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
    for f in ("report.md", "latency.png", "accuracy_vs_latency.png", "end_to_end.png"):
        assert (r.path / f).is_file()
    # an ARM profile on this host says so
    r2 = bench(b.path, BenchConfig(target="rpi5", min_runs=3, min_time=0.0, out=tmp_path / "pi", rss=False))
    assert any("aarch64" in e for e in r2.data["emulated"]) or os.uname().machine == "aarch64"
    assert json.loads((r2.path / "bench.json").read_text())["accuracy"]["source"].startswith("parity.npz")


def test_targets_are_listed_with_their_providers():
    p = run_cli("targets", "--json", check=True)
    assert {t["name"] for t in json.loads(p.stdout)} >= {"host", "rpi4", "rpi5", "jetson-orin", "vehicle-6cam", "x86-ipc"}
    assert get_target("jetson-orin").providers[0] == "TensorrtExecutionProvider" and len(list_targets()) >= 6


def test_peak_rss_is_the_fresh_process_not_its_parent(int8_bundle):
    """ru_maxrss survives fork+exec on Linux: a fat parent (a trainer holding GBs) must not leak its
    size into the fresh process's figure."""
    import numpy as np

    from edgetl.benchmark.memory import peak_rss_mb as _peak_rss_mb

    b, _ = int8_bundle
    x = np.zeros((1, 3, 32, 32), np.float32)
    lean = _peak_rss_mb(b.model, ["CPUExecutionProvider"], 1, x)
    ballast = np.ones(600 * 2**20, np.uint8)  # 600 MB resident in this (parent) process
    fat = _peak_rss_mb(b.model, ["CPUExecutionProvider"], 1, x)
    del ballast
    assert lean and fat and fat < lean + 100, (lean, fat)


def _target_file(tmp_path, **over) -> Path:
    import dataclasses

    t = {**dataclasses.asdict(get_target("host")), "name": "custom", **over}
    (tmp_path / "custom.json").write_text(json.dumps(t))
    return tmp_path / "custom.json"


def test_bench_scenarios_multi_stream_and_offline(int8_bundle, tmp_path):
    b, _ = int8_bundle
    ms = bench(b.path, BenchConfig(target="vehicle-6cam", scenario="multi-stream", min_runs=3, min_time=0.0, rss=False,
                                   end_to_end=False, out=tmp_path / "ms"))
    assert ms.scenario == "multi-stream"
    assert all(v["latency"]["batch"] == 6 for v in ms.variants.values())
    assert "tick of 6 frames" in ms.variants["fp32"]["criterion"]
    off = bench(b.path, BenchConfig(scenario="offline", min_runs=5, min_time=0.0, rss=False, out=tmp_path / "off"))
    for v in ("fp32", "int8"):
        sweep = off.variants[v]["offline"]
        assert set(sweep["throughput_by_batch"]) == {1, 2, 4, 8, 16} and sweep["best_ips"] > 0
        assert "throughput" in off.variants[v]["criterion"]


def test_a_deadline_that_cannot_be_met_fails(int8_bundle, tmp_path):
    b, _ = int8_bundle
    r = bench(b.path, BenchConfig(target=str(_target_file(tmp_path, deadline_ms=1e-4)), min_runs=3, min_time=0.0,
                                  rss=False, out=tmp_path / "fail"))
    assert {v["status"] for k, v in r.variants.items() if k != "torch"} == {"FAIL"}
    assert not r.variants["fp32"]["pass_latency"] and r.variants["fp32"]["pass_memory"]
    assert r.verdict == "fp32 FAIL, int8 FAIL"


def test_threads_never_exceed_the_hosts_cores_and_the_report_says_so(int8_bundle, tmp_path):
    import torch

    b, _ = int8_bundle
    cores = os.cpu_count()
    torch.set_num_threads(1)
    r = bench(b.path, BenchConfig(target=str(_target_file(tmp_path, threads=cores + 2)), min_runs=3, min_time=0.0,
                                  rss=False, out=tmp_path / "cap"))
    doc = json.loads((r.path / "bench.json").read_text())
    assert doc["threads"] == cores and doc["threads_target"] == cores + 2
    assert any(f"target uses {cores + 2} threads; this host has {cores} cores" in e for e in doc["emulated"])
    assert f"target uses {cores + 2} threads" in (r.path / "report.md").read_text()
    assert "torch" in doc["variants"]  # the eager reference ran, with the capped threads ...
    assert torch.get_num_threads() == 1  # ... and left the caller's torch thread count alone


def test_a_folder_of_class_folders_is_scored_whole(int8_bundle, tmp_path):
    """--data VALDIR (class folders, no val/ inside) scores every image; with val/ the val split."""
    b, data = int8_bundle
    n_val = len(list((data / "val").rglob("*.png")))
    whole = bench(b.path, BenchConfig(data=data / "val", min_runs=3, min_time=0.0, rss=False, out=tmp_path / "a"))
    assert whole.accuracy["n"] == n_val and f"every image, {n_val} images scored" in whole.accuracy["source"]
    split = bench(b.path, BenchConfig(data=data, min_runs=3, min_time=0.0, rss=False, out=tmp_path / "b"))
    assert split.accuracy["n"] == n_val and "val/ split" in split.accuracy["source"]


def test_export_for_another_device_prints_its_table(int8_bundle, tmp_path):
    """`export --int8 --preset arm64` on an x86 host: accuracy checked here, latency not measured; the
    export line says so (it used to crash formatting the missing latencies after writing the bundle)."""
    b, _ = int8_bundle
    run = b.path.parent
    other = "x86-avx2" if host_preset() == "arm64" else "arm64"
    p = run_cli("export", run, "--int8", "--preset", other, "--max-drop", "100", "--min-agreement", "0",
                "--calib-size", "16", "--out", tmp_path / "pi")
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "latency not measured" in p.stdout and (tmp_path / "pi" / "model.int8.onnx").is_file()
    # a bundle without fp16 (this one) benches as before: nothing skipped, fp32 and int8 timed
    r = bench(tmp_path / "pi", BenchConfig(min_runs=3, min_time=0.0, rss=False, torch_reference=False,
                                           out=tmp_path / "pib"))
    assert r.data["skipped"] == {} and set(r.variants) == {"fp32", "int8"}
