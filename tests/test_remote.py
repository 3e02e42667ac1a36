"""`edgetl bench --on HOST` and `edgetl targets --probe HOST` against a real OpenSSH server on
127.0.0.1, with a base-only venv (no torch) playing the device's edgetl."""
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import _free_port, assert_one_line_error, run_cli, tiny_run
from edgetl.targets import get_target


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from edgetl.config import ExportConfig
    from edgetl.exporter import export

    run, data = tiny_run(tmp_path_factory.mktemp("remote"))
    b = export(run.out, ExportConfig(int8=True, max_drop=100, min_agreement=0.0, calib_size=8, parity_images=8))
    return b.path, data


@pytest.fixture(scope="module")
def device(sshd, device_venv, tmp_path_factory):
    cache = tmp_path_factory.mktemp("device-cache")
    return ["--on", sshd.host, *sshd.options(), "--remote-edgetl", str(device_venv / "bin" / "edgetl"),
            "--remote-cache", str(cache)]


BENCH = ["--min-runs", "20", "--min-time", "0.3", "--no-rss"]


def test_remote_bench_reports_like_a_local_one_and_copies_once(bundle, device, tmp_path):
    b, data = bundle
    run_cli("bench", b, "--data", data / "val", *BENCH, "--out", tmp_path / "local", check=True)
    p = run_cli("bench", b, "--data", data / "val", *BENCH, *device, "--out", tmp_path / "remote", check=True)
    assert "measured on" in p.stdout
    local = json.loads((tmp_path / "local" / "bench.json").read_text())
    remote = json.loads((tmp_path / "remote" / "bench.json").read_text())
    assert set(remote) >= set(local) - {"measured_on"} and set(remote["variants"]) == {"fp32", "int8"}
    for v in ("fp32", "int8"):
        assert set(remote["variants"][v]["latency"]) == set(local["variants"][v]["latency"])
        ratio = remote["variants"][v]["latency"]["p50_ms"] / local["variants"][v]["latency"]["p50_ms"]
        assert 0.05 < ratio < 20, (v, ratio)  # the same host behind ssh, timed at another moment: a sane factor
    assert remote["accuracy"]["n"] == local["accuracy"]["n"] == 8 and "on the device" in remote["accuracy"]["source"]
    assert remote["measured_on"] and remote["machine"]["edgetl"]
    assert remote["torch_reference"].startswith("skipped: torch is not installed")  # the device has no torch
    for f in ("report.md", "latency.png", "accuracy_vs_latency.png"):
        assert (tmp_path / "remote" / f).is_file()
    assert "Measured on" in (tmp_path / "remote" / "report.md").read_text()
    sent = remote["remote"]
    assert sent["sent"] == sent["files"] and sent["bytes_sent"] > 0
    again = run_cli("bench", b, "--data", data / "val", *BENCH, *device, "--out", tmp_path / "again", "--json",
                    check=True)
    assert json.loads(again.stdout)["remote"]["sent"] == 0  # every file is on the device already, by sha256


@pytest.mark.parametrize("case", ["unreachable", "refused-key", "no-edgetl", "bench-fails"])
def test_remote_failures_are_one_line_and_leave_no_report(bundle, sshd, device, tmp_path, case):
    b, _ = bundle
    args = list(device)
    absent = None
    if case == "unreachable":
        args[1] = f"ssh://{sshd.user}@127.0.0.1:{_free_port()}"
        needles, absent = ["cannot reach", "127.0.0.1"], "refused the ssh key"
    elif case == "refused-key":
        args = ["--on", sshd.host, *sshd.options(sshd.key.with_name("other_key")), *args[len(sshd.options()) + 2:]]
        needles, absent = ["refused the ssh key", "without a password"], "cannot reach"
    elif case == "no-edgetl":
        args[args.index("--remote-edgetl") + 1] = "/nonexistent/bin/edgetl"
        needles = ["edgetl is not installed", "pip install edgetl", "--install"]
    else:
        args += ["--providers", "CUDAExecutionProvider"]
        needles = ["bench on", "failed", "CUDAExecutionProvider"]
    p = run_cli("bench", b, *BENCH, *args, "--out", tmp_path / "out", timeout=120)
    assert_one_line_error(p, *needles)
    assert absent is None or absent not in p.stderr  # the two ssh failures say different things
    assert not (tmp_path / "out").exists()


def test_fewer_images_than_classes_still_bench_on_the_device(bundle, device, tmp_path):
    """--max-images below the number of classes leaves a class without images: the device still gets
    every class folder (it checks them against the model's labels)."""
    b, data = bundle
    run_cli("bench", b, "--data", data / "val", "--max-images", "1", *BENCH, *device, "--out", tmp_path / "o",
            check=True)
    assert json.loads((tmp_path / "o" / "bench.json").read_text())["accuracy"]["n"] == 1


