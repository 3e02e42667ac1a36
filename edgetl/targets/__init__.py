"""Device profiles as data: one JSON file per target in ``edgetl/targets/``.

    get_target("rpi5")          # Target(providers, threads, quant preset, streams, fps, deadline, memory)
    get_target("my-robot.json") # a target file of your own (edgetl targets --probe HOST --write FILE)
    list_targets()

Adding a target is adding a file; the registry refuses duplicates and unknown keys.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .._config import from_dict
from ..errors import ConfigError, unknown_choice

TARGETS_DIR = Path(__file__).parent


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
