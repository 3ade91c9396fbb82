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