def test_ctrl_c_leaves_nothing_running_on_the_device(bundle, device, tmp_path):
    b, _ = bundle
    p = subprocess.Popen([sys.executable, "-m", "edgetl", "bench", str(b), "--min-time", "60", "--no-rss", *device,
                          "--out", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def on_device():  # the bench, and its peak-RSS child (it runs in the bench's process group)
        q = subprocess.run(["pgrep", "-f", "edgetl bench .*/runs/.*/bundle|resource.*VmHWM"], capture_output=True,
                           text=True)
        return q.stdout.split()

    t_end = time.time() + 60
    while not on_device() and time.time() < t_end and p.poll() is None:
        time.sleep(0.2)
    assert on_device(), "the bench never started on the device"
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=30)
    t_end = time.time() + 10
    while on_device() and time.time() < t_end:
        time.sleep(0.2)
    assert not on_device(), "the device's bench outlived Ctrl-C"
    assert p.returncode != 0 and not (tmp_path / "out").exists()


def test_probe_reads_the_device_and_writes_a_target(sshd, tmp_path, bundle, device, device_venv):
    p = run_cli("targets", "--probe", sshd.host, *sshd.options(), "--remote-edgetl", device_venv / "bin" / "edgetl",
                "--json", check=True)
    info = json.loads(p.stdout)
    assert info["cores"] >= 1 and info["memory_mb"] > 0 and "CPUExecutionProvider" in info["providers"]
    assert info["closest_target"] in {"host", "x86-ipc", "rpi4", "rpi5"}
    run_cli("targets", "--probe", sshd.host, *sshd.options(), "--remote-edgetl", device_venv / "bin" / "edgetl",
            "--write", tmp_path / "mine.json", check=True)
    t = json.loads((tmp_path / "mine.json").read_text())
    assert t["threads"] == info["cores"] and t["name"] == "mine"
    b, _ = bundle
    run_cli("bench", b, *BENCH, "--target", tmp_path / "mine.json", *device, "--out", tmp_path / "b", check=True)
    assert json.loads((tmp_path / "b" / "bench.json").read_text())["target"]["name"] == "mine"


# --- what a device can rely on (issue #28) ------------------------------------------------------------

def _on_device(pattern: str) -> list[str]:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()


def _descendants(pid: int) -> list[int]:
    kids = [int(k) for k in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    return kids + [d for k in kids for d in _descendants(k)]


def test_a_link_that_goes_silent_ends_in_one_line_and_the_device_stops_its_bench(bundle, sshd, device, tmp_path):
    """The device's sshd frozen mid-bench (a robot out of Wi-Fi): ssh's keep-alives go unanswered, the command
    ends within --ssh-timeout with one line; once the link is back the device notices and kills its bench."""
    b, _ = bundle
    p = subprocess.Popen([sys.executable, "-m", "edgetl", "bench", str(b), "--min-time", "120", "--no-rss", *device,
                          "--ssh-timeout", "6", "--out", str(tmp_path / "out")], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    pattern = "edgetl bench .*/runs/.*/bundle"
    t_end = time.time() + 90
    while not _on_device(pattern) and time.time() < t_end and p.poll() is None:
        time.sleep(0.2)
    assert _on_device(pattern), "the bench never started on the device"
    frozen = _descendants(sshd.pid)  # this connection's sshd processes (and the bench under them)
    sessions = [pid for pid in frozen if "sshd" in open(f"/proc/{pid}/comm").read()]
    for pid in sessions:
        os.kill(pid, signal.SIGSTOP)
    t0 = time.time()
    try:
        _, err = p.communicate(timeout=60)
        silent_for = time.time() - t0
    finally:
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    assert p.returncode == 1 and "link to" in err and "lost mid-call" in err, err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err
    assert silent_for < 30, silent_for  # --ssh-timeout 6, not forever
    t_end = time.time() + 30
    while _on_device(pattern) and time.time() < t_end:
        time.sleep(0.3)
    assert not _on_device(pattern), "the device's bench outlived the link"


def test_device_paths_with_a_tilde_expand_there_and_local_ones_here(bundle, sshd, device_venv, tmp_path):
    b, _ = bundle
    home = Path.home()
    link = home / f".edgetl-test-venv-{os.getpid()}"
    target = home / f".edgetl-test-target-{os.getpid()}.json"
    link.symlink_to(device_venv)
    target.write_text(json.dumps({**dataclasses.asdict(get_target("host")), "name": "tilde"}))
    try:
        p = run_cli("bench", b, *BENCH, "--on", sshd.host, *sshd.options(), "--remote-edgetl", f"~/{link.name}/bin/edgetl",
                    "--target", f"~/{target.name}", "--remote-cache", str(tmp_path / "cache"), "--out",
                    tmp_path / "o", check=True)
        assert "measured on" in p.stdout
        assert json.loads((tmp_path / "o" / "bench.json").read_text())["target"]["name"] == "tilde"
        gone = run_cli("bench", b, *BENCH, "--on", sshd.host, *sshd.options(), "--remote-edgetl",
                       f"~/{link.name}/bin/edgetl", "--target", "~/no-such-target.json")
        assert_one_line_error(gone, "no-such-target.json")
    finally:
        link.unlink()
        target.unlink()


def test_unexpected_device_output_is_one_line_naming_its_edgetl(bundle, sshd, tmp_path):
    b, _ = bundle
    fake = tmp_path / "edgetl"
    fake.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "edgetl 0.0.9"; exit 0; fi\necho \'{"hi": 1}\'\n')
    fake.chmod(0o755)
    p = run_cli("bench", b, *BENCH, "--on", sshd.host, *sshd.options(), "--remote-edgetl", fake,
                "--remote-cache", str(tmp_path / "cache"), "--out", tmp_path / "o")
    assert_one_line_error(p, "no bench report", "edgetl 0.0.9", "--install")
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # (~45 s: CI runs it with the slow suite)
def test_one_bench_at_a_time_on_a_device_and_gc_cleans_what_runs_left(bundle, sshd, device_venv, tmp_path):
    b, data = bundle
    cache = tmp_path / "cache"
    dev = ["--on", sshd.host, *sshd.options(), "--remote-edgetl", str(device_venv / "bin" / "edgetl"),
           "--remote-cache", str(cache)]
    first = subprocess.Popen([sys.executable, "-m", "edgetl", "bench", str(b), "--min-time", "60", "--no-rss", *dev,
                              "--out", str(tmp_path / "a")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t_end = time.time() + 90
    while not _on_device(f"edgetl bench {cache}/runs/") and time.time() < t_end:
        time.sleep(0.2)
    try:
        second = run_cli("bench", b, *BENCH, "--data", data / "val", *dev, "--out", tmp_path / "b")
        assert_one_line_error(second, "another edgetl bench is running on this device")
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=30)
    run_cli("bench", b, *BENCH, "--data", data / "val", *dev, "--out", tmp_path / "c", check=True)  # free again
    stale = cache / "objects" / ".incoming.abc123"
    stale.mkdir()
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    runs = sorted((cache / "runs").iterdir())
    assert len(runs) >= 2  # the bundle alone, and the bundle with --data
    p = run_cli("targets", "--gc", sshd.host, *sshd.options(), "--remote-cache", str(cache), "--keep", "1", "--json",
                check=True)
    r = json.loads(p.stdout)
    assert r["runs_kept"] == 1 and r["runs_removed"] == len(runs) - 1 and r["incoming_removed"] == 1
    assert not stale.exists() and len(list((cache / "runs").iterdir())) == 1
    kept = next((cache / "runs").iterdir())
    used = {os.path.basename(os.readlink(f)) for f in kept.rglob("*") if f.is_symlink()}
    assert {f.name for f in (cache / "objects").iterdir()} == used  # objects no kept run uses are gone
    again = run_cli("bench", b, *BENCH, *dev, "--keep", "0", "--out", tmp_path / "d", "--json", check=True)
    assert json.loads(again.stdout)  # the report is written before the clean-up
    assert list((cache / "runs").iterdir()) == [] and list((cache / "objects").iterdir()) == []


def test_the_copy_streams_instead_of_holding_the_data_in_memory(sshd, tmp_path):
    """A 200 MB file sent to the device: this process's peak memory stays far below the file's size (the
    tar was built in memory, then copied again: 2x the data)."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        for _ in range(200):
            f.write(os.urandom(1 << 20))
    code = ("import sys\n"
            "from pathlib import Path\n"
            "from edgetl.devices.ssh import Remote\n"
            "from edgetl.devices.transfer import send\n"
            "from edgetl._progress import SILENT\n"
            f"dev = Remote({sshd.host!r}, tuple(o.split('=', 1)[1] for o in {sshd.options()!r}), "
            f"cache={str(tmp_path / 'cache')!r}).resolved()\n"
            f"r = send(dev, {{'big.bin': Path({str(big)!r})}}, SILENT)\n"
            # VmHWM: this process's own peak (ru_maxrss carries over a fat parent's through fork+exec)
            "print(r['sent'], [int(l.split()[1]) // 1024 for l in open('/proc/self/status') if l.startswith('VmHWM')][0])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    sent, peak_mb = map(int, p.stdout.split())
    assert sent == 1 and peak_mb < 150, peak_mb
    assert (tmp_path / "cache" / "objects").is_dir() and len(list((tmp_path / "cache" / "objects").iterdir())) == 1


@pytest.mark.slow
def test_install_puts_exactly_this_edgetl_on_the_device_never_one_resolved_by_name(bundle, sshd, tmp_path):
    import edgetl

    b, _ = bundle
    cache = tmp_path / "cache"
    p = run_cli("bench", b, *BENCH, "--on", sshd.host, *sshd.options(), "--remote-edgetl", "/nonexistent/edgetl",
                "--remote-cache", str(cache), "--install", "--out", tmp_path / "o", timeout=1200, check=True)
    assert "measured on" in p.stdout
    installed = next((cache / "venv").glob("lib/python*/site-packages/edgetl/runtime/cpu.py"))
    assert installed.read_bytes() == (Path(edgetl.__file__).parent / "runtime" / "cpu.py").read_bytes()
    bad = run_cli("bench", b, *BENCH, "--on", sshd.host, *sshd.options(), "--remote-edgetl", "/nonexistent/edgetl",
                  "--remote-cache", str(tmp_path / "c2"), "--install-wheel", tmp_path / "edgetl.txt")
    assert_one_line_error(bad, "not an edgetl wheel")
