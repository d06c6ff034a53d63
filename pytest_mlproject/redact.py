"""Keep secrets out of everything we show: terminal output, JUnit XML, report sections.

A run's output is the user's code talking, and that code may print its environment. Values of
environment variables whose names say they are secret (``DATABRICKS_TOKEN``,
``ARM_CLIENT_SECRET``, ``*_PASSWORD`` ...), bearer tokens, Databricks personal access
tokens and the ``user:password`` of URLs (``PIP_INDEX_URL=https://user:token@host``) are
replaced with ``***`` wherever we show text that we did not write.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import TextIO

REDACTED = "***"
#: Environment variable names whose values are secrets.
SECRET_NAME = re.compile(
    r"(TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|AUTH)",
    re.IGNORECASE,
)
BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9\-._~+/]+=*")
DATABRICKS_PAT = re.compile(r"\bdapi[0-9a-f]{32}(?:-\d+)?\b")
#: ``scheme://user:password@``: a URL that carries a password (a private index's, say).
URL_PASSWORD = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s:@]*:[^/?#\s@]*@")
#: Shorter values are too likely to match ordinary text ("1", "true").
MIN_SECRET_LENGTH = 6


def secret_values(environ: Mapping[str, str] | None = None) -> set[str]:
    """The values of the secret-named variables in ``environ`` (default: this process's)."""
    env = os.environ if environ is None else environ
    found = {
        value
        for name, value in env.items()
        if SECRET_NAME.search(name) and len(value.strip()) >= MIN_SECRET_LENGTH
    }
    for value in env.values():  # PIP_INDEX_URL=https://user:token@host/...
        for match in URL_PASSWORD.finditer(value):
            userinfo = match.group(0)[len(match["scheme"]) : -1]
            password = userinfo.partition(":")[2]
            found |= {v for v in (userinfo, password) if len(v) >= MIN_SECRET_LENGTH}
    return found


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every secret value, bearer token and Databricks token replaced."""
    values = secret_values() if secrets is None else set(secrets)
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    text = BEARER.sub(lambda match: f"{match.group(1)} {REDACTED}", text)
    text = URL_PASSWORD.sub(lambda match: f"{match['scheme']}{REDACTED}@", text)
    return DATABRICKS_PAT.sub(REDACTED, text)


class ScrubbingWriter:
    """A text stream that writes whole lines through :func:`scrub` (secrets hold no newline,
    so none is ever split); what is left of a line goes out on :meth:`close`."""

    def __init__(self, stream: TextIO, secrets: Iterable[str] | None = None) -> None:
        self.stream = stream
        self.secrets = secret_values() if secrets is None else set(secrets)
        self.pending = ""

    def write(self, text: str) -> int:
        self.pending += text
        lines, newline, self.pending = self.pending.rpartition("\n")
        if newline:
            self.stream.write(scrub(lines + newline, self.secrets))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def close(self) -> None:
        if self.pending:
            self.stream.write(scrub(self.pending, self.secrets))
            self.pending = ""
        self.stream.flush()
