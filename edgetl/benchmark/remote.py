"""edgetl bench on the real device, over the system ssh (your keys, ~/.ssh/config, jump hosts).

    from edgetl.benchmark.remote import Remote, bench_on, probe
    dev = Remote("pi@robot.local")                         # or "ssh://pi@10.0.0.7:2222", an ssh alias
    report = bench_on(dev, "models/run/bundle", BenchConfig(target="rpi5", data="photos/val"))
    probe(dev)                                             # cores, ISA, memory, onnxruntime providers

The bundle's files and the ``--data`` images are copied once into a content-addressed cache on the
device (``~/.cache/edgetl/remote/objects/<sha256>``; a second bench sends only what changed), the
device's own ``edgetl`` (the base install: onnxruntime, numpy, Pillow, no torch) runs the bench,
and its bench.json comes back on ssh's stdout; report.md and the plots are then written here from
it, marked "measured on <the device>". The remote command watches its stdin: when this side stops
(Ctrl-C, a dropped connection) the ssh channel closes and the device's bench is killed with it,
its process group (the peak-RSS child) included where the device has ``setsid``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import shlex
import subprocess
import tarfile
import time
from pathlib import Path
from urllib.parse import urlparse

from .._io import sha256_file
from .._progress import SILENT, Progress
from ..config import BenchConfig, field_defaults
from ..errors import DataError, EdgetlError

log = logging.getLogger(__name__)


def q(path: str) -> str:
    """A device path quoted for sh; a leading ~/ stays the device user's home."""
    if path == "~" or path.startswith("~/"):
        return '"$HOME"' + (shlex.quote(path[1:]) if len(path) > 1 else "")
    return shlex.quote(path)


class RemoteError(EdgetlError):
    """The device cannot be reached, refuses the key, lacks edgetl, or its bench failed."""


@dataclasses.dataclass(frozen=True)
class Remote:
    """A device reachable with ssh. ``host``: user@host, ssh://user@host:port, or an ssh_config alias."""

    host: str
    ssh_options: tuple[str, ...] = ()  # more ssh arguments, e.g. ("-i", "key") or ("-o", "ProxyJump=gw")
    edgetl: str = "edgetl"  # the device's edgetl command (--remote-edgetl when not on the login PATH)
    cache: str = "~/.cache/edgetl/remote"  # on the device
    connect_timeout: int = 10

    def resolved(self) -> "Remote":
        """The same device with its cache folder as an absolute path there (made if missing)."""
        p = self.run(f"mkdir -p {q(self.cache)} && cd {q(self.cache)} && pwd")
        if p.returncode != 0:
            raise RemoteError(f"cannot create {self.cache} on {self.host}: {_last_line(p.stderr)}")
        return dataclasses.replace(self, cache=p.stdout.decode().strip().splitlines()[-1])

    def ssh_argv(self) -> list[str]:
        dest, port = self.host, []
        if self.host.startswith("ssh://"):
            u = urlparse(self.host)
            dest = f"{u.username}@{u.hostname}" if u.username else u.hostname
            port = ["-p", str(u.port)] if u.port else []
        # BatchMode: a missing or refused key fails at once instead of waiting at a password prompt
        if dest.startswith("-"):
            raise RemoteError(f"{self.host!r} is not a host (it starts with '-'): name the device, e.g. pi@robot.local")
        return ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}", *port,
                *self.ssh_options, "--", dest]

    def run(self, script: str, *, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a POSIX sh script on the device; ssh's own failures become one RemoteError line."""
        try:
            p = subprocess.run([*self.ssh_argv(), "sh", "-c", shlex.quote(script)], input=stdin,
                               capture_output=True, timeout=timeout)
        except FileNotFoundError:
            raise RemoteError("the ssh command is not installed here: install OpenSSH's client "
                              "(apt-get install openssh-client)") from None
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.host} did not answer within {timeout:.0f} s") from None
        if p.returncode == 255:  # ssh's own exit code: could not connect or authenticate
            raise RemoteError(f"cannot reach {self.host} over ssh: {_last_line(p.stderr) or 'ssh exited 255'} "
                              f"(check the host, port and key: ssh {self.host} must work without a password)")
        return p


