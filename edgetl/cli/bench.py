"""edgetl targets, bench: a model measured on a target, here or on a device over ssh."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .common import JsonOpt, TargetOpt, _BE, _RE, _remote, _choice, _fmt, _progress, app, console, print_json
from ..config import BenchConfig, FrameSource, Scenario, Trigger


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
    gc: Annotated[Optional[str], typer.Option("--gc", help="Clean a device's edgetl cache: old runs, objects no "
                                                           "kept run uses, interrupted copies.")] = None,
    keep: Annotated[int, typer.Option(help="With --gc: the newest runs kept.")] = 3,
    remote_cache: Annotated[str, typer.Option(help="With --gc: the cache folder on the device.")] = _RE.cache,
    ssh_timeout: Annotated[float, typer.Option(help="Seconds a silent ssh link is given before the call "
                                                    "ends.")] = _RE.ssh_timeout,
    as_json: JsonOpt = False,
):
    """List the device profiles edgetl benches against (files in edgetl/targets/), probe a device, or clean
    what benches left on it.

    Examples:
      1. edgetl targets
      2. edgetl targets --probe pi@robot.local --write robot.json
      3. edgetl targets --gc pi@robot.local --keep 2
    """
    from ..targets import list_targets, validate

    if probe or gc:
        dev = _remote(probe or gc, ssh_option, remote_edgetl, remote_cache, ssh_timeout)
        if gc:
            from ..devices.transfer import gc as clean

            r = clean(dev, keep)
            if as_json:
                print_json(r)
            else:
                console.print(f"{r['host']}:{r['cache']}: removed {r['runs_removed']} run(s), {r['objects_removed']} "
                              f"object(s), {r['incoming_removed']} interrupted cop(ies); {r['bytes_freed'] / 1e6:.1f} "
                              f"MB freed, {r['runs_kept']} run(s) kept")
            return
        _probe(dev, write, as_json, validate)
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


def _probe(dev, write: Path | None, as_json: bool, validate) -> None:
    import dataclasses

    from .._io import write_json
    from ..devices.probe import closest_target, probe

    host = dev.host
    info = probe(dev)
    near = closest_target(info)
    if write:
        t = dataclasses.replace(near, name=write.stem, description=f"{info['hostname']}: {info['cpu']}, probed",
                                arch=info["machine"], threads=info["cores"], quant_preset=info["int8_preset"],
                                providers=tuple(p for p in near.providers if p in info["providers"])
                                or ("CPUExecutionProvider",),
                                memory_budget_mb=float(max(1, info["memory_mb"] // 2)))
        write_json(write, dataclasses.asdict(validate(t, str(write))))
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
    target: TargetOpt = _BE.target,
    data: Annotated[Optional[Path], typer.Option(help="Labelled images for accuracy: DATA/val/ if there is one, "
                                                      "else every image of a folder of class folders.")] = None,
    scenario: Annotated[Optional[str], _choice(Scenario, "Scenario (default: camera-rig, concurrent streams at the "
                                                         "target's FPS, for a target with several streams, else "
                                                         "single-stream; multi-stream batches the streams).")] = None,
    streams: Annotated[Optional[str], typer.Option(help="Camera streams (default: the target's), or 'max': the most "
                                                        "streams that PASS, found by search.")] = None,
    rig_seconds: Annotated[float, typer.Option(help="camera-rig: seconds the streams run, per variant and "
                                                    "repeat.")] = _BE.rig_seconds,
    repeats: Annotated[int, typer.Option(help="camera-rig: full runs; the verdict is the worst one's, with the "
                                              "spread of misses and p99.")] = _BE.repeats,
    frame_size: Annotated[Optional[str], typer.Option(help="Camera frame size WIDTHxHEIGHT for the rig and the "
                                                           "end-to-end rows (default: the target's resolution, "
                                                           "else photos as stored).")] = None,
    frames: Annotated[str, _choice(FrameSource, "Camera frames: raw (decoded buffers) or mjpeg (JPEG bytes each "
                                                "worker decodes, as from a USB camera).", "--frames")] = _BE.frames.value,
    trigger: Annotated[str, _choice(Trigger, "synced: every camera captures at once (the worst case); staggered: "
                                             "phases spread over the frame period.", "--trigger")] = _BE.trigger.value,
    fast_decode: Annotated[bool, typer.Option("--fast-decode", help="Decode JPEGs at a reduced scale (>= 2x the "
                                                                    "resize target): faster, not the training "
                                                                    "tensor.")] = False,
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
    install: Annotated[bool, typer.Option("--install", help="With --on: if the device has no edgetl, install this "
                                                            "very edgetl (a wheel of this install) into a venv "
                                                            "in the device's cache.")] = False,
    install_wheel: Annotated[Optional[Path], typer.Option(help="With --install: the edgetl wheel to install "
                                                               "there.")] = None,
    keep: Annotated[Optional[int], typer.Option(help="With --on: afterwards keep only the newest N runs on the "
                                                     "device (old runs, unused objects, interrupted copies "
                                                     "removed).")] = None,
    ssh_timeout: Annotated[float, typer.Option(help="With --on: seconds a silent ssh link is given before the "
                                                    "bench ends (the device's bench is stopped too).")] = _RE.ssh_timeout,
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
      7. edgetl bench models/run --target vehicle-6cam --frame-size 1280x720 --frames mjpeg --trigger staggered
      8. edgetl bench models/run --target robot-4cam --streams max   (how many cameras this board sustains)
    """
    n_streams, search = _streams(streams)
    cfg = BenchConfig(target=target, data=data, scenario=scenario, threads=threads,
                      providers=tuple(p.strip() for p in providers.split(",")) if providers else None,
                      min_runs=min_runs, min_time=min_time, max_images=max_images, out=out, rss=not no_rss,
                      end_to_end=not no_e2e, streams=n_streams, streams_max=search, rig_seconds=rig_seconds,
                      repeats=repeats, frame_size=frame_size, frames=frames, trigger=trigger,
                      fast_decode=fast_decode, duration=duration)
    if on:
        from ..benchmark.remote import bench_on

        dev = _remote(on, ssh_option, remote_edgetl, remote_cache, ssh_timeout)
        r = bench_on(dev, model, cfg, install_missing=install or install_wheel is not None, wheel=install_wheel,
                     keep=keep, progress=_progress(as_json))
    else:
        from ..benchmark.orchestrate import bench as run_bench

        r = run_bench(model, cfg, progress=_progress(as_json))
    if as_json:
        print_json(json.loads((r.path / "bench.json").read_text()))
        return
    _print_bench(r)


