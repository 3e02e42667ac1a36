"""Device profiles as data: one JSON file per target in ``edgetl/targets/``.

    get_target("rpi5")          # Target(providers, threads, quant preset, streams, fps, deadline, memory)
    get_target("my-robot.json") # a target file of your own (edgetl targets --probe HOST --write FILE)
    list_targets()
    cpu_info()                  # this host: CPU model, cores, ISA flags (read once from /proc/cpuinfo)

Adding a target is adding a file; the registry refuses duplicates and unknown keys.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
from pathlib import Path

from ._config import from_dict
from .errors import ConfigError, unknown_choice

TARGETS_DIR = Path(__file__).with_name("targets")


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    description: str
    kind: str
    arch: str  # x86_64 | aarch64 | any
    providers: tuple[str, ...]  # fallback order
    threads: int  # 0: onnxruntime's default
    quant_preset: str
    streams: int  # cameras: concurrent streams (camera-rig), or frames batched per tick (multi-stream)
    fps: float
    deadline_ms: float
    memory_budget_mb: float


def _load() -> dict[str, Target]:
    out: dict[str, Target] = {}
    for f in sorted(TARGETS_DIR.glob("*.json")):
        t = from_dict(Target, json.loads(f.read_text()), source=str(f))
        if t.name in out:
            raise ConfigError(f"target '{t.name}' is defined twice ({f})")
        out[t.name] = t
    return out


_TARGETS = _load()


def list_targets() -> list[Target]:
    return [_TARGETS[k] for k in sorted(_TARGETS)]


def get_target(name: str) -> Target:
    """A profile by name, or a target JSON file (a path ending in .json)."""
    if str(name).endswith(".json"):
        path = Path(name).expanduser()
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"target file not found: {path}; name a profile (edgetl targets) or a JSON file") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"target file {path} is not valid JSON ({e})") from None
        return from_dict(Target, data, source=str(path))
    try:
        return _TARGETS[name]
    except KeyError:
        raise unknown_choice("target", name, _TARGETS) from None


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """This host's CPU model name, logical cores and ISA flags (/proc/cpuinfo on Linux)."""
    model, flags = platform.processor() or "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "Hardware") and not model:
                model = value.strip()
            elif key in ("flags", "Features") and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return {"model": model or platform.machine(), "cores": os.cpu_count() or 1, "flags": frozenset(flags)}


def isa_of(machine: str, flags) -> dict:
    """What a CPU offers for int8, from its machine name and /proc/cpuinfo flags."""
    flags = set(flags)
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "avx512vnni"})
    return {"machine": machine.lower(), "vnni": vnni, "dotprod": "asimddp" in flags, "avx2": "avx2" in flags}


def host_isa() -> dict:
    """What this CPU offers for int8: machine, vnni / dot-product flags."""
    return isa_of(platform.machine(), cpu_info()["flags"])


def preset_for(isa: dict) -> str:
    """The int8 preset that suits a CPU (see edgetl.quantize.PRESETS)."""
    if isa["machine"] in ("aarch64", "arm64"):
        return "arm64"
    return "x86-vnni" if isa["vnni"] else "x86-avx2"


def host_preset() -> str:
    return preset_for(host_isa())
