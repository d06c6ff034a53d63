"""The Databricks parts that need no workspace: cluster specs, archives and the launcher."""

from __future__ import annotations

import ast
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import gone

from pytest_mlproject.databricks import archive, clusterspec, launcher
from pytest_mlproject.databricks.runstate import RunOutput, launcher_silence

SPEC = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 1}


def codes(value: object, tmp_path: Path) -> list[str]:
    spec = clusterspec.parse(value if isinstance(value, str) else json.dumps(value))
    return [p.code for p in clusterspec.check_spec(spec, tmp_path / "MLproject")]


def test_bare_and_wrapped_specs(tmp_path: Path) -> None:
    bare = clusterspec.parse(json.dumps(SPEC))
    assert (dict(bare.new_cluster), bare.libraries) == (SPEC, ())
    libraries = [{"pypi": {"package": "scikit-learn==1.5.2"}}]
    wrapped = clusterspec.parse({"new_cluster": SPEC, "libraries": libraries})
    assert (dict(wrapped.new_cluster), list(wrapped.libraries)) == (SPEC, libraries)
    assert codes(SPEC, tmp_path) == []
    assert codes({"new_cluster": SPEC, "libraries": libraries}, tmp_path) == []


def test_spec_from_a_file_locates_problems_in_it(tmp_path: Path) -> None:
    path = tmp_path / "cluster.json"
    path.write_text(json.dumps({**SPEC, "existing_cluster_id": "0101-abc"}, indent=2))
    spec = clusterspec.parse("cluster.json", base=tmp_path)
    [problem] = clusterspec.check_spec(spec, tmp_path / "MLproject")
    assert (problem.path, problem.line, problem.code) == (path, 5, "MLP701")
    assert "*new cluster*" in problem.message


@pytest.mark.parametrize(
    ("spec", "code"),
    [
        ({"existing_cluster_id": "1"}, "MLP701"),
        ({"new_cluster": {**SPEC, "existing_cluster_id": "1"}}, "MLP701"),
        ({**SPEC, "libraries": [{"pypi": {"package": "x"}}]}, "MLP702"),
        ({"cluster_spec": {"new_cluster": SPEC}}, "MLP703"),
        ({"new_cluster": SPEC, "libraries": [{"egg": "dbfs:/x.egg"}]}, "MLP704"),
        ({"new_cluster": SPEC, "libraries": [{"jar": "dbfs:/x.jar"}]}, "MLP704"),
        ({"new_cluster": SPEC, "libraries": [{"whl": "/Volumes/a/b/c/x.egg"}]}, "MLP704"),
        ({"new_cluster": SPEC, "libraries": [{"pypi": {"package": "x"}, "whl": "y"}]}, "MLP704"),
        ({"new_cluster": SPEC, "libraries": [{"whl": "dist/x-1.0-py3-none-any.whl"}]}, "MLP705"),
        ({"new_cluster": SPEC, "libraries": [{"pypi": {"package": "./x.whl"}}]}, "MLP705"),
        ({"new_cluster": SPEC, "libraries": [{"requirements": "requirements.txt"}]}, "MLP705"),
    ],
)
def test_refused_specs(tmp_path: Path, spec: dict[str, object], code: str) -> None:
    assert code in codes(spec, tmp_path)


