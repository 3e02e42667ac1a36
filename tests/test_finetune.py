import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO, run_cli, tree_hashes
from edgetl.errors import ArtifactError, ConfigError, ExistsError
from edgetl.zoo.checkpoint import load_checkpoint, model_from_checkpoint
from edgetl.config import FinetuneConfig
from edgetl.training import finetune
from edgetl.training.schedule import apply_freeze, set_train_mode
from edgetl import zoo

TINY = dict(backbone="mobilenet_v3_small", weights="none", image_size=32, workers=0, batch_size=8)


def cfg(data, out, **kw):
    return FinetuneConfig(data=data, out=out, **{**TINY, **kw})


def test_linear_writes_self_describing_artifacts(tiny_data, tmp_path):
    # random-init resnet18 features at 32 px still separate colour-tinted classes
    r = finetune(cfg(tiny_data, tmp_path / "run", backbone="resnet18", epochs=10, lr=1e-2))
    for f in ("best.pt", "last.pt", "run.json", "metrics.json", "curves.png"):
        assert (r.out / f).is_file(), f
    m = json.loads((r.out / "metrics.json").read_text())
    assert len(m["epochs"]) == 10 and m["best_val_acc"] == r.best_val_acc
    ck = load_checkpoint(r.out)
    assert ck["labels"] == ["cat", "dog"] and ck["preprocess"]["crop"] == 32
    model = model_from_checkpoint(ck)  # rebuilds alone
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 2)
    assert r.best_val_acc >= 0.8  # colour-tinted classes are separable


def test_feature_cache_makes_second_run_skip_backbone(tiny_data, tmp_path, monkeypatch):
    finetune(cfg(tiny_data, tmp_path / "a", epochs=1))
    import edgetl.training.features as ft

    calls = []
    orig = ft.extract_features
    monkeypatch.setattr(ft, "extract_features", lambda *a, **k: calls.append(1) or orig(*a, **k))
    finetune(cfg(tiny_data, tmp_path / "b", epochs=1))
    assert calls == []
    finetune(cfg(tiny_data, tmp_path / "c", epochs=1, augment="light", cache_views=2))
    assert len(calls) == 2  # two augmented views, val reused


def test_cpu_features_come_from_onnxruntime_and_match_torch(tiny_data):
    import edgetl.training.features as ft
    from edgetl.data import ImageDataset, ImageCache, load_imagefolder

    m = zoo.create_model("mobilenet_v3_small", 2, weights="none").eval()
    ort_bb = ft.OrtBackbone.build(m.backbone, 32)
    assert ort_bb is not None
    pp = cfg(tiny_data, None).preprocess()
    ds = ImageDataset(load_imagefolder(tiny_data).val, pp, cache=ImageCache(enabled=False))
    cpu = torch.device("cpu")
    a = ft.extract_features(ort_bb, ds, device=cpu, batch_size=4, workers=0)
    b = ft.extract_features(m.backbone, ds, device=cpu, batch_size=4, workers=0)
    assert a.shape == b.shape == (len(ds), zoo.get_spec("mobilenet_v3_small").feature_dim)
    torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    fx = ft.FeatureExtractor(m.backbone, ft.FeatureSource("mobilenet_v3_small", "none", pp), device=cpu)
    assert fx.engine == "onnxruntime-cpu" and isinstance(fx._run_on(), ft.OrtBackbone)


def test_linear_resumes_from_a_head_only_last_checkpoint(tiny_data, tmp_path, monkeypatch):
    import edgetl.training.loop as ft
    from edgetl.errors import EdgetlError

    ref = finetune(cfg(tiny_data, tmp_path / "ref", epochs=4, lr=1e-2))
    evals, orig = [], ft._LinearEpochs.evaluate

    def ctrl_c_in_epoch_3(self):
        evals.append(1)
        if len(evals) == 3:
            raise KeyboardInterrupt
        return orig(self)
    monkeypatch.setattr(ft._LinearEpochs, "evaluate", ctrl_c_in_epoch_3)
    with pytest.raises(EdgetlError, match="--resume"):
        finetune(cfg(tiny_data, tmp_path / "run", epochs=4, lr=1e-2))
    monkeypatch.setattr(ft._LinearEpochs, "evaluate", orig)
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert last["model_part"] == "head" and last["epoch"] == 1
    spec = zoo.get_spec("mobilenet_v3_small")
    assert sum(v.numel() for v in last["model"].values()) == spec.feature_dim * 2 + 2  # the head alone
    res = finetune(cfg(tiny_data, tmp_path / "run", epochs=4, lr=1e-2), resume=True)
    assert res.resumed_from == 1 and len(res.history) == 4
    for a, b in zip(res.history, ref.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)


