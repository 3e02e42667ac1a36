import json

from conftest import run_cli
from edgetl import __version__


def test_version():
    p = run_cli("--version", check=True)
    assert __version__ in p.stdout


def test_zoo_json_lists_every_backbone_with_metadata():
    p = run_cli("zoo", "--json", check=True)
    rows = json.loads(p.stdout)
    names = {r["name"] for r in rows}
    assert {"resnet18", "efficientnet_lite0", "vgg19", "convnext_tiny"} <= names
    lite = next(r for r in rows if r["name"] == "efficientnet_lite0")
    assert lite["weights_offline"] is True and lite["feature_dim"] == 1280
    assert lite["preprocess"]["interpolation"] == "bicubic" and lite["input_size"] == 224
    assert all(r["params"] > 0 and r["macs"] > 0 for r in rows)
