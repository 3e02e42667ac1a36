"""Shared fixtures: tiny ImageFolder trees made in tmp_path, and the shared datasets' location."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGETL_SHARED", REPO.parent / "shared")) / "datasets"


def make_image(path: Path, size=(48, 40), color=None, mode="RGB", seed=0, fmt=None):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    if color is not None:  # a class-dependent tint makes tiny datasets learnable
        arr = (arr // 4 + np.array(color, np.uint8) * 3 // 4).astype(np.uint8)
    img = Image.fromarray(arr)
    if mode != "RGB":
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt)
    return path


COLORS = [(230, 30, 30), (30, 230, 30), (30, 30, 230), (230, 230, 30)]


def make_imagefolder(root: Path, classes=("cat", "dog"), n_train=8, n_val=3, size=(48, 40), val=True) -> Path:
    for ci, c in enumerate(classes):
        for i in range(n_train):
            make_image(root / "train" / c / f"{c}{i}.png", size, COLORS[ci % 4], seed=ci * 1000 + i)
        if val:
            for i in range(n_val):
                make_image(root / "val" / c / f"{c}{i}.png", size, COLORS[ci % 4], seed=ci * 1000 + 500 + i)
    return root


def tiny_run(root: Path, *, classes=("a", "b"), n_train=8, n_val=4, size=(48, 40), **config):
    """A tiny random-weight resnet18 fine-tuned at 32 px on a class-folder tree made under ``root`` (``config``:
    more FinetuneConfig fields, e.g. epochs): (its RunResult, the data folder)."""
    from edgetl.config import FinetuneConfig
    from edgetl.training import finetune

    data = make_imagefolder(root / "data", classes=classes, n_train=n_train, n_val=n_val, size=size)
    config = {"backbone": "resnet18", "weights": "none", "image_size": 32, "workers": 0, "epochs": 1, **config}
    return finetune(FinetuneConfig(data=data, out=root / "run", **config)), data


@pytest.fixture
def tiny_data(tmp_path) -> Path:
    return make_imagefolder(tmp_path / "data")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """One throw-away edgetl cache for the whole session, set before any module fixture runs and
    undone after (no test writes to ~/.cache/edgetl; no fixture leaks environment into later files)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGETL_CACHE", str(tmp_path_factory.getbasetemp() / "edgetl-cache"))
        yield


def run_cli(*args, env=None, cwd=None, timeout=600, check=False) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess, as a user would."""
    e = dict(os.environ, **(env or {}))
    e.pop("EDGETL_DEBUG", None) if "EDGETL_DEBUG" not in (env or {}) else None
    p = subprocess.run([sys.executable, "-m", "edgetl", *map(str, args)], capture_output=True, text=True,
                       env=e, cwd=cwd, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError(f"edgetl {' '.join(map(str, args))} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def run_cli_batch(cases: dict[str, dict], *, jobs: int = 2, timeout: float = 300) -> dict[str, subprocess.CompletedProcess]:
    """Run many real command lines, each in its own process (forked from one interpreter that has imported
    torch once: tests/_cli_batch.py). ``cases``: id -> {"argv": [...], "env": {...}, "cwd": path}."""
    import json
    import tempfile

    env = dict(os.environ)
    env.pop("EDGETL_DEBUG", None)
    payload = [{"id": cid, "argv": [str(a) for a in c["argv"]], "env": {k: str(v) for k, v in (c.get("env") or {}).items()},
                "cwd": str(c["cwd"]) if c.get("cwd") else None} for cid, c in cases.items()]
    with tempfile.TemporaryDirectory() as work:
        p = subprocess.run([sys.executable, str(Path(__file__).with_name("_cli_batch.py")), str(jobs), str(timeout), work],
                           input=json.dumps(payload), capture_output=True, text=True, env=env,
                           timeout=timeout * len(cases) / jobs + 120)
    if p.returncode != 0:
        raise AssertionError(f"tests/_cli_batch.py failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return {cid: subprocess.CompletedProcess([cid], r["returncode"], r["stdout"], r["stderr"])
            for cid, r in json.loads(p.stdout).items()}


def assert_one_line_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 1, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n.lower() in p.stderr.lower(), (n, p.stderr)


PWNED = Path("/tmp/edgetl-pwned")  # created only if a test's pickled code ever runs


class PickledCode:
    """Unpickling this runs a shell command: what a hostile checkpoint carries."""

    def __reduce__(self):
        return (os.system, (f"touch {PWNED}",))


def tree_hashes(root: Path) -> dict:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def device_venv(tmp_path_factory) -> Path:
    """A venv with only `pip install edgetl` (the base install: no torch, no onnx): a device's."""
    venv = tmp_path_factory.mktemp("device") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    p = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(REPO)], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    return venv


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 (tests/sshd_server.py): a throw-away host key, one authorized
    client key, no passwords. It logs in as the user running the tests, whose shell plays the device."""
    from sshd_server import SSHDUnavailable, local_sshd

    try:
        with local_sshd(tmp_path_factory.mktemp("sshd")) as server:
            yield server
    except SSHDUnavailable as e:
        pytest.skip(str(e))


def _free_port() -> int:
    from sshd_server import free_port

    return free_port()


@pytest.fixture(scope="session")
def int8_bundle(tmp_path_factory):
    """A tiny random-weight resnet18 run exported with --int8 --fp16 (shared by the bench tests), and its data."""
    from edgetl.config import ExportConfig
    from edgetl.exporter import export

    r, data = tiny_run(tmp_path_factory.mktemp("q"), n_train=10, n_val=6, epochs=3, lr=1e-2)
    return export(r.out, ExportConfig(int8=True, fp16=True, max_drop=100, min_agreement=0.0, calib_size=16,
                                      parity_images=12), force=True), data
