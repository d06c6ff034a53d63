"""Where environment builds install from: uv's own index settings, else pip's.

Teams behind a private feed mostly configure pip (``PIP_INDEX_URL``, ``pip.conf``), which uv
never reads. So a uv build uses, in this order:

1. uv's own settings, when the user gave any: ``UV_INDEX_URL`` / ``UV_DEFAULT_INDEX``,
   ``UV_EXTRA_INDEX_URL`` / ``UV_INDEX``, ``UV_FIND_LINKS``, ``UV_NO_INDEX``, a
   ``UV_CONFIG_FILE``, a user or system ``uv.toml``, or a ``uv.toml`` / ``[tool.uv]`` of the
   project's folder or a parent that sets an index. uv then reads them itself; nothing is added.
2. Otherwise pip's, read as pip reads them: the files (global, then user, then site, then
   ``PIP_CONFIG_FILE``; ``[global]`` then ``[install]``), overridden by ``PIP_*`` variables,
   and handed to uv as flags (``--index-url``, ``--extra-index-url``, ``--find-links``,
   ``--no-index``, ``--allow-insecure-host``, ``--constraint``, ``--keyring-provider``) and
   ``SSL_CERT_FILE``.

A ``virtualenv`` build runs pip itself, which reads its own configuration: nothing is added.

Credentials in index URLs (``https://user:token@host``) are secrets: :meth:`IndexConfig.key`
and :meth:`IndexConfig.describe` hold them as ``***``, and :meth:`IndexConfig.secrets` lists
them for scrubbing whatever a build prints.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

from pytest_mlproject import _fs
from pytest_mlproject.sources import redact

__all__ = [
    "IndexConfig",
    "index_config",
    "pip_config_files",
    "pip_index_config",
    "url_secrets",
]

#: uv's variables that say where packages come from.
UV_INDEX_VARIABLES = (
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_INDEX",
    "UV_FIND_LINKS",
    "UV_NO_INDEX",
)
#: A uv.toml / ``[tool.uv]`` line that sets an index.
_UV_INDEX_SETTING = re.compile(
    r"^\s*(?:(?:index-url|default-index|extra-index-url|index|find-links|no-index)\s*="
    r"|\[\[\s*(?:tool\.uv\.)?index\s*\]\])",
    re.MULTILINE,
)
_USERINFO = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://(?P<userinfo>[^/?#\s@]+)@")
_TRUE = ("1", "true", "yes", "on", "y", "t")
#: Bigger configuration files are not read (a pip.conf is a few lines).
_MAX_BYTES = 1 << 20


@dataclass(frozen=True)
class IndexConfig:
    """Where a build installs from, and which settings said so."""

    #: ``uv``: uv's own settings apply; ``pip``: pip's, handed to uv; ``none``: neither has
    #: any (uv's default, PyPI).
    source: Literal["uv", "pip", "none"]
    #: The files and variables the settings came from, in the order they were read.
    origins: tuple[str, ...] = ()
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()
    no_index: bool = False
    trusted_hosts: tuple[str, ...] = ()
    cert: str | None = None
    constraints: tuple[str, ...] = ()
    #: pip's ``keyring-provider`` (``subprocess`` is the one uv supports too).
    keyring_provider: str | None = None
    #: For ``uv``: the index variables and what the configuration files hold (a digest).
    uv_settings: tuple[tuple[str, str], ...] = field(default=())

    def uv_args(self) -> list[str]:
        """pip's settings as flags of ``uv pip install`` (none when uv's own apply)."""
        if self.source != "pip":
            return []
        args: list[str] = []
        if self.no_index:
            args.append("--no-index")
        if self.index_url is not None:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for link in self.find_links:
            args += ["--find-links", link]
        for host in self.trusted_hosts:
            args += ["--allow-insecure-host", host]
        for constraint in self.constraints:
            args += ["--constraint", constraint]
        if self.keyring_provider in ("subprocess", "disabled"):  # uv knows these two
            args += ["--keyring-provider", self.keyring_provider]
        return args

    def uv_environ(self, environ: Mapping[str, str]) -> dict[str, str]:
        """Variables to add for uv: pip's certificate bundle, unless uv has one already."""
        if self.source == "pip" and self.cert and not environ.get("SSL_CERT_FILE"):
            return {"SSL_CERT_FILE": self.cert}
        return {}

    def key(self) -> dict[str, object]:
        """What decides the installed content, credentials removed (part of the cache key)."""
        return {
            "source": self.source,
            "index_url": redact(self.index_url) if self.index_url else None,
            "extra_index_urls": [redact(url) for url in self.extra_index_urls],
            "find_links": [redact(link) for link in self.find_links],
            "no_index": self.no_index,
            "trusted_hosts": list(self.trusted_hosts),
            "constraints": [_digest_named(path) for path in self.constraints],
            "keyring_provider": self.keyring_provider,
            "uv": [[name, redact(value)] for name, value in self.uv_settings],
        }

    def describe(self) -> str:
        """In words, credentials removed: ``pip's configuration (PIP_INDEX_URL): ...``."""
        if self.source == "none":
            return "no index configuration (the default index, PyPI)"
        where = ", ".join(self.origins)
        if self.source == "uv":
            return f"uv's own configuration ({where})"
        parts = []
        if self.no_index:
            parts.append("no index")
        if self.index_url:
            parts.append(f"index {redact(self.index_url)}")
        parts += [f"extra index {redact(url)}" for url in self.extra_index_urls]
        parts += [f"find-links {redact(link)}" for link in self.find_links]
        return f"pip's configuration ({where}): " + ", ".join(parts or ["no index settings"])

    def secrets(self) -> set[str]:
        """The credentials in the URLs, as written and percent-decoded, to scrub from output."""
        found: set[str] = set()
        for url in (self.index_url or "", *self.extra_index_urls, *self.find_links):
            found |= url_secrets(url)
        for _, value in self.uv_settings:
            found |= url_secrets(value)
        return found


