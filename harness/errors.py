"""The one exception type the CLI turns into a one-line message and a non-zero exit code."""


class HarnessError(Exception):
    """A user-facing error: its message is one line that names the file, id, column or flag."""


class ConfigError(HarnessError, ValueError):
    """A configuration value out of range: a bad flag, or a bad value in a stored spec."""


def one_line(exc: BaseException) -> str:
    """`Type: first line of the message`: how an unexpected error is shown on one line and stored in a record."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")


def clip(text: str, limit: int = 80) -> str:
    """`text`, or its start and its length when longer than `limit`: messages stay one short line."""
    return text if len(text) <= limit else f"{text[:limit]}...({len(text):,} characters)"
