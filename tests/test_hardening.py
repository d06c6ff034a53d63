"""Hardening: what a pull request can put in a repository must not crash, hang or leak.

Every file pytest-mlproject reads from a repository (descriptor, environment files,
pytest-mlproject.yaml, the cluster spec it names, requirements files) is met here with what
an attacker or a bad day would put there. Each gets a failing item with a clear message (or
a skip), within enforced size, depth and alias limits, and every other project in the
session is still checked. Already covered elsewhere, and not repeated here:

- descriptors: too large, NUL bytes, not UTF-8, a folder, a broken link, a FIFO, deep
  nesting, alias bombs, recursive anchors, 5,000 entry points read, links back into the
  tree, a link to a file outside the project (tests/test_limits.py); any bytes and any YAML
  document (tests/test_properties.py); `::`, `[`, `%` and `spec` as entry point names
  (tests/test_plugin.py);
- values and extra keys that try to leave their quoting, against MLflow's own rendering
  (tests/test_commands.py::test_no_value_can_inject_a_command);
- archives: secret-named files, links out of the project, .gitignore; the launcher refusing
  members that leave its folder (tests/test_databricks_pure.py);
- secrets a local run prints (tests/test_redact.py).

The remote faults are in test_hardening_remote.py, interruptions in test_hardening_signals.py.
"""

from __future__ import annotations

import io
import os
import select
import shlex
import signal
import subprocess
import sys
import tarfile
import threading
import time
import tracemalloc
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pytest_mlproject import checks, commands, descriptor, spec
from pytest_mlproject.databricks import archive, clusterspec, launcher, payload, preflight
from pytest_mlproject.options import checking_config
from pytest_mlproject.plugin import nodes
from pytest_mlproject.problems import MLprojectError
from pytest_mlproject.settings import read_settings
from pytest_mlproject.sources import SourceError, resolve_source

GOOD = "entry_points:\n  main:\n    command: python train.py\n"
SPEC_JSON = '{"spark_version": "15.4.x-scala2.12", "node_type_id": "x", "num_workers": 0}'
#: Far past every size limit (1 MB); created sparse, so it costs no disk.
HUGE = 100 * 1024 * 1024
#: Reading any of these hostile files must stay well under this many bytes of memory.
MEMORY_BOUND = 16 * 1024 * 1024
#: Generous: a hang is caught, a slow machine is not failed.
HANG_GUARD = 60.0

T = TypeVar("T")


