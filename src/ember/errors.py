"""Expected failures. The CLI prints these on one line and exits 2; anything else is a bug."""


class EmberError(Exception):
    """A mistake the user can fix: the message says what was wrong and how to fix it."""


class ConfigError(EmberError):
    """A bad config key, value or group option."""


class DataError(EmberError):
    """Missing or malformed data."""


class CheckpointError(EmberError):
    """A missing, unreadable or incompatible checkpoint or run directory."""
