"""`edgetl bench --on HOST` and `edgetl targets --probe HOST` against a real OpenSSH server on
127.0.0.1, with a base-only venv (no torch) playing the device's edgetl."""
import json
import signal
import subprocess
import sys
import time

import pytest

from conftest import _free_port, assert_one_line_error, make_imagefolder, run_cli


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from edgetl.config import ExportConfig, FinetuneConfig
    from edgetl.exporter import export
    from edgetl.training import finetune

    root = tmp_path_factory.mktemp("remote")
    data = make_imagefolder(root / "data", classes=("a", "b"), n_train=8, n_val=4)
    run = finetune(FinetuneConfig(data=data, out=root / "run", backbone="resnet18", weights="none", image_size=32,
                                  workers=0, epochs=1))
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
        assert 0.2 < ratio < 5, (v, ratio)  # the same host behind ssh: a sane factor, not equality
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
    if case == "unreachable":
        args[1] = f"ssh://{sshd.user}@127.0.0.1:{_free_port()}"
        needles = ["cannot reach", "127.0.0.1"]
    elif case == "refused-key":
        args = ["--on", sshd.host, *sshd.options(sshd.key.with_name("other_key")), *args[len(sshd.options()) + 2:]]
        needles = ["cannot reach", "key"]
    elif case == "no-edgetl":
        args[args.index("--remote-edgetl") + 1] = "/nonexistent/bin/edgetl"
        needles = ["edgetl is not installed", "pip install edgetl", "--install"]
    else:
        args += ["--providers", "CUDAExecutionProvider"]
        needles = ["bench on", "failed", "CUDAExecutionProvider"]
    p = run_cli("bench", b, *BENCH, *args, "--out", tmp_path / "out", timeout=120)
    assert_one_line_error(p, *needles)
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