def url_secrets(text: str) -> set[str]:
    """The ``user:password`` parts of every URL in ``text``, and the passwords alone."""
    found: set[str] = set()
    for match in _USERINFO.finditer(text):
        userinfo = match["userinfo"]
        for value in (userinfo, unquote(userinfo)):
            found.add(value)
            _, colon, password = value.partition(":")
            if colon and password:
                found.add(password)
    return found


def _digest_named(path: str) -> str:
    try:
        data = Path(path).read_bytes()[:_MAX_BYTES] if _fs.is_file(Path(path)) else None
    except OSError:
        data = None
    return f"{path}:{'missing' if data is None else hashlib.sha256(data).hexdigest()[:16]}"


# --- which applies ----------------------------------------------------------------------------


def index_config(project_dir: Path, environ: Mapping[str, str] | None = None) -> IndexConfig:
    """The index configuration a uv build of the project in ``project_dir`` uses."""
    env = os.environ if environ is None else environ
    uv = _uv_settings(project_dir, env)
    if uv:
        return IndexConfig("uv", origins=tuple(name for name, _ in uv), uv_settings=tuple(uv))
    return pip_index_config(env)


def _uv_settings(project_dir: Path, env: Mapping[str, str]) -> list[tuple[str, str]]:
    found = [(name, env[name]) for name in UV_INDEX_VARIABLES if env.get(name, "").strip()]
    if env.get("UV_NO_CONFIG", "").strip().lower() in _TRUE:
        return found
    given = env.get("UV_CONFIG_FILE", "").strip()
    if given:
        return [*found, (given, _digest_named(given))]
    for path in _uv_files(project_dir, env):
        try:
            text = path.read_bytes()[:_MAX_BYTES].decode("utf-8", "replace")
        except OSError:
            continue
        if path.name == "pyproject.toml" and "[tool.uv" not in text:
            continue
        if _UV_INDEX_SETTING.search(text):
            found.append((str(path), _digest_named(str(path))))
    return found


