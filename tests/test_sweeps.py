"""`edgetl sweep` on a real shared dataset: per-backbone runs, a table, a plot, a recommendation, resume."""
import json

import pytest

import jsonschema

from conftest import REPO, SHARED, run_cli
from edgetl.sweeps import full_cost_s, pareto, recommend
from edgetl.targets import get_target

HYM = SHARED / "hymenoptera"
OFFLINE = {"HTTPS_PROXY": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": ""}


@pytest.mark.skipif(not (HYM / "train").is_dir(), reason="needs ../shared/datasets/hymenoptera")
def test_sweep_recommends_skips_what_fails_and_resumes(tmp_path, device_venv):
    out = tmp_path / "sweep"
    args = ["sweep", HYM, "--target", "host", "--epochs", "2", "--bench-time", "0.3", "--out", out]
    p = run_cli(*args, "--backbones", "efficientnet_lite0,timm/not_a_model", check=True)
    doc = json.loads((out / "sweep.json").read_text())
    lite0 = doc["backbones"]["efficientnet_lite0"]
    assert lite0["status"] == "done" and set(lite0["variants"]) == {"fp32", "int8"}
    assert doc["backbones"]["timm/not_a_model"]["status"] == "skipped"
    assert "unknown timm model" in doc["backbones"]["timm/not_a_model"]["reason"]
    rec = doc["recommendation"]
    assert rec["backbone"] == "efficientnet_lite0" and rec["p90_ms"] * 1.2 <= get_target("host").deadline_ms
    assert "recommended for host" in p.stdout and (out / "sweep.png").is_file() and (out / "sweep.md").is_file()
    bundle = out / "efficientnet_lite0" / "bundle"
    assert (bundle / "model.int8.onnx").is_file()  # every run stays on disk
    # the end-to-end checks on real photos: the bench on the val split, verify, predict
    bench_doc = json.loads((bundle.parent / "bench" / "bench.json").read_text())
    schema = json.loads((REPO / "edgetl" / "schemas" / "bench.schema.json").read_text())
    jsonschema.validate(bench_doc, schema)
    acc = bench_doc["accuracy"]
    assert acc["n"] == 153 and acc["variants"]["fp32"]["top1"] >= 0.85, acc["variants"]["fp32"]
    assert acc["variants"]["int8"]["agreement_with_fp32"] >= 0.97, acc["variants"]["int8"]
    assert "PASS" in run_cli("verify", bundle, check=True).stdout
    before = (out / "efficientnet_lite0" / "bundle" / "bundle.json").stat().st_mtime_ns
    refused = run_cli(*args, "--backbones", "efficientnet_lite0,resnet18")
    assert refused.returncode == 1 and "--resume" in refused.stderr  # an existing sweep is never overwritten
    # --resume continues: lite0 is not redone; resnet18 is tried (no torchvision weights offline: skipped, said)
    run_cli(*args, "--backbones", "efficientnet_lite0,resnet18", "--resume", env={**OFFLINE, "TORCH_HOME": str(tmp_path / "th")}, check=True)
    doc = json.loads((out / "sweep.json").read_text())
    assert (out / "efficientnet_lite0" / "bundle" / "bundle.json").stat().st_mtime_ns == before  # reused
    assert doc["backbones"]["resnet18"]["status"] == "skipped" and "--weights none" in doc["backbones"]["resnet18"]["reason"]
    photo = sorted((HYM / "val" / "ants").iterdir())[0]  # the recommended bundle runs on the device install
    pr = run_cli_device(device_venv, "predict", out / "efficientnet_lite0" / "bundle", photo, "--json")
    assert pr.returncode == 0 and json.loads(pr.stdout)["label"] in ("ants", "bees"), pr.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (HYM / "train").is_dir(), reason="needs ../shared/datasets/hymenoptera")
def test_lite1_and_lite2_sweep_and_run_on_the_device_install(tmp_path, device_venv):
    """(slow: two more real backbones; python -m pytest -m slow) Lite1/Lite2 fine-tune, export int8 and
    predict with the base install."""
    out = tmp_path / "sweep"
    run_cli("sweep", HYM, "--target", "rpi5", "--epochs", "2", "--bench-time", "0.3", "--backbones",
            "efficientnet_lite1,efficientnet_lite2", "--out", out, check=True)
    doc = json.loads((out / "sweep.json").read_text())
    photo = sorted((HYM / "val" / "bees").iterdir())[0]
    for b in ("efficientnet_lite1", "efficientnet_lite2"):
        assert doc["backbones"][b]["status"] == "done" and "int8" in doc["backbones"][b]["variants"]
        pr = run_cli_device(device_venv, "predict", out / b / "bundle", photo, "--json")
        assert pr.returncode == 0 and json.loads(pr.stdout)["label"] in ("ants", "bees"), pr.stderr


