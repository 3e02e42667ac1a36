"""The ``edgetl`` command (typer): thin commands that parse options and call the library."""
from .app import app, main

__all__ = ["app", "main"]