def test_full_starts_from_a_linear_probed_head(tiny_data, tmp_path):
    r = finetune(cfg(tiny_data, tmp_path / "lpft", backbone="resnet18", strategy="full", epochs=1, lr=1e-2))
    warm = json.loads((r.out / "metrics.json").read_text())["warm_start"]
    assert warm["epochs"] == 10 and warm["val_acc"] >= 0.8  # the probe alone separates the tinted classes
    assert r.best_val_acc >= warm["val_acc"]  # the probed model is a best.pt candidate ("epoch 0")
    assert load_checkpoint(r.out)["epoch"] in (0, 1)
    off = finetune(cfg(tiny_data, tmp_path / "off", strategy="full", epochs=1, lp_epochs=0))
    assert json.loads((off.out / "metrics.json").read_text())["warm_start"] is None and off.best_epoch == 1


def test_gradual_unfreezes_one_stage_at_a_time(tiny_data, tmp_path):
    r = finetune(cfg(tiny_data, tmp_path / "gradual", strategy="gradual", epochs=2, augment="light"))
    assert [h["trainable_stages"] for h in r.history] == [0, 1]  # head alone, then the top stage


def test_l2sp_keeps_the_backbone_near_its_source_weights(tiny_data, tmp_path):
    """Same run, same seed: with L2-SP the backbone ends much closer to the weights it started from."""
    src = zoo.get_spec("mobilenet_v3_small").build()
    torch.save(src.state_dict(), tmp_path / "source.pt")
    theta0 = {k: v for k, v in src.state_dict().items() if v.is_floating_point()}

    def drift(l2sp):
        r = finetune(cfg(tiny_data, tmp_path / f"l2sp{l2sp}", weights=str(tmp_path / "source.pt"), strategy="full",
                         epochs=2, lp_epochs=0, lr=0.05, backbone_lr_mult=1.0, l2sp=l2sp))
        last = torch.load(r.out / "last.pt", weights_only=True)["model"]
        return sum(((last["backbone." + k].float() - v.float()) ** 2).sum().item() for k, v in theta0.items()
                   if "running" not in k and "backbone." + k in last) ** 0.5

    plain, pulled = drift(0.0), drift(100.0)
    assert plain > 0 and pulled < 0.5 * plain, (plain, pulled)


def test_early_stop_ends_the_run_when_val_stops_improving(tiny_data, tmp_path):
    r = finetune(cfg(tiny_data, tmp_path / "es", epochs=6, lr=1e-9, early_stop=1))  # val accuracy cannot move
    assert r.stopped_early and r.epochs_run == 2
    assert json.loads((r.out / "metrics.json").read_text())["stopped_early"] is True


def test_label_smoothing_keeps_the_training_loss_off_zero(tiny_data, tmp_path):
    """2 classes with smoothing 0.4: targets (0.8, 0.2), so cross-entropy cannot go below H(0.8) = 0.50 nats;
    without smoothing the separable tinted classes drive it toward 0."""
    kw = dict(backbone="resnet18", epochs=30, lr=3e-2, head_dropout=0.0)
    plain = finetune(cfg(tiny_data, tmp_path / "ls0", **kw)).history[-1]["train_loss"]
    smooth = finetune(cfg(tiny_data, tmp_path / "ls4", label_smoothing=0.4, **kw)).history[-1]["train_loss"]
    assert plain < 0.3 and smooth > 0.49, (plain, smooth)


def test_warm_up_then_cosine_schedule():
    from edgetl.training.schedule import lr_lambda

    f = lr_lambda(FinetuneConfig(data=".", epochs=10, warmup_epochs=2), steps_per_epoch=5)
    ramp, rest = [f(i) for i in range(10)], [f(i) for i in range(10, 50)]
    assert ramp[0] == pytest.approx(0.1) and ramp[-1] == pytest.approx(1.0)
    assert all(a < b for a, b in zip(ramp, ramp[1:]))  # linear warm-up over 2 epochs
    assert all(a >= b for a, b in zip(rest, rest[1:])) and rest[-1] == pytest.approx(0.01, abs=2e-3)
    flat = lr_lambda(FinetuneConfig(data=".", schedule="constant"), steps_per_epoch=5)
    assert {flat(i) for i in range(50)} == {1.0}


