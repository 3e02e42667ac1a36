"""What a device is: cores, ISA, memory, onnxruntime and its providers, read on the device itself by the
same code that reads them here (``edgetl.runtime.cpu``, sent as source: the device needs python3 only).

    info = probe(Remote("pi@robot.local"))     # {"machine", "cpu", "cores", "flags", "memory_mb", ...}
    closest_target(info)                        # the built-in profile nearest it
"""
from __future__ import annotations

import json
from pathlib import Path

from ..runtime import cpu
from .ssh import Remote, RemoteError, last_line, q

_TRAILER = r"""
import json as _json
info = cpu_info()
mem = 0
try:
    mem = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]) // 1024
except (OSError, StopIteration, ValueError):
    pass
try:
    import onnxruntime as ort; ortv, prov = ort.__version__, ort.get_available_providers()
except ImportError:
    ortv, prov = None, []
print(_json.dumps({"hostname": platform.node(), "machine": platform.machine(), "cpu": info["model"],
                   "cores": info["cores"], "flags": sorted(info["flags"]), "flags_source": info["source"],
                   "emulated": info["emulated"], "memory_mb": mem, "onnxruntime": ortv, "providers": prov}))
"""


def probe(dev: Remote) -> dict:
    """The device's cores, ISA flags, memory and onnxruntime providers (needs python3 there)."""
    # the python beside the device's edgetl sees its onnxruntime; else the system python3
    find = (f'e=$(command -v {q(dev.edgetl)} 2>/dev/null); py="${{e%/*}}/python3"; '
            f'[ -n "$e" ] && [ -x "$py" ] || py=python3; exec "$py" -')
    source = Path(cpu.__file__).read_text().replace("from __future__ import annotations\n", "")
    p = dev.run(find, stdin=("from __future__ import annotations\n" + source + _TRAILER).encode())
    if p.returncode != 0:
        raise RemoteError(f"could not read {dev.host}'s hardware ({last_line(p.stderr) or 'python3 failed'}): "
                          f"the device needs python3")
    info = json.loads(p.stdout.decode().strip().splitlines()[-1])
    info["isa"] = cpu.isa_of(info["machine"], info["flags"])
    info["int8_preset"] = cpu.preset_for(info["isa"])
    return info


def closest_target(info: dict):
    """The built-in profile nearest a probed device (arch, then ISA, cores and memory)."""
    from ..targets import list_targets

    arch = "aarch64" if info["isa"]["machine"] in ("aarch64", "arm64") else "x86_64"

    def distance(t) -> tuple:
        return (t.arch not in ("any", arch), (t.quant_preset not in ("auto", info["int8_preset"])),
                abs((t.threads or info["cores"]) - info["cores"]), abs(t.memory_budget_mb - info["memory_mb"] / 2),
                t.kind == "host")

    return min((t for t in list_targets() if t.providers[0] == "CPUExecutionProvider"
                or any(p in info["providers"] for p in t.providers[:1])), key=distance)
