"""Projects named with ``--mlproject-uri``: fetched once per session, then checked like files.

Their node ids start with the URI as given (credentials removed), not with the cache folder
the checkout lives in, so they are the same in every session and on every xdist worker::

    https://github.com/org/repo#models/churn/MLproject::main::check

A URI that cannot be fetched is one failing item, ``<uri>::spec``, never a collection error.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pytest_mlproject.plugin.collect import MLprojectFile
from pytest_mlproject.plugin.config import session_id
from pytest_mlproject.plugin.nodes import SPEC_ITEM, MLprojectFailure, MLprojectItem


def cache_dir(config: pytest.Config) -> Path:
    """Where fetched repositories are kept: pytest's cache, or a per-user temporary folder
    when the cache plugin is disabled (``-p no:cacheprovider``)."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        return Path(cache.mkdir("mlproject-sources"))
    folder = Path(tempfile.gettempdir()) / f"pytest-mlproject-{os.getuid()}" / "sources"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


class FailedSource(pytest.Collector):
    """A project URI that could not be fetched or read: named after the URI, so ``-k`` finds
    it, and collected like any node, so pytest counts its item."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message

    def collect(self) -> list[pytest.Item]:
        return [SourceFailure.from_parent(self, name=SPEC_ITEM, message=self.message)]


class SourceFailure(MLprojectItem):
    """The one item of a project URI that could not be fetched or read."""

    def __init__(self, *, message: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.message = message
        self.add_marker("mlproject")

    def runtest(self) -> None:
        raise MLprojectFailure([self.message])

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.nodeid


def uri_items(
    session: pytest.Session, uris: tuple[str, ...], version: str | None
) -> list[pytest.Item]:
    from pytest_mlproject.sources import SourceError, redact, resolve_source
    from pytest_mlproject.spec import find_descriptor

    config = session.config
    items: list[pytest.Item] = []
    for uri in uris:
        shown = redact(uri)
        try:
            source = resolve_source(
                uri, version, cache_dir=cache_dir(config), session=session_id(config)
            )
            descriptor = find_descriptor(source.directory)
            if descriptor is None:
                raise SourceError(
                    f"{shown}: no MLproject file in {source.directory.name or '/'}; "
                    "point the URI at a project folder with #subdir"
                )
        except SourceError as exc:
            failed = FailedSource.from_parent(
                session,
                name=shown,
                nodeid=shown,
                message=f"{shown}: {exc}" if shown not in str(exc) else str(exc),
            )
            items.extend(session.genitems(failed))
            continue
        # Named like its node id: `-k` then matches the URI, not the cache folder's path.
        nodeid = f"{shown}/{descriptor.name}"
        node = MLprojectFile.from_parent(
            session, path=descriptor, source=source, name=nodeid, nodeid=nodeid
        )
        items.extend(session.genitems(node))
    return items
