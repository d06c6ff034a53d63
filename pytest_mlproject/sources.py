"""Where projects come from: a local folder, or a Git repository fetched into a cache.

A project URI is what ``mlflow run`` takes, plus an optional version after ``@`` in the
fragment::

    path/to/folder                           a folder, used in place
    https://host/org/repo#sub/dir            a Git repository and the project's subfolder
    git@host:org/repo.git#sub/dir@v1.2       ... at tag, branch or commit v1.2
    file:///srv/repo#@main                   ... at the repository's root, branch main

As in MLflow, ``#`` starts the subfolder, in which ``.`` is refused, and a URI that names an
existing local path is a folder, used where it is; a version is only allowed for a folder
that is a Git repository, whose version is then checked out into the cache (MLflow checks it
out in the folder itself, which we never do). The version given after ``@`` wins over the
session-wide ``--mlproject-version``.

Git repositories are fetched into ``CACHE/mlproject-git/<hash of the URL>/`` (a bare
repository), under a lock file, so pytest-xdist workers share one clone and later sessions
only fetch. Each commit gets its own worktree, ``trees/<commit>``, reset to a clean checkout
once per session. The URL is given to Git through the environment, never on a command line
or in a file, and every message has the credentials of URLs replaced by ``***``.

GitPython is imported inside the functions that need it: importing it runs ``git``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pytest_mlproject.problems import MLprojectError

__all__ = [
    "Checkout",
    "ProjectURI",
    "Source",
    "SourceError",
    "fetch_git",
    "git_commit",
    "parse_uri",
    "redact",
    "resolve_source",
]

CACHE_FOLDER = "mlproject-git"
DEFAULT_GIT_TIMEOUT = 600.0
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@")
_HEX = re.compile(r"[0-9a-fA-F]{4,64}")


class SourceError(MLprojectError):
    """A project URI or version that cannot be turned into a project folder."""


def redact(text: str) -> str:
    """``text`` with the user and password of every ``scheme://user:password@`` removed."""
    return _USERINFO.sub(lambda match: f"{match['scheme']}***@", text)


@dataclass(frozen=True)
class ProjectURI:
    """A parsed project URI: where, which subfolder, which version (``None``: the default)."""

    location: str
    subdirectory: str = ""
    version: str | None = None

    def __str__(self) -> str:
        text = self.location
        if self.subdirectory or self.version:
            text += "#" + self.subdirectory
        if self.version:
            text += "@" + self.version
        return redact(text)


def parse_uri(uri: str) -> ProjectURI:
    """Split ``LOCATION[#SUBDIR][@VERSION]``; the ``@VERSION`` part is read only after a ``#``."""
    text = uri.strip("'\"")  # as MLflow does
    location, _, fragment = text.partition("#")
    subdirectory, at, version = fragment.partition("@")
    if at and not version:
        raise SourceError(
            f"project URI {redact(uri)} ends with '@' but names no version; write "
            "URI#SUBDIR@VERSION, or leave out the '@'"
        )
    if subdirectory and "." in subdirectory:
        raise SourceError("'.' is not allowed in project subdirectory paths.")
    if subdirectory.startswith("/"):
        raise SourceError(
            f"project subdirectory {subdirectory!r} is absolute; give it relative to the "
            "repository's root, e.g. #sub/dir"
        )
    return ProjectURI(location, subdirectory, version or None)


@dataclass(frozen=True)
class Checkout:
    """A commit of a Git repository, checked out in the cache."""

    root: Path
    commit: str
    #: The repository was cloned by this call (else an earlier clone was reused).
    cloned: bool
    #: This call fetched from the remote (else this session had fetched already).
    fetched: bool


@dataclass(frozen=True)
class Source:
    """A project folder ready to read, and where it came from."""

    #: The URI as given, without credentials.
    uri: str
    #: The project folder: the checkout or folder, plus the URI's subfolder.
    directory: Path
    kind: Literal["folder", "git"]
    version: str | None
    #: The commit of the project's files, or ``None`` outside Git.
    commit: str | None