def _streams(text: str | None) -> tuple[int | None, bool]:
    """--streams N | max -> (N, search)."""
    if text is None:
        return None, False
    if text.strip().lower() == "max":
        return None, True
    try:
        return int(text), False
    except ValueError:
        from ..errors import ConfigError

        raise ConfigError(f"--streams {text}: use a number of camera streams (1..64) or 'max'") from None


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
    if r.data.get("images"):
        console.print(f"camera input: {escape(r.data['images'])}")
    for e in r.data["emulated"]:
        console.print(f"[yellow]emulated:[/yellow] {escape(e)}")
    for v, x in r.variants.items():
        if x.get("end_to_end"):
            e = x["end_to_end"]
            console.print(f"end-to-end {v}: the model is {100 * e['model_share']:.0f}% of it ("
                          + ", ".join(f"{s} {ms:.2f}" for s, ms in e["stages_mean_ms"].items()) + " ms)")
        if x.get("rig"):
            console.print(f"camera rig {v}: {escape(x['rig']['summary'])}")
            if x["rig"].get("streams_max"):
                console.print(f"streams max {v}: {escape(x['rig']['streams_max']['summary'])}")
    for v, why in r.data.get("skipped", {}).items():
        console.print(f"[yellow]{v} not benched:[/yellow] {escape(why)}")
    if r.data.get("sustained"):
        run = r.data["sustained"]
        console.print(f"sustained {run['seconds']:g} s: drift " + ", ".join(f"{v} {d:+.1f}%" for v, d in run["drift_pct"].items()))
        for n in run["notes"]:
            console.print(f"  {escape(n)}")
    plots = [p.name for p in sorted(r.path.glob("*.png"))]
    console.print(f"report: {r.path / 'report.md'}  plots: {', '.join(plots)}")