@pytest.mark.parametrize(
    "location",
    [
        "/Workspace/Users/me/x-1.0-py3-none-any.whl",
        "/Volumes/main/default/libs/x-1.0-py3-none-any.whl",
        "dbfs:/libs/x-1.0-py3-none-any.whl",
        "/dbfs/libs/x-1.0-py3-none-any.whl",
        "https://example.invalid/x-1.0-py3-none-any.whl",
    ],
)
def test_reachable_wheels(tmp_path: Path, location: str) -> None:
    assert codes({"new_cluster": SPEC, "libraries": [{"whl": location}]}, tmp_path) == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("missing.json", "cannot read the cluster spec"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"new_cluster": 3}', "`new_cluster` in the cluster spec"),
        ('{"new_cluster": {}, "libraries": {}}', "`libraries` in the cluster spec"),
    ],
)
def test_unreadable_specs_raise(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(clusterspec.SpecError, match=message):
        clusterspec.parse(value if value.startswith(("{", "[")) else str(tmp_path / value))


def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    (root / "src").mkdir(parents=True)
    (root / "MLproject").write_text("entry_points:\n  main:\n    command: python src/train.py\n")
    (root / "src" / "train.py").write_text("print('trained')\n")
    (root / "run.sh").write_text("echo run\n")
    (root / "run.sh").chmod(0o755)
    return root


def test_archive_is_deterministic(tmp_path: Path) -> None:
    root = project(tmp_path)
    first = archive.pack(root)
    os.utime(root / "src" / "train.py", (1, 1))
    second = archive.pack(root)
    assert first.data == second.data
    assert first.sha256 == second.sha256
    (root / "src" / "train.py").write_text("print('changed')\n")
    assert archive.pack(root).sha256 != first.sha256


def test_archive_leaves_out_secrets_caches_and_outside_links(tmp_path: Path) -> None:
    root = project(tmp_path)
    for name in (".databrickscfg", ".env", ".env.local", "key.pem", "id_rsa"):
        (root / name).write_text("token = dapi-secret\n")
    for folder in ("mlruns/0", ".git", "__pycache__", "env-any"):
        (root / folder).mkdir(parents=True)
    (root / "mlruns" / "0" / "meta.yaml").write_text("x")
    (root / "env-any" / "pyvenv.cfg").write_text("home = /usr")
    (root / "outside").symlink_to(tmp_path)
    (root / "passwd").symlink_to("/etc/passwd")
    (root / "alias.py").symlink_to(root / "src" / "train.py")
    packed = archive.pack(root)
    assert packed.files == ("MLproject", "alias.py", "run.sh", "src/train.py")
    with tarfile.open(fileobj=io.BytesIO(packed.data)) as tar:
        members = tar.getmembers()
        assert all(member.isfile() and member.mtime == 0 for member in members)
        assert {m.name: m.mode for m in members}["run.sh"] == 0o755
        contents = [tar.extractfile(m) for m in members]
        assert b"dapi-secret" not in b"".join(f.read() for f in contents if f is not None)
    assert dict(packed.skipped)["passwd"].startswith("symbolic link")


def test_archive_honours_gitignore(tmp_path: Path) -> None:
    import git

    root = project(tmp_path)
    (root / "data").mkdir()
    (root / "data" / "big.csv").write_text("1,2\n")
    (root / ".gitignore").write_text("data/\n")
    with git.Repo.init(tmp_path) as repo:
        repo.index.add([str(root / "MLproject")])
    assert archive.pack(root).files == (".gitignore", "MLproject", "run.sh", "src/train.py")


def launch(
    script: Path | str, archive_path: str, command: str, **options: Any
) -> subprocess.CompletedProcess[str]:
    """The launcher run as a plain Python process, with the parameters a payload gives it."""
    parameters = launcher.arguments(archive=archive_path, entry="main", command=command)
    return subprocess.run(
        [sys.executable, str(script), *parameters],
        capture_output=True,
        text=True,
        check=False,
        **options,
    )


def test_launcher_runs_the_command_in_a_fresh_folder(tmp_path: Path) -> None:
    packed = archive.pack(project(tmp_path))
    stored = tmp_path / packed.name
    stored.write_bytes(packed.data)
    command = "python src/train.py && ./run.sh && pwd && printf '%s\\n' 'a b'"
    result = launch(launcher.__file__, str(stored), command)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("launcher: entry point 'main': running in ")
    assert lines[1:3] == ["trained", "run"]
    workdir = Path(lines[3])
    assert workdir.name.startswith("mlproject-")
    assert not workdir.exists()
    assert lines[4:] == ["a b", "launcher: entry point 'main': finished"]


def test_launcher_raises_naming_the_entry_point_and_the_exit_code(tmp_path: Path) -> None:
    packed = archive.pack(project(tmp_path))
    (tmp_path / packed.name).write_bytes(packed.data)
    failed = launch(launcher.__file__, str(tmp_path / packed.name), "echo said; exit 7")
    assert failed.returncode == 1  # Python's own code for an uncaught exception
    assert "said\n" in failed.stdout
    assert failed.stderr.strip().splitlines()[-1] == (
        "LauncherError: entry point 'main' failed: its command exited with code 7"
    )


def test_launcher_refuses_archives_that_leave_their_folder(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        entry = tarfile.TarInfo("../escaped.txt")
        entry.size = 1
        tar.addfile(entry, io.BytesIO(b"x"))
    result = launch(launcher.__file__, str(evil), "true")
    assert result.returncode != 0
    assert "refusing archive member '../escaped.txt'" in result.stderr
    assert not (tmp_path / "escaped.txt").exists()


def test_launcher_maps_dbfs_paths() -> None:
    assert launcher.local_path("dbfs:/mlproject/a.tar.gz") == Path("/dbfs/mlproject/a.tar.gz")
    assert launcher.local_path("/Volumes/c/s/v/a.tar.gz") == Path("/Volumes/c/s/v/a.tar.gz")


def test_launcher_finds_a_bare_archive_name_beside_its_argv0(tmp_path: Path) -> None:
    packed = archive.pack(project(tmp_path))
    (tmp_path / packed.name).write_bytes(packed.data)
    script = tmp_path / "launcher.py"
    script.write_bytes(Path(launcher.__file__).read_bytes())
    result = launch(script, packed.name, "python src/train.py", cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-2] == "trained"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "usage: --archive ABS_PATH --entry NAME"),
        (["--archive", "/a.tar.gz", "--", "true"], "usage:"),
        (["--archive", "/a.tar.gz", "--entry", "main", "true"], "unexpected 'true'"),
        (["--archive", "/a", "--entry", "m", "--env", "NOEQUALS", "--", "x"], "NAME=VALUE"),
        (["--archive", "/a", "--entry", "m", "--", "x", "y"], "usage:"),
    ],
)
def test_launcher_arguments_that_do_not_fit_say_the_usage(argv: list[str], message: str) -> None:
    with pytest.raises(launcher.LauncherError, match=message):
        launcher.parse(argv)


