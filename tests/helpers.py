"""Helpers several test modules share (imported as ``helpers``: pytest puts this folder on
``sys.path`` for the test modules in it)."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path


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
