
import pytest
import torch

from conftest import PWNED, SHARED, PickledCode
from edgetl import zoo
from edgetl.errors import ConfigError, WeightsError

REQUIRED = {"resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0",
            "alexnet", "vgg16", "vgg19", "convnext_tiny", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"}


def test_registry_has_the_required_backbones():
    assert REQUIRED <= set(zoo.list_backbones())


def test_duplicate_registration_raises():
    with pytest.raises(ConfigError, match="already registered"):
        zoo.register("resnet18", head="fc", feature_dim=1, stages=[], weights=None, family="x")(lambda: None)


def test_unknown_name_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'resnet18'"):
        zoo.get_spec("resnet81")


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_head_swap_feature_dim_and_stages(name):
    spec = zoo.get_spec(name)
    with torch.device("meta"):
        m = zoo.create_model(name, num_classes=3, weights="none")
    # stage boundaries cover every backbone parameter exactly once
    for pname, _ in m.backbone.named_parameters():
        assert zoo.stage_of(spec, pname) >= 0, pname
    assert m.head[1].in_features == spec.feature_dim and m.head[1].out_features == 3
    stats = zoo.model_stats(name)
    assert stats["params"] > 1e6 and stats["macs"] > 1e7


def test_tiny_forward_shapes():
    m = zoo.create_model("mobilenet_v3_small", num_classes=4, weights="none").eval()
    assert m.backbone(torch.randn(2, 3, 64, 64)).shape == (2, 1024)
    assert m(torch.randn(2, 3, 64, 64)).shape == (2, 4)


def test_offline_torchvision_weights_fail_with_actionable_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    import urllib.request

    def no_net(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", no_net)
    monkeypatch.setattr(torch.hub, "urlopen", no_net)
    with pytest.raises(WeightsError) as e:
        zoo.create_model("resnet18", num_classes=2)
    msg = str(e.value)
    assert "resnet18-f37072fd.pth" in msg and "TORCH_HOME" in msg and "--weights none" in msg
    assert "efficientnet_lite0" in msg and "\n" not in msg


def test_local_checkpoint_source_and_mismatch(tmp_path):
    m = zoo.get_spec("resnet18").build()
    torch.save({"state_dict": m.state_dict()}, tmp_path / "r.pt")
    model = zoo.create_model("resnet18", num_classes=2, weights=str(tmp_path / "r.pt"))
    assert torch.equal(model.backbone.conv1.weight, m.conv1.weight)
    with pytest.raises(WeightsError, match="do not fit"):
        zoo.create_model("mobilenet_v3_small", num_classes=2, weights=str(tmp_path / "r.pt"))
    with pytest.raises(WeightsError, match="not found"):
        zoo.create_model("resnet18", num_classes=2, weights=str(tmp_path / "missing.pt"))


def test_pickled_code_is_refused(tmp_path):
    torch.save({"x": PickledCode()}, tmp_path / "evil.pt")
    with pytest.raises(WeightsError, match="no pickled code"):
        zoo.create_model("resnet18", num_classes=2, weights=str(tmp_path / "evil.pt"))
    assert not PWNED.exists()


@pytest.mark.skipif(not (SHARED / "hymenoptera").is_dir(), reason="shared datasets not present")
@pytest.mark.parametrize("name,size", [("efficientnet_lite0", 224), ("efficientnet_lite1", 240),
                                       ("efficientnet_lite2", 260)])
def test_lite_weights_are_real_imagenet_weights(name, size):
    """Most hymenoptera val photos land in ImageNet 310 (ant) / 309 (bee) or their insect neighbours, at
    each variant's own input size (the reference's res, center crop of res + 32, bicubic, (x-127)/128)."""
    import numpy as np

    from edgetl.runtime.preprocess import load_image

    spec = zoo.get_spec(name)
    assert (spec.preprocess.crop, spec.preprocess.resize, spec.preprocess.interpolation) == (size, size + 32, "bicubic")
    assert zoo.weights_available_offline(spec)
    net = spec.build()
    zoo._strict_load(net, zoo._load_pretrained_state(spec), name)
    net.eval()
    files = sorted((SHARED / "hymenoptera" / "val").glob("*/*"))[::5]  # ~30 photos keeps it fast
    x = torch.from_numpy(np.stack([spec.preprocess.apply(load_image(f)) for f in files]))
    with torch.no_grad():
        top1 = net(x).argmax(1).tolist()
    want = [310 if f.parent.name == "ants" else 309 for f in files]
    exact = np.mean([t == w for t, w in zip(top1, want)])
    near = np.mean([300 <= t <= 320 for t in top1])
    assert exact >= 0.6 and near >= 0.8, (exact, near)


def test_timm_backbones_take_their_preprocessing_from_the_model(monkeypatch, tmp_path):
    pytest.importorskip("timm")
    spec = zoo.get_spec("timm/mobilenetv4_conv_small")
    assert (spec.preprocess.crop, spec.preprocess.resize, spec.preprocess.interpolation) == (224, 256, "bicubic")
    assert spec.feature_dim == 1280 and spec.family == "timm" and len(spec.stages) > 3
    with torch.device("meta"):
        m = zoo.create_model("timm/mobilenetv4_conv_small", 3, weights="none")
    assert all(zoo.stage_of(spec, n) >= 0 for n, _ in m.backbone.named_parameters())
    with pytest.raises(ConfigError, match="Did you mean timm/mobilenetv4_conv_small"):
        zoo.get_spec("timm/mobilenetv4_conv_smal")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # an empty cache: offline, no weights
    with pytest.raises(WeightsError) as e:
        zoo.create_model("timm/mobilenetv4_conv_small", 3)
    assert str(tmp_path / "hub") in str(e.value) and "--weights none" in str(e.value)
