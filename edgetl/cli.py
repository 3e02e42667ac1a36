"""The ``edgetl`` command: a thin typer app. Each command parses options and calls the library.

Library code raises :class:`~edgetl.errors.EdgetlError`; :func:`main` turns it into one red line
on stderr and exit code 1 (``EDGETL_DEBUG=1`` shows the traceback instead).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  help="Fine-tune an image backbone, export it to int8 ONNX, prove it and bench it on the target.")
console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]


def _version(value: bool):
    if value:
        console.print(f"edgetl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                          help="Show the version and exit.")] = None):
    """edgetl: pretrained backbone -> fine-tune -> int8 ONNX -> proven and benchmarked on the device."""


class _OneLineHandler(logging.Handler):
    """Library warnings as one yellow line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        err_console.print(f"[{style}]{record.getMessage()}[/{style}]", markup=True, highlight=False)


def _setup_logging() -> None:
    root = logging.getLogger("edgetl")
    if not any(isinstance(h, _OneLineHandler) for h in root.handlers):
        root.addHandler(_OneLineHandler())
    root.setLevel(logging.INFO if os.environ.get("EDGETL_VERBOSE") else logging.WARNING)


def print_json(obj) -> None:
    from ._io import _json_default

    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")


# --- zoo -------------------------------------------------------------------------------------

@app.command()
def zoo(as_json: JsonOpt = False):
    """List the backbones: parameters, MACs, feature size, input size, offline weights.

    Examples:
      1. edgetl zoo
      2. edgetl zoo --json | jq '.[].name'
    """
    from . import zoo as z

    rows = []
    for name in z.list_backbones():
        spec = z.get_spec(name)
        stats = z.model_stats(name)
        rows.append({"name": name, "family": spec.family, "params": stats["params"], "macs": stats["macs"],
                     "feature_dim": spec.feature_dim, "input_size": spec.input_size, "stages": len(spec.stages),
                     "weights": spec.weights, "weights_offline": z.weights_available_offline(spec),
                     "preprocess": spec.preprocess.to_dict()})
    if as_json:
        print_json(rows)
        return
    t = Table(title="edgetl backbones")
    for col in ("name", "params (M)", "MACs (G)", "feature dim", "input", "weights offline here"):
        t.add_column(col, justify="left" if col == "name" else "right", no_wrap=col == "name")
    for r in rows:
        t.add_row(r["name"], f"{r['params'] / 1e6:.1f}", f"{r['macs'] / 1e9:.2f}", str(r["feature_dim"]),
                  f"{r['input_size']}px", "[green]yes[/green]" if r["weights_offline"] else "[red]no[/red]")
    console.print(t)
    console.print("Offline with no cached torchvision weights: use [bold]efficientnet_lite0[/bold] or --weights none.")


def main() -> None:
    """Console entry point: run the app, turning EdgetlError into one line + exit 1."""
    from .errors import EdgetlError

    _setup_logging()
    try:
        app()
    except EdgetlError as e:
        if os.environ.get("EDGETL_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/bold red] {e}", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
