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
from rich.table import Table

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  help="Fine-tune an image backbone, export it to int8 ONNX, prove it and bench it on the target.")
console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

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


class _OneLineHandler(logging.Handler):
    """Library warnings as one yellow line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        err_console.print(f"[{style}]{record.getMessage()}[/{style}]", markup=True, highlight=False)


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
    console.print("Offline with no cached torchvision weights: use [bold]efficientnet_lite0[/bold] or --weights none.")


def main() -> None:
    """Console entry point: run the app, turning EdgetlError into one line + exit 1."""
    from .errors import EdgetlError

    _setup_logging()
    try:
        app()
    except EdgetlError as e:
        if os.environ.get("EDGETL_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/bold red] {e}", soft_wrap=True)
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
    backbone: Annotated[str, typer.Option(help="Backbone name (see `edgetl zoo`).")] = "efficientnet_lite0",
    weights: Annotated[str, typer.Option(help="'default' (pretrained), 'none' (random) or a checkpoint path.")] = "default",
    strategy: Annotated[str, typer.Option(help="linear | full | gradual.")] = "linear",
    epochs: Annotated[int, typer.Option()] = 10,
    batch_size: Annotated[int, typer.Option()] = 32,
    lr: Annotated[float, typer.Option(help="Head learning rate.")] = 1e-3,
    backbone_lr_mult: Annotated[float, typer.Option(help="Backbone LR = lr x this (discriminative LR).")] = 0.1,
    schedule: Annotated[str, typer.Option(help="cosine (with warm-up) | constant.")] = "cosine",
    warmup_epochs: Annotated[float, typer.Option()] = 1.0,
    augment: Annotated[str, typer.Option(help="none | light (crop+flip) | strong (+colour jitter, RandAugment).")] = "none",
    cache_views: Annotated[int, typer.Option(help="linear + augment: K augmented views cached once.")] = 1,
    lp_epochs: Annotated[Optional[int], typer.Option(help="full/gradual: train the head on cached features for N epochs first (LP-FT; default 10, 0: off).")] = None,
    label_smoothing: Annotated[float, typer.Option()] = 0.0,
    l2sp: Annotated[float, typer.Option(help="L2-SP lambda: pull backbone weights toward the pretrained ones.")] = 0.0,
    weight_decay: Annotated[float, typer.Option()] = 1e-4,
    early_stop: Annotated[int, typer.Option(help="Stop after N epochs without val improvement (0: off).")] = 0,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda.")] = "auto",
    val_fraction: Annotated[float, typer.Option(help="Val share drawn from train when DATA has no val/.")] = 0.2,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes.")] = 2,
    image_size: Annotated[Optional[int], typer.Option(help="Train/export at this input size instead of the backbone's.")] = None,
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
    from .finetune import FinetuneConfig, finetune as run

    values = dict(data=data, backbone=backbone, weights=weights, strategy=strategy, epochs=epochs,
                  batch_size=batch_size, lr=lr, backbone_lr_mult=backbone_lr_mult, schedule=schedule,
                  warmup_epochs=warmup_epochs, augment=augment, cache_views=cache_views, lp_epochs=lp_epochs,
                  label_smoothing=label_smoothing, l2sp=l2sp, weight_decay=weight_decay, early_stop=early_stop,
                  seed=seed, device=device, val_fraction=val_fraction, workers=workers, image_size=image_size, out=out)
    if config:
        cfg = load_config_file(FinetuneConfig, config, {k: str(v) if isinstance(v, Path) else v
                                                        for k, v in _explicit(ctx, values).items()})
    else:
        cfg = from_dict(FinetuneConfig, {k: str(v) if isinstance(v, Path) else v for k, v in values.items()},
                        source="options")
    rank0 = int(os.environ.get("RANK", "0")) == 0
    result = run(cfg, resume=resume, force=force, progress=_progress(as_json or not rank0))
    if not rank0:
        return
    if as_json:
        import dataclasses

        print_json({k: v for k, v in dataclasses.asdict(result).items()})
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
    opset: Annotated[int, typer.Option(help="ONNX opset (17..23).")] = 17,
    embed_preprocess: Annotated[bool, typer.Option("--embed-preprocess", help="Graph takes uint8 NHWC frames.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Add a static int8 model (model.int8.onnx).")] = False,
    calib_data: Annotated[Optional[Path], typer.Option(help="ImageFolder for calibration (default: the run's train split).")] = None,
    calib_size: Annotated[int, typer.Option(help="Calibration images (class-stratified, seeded).")] = 200,
    calib_method: Annotated[str, typer.Option(help="minmax | entropy | percentile.")] = "minmax",
    preset: Annotated[str, typer.Option(help="auto | x86-avx2 | x86-vnni | arm64 | tensorrt.")] = "auto",
    per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor", help="Weight quantization granularity.")] = True,
    max_drop: Annotated[float, typer.Option(help="Top-1 points int8 may lose vs fp32 (at least one eval image).")] = 0.5,
    min_agreement: Annotated[float, typer.Option(help="Target share of images where int8's top-1 equals fp32's; "
                                                      "below it, sensitive layers go back to float.")] = 0.99,
    eval_data: Annotated[Optional[Path], typer.Option(help="Labelled ImageFolder for parity/accuracy (default: the run's val).")] = None,
    no_simplify: Annotated[bool, typer.Option("--no-simplify", help="Skip onnxslim.")] = False,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
):
    """Export a run to a self-describing ONNX bundle with proven fp32 parity (and int8).

    Examples:
      1. edgetl export models/efficientnet_lite0-photos-linear
      2. edgetl export models/run --int8 --max-drop 0.5
      3. edgetl export models/run --embed-preprocess --out bundles/camera
    """
    from .export import ExportConfig, export as run_export

    cfg = ExportConfig(out=out, opset=opset, embed_preprocess=embed_preprocess, int8=int8, calib_data=calib_data,
                       calib_size=calib_size, calib_method=calib_method, preset=preset, per_channel=per_channel,
                       max_drop=max_drop, min_agreement=min_agreement, eval_data=eval_data,
                       simplify=not no_simplify)
    b = run_export(run, cfg, force=force, progress=_progress(as_json))
    if as_json:
        print_json({"bundle": str(b.path), "parity": b.parity, "quantization": b.quantization, "files": b.files})
        return
    f = b.parity["fp32"]
    t = Table(title=f"bundle {b.path}")
    for col in ("variant", "size MB", "top-1", "agreement", "max |diff|", "p50 ms (host)"):
        t.add_column(col, justify="right")
    q = b.quantization
    t.add_row("fp32", f"{b.files['model.onnx']['size'] / 1e6:.2f}", f"{f['top1_onnx']:.3f}", f"{f['top1_agreement']:.3f}",
              f"{f['max_abs_diff']:.2e}", f"{q['fp32_p50_ms']:.2f}" if q else "-")
    if q:
        p = q["parity"]
        t.add_row("int8", f"{b.files['model.int8.onnx']['size'] / 1e6:.2f}", f"{p['top1_int8']:.3f}",
                  f"{p['top1_agreement']:.3f}", f"{p['max_abs_diff']:.2e}", f"{q['int8_p50_ms']:.2f}")
    console.print(t)
    if q:
        console.print(f"int8: preset {q['preset']}, {q['format']} {q['activation_type']}/{q['weight_type']}"
                      f"{', per-channel' if q['per_channel'] else ''}{', reduce_range' if q['reduce_range'] else ''}; "
                      f"{len(q['nodes_excluded'])} node(s) kept float.")
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

    p = Predictor(model, variant="auto" if int8 is None else ("int8" if int8 else "fp32"), threads=threads)
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
                err_console.print(f"[yellow]skipped:[/yellow] {e}", soft_wrap=True)
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
def targets(as_json: JsonOpt = False):
    """List the device profiles edgetl benches against (files in edgetl/targets/)."""
    from .targets import list_targets

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


@app.command()
def bench(
    model: Annotated[Path, typer.Argument(help="Run folder, bundle folder or .onnx.")],
    target: Annotated[str, typer.Option(help="Device profile (see `edgetl targets`).")] = "host",
    data: Annotated[Optional[Path], typer.Option(help="Labelled ImageFolder for accuracy parity (val/ is used).")] = None,
    scenario: Annotated[Optional[str], typer.Option(help="single-stream | multi-stream | offline.")] = None,
    threads: Annotated[Optional[int], typer.Option(help="Intra-op threads (default: the target's).")] = None,
    providers: Annotated[Optional[str], typer.Option(help="Comma-separated providers; must be installed.")] = None,
    min_runs: Annotated[int, typer.Option(help="Timed runs at least.")] = 50,
    min_time: Annotated[float, typer.Option(help="Timed seconds at least.")] = 2.0,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default BUNDLE/bench/<target>).")] = None,
    no_rss: Annotated[bool, typer.Option("--no-rss", help="Skip the peak-RSS subprocess.")] = False,
    as_json: JsonOpt = False,
):
    """Latency (p50/p90/p99), peak memory, size and accuracy parity of each variant on a target.

    Examples:
      1. edgetl bench models/run --target host --data photos/
      2. edgetl bench models/run/bundle --target vehicle-6cam
      3. edgetl bench model.int8.onnx --scenario offline --json
    """
    from .bench import BenchConfig, bench as run_bench

    cfg = BenchConfig(target=target, data=data, scenario=scenario, threads=threads,
                      providers=tuple(p.strip() for p in providers.split(",")) if providers else None,
                      min_runs=min_runs, min_time=min_time, out=out, rss=not no_rss)
    r = run_bench(model, cfg, progress=_progress(as_json))
    if as_json:
        print_json(json.loads((r.path / "bench.json").read_text()))
        return
    t = Table(title=f"edgetl bench · {r.target} · {r.scenario}")
    for col in ("variant", "size MB", "top-1", "agreement", "p50 ms", "p90 ms", "p99 ms", "FPS", "peak RSS MB", "status"):
        t.add_column(col, justify="right")
    for v, x in r.variants.items():
        lat = x["latency"]
        f = lambda z, d=3: "-" if z is None else f"{z:.{d}f}"
        st = x.get("status", "-") if v != "torch" else "reference"
        t.add_row(v, f(x["size_mb"], 2), f(x.get("top1")), f(x.get("agreement")), f(lat["p50_ms"], 2),
                  f(lat["p90_ms"], 2), f(lat["p99_ms"], 2), f(lat["throughput_ips"], 1), f(x["peak_rss_mb"], 0),
                  "[green]PASS[/green]" if st == "PASS" else ("[red]FAIL[/red]" if st == "FAIL" else st))
    console.print(t)
    m = r.machine
    console.print(f"ran on {m['cpu']} ({m['cores']} cores, vnni: {m['isa']['vnni'] or 'no'}), onnxruntime "
                  f"{m['onnxruntime']}, providers {', '.join(r.data['providers_used'])}")
    for e in r.data["emulated"]:
        console.print(f"[yellow]emulated:[/yellow] {e}")
    console.print(f"report: {r.path / 'report.md'}  plots: {r.path / 'latency.png'}, {r.path / 'accuracy_vs_latency.png'}")


# --- demo ---------------------------------------------------------------------------------------

@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("models/demo"),
    force: Annotated[bool, typer.Option("--force/--no-force", help="Overwrite an earlier demo run.")] = True,
):
    """The whole chain on the built-in TrashNet subset: offline, real weights, a few minutes on 2 cores."""
    from .demo import demo as run_demo

    r = run_demo(out, force=force, progress=_progress(False))
    q = r["bundle"].quantization
    host, pi = r["bench"]["host"], r["bench"]["rpi5"]
    t = Table(title="edgetl demo: efficientnet_lite0 on trashnet_mini (6 classes)")
    for col in ("variant", "val top-1", "agreement", "p50 ms host", "p50 ms rpi5 (emulated)", "size MB", "host", "rpi5"):
        t.add_column(col, justify="right")
    for v in ("fp32", "int8"):
        h, p_ = host.variants[v], pi.variants[v]
        t.add_row(v, f"{h['top1']:.3f}", f"{h['agreement']:.3f}", f"{h['latency']['p50_ms']:.2f}",
                  f"{p_['latency']['p50_ms']:.2f}", f"{h['size_mb']:.2f}", h["status"], p_["status"])
    console.print(t)
    console.print(q["verdict"])
    for ph, pr in r["predictions"]:
        console.print(f"predict {ph.parent.name}/{ph.name}: [bold]{pr.label}[/bold] ({pr.prob:.2f})")
    console.print(f"verify: {'[green]PASS[/green]' if r['verify']['ok'] else '[red]FAIL[/red]'}")
    console.print(f"reports: {host.path / 'report.md'}, {pi.path / 'report.md'}")
    console.print(f"plots: {host.path / 'latency.png'}, {host.path / 'accuracy_vs_latency.png'}, "
                  f"{r['bundle'].path / 'sensitivity.png'}, {r['run'].out / 'curves.png'}")