def make_project(folder: Path, descriptor: str = GOOD, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLproject").write_text(descriptor)
    (folder / "train.py").write_text("print('trained')\n")
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def without_hanging(call: Callable[[], T]) -> T:
    """``call()``, failing the test (instead of hanging the suite) if it never returns."""
    outcome: list[T] = []
    failure: list[BaseException] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    assert not thread.is_alive(), f"{call} hung"
    if failure:
        raise failure[0]
    return outcome[0]


def all_problems(folder: Path) -> list[str]:
    """What the ::spec and ::check items of the project would report, as `FILE:CODE message`."""
    _, problems = descriptor.descriptor_problems(folder / "MLproject", _PLAIN)
    return [f"{p.path.name}:{p.code} {p.message}" for p in problems]


#: The configuration of a plain `pytest --mlproject`.
_PLAIN = checking_config()


def write_sparse(path: Path, size: int = HUGE) -> None:
    with path.open("wb") as handle:
        handle.write(b"python: '3.11'\n")
        handle.truncate(size)


# ---------------------------------------------------------------------------------------------
# Files that are not what they claim to be, wherever a repository's YAML or JSON is read


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("MLproject", ""),
        ("python_env.yaml", ""),
        ("conda.yaml", "conda_env: conda.yaml\n"),
        ("pytest-mlproject.yaml", ""),
        ("cluster.json", ""),
    ],
)
def test_a_100_mb_file_is_refused_after_reading_one_megabyte(
    tmp_path: Path, name: str, extra: str
) -> None:
    folder = make_project(tmp_path / "p", extra + GOOD)
    if name == "cluster.json":
        (folder / "pytest-mlproject.yaml").write_text("databricks:\n  cluster_spec: cluster.json\n")
    write_sparse(folder / name)
    tracemalloc.start()
    try:
        if name == "cluster.json":
            with pytest.raises(clusterspec.SpecError, match="larger than 1048576 bytes"):
                clusterspec.parse("cluster.json", base=folder)
            found = ["cluster.json"]
        else:
            found = all_problems(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_BOUND
    assert any(problem.startswith(name) for problem in found), found


def fifo_cases() -> list[tuple[str, str, str]]:
    """(file, what the descriptor adds, the code that must say so: none for the settings
    file, which is only looked for as a regular file)"""
    return [
        ("python_env.yaml", "", "MLP308"),
        ("conda.yaml", "conda_env: conda.yaml\n", "MLP309"),
        ("env.yaml", "python_env: env.yaml\n", "MLP308"),
        ("pytest-mlproject.yaml", "", ""),
    ]


@pytest.mark.parametrize(("name", "extra", "code"), fifo_cases())
@pytest.mark.parametrize("kind", ["fifo", "folder", "device"])
def test_files_that_are_no_files_never_block_and_fail_clearly(
    tmp_path: Path, name: str, extra: str, code: str, kind: str
) -> None:
    folder = make_project(tmp_path / "p", extra + GOOD)
    target = folder / name
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "folder":
        target.mkdir()
    else:
        target.symlink_to("/dev/zero")  # a link out of the project, to a file without end
    found = without_hanging(lambda: all_problems(folder))
    if kind == "device" and code:
        code = "MLP310"  # the link leads out of the project: not read at all
    if not code:
        assert found == []  # no regular file of that name: no settings file, nothing read
    else:
        assert any(code in problem for problem in found), found


@pytest.mark.parametrize("target", ["fifo", "/dev/zero", "/dev/urandom", "folder"])
def test_a_cluster_spec_that_is_no_file_is_one_clear_error(tmp_path: Path, target: str) -> None:
    folder = make_project(tmp_path / "p")
    spec_path = folder / "cluster.json"
    if target == "fifo":
        os.mkfifo(spec_path)
    elif target == "folder":
        spec_path.mkdir()
    else:
        spec_path = Path(target)
    with pytest.raises(clusterspec.SpecError, match=r"not a regular file|Is a directory"):
        without_hanging(lambda: clusterspec.parse(str(spec_path)))


def test_requirements_files_that_are_no_files_are_refused(tmp_path: Path) -> None:
    folder = make_project(
        tmp_path / "p",
        "python_env: python_env.yaml\n" + GOOD,
        **{"python_env.yaml": "python: '3.11'\ndependencies:\n  - -r reqs\n"},
    )
    os.mkfifo(folder / "reqs")
    project = spec.load(folder)
    found = without_hanging(lambda: preflight.dependencies(project))
    assert found.requirement_files == ()
    assert [p.code for p in found.problems] == ["MLP709"]


def unreadable_as_nobody(folder: Path, name: str) -> list[str]:
    """Make ``name`` mode 000 and read the project in a child process that is not root.

    The suite runs as root, which reads any file whatever its mode; a forked child that
    drops to ``nobody`` meets the permission error a CI user would, with the modules this
    process already loaded (so nothing else needs to be readable to it).
    """
    (folder / name).chmod(0)
    for path in (folder, *folder.parents):
        if path == Path("/"):
            break
        path.chmod(path.stat().st_mode | 0o005)  # nobody may enter (not read) the folders
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            text = "\n".join(all_problems(folder))
            os.write(write_end, text.encode())
            code = 0
        except BaseException as exc:
            os.write(write_end, f"CHILD FAILED: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    # A forked child of a threaded process (xdist) could deadlock on a lock another thread
    # held at the fork: give up after HANG_GUARD instead of hanging the suite.
    chunks: list[bytes] = []
    deadline = time.monotonic() + HANG_GUARD
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while True:
            ready, _, _ = select.select([pipe], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                pytest.fail(f"the child reading as nobody hung; it said: {b''.join(chunks)!r}")
            chunk = pipe.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
    output = b"".join(chunks).decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, output
    return output.splitlines()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
@pytest.mark.parametrize(
    ("name", "extra", "code"),
    [
        ("MLproject", "", "MLP106"),
        ("python_env.yaml", "", "MLP308"),
        ("pytest-mlproject.yaml", "", "MLP801"),
    ],
)
def test_unreadable_files_fail_clearly(
    tmp_path_factory: pytest.TempPathFactory, name: str, extra: str, code: str
) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="mlproject-unreadable-"))
    try:
        folder = make_project(
            base / "p",
            extra + GOOD,
            **{"python_env.yaml": "python: '3.11'\n", "pytest-mlproject.yaml": "parameters: {}\n"},
        )
        found = unreadable_as_nobody(folder, name)
        assert any(f"{name}:{code}" in problem for problem in found), found
        assert any("ermission denied" in problem for problem in found), found
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.mark.parametrize(
    "document",
    [
        "a: &a [1, *a]\n",
        "a: " + "[" * 60 + "]" * 60 + "\n",
        "\n".join(
            [
                "a0: &a0 [x, x, x, x, x, x, x, x, x, x]",
                *(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8)),
            ]
        )
        + "\n",
        "key: [unclosed\n",
        "\x00binary\x01\x02",
        "caf\xe9: x\n",
    ],
    ids=["recursive", "deep", "alias-bomb", "syntax", "binary", "latin-1"],
)
@pytest.mark.parametrize(
    ("name", "extra", "code"),
    [
        ("python_env.yaml", "", "MLP308"),
        ("conda.yaml", "conda_env: conda.yaml\n", "MLP309"),
        ("pytest-mlproject.yaml", "", "MLP801"),
    ],
)
def test_hostile_yaml_in_every_file_read_as_yaml(
    tmp_path: Path, document: str, name: str, extra: str, code: str
) -> None:
    folder = make_project(tmp_path / "p", extra + GOOD)
    (folder / name).write_bytes(document.encode("latin-1"))
    found = without_hanging(lambda: all_problems(folder))
    assert any(problem.startswith(f"{name}:{code}") for problem in found), found


