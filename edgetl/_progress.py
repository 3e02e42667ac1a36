"""How library code reports progress without owning a console.

Library functions take ``progress: Progress | None``; the CLI passes :class:`RichProgress`,
the Python API gets the silent default. ``task`` yields a callable ``advance(n=1, **fields)``.

    with progress.task("features", total=len(ds)) as advance:
        for batch in loader:
            ...; advance(len(batch), ips=f"{rate:.0f} img/s")
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator


class Progress:
    """Silent progress: the default for library calls."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[Callable[..., None]]:
        yield lambda n=1, **fields: None

    def log(self, message: str) -> None:
        pass


class RichProgress(Progress):
    """Rich progress bars on a console (used by the CLI)."""

    def __init__(self, console=None, transient: bool = False):
        self.console = console
        self.transient = transient

    @contextlib.contextmanager
    def task(self, description: str, total: int | None = None):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RP, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        cols = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
        with RP(*cols, console=self.console, transient=self.transient) as rp:
            tid = rp.add_task(description, total=total, info="")

            def advance(n: int = 1, **fields):
                info = "  ".join(f"{k}={v}" for k, v in fields.items())
                rp.update(tid, advance=n, **({"info": info} if fields else {}))

            yield advance

    def log(self, message: str) -> None:
        if self.console is not None:
            self.console.print(message)


SILENT = Progress()
