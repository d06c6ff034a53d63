"""Builds behind a private index: uv's settings else pip's (variables, pip.conf), handed to uv;
``--mlproject-env-manager virtualenv``; credentials shown nowhere.

The index here is a PEP 503 folder served by ``http.server`` on 127.0.0.1 that wants basic
auth, and the one package the projects need lives only there. Nothing else is reachable: uv's
own configuration is switched off (``UV_NO_CONFIG``), pip reads no user file, and the only
index anything is given is the local one (or none, with ``--no-index``).
"""

from __future__ import annotations

import base64
import html
import os
import platform
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import helpers
import pytest

from pytest_mlproject import indexes, redact

USER = "builder"
PASSWORD = "s3cr3t-Token-4711"  # looked for in all output

PROJECT = """\
name: private
python_env: python_env.yaml
entry_points:
  main:
    command: python -c 'import private_pkg; print("got", private_pkg.__version__)'
"""


class _Index(SimpleHTTPRequestHandler):
    """Files of a folder, to requests that carry the right basic-auth header only."""

    expected = ""
    seen: list[str]

    def do_GET(self) -> None:
        if self.headers.get("Authorization") != self.expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="private"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.seen.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def private_index(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """``(url without credentials, paths served)``: ``private-pkg`` 1.0 behind basic auth."""
    root = tmp_path / "index"
    files = root / "files"
    files.mkdir(parents=True)
    made = helpers.wheel(
        files, "private-pkg", "1.0", {"private_pkg/__init__.py": "__version__ = '1.0'\n"}
    )
    page = root / "simple" / "private-pkg"
    page.mkdir(parents=True)
    link = f"../../files/{made.name}"
    (page / "index.html").write_text(
        f'<!DOCTYPE html><html><body><a href="{html.escape(link)}">{made.name}</a></body></html>\n'
    )
    (root / "simple" / "index.html").write_text('<a href="private-pkg/">private-pkg</a>\n')
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    seen: list[str] = []
    handler = type("Handler", (_Index,), {"expected": f"Basic {token}", "seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/simple", seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def pip_only(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No uv configuration (the hermetic uv.toml of conftest is off), no pip variable or file
    of this machine's but ``/etc/pip.conf``; a fresh uv and pip cache so the index is asked."""
    monkeypatch.delenv("UV_CONFIG_FILE")
    monkeypatch.setenv("UV_NO_CONFIG", "1")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_CACHE_DIR", str(tmp_path / "pip-cache"))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(tmp_path / "no-system-config"))
    return tmp_path


def with_credentials(url: str, password: str = PASSWORD) -> str:
    return url.replace("http://", f"http://{USER}:{password}@")


def write_project(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "MLproject").write_text(PROJECT)
    (folder / "python_env.yaml").write_text(
        f'python: "{platform.python_version()}"\ndependencies:\n  - private-pkg==1.0\n'
    )
    return folder


def run_session(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, str, Path]:
    """A session that runs the project; its whole output, JUnit file included, as one text."""
    if not (pytester.path / "p").exists():
        write_project(pytester.path / "p")
    env_dir = pytester.path / "envs"
    junit = pytester.path / "junit.xml"
    result = pytester.runpytest(
        "--mlproject-run",
        "--mlproject-env-dir",
        str(env_dir),
        f"--junitxml={junit}",
        "-o",
        "junit_logging=all",
        "-p",
        "no:randomly",
        *args,
    )
    shown = result.stdout.str() + result.stderr.str() + junit.read_text()
    return result, shown, env_dir


def assert_no_secret_in(shown: str, env_dir: Path) -> None:
    assert PASSWORD not in shown
    for path in env_dir.rglob("*"):
        assert PASSWORD not in path.name
    for record in env_dir.glob("*/pytest-mlproject-env.json"):
        assert PASSWORD not in record.read_text()
        assert "***@127.0.0.1" in record.read_text() or "find-links" in record.read_text()


# --- builds from pip's configuration ------------------------------------------------------------


def test_uv_builds_from_an_authenticated_index_given_only_as_PIP_INDEX_URL(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    pip_only: Path,
    private_index: tuple[str, list[str]],
) -> None:
    url, seen = private_index
    monkeypatch.setenv("PIP_INDEX_URL", with_credentials(url))
    result, shown, env_dir = run_session(pytester)
    result.assert_outcomes(passed=3)
    assert "got 1.0" in shown
    assert any(path.endswith(".whl") for path in seen)
    assert_no_secret_in(shown, env_dir)


def test_uv_builds_from_an_index_in_pip_conf_named_by_PIP_CONFIG_FILE(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    pip_only: Path,
    private_index: tuple[str, list[str]],
) -> None:
    url, seen = private_index
    conf = pip_only / "pip.conf"
    conf.write_text(
        # [install] wins over [global], as in pip (port 9 of 127.0.0.1 would refuse uv).
        "[global]\nindex-url = http://127.0.0.1:9/simple\n"
        f"[install]\nindex-url = {with_credentials(url)}\n"
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    result, shown, env_dir = run_session(pytester)
    result.assert_outcomes(passed=3)
    assert any(path.endswith(".whl") for path in seen)
    assert_no_secret_in(shown, env_dir)


def test_a_wrong_password_fails_the_build_and_is_not_shown_either(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    pip_only: Path,
    private_index: tuple[str, list[str]],
) -> None:
    url, _ = private_index
    wrong = "wrong-Password-0815"
    monkeypatch.setenv("PIP_INDEX_URL", with_credentials(url, wrong))
    result, shown, env_dir = run_session(pytester)
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*python_env.yaml: uv failed installing private-pkg==1.0 (exit code *",
            "uv reports: Because private-pkg was not found in the package registry*",
            "packages from: pip's configuration (PIP_INDEX_URL): index "
            "http://***@127.0.0.1:*/simple",
        ]
    )
    assert wrong not in shown
    assert not [p for p in env_dir.iterdir() if p.is_dir()]


def test_a_find_links_folder_given_only_to_pip(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, pip_only: Path
) -> None:
    links = pip_only / "wheels"
    links.mkdir()
    helpers.wheel(links, "private-pkg", "1.0", {"private_pkg/__init__.py": "__version__ = '1.0'\n"})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    result, shown, _ = run_session(pytester)
    result.assert_outcomes(passed=3)
    assert "got 1.0" in shown


def test_virtualenv_builds_with_pip_from_the_authenticated_index_in_pip_conf(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    pip_only: Path,
    private_index: tuple[str, list[str]],
) -> None:
    url, seen = private_index
    conf = pip_only / "pip.conf"
    conf.write_text(f"[global]\nindex-url = {with_credentials(url)}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    result, shown, env_dir = run_session(pytester, "--mlproject-env-manager", "virtualenv")
    result.assert_outcomes(passed=3)
    assert "got 1.0" in shown
    assert any(path.endswith(".whl") for path in seen)
    [built] = [p for p in env_dir.iterdir() if p.is_dir()]
    assert f"the virtualenv environment {built} (Python " in shown
    assert_no_secret_in(shown, env_dir)
    # Reused by the next session, as uv's are.
    seen.clear()
    again, shown, _ = run_session(pytester, "--mlproject-env-manager", "virtualenv")
    again.assert_outcomes(passed=3)
    assert "from python_env.yaml, reused)" in shown
    assert seen == []


# --- which configuration applies ----------------------------------------------------------------


def test_pip_files_are_read_in_pips_order_and_variables_win(
    monkeypatch: pytest.MonkeyPatch, pip_only: Path
) -> None:
    system = pip_only / "no-system-config" / "pip"
    system.mkdir(parents=True)
    (system / "pip.conf").write_text(
        "[global]\nindex-url = https://system.example/simple\ntrusted-host = system.example\n"
    )
    given = pip_only / "given.conf"
    given.write_text(
        "[global]\nextra-index-url =\n    https://a.example/simple\n    https://b.example/simple\n"
        "[install]\nfind-links = /wheels /more-wheels\nconstraint = /c.txt\ncert = /etc/ca.pem\n"
        "keyring_provider = subprocess\n"
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(given))
    files = indexes.pip_config_files()
    assert files.index(system / "pip.conf") < files.index(given)
    assert Path.home() / ".pip" / "pip.conf" not in files  # no user file with PIP_CONFIG_FILE
    config = indexes.index_config(pip_only)
    assert config.source == "pip"
    assert config.uv_args() == [
        "--index-url", "https://system.example/simple",
        "--extra-index-url", "https://a.example/simple",
        "--extra-index-url", "https://b.example/simple",
        "--find-links", "/wheels", "--find-links", "/more-wheels",
        "--allow-insecure-host", "system.example",
        "--constraint", "/c.txt",
        "--keyring-provider", "subprocess",
    ]  # fmt: skip
    assert config.uv_environ({}) == {"SSL_CERT_FILE": "/etc/ca.pem"}
    monkeypatch.setenv("PIP_INDEX_URL", "https://me:tok3n-abcdef@env.example/simple")
    config = indexes.index_config(pip_only)
    assert config.index_url == "https://me:tok3n-abcdef@env.example/simple"
    assert "tok3n-abcdef" not in repr(config.key()) + config.describe()
    assert "https://***@env.example/simple" in config.describe()
    assert config.secrets() >= {"me:tok3n-abcdef", "tok3n-abcdef"}


def test_uvs_own_settings_win_and_pip_is_then_left_alone(
    monkeypatch: pytest.MonkeyPatch, pip_only: Path
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://pip.example/simple")
    project = pip_only / "proj"
    project.mkdir()
    assert indexes.index_config(project).source == "pip"
    monkeypatch.setenv("UV_INDEX_URL", "https://uv.example/simple")
    uv = indexes.index_config(project)
    assert (uv.source, uv.uv_args(), uv.origins) == ("uv", [], ("UV_INDEX_URL",))
    monkeypatch.delenv("UV_INDEX_URL")
    # A project's [tool.uv] counts when it sets an index, and only with uv's files read.
    (project / "pyproject.toml").write_text("[tool.uv]\nindex-url = 'https://uv.example'\n")
    assert indexes.index_config(project).source == "pip"  # UV_NO_CONFIG
    monkeypatch.delenv("UV_NO_CONFIG")
    assert indexes.index_config(project).origins == (str(project / "pyproject.toml"),)
    (project / "pyproject.toml").write_text("[tool.uv]\ncompile-bytecode = true\n")
    assert indexes.index_config(project).source == "pip"
    monkeypatch.setenv("UV_CONFIG_FILE", str(pip_only / "uv.toml"))
    assert indexes.index_config(project).source == "uv"
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_INDEX_URL")
    monkeypatch.delenv("UV_CONFIG_FILE")
    assert indexes.index_config(project).source == "none"


def test_url_passwords_in_variables_are_scrubbed_from_what_a_run_prints() -> None:
    env = {"PIP_EXTRA_INDEX_URL": "https://me:tok3n-abcdef@feed.example/simple"}
    secrets = redact.secret_values(env)
    assert "tok3n-abcdef" in secrets
    assert redact.scrub("token tok3n-abcdef alone", secrets) == "token *** alone"
    assert (
        redact.scrub("https://u:pw@h/x and git@github.com:o/r")
        == "https://***@h/x and git@github.com:o/r"
    )


def test_virtualenv_never_installs_a_missing_python() -> None:
    from pytest_mlproject import envs

    with pytest.raises(envs.PythonNotFoundError) as caught:
        envs.find_interpreter("3.2", manager="virtualenv")
    assert str(caught.value) == (
        "Python 3.2 was not found on this machine (no python3.2 on PATH), and the virtualenv "
        "env manager never installs one (MLflow's installs it with pyenv). Ways out: install "
        "Python 3.2 (any patch level) and put python3.2 on PATH; or run with the current "
        "interpreter: --mlproject-env-manager local"
    )