def test_a_session_with_every_hostile_file_still_checks_the_good_project(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester.path / "good")
    make_project(pytester.path / "env-fifo", "conda_env: conda.yaml\n" + GOOD)
    os.mkfifo(pytester.path / "env-fifo" / "conda.yaml")
    make_project(pytester.path / "settings-fifo")
    os.mkfifo(pytester.path / "settings-fifo" / "pytest-mlproject.yaml")
    make_project(
        pytester.path / "spec-device",
        **{"pytest-mlproject.yaml": "databricks:\n  cluster_spec: /dev/zero\n"},
    )
    make_project(pytester.path / "env-huge", "python_env: env.yaml\n" + GOOD)
    write_sparse(pytester.path / "env-huge" / "env.yaml")
    (pytester.path / "huge").mkdir()
    write_sparse(pytester.path / "huge" / "MLproject")
    result = pytester.runpytest("--mlproject", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=7, failed=4)
    result.stdout.fnmatch_lines_random(
        [
            "env-fifo/conda.yaml:1: MLP309 cannot read the environment file: it is not a regular*",
            "spec-device/pytest-mlproject.yaml:2: MLP803 *'/dev/zero', which leads outside*",
            "env-huge/env.yaml:1: MLP308 cannot read the environment file: larger than*",
            "huge/MLproject:1: MLP102 the file is larger than 1048576 bytes*",
        ]
    )


# ---------------------------------------------------------------------------------------------
# Names: entry points and parameters named to break node ids, selection and reports

_AWKWARD = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=0, max_size=12
)


@given(st.lists(_AWKWARD, min_size=2, max_size=6, unique=True))
def test_node_names_are_distinct_and_never_break_node_ids(names: list[str]) -> None:
    shown = [nodes.node_name(name) for name in names]
    assert len(set(shown)) == len(shown)
    for name in shown:
        assert name not in ("", "spec")
        assert not any(mark in name for mark in ("::", "[", "]", "\n", "\r"))