def _uv_files(project_dir: Path, env: Mapping[str, str]) -> list[Path]:
    """uv's configuration files: the nearest ``uv.toml`` / ``pyproject.toml`` from the
    project's folder up, the user's and the system's."""
    files: list[Path] = []
    for folder in (project_dir, *project_dir.parents):
        candidates = [folder / "uv.toml", folder / "pyproject.toml"]
        present = [path for path in candidates if _fs.is_file(path)]
        if present:
            files += present
            break
    config_home = env.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
    files.append(Path(config_home) / "uv" / "uv.toml")
    config_dirs = env.get("XDG_CONFIG_DIRS", "").strip() or "/etc/xdg"
    files += [Path(d) / "uv" / "uv.toml" for d in config_dirs.split(os.pathsep) if d]
    files.append(Path("/etc/uv/uv.toml"))
    return [path for path in files if _fs.is_file(path)]


# --- pip's configuration ----------------------------------------------------------------------


def pip_config_files(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The files pip reads, in the order it reads them (later ones win), as ``pip config
    list`` does: global, user (not when ``PIP_CONFIG_FILE`` names a file), site, then
    ``PIP_CONFIG_FILE``; none at all when ``PIP_CONFIG_FILE`` is ``os.devnull``."""
    env = os.environ if environ is None else environ
    given = env.get("PIP_CONFIG_FILE")
    if given == os.devnull:
        return []
    config_dirs = env.get("XDG_CONFIG_DIRS", "").strip() or "/etc/xdg"
    files = [Path(d) / "pip" / "pip.conf" for d in config_dirs.split(os.pathsep) if d]
    files.append(Path("/etc/pip.conf"))
    if not (given and os.path.exists(given)):
        config_home = env.get("XDG_CONFIG_HOME", "").strip() or str(Path.home() / ".config")
        files += [Path.home() / ".pip" / "pip.conf", Path(config_home) / "pip" / "pip.conf"]
    files.append(Path(sys.prefix) / "pip.conf")
    if given:
        files.append(Path(given))
    return files


def pip_index_config(env: Mapping[str, str]) -> IndexConfig:
    """pip's index settings: its files in :func:`pip_config_files` order, then ``PIP_*``."""
    values: dict[str, str] = {}
    origins: list[str] = []
    for path in pip_config_files(env):
        parser = configparser.RawConfigParser()
        try:
            if not _fs.is_file(path) or path.stat().st_size > _MAX_BYTES:
                continue
            parser.read(path, encoding="utf-8")
        except (OSError, configparser.Error, UnicodeDecodeError):
            continue  # pip would say why; the build then shows pip's own defaults
        read = False
        for section in ("global", "install"):  # [install] wins over [global], as in pip
            if parser.has_section(section):
                for name, value in parser.items(section):
                    values[_normal(name)] = value
                    read = True
        if read:
            origins.append(str(path))
    for name, value in env.items():
        if name.startswith("PIP_") and name != "PIP_CONFIG_FILE":
            values[_normal(name[4:])] = value
            if _normal(name[4:]) in _OPTIONS:
                origins.append(name)
    config = IndexConfig(
        "pip",
        origins=tuple(origins),
        index_url=values.get("index-url", "").strip() or None,
        extra_index_urls=_many(values.get("extra-index-url")),
        find_links=_many(values.get("find-links")),
        no_index=values.get("no-index", "").strip().lower() in _TRUE,
        trusted_hosts=_many(values.get("trusted-host")),
        cert=values.get("cert", "").strip() or None,
        constraints=_many(values.get("constraint")),
        keyring_provider=values.get("keyring-provider", "").strip().lower() or None,
    )
    if not any(values.get(name, "").strip() for name in _OPTIONS):
        return IndexConfig("none")
    return config


_OPTIONS = (
    "index-url", "extra-index-url", "find-links", "no-index", "trusted-host", "cert", "constraint",
    "keyring-provider",
)  # fmt: skip


def _normal(name: str) -> str:
    """pip's key names: ``PIP_INDEX_URL``, ``index_url`` and ``--index-url`` are one."""
    return name.strip().lower().replace("_", "-").lstrip("-")


def _many(value: str | None) -> tuple[str, ...]:
    """A list-valued setting: whitespace-separated, over lines too, as pip splits it."""
    return tuple(value.split()) if value else ()
