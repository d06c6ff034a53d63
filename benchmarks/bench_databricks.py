"""Databricks runs in one session, against the fake workspace: wall time and API requests.

    python benchmarks/bench_databricks.py [--entry-points 16] [--seconds 3] [--repeat 3]
                                          [--serial-runs 2] [--poll 30] [--cluster-start 0]
                                          [--serverless]

Everything runs on 127.0.0.1: a :class:`pytest_mlproject.testing.FakeWorkspace` in this
process (a fresh one for every measurement, so every session uploads its project), which
really runs each submitted task (by default as Databricks does: a Python host that execs the
launcher, which runs the command as a process of its own).

1. ``pytest --mlproject --databricks`` over a project of N entry points that each run
   ``python sleep.py S`` (default 16 of 3 s), and over a project with one such entry point:
   the wall time of the pytest process, from start to exit, with the default polling
   (1 s backing off to 30 s). The figure of merit is N-session / 1-session (target 1.5 or
   less: N runs cost about what one does). The median over ``--repeat`` rounds; the two
   sessions take turns within a round.
2. API requests per run, from the fake's request log of the N-entry-point session, by
   endpoint (every attempt counted, retries included; the SDK's config probe too).
3. The serial approach of ``mlflow.projects.run(..., backend="databricks",
   synchronous=True)`` (``SubmittedRun.wait`` reads ``result_state`` at once, then every
   30 s): one run after another, each uploaded (looked up first), submitted and polled that
   way, for ``--serial-runs`` runs with our client and our submit body; the total for N
   runs is modelled as N times the mean measured run (stated as such in the output). MLflow
   itself cannot run against the fake (it submits ``shell_command_task`` and needs the
   tracking server), so its own start-up and tracking calls are not counted: the model
   flatters it.

With ``--serverless`` every session runs ``--databricks-serverless`` (and the serial runs
submit serverless bodies): the same measurements for serverless jobs compute payloads.

Prints Markdown tables and writes ``benchmarks/out/bench_databricks.json`` (or
``bench_databricks_serverless.json``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
SPEC = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 0}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_projects(root: Path, entry_points: int, seconds: float) -> tuple[Path, Path]:
    """``many/`` with ``entry_points`` entry points and ``one/`` with one, each sleeping."""
    sleep = "import sys, time\ntime.sleep(float(sys.argv[1]))\nprint('slept', sys.argv[1])\n"
    folders = []
    for name, count in (("many", entry_points), ("one", 1)):
        folder = root / name
        folder.mkdir()
        lines = [f"name: {name}", "entry_points:"]
        for index in range(count):
            lines += [f"  e{index:02d}:", f"    command: python sleep.py {seconds:g}"]
        (folder / "MLproject").write_text("\n".join(lines) + "\n")
        (folder / "sleep.py").write_text(sleep)
        (folder / "cluster.json").write_text(json.dumps(SPEC))
        folders.append(folder)
    return folders[0], folders[1]


def session_env(host: str, token: str, root: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABRICKS_", "ARM_", "PYTEST_MLPROJECT_", "PYTEST_ADDOPTS"))
    }
    env.update(
        DATABRICKS_HOST=host,
        DATABRICKS_TOKEN=token,
        DATABRICKS_CONFIG_FILE=str(root / "no-databrickscfg"),
    )
    return env


#: The session's compute options: a cluster spec, or ``--databricks-serverless``.
COMPUTE_ARGS = ["--databricks-cluster-spec", "cluster.json"]


def timed_session(
    project: Path, runs: int, cluster_start: float, extra_args: tuple[str, ...] = ()
) -> tuple[float, list[Any], dict[str, Any]]:
    """One ``pytest --mlproject --databricks`` session on a fresh fake workspace."""
    from pytest_mlproject.testing import FakeWorkspace

    with FakeWorkspace() as fake:
        fake.faults.cluster_start_seconds = cluster_start
        command = [
            sys.executable,
            "-m",
            "pytest",
            "--mlproject",
            "--databricks",
            *COMPUTE_ARGS,
            "-p",
            "no:cacheprovider",
            "-q",
            "-k",
            "databricks",
        ]
        env = session_env(fake.host, fake.token, project.parent)
        started = time.perf_counter()
        done = subprocess.run(
            [*command, *extra_args],
            check=False,
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - started
        if done.returncode != 0 or f"{runs} passed" not in done.stdout:
            raise SystemExit(f"the session failed:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}")
        entries = fake.log.entries()
        durations = {}
        client = fake.client()
        for run in client.jobs.list_runs():
            durations[run.run_id] = run.run_duration
        return wall, entries, {"run_duration_ms": sorted(durations.values())}


def by_endpoint(entries: list[Any]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter()
    for entry in entries:
        path = re.sub(r"/Volumes/.*|/Workspace/.*", "/…", entry.path)
        counts[f"{entry.method} {path}"] += 1
    return dict(counts.most_common())


def serial(project: Path, runs: int, poll: float, cluster_start: float) -> list[float]:
    """One run after another, each waited for the way MLflow's ``SubmittedRun.wait`` does."""
    from pytest_mlproject.databricks import archive, payload
    from pytest_mlproject.databricks.clusterspec import parse
    from pytest_mlproject.databricks.serverless import Serverless
    from pytest_mlproject.databricks.workspace import Workspace
    from pytest_mlproject.spec import load
    from pytest_mlproject.testing import FakeWorkspace

    loaded = load(project)
    spec = Serverless() if "--databricks-serverless" in COMPUTE_ARGS else parse(SPEC)
    packed = archive.pack(project)
    times = []
    with FakeWorkspace() as fake, Workspace.connect(host=fake.host, token=fake.token) as ws:
        fake.faults.cluster_start_seconds = cluster_start
        upload_dir = ws.home_upload_dir()
        for index, name in enumerate(list(loaded.entry_points)[:runs]):
            entry = loaded.entry_points[name]
            job = payload.build_job(
                loaded,
                name,
                spec,
                command=payload.cluster_command(loaded, entry, {}),
                packed=packed,
                nodeid=name,
                label=name,
                token=payload.idempotency_token("serial", name),
                timeout=3600,
                experiment_id=None,
            )
            started = time.perf_counter()
            for upload in job.uploads:  # MLflow looks the archive up in DBFS every time
                ws.upload(upload_dir, upload.name, upload.data)
            run_id = ws.submit(payload.placed(job.body, upload_dir))
            state = ws.get_run(run_id)
            while state.result is None and not state.terminal:
                time.sleep(poll)
                state = ws.get_run(run_id)
            times.append(time.perf_counter() - started)
            _log(f"  serial run {index + 1}/{runs}: {times[-1]:.1f} s ({state.result})")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entry-points", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=3.0, help="how long each run sleeps")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--serial-runs", type=int, default=2, help="serial runs to measure")
    parser.add_argument("--poll", type=float, default=30.0, help="serial poll interval (s)")
    parser.add_argument(
        "--cluster-start", type=float, default=0.0, help="seconds each task stays PENDING"
    )
    parser.add_argument(
        "--serverless", action="store_true", help="serverless jobs compute payloads"
    )
    args = parser.parse_args()
    if args.serverless:
        COMPUTE_ARGS[:] = ["--databricks-serverless"]
    n = args.entry_points
    load_before = os.getloadavg()[0]

    import logging

    import databricks.sdk  # noqa: F401  (once here, so the serial timing leaves it out)

    # The fake answers the SDK's host-metadata probe 404, which the SDK logs as a warning.
    logging.getLogger("databricks.sdk").setLevel(logging.ERROR)

    with tempfile.TemporaryDirectory(prefix="bench-databricks-") as temporary:
        many, one = make_projects(Path(temporary), n, args.seconds)
        walls: dict[str, list[float]] = {"many": [], "one": [], "dry run": []}
        requests: list[Any] = []
        durations: dict[str, Any] = {}
        for round_ in range(args.repeat):
            for name, project, runs in (("many", many, n), ("one", one, 1)):
                wall, entries, extra = timed_session(project, runs, args.cluster_start)
                walls[name].append(wall)
                if name == "many":
                    requests, durations = entries, extra
                _log(f"round {round_ + 1}: {runs} entry point(s): {wall:.2f} s")
            wall, _, _ = timed_session(one, 1, 0, ("--databricks-dry-run",))
            walls["dry run"].append(wall)
            _log(f"round {round_ + 1}: 1 entry point, dry run: {wall:.2f} s")
        serial_times = serial(many, args.serial_runs, args.poll, args.cluster_start)

    # Each round's two sessions ran one after the other: their ratio suffers less from a
    # machine whose load changes than the ratio of the medians does.
    ratios = [many / one for many, one in zip(walls["many"], walls["one"], strict=True)]
    t_many, t_one = statistics.median(walls["many"]), statistics.median(walls["one"])
    t_dry = statistics.median(walls["dry run"])
    endpoints = by_endpoint(requests)
    per_run = len(requests) / n
    serial_mean = statistics.mean(serial_times)
    serial_model = serial_mean * n
    results = {
        "compute": "serverless" if args.serverless else "cluster",
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
        "args": vars(args),
        "session_wall_s": walls,
        "ratio_of_medians": t_many / t_one,
        "ratios_by_round": ratios,
        "requests": len(requests),
        "requests_per_run": per_run,
        "requests_by_endpoint": endpoints,
        "run_durations_ms": durations.get("run_duration_ms"),
        "serial_run_s": serial_times,
        "serial_model_s": serial_model,
    }
    OUT.mkdir(exist_ok=True)
    name = "bench_databricks_serverless.json" if args.serverless else "bench_databricks.json"
    (OUT / name).write_text(json.dumps(results, indent=2) + "\n")

    cores = os.cpu_count()
    print(f"Python {platform.python_version()} on {platform.system()}, {cores} cores, ", end="")
    print(f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after; ", end="")
    print(f"medians of {args.repeat} rounds; {results['compute']} payloads")
    print()
    print("| what | wall time |")
    print("| --- | --- |")
    print(f"| `pytest --mlproject --databricks`, 1 entry point of {args.seconds:g} s | ", end="")
    print(f"{t_one:.1f} s |")
    print(f"| the same, {n} entry points of {args.seconds:g} s | {t_many:.1f} s |")
    print(f"| ratio {n} / 1, median of the rounds' ratios (target ≤ 1.5) | ", end="")
    print(f"**{statistics.median(ratios):.2f}** ({min(ratios):.2f}-{max(ratios):.2f}) |")
    print(f"| ratio of the medians | {t_many / t_one:.2f} |")
    print("| 1 entry point, `--databricks-dry-run` (pytest, collection, no request) | ", end="")
    print(f"{t_dry:.1f} s |")
    print(f"| {n}-session / {args.seconds:g} s (one run's own time) | ", end="")
    print(f"{t_many / args.seconds:.2f} |")
    print(f"| serial, polling every {args.poll:g} s: measured per run ", end="")
    print(f"(mean of {len(serial_times)}) | {serial_mean:.1f} s |")
    print(f"| serial, {n} runs: modelled as {n} x that | {serial_model:.0f} s ", end="")
    print(f"({serial_model / t_many:.0f} x the session) |")
    print()
    print(f"API requests in the {n}-entry-point session: {len(requests)}, ", end="")
    print(f"{per_run:.1f} per run")
    print()
    print("| request | count |")
    print("| --- | --- |")
    for endpoint, count in endpoints.items():
        print(f"| `{endpoint}` | {count} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
