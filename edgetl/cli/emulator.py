"""edgetl emulator: an emulated aarch64 device (qemu-user) reached over ssh like a real one."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import JsonOpt, app, console, print_json

emulator = typer.Typer(no_args_is_help=True, help="An ARM device without a board: an emulated aarch64 Debian root with "
                                                  "edgetl's base install, over ssh on 127.0.0.1 (ARM's arithmetic, "
                                                  "never ARM's timing).")
app.add_typer(emulator, name="emulator")

RootOpt = Annotated[Optional[Path], typer.Option(help="The device's root folder (default "
                                                      "~/.cache/edgetl/arm64-device/root).")]
PortOpt = Annotated[int, typer.Option(help="Its sshd port on 127.0.0.1.")]
CpuOpt = Annotated[str, typer.Option(help="The emulated CPU: cortex-a76 (~ Raspberry Pi 5: float16, dot product), "
                                          "cortex-a72 (~ Pi 4: neither), cortex-a53, neoverse-n1, a64fx, max.")]


def _device(root, port, cpu):
    from ..devices.emulated import EmulatedDevice, default_root

    return EmulatedDevice(root or default_root(), port, cpu)


def _print(dev, as_json: bool) -> None:
    s = dev.status()
    if as_json:
        print_json({**s, "bench_options": dev.bench_options()})
        return
    console.print(f"root {s['root']}: {'built' if s['built'] else 'not built'}, "
                  f"{'running' if s['running'] else 'stopped'} (cpu {s['cpu']}, 127.0.0.1:{s['port']})")
    if s["running"]:
        console.print("reach it with: edgetl bench BUNDLE " + " ".join(dev.bench_options()))


@emulator.command()
def start(root: RootOpt = None, port: PortOpt = 2222, cpu: CpuOpt = "cortex-a76",
          wheel: Annotated[Optional[Path], typer.Option(help="The edgetl wheel to install there (default: this "
                                                             "edgetl, built here).")] = None,
          as_json: JsonOpt = False):
    """Build the device if needed (once ~10 minutes: Debian arm64, Python, edgetl's base install), then start
    its sshd.

    Examples:
      1. edgetl emulator start
      2. edgetl bench models/run/bundle --target rpi5 $(edgetl emulator status --options)
    """
    dev = _device(root, port, cpu)
    dev.build(wheel)
    dev.start()
    _print(dev, as_json)


@emulator.command()
def stop(root: RootOpt = None, port: PortOpt = 2222, cpu: CpuOpt = "cortex-a76"):
    """Stop the device's sshd and everything running in it."""
    _device(root, port, cpu).stop()
    console.print("stopped")


@emulator.command()
def remove(root: RootOpt = None, port: PortOpt = 2222, cpu: CpuOpt = "cortex-a76"):
    """Stop the device and delete its root and ssh keys."""
    _device(root, port, cpu).remove()
    console.print("removed")


@emulator.command()
def status(root: RootOpt = None, port: PortOpt = 2222, cpu: CpuOpt = "cortex-a76",
           options: Annotated[bool, typer.Option("--options", help="Print only the bench/verify options that "
                                                                   "reach it.")] = False,
           as_json: JsonOpt = False):
    """Whether the device is built and running, and the options that reach it."""
    dev = _device(root, port, cpu)
    if options:
        import shlex

        print(" ".join(shlex.quote(o) for o in dev.bench_options()))
        return
    _print(dev, as_json)
