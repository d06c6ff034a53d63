"""Project sources: folders, Git repositories fetched into a shared cache, commits.

Every repository here is built in ``tmp_path`` with the ``git`` command and reached through
``file://`` URLs or plain paths: nothing leaves the machine.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import git
from hypothesis import given
from hypothesis import strategies as st

from pytest_mlproject.problems import MLprojectError
from pytest_mlproject.sources import (
    ProjectURI,
    SourceError,
    fetch_git,
    git_commit,
    parse_uri,
    redact,
    resolve_source,
)

MLPROJECT = "name: demo\nentry_points:\n  main:\n    command: 'echo {version}'\n"


def commit_project(repo: Path, marker: str) -> str:
    (repo / "projects" / "demo").mkdir(parents=True, exist_ok=True)
    (repo / "projects" / "demo" / "MLproject").write_text(MLPROJECT)
    (repo / "projects" / "demo" / "marker.txt").write_text(marker)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", marker)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    """A repository with two commits: tag v1 on the first, branch main at the second."""
    repo = tmp_path / "origin"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit_project(repo, "one")
    git(repo, "tag", "v1")
    commit_project(repo, "two")
    return repo


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------------------
# Parsing URIs


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("path/to/folder", ProjectURI("path/to/folder")),
        ("https://h/org/repo#sub/dir", ProjectURI("https://h/org/repo", "sub/dir")),
        ("git@h:org/repo.git#sub@v1.2.0", ProjectURI("git@h:org/repo.git", "sub", "v1.2.0")),
        ("file:///srv/repo#@main", ProjectURI("file:///srv/repo", "", "main")),
        ("https://u@h/r@x", ProjectURI("https://u@h/r@x")),
        ("'https://h/r#s'", ProjectURI("https://h/r", "s")),
        ("https://h/r#s@feature/x@y", ProjectURI("https://h/r", "s", "feature/x@y")),
    ],
)
def test_parse_uri(uri: str, expected: ProjectURI) -> None:
    assert parse_uri(uri) == expected


def test_a_dot_in_the_subdirectory_is_refused_as_in_mlflow() -> None:
    with pytest.raises(SourceError, match=r"^'\.' is not allowed in project subdirectory paths\.$"):
        parse_uri("https://h/r#../etc")


@pytest.mark.parametrize(
    ("uri", "match"), [("https://h/r#/etc", "is absolute"), ("https://h/r#s@", "names no version")]
)
def test_malformed_fragments_are_refused(uri: str, match: str) -> None:
    with pytest.raises(SourceError, match=match):
        parse_uri(uri)


def test_str_of_a_uri_has_no_credentials() -> None:
    assert str(parse_uri("https://u:p@h/r#s@v1")) == "https://***@h/r#s@v1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pass@host/r", "https://***@host/r"),
        ("https://TOKEN@host/r and http://a:b@c/", "https://***@host/r and http://***@c/"),
        ("https://user:p@ss@host/r", "https://***@host/r"),
        ("git@host:org/r", "git@host:org/r"),
        ("https://host/r?x=a@b", "https://host/r?x=a@b"),
        ("no url here", "no url here"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


@given(secret=st.from_regex(r"[A-Za-z0-9_.~%:!$&'()*+,;=@-]{1,30}", fullmatch=True))
def test_redact_never_leaves_a_secret(secret: str) -> None:
    text = f"fatal: https://{secret}@host.example/org/repo.git failed"
    assert redact(text) == "fatal: https://***@host.example/org/repo.git failed"


# ---------------------------------------------------------------------------------------------
# Folders


def test_a_folder_is_used_in_place_with_its_commit(origin: Path, cache: Path) -> None:
    source = resolve_source(f"{origin}#projects/demo", cache_dir=cache)
    assert source.directory == origin / "projects" / "demo"
    assert source.kind == "folder"
    assert source.commit == git(origin, "rev-parse", "HEAD")
    assert not cache.exists()


def test_a_file_uri_to_an_existing_folder_is_a_folder_too(origin: Path, cache: Path) -> None:
    source = resolve_source(f"file://{origin}#projects/demo", cache_dir=cache)
    assert source.kind == "folder"
    assert source.directory == origin / "projects" / "demo"


def test_a_missing_subdirectory_is_refused_as_in_mlflow(origin: Path, cache: Path) -> None:
    with pytest.raises(SourceError) as info:
        resolve_source(f"{origin}#nope", cache_dir=cache)
    assert str(info.value) == f"Could not find subdirectory nope of {origin}"


def test_a_version_needs_a_git_repository(tmp_path: Path, cache: Path) -> None:
    with pytest.raises(SourceError) as info:
        resolve_source(str(tmp_path), "v1", cache_dir=cache)
    assert str(info.value) == "Setting a version is only supported for Git project URIs"
    assert isinstance(info.value, MLprojectError)


def test_a_bare_repository_needs_a_version(origin: Path, cache: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(origin), str(bare))
    with pytest.raises(SourceError) as info:
        resolve_source(f"file://{bare}#projects/demo", cache_dir=cache)
    assert str(info.value) == (
        f"project URI file://{bare}#projects/demo names a bare Git repository, which has no "
        "working tree to take the project from: give the version to check out after `@` in "
        "the URI's fragment (`URI#@main`, `URI#sub/dir@main`) or with --mlproject-version"
    )
    source = resolve_source(f"file://{bare}#projects/demo", "main", cache_dir=cache)
    assert (source.kind, source.commit) == ("git", git(origin, "rev-parse", "main"))
    assert (source.directory / "marker.txt").read_text() == "two"


def test_zip_archives_are_refused(cache: Path) -> None:
    with pytest.raises(SourceError, match="zip archive"):
        resolve_source("https://h/project.zip", cache_dir=cache)


# ---------------------------------------------------------------------------------------------
# Git repositories


def test_a_version_of_a_local_repository_is_checked_out_in_the_cache(
    origin: Path, cache: Path
) -> None:
    head = git(origin, "rev-parse", "HEAD")
    source = resolve_source(f"{origin}#projects/demo@v1", cache_dir=cache)
    assert source.kind == "git"
    assert source.version == "v1"
    assert source.commit == git(origin, "rev-parse", "v1")
    assert (source.directory / "marker.txt").read_text() == "one"
    assert cache in source.directory.parents
    # the user's own working copy is left alone (MLflow checks the version out in it)
    assert git(origin, "rev-parse", "HEAD") == head
    assert git(origin, "status", "--porcelain") == ""


def test_the_default_version_is_the_remotes_head(origin: Path, cache: Path) -> None:
    checkout = fetch_git(f"file://{origin}", None, cache)
    assert checkout.commit == git(origin, "rev-parse", "HEAD")
    assert (checkout.root / "projects" / "demo" / "marker.txt").read_text() == "two"
    assert checkout.cloned
    assert checkout.fetched


@pytest.mark.parametrize("version", ["v1", "main", "first-commit", "short-commit"])
def test_branches_tags_and_commits(origin: Path, cache: Path, version: str) -> None:
    first = git(origin, "rev-list", "--max-parents=0", "HEAD")
    name = {"first-commit": first, "short-commit": first[:10]}.get(version, version)
    source = resolve_source(f"file://{origin}#projects/demo@{name}", cache_dir=cache)
    expected = git(origin, "rev-parse", f"{name}^{{commit}}")
    assert source.commit == expected
    assert source.directory.parts[-3] == expected


def test_the_session_version_applies_unless_the_uri_names_one(origin: Path, cache: Path) -> None:
    assert resolve_source(f"file://{origin}#projects/demo", "v1", cache_dir=cache).commit == git(
        origin, "rev-parse", "v1"
    )
    pinned = resolve_source(f"file://{origin}#projects/demo@main", "v1", cache_dir=cache)
    assert pinned.commit == git(origin, "rev-parse", "main")


def test_two_versions_do_not_collide(origin: Path, cache: Path) -> None:
    one = resolve_source(f"file://{origin}#projects/demo@v1", cache_dir=cache, session="s")
    two = resolve_source(f"file://{origin}#projects/demo@main", cache_dir=cache, session="s")
    assert one.directory != two.directory
    assert (one.directory / "marker.txt").read_text() == "one"
    assert (two.directory / "marker.txt").read_text() == "two"


@pytest.mark.parametrize("version", ["nope", "0123abcd", "-x", " "])
def test_a_bad_version_is_refused_with_mlflows_message(
    origin: Path, cache: Path, version: str
) -> None:
    with pytest.raises(SourceError) as info:
        fetch_git(f"file://{origin}", version, cache)
    assert str(info.value).startswith(
        f"Unable to checkout version '{version}' of git repo file://{origin}"
    )


def test_a_missing_subdirectory_of_a_checkout(origin: Path, cache: Path) -> None:
    with pytest.raises(SourceError, match=r"^Could not find subdirectory nope of .*/trees/"):
        resolve_source(f"file://{origin}#nope@v1", cache_dir=cache)


def test_a_failed_fetch_says_why_without_credentials(
    cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # GitPython logs every command it runs
    with pytest.raises(SourceError) as info:
        resolve_source("https://me:s3cr3t@127.0.0.1:9/org/repo.git#sub", cache_dir=cache)
    message = str(info.value)
    assert message.startswith("Cannot fetch git repo https://***@127.0.0.1:9/org/repo.git: ")
    assert "s3cr3t" not in message
    assert "git" in caplog.text
    assert "s3cr3t" not in caplog.text
    # and the secret is not written into the cache either
    for path in cache.rglob("*"):
        if path.is_file():
            assert b"s3cr3t" not in path.read_bytes(), path


def test_a_later_session_reuses_the_clone_and_fetches(origin: Path, cache: Path) -> None:
    url = f"file://{origin}"
    first = fetch_git(url, "main", cache, session="one")
    (first.root / "output.txt").write_text("left by a run")
    again = fetch_git(url, "main", cache, session="one")
    assert (again.cloned, again.fetched) == (False, False)
    assert (again.root / "output.txt").exists()  # the same session shares the worktree

    new = commit_project(origin, "three")
    later = fetch_git(url, "main", cache, session="two")
    assert (later.cloned, later.fetched) == (False, True)
    assert later.commit == new
    older = fetch_git(url, first.commit, cache, session="two")
    assert older.root == first.root
    assert not (older.root / "output.txt").exists()  # reset to a clean checkout
    assert (older.root / "projects" / "demo" / "marker.txt").read_text() == "two"


def test_without_a_session_every_call_fetches(origin: Path, cache: Path) -> None:
    url = f"file://{origin}"
    assert fetch_git(url, None, cache).fetched
    assert fetch_git(url, None, cache).fetched


def test_a_broken_worktree_is_made_again(origin: Path, cache: Path) -> None:
    url = f"file://{origin}"
    first = fetch_git(url, "v1", cache, session="one")
    (first.root / ".git").unlink()
    again = fetch_git(url, "v1", cache, session="two")
    assert (again.root / "projects" / "demo" / "MLproject").is_file()
    assert git(again.root, "rev-parse", "HEAD") == first.commit


_WORKER = """
import json, sys
from pytest_mlproject.sources import fetch_git
sys.stdin.readline()  # start together
checkout = fetch_git(sys.argv[1], "main", sys.argv[2], session="xdist-run")
print(json.dumps({"root": str(checkout.root), "cloned": checkout.cloned,
                  "fetched": checkout.fetched}))
