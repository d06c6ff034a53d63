"""Credentials without the network: where the host is configured, which values are secret, and
what to tell someone whose credentials do not work.

Nothing here imports ``databricks.sdk`` at module level; :func:`configured_host` never does.
"""

from __future__ import annotations

import configparser
import os
import re
import threading
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_mlproject.redact import BEARER, DATABRICKS_PAT, REDACTED

CREDENTIAL_WAYS = """\
Provide Databricks credentials in one of these ways:
  - the environment variables DATABRICKS_HOST (https://<workspace host>) and DATABRICKS_TOKEN
    (a personal access token);
  - --databricks-profile NAME, naming a profile with host and credentials in ~/.databrickscfg
    (or the file DATABRICKS_CONFIG_FILE names);
  - any other method of the Databricks SDK's unified authentication, with DATABRICKS_HOST set:
    OAuth machine-to-machine (DATABRICKS_CLIENT_ID and DATABRICKS_CLIENT_SECRET), an Azure
    service principal (ARM_CLIENT_ID, ARM_CLIENT_SECRET, ARM_TENANT_ID) or managed identity
    (ARM_USE_MSI=true), the Azure CLI (az login), or the Databricks CLI
    (databricks auth login --host <workspace URL>).
See https://docs.databricks.com/en/dev-tools/auth/index.html"""

_OUR_SETTINGS = ("http_timeout_seconds=", "retry_timeout_seconds=")


# -- secrets ------------------------------------------------------------------------------------


class Secrets:
    """Values never to show: credentials from the configuration and the headers sent with them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()

    def add(self, *values: Any) -> None:
        with self._lock:
            for value in values:
                if isinstance(value, str) and len(value.strip()) >= 3:
                    self._values.add(value)
                    self._values.add(value.strip())

    def scrub(self, text: str) -> str:
        with self._lock:
            values = sorted(self._values, key=len, reverse=True)
        for value in values:
            text = text.replace(value, REDACTED)
        text = BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
        return DATABRICKS_PAT.sub(REDACTED, text)


def without_our_settings(text: str) -> str:
    """The SDK's message without the timeouts :mod:`.workspace` sets, which would only puzzle.

    The SDK ends its messages with ``Config: name=value, .... Env: NAME, ...``.
    """

    def keep(match: re.Match[str]) -> str:
        items = [i for i in match.group(1).split(", ") if not i.startswith(_OUR_SETTINGS)]
        return f"Config: {', '.join(items)}" if items else ""

    text = re.sub(r"Config: (.*?)(?=\. Env: |$)", keep, text)
    return re.sub(r"\.\s*\.", ".", text.replace(". . Env", ". Env")).strip()


# -- configuration without the SDK ----------------------------------------------------------------


def _config_file() -> Path:
    return Path(os.environ.get("DATABRICKS_CONFIG_FILE") or "~/.databrickscfg").expanduser()


def profile_values(profile: str | None) -> dict[str, str]:
    """The keys of the profile the SDK would read, or ``{}`` when there is none to read.

    The SDK's choice: the profile given, else ``DATABRICKS_CONFIG_PROFILE``, else
    ``[__settings__] default_profile``, else ``DEFAULT``. Unlike :mod:`configparser`, it does not
    merge ``DEFAULT`` into other profiles, so neither does this.
    """
    parser = configparser.ConfigParser(default_section="\0no default\0", interpolation=None)
    try:
        if not parser.read(_config_file(), encoding="utf-8"):
            return {}
    except (configparser.Error, OSError, UnicodeDecodeError):
        return {}
    name = profile or os.environ.get("DATABRICKS_CONFIG_PROFILE") or None
    if name is None and parser.has_section("__settings__"):
        name = parser.get("__settings__", "default_profile", fallback="").strip() or None
    name = name or "DEFAULT"
    if name == "__settings__" or not parser.has_section(name):
        return {}
    return dict(parser.items(name))


def configured_host(profile: str | None = None) -> str | None:
    """The workspace host the SDK would use, read without network and without the SDK.

    ``DATABRICKS_HOST`` wins (as in the SDK, even over a named profile), else the ``host`` of the
    profile in ``DATABRICKS_CONFIG_FILE`` or ``~/.databrickscfg``. Returned as written (it may
    lack ``https://``), or ``None`` when neither is set.
    """
    host = os.environ.get("DATABRICKS_HOST", "").strip()
    if host:
        return host
    return profile_values(profile).get("host", "").strip() or None


def display_host(host: str | None) -> str:
    """The host for a message: without any ``user:password@``."""
    if not host:
        return "(no host configured)"
    parts = urllib.parse.urlsplit(host if "://" in host else f"https://{host}")
    if parts.username is None and parts.password is None:
        return host
    netloc = parts.hostname or ""
    if parts.port:
        netloc += f":{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# -- what to tell ---------------------------------------------------------------------------------


def ssl_failure(error: BaseException | None) -> bool:
    """Whether a TLS handshake failure is anywhere in ``error``'s chain."""
    import requests

    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, requests.exceptions.SSLError):
            return True
        error = error.__cause__ or error.__context__
    return False


def remember_configured_secrets(
    secrets: Secrets, profile: str | None, options: Mapping[str, Any]
) -> None:
    """Secrets known before the SDK's ``Config`` exists, to scrub its errors if it fails."""
    from databricks.sdk.core import Config

    sensitive = [a for a in Config.attributes() if getattr(a, "sensitive", False)]
    secrets.add(*(options.get(a.name) for a in sensitive))
    for attribute in sensitive:
        for variable in [attribute.env, *getattr(attribute, "env_aliases", [])]:
            if variable:
                secrets.add(os.environ.get(variable))
    in_profile = profile_values(profile)
    secrets.add(*(in_profile.get(a.name) for a in sensitive))


def scheme_hint(written_host: str | None, error: BaseException | None) -> str:
    """A line on the host's scheme when it lacks one, or TLS failed against it; else ``""``."""
    if not written_host:
        return ""
    host = written_host.rstrip("/")
    if "://" not in host:
        return (
            f"The host {host} has no scheme, so it is taken as https://{host}; write "
            f"https://{host} (or http://{host} for a server that speaks plain HTTP).\n"
        )
    if host.startswith("https://") and ssl_failure(error):
        plain = "http://" + host[len("https://") :]
        return f"If the server speaks plain HTTP, write the host as {plain}.\n"
    return ""
