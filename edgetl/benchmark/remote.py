"""edgetl bench on the real device, over the system ssh (edgetl.devices: the ssh calls, the transfer, the
install, the probe).

    from edgetl.benchmark.remote import Remote, bench_on
    dev = Remote("pi@robot.local")                         # or "ssh://pi@10.0.0.7:2222", an ssh alias
    report = bench_on(dev, "models/run/bundle", BenchConfig(target="rpi5", data="photos/val"))

The bundle's files and the ``--data`` images are copied once into a content-addressed cache on the
device (a second bench sends only what changed), the device's own ``edgetl`` (the base install:
onnxruntime, numpy, Pillow, no torch) runs the bench, and its bench.json comes back on ssh's stdout;
report.md and the plots are then written here from it, marked "measured on <the device>". One bench at a
time runs on a device (a lock there): two would time each other. The remote command watches its stdin:
when this side stops (Ctrl-C, a link gone silent past ``--ssh-timeout``) the ssh channel closes and the
device's bench is killed with it, its process group (the peak-RSS child) included where the device has
``setsid``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import time
from pathlib import Path

from .._progress import SILENT, Progress
from ..config import BenchConfig, field_defaults
from ..devices.install import install, this_wheel
from ..devices.probe import closest_target, probe  # noqa: F401 -- (the names bench --on users import here)
from ..devices.ssh import Remote, RemoteError, last_line, q, ssh_failure
from ..devices.transfer import gc, layout, send
from ..devices.verify import edgetl_version
from ..errors import DataError

log = logging.getLogger(__name__)


def _bench_files(bundle_dir: Path, m, cfg: BenchConfig) -> tuple[dict[str, Path], str | None, tuple[str, ...]]:
    """The bundle's files and the images bench will score (what the device needs), how those images
    were chosen, and the class folders (every one, even a class --max-images left empty)."""
    files = {f"bundle/{name}": bundle_dir / name for name in m.files} | {"bundle/bundle.json": bundle_dir / "bundle.json"}
    how, dirs = None, ()
    if cfg.data is not None:
        from ..data.imagefolder import bench_samples

        samples, classes, how, _ = bench_samples(cfg.data, cfg.max_images)
        for i, s in enumerate(samples):  # one folder per class: the device scores every image of it
            files[f"data/{classes[s.label]}/{i:06d}-{s.path.name}"] = s.path
        dirs = tuple(f"data/{c}" for c in classes)
    if str(cfg.target).endswith(".json"):
        files["target.json"] = Path(cfg.target)
    gone = [str(p) for p in files.values() if not p.is_file()]
    if gone:  # before anything is sent
        raise DataError(f"{gone[0]} is not a file here{f' (and {len(gone) - 1} more)' if len(gone) > 1 else ''}: "
                        f"nothing was sent; check the path")
    return files, how, dirs


def _remote_argv(dev: Remote, root: str, cfg: BenchConfig) -> list[str]:
    argv = ["bench", f"{root}/bundle", "--json", "--out", f"{root}/out",
            "--target", f"{root}/target.json" if str(cfg.target).endswith(".json") else cfg.target,
            "--min-runs", str(cfg.min_runs), "--min-time", str(cfg.min_time)]
    if cfg.data is not None:
        argv += ["--data", f"{root}/data"]
    if cfg.scenario is not None:
        argv += ["--scenario", cfg.scenario.value]
    if cfg.threads is not None:
        argv += ["--threads", str(cfg.threads)]
    if cfg.providers:
        argv += ["--providers", ",".join(cfg.providers)]
    if not cfg.rss:
        argv.append("--no-rss")
    if not cfg.end_to_end:
        argv.append("--no-e2e")
    if cfg.streams is not None or cfg.streams_max:
        argv += ["--streams", "max" if cfg.streams_max else str(cfg.streams)]
    if cfg.duration is not None:
        argv += ["--duration", str(cfg.duration)]
    if cfg.fast_decode:
        argv.append("--fast-decode")
    # options with their defaults are left out, so an older edgetl on the device that lacks them still runs
    defaults = field_defaults(BenchConfig)
    for name, flag in (("rig_seconds", "--rig-seconds"), ("repeats", "--repeats"), ("frame_size", "--frame-size"),
                       ("frames", "--frames"), ("trigger", "--trigger")):
        value = getattr(cfg, name)
        if value != getattr(defaults, name):
            argv += [flag, str(getattr(value, "value", value))]
    return argv


# the bench runs in the background, in a process group of its own (setsid, where the device has it:
# its peak-RSS child goes with it); a watcher reads the ssh channel (fd 3 = the command's stdin) and
# kills the group when the channel closes, so Ctrl-C here or a dropped link leaves nothing running there
# One bench at a time on a device: flock where the device has it (released when the process dies), else
# an atomic mkdir with the holder's pid (a dead holder's lock is taken over). Exit 75: busy.
_WATCHED = ('exec 3<&0; L={lock}; if command -v flock >/dev/null 2>&1; then exec 9>"$L"; flock -n 9 || {{ '
            'echo "error: another edgetl bench is running on this device ($L): wait for it" >&2; exit 75; }}; '
            'else if ! mkdir "$L.d" 2>/dev/null; then o=$(cat "$L.d/pid" 2>/dev/null); if [ -n "$o" ] && kill -0 "$o" '
            '2>/dev/null; then echo "error: another edgetl bench is running on this device ($L): wait for it" >&2; '
            'exit 75; fi; fi; echo $$ >"$L.d/pid"; trap \'rm -rf "$L.d"\' EXIT; fi; '
            'if command -v setsid >/dev/null 2>&1; then setsid {cmd} </dev/null & else {cmd} </dev/null & '
            'fi; p=$!; (cat <&3 >/dev/null; kill -TERM -- -$p 2>/dev/null || kill -TERM $p 2>/dev/null) & w=$!; '
            'wait $p; rc=$?; kill $w 2>/dev/null; exit $rc')


def bench_on(dev: Remote, model: str | Path, cfg: BenchConfig | None = None, *, install_missing: bool = False,
             wheel: Path | None = None, keep: int | None = None, progress: Progress | None = None):
    """Bench a bundle on the device; the report and plots are written here (``cfg.out``). ``install_missing``:
    a device without edgetl gets this very edgetl (``wheel``, else one built from this install); ``keep``:
    afterwards, the device keeps only its newest ``keep`` runs (edgetl.devices.transfer.gc)."""
    from .orchestrate import resolve_model, write_bench

    cfg = cfg or BenchConfig()
    progress = progress or SILENT
    bundle_dir, _, m = resolve_model(Path(model).expanduser())
    if bundle_dir is None:
        raise DataError(f"bench --on needs a bundle folder (edgetl export writes one), not {model}")
    files, how, dirs = _bench_files(bundle_dir, m, cfg)  # every local path checked before anything is sent
    local_wheel = this_wheel(wheel) if install_missing else None
    dev = dev.resolved()
    try:
        version = edgetl_version(dev)
    except RemoteError:
        if local_wheel is None:
            raise
        dev = install(dev, local_wheel, progress)
        version = edgetl_version(dev)
    sent = send(dev, files, progress)
    run_id = hashlib.sha256(json.dumps(sorted(sent["digests"].items())).encode()).hexdigest()[:16]
    root = layout(dev, f"{dev.cache}/runs/{run_id}", sent.pop("digests"), dirs)
    cmd = " ".join([q(dev.edgetl)] + [shlex.quote(a) for a in _remote_argv(dev, root, cfg)])
    t0 = time.perf_counter()
    with progress.task(f"bench on {dev.host} (edgetl {version})", total=None):
        out, err, rc = _run_watched(dev, _WATCHED.format(cmd=cmd, lock=shlex.quote(f"{dev.cache}/bench.lock")))
    doc = _device_report(dev, out, err, rc, version)
    m = doc["machine"]
    doc["measured_on"] = _measured_on(m, dev.host)
    doc["remote"] = {"host": dev.host, "edgetl": version, **sent, "run_s": round(time.perf_counter() - t0, 3),
                     "remote_folder": root}
    if cfg.data is not None:
        acc = doc["accuracy"]
        acc["source"] = f"{cfg.data}: {how}, {acc.get('n')} images scored on the device"
    doc["model"] = str(model)
    out_dir = Path(cfg.out or bundle_dir / "bench" / f"{doc['target']['name']}@{_slug(dev.host)}")
    report = write_bench(out_dir, doc)
    if keep is not None:
        doc["remote"]["gc"] = gc(dev, keep)
    return report


_REPORT_KEYS = ("machine", "variants", "accuracy", "target", "scenario", "verdict", "emulated", "providers_used")


def _device_report(dev: Remote, out: str, err: bytes, rc: int, version: str) -> dict:
    """The device's bench.json from its stdout, or one line saying what went wrong there."""
    from .. import __version__

    if rc == 255:  # (this device answered the calls before: the link was lost during the bench)
        raise ssh_failure(dev.host, err, dev.ssh_timeout, connected=True)
    if rc != 0:
        last = last_line(err) or f"exit code {rc}"
        if "No such option" in last or "newer than this edgetl reads" in last or "upgrade edgetl" in last:
            raise RemoteError(f"bench on {dev.host} failed: {last} -- the device's edgetl {version} is older than this "
                              f"one ({__version__}): upgrade it there (pip install -U edgetl, or --install)")
        raise RemoteError(f"bench on {dev.host} failed: {last}")
    lines = out.splitlines()  # the report is the last thing printed (a login script may print before it)
    start = next((i for i, ln in enumerate(lines) if ln.startswith("{")), len(lines))
    try:
        doc = json.loads("\n".join(lines[start:]))
    except json.JSONDecodeError:
        doc = None
    missing = [k for k in _REPORT_KEYS if not isinstance(doc, dict) or k not in doc]
    if missing or not isinstance(doc["machine"], dict) or "cpu" not in doc["machine"]:
        raise RemoteError(f"bench on {dev.host} returned no bench report this edgetl ({__version__}) reads "
                          f"({'no JSON' if doc is None else 'missing ' + ', '.join(missing or ['machine.cpu'])}; "
                          f"the device runs edgetl {version}): install the same version there (--install)")
    return doc


