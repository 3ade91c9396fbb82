"""User-facing errors.

Anything a user can cause (a wrong path, a malformed file, a bad config key) raises
:class:`UserError` with a one-line message that names the file and the fix. The CLI prints
it as ``error: <message>`` and exits with status 2, never with a traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input; the message is shown as-is, on one line."""

    def __init__(self, message: str, *, path: object | None = None, fix: str | None = None):
        parts = [str(message)]
        if path is not None and str(path) not in message:
            parts.append(f"[{path}]")
        if fix:
            parts.append(f"-> {fix}")
        super().__init__(" ".join(parts))
        self.path = path
        self.fix = fix


class ConfigError(UserError):
    """A malformed or unknown configuration key or value."""


class DataError(UserError):
    """A missing or corrupt data file, or a dataroot that is not nuScenes-shaped."""


def one_line(error: UserError) -> str:
    """``error``'s message on one line. A UserError raised in a DataLoader worker comes back
    re-created around the worker's whole traceback ("Caught DataError in DataLoader worker
    process 0.\nOriginal Traceback ..."); its last line holds the original message."""
    text = str(error)
    if "\n" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    head, sep, message = last.partition(": ")
    return message if sep and head.rsplit(".", 1)[-1] == type(error).__name__ else " ".join(text.split())