def resolve_source(
    uri: str,
    version: str | None = None,
    *,
    cache_dir: Path | str,
    session: str | None = None,
    timeout: float | None = DEFAULT_GIT_TIMEOUT,
) -> Source:
    """The project folder for ``uri``, fetching and checking out Git repositories.

    ``version`` is the default version (``--mlproject-version``); a version in the URI wins.
    ``session`` names the test session: callers that share one (pytest-xdist workers) fetch
    once between them; ``None`` fetches on every call. Raises :class:`SourceError`.
    """
    parsed = parse_uri(uri)
    version = parsed.version or version
    shown = redact(uri.strip("'\""))
    if parsed.location.lower().endswith(".zip"):
        raise SourceError(
            f"project URI {shown} is a zip archive, which pytest-mlproject does not fetch; "
            "unpack it into a folder, or give the Git repository's URI"
        )
    folder = _local_folder(parsed.location)
    if folder is not None and version is None:
        if _is_bare_repository(folder):
            # MLflow takes it as a folder too, and then finds no project in it.
            raise SourceError(
                f"project URI {shown} names a bare Git repository, which has no working "
                "tree to take the project from: give the version to check out after `@` in "
                "the URI's fragment (`URI#@main`, `URI#sub/dir@main`) or with "
                "--mlproject-version"
            )
        directory = _subdirectory(folder, parsed.subdirectory)
        return Source(shown, directory, "folder", None, git_commit(directory))
    if folder is not None:
        if not _is_git_repository(folder):
            raise SourceError("Setting a version is only supported for Git project URIs")
        url = str(folder)
    else:
        url = parsed.location
    checkout = fetch_git(url, version, cache_dir, session=session, timeout=timeout)
    directory = _subdirectory(checkout.root, parsed.subdirectory)
    return Source(shown, directory, "git", version, checkout.commit)


def _local_folder(location: str) -> Path | None:
    """The local path ``location`` names, if it exists: MLflow's test for a local URI."""
    path = location
    if re.match(r"file://.", location):
        from urllib.parse import urlparse

        parsed = urlparse(location)
        path = os.path.join(parsed.netloc, parsed.path)  # an absolute path drops the host
    resolved = Path(path).resolve()
    return resolved if resolved.exists() else None


def _subdirectory(root: Path, subdirectory: str) -> Path:
    directory = Path(os.path.abspath(os.path.join(root, subdirectory)))
    if not directory.exists():
        raise SourceError(f"Could not find subdirectory {subdirectory} of {root}")
    # '.' is refused in the fragment, but a link in the repository can still lead out of
    # it; the project would then be read, and packed for Databricks, from anywhere.
    real_root, real = root.resolve(), directory.resolve()
    if real != real_root and real_root not in real.parents:
        raise SourceError(
            f"project subdirectory {subdirectory} of {root} is a symbolic link that leads "
            "outside the repository, which pytest-mlproject does not follow: point the URI "
            "at a folder inside it"
        )
    return directory


def _is_bare_repository(folder: Path) -> bool:
    """The folder is a bare Git repository (what `git clone --bare` makes), told without Git."""
    return (
        (folder / "HEAD").is_file()
        and (folder / "objects").is_dir()
        and (folder / "refs").is_dir()
        and not (folder / ".git").exists()
    )


def _is_git_repository(folder: Path) -> bool:
    """The folder is the top of a Git repository with at least one branch, as MLflow wants."""
    git = _import_git()
    try:
        with git.Repo(folder) as repo:
            return len(repo.branches) > 0
    except (git.exc.InvalidGitRepositoryError, git.exc.NoSuchPathError):
        return False