def test_awkward_names_are_items_that_select_replay_and_report(
    pytester: pytest.Pytester,
) -> None:
    names = [
        "with space",
        "tab\there",
        "a::b",
        "x[1]",
        "slash/inside",
        "dé".encode().decode(),
        unicodedata.normalize("NFD", "dé"),
        "🙂",
        "-k",
        "--lf",
        "spec",
        "%73pec",
    ]
    body = "".join(f"  {_yaml_key(name)}:\n    command: python train.py\n" for name in names)
    make_project(pytester.path / "p", "entry_points:\n  main:\n    command: exit 1\n" + body)
    result = pytester.runpytest("--mlproject", "--mlproject-run", "-q", "--junitxml=out.xml")
    result.assert_outcomes(passed=2 * len(names) + 2, failed=1)
    xml = (pytester.path / "out.xml").read_text("utf-8")
    from xml.etree import ElementTree

    cases = list(ElementTree.fromstring(xml).iter("testcase"))
    assert len(cases) == 2 * len(names) + 3
    # Every item can be run alone by its node id, and --lf replays exactly the failure.
    collected = pytester.runpytest("--mlproject", "--mlproject-run", "--collect-only", "-q")
    ids = [line for line in collected.outlines if "MLproject::" in line]
    assert len(ids) == len(set(ids)) == 2 * len(names) + 3
    for nodeid in ids[:: max(1, len(ids) // 8)]:
        pytester.runpytest("--mlproject", "--mlproject-run", nodeid).assert_outcomes(
            **({"failed": 1} if nodeid.endswith("main::run") else {"passed": 1})
        )
    replay = pytester.runpytest("--mlproject", "--mlproject-run", "--lf", "-q")
    replay.assert_outcomes(failed=1)


def _yaml_key(name: str) -> str:
    import json

    return json.dumps(name, ensure_ascii=False)  # a YAML double-quoted scalar


def test_thousands_of_entry_points_and_parameters_in_one_session(
    pytester: pytest.Pytester,
) -> None:
    entries = "".join(f"  e{i}:\n    command: python train.py\n" for i in range(2000))
    params = "".join(f"      p{i}: {{type: float, default: {i}}}\n" for i in range(3000))
    used = " ".join(f"--p{i} {{p{i}}}" for i in range(3000))
    quoted = " '{p7}' \"{p2999}\""  # two placeholders MLflow would quote twice
    make_project(
        pytester.path / "p",
        "entry_points:\n  main:\n    parameters:\n"
        + params
        + f'    command: "python train.py {used}{quoted.replace(chr(34), chr(92) + chr(34))}"\n'
        + entries,
    )
    result = pytester.runpytest("--mlproject", "-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2002, warnings=2)
    result.stdout.fnmatch_lines_random(
        ["*MLP504 placeholder `{p2999}`*", "*MLP504 placeholder `{p7}`*"]
    )


# ---------------------------------------------------------------------------------------------
# Links in the searched tree


@pytest.mark.parametrize("links", [1, 2, 3])
def test_folders_linking_to_each_other_collect_each_descriptor_once(
    pytester: pytest.Pytester, links: int
) -> None:
    """With one link each way the walk went about 40 levels deep (until the system's limit
    on links in a path); with two or more it doubled at every level and never ended."""
    make_project(pytester.path / "a")
    (pytester.path / "b").mkdir()
    for index in range(links):
        (pytester.path / "a" / f"to-b{index}").symlink_to("../b")
        (pytester.path / "b" / f"to-a{index}").symlink_to("../a")
    result = pytester.runpytest_subprocess(
        "--mlproject", "-p", "no:cacheprovider", "--collect-only", "-q", timeout=HANG_GUARD
    )
    assert [line for line in result.outlines if "::" in line] == [
        "a/MLproject::spec",
        "a/MLproject::main::check",
    ]


def test_a_link_to_a_folder_searched_anyway_is_not_collected_twice(
    pytester: pytest.Pytester,
) -> None:
    make_project(pytester.path / "models" / "v2")
    (pytester.path / "models" / "current").symlink_to("v2")
    (pytester.path / "elsewhere").mkdir()
    make_project(pytester.path / "shared" / "p")
    (pytester.path / "elsewhere" / "shared").symlink_to("../shared")
    (pytester.path / "elsewhere" / "again").symlink_to("../shared")
    result = pytester.runpytest("--mlproject", "-p", "no:cacheprovider", "--collect-only", "-q")
    assert [line for line in result.outlines if "::spec" in line] == [
        "models/v2/MLproject::spec",
        "shared/p/MLproject::spec",
    ]
    # Searching only the folder with the links still finds the project, once.
    result = pytester.runpytest(
        "--mlproject", "-p", "no:cacheprovider", "--collect-only", "-q", "elsewhere"
    )
    assert [line for line in result.outlines if "::spec" in line] == [
        "elsewhere/again/p/MLproject::spec"
    ]


def test_a_link_to_a_folder_outside_the_repository_is_not_followed(
    pytester: pytest.Pytester, tmp_path_factory: pytest.TempPathFactory
) -> None:
    elsewhere = make_project(tmp_path_factory.mktemp("elsewhere") / "secret-project")
    (pytester.path / "repo").mkdir()
    pytester.makeini("[pytest]\n")
    (pytester.path / "repo" / "proj").symlink_to(elsewhere)
    make_project(pytester.path / "repo" / "own")
    result = pytester.runpytest("--mlproject", "-p", "no:cacheprovider", "--collect-only", "-q")
    assert not [line for line in result.outlines if "proj/MLproject" in line]


# ---------------------------------------------------------------------------------------------
# Paths that try to leave the project


def test_settings_never_read_a_file_outside_the_repository(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "creds.json").write_text('{"auths": {"registry": {"auth": "c2VjcmV0"}}}')
    (outside / "settings.yaml").write_text("parameters:\n  leaked: c2VjcmV0\n")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    folder = make_project(repo / "p")
    (repo / "shared.json").write_text(SPEC_JSON)
    (folder / "link.json").symlink_to(outside / "creds.json")
    for written in ("../../outside/creds.json", str(outside / "creds.json"), "link.json"):
        (folder / "pytest-mlproject.yaml").write_text(f"databricks:\n  cluster_spec: {written}\n")
        settings = read_settings(folder)
        assert settings.databricks is not None
        assert settings.databricks.cluster_spec is None
        assert [p.code for p in settings.problems] == ["MLP803"]
        assert "c2VjcmV0" not in settings.problems[0].message
    # A spec shared by the projects of a monorepo is fine.
    (folder / "pytest-mlproject.yaml").write_text("databricks:\n  cluster_spec: ../shared.json\n")
    shared = read_settings(folder).databricks
    assert shared is not None
    assert shared.cluster_spec == "../shared.json"
    # And the settings file itself is not read through a link out of the project.
    (folder / "pytest-mlproject.yaml").unlink()
    (folder / "pytest-mlproject.yaml").symlink_to(outside / "settings.yaml")
    settings = read_settings(folder)
    assert settings.parameters == ()
    assert [p.code for p in settings.problems] == ["MLP801"]


def test_a_uri_subdirectory_that_leads_out_through_a_link_is_refused(tmp_path: Path) -> None:
    make_project(tmp_path / "outside")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "proj").symlink_to("../outside")
    make_project(repo / "inside")
    with pytest.raises(SourceError, match="leads outside the repository"):
        resolve_source(f"{repo}#proj", cache_dir=tmp_path / "cache")
    assert resolve_source(f"{repo}#inside", cache_dir=tmp_path / "cache").directory.name == "inside"


_PATH_PARTS = st.sampled_from(
    ["..", ".", "data", "in.txt", "link-out", "link-in", "link-up", "", "~", "/etc", "/tmp"]
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_PATH_PARTS, min_size=1, max_size=5), scheme=st.sampled_from(["", "file:"]))
def test_a_path_value_for_databricks_stays_in_the_project_or_is_refused(
    tmp_path: Path, parts: list[str], scheme: str
) -> None:
    root = tmp_path / "root"
    if not root.exists():
        folder = make_project(
            root / "p",
            "entry_points:\n  main:\n    parameters: {f: path}\n    command: python train.py {f}\n",
        )
        (folder / "data").mkdir()
        (folder / "data" / "in.txt").write_text("x")
        (folder / "link-out").symlink_to(tmp_path)
        (folder / "link-in").symlink_to("data")
        (folder / "data" / "link-up").symlink_to("../..")
    folder = root / "p"
    value = scheme + "/".join(parts)
    project = spec.load(folder)
    entry = project.entry_points["main"]
    try:
        command = payload.cluster_command(project, entry, {"f": value})
    except MLprojectError:
        return  # refused: outside the project, or missing
    if scheme and value.startswith("file://"):
        return  # a file URI with a host is remote: passed unchanged, never read here
    rendered = shlex.split(command)[-1]
    if os.path.isabs(rendered):
        pytest.fail(f"{value!r} became the absolute path {rendered!r}")
    target = (folder / rendered).resolve()
    assert target == folder.resolve() or folder.resolve() in target.parents, (value, rendered)


# ---------------------------------------------------------------------------------------------
# What is packed and uploaded


_TREE_NAMES = st.sampled_from(
    [
        "train.py",
        "notes.txt",
        ".env",
        ".env.prod",
        ".databrickscfg",
        "id_rsa",
        "key.pem",
        ".git/config",
        "sub/.netrc",
        "sub/data.csv",
        "mlruns/0/meta.yaml",
        "credentials.json",
    ]
)
_SECRET = "dapi0123456789abcdef0123456789abcdef"


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(
    files=st.lists(_TREE_NAMES, unique=True, max_size=6),
    links=st.lists(
        st.tuples(st.sampled_from(["a.txt", "sub/b.txt", "c.py"]), _TREE_NAMES), max_size=3
    ),
    outside_links=st.lists(
        st.sampled_from(["/etc/hostname", "../../outside.txt", ".."]), max_size=2
    ),
)
def test_an_archive_never_holds_a_secret_a_link_or_anything_from_outside(
    tmp_path_factory: pytest.TempPathFactory,
    files: list[str],
    links: list[tuple[str, str]],
    outside_links: list[str],
) -> None:
    base = tmp_path_factory.mktemp("tree")
    (base / "outside.txt").write_text(f"OUTSIDE {_SECRET}\n")
    folder = make_project(base / "a" / "p")
    secrets = {name for name in files if archive.excluded(name)}
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        body = f"SECRET {_SECRET}\n" if name in secrets else f"plain {name}\n"
        (folder / name).write_text(body)
    for index, (link, target) in enumerate(links):
        path = folder / f"l{index}-{link}"
        path.parent.mkdir(parents=True, exist_ok=True)
        relative = os.path.relpath(folder / target, path.parent)
        path.symlink_to(relative)
    for index, target in enumerate(outside_links):
        (folder / f"out{index}").symlink_to(target)
    packed = archive.pack(folder)
    with tarfile.open(fileobj=io.BytesIO(packed.data)) as tar:
        members = tar.getmembers()
        contents = b"".join(
            tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in members
            if m.isfile()
        )
    assert all(m.isfile() for m in members)
    assert all(not m.name.startswith("/") and ".." not in m.name.split("/") for m in members)
    assert _SECRET.encode() not in contents
    assert not any(archive.excluded(m.name) for m in members)


def test_a_requirements_line_never_uploads_a_secret_file(tmp_path: Path) -> None:
    folder = make_project(
        tmp_path / "p",
        "python_env: python_env.yaml\n" + GOOD,
        **{
            ".env": f"TOKEN={_SECRET}\n",
            "requirements.txt": "numpy\n",
            "python_env.yaml": "python: '3.11'\ndependencies:\n"
            "  - -r .env\n  - -r requirements.txt\n  - -r notes.txt\n  - -r ../outside.txt\n",
        },
    )
    (folder / "notes.txt").symlink_to(".env")
    (tmp_path / "outside.txt").write_text("numpy\n")
    found = preflight.dependencies(spec.load(folder))
    assert [path.name for path in found.requirement_files] == ["requirements.txt"]
    assert [p.code for p in found.problems] == ["MLP709"] * 3


# ---------------------------------------------------------------------------------------------
# Commands: no value, key or parameter spec runs anything, locally or on the cluster

_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=20)
_BREAKOUTS = st.sampled_from(
    [
        "$(touch {canary})",
        "`touch {canary}`",
        "'; touch {canary}; '",
        '"; touch {canary}; "',
        "a\ntouch {canary}",
        "\\'; touch {canary} #",
        "$'\\x27'; touch {canary}",
        "{{x}}; touch {canary}",
        "-c touch {canary}",
        "&& touch {canary}",
        "| touch {canary}",
        "> {canary}",
        "$IFS touch {canary}",
        "!!; touch {canary}",
    ]
)
#: Where a template puts a placeholder without quoting it itself: every one must keep a value
#: one word. Quoting it again ('{p}', "{p}") or formatting it ({p!r}) can break that, and
#: rules MLP504 and MLP503 say so (see the test after this one).
_CONTEXTS = st.sampled_from(
    ["{p}", "--p={p}", "--p {p}", "x{p}y", "{p}{q}", "{p} {q}", "$HOME/{p}", "{p}.csv"]
)


