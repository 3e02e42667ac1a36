"""Run locks and atomic writes: nothing half-written, never two writers, no lock outlives its holder."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from edgetl._io import RunLock, atomic_path, atomic_write
from edgetl.errors import ArtifactError


def test_a_live_holder_refuses_a_second_writer(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(ArtifactError, match="another edgetl process"):
            RunLock(tmp_path).__enter__()
    with RunLock(tmp_path):  # released: free again
        pass


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path):
    """kill -9 leaves the lock file behind; the kernel drops the lock with its holder, so the next
    writer takes it (a stale file never blocks a run)."""
    code = (f"import sys, time; sys.path.insert(0, {str(REPO)!r}); from edgetl._io import RunLock\n"
            f"l = RunLock({str(tmp_path)!r}).__enter__(); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    with pytest.raises(ArtifactError, match="another edgetl process"):
        RunLock(tmp_path).__enter__()
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert (tmp_path / ".edgetl.lock").exists()  # the file stays; the lock does not
    t = time.time()
    with RunLock(tmp_path):
        assert time.time() - t < 1
    assert not (tmp_path / ".edgetl.lock").exists()  # a clean exit takes its file away


def test_a_lock_leaves_no_folder_it_made_for_nothing(tmp_path):
    with RunLock(tmp_path / "run"):
        pass
    assert not (tmp_path / "run").exists()
    with RunLock(tmp_path / "kept"):
        (tmp_path / "kept" / "best.pt").write_text("x")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["best.pt"]


def test_atomic_write_leaves_the_old_file_when_the_writer_fails(tmp_path):
    f = tmp_path / "a.json"
    atomic_write(f, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(f) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash mid-write")
    assert f.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_write_gives_the_mode_a_plain_write_would(tmp_path):
    """mkstemp makes 0600 files: a bundle copied to a device or served to another user must stay readable."""
    plain = tmp_path / "plain"
    plain.write_text("x")
    atomic_write(tmp_path / "atomic", "x")
    assert (tmp_path / "atomic").stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