def git_commit(path: Path | str) -> str | None:
    """The commit checked out in the Git repository holding ``path`` (searching parent
    folders), or ``None``: not in a repository, ignored by it, no commit yet, or no ``git``.
    """
    try:
        git = _import_git()
    except SourceError:
        return None
    target = os.path.abspath(path)
    if os.path.isfile(target):
        target = os.path.dirname(target)
    try:
        with git.Repo(target, search_parent_directories=True) as repo:
            if repo.ignored(target):
                return None  # the files are not part of the commit (MLflow says None too)
            return str(repo.head.commit.hexsha)
    except (git.exc.GitError, ValueError, OSError):
        return None


def _import_git() -> Any:
    try:
        import git
    except ImportError as exc:  # GitPython raises ImportError when `git` cannot be run
        raise SourceError(
            f"Git is needed for Git project URIs but cannot be used: {exc}; install git "
            "or set GIT_PYTHON_GIT_EXECUTABLE"
        ) from None
    return git


def fetch_git(
    url: str,
    version: str | None,
    cache_dir: Path | str,
    *,
    session: str | None = None,
    timeout: float | None = DEFAULT_GIT_TIMEOUT,
) -> Checkout:
    """Fetch ``url`` into the cache and check out ``version`` (default: the remote's HEAD).

    Concurrent callers (processes or threads) with the same cache directory take turns on a
    lock file; the first of a ``session`` fetches, the others reuse what it fetched.
    """
    git = _import_git()
    shown = redact(url)
    if version is not None and (not version.strip() or version.startswith("-")):
        raise SourceError(
            f"Unable to checkout version '{version}' of git repo {shown}: not a branch, tag "
            "or commit name"
        )
    base = Path(cache_dir) / CACHE_FOLDER / hashlib.sha256(shown.encode()).hexdigest()[:24]
    base.mkdir(parents=True, exist_ok=True)
    with _locked(base / "lock"):
        state = _State.load(base / "state.json")
        if session is None or state.session != session:
            state = _State(session, {}, [])
        repo_dir = base / "repo.git"
        cloned = not (repo_dir / "HEAD").is_file()
        if cloned:
            shutil.rmtree(repo_dir, ignore_errors=True)
            git.Repo.init(repo_dir, bare=True, mkdir=True).close()
        remote = _Remote(url, timeout)
        with git.Repo(repo_dir) as repo:
            key = version or ""
            commit = state.commits.get(key)
            fetched = False
            if commit is None and state.commits:
                # This session fetched already: use what it saw, as every worker must.
                commit = _lookup(repo, version)
            if commit is None:
                remote.run(repo.git.fetch, *_FETCH_ARGS)
                fetched = True
                commit = _find_commit(repo, version, remote)
            state.commits[key] = commit
            tree = base / "trees" / commit
            if commit not in state.trees:
                _prepare_tree(repo, tree, commit, remote)
                state.trees.append(commit)
        state.save(base / "state.json")
    return Checkout(tree, commit, cloned, fetched)


# Every branch and tag, plus the remote's HEAD (its default branch) in a ref of our own.
_FETCH_ARGS = (
    "--prune",
    "--force",
    "--no-write-fetch-head",
    "origin",
    "+refs/heads/*:refs/remotes/origin/*",
    "+refs/tags/*:refs/tags/*",
    "+HEAD:refs/mlproject/HEAD",
)


class _Remote:
    """Runs Git commands that reach ``url``, named ``origin`` through config variables in the
    environment (never on a command line or in a file), with no prompts (they would hang a
    CI job) and with credentials kept out of every message."""

    def __init__(self, url: str, timeout: float | None) -> None:
        self.shown = redact(url)
        self.timeout = timeout
        self.env = {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "remote.origin.url",
            "GIT_CONFIG_VALUE_0": url,
            "GIT_TERMINAL_PROMPT": "0",
        }
        if "GIT_SSH_COMMAND" not in os.environ and "GIT_SSH" not in os.environ:
            self.env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"

    def run(self, method: Any, *args: str) -> str:
        git = _import_git()
        try:
            return str(method(*args, env=dict(self.env), kill_after_timeout=self.timeout))
        except git.exc.GitCommandError as exc:
            detail = _stderr(exc) or f"exit status {exc.status}"
            raise SourceError(f"Cannot fetch git repo {self.shown}: {detail}") from None


