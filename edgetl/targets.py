"""Device profiles as data: one JSON file per target in ``edgetl/targets/``.

    get_target("rpi5")          # Target(providers, threads, quant preset, streams, fps, deadline, memory)
    list_targets()

Adding a target is adding a file; the registry refuses duplicates and unknown keys.
"""
from __future__ import annotations

import dataclasses
import json
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
    streams: int  # camera frames batched per tick (multi-stream)
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
    try:
        return _TARGETS[name]
    except KeyError:
        raise unknown_choice("target", name, _TARGETS) from None


def host_isa() -> dict:
    """What this CPU offers for int8: machine, vnni / dot-product flags."""
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags |= set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    machine = platform.machine().lower()
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "avx512vnni"})
    return {"machine": machine, "vnni": vnni, "dotprod": "asimddp" in flags, "avx2": "avx2" in flags}


def host_preset() -> str:
    isa = host_isa()
    if isa["machine"] in ("aarch64", "arm64"):
        return "arm64"
    return "x86-vnni" if isa["vnni"] else "x86-avx2"
