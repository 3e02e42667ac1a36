"""A timm backbone through the whole chain, as a user runs it: finetune -> export --int8 -> predict
(random weights: --weights none; timm's own weights need its Hugging Face cache)."""
import json

import pytest

from conftest import make_image, make_imagefolder, run_cli

pytest.importorskip("timm")


def test_timm_backbone_finetune_export_int8_predict(tmp_path):
    data = make_imagefolder(tmp_path / "data", classes=("a", "b"), n_train=8, n_val=4, size=(72, 64))
    run = tmp_path / "run"
    ft = json.loads(run_cli("finetune", data, "--backbone", "timm/mobilenetv4_conv_small", "--weights", "none",
                            "--image-size", "64", "--epochs", "1", "--workers", "0", "--out", run, "--json",
                            check=True).stdout)
    assert ft["epochs_run"] == 1
    ex = json.loads(run_cli("export", run, "--int8", "--max-drop", "100", "--min-agreement", "0", "--calib-size",
                            "8", "--json", check=True).stdout)
    bundle = ex["bundle"]
    m = json.loads((tmp_path / "run" / "bundle" / "bundle.json").read_text())
    assert m["backbone"] == "timm/mobilenetv4_conv_small" and "int8" in m["variants"]
    assert m["preprocess"]["interpolation"] == "bicubic"  # from timm's pretrained_cfg
    p = run_cli("predict", bundle, make_image(tmp_path / "x.png", (80, 70)), "--json", check=True)
    assert json.loads(p.stdout)["label"] in ("a", "b")
