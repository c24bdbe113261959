"""Expected failures. The CLI prints these on one line and exits 2; anything else is a bug.
Also the one-line text of a cause, which every such message quotes."""

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # the colours some exporters print into their messages


def first_line(why: BaseException | str, innermost: bool = False) -> str:
    """A cause on one line, for an error message that must stay one line: the first line that is
    not a bare heading (such as torch's "...:"), without colour codes, cut at 240 characters.
    `innermost` reads the innermost `__cause__` instead (the ONNX exporter wraps torch.export's)."""
    while innermost and isinstance(why, BaseException) and why.__cause__ is not None:
        why = why.__cause__
    lines = [line.strip() for line in _ANSI.sub("", str(why)).splitlines() if line.strip()]
    if not lines:
        return type(why).__name__ if isinstance(why, BaseException) else ""
    text = lines[1] if len(lines) > 1 and lines[0].endswith(":") else lines[0]
    return text if len(text) < 240 else text[:237] + "..."


def describe(e: BaseException) -> str:
    """An unexpected exception as `Type: first line`, for a warning that goes on without the
    failed part (a tracker, the report's evaluation): the type says what kind of bug it was."""
    return f"{type(e).__name__}: {first_line(e)}"


class EmberError(Exception):
    """A mistake the user can fix: the message says what was wrong and how to fix it."""

    exit_code = 2  # what the CLI exits with
    label = "error"  # what the CLI prints before the message


class ConfigError(EmberError):
    """A bad config key, value or group option."""


class DataError(EmberError):
    """Missing or malformed data."""


class CheckpointError(EmberError):
    """A missing, unreadable or incompatible checkpoint or run directory."""


class OutputError(EmberError):
    """An output path that cannot be written: a folder where a file goes, a file in its way, a
    read-only or full disk."""


class NonFiniteError(EmberError):
    """The loss or a gradient became NaN or infinite (trainer.nan_policy=stop)."""

    exit_code = 3


class Preempted(EmberError):
    """A stop signal arrived; a checkpoint was written and the run can be resumed."""

    exit_code = 75  # EX_TEMPFAIL: try again later, which is what a requeued job does
    label = "preempted"


class UnsafeFileError(EmberError):
    """A file that would run code if read as its format allows (a pickle naming a foreign function)."""


class RunBusyError(EmberError):
    """Another process is writing the run directory."""