def _last_line(b: bytes) -> str:
    lines = [ln.strip() for ln in b.decode(errors="replace").splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("error:")]
    return (errs or lines or [""])[-1].removeprefix("error:").strip()


_PROBE = r"""
import json, os, platform
flags, model = set(), ""
try:
    for line in open("/proc/cpuinfo"):
        k, _, v = line.partition(":")
        k = k.strip()
        if k in ("flags", "Features") and not flags: flags = set(v.split())
        if k in ("model name", "Model", "Hardware") and not model: model = v.strip()
except OSError: pass
mem = 0
try:
    mem = int(next(l for l in open("/proc/meminfo") if l.startswith("MemTotal")).split()[1]) // 1024
except (OSError, StopIteration, ValueError): pass
try:
    import onnxruntime as ort; ortv, prov = ort.__version__, ort.get_available_providers()
except ImportError:
    ortv, prov = None, []
print(json.dumps({"hostname": platform.node(), "machine": platform.machine(), "cpu": model or platform.machine(),
                  "cores": os.cpu_count(), "flags": sorted(flags), "memory_mb": mem, "onnxruntime": ortv,
                  "providers": prov}))
"""


def probe(dev: Remote) -> dict:
    """The device's cores, ISA flags, memory and onnxruntime providers (needs python3 there)."""
    # the python beside the device's edgetl sees its onnxruntime; else the system python3
    find = (f'e=$(command -v {shlex.quote(dev.edgetl)} 2>/dev/null); py="${{e%/*}}/python3"; '
            f'[ -n "$e" ] && [ -x "$py" ] || py=python3; exec "$py" -')
    p = dev.run(find, stdin=_PROBE.encode())
    if p.returncode != 0:
        raise RemoteError(f"could not read {dev.host}'s hardware ({_last_line(p.stderr) or 'python3 failed'}): "
                          f"the device needs python3")
    info = json.loads(p.stdout.decode().strip().splitlines()[-1])
    from ..runtime.cpu import isa_of, preset_for

    info["isa"] = isa_of(info["machine"], info["flags"])
    info["int8_preset"] = preset_for(info["isa"])
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


def _check_edgetl(dev: Remote) -> str:
    p = dev.run(f"exec {shlex.quote(dev.edgetl)} --version")
    if p.returncode != 0 or not p.stdout.decode().startswith("edgetl"):
        raise RemoteError(f"edgetl is not installed on {dev.host} (tried {dev.edgetl!r}): pip install edgetl there "
                          f"(the base install, no torch), point --remote-edgetl at it, or pass --install")
    return p.stdout.decode().split()[-1]


def install(dev: Remote, progress: Progress = SILENT) -> Remote:
    """A venv with edgetl's base install in the device's cache (this source tree's wheel when there is one)."""
    wheel = _local_wheel()
    venv = f"{dev.cache}/venv"
    with progress.task(f"install edgetl on {dev.host}", total=None):
        if wheel is not None:
            _send(dev, {wheel.name: wheel}, progress)
            target = f"{dev.cache}/wheels/{wheel.name}"  # pip wants the wheel's own file name
            script = (f"mkdir -p {q(dev.cache + '/wheels')} && "
                      f"cp {q(dev.cache + '/objects/' + sha256_file(wheel))} {q(target)} && ")
            pkg = q(target)
        else:
            from .. import __version__

            script, pkg = "", shlex.quote(f"edgetl=={__version__}")
        p = dev.run(script + f"python3 -m venv {q(venv)} && {q(venv + '/bin/pip')} install -q {pkg}", timeout=1800)
    if p.returncode != 0:
        raise RemoteError(f"installing edgetl on {dev.host} failed: {_last_line(p.stderr)}")
    return dataclasses.replace(dev, edgetl=f"{venv}/bin/edgetl")


def _local_wheel() -> Path | None:
    """Build this checkout's wheel (no dependencies) if edgetl runs from a source tree."""
    import sys
    import tempfile

    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        return None
    out = Path(tempfile.mkdtemp(prefix="edgetl-wheel-"))
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(root)],
                       capture_output=True)
    wheels = sorted(out.glob("edgetl-*.whl"))
    return wheels[0] if p.returncode == 0 and wheels else None


