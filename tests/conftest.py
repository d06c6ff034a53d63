"""Shared test set-up: the Hypothesis profiles and the path to the conformance corpus."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# No deadline: CI machines are shared and slow; speed is measured in benchmarks/ instead.
settings.register_profile("dev", deadline=None, max_examples=100)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=200,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

REPO = Path(__file__).resolve().parents[1]


def corpus_root() -> Path | None:
    """The corpus from ``MLPROJECT_CORPUS``; ``None`` when the variable is not set."""
    value = os.environ.get("MLPROJECT_CORPUS")
    return Path(value) if value else None


@pytest.fixture
def corpus() -> Path:
    root = corpus_root()
    if root is None:
        pytest.skip("MLPROJECT_CORPUS is not set (.ci/run sets it to ../shared/corpus)")
    if not (root / "expected").is_dir() or not (root / "projects").is_dir():
        pytest.fail(f"MLPROJECT_CORPUS={root} does not hold the corpus (expected/, projects/)")
    return root
