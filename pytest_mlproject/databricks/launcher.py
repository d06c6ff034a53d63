"""Run one MLflow project entry point on a Databricks cluster.

pytest-mlproject uploads this file beside the project archive and submits it as the
``spark_python_task`` of a one-time run::

    python launcher.py ARCHIVE COMMAND

It unpacks ARCHIVE (a file name beside this script, or a workspace, volume or DBFS path)
into a fresh temporary folder of its own, so runs that share an archive never race, runs
COMMAND (already rendered, with every parameter value shell-quoted) with bash in that
folder, streams its output to the run's logs, removes the folder, and exits with the
command's exit code.

It must run on any cluster Python with nothing installed: standard library only, and no
import from pytest_mlproject.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

USAGE = "usage: launcher.py ARCHIVE COMMAND"


def local_path(archive: str) -> Path:
    """Where the cluster sees a stored file: ``dbfs:/x`` is ``/dbfs/x``; a bare name is beside
    this script (the archive is uploaded next to it); an absolute path is as given."""
    if archive.startswith("dbfs:/"):
        return Path("/dbfs") / archive[len("dbfs:/") :].lstrip("/")
    path = Path(archive)
    return path if path.is_absolute() else Path(__file__).resolve().parent / path


def unpack(archive: Path, target: Path) -> None:
    """Extract regular files only, each inside ``target``; refuse anything else."""
    with tarfile.open(archive, mode="r:gz") as tar:
        for member in tar.getmembers():
            destination = (target / member.name).resolve()
            if not member.isfile() or target.resolve() not in destination.parents:
                raise SystemExit(f"launcher: refusing archive member {member.name!r}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(member)
            if source is None:
                raise SystemExit(f"launcher: cannot read archive member {member.name!r}")
            with source, destination.open("wb") as out:
                shutil.copyfileobj(source, out)
            destination.chmod(0o755 if member.mode & 0o111 else 0o644)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(USAGE, file=sys.stderr)
        return 2
    archive, command = local_path(argv[1]), argv[2]
    workdir = Path(tempfile.mkdtemp(prefix="mlproject-"))
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: object) -> None:
        # Databricks cancels a run by stopping this process: take the command down with it.
        if child is not None and child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        unpack(archive, workdir)
        print(f"launcher: running in {workdir}: {command}", flush=True)
        # `python` in the command must be the cluster's Python, the one with the libraries,
        # as a local run puts the running interpreter first on PATH.
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        child = subprocess.Popen(
            ["bash", "-c", command], cwd=workdir, env=env, start_new_session=True
        )
        return child.wait()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