def _value(template: st.SearchStrategy[str], canary: Path) -> st.SearchStrategy[str]:
    return template.map(lambda text: text.replace("{canary}", str(canary)))


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(data=st.data(), context=_CONTEXTS)
def test_no_value_key_or_spec_executes_anything(
    tmp_path: Path, data: st.DataObject, context: str
) -> None:
    canary = tmp_path / "canary"
    hostile = st.one_of(_value(_BREAKOUTS, canary), _TEXT)
    p = data.draw(hostile, label="p")
    q = data.draw(hostile, label="q")
    key = data.draw(hostile.filter(lambda k: k not in ("p", "q") and k != ""), label="key")
    extra = data.draw(hostile, label="extra")
    template = f"printf '%s\\0' {context}"
    entry = spec.EntryPoint(
        "main",
        template,
        {n: spec.Parameter(n, "string", "d", 1) for n in ("p", "q")},
        1,
    )
    # Values as they come from --mlproject-param: ENTRY:NAME=VALUE, split on the first '='.
    assume("=" not in key)
    given_specs = commands.parse_param_specs([f"main:p={p}", f"main:q={q}", f"main:{key}={extra}"])
    values = commands.user_parameters(entry, given_specs)
    command = commands.render_command(entry, values)
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, check=False)
    assert not canary.exists(), (command, result)
    words = result.stdout.decode("utf-8").split("\0")[:-1]
    assert words[-2:] == [f"--{key}", extra]


