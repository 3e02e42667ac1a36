"""edgetl sweep, demo: whole chains (fine-tune -> export -> bench) in one command."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import ForceOpt, JsonOpt, TargetOpt, _RE, _SW, _remote, _choice, _fmt, _progress, app, console, print_json
from ..config import Strategy


# --- sweep --------------------------------------------------------------------------------------

@app.command()
def sweep(
    data: Annotated[Path, typer.Argument(help="ImageFolder tree (as for edgetl finetune).")],
    target: TargetOpt = _SW.target,
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
    from ..sweeps import SweepConfig, sweep as run_sweep

    cfg = SweepConfig(data=data, target=target, backbones=tuple(b.strip() for b in backbones.split(",") if b.strip())
                      if backbones else None, strategy=strategy, epochs=epochs, headroom=headroom, qat=qat,
                      bench_min_time=bench_time, out=out)
    remote = None
    if on:
        remote = _remote(on, ssh_option, remote_edgetl).resolved()
    r = run_sweep(cfg, resume=resume, force=force, remote=remote, progress=_progress(as_json))
    from ..sweeps import meets
    from ..targets import get_target

    if as_json:
        print_json(json.loads((r.path / "sweep.json").read_text()))
        return
    t = Table(title=f"edgetl sweep · {data} · {target}")
    for col in ("backbone", "variant", "top-1", "p50 ms", "p90 ms", "size MB", "meets target"):
        t.add_column(col, justify="right")
    for row in r.rows:
        for v, x in row.get("variants", {}).items():
            rec = r.recommendation and (r.recommendation["backbone"], r.recommendation["variant"]) == (row["backbone"], v)
            t.add_row(("[bold]" if rec else "") + row["backbone"], v, _fmt(x["top1"], ".3f"), _fmt(x["p50_ms"]),
                      _fmt(x["p90_ms"]), _fmt(x["size_mb"]), "yes" if meets(x, get_target(target), headroom) else "no")
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
    qat: Annotated[bool, typer.Option("--qat/--no-qat", help="Quantization-aware training where post-training "
                                                             "quantization misses 99% agreement (it does not on the "
                                                             "demo photos: then nothing more runs).")] = True,
):
    """The whole chain on the built-in demo photos: offline, real weights, a few minutes on 2 cores."""
    from ..demo import DEMO_DATA, STEPS
    from ..demo import demo as run_demo

    r = run_demo(out, force=force, qat=qat, progress=_progress(False))
    q = r["bundle"].quantization
    host, pi = r["bench"]["host"], r["bench"]["rpi5"]
    n_cls, n_val = len(host.accuracy.get("labels", [])), host.accuracy.get("n")
    t = Table(title=f"edgetl demo: efficientnet_lite0 on {DEMO_DATA.name} ({n_cls} classes, {n_val} val photos)")
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
                  f"{100 * (pr_['agreement'] or 0):.1f}% of the val photos ({mark(pr_['met']['agreement'])}: >= 99%)")
    for ph, truth, pr in r["predictions"]:
        ok = "[green]right[/green]" if pr.label == truth else "[red]wrong[/red]"
        console.print(f"predict {ph.parent.name}/{ph.name}: [bold]{escape(pr.label)}[/bold] ({pr.prob:.2f}); "
                      f"true class {escape(truth)}: {ok}")
    console.print(f"verify: {'[green]PASS[/green]' if r['verify']['ok'] else '[red]FAIL[/red]'}")
    secs = r["seconds"]
    console.print("time: " + ", ".join(f"{s} {secs[s]:.0f} s" for s in STEPS) + f"; total {sum(secs.values()):.0f} s")
    console.print("* rpi5 emulated on this host (threads capped at its cores): edgetl bench --on a Pi measures it")
    console.print(f"reports: {host.path / 'report.md'}, {pi.path / 'report.md'}")
    plots = [host.path / "latency.png", host.path / "accuracy_vs_latency.png", r["bundle"].path / "sensitivity.png",
             r["run"].out / "curves.png"]
    console.print("plots: " + ", ".join(str(p) for p in plots if p.is_file()))
