"""Every progress bar of bevsimdet, in one place: on stderr, and only where someone watches.

A bar is drawn when its caller allows it (the library functions' ``progress=`` argument) and the
process-wide mode says so:

* ``None`` (default, ``bevsimdet CMD`` without a flag): bars only when stderr is a terminal, so
  logs, pipes and CI output stay free of carriage-return noise;
* ``True`` (``--progress``): bars even when stderr is not a terminal (asked for explicitly);
* ``False`` (``--no-progress``): no bar anywhere, including the ones drawn deep inside a command
  (e.g. ``prepare`` run by ``train`` or ``demo``).

Commands set the mode with :func:`configure` from their ``--progress/--no-progress`` option.
Bars never go to stdout. Spinners (``rich`` status lines) follow the same rule via
:func:`enabled`.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

_MODE: bool | None = None


def configure(mode: bool | None) -> bool:
    """Set the process-wide mode (``None`` auto, ``True`` force, ``False`` off); returns whether
    callers may draw bars at all (pass it on as their ``progress=`` argument)."""
    global _MODE
    _MODE = mode
    return mode is not False


def mode() -> bool | None:
    return _MODE


def enabled(allowed: bool = True) -> bool:
    """Whether a bar allowed by its caller is drawn now (see the module docstring)."""
    if not allowed or _MODE is False:
        return False
    if _MODE is True:
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def progress_bar(iterable: Iterable | None = None, *, allowed: bool = True, **kwargs: Any):
    """A ``tqdm`` bar on stderr (``total``, ``desc``, ``unit``, ... as tqdm's), disabled unless
    :func:`enabled`. A disabled bar still accepts ``update``/``close`` and iterates."""
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, file=sys.stderr, disable=not enabled(allowed), **kwargs)


__all__ = ["configure", "enabled", "mode", "progress_bar"]
