"""Secrets the environment holds never show in what we print, even when a run prints them."""

from __future__ import annotations

import io
import textwrap

import pytest

from pytest_mlproject import redact

TOKEN = "dapi0123456789abcdef0123456789abcdef"
SECRET = "s3cr3t-value-for-arm"


def test_scrub_secret_named_variables_and_token_shapes() -> None:
    env = {"DATABRICKS_TOKEN": "tok-123456", "ARM_CLIENT_SECRET": SECRET, "HOME": "/root", "X": "1"}
    assert redact.secret_values(env) == {"tok-123456", SECRET}
    text = f"tok-123456 {SECRET} /root Authorization: Bearer abc.def {TOKEN}"
    assert redact.scrub(text, redact.secret_values(env)) == (
        "*** *** /root Authorization: Bearer *** ***"
    )


def test_scrubbing_writer_never_splits_a_secret() -> None:
    out = io.StringIO()
    writer = redact.ScrubbingWriter(out, {SECRET})
    for chunk in (f"a {SECRET[:4]}", f"{SECRET[4:]} b\nc {SECRET}", " end"):
        writer.write(chunk)
    writer.close()
    assert out.getvalue() == "a *** b\nc *** end"


@pytest.mark.parametrize("live", [False, True], ids=["captured", "live"])
def test_a_run_that_prints_its_environment_shows_no_secret(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, live: bool
) -> None:
    monkeypatch.setenv("DATABRICKS_TOKEN", TOKEN)
    monkeypatch.setenv("ARM_CLIENT_SECRET", SECRET)
    (pytester.path / "p").mkdir()
    (pytester.path / "p" / "MLproject").write_text(
        textwrap.dedent(
            """\
            entry_points:
              main:
                command: python leak.py
            """
        )
    )
    (pytester.path / "p" / "leak.py").write_text(
        "import os, sys\n"
        "print(os.environ['DATABRICKS_TOKEN'], os.environ['ARM_CLIENT_SECRET'])\n"
        "sys.exit(f\"failing with {os.environ['ARM_CLIENT_SECRET']}\")\n"
    )
    args = ["--mlproject-run", "-p", "no:cacheprovider", "--junitxml=out.xml", "-rA"]
    result = pytester.runpytest(*args, *(["-s"] if live else []))
    result.assert_outcomes(passed=2, failed=1)
    shown = result.stdout.str() + result.stderr.str() + (pytester.path / "out.xml").read_text()
    assert "***" in shown
    assert TOKEN not in shown
    assert SECRET not in shown
