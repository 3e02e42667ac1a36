"""edgetl predict, verify: the device side's commands."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import JsonOpt, _RE, _progress, _remote, app, console, err_console, print_json


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
    from ..errors import RuntimeInputError
    from ..runtime import Predictor

    if fp16 and int8 is not None:
        from ..errors import ConfigError

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
    on: Annotated[Optional[str], typer.Option("--on", help="Verify on this device over ssh (its edgetl, its "
                                                           "kernels): user@host, ssh://user@host:port or an alias.")] = None,
    ssh_option: Annotated[Optional[list[str]], typer.Option("--ssh-option", help="More ssh arguments (repeatable).")] = None,
    remote_edgetl: Annotated[str, typer.Option(help="The device's edgetl when it is not on its login PATH.")] = _RE.edgetl,
    remote_cache: Annotated[str, typer.Option(help="Cache folder on the device.")] = _RE.cache,
    ssh_timeout: Annotated[float, typer.Option(help="Seconds a silent ssh link is given.")] = _RE.ssh_timeout,
    as_json: JsonOpt = False,
):
    """Check a bundle on the device: every file's sha256 and size, then parity.npz through each model.

    Examples:
      1. edgetl verify models/run/bundle
      2. edgetl verify models/run/bundle --on pi@robot.local   (on the Pi's own kernels)
    """
    from ..errors import ArtifactError

    if on:
        from ..devices.verify import verify_on

        dev = _remote(on, ssh_option, remote_edgetl, remote_cache, ssh_timeout)
        r = verify_on(dev, bundle, _progress(as_json))
    else:
        from ..runtime import verify_bundle

        r = verify_bundle(bundle)
    if as_json:
        print_json(r)
    else:
        where = f" on {r['device']} (edgetl {r['device_edgetl']})" if r.get("device") else ""
        console.print(f"{len(r['files_checked'])} file(s) match bundle.json (sha256 + size){where}")
        t = Table(title=f"parity {bundle}")
        for col in ("variant", "n", "max |diff|", "tolerance", "top-1 agreement", "status"):
            t.add_column(col, justify="right")
        for v, x in r["variants"].items():
            t.add_row(v, str(x["n"]), f"{x['max_abs_diff']:.3g}", f"{x['tolerance']:.3g}",
                      f"{x['top1_agreement']:.3f} (min {x['min_agreement']:.2f})",
                      "[green]PASS[/green]" if x["ok"] else "[red]FAIL[/red]")
        console.print(t)
        pc = r.get("preprocess")
        if pc:
            console.print(f"resize ({pc['resampler']}) of a {pc['photo'][1]}x{pc['photo'][0]} held-out photo: "
                          f"{pc['max_grey_levels']} grey level(s) from export's frame (tolerance {pc['tolerance']}): "
                          + ("[green]PASS[/green]" if pc["ok"] else "[red]FAIL[/red]"))
    if not r["ok"]:
        bad = [v for v, x in r["variants"].items() if not x["ok"]]
        if r.get("preprocess") and not r["preprocess"]["ok"]:
            raise ArtifactError(f"{bundle}: this machine resizes images {r['preprocess']['max_grey_levels']} grey "
                                f"levels away from export's frame ({r['preprocess']['resampler']}): install the "
                                f"Pillow/OpenCV version named in bundle.json's created_by, or re-export here")
        raise ArtifactError(f"parity mismatch in {bundle} ({', '.join(bad)}): the model does not reproduce "
                            f"its recorded outputs on this machine")
