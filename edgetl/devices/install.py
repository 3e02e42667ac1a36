"""Put exactly this edgetl on a device: a wheel of the running install, copied over with the bundle.

    wheel = this_wheel()                       # built from this source tree, or packed from this install
    dev = install(dev, wheel, progress)        # a venv in the device's cache, with edgetl's base install

Never ``pip install edgetl`` by name from the device's package index: whoever owns that name there would
decide what runs on the robot. edgetl's own dependencies (onnxruntime, numpy, Pillow, typer, rich) still
come from the device's index, as pip resolves them for its CPU.
"""
from __future__ import annotations

import base64
import csv
import dataclasses
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .._progress import SILENT, Progress
from .ssh import Remote, RemoteError, last_line, q
from .transfer import send


def _record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _wheel_from_source(root: Path, out: Path) -> Path | None:
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                        str(out), str(root)], capture_output=True)
    if p.returncode != 0:  # (no setuptools in this environment to build without isolation: let pip fetch it)
        p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(root)],
                           capture_output=True)
    wheels = sorted(out.glob("edgetl-*.whl"))
    return wheels[0] if p.returncode == 0 and wheels else None


def _wheel_from_install(out: Path) -> Path:
    """Pack the installed edgetl (its files as installed, and its metadata) into a wheel, RECORD rewritten."""
    from importlib import metadata

    dist = metadata.distribution("edgetl")
    files = [f for f in (dist.files or []) if not str(f).endswith((".pyc", "RECORD", "INSTALLER", "direct_url.json"))
             and "__pycache__" not in str(f)]
    info = next((f.parts[0] for f in files if f.parts[0].endswith(".dist-info")), None)
    if info is None or not any(f.parts[0] == "edgetl" for f in files):
        raise RemoteError("this edgetl install lists no files to pack (an editable or broken install?): pass "
                          "--install-wheel FILE with the wheel you installed here")
    wheel = out / f"edgetl-{dist.version}-py3-none-any.whl"
    rows = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            data = Path(f.locate()).read_bytes()
            z.writestr(str(f), data)
            rows.append((str(f), _record_hash(data), str(len(data))))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows + [(f"{info}/RECORD", "", "")])
        z.writestr(f"{info}/RECORD", buf.getvalue())
    return wheel


def this_wheel(given: Path | None = None) -> Path:
    """The wheel of the edgetl running here: ``given`` (checked), else built from this source tree, else
    packed from this install."""
    if given is not None:
        given = Path(given).expanduser()
        if not (given.is_file() and given.name.startswith("edgetl-") and given.suffix == ".whl"):
            raise RemoteError(f"--install-wheel {given}: not an edgetl wheel file (edgetl-<version>-*.whl)")
        return given
    out = Path(tempfile.mkdtemp(prefix="edgetl-wheel-"))
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "edgetl").is_dir():
        wheel = _wheel_from_source(root, out)
        if wheel is None:
            raise RemoteError(f"could not build a wheel of this source tree ({root}): pip wheel failed; pass "
                              f"--install-wheel FILE")
        return wheel
    return _wheel_from_install(out)


def install(dev: Remote, wheel: Path, progress: Progress = SILENT) -> Remote:
    """A venv in the device's cache with ``wheel`` installed (its dependencies from the device's index)."""
    venv = f"{dev.cache}/venv"
    with progress.task(f"install edgetl on {dev.host}", total=None):
        digest = send(dev, {wheel.name: wheel}, progress)["digests"][wheel.name]
        target = f"{dev.cache}/wheels/{wheel.name}"  # pip wants the wheel's own file name
        script = (f"mkdir -p {q(dev.cache + '/wheels')} && cp {q(dev.cache + '/objects/' + digest)} {q(target)} && "
                  f"python3 -m venv {q(venv)} && {q(venv + '/bin/pip')} install -q {q(target)} && "
                  # (the same version already there is not "already satisfied": this wheel's files go in)
                  f"{q(venv + '/bin/pip')} install -q --force-reinstall --no-deps {q(target)}")
        p = dev.run(script, timeout=1800)
    if p.returncode != 0:
        raise RemoteError(f"installing edgetl on {dev.host} failed: {last_line(p.stderr)}")
    return dataclasses.replace(dev, edgetl=f"{venv}/bin/edgetl")

