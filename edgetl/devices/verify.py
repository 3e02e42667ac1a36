"""``edgetl verify`` on a device over ssh: the bundle's files sent (as bench --on sends them), the device's
own edgetl checks them and runs parity.npz through each variant on its kernels, the report comes back.

    report = verify_on(Remote("pi@robot.local"), "models/run/bundle")   # report["ok"], report["variants"]
"""
from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path

from .._progress import SILENT, Progress
from ..errors import ArtifactError
from ..runtime.bundle import read_manifest
from .ssh import Remote, RemoteError, last_line, q
from .transfer import layout, send


def edgetl_version(dev: Remote) -> str:
    """The device's edgetl version, or one line saying how to get one there."""
    p = dev.run(f"exec {q(dev.edgetl)} --version")
    if p.returncode != 0 or not p.stdout.decode().startswith("edgetl"):
        raise RemoteError(f"edgetl is not installed on {dev.host} (tried {dev.edgetl!r}): pip install edgetl there "
                          f"(the base install, no torch), point --remote-edgetl at it, or pass --install")
    return p.stdout.decode().split()[-1]


def verify_on(dev: Remote, bundle: str | Path, progress: Progress = SILENT) -> dict:
    """Verify a bundle with the device's edgetl; the report says where it ran."""
    bundle = Path(bundle).expanduser()
    m = read_manifest(bundle)  # (here first: a bad bundle is one line before anything is sent)
    files = {f"bundle/{n}": bundle / n for n in m.files} | {"bundle/bundle.json": bundle / "bundle.json"}
    dev = dev.resolved()
    version = edgetl_version(dev)
    sent = send(dev, files, progress)
    run_id = hashlib.sha256(json.dumps(sorted(sent["digests"].items())).encode()).hexdigest()[:16]
    root = layout(dev, f"{dev.cache}/runs/{run_id}", sent.pop("digests"))
    with progress.task(f"verify on {dev.host} (edgetl {version})", total=None):
        p = dev.run(f"exec {q(dev.edgetl)} verify {shlex.quote(root + '/bundle')} --json", timeout=7200)
    text = p.stdout.decode()
    start = text.find("{")
    try:
        report = json.loads(text[start:]) if start >= 0 else None
    except json.JSONDecodeError:
        report = None
    if not isinstance(report, dict) or "variants" not in report:
        raise RemoteError(f"verify on {dev.host} failed: {last_line(p.stderr) or 'no report'} (edgetl {version} there)")
    report.update(device=dev.host, device_edgetl=version, bundle=str(bundle))
    if not report.get("ok"):
        bad = [v for v, x in report["variants"].items() if not x["ok"]]
        report["error"] = str(ArtifactError(f"parity mismatch on {dev.host} ({', '.join(bad)})"))
    return report