@pytest.mark.parametrize(
    ("template", "code"),
    [
        ("python x.py '{p}'", "MLP504"),
        ('python x.py "{p}"', "MLP504"),
        ("python x.py {p!r}", "MLP503"),
        ("python x.py {p:>20}", "MLP503"),
    ],
)
def test_templates_that_could_let_a_value_out_are_flagged(
    tmp_path: Path, template: str, code: str
) -> None:
    folder = make_project(
        tmp_path / "p",
        "entry_points:\n  main:\n    parameters: {p: string}\n"
        f"    command: {_yaml_key(template)}\n",
    )
    assert code in [p.code for p in checks.check(folder)]
    # And what the flag is about: such a template does let a value out.
    canary = tmp_path / "canary"
    entry = spec.load(folder).entry_points["main"]
    command = commands.render_command(entry, {"p": f"$(touch {canary})"})
    subprocess.run(["bash", "-c", command.replace("python x.py", "true")], check=False)
    assert canary.exists() == (code == "MLP504" or "!r" in template)


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None, max_examples=25
)
@given(value=st.one_of(_BREAKOUTS, _TEXT), key=st.one_of(_BREAKOUTS, _TEXT))
def test_values_reach_the_cluster_as_one_word_through_the_launcher(
    tmp_path: Path, value: str, key: str
) -> None:
    assume(key not in ("", "p") and "=" not in key)
    canary = tmp_path / "canary"
    value, key = (text.replace("{canary}", str(canary)) for text in (value, key))
    folder = tmp_path / "project"
    if not folder.exists():
        make_project(
            folder,
            "entry_points:\n  main:\n    parameters: {p: string}\n"
            '    command: "python echo.py {p}"\n',
            **{
                "echo.py": "import os, sys\n"
                "with open(os.environ['ECHO_TO'], 'w', encoding='utf-8') as out:\n"
                "    out.write('\\0'.join(sys.argv[1:]) + '\\0')\n"
            },
        )
        (tmp_path / "stored.tar.gz").write_bytes(archive.pack(folder).data)
    project = spec.load(folder)
    entry = project.entry_points["main"]
    command = payload.cluster_command(project, entry, {"p": value, key: value})
    echoed = tmp_path / "argv"
    result = subprocess.run(
        [
            sys.executable,
            launcher.__file__,
            *launcher.arguments(
                archive=str(tmp_path / "stored.tar.gz"), entry="main", command=command
            ),
        ],
        capture_output=True,
        cwd=tmp_path,
        env={**os.environ, "ECHO_TO": str(echoed)},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not canary.exists()
    assert echoed.read_text("utf-8").split("\0")[:-1] == [value, f"--{key}", value]


# ---------------------------------------------------------------------------------------------
# Names no file system takes: too long for the OS, holding a NUL byte (YAML's "\0"), or
# starting with the home folder of a user that does not exist (`Path.expanduser()` raises)

_LONG = "x" * 5000
_UNUSABLE_NAMES = {
    "too long": _LONG,
    "NUL": "a\\0b",
    "unknown user": "~no-such-user-mlp/x.py",
    "NUL after ~": "~a\\0b/x.py",
}
_PATH_FIELDS = {
    "conda_env": ('conda_env: "{name}"\n' + GOOD, {}),
    "python_env": ('python_env: "{name}"\n' + GOOD, {}),
    "spark python_file": ('databricks_spark_job:\n  python_file: "{name}"\n', {}),
    "path default": (
        'entry_points:\n  main:\n    parameters:\n      d: {{type: path, default: "{name}"}}\n'
        "    command: python train.py {{d}}\n",
        {},
    ),
    "script": ('entry_points:\n  main:\n    command: "python {name}.py"\n', {}),
    "requirements line": (
        "python_env: python_env.yaml\n" + GOOD,
        {"python_env.yaml": 'python: "3.11"\ndependencies: ["-r {name}"]\n'},
    ),
    "settings cluster_spec": (
        GOOD,
        {"pytest-mlproject.yaml": 'databricks:\n  cluster_spec: "{name}"\n'},
    ),
}


@pytest.mark.parametrize("name", sorted(_UNUSABLE_NAMES))
@pytest.mark.parametrize("field", sorted(_PATH_FIELDS))
def test_names_no_file_system_takes_are_problems_not_tracebacks(
    pytester: pytest.Pytester, field: str, name: str
) -> None:
    descriptor, files = _PATH_FIELDS[field]
    value = _UNUSABLE_NAMES[name]
    make_project(
        pytester.path / "bad",
        descriptor.format(name=value),
        **{file: text.format(name=value) for file, text in files.items()},
    )
    make_project(pytester.path / "good")
    (pytester.path / "cluster.json").write_text(SPEC_JSON)
    result = pytester.runpytest(
        "--mlproject", "--mlproject-run", "--databricks-cluster-spec", "cluster.json",
        "-p", "no:cacheprovider", "-rA",
    )  # fmt: skip
    output = result.stdout.str()
    assert "Traceback" not in output, output
    assert "failed while reading" not in output, output
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    assert "PASSED good/MLproject::main::run" in output
    assert "bad/MLproject:" in output  # the problem names its file and line


@pytest.mark.parametrize("name", sorted(_UNUSABLE_NAMES))
def test_an_unusable_path_value_given_on_the_command_line_is_one_clear_failure(
    pytester: pytest.Pytester, name: str
) -> None:
    make_project(
        pytester.path / "p",
        "entry_points:\n  main:\n    parameters:\n      d: path\n"
        "    command: python train.py {d}\n",
    )
    # In-process, argv may hold a NUL byte.
    value = {"NUL": "x\0y", "NUL after ~": "~x\0y/z"}.get(name, _UNUSABLE_NAMES[name])
    result = pytester.runpytest(
        "--mlproject", "--mlproject-run", f"--mlproject-param=d={value}", "-p", "no:cacheprovider"
    )
    output = result.stdout.str()
    assert "Traceback" not in output, output
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines(["*Got value * for parameter d, but no such file*"])