def _send(dev: Remote, files: dict[str, Path], progress: Progress) -> dict:
    """Copy files into the device's object store (by sha256; only those it lacks). ``files``: remote
    layout path -> local file. Returns what was sent."""
    digests = {rel: sha256_file(p) for rel, p in files.items()}
    objects = q(dev.cache + "/objects")
    have = dev.run(f"mkdir -p {objects} && cd {objects} && ls")
    present = set(have.stdout.decode().split())
    missing = {d: files[rel] for rel, d in digests.items() if d not in present}
    size = sum(p.stat().st_size for p in missing.values())
    t0 = time.perf_counter()
    if missing:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", dereference=True) as tar:  # content, never a local symlink
            for d, p in missing.items():
                tar.add(str(p), arcname=d)
        # unpacked aside and moved in whole: an interrupted copy never leaves a truncated object under
        # its digest, which the device would then report as present forever
        unpack = (f"cd {objects} && t=$(mktemp -d .incoming.XXXXXX) && tar -xf - -C \"$t\" && "
                  f"mv -f \"$t\"/* . && rmdir \"$t\"")
        with progress.task(f"copy {len(missing)} file(s), {size / 1e6:.1f} MB to {dev.host}", total=1) as adv:
            p = dev.run(unpack, stdin=buf.getvalue(), timeout=3600)
            adv(1)
        if p.returncode != 0:
            raise RemoteError(f"copying to {dev.host} failed: {_last_line(p.stderr)}")
    return {"files": len(files), "sent": len(missing), "bytes_sent": size, "copy_s": round(time.perf_counter() - t0, 3),
            "digests": digests}


def _layout(dev: Remote, folder: str, digests: dict[str, str], dirs: tuple[str, ...] = ()) -> str:
    """Materialise a folder on the device whose files are links to objects (and ``dirs``, even empty)."""
    lines = ["set -e", f"mkdir -p {shlex.quote(folder)}"] + [f"mkdir -p {shlex.quote(f'{folder}/{d}')}" for d in dirs]
    for rel, d in sorted(digests.items()):
        dst = shlex.quote(f"{folder}/{rel}")
        lines.append(f"mkdir -p \"$(dirname {dst})\"; ln -sf {shlex.quote(f'{dev.cache}/objects/{d}')} {dst}")
    p = dev.run("exec sh -s", stdin="\n".join(lines).encode(), timeout=600)  # a script of any length
    if p.returncode != 0:
        raise RemoteError(f"preparing {folder} on {dev.host} failed: {_last_line(p.stderr)}")
    return folder


def _bench_files(bundle_dir: Path, cfg: BenchConfig) -> tuple[dict[str, Path], str | None, tuple[str, ...]]:
    """The bundle's files and the images bench will score (what the device needs), how those images
    were chosen, and the class folders (every one, even a class --max-images left empty)."""
    from ..runtime.bundle import read_manifest

    m = read_manifest(bundle_dir)
    files = {f"bundle/{name}": bundle_dir / name for name in m.files} | {"bundle/bundle.json": bundle_dir / "bundle.json"}
    how, dirs = None, ()
    if cfg.data is not None:
        from ..data import bench_samples

        samples, classes, how, _ = bench_samples(cfg.data, cfg.max_images)
        for i, s in enumerate(samples):  # one folder per class: the device scores every image of it
            files[f"data/{classes[s.label]}/{i:06d}-{s.path.name}"] = s.path
        dirs = tuple(f"data/{c}" for c in classes)
    if str(cfg.target).endswith(".json"):
        files["target.json"] = Path(cfg.target)
    return files, how, dirs


