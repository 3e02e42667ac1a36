"""CPU facts, read in one place: model, cores, ISA flags, and what they mean for int8 and float16.

    cpu_info()          # {"model": "AMD EPYC", "cores": 2, "flags": frozenset({...})}, read once
    host_isa()          # {"machine": "x86_64", "vnni": [...], "dotprod": False, "avx2": True}
    host_preset()       # the int8 preset that suits this CPU: x86-vnni | x86-avx2 | arm64
    float16_unsupported(providers)   # None, or why no provider here computes float16

numpy-free and torch-free: the device side, ``targets --probe`` and the export's preset choice share it.
"""
from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Sequence

# providers whose kernels compute in float16; onnxruntime's x86 CPU provider has none (it runs a float16
# graph by casting every op back to float32, which is neither fp16's speed nor its numerics on a device)
FP16_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
                  "MIGraphXExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")


def read_cpuinfo(text: str) -> tuple[str, set[str], list[float]]:
    """(model name, ISA flags, per-core MHz) from the text of /proc/cpuinfo (x86 and ARM spellings)."""
    model, flags, mhz = "", set(), []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "cpu MHz":
            try:
                mhz.append(float(value))
            except ValueError:
                pass
    return model, flags, mhz


def _cpuinfo_text(root: Path = Path("/")) -> str:
    try:
        return (root / "proc/cpuinfo").read_text()
    except OSError:
        return ""


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """This host's CPU model name, logical cores and ISA flags (/proc/cpuinfo on Linux)."""
    model, flags, _ = read_cpuinfo(_cpuinfo_text())
    return {"model": model or platform.processor() or platform.machine(), "cores": os.cpu_count() or 1,
            "flags": frozenset(flags)}


def cpu_mhz(root: Path = Path("/")) -> float | None:
    """/proc/cpuinfo's mean "cpu MHz" (read anew each call: it is a clock, not a fact), or None."""
    mhz = read_cpuinfo(_cpuinfo_text(root))[2]
    return sum(mhz) / len(mhz) if mhz else None


def isa_of(machine: str, flags) -> dict:
    """What a CPU offers for int8, from its machine name and /proc/cpuinfo flags."""
    flags = set(flags)
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "avx512vnni"})
    return {"machine": machine.lower(), "vnni": vnni, "dotprod": "asimddp" in flags, "avx2": "avx2" in flags}


def host_isa() -> dict:
    """What this CPU offers for int8: machine, vnni / dot-product flags."""
    return isa_of(platform.machine(), cpu_info()["flags"])


def preset_for(isa: dict) -> str:
    """The int8 preset that suits a CPU (see edgetl.quantization.presets.PRESETS)."""
    if isa["machine"] in ("aarch64", "arm64"):
        return "arm64"
    return "x86-vnni" if isa["vnni"] else "x86-avx2"


def host_preset() -> str:
    return preset_for(host_isa())


def float16_unsupported(providers: Sequence[str], cpu_flags=None) -> str | None:
    """None when one of ``providers`` computes float16 here, else the reason it does not.

    GPU providers do; onnxruntime's CPU provider does on ARM64 with the FP16 arithmetic extension
    (ARMv8.2 ``asimdhp``: Raspberry Pi 5, Jetson Orin's CPU), and not on x86.
    """
    if any(p in FP16_PROVIDERS for p in providers):
        return None
    if cpu_flags is None:
        cpu_flags = cpu_info()["flags"]
    if platform.machine().lower() in ("aarch64", "arm64") and "asimdhp" in cpu_flags:
        return None
    return (f"no provider here computes in float16 ({', '.join(providers)} on {platform.machine()}: onnxruntime "
            f"would cast every op back to float32); bench fp16 on a GPU or an ARMv8.2 CPU target")
