"""Questions about paths that a descriptor, a settings file or an option names.

Such a path comes with a pull request, so it may be anything: 5,000 characters long, holding
a NUL byte, or looping through links. ``Path.exists()`` and ``Path.resolve()`` raise for some
of these (``File name too long``, ``embedded null byte``); these helpers answer instead, so a
strange name becomes a problem about that name, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path


def exists(path: Path) -> bool:
    """Whether ``path`` names something (links followed); ``False`` for unusable names."""
    return os.path.exists(path)


def is_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (links followed); ``False`` for unusable names."""
    return os.path.isfile(path)


def expanded(path: Path) -> Path | None:
    """``path`` with a leading ``~`` or ``~user`` expanded, or ``None`` when that user (or
    the home folder) is unknown or the name holds a NUL byte, where ``Path.expanduser()``
    raises."""
    try:
        return path.expanduser()
    except (RuntimeError, KeyError, ValueError):
        return None


def resolved(path: Path) -> Path | None:
    """``path`` made absolute with links followed, or ``None`` when the name is unusable."""
    try:
        return path.resolve()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a link loop, on Python 3.10
        return None