def _remote_argv(dev: Remote, root: str, cfg: BenchConfig) -> list[str]:
    argv = [dev.edgetl, "bench", f"{root}/bundle", "--json", "--out", f"{root}/out",
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
    if cfg.streams is not None:
        argv += ["--streams", str(cfg.streams)]
    if cfg.duration is not None:
        argv += ["--duration", str(cfg.duration)]
    if cfg.rig_seconds != field_defaults(BenchConfig).rig_seconds:  # (an older edgetl on the device lacks it)
        argv += ["--rig-seconds", str(cfg.rig_seconds)]
    return argv


# the bench runs in the background, in a process group of its own (setsid, where the device has it:
# its peak-RSS child goes with it); a watcher reads the ssh channel (fd 3 = the command's stdin) and
# kills the group when the channel closes, so Ctrl-C here or a dropped link leaves nothing running there
_WATCHED = ('exec 3<&0; if command -v setsid >/dev/null 2>&1; then setsid {cmd} </dev/null & else {cmd} </dev/null & '
            'fi; p=$!; (cat <&3 >/dev/null; kill -TERM -- -$p 2>/dev/null || kill -TERM $p 2>/dev/null) & w=$!; '
            'wait $p; rc=$?; kill $w 2>/dev/null; exit $rc')


def bench_on(dev: Remote, model: str | Path, cfg: BenchConfig | None = None, *, install_missing: bool = False,
             progress: Progress | None = None):
    """Bench a bundle on the device; the report and plots are written here (``cfg.out``)."""
    from .orchestrate import resolve_model, write_bench

    cfg = cfg or BenchConfig()
    progress = progress or SILENT
    bundle_dir, _ = resolve_model(Path(model))
    if bundle_dir is None:
        raise DataError(f"bench --on needs a bundle folder (edgetl export writes one), not {model}")
    dev = dev.resolved()
    try:
        version = _check_edgetl(dev)
    except RemoteError:
        if not install_missing:
            raise
        dev = install(dev, progress)
        version = _check_edgetl(dev)
    files, how, dirs = _bench_files(bundle_dir, cfg)
    sent = _send(dev, files, progress)
    run_id = hashlib.sha256(json.dumps(sorted(sent["digests"].items())).encode()).hexdigest()[:16]
    root = _layout(dev, f"{dev.cache}/runs/{run_id}", sent.pop("digests"), dirs)
    cmd = " ".join(shlex.quote(a) for a in _remote_argv(dev, root, cfg))
    t0 = time.perf_counter()
    with progress.task(f"bench on {dev.host} (edgetl {version})", total=None):
        out, err, rc = _run_watched(dev, _WATCHED.format(cmd=cmd))
    if rc != 0:
        last = _last_line(err) or f"exit code {rc}"
        if "No such option" in last or "newer than this edgetl reads" in last:
            from .. import __version__

            raise RemoteError(f"bench on {dev.host} failed: {last} -- the device's edgetl {version} is older than this "
                              f"one ({__version__}): upgrade it there (pip install -U edgetl)")
        raise RemoteError(f"bench on {dev.host} failed: {last}")
    lines = out.splitlines()  # the report is the last thing printed (a login script may print before it)
    start = next((i for i, ln in enumerate(lines) if ln.startswith("{")), len(lines))
    try:
        doc = json.loads("\n".join(lines[start:]))
    except json.JSONDecodeError:
        raise RemoteError(f"bench on {dev.host} printed no bench report (edgetl {version} there; "
                          f"upgrade it to this version)") from None
    m = doc["machine"]
    isa = "dotprod" if m["isa"]["dotprod"] else ("vnni" if m["isa"]["vnni"] else ("avx2" if m["isa"]["avx2"] else "base"))
    doc["measured_on"] = f"{m.get('hostname', dev.host)} ({m['cpu']}, {m['cores']} cores, {m['machine']} {isa}, " \
                         f"onnxruntime {m['onnxruntime']})"
    doc["remote"] = {"host": dev.host, "edgetl": version, **sent, "run_s": round(time.perf_counter() - t0, 3),
                     "remote_folder": root}
    if cfg.data is not None:
        acc = doc["accuracy"]
        acc["source"] = f"{cfg.data}: {how}, {acc.get('n')} images scored on the device"
    doc["model"] = str(model)
    out_dir = Path(cfg.out or bundle_dir / "bench" / f"{doc['target']['name']}@{_slug(dev.host)}")
    return write_bench(out_dir, doc)


def _run_watched(dev: Remote, script: str) -> tuple[str, bytes, int]:
    """Run ``script`` with its stdin held open; on any exit from here (Ctrl-C included) close it first."""
    p = subprocess.Popen([*dev.ssh_argv(), "sh", "-c", shlex.quote(script)], stdin=subprocess.PIPE,
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
    if p.returncode == 255:
        raise RemoteError(f"cannot reach {dev.host} over ssh: {_last_line(err) or 'ssh exited 255'}")
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
