"""An ARM device without a board: CPU facts from the kernel's hardware capabilities, and (slow) an emulated
aarch64 device benched and verified over ssh like a real one."""
import json
import os
import shutil
import struct

import pytest

from conftest import run_cli, tiny_run
from edgetl.runtime.cpu import describe_cpu, hwcap_flags, read_auxv

X86_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx avx2 avx512_vnni\n"
A76_CPUINFO = ("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd fphp asimdhp asimddp\nCPU implementer\t: 0x41\n"
               "CPU part\t: 0xd0b\n\n")


def _auxv(pairs) -> bytes:
    return b"".join(struct.pack("LL", k, v) for k, v in pairs) + struct.pack("LL", 0, 0)


def test_arm_flags_come_from_hwcap_and_an_x86_cpuinfo_under_an_arm_process_is_emulation():
    aux = read_auxv(_auxv([(6, 4096), (16, 0x119FFB), (26, 0)]))  # AT_PAGESZ, AT_HWCAP (a Cortex-A76's), AT_HWCAP2
    assert aux[16] == 0x119FFB
    d = describe_cpu("aarch64", X86_CPUINFO, aux)
    assert {"asimdhp", "asimddp", "fphp"} <= d["flags"] and "avx2" not in d["flags"]
    assert d["source"].startswith("auxv") and "emulat" in d["emulated"] and "AMD EPYC" in d["model"]
    # a Cortex-A72 (a Pi 4) has neither float16 arithmetic nor dot product
    assert not {"asimdhp", "asimddp"} & hwcap_flags(0x8FB, 0)
    assert "i8mm" in hwcap_flags(0, 1 << 13)
    # a real ARM board: cpuinfo names the core by its part number; nothing is emulated
    real = describe_cpu("aarch64", A76_CPUINFO, aux)
    assert real["model"] == "Cortex-A76" and real["emulated"] is None
    # an emulator that says so (edgetl emulator's cpuinfo carries a Hardware line)
    emu = describe_cpu("aarch64", A76_CPUINFO + "Hardware\t: qemu-user emulation, QEMU_CPU=cortex-a76\n", aux)
    assert emu["emulated"] and emu["model"].startswith("Cortex-A76")
    # x86 on x86: flags from cpuinfo, not emulated
    x86 = describe_cpu("x86_64", X86_CPUINFO, {})
    assert "avx512_vnni" in x86["flags"] and x86["emulated"] is None and x86["source"] == "/proc/cpuinfo"


def _can_emulate() -> str | None:
    if os.geteuid() != 0:
        return "the emulated device needs root (binfmt_misc, chroot)"
    if shutil.which("apt-get") is None and shutil.which("debootstrap") is None:
        return "no apt-get or debootstrap to build the emulated device"
    return None


@pytest.fixture(scope="module")
def arm64(tmp_path_factory):
    """The emulated aarch64 device (edgetl emulator), built once per machine (~10 minutes, then cached) and
    started for this module; its ssh options for bench/verify --on."""
    from edgetl.devices.emulated import EmulatedDevice

    why = _can_emulate()
    if why:
        pytest.skip(why)
    dev = EmulatedDevice()
    was_running = dev.status()["running"]
    p = run_cli("emulator", "start", timeout=3600)  # (the README's command)
    assert p.returncode == 0, p.stderr[-3000:]
    yield dev
    if not was_running:
        run_cli("emulator", "stop", timeout=300)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """A tiny random-weight model exported twice: fp32 + int8 tuned here (x86) + fp16, and int8 --preset arm64."""
    from edgetl.config import ExportConfig
    from edgetl.exporter import export

    root = tmp_path_factory.mktemp("arm")
    r, data = tiny_run(root, epochs=2)
    host = export(r.out, ExportConfig(int8=True, fp16=True, max_drop=100, min_agreement=0.0, calib_size=8,
                                      parity_images=8), force=True)
    arm = export(r.out, ExportConfig(int8=True, preset="arm64", max_drop=100, min_agreement=0.0, calib_size=8,
                                     parity_images=8, out=root / "bundle-arm64"), force=True)
    return host.path, arm.path, data


@pytest.mark.slow
def test_verify_on_the_emulated_arm_device_passes_fp32_int8_and_a_real_float16_kernel(arm64, bundles):
    host, arm, _ = bundles
    for bundle, variants in ((host, {"fp32", "int8", "fp16"}), (arm, {"fp32", "int8"})):
        p = run_cli("verify", bundle, *arm64.bench_options(), "--json", timeout=1800)
        assert p.returncode == 0, p.stderr[-2000:]
        r = json.loads(p.stdout)
        assert set(r["variants"]) == variants and r["ok"], r["variants"]
    assert json.loads((arm / "export.json").read_text())["quantization"]["preset_reason"].startswith("ARM's int8")


@pytest.mark.slow
def test_bench_on_the_emulated_arm_device_marks_every_timing_as_emulation(arm64, bundles, tmp_path):
    host, _, data = bundles
    p = run_cli("bench", host, "--target", "rpi5", "--data", data / "val", "--min-runs", "3", "--min-time", "0",
                "--no-rss", "--no-e2e", *arm64.bench_options(), "--out", tmp_path / "b", timeout=3600)
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads((tmp_path / "b" / "bench.json").read_text())
    m = doc["machine"]
    assert m["machine"] == "aarch64" and m["emulated"] and "AMD" not in m["cpu"] and "Intel" not in m["cpu"]
    assert m["isa"]["dotprod"] and m["isa"]["fp16"] and m["cpu_flags_source"].startswith("auxv")
    assert "fp16" in doc["variants"] and not doc["skipped"]  # a float16 kernel ran: ARMv8.2 asimdhp
    assert all(doc["variants"][v]["status"] == "N/A" for v in ("fp32", "int8", "fp16"))
    assert any("emulat" in e for e in doc["emulated"]) and "emulated" in doc["measured_on"]
    assert doc["accuracy"]["n"] == 8 and doc["variants"]["int8"]["agreement"] is not None
    assert "emulated" in (tmp_path / "b" / "report.md").read_text().lower()