def test_frozen_batchnorm_stays_in_eval():
    spec = zoo.get_spec("mobilenet_v3_small")
    m = zoo.create_model("mobilenet_v3_small", 2, weights="none")
    apply_freeze(m, spec, 1)  # only the top stage trains
    set_train_mode(m)
    bns = [(n, mod) for n, mod in m.backbone.named_modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert all(not mod.training for n, mod in bns if zoo.stage_of(spec, n + ".weight") < len(spec.stages) - 1)
    assert m.head.training


def test_existing_run_needs_resume_or_force(tiny_data, tmp_path):
    c = cfg(tiny_data, tmp_path / "run", epochs=1)
    finetune(c)
    before = tree_hashes(tmp_path / "run")
    with pytest.raises(ExistsError, match="--force"):
        finetune(c)
    assert tree_hashes(tmp_path / "run") == before
    r = finetune(FinetuneConfig(**{**c.__dict__, "epochs": 2}), resume=True)
    assert r.resumed_from == 0 and len(r.history) == 2
    with pytest.raises(ConfigError, match="differ"):
        finetune(FinetuneConfig(**{**c.__dict__, "lr": 0.5}), resume=True)


def test_bad_options_rejected_up_front(tiny_data):
    with pytest.raises(ConfigError, match="strategy full or gradual"):
        FinetuneConfig(data=tiny_data, l2sp=0.1)
    with pytest.raises(ConfigError, match="Did you mean 'gradual'"):
        FinetuneConfig(data=tiny_data, strategy="gradul")


def test_checkpoint_of_newer_format_is_refused(tiny_data, tmp_path):
    r = finetune(cfg(tiny_data, tmp_path / "run", epochs=1))
    ck = torch.load(r.out / "best.pt", weights_only=True)
    ck["format_version"] = 99
    torch.save(ck, tmp_path / "new.pt")
    with pytest.raises(ArtifactError, match="upgrade edgetl"):
        load_checkpoint(tmp_path / "new.pt")


def test_cli_config_file_fills_and_options_win(tmp_path, tiny_data):
    (tmp_path / "c.json").write_text(json.dumps({**TINY, "epochs": 2, "lr": 0.05}))
    p = run_cli("finetune", tiny_data, "--config", tmp_path / "c.json", "--epochs", "1", "--out", tmp_path / "r",
                "--json", check=True)
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["epochs"] == 1 and run["lr"] == 0.05 and run["backbone"] == "mobilenet_v3_small"
    assert json.loads(p.stdout)["epochs_run"] == 1


def test_torchrun_two_cpu_processes_gloo(tiny_data, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
           "-m", "edgetl", "finetune", str(tiny_data), "--strategy", "full", "--epochs", "2", "--backbone",
           "mobilenet_v3_small", "--weights", "none", "--image-size", "32", "--workers", "0", "--batch-size", "4",
           "--out", str(out), "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=REPO,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["epochs"]) == 2
    assert not list(out.glob(".*.tmp"))  # no half-written files from two writers


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from conftest import make_imagefolder

    root = tmp_path_factory.mktemp("kill")
    data = make_imagefolder(root / "data", classes=("a", "b", "c"), n_train=24, n_val=8, size=(64, 64))
    args = ["finetune", data, "--strategy", "full", "--epochs", "5", "--backbone", "mobilenet_v3_small",
            "--weights", "none", "--image-size", "64", "--workers", "0", "--batch-size", "8", "--lr", "0.01"]
    return args, json.loads(run_cli(*args, "--out", root / "ref", "--json", check=True).stdout)


@pytest.mark.slow  # (3 real fine-tunes, ~2-3 minutes: CI runs it with the slow suite on every change)
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_killed_run_resumes_to_the_same_result(tmp_path, sig, uninterrupted):
    """A real `edgetl finetune` in a subprocess is killed (kill -9, or Ctrl-C) after its first
    epoch; `--resume` finishes every epoch with the uninterrupted run's val accuracy (same seed),
    and no half-written artifact is ever left behind."""
    import signal
    import time

    args, ref = uninterrupted

    out = tmp_path / "run"
    # a shell's background jobs inherit SIGINT ignored (and then Python keeps ignoring it): give the
    # child the default disposition, as a foreground process in a terminal has
    p = subprocess.Popen([sys.executable, "-m", "edgetl", *map(str, args), "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t_end = time.time() + 300
    while time.time() < t_end and p.poll() is None:
        if (out / "last.pt").is_file() and (out / "metrics.json").is_file():
            time.sleep(0.3)  # into the next epoch
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be interrupted"
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=120)
    if sig == "SIGINT":  # Ctrl-C: one line that says how to continue
        assert p.returncode == 1 and "--resume" in err and "Traceback" not in err, err
    else:
        assert p.returncode == -9
    assert not [f for f in out.iterdir() if ".tmp" in f.name], sorted(f.name for f in out.iterdir())
    done = torch.load(out / "last.pt", weights_only=True)["epoch"]  # complete and readable
    res = json.loads(run_cli(*args, "--out", out, "--resume", "--json", check=True).stdout)
    assert res["epochs_run"] == 5 and res["resumed_from"] == done, (res, done)  # epochs count from 0
    assert abs(res["best_val_acc"] - ref["best_val_acc"]) <= 0.01
    # the resumed run retraces the uninterrupted one (weights, optimizer, scheduler and RNG restored)
    for a, b in zip(res["history"], ref["history"]):
        assert a["val_acc"] == pytest.approx(b["val_acc"], abs=0.01)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=0.02)  # not bit-exact across processes
    load_checkpoint(out / "best.pt")
