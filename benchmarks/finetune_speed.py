"""edgetl finetune against the PyTorch transfer-learning tutorial loop (issue #4).

    python benchmarks/finetune_speed.py [--dataset hymenoptera] [--epochs 25] [--json PATH]

Same data (../shared/datasets/<dataset>), backbone (efficientnet_lite0, real ImageNet weights),
epochs and machine, in one process. The baseline is the tutorial's code, written out below:
torchvision ImageFolder + RandomResizedCrop/flip, DataLoader(batch 4, 2 workers), SGD(lr 1e-3,
momentum 0.9), StepLR(7, 0.1) — "ConvNet as fixed feature extractor" (only the new head trains,
but every epoch still runs the backbone on every image) and "finetuning the ConvNet" (all
weights). edgetl runs `--strategy linear` (features computed once, cached) and `--strategy full`
with its defaults (which start with an LP-FT warm start: 10 head epochs on cached features; its
probed model is the curve's epoch 0). Epochs default to the tutorial's own 25.

Two ratios per pair, both printed and written to JSON:
  * same epochs: the tutorial's wall time / edgetl's wall time for the same number of epochs;
  * time to accuracy: the tutorial's wall time until it first reaches its best val accuracy / edgetl's
    wall time until it first reaches that same accuracy (from each run's per-epoch curve, like
    DAWNBench). edgetl's clock includes decoding and, for linear, the cold-cache feature extraction.
Goals on this CPU: linear reaches the baseline's accuracy >= 10x faster; full >= 2x faster at
equal accuracy.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, SHARED, save  # noqa: E402


def tutorial(data: Path, epochs: int, fixed_features: bool) -> dict:
    """The PyTorch transfer-learning tutorial's loop (pytorch.org/tutorials/beginner/transfer_learning_tutorial),
    with efficientnet_lite0 in place of resnet18 and its own normalisation."""
    import torch
    from torch import nn, optim
    from torchvision import datasets, transforms

    from edgetl import zoo

    spec = zoo.get_spec("efficientnet_lite0")
    pp = spec.preprocess
    interp = transforms.InterpolationMode(pp.interpolation)
    tf = {"train": transforms.Compose([transforms.RandomResizedCrop(pp.crop, interpolation=interp),
                                       transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                                       transforms.Normalize(pp.mean, pp.std)]),
          "val": transforms.Compose([transforms.Resize(pp.resize, interpolation=interp), transforms.CenterCrop(pp.crop),
                                     transforms.ToTensor(), transforms.Normalize(pp.mean, pp.std)])}
    ds = {x: datasets.ImageFolder(data / x, tf[x]) for x in ("train", "val")}
    dl = {x: torch.utils.data.DataLoader(ds[x], batch_size=4, shuffle=True, num_workers=2) for x in ("train", "val")}
    torch.manual_seed(0)
    model = zoo.create_model("efficientnet_lite0", len(ds["train"].classes))  # pretrained backbone + new head
    if fixed_features:
        for p in model.backbone.parameters():
            p.requires_grad = False
    params = model.head.parameters() if fixed_features else model.parameters()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(params, lr=0.001, momentum=0.9)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    t0 = time.time()
    best_acc, best_wts, curve = 0.0, copy.deepcopy(model.state_dict()), []
    for epoch in range(epochs):
        for phase in ("train", "val"):
            model.train() if phase == "train" else model.eval()
            corrects = 0
            for inputs, labels in dl[phase]:
                optimizer.zero_grad()
                with torch.set_grad_enabled(phase == "train"):
                    outputs = model(inputs)
                    loss = criterion(outputs, labels)
                    if phase == "train":
                        loss.backward()
                        optimizer.step()
                corrects += int((outputs.argmax(1) == labels).sum())
            if phase == "train":
                scheduler.step()
            acc = corrects / len(ds[phase])
            if phase == "val" and acc > best_acc:
                best_acc, best_wts = acc, copy.deepcopy(model.state_dict())
        curve.append({"epoch": epoch + 1, "val_acc": acc, "elapsed_s": time.time() - t0})
        print(f"  tutorial {'fixed' if fixed_features else 'full'} epoch {epoch + 1}/{epochs}: val {acc:.3f} "
              f"[{time.time() - t0:.0f} s]", flush=True)
    model.load_state_dict(best_wts)
    return {"wall_s": time.time() - t0, "best_val_acc": best_acc, "curve": curve}


def ours(data: Path, epochs: int, strategy: str, work: Path) -> dict:
    import os

    from edgetl.config import FinetuneConfig
    from edgetl.training import finetune

    # a cold cache of its own for each run: decoding and feature extraction are timed too
    os.environ["EDGETL_CACHE"] = str(work / f"cache-{strategy}")
    t0 = time.time()
    r = finetune(FinetuneConfig(data=data, backbone="efficientnet_lite0", strategy=strategy, epochs=epochs,
                                out=work / strategy), force=True)
    wall = time.time() - t0
    # per-epoch curve on the same clock: setup (decode, cache, feature extraction) + the epochs so far
    setup = wall - sum(h["seconds"] for h in r.history)
    curve, t = [], setup
    warm = json.loads((r.out / "metrics.json").read_text()).get("warm_start")
    if warm:  # full: the LP-FT warm start's probed model is a real checkpoint ("epoch 0", best.pt candidate)
        curve.append({"epoch": 0, "val_acc": warm["val_acc"], "elapsed_s": warm["elapsed_s"] + (wall - r.wall_s)})
    for h in r.history:
        t += h["seconds"]
        curve.append({"epoch": h["epoch"], "val_acc": h["val_acc"], "elapsed_s": t})
    return {"wall_s": wall, "best_val_acc": r.best_val_acc, "best_epoch": r.best_epoch, "setup_s": setup,
            "warm_start": warm, "curve": curve}


def time_to(curve: list[dict], acc: float) -> float | None:
    """Wall seconds until the val accuracy first reaches ``acc`` (None: never)."""
    return next((c["elapsed_s"] for c in curve if c["val_acc"] >= acc - 1e-9), None)


def main(argv=None) -> dict:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="hymenoptera")
    ap.add_argument("--epochs", type=int, default=25, help="the tutorial's own num_epochs")
    ap.add_argument("--skip-full", action="store_true", help="linear only (the full runs take most of the time)")
    ap.add_argument("--json", type=Path, default=RESULTS / "finetune_speed.json")
    a = ap.parse_args(argv)
    data = SHARED / a.dataset
    res = {}
    with tempfile.TemporaryDirectory() as tmp:
        res["edgetl_linear"] = ours(data, a.epochs, "linear", Path(tmp))
        res["tutorial_fixed_features"] = tutorial(data, a.epochs, True)
        if not a.skip_full:
            res["edgetl_full"] = ours(data, a.epochs, "full", Path(tmp))
            res["tutorial_full"] = tutorial(data, a.epochs, False)
    pairs = [("linear", "edgetl_linear", "tutorial_fixed_features")]
    if not a.skip_full:
        pairs.append(("full", "edgetl_full", "tutorial_full"))
    print(f"\n{'method':26s} {'wall s':>8s} {'best val':>9s}")
    for k, v in res.items():
        print(f"{k:26s} {v['wall_s']:8.1f} {v['best_val_acc']:9.3f}")
    ratios = {}
    goals = {"linear": 10.0, "full": 2.0}
    for name, o, t in pairs:
        target = res[t]["best_val_acc"]
        t_tut, t_ours = time_to(res[t]["curve"], target), time_to(res[o]["curve"], target)
        r = {"speedup": res[t]["wall_s"] / res[o]["wall_s"],
             "acc_delta_points": 100 * (res[o]["best_val_acc"] - target),
             "target_acc": target, "tutorial_time_to_target_s": t_tut, "edgetl_time_to_target_s": t_ours,
             "time_to_accuracy_speedup": (t_tut / t_ours) if t_ours else None, "goal": goals[name]}
        r["met"] = bool(r["time_to_accuracy_speedup"] and r["time_to_accuracy_speedup"] >= goals[name])
        ratios[name] = r
        tta = (f"{r['time_to_accuracy_speedup']:.1f}x faster to the tutorial's best {100 * target:.1f}% "
               f"({t_ours:.0f} s vs {t_tut:.0f} s)" if t_ours else f"never reached the tutorial's {100 * target:.1f}%")
        print(f"{name}: same {a.epochs} epochs {r['speedup']:.1f}x faster, best val {r['acc_delta_points']:+.1f} "
              f"points vs the tutorial; {tta}; goal >= {goals[name]:.0f}x: {'met' if r['met'] else 'missed'}")
    doc = {"benchmark": "finetune_speed", "date": time.strftime("%Y-%m-%d"), "dataset": a.dataset,
           "epochs": a.epochs, "machine": platform.machine(), "torch_threads": torch.get_num_threads(),
           "results": res, "ratios": ratios}
    save(a.json, doc)
    return doc


if __name__ == "__main__":
    main()
