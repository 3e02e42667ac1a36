"""CPU facts, read in one place: model, cores, ISA flags, and what they mean for int8 and float16.

    cpu_info()          # {"model": "AMD EPYC", "cores": 2, "flags": frozenset({...}), "source": ..., "emulated": ...}
    host_isa()          # {"machine": "x86_64", "vnni": [...], "dotprod": False, "avx2": True}
    host_preset()       # the int8 preset that suits this CPU: x86-vnni | x86-avx2 | arm64
    float16_unsupported(providers)   # None, or why no provider here computes float16

The ISA flags of an ARM CPU come from the kernel's hardware capabilities (``/proc/self/auxv``: AT_HWCAP,
AT_HWCAP2), what this very process may execute, as onnxruntime itself reads them; ``/proc/cpuinfo`` is
the fallback. Under qemu-user (and in some containers) /proc/cpuinfo describes the host, not the CPU
the code runs on: an aarch64 process would read "AMD EPYC" and x86 flags there. ``emulated`` then says
so, and every timing on such a CPU is the emulator's, not the target's.

Standard library only: the device side, ``targets --probe`` (sent to a device as source) and the
export's preset choice share it.
"""
from __future__ import annotations

import functools
import os
import platform
import struct
from pathlib import Path
from typing import Sequence

# providers whose kernels compute in float16; onnxruntime's x86 CPU provider has none (it runs a float16
# graph by casting every op back to float32, which is neither fp16's speed nor its numerics on a device)
FP16_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "ROCMExecutionProvider",
                  "MIGraphXExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")


# Arm Ltd (implementer 0x41) core part numbers: an ARM /proc/cpuinfo names no model, only these
ARM_PARTS = {0xd03: "Cortex-A53", 0xd04: "Cortex-A35", 0xd05: "Cortex-A55", 0xd07: "Cortex-A57", 0xd08: "Cortex-A72",
             0xd09: "Cortex-A73", 0xd0a: "Cortex-A75", 0xd0b: "Cortex-A76", 0xd0c: "Neoverse-N1", 0xd0d: "Cortex-A77",
             0xd40: "Neoverse-V1", 0xd41: "Cortex-A78", 0xd42: "Cortex-A78AE", 0xd44: "Cortex-X1", 0xd46: "Cortex-A510",
             0xd47: "Cortex-A710", 0xd49: "Neoverse-N2", 0xd4b: "Cortex-A78C"}


def read_cpuinfo(text: str) -> tuple[str, set[str], list[float]]:
    """(model name, ISA flags, per-core MHz) from the text of /proc/cpuinfo (x86 and ARM spellings)."""
    model, flags, mhz, part = "", set(), [], None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "CPU part" and part is None:
            try:
                part = int(value.strip(), 16)
            except ValueError:
                pass
        if key in ("model name", "Model", "Hardware") and not model:
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key == "cpu MHz":
            try:
                mhz.append(float(value))
            except ValueError:
                pass
    if part in ARM_PARTS and (not model or "qemu" in model.lower()):
        model = ARM_PARTS[part] + (f", {model}" if model else "")
    return model, flags, mhz


def _cpuinfo_text(root: Path = Path("/")) -> str:
    try:
        return (root / "proc/cpuinfo").read_text()
    except OSError:
        return ""


# arch/arm64/include/uapi/asm/hwcap.h: bit -> the name /proc/cpuinfo's "Features" line uses
ARM64_HWCAP = ("fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp", "asimdhp",
               "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512",
               "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg")
ARM64_HWCAP2 = ("dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2", "frint",
                "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti", "mte", "ecv",
                "afp", "rpres", "mte3", "sme", "sme_i16i64", "sme_f64f64", "sme_i8i32", "sme_f16f32",
                "sme_b16f32", "sme_f32f32", "sme_fa64", "wfxt", "ebf16", "sve_ebf16", "cssc", "rprfm", "sve2p1")
_AT_HWCAP, _AT_HWCAP2 = 16, 26
_X86_MARKS = ("sse2", "avx", "avx2", "lm", "fpu")


def read_auxv(data: bytes) -> dict[int, int]:
    """/proc/self/auxv's (type, value) pairs of native unsigned longs."""
    size = struct.calcsize("L")
    n = len(data) // (2 * size)
    vals = struct.unpack(f"{2 * n}L", data[: 2 * n * size])
    return {vals[i]: vals[i + 1] for i in range(0, len(vals), 2)}


def hwcap_flags(hwcap: int, hwcap2: int) -> set[str]:
    """ARM64 HWCAP/HWCAP2 bits as feature names."""
    return ({name for bit, name in enumerate(ARM64_HWCAP) if hwcap >> bit & 1}
            | {name for bit, name in enumerate(ARM64_HWCAP2) if hwcap2 >> bit & 1})


def _auxv(root: Path = Path("/")) -> dict[int, int]:
    try:
        return read_auxv((root / "proc/self/auxv").read_bytes())
    except (OSError, struct.error):
        return {}


def describe_cpu(machine: str, cpuinfo: str, auxv: dict[int, int]) -> dict:
    """Model, flags, where the flags came from, and whether /proc/cpuinfo describes another CPU (emulation)."""
    model, flags, _ = read_cpuinfo(cpuinfo)
    arm = machine.lower() in ("aarch64", "arm64")
    host_is_x86 = bool(flags & set(_X86_MARKS[:3])) or any(k in model for k in ("Intel", "AMD", "EPYC", "Xeon"))
    emulated = None
    if arm and host_is_x86:
        emulated = (f"this {machine} process reads an x86 host's /proc/cpuinfo ({model or 'x86 flags'}): it runs "
                    f"under emulation (qemu-user?); timings are the emulator's, not an ARM CPU's")
        model = f"{machine} (emulated on {model or 'an x86 host'})"
    elif "qemu" in cpuinfo.lower():  # an emulator that says so (edgetl emulator's cpuinfo does)
        emulated = (f"this {machine} CPU is emulated ({model}); timings are the emulator's, not the CPU's")
    source = "/proc/cpuinfo"
    if arm and _AT_HWCAP in auxv:
        flags, source = hwcap_flags(auxv[_AT_HWCAP], auxv.get(_AT_HWCAP2, 0)), "auxv (AT_HWCAP, AT_HWCAP2)"
    elif emulated:
        flags = set()  # the host's x86 flags say nothing of what this process may execute
    return {"model": model or machine, "flags": frozenset(flags), "source": source, "emulated": emulated}


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """This process's CPU: model name, logical cores, ISA flags (HWCAP on ARM, else /proc/cpuinfo), their
    source, and ``emulated`` (None, or why the CPU is not what the timings would describe)."""
    d = describe_cpu(platform.machine(), _cpuinfo_text(), _auxv())
    if not d["model"] or d["model"] == platform.machine():
        d["model"] = platform.processor() or platform.machine()
    return {**d, "cores": os.cpu_count() or 1}


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
