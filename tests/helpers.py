"""Helpers several test modules share (imported as ``helpers``: pytest puts this folder on
``sys.path`` for the test modules in it)."""

from __future__ import annotations

import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

# The REST endpoints that our own client (pytest_mlproject/databricks/workspace.py) calls. The
# SDK also makes requests of its own, which come and go between its releases: the host-metadata
# probe (/.well-known/databricks-config) and, from databricks-sdk 0.167 on, the Files API's
# endpoint discovery (GET /api/2.0/fs/endpoints) among them. Tests that list requests list only
# these, so that one more discovery request in a new SDK release fails nothing.
OUR_ENDPOINTS = re.compile(
    r"/api/2\.[0-9]/("
    r"preview/scim/v2/Me"
    r"|workspace/(get-status|mkdirs|import)"
    r"|fs/(files|directories)/.+"
    r"|jobs/runs/(submit|get|get-output|cancel|list)"
    r")"
)


def ours(entries: Any) -> list[Any]:
    """The logged requests of the fake workspace to an endpoint in :data:`OUR_ENDPOINTS`, in
    order."""
    return [e for e in entries if OUR_ENDPOINTS.fullmatch(e.path)]


#: The suite also runs with the oldest pytest that pyproject.toml allows (.ci/run, the
#: minimum-versions run); a few checks are about what only pytest 9 does.
PYTEST_9 = pytest.version_tuple >= (9,)
needs_pytest_9 = pytest.mark.skipif(
    not PYTEST_9, reason=f"pytest 9 feature; this is pytest {pytest.__version__}"
)


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` as a fixed author, ignoring the machine's git configuration; its
    output, stripped."""
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def junit(path: Path) -> dict[str, dict[str, str]]:
    """``classname::name`` of every test case in a JUnit XML file → its properties."""
    cases = {}
    for case in ET.parse(path).iter("testcase"):
        properties = {p.get("name", ""): p.get("value", "") for p in case.iter("property")}
        cases[f"{case.get('classname')}::{case.get('name')}"] = properties
    return cases


def gone(pid: int, within: float = 10.0) -> bool:
    """Whether the process has exited within ``within`` seconds. A zombie counts as gone: once
    its parent has died it waits for PID 1 to reap it, which a container's PID 1 may never do."""
    until = time.monotonic() + within
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        except OSError:  # no /proc: ask the kernel
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            state = "R"
        if state in {"Z", "X"}:
            return True
        if time.monotonic() >= until:
            return False
        time.sleep(0.02)


def wheel(folder: Path, name: str, version: str, modules: dict[str, str]) -> Path:
    """Write a pure-Python wheel of ``name`` ``version`` holding ``modules`` (path -> source),
    with zipfile: tests install from a folder of these, never from an index."""
    import base64
    import hashlib
    import zipfile

    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        **{path: source.encode() for path, source in modules.items()},
        f"{dist}.dist-info/METADATA": (
            f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        ).encode(),
        f"{dist}.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    records = []
    path = folder / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in files.items():
            archive.writestr(member, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            records.append(f"{member},sha256={digest.decode()},{len(data)}")
        records.append(f"{dist}.dist-info/RECORD,,")
        archive.writestr(f"{dist}.dist-info/RECORD", "\n".join(records) + "\n")
    return path
