"""One error hierarchy for the engine package. The `engine` command turns these into a
clear one-line message and exit code 2, never a traceback."""


class EngineError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(EngineError, ValueError):
    """A configuration value is missing or outside its allowed range; the message names the key."""


class DataError(EngineError, ValueError):
    """An input data file is malformed; the message names the file, the row and the field."""