def _measured_on(m: dict, host: str) -> str:
    isa = m.get("isa", {})
    kind = "dotprod" if isa.get("dotprod") else ("vnni" if isa.get("vnni") else ("avx2" if isa.get("avx2") else "base"))
    emu = " -- emulated" if m.get("emulated") else ""
    return (f"{m.get('hostname', host)} ({m['cpu']}, {m.get('cores', '?')} cores, {m.get('machine', '?')} {kind}, "
            f"onnxruntime {m.get('onnxruntime', '?')}{emu})")


def _run_watched(dev: Remote, script: str) -> tuple[str, bytes, int]:
    """Run ``script`` with its stdin held open; on any exit from here (Ctrl-C included) close it first."""
    p = subprocess.Popen(dev.command(script), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = _communicate_keep_stdin(p)
    except BaseException:
        p.stdin.close()  # the watcher on the device sees EOF and kills the bench
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
        raise
    return out.decode(), err, p.returncode


def _communicate_keep_stdin(p: subprocess.Popen) -> tuple[bytes, bytes]:
    """Read stdout and stderr to the end without closing stdin (communicate() would close it)."""
    import threading

    chunks: dict[str, bytes] = {}

    def drain(name, stream):
        chunks[name] = stream.read()

    threads = [threading.Thread(target=drain, args=(k, s), daemon=True) for k, s in (("out", p.stdout), ("err", p.stderr))]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(timeout=0.2)
    p.wait()
    p.stdin.close()
    return chunks.get("out", b""), chunks.get("err", b"")


def _slug(host: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in host.removeprefix("ssh://"))