def test_launcher_arguments_read_back_what_the_payload_wrote() -> None:
    written = launcher.arguments(
        archive="/Workspace/a b.tar.gz", entry="main", command="-- --x", env={"A": "1=2", "B": ""}
    )
    assert launcher.parse(written) == launcher.Arguments(
        "/Workspace/a b.tar.gz", "main", {"A": "1=2", "B": ""}, "-- --x"
    )


def test_launcher_is_python_3_8_syntax() -> None:
    # It runs on whatever Python a cluster has, and promises 3.8 and later: the grammar is
    # checked here, and that it imports the standard library only.
    source = Path(launcher.__file__).read_text()
    ast.parse(source, feature_version=(3, 8))
    imported = {
        name.split(".")[0]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        )
    }
    assert imported <= sys.stdlib_module_names


@pytest.mark.parametrize(("timeout", "seconds"), [(0.4, 1), (2, 2), (2.5, 3), (7200, 7200)])
def test_run_timeouts_are_whole_seconds_never_zero(timeout: float, seconds: int) -> None:
    from pytest_mlproject.databricks import payload

    # 0 would mean "no time limit" to Databricks.
    assert payload.timeout_seconds(timeout) == seconds


def test_launcher_runs_outside_the_main_thread(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A host may run the file in a thread, where Python refuses signal handlers.
    packed = archive.pack(project(tmp_path))
    (tmp_path / packed.name).write_bytes(packed.data)
    argv = [
        "launcher.py",
        *launcher.arguments(
            archive=str(tmp_path / packed.name), entry="main", command="python src/train.py"
        ),
    ]
    errors: list[BaseException] = []

    def target() -> None:
        try:
            launcher.main(argv)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(60)

    assert errors == []
    assert "trained\n" in capsys.readouterr().out


def test_sigterm_stops_the_launcher_and_its_whole_command(tmp_path: Path) -> None:
    root = project(tmp_path)
    (root / "sleep.sh").write_text('sleep 120 &\necho $$ $! > "$1"\nwait\n')
    packed = archive.pack(root)
    (tmp_path / packed.name).write_bytes(packed.data)
    pids = tmp_path / "pids"
    parameters = launcher.arguments(
        archive=str(tmp_path / packed.name), entry="main", command=f"bash sleep.sh {pids}"
    )
    process = subprocess.Popen(
        [sys.executable, launcher.__file__, *parameters],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not (pids.exists() and pids.read_text().strip()):
        assert time.monotonic() < deadline
        assert process.poll() is None
        time.sleep(0.02)

    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)

    assert process.returncode != 0
    assert "KeyboardInterrupt: launcher: stopped by signal 15" in stderr
    for pid in (int(p) for p in pids.read_text().split()):
        assert gone(pid)


def _output(logs: str, truncated: bool = False) -> RunOutput:
    return RunOutput(logs=logs, logs_truncated=truncated, error=None, error_trace=None)


def test_a_success_without_the_launchers_start_line_is_no_success() -> None:
    started = "launcher: entry point 'main': running in /tmp/x: python a.py\nok\n"
    finished = "x" * 10 + "\nlauncher: entry point 'main': finished\n"

    assert launcher_silence(_output(started), "main") is None
    assert launcher_silence(_output(finished, truncated=True), "main") is None
    assert launcher_silence(None, "main") is None  # the log could not be read
    for silent in (_output(""), _output(finished), _output(started), _output("ok\n", True)):
        entry = "other" if silent.logs == started else "main"
        reason = launcher_silence(silent, entry)
        assert reason is not None
        assert reason.startswith(
            f"the run ended SUCCESS, but its log lacks the launcher's start line "
            f"(launcher: entry point '{entry}': running in ...)"
        )
