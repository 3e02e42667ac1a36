"""Small file helpers shared by every stage: atomic writes, hashing, JSON.

Every artifact edgetl writes goes through :func:`atomic_write` (temp file in the same
directory, fsync, ``os.replace``) so a crash or kill -9 never leaves a half-written file.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .runtime.bundle import sha256_file  # noqa: F401 -- (one definition, on the device side)
from .runtime.errors import ArtifactError, ExistsError


def _file_mode() -> int:
    """The mode ``open()`` would give a new file (0o666 less the umask); mkstemp makes 0o600."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_MODE = _file_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success fsync it and rename it over ``path``.

    ``durable=False`` (caches that are checked on read and rebuilt when damaged) keeps the
    atomic rename but skips the two fsyncs, which cost more than decoding a photo.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.chmod(tmp, _MODE)  # bundles are copied to devices and read by other users, as plain writes are
        os.replace(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write bytes or text to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any):
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "value"):  # Enums
        return o.value
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read JSON, turning a missing or malformed file into one clear ArtifactError."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{what} not found: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{what} {path} is not valid JSON ({e}); re-create it with edgetl") from None


def check_output_dir(path: Path, *, force: bool, what: str, resume_hint: bool = False) -> None:
    """Refuse to reuse a non-empty output directory unless ``force``."""
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not force:
        hint = " --resume to continue it, or" if resume_hint else ""
        raise ExistsError(f"{what} {path} already exists: pass{hint} --force to overwrite, or choose another --out")


class RunLock:
    """An exclusive lock on a run or bundle folder, so two processes never write the same one.

    An OS-level lock (``filelock``: flock on POSIX): the kernel releases it when its holder dies,
    so a lock file left behind by a kill -9 is simply taken by the next process. On a clean exit
    the lock file goes (and the folder too, if the lock made it and nothing was written in it): a
    refused command leaves nothing behind.
    """

    def __init__(self, folder: Path, name: str = ".edgetl.lock"):
        self.path = Path(folder) / name
        self._lock = None
        self._made_folder = False

    def __enter__(self) -> "RunLock":
        from filelock import FileLock, Timeout

        self._made_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = FileLock(str(self.path))
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise ArtifactError(f"{self.path.parent} is being written by another edgetl process (it holds "
                                f"{self.path}): wait for it to finish, or write elsewhere with --out") from None
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            # unlinked while still held; filelock (>= 4.3) re-checks after flock that the file it locked is
            # still the one on disk, so a process that opened the old file fails instead of holding it too
            self.path.unlink(missing_ok=True)
            self._lock.release()
            self._lock = None
            if self._made_folder and not any(self.path.parent.iterdir()):
                with contextlib.suppress(OSError):  # another process may have just written into it
                    self.path.parent.rmdir()
