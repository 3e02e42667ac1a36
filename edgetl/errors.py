"""The error family, defined on the device side (``edgetl.runtime.errors``: it imports nothing else of
edgetl); this name serves the training, export and bench sides."""
from .runtime.errors import (ArtifactError, ConfigError, DataError, EdgetlError, ExistsError,  # noqa: F401
                             MissingDependencyError, RuntimeInputError, WeightsError, did_you_mean,
                             unknown_choice)
