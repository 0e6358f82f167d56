"""The one exception type the CLI turns into a one-line message and a non-zero exit code."""


class HarnessError(Exception):
    """A user-facing error: its message is one line that names the file, id, column or flag."""


class ConfigError(HarnessError, ValueError):
    """A configuration value out of range: a bad flag, or a bad value in a stored spec."""
