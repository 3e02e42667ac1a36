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
    resolution: str | None = None  # the cameras' frame size, WIDTHxHEIGHT (the camera rig's frames)


# providers onnxruntime knows (a typo in a profile would silently fall back to the CPU)
KNOWN_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
                   "MIGraphXExecutionProvider", "OpenVINOExecutionProvider", "DmlExecutionProvider",
                   "CoreMLExecutionProvider", "QNNExecutionProvider", "XnnpackExecutionProvider",
                   "ArmNNExecutionProvider", "ACLExecutionProvider", "NnapiExecutionProvider",
                   "RknpuExecutionProvider", "VitisAIExecutionProvider", "CANNExecutionProvider",
                   "AzureExecutionProvider", "WebGpuExecutionProvider", "CPUExecutionProvider")


def parse_frame_size(text: str, what: str = "--frame-size") -> tuple[int, int]:
    """'1280x720' -> (1280, 720), or one line naming the value and the form."""
    w, sep, h = str(text).lower().partition("x")
    try:
        size = (int(w), int(h)) if sep else None
    except ValueError:
        size = None
    if size is None or not (16 <= size[0] <= 8192 and 16 <= size[1] <= 8192):
        raise ConfigError(f"{what} {text}: use WIDTHxHEIGHT with sides of 16..8192 pixels, e.g. 1280x720")
    return size


def validate(t: Target, source: str) -> Target:
    """Refuse a profile that would bench nonsense (a rig dividing by fps 0, an empty rig passing), naming
    the field and the file."""
    checks = [("fps", t.fps > 0, "a positive frame rate, e.g. 30"),
              ("streams", t.streams >= 1, "at least 1 stream"),
              ("deadline_ms", t.deadline_ms > 0, "a positive deadline in ms, e.g. 33.3"),
              ("threads", t.threads >= 0, "0 (onnxruntime's default) or a positive thread count"),
              ("memory_budget_mb", t.memory_budget_mb > 0, "a positive budget in MB"),
              ("providers", bool(t.providers), "at least one execution provider, e.g. CPUExecutionProvider")]
    for field, ok, need in checks:
        if not ok:
            raise ConfigError(f"{source}: target field '{field}' is {getattr(t, field)!r}; it needs {need}")
    unknown = [p for p in t.providers if p not in KNOWN_PROVIDERS]
    if unknown:
        raise ConfigError(f"{source}: target field 'providers' has unknown {', '.join(unknown)}; known: "
                          f"{', '.join(KNOWN_PROVIDERS)}")
    if t.resolution is not None:
        parse_frame_size(t.resolution, f"{source}: target field 'resolution'")
    return t


def _load() -> dict[str, Target]:
    out: dict[str, Target] = {}
    for f in sorted(TARGETS_DIR.glob("*.json")):
        t = validate(from_dict(Target, json.loads(f.read_text()), source=str(f)), str(f))
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
        return validate(from_dict(Target, data, source=str(path)), str(path))
    try:
        return _TARGETS[name]
    except KeyError:
        raise unknown_choice("target", name, _TARGETS) from None
