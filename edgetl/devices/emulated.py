"""An ARM device without a board: an emulated aarch64 Debian root (qemu-user through binfmt_misc) with
Python and edgetl's base install, reachable over ssh on 127.0.0.1 like a robot.

    dev = EmulatedDevice()                 # root in ~/.cache/edgetl/arm64-device, port 2222, a Cortex-A76
    dev.build(); dev.start()               # once ~10 minutes (debootstrap, pip under emulation), then cached
    bench_on(dev.remote(), "bundle/", cfg) # what `edgetl bench --on` does with a real device
    dev.stop(); dev.remove()

The work is done by ``arm64_device.sh`` beside this file (root, as CI and a developer's machine are; it
needs debootstrap, qemu-user-static and a Debian mirror, installed with apt when missing). Emulation
gives ARM's arithmetic -- NEON and dot-product int8 kernels, ARMv8.2 float16 kernels -- and never ARM's
timing: the device's /proc/cpuinfo says "qemu-user emulation", so every report marks its latencies as
the emulator's and its PASS/FAIL as not applicable.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import EdgetlError
from .ssh import Remote

SCRIPT = Path(__file__).with_name("arm64_device.sh")
CPUS = ("cortex-a76", "cortex-a72", "cortex-a57", "cortex-a53", "neoverse-n1", "a64fx", "max")
VENV = "/opt/venv"


class EmulatorError(EdgetlError):
    """The emulated device cannot be built, started or reached."""


def default_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgetl" / "arm64-device" / "root"


@dataclasses.dataclass(frozen=True)
class EmulatedDevice:
    """An emulated aarch64 device: where its root lives, the ssh port on 127.0.0.1, the emulated CPU."""

    root: Path = dataclasses.field(default_factory=default_root)
    port: int = 2222
    cpu: str = "cortex-a76"  # ~ a Raspberry Pi 5 (asimdhp float16, asimddp dot product, no i8mm)

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root).expanduser().absolute())
        if self.cpu not in CPUS:
            raise EmulatorError(f"--cpu {self.cpu}: use one of {', '.join(CPUS)}")
        if not 1024 <= self.port <= 65535:
            raise EmulatorError(f"--port {self.port}: use a free port in 1024..65535")

    def _script(self, *args: str, check: bool = True, capture: bool = True, timeout: float = 3600):
        if shutil.which("bash") is None:
            raise EmulatorError("bash is needed to run the emulated device")
        if os.geteuid() != 0:
            raise EmulatorError("the emulated device needs root (binfmt_misc, chroot, mounts): run it as root, e.g. "
                                "in a container or a VM")
        p = subprocess.run(["bash", str(SCRIPT), "--root", str(self.root), "--port", str(self.port), "--cpu",
                            self.cpu, *args], capture_output=capture, text=True, timeout=timeout)
        if check and p.returncode != 0:
            err = [ln for ln in (p.stderr or "").splitlines() if ln.strip()]
            raise EmulatorError(f"emulator {args[0]} failed: {(err or ['exit code %d' % p.returncode])[-1]}")
        return p

    def build(self, wheel: Path | None = None) -> None:
        """The arm64 root with Python and this very edgetl's base install (cached: a second build is quick)."""
        from .install import this_wheel

        self._script("build")
        wheel = this_wheel(wheel)
        dest = self.root / "tmp" / wheel.name
        shutil.copyfile(wheel, dest)
        pip = f"{VENV}/bin/pip"
        self._script("exec", pip, "install", "-q", "--no-cache-dir", f"/tmp/{wheel.name}")
        self._script("exec", pip, "install", "-q", "--no-cache-dir", "--force-reinstall", "--no-deps",
                     f"/tmp/{wheel.name}")
        dest.unlink()

    def start(self) -> Remote:
        self._script("start")
        return self.remote()

    def stop(self) -> None:
        self._script("stop")

    def remove(self) -> None:
        self._script("remove")

    def status(self) -> dict:
        p = self._script("status", check=False)
        lines = dict(ln.split(": ", 1) for ln in p.stdout.splitlines() if ": " in ln)
        return {"root": str(self.root), "built": lines.get("built", "no").startswith("yes"),
                "running": lines.get("running", "no").startswith("yes"), "port": self.port, "cpu": self.cpu,
                "ssh": lines.get("ssh")}

    def exec(self, *argv: str, timeout: float = 3600) -> subprocess.CompletedProcess:
        """Run a command inside the root directly (no ssh)."""
        return self._script("exec", *argv, check=False, timeout=timeout)

    def remote(self) -> Remote:
        """The device as ``bench --on`` reaches it: its ssh key and known_hosts, its edgetl."""
        ssh = Path(f"{self.root}.ssh")
        return Remote(f"ssh://root@127.0.0.1:{self.port}",
                      ("-i", str(ssh / "id_ed25519"), "-o", "IdentitiesOnly=yes", "-o",
                       f"UserKnownHostsFile={ssh / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes"),
                      edgetl=f"{VENV}/bin/edgetl", connect_timeout=60, ssh_timeout=120)

    def bench_options(self) -> list[str]:
        """The ``edgetl bench`` options that reach this device."""
        r = self.remote()
        return ["--on", r.host, *(f"--ssh-option={o}" for o in r.ssh_options), "--remote-edgetl", r.edgetl,
                "--ssh-timeout", f"{r.ssh_timeout:g}"]