def _stderr(exc: Any) -> str:
    """Git's own message from a GitPython error (which wraps it in ``stderr: '...'``)."""
    text = str(exc.stderr or "").strip()
    match = re.fullmatch(r"stderr: '(.*)'", text, re.DOTALL)
    return redact((match[1] if match else text).strip())


def _find_commit(repo: Any, version: str | None, remote: _Remote) -> str:
    commit = _lookup(repo, version)
    if commit is not None:
        return commit
    if version is not None and _HEX.fullmatch(version):
        # A commit no branch or tag reaches: ask for it by name, as MLflow does.
        with contextlib.suppress(SourceError):
            remote.run(repo.git.fetch, "origin", version)
            commit = _rev_parse(repo, version)
            if commit is not None:
                return commit
    if version is None:
        raise SourceError(f"git repo {remote.shown} has no default branch (HEAD) to check out")
    raise SourceError(
        f"Unable to checkout version '{version}' of git repo {remote.shown} - please ensure "
        "that the version exists in the repo (a branch, a tag or a commit)"
    )


def _lookup(repo: Any, version: str | None) -> str | None:
    """The commit ``version`` names among what was fetched: branch, then tag, then commit."""
    if version is None:
        return _rev_parse(repo, "refs/mlproject/HEAD")
    for candidate in (f"refs/remotes/origin/{version}", f"refs/tags/{version}", version):
        commit = _rev_parse(repo, candidate)
        if commit is not None:
            return commit
    return None


def _rev_parse(repo: Any, name: str) -> str | None:
    git = _import_git()
    try:
        return str(repo.git.rev_parse("--verify", "--quiet", f"{name}^{{commit}}")).strip()
    except git.exc.GitCommandError:
        return None


def _prepare_tree(repo: Any, tree: Path, commit: str, remote: _Remote) -> None:
    """A clean worktree of ``commit`` at ``tree``: reuse and reset one left by an earlier
    session, or make it afresh."""
    git = _import_git()
    if tree.is_dir():
        try:
            with git.Repo(tree) as worktree:
                worktree.git.reset("--hard", "--quiet", commit)
                worktree.git.clean("-ffdxq")
                if worktree.head.commit.hexsha == commit:
                    _update_submodules(worktree, tree, remote)
                    return
        except (git.exc.GitError, ValueError, OSError):
            pass  # broken (interrupted, or the cache moved): make it again
        shutil.rmtree(tree, ignore_errors=True)
    repo.git.worktree("prune")
    tree.parent.mkdir(parents=True, exist_ok=True)
    remote.run(repo.git.worktree, "add", "--detach", "--force", str(tree), commit)
    with git.Repo(tree) as worktree:
        _update_submodules(worktree, tree, remote)


def _update_submodules(worktree: Any, tree: Path, remote: _Remote) -> None:
    if (tree / ".gitmodules").is_file():
        remote.run(worktree.git.submodule, "update", "--init", "--recursive")


@dataclass
class _State:
    """What the cache holds for the current session, kept beside the clone."""

    session: str | None
    #: Version ("" for the default) → the commit fetched for it in this session.
    commits: dict[str, str]
    #: Commits whose worktree has been reset in this session.
    trees: list[str]

    @classmethod
    def load(cls, path: Path) -> _State:
        try:
            data = json.loads(path.read_text("utf-8"))
            return cls(data["session"], dict(data["commits"]), list(data["trees"]))
        except (OSError, ValueError, KeyError, TypeError):
            return cls(None, {}, [])

    def save(self, path: Path) -> None:
        if self.session is None:
            return  # nothing to share: the next call fetches again
        temporary = path.with_name(path.name + f".{os.getpid()}")
        data = {"session": self.session, "commits": self.commits, "trees": self.trees}
        temporary.write_text(json.dumps(data), "utf-8")
        os.replace(temporary, path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` between processes (``flock``: released if one dies)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