"""


def test_concurrent_processes_share_one_clone(origin: Path, cache: Path) -> None:
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, f"file://{origin}", str(cache)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    results = []
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0
        results.append(json.loads(out))
    assert len({r["root"] for r in results}) == 1
    assert sorted(r["cloned"] for r in results) == [False, False, True]
    assert sorted(r["fetched"] for r in results) == [False, False, True]
    assert len(list((cache / "mlproject-git").iterdir())) == 1


# ---------------------------------------------------------------------------------------------
# git_commit


def test_git_commit(origin: Path, tmp_path: Path) -> None:
    head = git(origin, "rev-parse", "HEAD")
    assert git_commit(origin) == head
    assert git_commit(origin / "projects" / "demo") == head
    assert git_commit(origin / "projects" / "demo" / "MLproject") == head
    outside = tmp_path / "plain"
    outside.mkdir()
    assert git_commit(outside) is None
    assert git_commit(tmp_path / "missing") is None


def test_git_commit_of_an_ignored_folder_is_none(origin: Path) -> None:
    (origin / ".gitignore").write_text("scratch/\n")
    (origin / "scratch").mkdir()
    assert git_commit(origin / "scratch") is None


def test_git_commit_of_a_repository_without_commits_is_none(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    assert git_commit(tmp_path) is None
