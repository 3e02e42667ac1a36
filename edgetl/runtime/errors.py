"""The edgetl error family.

Library code raises these; the CLI prints ``str(err)`` as one red line and exits 1
(``EDGETL_DEBUG=1`` shows the traceback). Every message names the thing and the fix.
"""
from __future__ import annotations

import difflib


class EdgetlError(Exception):
    """Base class: a problem the user can fix, described in one line."""


class DataError(EdgetlError):
    """A dataset directory or image is missing, empty or malformed."""


class ConfigError(EdgetlError):
    """An option, config file or combination of options is invalid."""


class WeightsError(EdgetlError):
    """Pretrained weights cannot be found or loaded."""


class ArtifactError(EdgetlError):
    """A run folder, checkpoint, bundle or .onnx is missing, tampered with or of an unknown format."""


class ExistsError(EdgetlError):
    """An output exists and would be overwritten."""


class RuntimeInputError(EdgetlError):
    """An input given to the device runtime has the wrong shape, type or content."""


class MissingDependencyError(EdgetlError):
    """An optional package the model needs is not installed here (not a problem of any one input)."""


def did_you_mean(name: str, choices) -> str:
    """Return ' Did you mean X?' for the closest choice, or '' if none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""


def unknown_choice(kind: str, name: str, choices) -> ConfigError:
    """A ConfigError for an unknown name, listing the valid ones with a suggestion."""
    choices = sorted(str(c) for c in choices)
    return ConfigError(f"unknown {kind} '{name}'.{did_you_mean(name, choices)} Valid: {', '.join(choices)}")
