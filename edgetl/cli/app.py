"""The ``edgetl`` command: a thin typer app. Each command parses options and calls the library; the
commands live by side (``train``, ``device``, ``bench``, ``chains``) and register on ``common.app``.

Library code raises :class:`~edgetl.errors.EdgetlError`; :func:`main` turns it into one red line
on stderr and exit code 1 (``EDGETL_DEBUG=1`` shows the traceback instead).
"""
from __future__ import annotations

import os
import sys

from rich.markup import escape

from . import bench, chains, device, emulator, train  # noqa: F401 -- (each registers its commands on app)
from .common import _EXTRA_OF, _setup_logging, app, err_console


def main() -> None:
    """Console entry point: run the app, turning EdgetlError into one line + exit 1."""
    from ..errors import EdgetlError

    _setup_logging()
    try:
        app()
    except EdgetlError as e:
        if os.environ.get("EDGETL_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/bold red] {escape(str(e))}", soft_wrap=True)
        sys.exit(1)
    except ModuleNotFoundError as e:  # a training-side command on the device (base) install
        extra = _EXTRA_OF.get((e.name or "").split(".")[0])
        if extra is None or os.environ.get("EDGETL_DEBUG"):
            raise
        cmd = next((a for a in sys.argv[1:] if not a.startswith("-")), "this command")
        err_console.print(f"[bold red]error:[/bold red] edgetl {cmd} needs {e.name}, which the base (device) "
                          f"install leaves out: pip install 'edgetl\\[{extra}]'", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