def run_cli_device(venv, *args):
    import subprocess

    return subprocess.run([str(venv / "bin" / "edgetl"), *map(str, args)], capture_output=True, text=True)


def test_recommendation_rules_and_a_deadline_nothing_meets():
    t = get_target("rpi5")  # 66.7 ms, 1024 MB
    row = lambda b, v, top1, p90, rss=100: {"backbone": b, "variants": {v: {  # noqa: E731
        "top1": top1, "agreement": 1.0, "size_mb": 5.0, "p50_ms": p90 * 0.9, "p90_ms": p90, "peak_rss_mb": rss}}}
    rows = [row("a", "int8", 0.90, 30), row("b", "fp32", 0.95, 50), row("c", "int8", 0.97, 60), row("d", "int8", 0.99, 40, 2000)]
    best, closest = recommend(rows, t, 0.2)  # c misses by headroom (60 x 1.2 > 66.7), d by memory
    assert (best["backbone"], best["variant"]) == ("b", "fp32") and closest is None
    # a tie on top-1: the lower p50 wins, not the lower p90 (its tail is the host's noise); within 3%, the smaller file
    tie = [row("lite0", "fp32", 0.96, 8.6), row("lite1", "int8", 0.96, 10.6)]
    tie[0]["variants"]["fp32"].update(p50_ms=7.8, size_mb=13.4)
    tie[1]["variants"]["int8"].update(p50_ms=6.9, size_mb=4.7)
    assert recommend(tie, t, 0.2)[0]["backbone"] == "lite1"
    tie[0]["variants"]["fp32"].update(p50_ms=6.0)  # clearly faster: the bigger file is worth it
    assert recommend(tie, t, 0.2)[0]["backbone"] == "lite0"
    tie[0]["variants"]["fp32"].update(p50_ms=6.85, size_mb=13.4)  # 6.9 is within 3% of 6.85: the smaller file
    assert recommend(tie, t, 0.2)[0]["backbone"] == "lite1"
    best, closest = recommend([row("slow", "fp32", 0.9, 100), row("slower", "int8", 0.95, 200)], t, 0.2)
    assert best is None and closest["backbone"] == "slow"
    pts = [{"name": n, "p50_ms": ms, "top1": a} for n, ms, a in [("x", 10, 0.9), ("y", 20, 0.95), ("z", 25, 0.93)]]
    assert {p["name"] for p in pareto(pts)} == {"x", "y"}


def test_full_fine_tuning_says_what_it_costs():
    lite0 = full_cost_s(["efficientnet_lite0"], 800, 10)
    assert 400 < lite0 < 800  # measured: 564 s for 800 images x 10 epochs on 2 AVX2 cores
    assert full_cost_s(["efficientnet_lite2"], 800, 10) > 1.5 * lite0


def test_a_multi_camera_target_is_judged_by_its_rig_not_the_model_alone():
    """robot-4cam: a model whose p90 fits 33 ms but whose 4-camera rig misses frames is not recommended; the
    slower-looking one whose rig PASSes (preprocessing and queueing included) is."""
    t = get_target("robot-4cam")
    rows = [{"backbone": "a", "variants": {"int8": {"top1": 0.95, "p50_ms": 4.0, "p90_ms": 5.0, "size_mb": 3.0,
                                                     "peak_rss_mb": None, "rig_pass": False, "rig_missed": 40,
                                                     "rig_captured": 1200, "rig_worst_p99_ms": 61.0}}},
            {"backbone": "b", "variants": {"int8": {"top1": 0.95, "p50_ms": 6.0, "p90_ms": 8.0, "size_mb": 4.0,
                                                     "peak_rss_mb": None, "rig_pass": True, "rig_missed": 0,
                                                     "rig_captured": 1200, "rig_worst_p99_ms": 22.0}}}]
    best, _ = recommend(rows, t, 0.2)
    assert best["backbone"] == "b"
    rows[1]["variants"]["int8"]["rig_pass"] = False
    best, closest = recommend(rows, t, 0.2)
    assert best is None and closest["backbone"] == "b"  # the fewest frames missed
