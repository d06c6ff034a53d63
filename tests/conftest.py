"""Shared test set-up: the Hypothesis profiles and the path to the conformance corpus."""

from __future__ import annotations

import ensurepip
import importlib
import os
import pkgutil
import shutil
import signal
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import helpers
import pytest
from hypothesis import HealthCheck, settings

import pytest_mlproject
from pytest_mlproject.testing import FakeWorkspace

# pytester's in-process runs put sys.modules back as they found it. A module first imported
# inside such a run is dropped afterwards while the package keeps the old one as an attribute,
# so the next run would mix two copies of a class. Importing everything once, here, keeps one.
for _module in pkgutil.walk_packages(pytest_mlproject.__path__, "pytest_mlproject."):
    importlib.import_module(_module.name)

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

# A shell without job control starts background commands (`.ci/run &`) with SIGINT ignored,
# and every process started from them inherits that: the tests that interrupt a session, a
# command or the fake workspace would then wait for an interrupt that never comes. Python's
# own handler again, here, before the xdist workers and nested sessions are started.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Variables a CI service or a developer's shell may set that change what a nested session
# prints or where it connects: GitHub annotations, and real Databricks credentials (the SDK
# also reads Azure's ARM_* variables, GOOGLE_CREDENTIALS, and ~/.databrickscfg unless told
# another file). Tests that need one set it themselves. (``CI`` is kept on purpose: pytest
# then prints whole messages in the short summary, and the tests must hold either way.)
_HOST_VARIABLES = (
    "GITHUB_ACTIONS",
    "GITHUB_WORKSPACE",
    "GITHUB_STEP_SUMMARY",
    "GOOGLE_CREDENTIALS",
)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of wheels that uv installs from in every test (no index): ``demo_pkg`` 1.0 and
    2.0 (``demo_pkg.__version__``, and a ``demo`` console script), a stand-in ``texttable``
    1.7.0 for fixtures/tutorial, and pip and setuptools from ensurepip's own wheels."""
    folder = tmp_path_factory.mktemp("wheelhouse")
    for version in ("1.0", "2.0"):
        source = f"__version__ = {version!r}\n\ndef main():\n    print('demo', __version__)\n"
        made = helpers.wheel(folder, "demo-pkg", version, {"demo_pkg/__init__.py": source})
        with zipfile.ZipFile(made, "a") as archive:
            archive.writestr(
                f"demo_pkg-{version}.dist-info/entry_points.txt",
                "[console_scripts]\ndemo = demo_pkg:main\n",
            )
    # Stand-in for the real package (this is no index): the same name, version and calls.
    helpers.wheel(
        folder,
        "texttable",
        "1.7.0",
        {
            "texttable.py": "class Texttable:\n"
            "    def __init__(self):\n"
            "        self.rows = []\n"
            "    def header(self, row):\n"
            "        self.rows.insert(0, list(row))\n"
            "    def add_row(self, row):\n"
            "        self.rows.append(list(row))\n"
            "    def draw(self):\n"
            "        return '\\n'.join(' | '.join(map(str, r)) for r in self.rows)\n"
        },
    )
    bundled = Path(ensurepip.__file__).parent / "_bundled"
    for found in bundled.glob("*.whl"):
        shutil.copy(found, folder)
    return folder


@pytest.fixture(autouse=True)
def _hermetic_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path
) -> None:
    for name in list(os.environ):
        if name in _HOST_VARIABLES or name.startswith(("DATABRICKS_", "ARM_", "UV_")):
            monkeypatch.delenv(name)
    base = tmp_path_factory.getbasetemp()
    no_profiles = base / "no-databrickscfg"
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(no_profiles))
    # Environments are built in this session's temporary folder, by uv, from the wheelhouse
    # only: no index, no configuration of this machine's, no Python downloads.
    uv_config = base / "uv.toml"
    if not uv_config.exists():
        uv_config.write_text(f"no-index = true\nfind-links = [{str(wheelhouse)!r}]\n")
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(base / "config"))
    monkeypatch.setenv("UV_CONFIG_FILE", str(uv_config))
    monkeypatch.setenv("UV_CACHE_DIR", str(base / "uv-cache"))
    monkeypatch.setenv("UV_PYTHON_INSTALL_DIR", str(base / "no-managed-pythons"))


@pytest.fixture
def corpus() -> Path:
    """The conformance corpus named by ``MLPROJECT_CORPUS``: skip without it, fail if wrong."""
    value = os.environ.get("MLPROJECT_CORPUS")
    if not value:
        pytest.skip("MLPROJECT_CORPUS is not set (.ci/run sets it to ../shared/corpus)")
    root = Path(value)
    if not (root / "expected").is_dir() or not (root / "projects").is_dir():
        pytest.fail(f"MLPROJECT_CORPUS={root} does not hold the corpus (expected/, projects/)")
    return root


@pytest.fixture
def connect_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], FakeWorkspace]]:
    """``connect_fake(token)``: a started fake workspace that sessions in this test reach
    through the environment (``DATABRICKS_HOST`` / ``DATABRICKS_TOKEN``, as in CI), polled at
    most every 0.3 s; stopped afterwards. Profiles and other credentials are already out of
    the way (``_hermetic_environment``)."""
    started: list[FakeWorkspace] = []

    def connect(token: str) -> FakeWorkspace:
        fake = FakeWorkspace(token=token).start()
        started.append(fake)
        monkeypatch.setenv("DATABRICKS_HOST", fake.host)
        monkeypatch.setenv("DATABRICKS_TOKEN", token)
        monkeypatch.setenv("PYTEST_MLPROJECT_MAX_POLL_INTERVAL", "0.3")
        return fake

    yield connect
    for fake in started:
        fake.stop()
