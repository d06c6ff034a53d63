"""Pack a project folder into a deterministic ``tar.gz``: same content, same bytes, same hash.

What goes in: in a Git work tree, the files Git would keep (tracked, plus untracked ones that
``.gitignore`` does not exclude); elsewhere, every file. What never goes in, whatever Git
says: ``.git``, ``mlruns``, virtual environments, caches, and files that hold credentials
(``.databrickscfg``, ``.env``, ``.netrc``, private keys). Symbolic links are stored as the
file they point to when that file is inside the project, and left out otherwise: the archive
never holds a link, nor anything from outside the project.
"""

from __future__ import annotations

import fnmatch
import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Folders never packed, by name.
EXCLUDED_DIRS = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "mlruns",
        "mlartifacts",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".ipynb_checkpoints",
        "node_modules",
        ".databricks",
    }
)
#: Files never packed: credentials and keys, by name pattern.
SECRET_PATTERNS = (
    ".databrickscfg",
    ".env",
    ".env.*",
    ".envrc",
    ".netrc",
    ".pypirc",
    ".git-credentials",
    ".npmrc",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa*",
    "id_dsa*",
    "id_ecdsa*",
    "id_ed25519*",
    "credentials.json",
)
_EXCLUDED_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class Archive:
    data: bytes
    sha256: str
    files: tuple[str, ...]
    #: Files left out, with why, so a user can tell what did not travel.
    skipped: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return f"{self.sha256}.tar.gz"


def content_name(data: bytes) -> str:
    """A short name for content: the first 16 hex digits of its sha256."""
    return hashlib.sha256(data).hexdigest()[:16]


def is_secret(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in SECRET_PATTERNS)


def pack(directory: Path) -> Archive:
    """Pack ``directory`` (the folder holding the MLproject file)."""
    root = directory.resolve()
    skipped: list[tuple[str, str]] = []
    members: list[tuple[str, Path, int]] = []
    for relative in sorted(set(_candidates(root, skipped))):
        reason = excluded(relative)
        if reason:
            skipped.append((relative, reason))
            continue
        path = root / relative
        try:
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                target = path.resolve()
                if not _inside(target, root) or not target.is_file():
                    skipped.append((relative, "symbolic link to something outside the project"))
                    continue
                # A link is packed as its target's content: `notes.txt -> .env` must not
                # carry what `.env` itself never would.
                why = excluded(target.relative_to(root).as_posix())
                if why is not None:
                    skipped.append((relative, f"symbolic link to a file left out ({why})"))
                    continue
                info = target.stat()
            elif not stat.S_ISREG(info.st_mode):
                continue
        except OSError as exc:
            skipped.append((relative, f"cannot read it ({exc.strerror})"))
            continue
        members.append((relative, path, 0o755 if info.st_mode & 0o111 else 0o644))

    buffer = io.BytesIO()
    # mtime=0 and no file name in the gzip header: the bytes depend on the content alone.
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0, filename="") as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for relative, path, mode in members:
            data = path.read_bytes()
            entry = tarfile.TarInfo(relative)
            entry.size, entry.mode, entry.mtime = len(data), mode, 0
            entry.uid = entry.gid = 0
            entry.uname = entry.gname = ""
            tar.addfile(entry, io.BytesIO(data))
    data = buffer.getvalue()
    return Archive(
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        files=tuple(relative for relative, _, _ in members),
        skipped=tuple(skipped),
    )


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def excluded(relative: str) -> str | None:
    """Why the project file at ``relative`` (a POSIX path) is never packed, or ``None``."""
    parts = relative.split("/")
    for part in parts[:-1]:
        if part in EXCLUDED_DIRS:
            return f"inside {part}/"
    name = parts[-1]
    if is_secret(name):
        return "may hold credentials"
    if name.endswith(_EXCLUDED_SUFFIXES):
        return "compiled Python"
    return None


def _candidates(root: Path, skipped: list[tuple[str, str]]) -> Iterator[str]:
    listed = _git_files(root)
    if listed is not None:
        yield from listed
        return
    yield from _walk(root, skipped)


def _walk(root: Path, skipped: list[tuple[str, str]]) -> Iterator[str]:
    for current, dirs, files in os.walk(root, followlinks=False):
        here = Path(current)
        kept = []
        for name in sorted(dirs):
            path = here / name
            relative = path.relative_to(root).as_posix()
            if name in EXCLUDED_DIRS or (path / "pyvenv.cfg").exists():
                skipped.append((relative + "/", "not project content"))
            elif path.is_symlink():
                skipped.append((relative + "/", "symbolic link to a folder"))
            else:
                kept.append(name)
        dirs[:] = kept
        for name in files:
            yield (here / name).relative_to(root).as_posix()


def _git_files(root: Path) -> list[str] | None:
    """Files under ``root`` that Git keeps, or ``None`` outside a Git work tree."""
    try:
        import git
    except ImportError:  # GitPython needs the git executable; without it, walk the folder
        return None
    try:
        repo = git.Repo(root, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    with repo:
        if repo.bare or repo.working_tree_dir is None:
            return None
        top = Path(repo.working_tree_dir).resolve()
        try:
            output = repo.git.ls_files(
                "-z", "--cached", "--others", "--exclude-standard", "--", str(root)
            )
        except git.GitCommandError:
            return None
    prefix = root.relative_to(top).as_posix() if root != top else ""
    files = []
    for name in output.split("\0"):
        if not name:
            continue
        relative = name[len(prefix) + 1 :] if prefix else name
        if (root / relative).exists() or (root / relative).is_symlink():
            files.append(relative)
    return files
