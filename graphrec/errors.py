"""Exception classes. The CLI maps each to a one-line message and a non-zero exit code."""


class GraphrecError(Exception):
    """Base class of every error graphrec raises on purpose."""


class DataError(GraphrecError):
    """An input file or array is missing, malformed or inconsistent."""


class ConfigError(GraphrecError):
    """A configuration value is out of range or inconsistent."""


class TextModelError(GraphrecError):
    """The text encoder cannot be loaded."""


class ArtifactError(GraphrecError):
    """A graph or model directory is missing, incomplete or incompatible."""


class UnknownUserError(GraphrecError):
    """A user id is not in the model."""


class UnknownItemError(GraphrecError):
    """An item id is not in the model."""


class DeviceError(GraphrecError):
    """The requested device is not available."""
