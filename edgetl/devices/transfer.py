"""Files to a device: a content-addressed object store there, filled by a tar streamed over ssh, and run
folders of links into it; and the clean-up of what old runs left behind.

    sent = send(dev, {"bundle/model.onnx": Path("b/model.onnx")}, progress)   # only what the device lacks
    root = layout(dev, f"{dev.cache}/runs/{run_id}", sent["digests"])
    gc(dev, keep=3)    # newest 3 runs kept; objects no kept run uses and interrupted copies removed

Objects live at ``<cache>/objects/<sha256>``: a second bench sends only what changed. A copy is unpacked
into ``.incoming.*`` and moved in whole, so an interrupted one never leaves a truncated object under its
digest; ``gc`` removes such leftovers.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import tarfile
import threading
import time
from pathlib import Path

from .._io import sha256_file
from .._progress import Progress
from .ssh import Remote, RemoteError, last_line, q, ssh_failure


def _stream_tar(dev: Remote, script: str, files: dict[str, Path], timeout: float) -> tuple[int, bytes]:
    """Run ``script`` on the device with a tar of ``files`` (arcname -> path) streamed into its stdin: no
    copy of the data in memory here (a 2 GB dataset stays on disk)."""
    p = subprocess.Popen(dev.command(script), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(p.stderr.read()), daemon=True)
    reader.start()
    try:
        with tarfile.open(fileobj=p.stdin, mode="w|", dereference=True) as tar:  # content, never a local link
            for arc, path in files.items():
                tar.add(str(path), arcname=arc)
        p.stdin.close()
        p.wait(timeout=timeout)
    except BrokenPipeError:  # the device side ended early: its stderr says why
        p.wait(timeout=30)
    except BaseException:
        p.kill()
        raise
    reader.join(timeout=10)
    return p.returncode, b"".join(err)


def send(dev: Remote, files: dict[str, Path], progress: Progress) -> dict:
    """Copy files into the device's object store (by sha256; only those it lacks). ``files``: remote
    layout path -> local file. Returns what was sent, and every file's digest."""
    digests = {rel: sha256_file(p) for rel, p in files.items()}
    objects = q(dev.cache + "/objects")
    have = dev.run(f"mkdir -p {objects} && cd {objects} && ls")
    present = set(have.stdout.decode().split())
    missing = {d: files[rel] for rel, d in digests.items() if d not in present}
    size = sum(p.stat().st_size for p in missing.values())
    t0 = time.perf_counter()
    if missing:
        unpack = (f"cd {objects} && t=$(mktemp -d .incoming.XXXXXX) && tar -xf - -C \"$t\" && "
                  f"mv -f \"$t\"/* . && rmdir \"$t\"")
        with progress.task(f"copy {len(missing)} file(s), {size / 1e6:.1f} MB to {dev.host}", total=1) as adv:
            rc, err = _stream_tar(dev, unpack, missing, timeout=3600)
            adv(1)
        if rc == 255:
            raise ssh_failure(dev.host, err, dev.ssh_timeout, connected=True)
        if rc != 0:
            raise RemoteError(f"copying to {dev.host} failed: {last_line(err) or f'exit code {rc}'}")
    return {"files": len(files), "sent": len(missing), "bytes_sent": size, "copy_s": round(time.perf_counter() - t0, 3),
            "digests": digests}


def layout(dev: Remote, folder: str, digests: dict[str, str], dirs: tuple[str, ...] = ()) -> str:
    """Materialise a folder on the device whose files are links to objects (and ``dirs``, even empty)."""
    lines = ["set -e", f"mkdir -p {shlex.quote(folder)}"] + [f"mkdir -p {shlex.quote(f'{folder}/{d}')}" for d in dirs]
    for rel, d in sorted(digests.items()):
        dst = shlex.quote(f"{folder}/{rel}")
        lines.append(f"mkdir -p \"$(dirname {dst})\"; ln -sf {shlex.quote(f'{dev.cache}/objects/{d}')} {dst}")
    lines.append(f"touch {shlex.quote(folder)}")  # its age is its last use (gc keeps the newest)
    p = dev.run("exec sh -s", stdin="\n".join(lines).encode(), timeout=600)  # a script of any length
    if p.returncode != 0:
        raise RemoteError(f"preparing {folder} on {dev.host} failed: {last_line(p.stderr)}")
    return folder


# python3 on the device (edgetl's base install has it): every decision made from what is there
_GC = r"""
import json, os, shutil, sys, time
cache, keep, locked = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
runs_dir, objects = os.path.join(cache, "runs"), os.path.join(cache, "objects")
out = {"runs_removed": 0, "objects_removed": 0, "bytes_freed": 0, "incoming_removed": 0, "runs_kept": 0}
runs = sorted((os.path.join(runs_dir, r) for r in (os.listdir(runs_dir) if os.path.isdir(runs_dir) else [])),
              key=os.path.getmtime, reverse=True)
def size(p):
    if os.path.isdir(p) and not os.path.islink(p):
        return sum(size(os.path.join(p, f)) for f in os.listdir(p))
    return os.lstat(p).st_size
for r in runs[keep:]:
    if locked and os.path.exists(os.path.join(r, ".lock")):  # (a bench there now: never pull files from under it)
        continue
    out["bytes_freed"] += size(r); shutil.rmtree(r, ignore_errors=True); out["runs_removed"] += 1
used = set()
for r in runs[:keep] + [r for r in runs[keep:] if os.path.isdir(r)]:
    for d, _, fs in os.walk(r):
        for f in fs:
            p = os.path.join(d, f)
            if os.path.islink(p):
                used.add(os.path.basename(os.readlink(p)))
out["runs_kept"] = sum(os.path.isdir(r) for r in runs)
if os.path.isdir(objects):
    for f in os.listdir(objects):
        p = os.path.join(objects, f)
        if f.startswith(".incoming."):
            if time.time() - os.path.getmtime(p) > 60:  # (an older copy was interrupted; a live one is recent)
                out["bytes_freed"] += size(p); shutil.rmtree(p, ignore_errors=True); out["incoming_removed"] += 1
        elif f not in used:
            out["bytes_freed"] += size(p); os.remove(p); out["objects_removed"] += 1
print(json.dumps(out))
"""


def gc(dev: Remote, keep: int = 3) -> dict:
    """Remove the device's old run folders (the ``keep`` newest stay), the objects no remaining run uses,
    and interrupted copies. A run folder with a bench running in it is left alone."""
    if keep < 0:
        raise RemoteError(f"--keep {keep}: keep 0 or more runs")
    dev = dev.resolved()
    p = dev.run(f"exec python3 - {q(dev.cache)} {int(keep)} 1", stdin=_GC.encode(), timeout=600)
    if p.returncode != 0:
        raise RemoteError(f"cleaning {dev.cache} on {dev.host} failed: {last_line(p.stderr) or 'python3 failed'}")
    return {"host": dev.host, "cache": dev.cache, "keep": keep, **json.loads(p.stdout.decode().strip().splitlines()[-1])}
