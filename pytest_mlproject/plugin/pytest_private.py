"""Every use of pytest's private modules (``_pytest``) in the project, each with the reason
no public API serves. ``mlproject-check`` (``cli.py``) goes through this module to find and
read the configuration exactly as pytest would; a pytest release that moves one of these
names breaks here, and nowhere else.
"""

from __future__ import annotations

# Finds the rootdir and the configuration file for a list of paths, and reads its ini values.
# pytest offers this only through a whole ``Config`` (``pytest.Config`` is built by
# ``main()``/``_prepareconfig``, which loads every plugin and parses a command line), which a
# pre-commit hook that checks a few files cannot afford and does not need.
# Turns ``filterwarnings`` lines into warnings filters with pytest's own parsing (escaping,
# category lookup, its error for a malformed line). Public pytest applies them only inside a
# running session (the ``filterwarnings`` ini key and marker), never as a function.
from _pytest.config import apply_warning_filters, findpaths

# ``findpaths`` calls ``fail()`` for a ``[pytest]`` section in ``setup.cfg``; that raises a
# ``BaseException`` subclass whose common base is public only as ``pytest.fail.Exception``
# (``Failed``), not for the other outcomes ``findpaths`` may raise.
from _pytest.outcomes import OutcomeException

# pytest's matching of ``norecursedirs`` patterns against a path (fnmatch on the name, or on
# the whole path for a pattern with a separator). No public function exposes it, and a copy
# could drift from how pytest itself prunes folders.
from _pytest.pathlib import fnmatch_ex

__all__ = ["OutcomeException", "apply_warning_filters", "findpaths", "fnmatch_ex"]
