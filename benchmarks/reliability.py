"""The long fault sweep: many sessions under faults, hostile input and signals, counted.

    python benchmarks/reliability.py [--rounds 3] [--jobs 3] [--budget 540] [--only NAME ...]

Everything runs on 127.0.0.1: each session gets a fresh
:class:`pytest_mlproject.testing.FakeWorkspace` in this process (which really runs what is
submitted) and a fresh project in a temporary folder, and ``pytest --mlproject --databricks``
runs against it as a subprocess, exactly as a user runs it. Scenarios:

- remote faults: the fake's knobs (30% of requests answered 429, 503 or 500, dropped
  connections, slow answers, slow clusters, runs ending INTERNAL_ERROR or SKIPPED, a server
  quoting the Authorization header), credentials revoked while runs are going, the
  workspace going away (the coordinator in this process, its patience shortened), and
  faults under ``-n 2``;
- interruptions: SIGINT and SIGTERM while packing, uploading, submitting and waiting, with
  and without ``-n 2``, timed by requests arriving at the fake, then a next session;
- hostile input: one repository of hostile projects checked by ``pytest --mlproject``
  (peak memory measured), and random parameter values and keys rendered and run by bash.

After each session it counts what matters: items whose outcome is not how their run really
ended (a false red or a false green), runs started twice (more runs than items, or than
idempotency tokens), runs left active, secrets found in the output, JUnit XML, pytest's cache
folder or the uploaded files, sessions that hung, and next sessions that failed. Every
scenario runs ``--rounds`` times (each round a new session), ``--jobs`` sessions at a time;
no new session starts once ``--budget`` seconds have passed (the sweep says which were cut).

Prints a Markdown table and writes ``benchmarks/out/reliability.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import random
import re
import resource
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "out"
SPEC = {"spark_version": "15.4.x-scala2.12", "node_type_id": "Standard_DS3_v2", "num_workers": 0}
TOKEN = "dapi-sweep-0123456789abcdef01234567"
PLANTED = "planted-sweep-secret-9f8e7d6c"
#: The longest any one session may take before it counts as hung and is killed.
HANG_AFTER = 180.0
#: entry point -> how its run really ends, for the fault scenarios' project.
ENTRIES = {"main": "passed", "other": "passed", "slowish": "passed", "fails": "failed"}

DESCRIPTOR = """\
name: demo
entry_points:
  main:
    parameters:
      greeting: {type: string, default: hello}
    command: "python main.py {greeting}"
  other:
    command: "python main.py other"
  slowish:
    command: "python slow.py 1"
  fails:
    command: "python fail.py"
"""
SCRIPTS = {
    "main.py": "import sys\nprint('main says', sys.argv[1])\n",
    "fail.py": "import sys\nprint('about to fail')\nsys.exit('boom: the model diverged')\n",
    "slow.py": "import sys, time\ntime.sleep(float(sys.argv[1]))\nprint('slept')\n",
    ".env": f"DATABRICKS_TOKEN={TOKEN}\n",
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- one session ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    """What one session did, and what went wrong with it (every count should be 0)."""

    scenario: str
    seconds: float = 0.0
    items: int = 0
    false_red: int = 0
    false_green: int = 0
    duplicated: int = 0
    left_active: int = 0
    leaks: int = 0
    hung: int = 0
    next_failed: int = 0
    #: For hostile input: files or values that got past (executed, crashed, not flagged).
    escaped: int = 0
    peak_rss_mb: float = 0.0
    exit_code: int | None = None
    #: A line of what the user was shown, for the table.
    shown: str = ""
    note: str = ""


def make_project(root: Path, descriptor: str = DESCRIPTOR, large: bool = False) -> Path:
    project = root / "demo"
    project.mkdir(parents=True)
    (project / "MLproject").write_text(descriptor)
    for name, text in SCRIPTS.items():
        (project / name).write_text(text)
    if large:  # packing takes a moment
        (project / "data").mkdir()
        for index in range(3000):
            (project / "data" / f"part-{index:05d}.txt").write_text(f"row {index}\n" * 200)
    (root / "cluster.json").write_text(json.dumps(SPEC))
    return project


def environment(host: str, root: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABRICKS_", "PYTEST_XDIST", "ARM_", "PYTEST_ADDOPTS"))
    }
    env.update(
        DATABRICKS_HOST=host,
        DATABRICKS_TOKEN=TOKEN,
        DATABRICKS_CONFIG_FILE=str(root / "no-databrickscfg"),
        PYTEST_MLPROJECT_MAX_POLL_INTERVAL="0.5",
        PYTHONUNBUFFERED="1",
        MODEL_REGISTRY_PASSWORD=PLANTED,
    )
    return env


class Session:
    """``pytest --mlproject --databricks`` in a process group of its own."""

    def __init__(self, root: Path, env: dict[str, str], *args: str) -> None:
        command = [
            sys.executable,
            "-m",
            "pytest",
            "--mlproject",
            "--databricks",
            "--databricks-cluster-spec",
            "cluster.json",
            "-k",
            "databricks",
            "-rA",
            "--junitxml=out.xml",
            *args,
        ]
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.lines.append(raw.decode("utf-8", "replace"))

    def wait_for(self, condition: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + HANG_AFTER
        while not condition():
            if self.process.poll() is not None or time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def end(self) -> tuple[int | None, bool]:
        """The exit status, and whether the session had to be killed."""
        left = HANG_AFTER - (time.monotonic() - self.started)
        try:
            code = self.process.wait(max(left, 1.0))
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return None, True
        self.reader.join(10)
        # Killed alone, an xdist controller leaves its workers to notice: count what they
        # do (they may still submit runs, and cancel them) only once they are gone too.
        deadline = time.monotonic() + HANG_AFTER
        while _group_alive(self.process.pid):
            if time.monotonic() > deadline:
                os.killpg(self.process.pid, signal.SIGKILL)
                return code, True
            time.sleep(0.1)
        return code, False

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def outcomes(output: str) -> dict[str, str]:
    found = {}
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word in ("PASSED", "FAILED", "SKIPPED") and rest.startswith("demo/MLproject::"):
            found[rest.split("::")[1]] = word.lower()
    return found


def settle(fake: Any) -> list[int]:
    """The runs still active, once cancels asked for have had time to land."""
    deadline = time.monotonic() + 30
    while fake.active_runs() and time.monotonic() < deadline:
        time.sleep(0.1)
    return list(fake.active_runs())


def count_harm(result: Result, fake: Any, root: Path, output: str, items: int) -> None:
    """Runs left active or started twice, and secrets anywhere output is kept."""
    result.left_active = len(settle(fake))
    tokens = {
        e.body["idempotency_token"]
        for e in fake.log.calls("POST", "runs/submit")
        if isinstance(e.body, dict)
    }
    runs = len(fake.run_ids())  # not through the API: the faults are still on
    result.duplicated = max(0, runs - len(tokens)) + max(0, runs - items)
    kept = [output]
    for path in [root / "out.xml", *(root / ".pytest_cache").rglob("*")]:
        if path.is_file():
            kept.append(path.read_text(errors="replace"))
    workspace_files = fake.root / "Workspace"
    for path in workspace_files.rglob("*") if workspace_files.exists() else []:
        if path.is_file():
            data = path.read_bytes()
            if path.name.endswith(".tar.gz"):
                import gzip

                data = gzip.decompress(data)
                if hashlib.sha256(path.read_bytes()).hexdigest() + ".tar.gz" != path.name:
                    result.note = "a stored archive is not whole"
                    result.escaped += 1
            kept.append(data.decode("utf-8", "replace"))
    text = "".join(kept)
    result.leaks = sum(text.count(secret) for secret in (TOKEN, PLANTED))


def first_line(output: str, *patterns: str) -> str:
    for pattern in patterns:
        for line in output.splitlines():
            if re.search(pattern, line):
                return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line.strip())[:160]
    return ""


# -- scenarios -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str
    #: What was tried, for the table.
    what: str
    run: Callable[[Scenario], Result]
    knobs: tuple[tuple[str, Any], ...] = ()
    args: tuple[str, ...] = ()
    #: entry point -> expected outcome, when the fault decides it (else ENTRIES).
    expect: tuple[tuple[str, str], ...] = ()
    phase: str = ""
    signum: int = 0
    group: bool = False
    shown: tuple[str, ...] = ()


def remote(scenario: Scenario) -> Result:
    from pytest_mlproject.testing import FakeWorkspace

    result = Result(scenario.name)
    with (
        tempfile.TemporaryDirectory(prefix="reliability-") as folder,
        FakeWorkspace(token=TOKEN, seed=random.randrange(1 << 30)) as fake,
    ):
        root = Path(folder)
        make_project(root)
        fake.faults.set(**dict(scenario.knobs))
        planted = ("--mlproject-param", f"main:greeting={PLANTED}")
        session = Session(root, environment(fake.host, root), *planted, *scenario.args)
        code, hung = session.end()
        result.seconds = time.monotonic() - session.started
        result.exit_code, result.hung = code, int(hung)
        output = session.output
        expected = {**ENTRIES, **dict(scenario.expect)}
        got = outcomes(output)
        result.items = len(expected)
        for entry, outcome in expected.items():
            actual = got.get(entry)
            if actual != outcome:
                if outcome == "passed":
                    result.false_red += 1
                else:
                    result.false_green += 1
        fake.faults.reset()
        count_harm(result, fake, root, output, len(expected))
        result.shown = first_line(output, *scenario.shown, r"1 failed|failed")
    return result


def revoked(scenario: Scenario) -> Result:
    """Credentials stop working while every run is going: nothing may pass (the outcome is
    unknown), nothing may be submitted again, and the runs end by themselves."""
    from pytest_mlproject.testing import FakeWorkspace

    result = Result(scenario.name)
    descriptor = "entry_points:\n" + "".join(
        f"  e{i}:\n    command: python slow.py 4\n" for i in range(3)
    )
    with (
        tempfile.TemporaryDirectory(prefix="reliability-") as folder,
        FakeWorkspace(token=TOKEN) as fake,
    ):
        root = Path(folder)
        make_project(root, descriptor)
        fake.faults.set(echo_auth_in_errors=True)
        session = Session(root, environment(fake.host, root))
        session.wait_for(
            lambda: sum(e.status == 200 for e in fake.log.calls("POST", "runs/submit")) == 3
        )
        fake.token = "dapi-rotated-" + "0" * 20
        code, hung = session.end()
        result.seconds = time.monotonic() - session.started
        result.exit_code, result.hung = code, int(hung)
        got = outcomes(session.output)
        result.items = 3
        result.false_green = sum(1 for outcome in got.values() if outcome == "passed")
        fake.token = TOKEN
        count_harm(result, fake, root, session.output, 3)
        result.shown = first_line(session.output, r"stopped accepting our credentials")
    return result


def gone(scenario: Scenario) -> Result:
    """The workspace stops answering while runs are going (the coordinator in this process,
    its ten minutes of patience cut to two seconds)."""
    from pytest_mlproject.databricks import session as coordination
    from pytest_mlproject.databricks.workspace import Workspace
    from pytest_mlproject.testing import FakeWorkspace

    result = Result(scenario.name, items=3)
    started = time.monotonic()
    lines: list[str] = []
    fake = FakeWorkspace(token=TOKEN).start()
    runs = coordination.Coordinator(
        profile=None,
        upload_dir="/Workspace/Shared/sweep",
        max_parallel=4,
        echo=lines.append,
        connect=lambda: Workspace.connect(host=fake.host, token=TOKEN, retry_timeout=1),
    )
    patience = coordination.LOST_CONTACT_AFTER
    coordination.LOST_CONTACT_AFTER = 2.0
    try:
        jobs = [_job(f"long{i}-{time.time_ns()}") for i in range(3)]
        runs.start(jobs)
        fake.stop()
        for job in jobs:
            runs.wait(job, deadline=time.monotonic() + HANG_AFTER)
            if job.error is None or (job.state is not None and job.state.passed):
                result.false_green += 1
        runs.close("the sweep ended")
        result.shown = next((j.error or "" for j in jobs if j.error), "")[:160]
    finally:
        coordination.LOST_CONTACT_AFTER = patience
        fake.stop()
    result.left_active = len(fake.active_runs())
    result.seconds = time.monotonic() - started
    return result


def _job(name: str) -> Any:
    from pytest_mlproject.databricks import job as coordination

    body = {
        "run_name": name,
        "idempotency_token": name,
        "timeout_seconds": 3600,
        "tasks": [
            {
                "task_key": "mlproject",
                "new_cluster": SPEC,
                "spark_python_task": {"python_file": "sleep.py", "parameters": []},
            }
        ],
    }
    script = b"import time\ntime.sleep(60)\n"
    upload = coordination.Upload("sleep.py", script)
    return coordination.Job(nodeid=name, label=name, body=body, uploads=(upload,), timeout=3600)


def interrupted(scenario: Scenario) -> Result:
    """A signal at one phase; then nothing may be left, and the next session must pass."""
    from pytest_mlproject.testing import FakeWorkspace

    result = Result(scenario.name, items=3)
    descriptor = "entry_points:\n" + "".join(
        f"  e{i}:\n    command: python slow.py 60\n" for i in range(3)
    )
    with (
        tempfile.TemporaryDirectory(prefix="reliability-") as folder,
        FakeWorkspace(token=TOKEN) as fake,
    ):
        root = Path(folder)
        project = make_project(root, descriptor, large=scenario.phase == "packing")
        if scenario.phase == "uploading":
            fake.faults.set(path_pattern="workspace/import", latency=1.5)
        elif scenario.phase == "submitting":
            fake.faults.set(path_pattern="runs/submit", latency=1.5)
        session = Session(root, environment(fake.host, root), *scenario.args)
        conditions: dict[str, Callable[[], bool]] = {
            # Collection is over ("collected N items", or xdist's "2 workers [N items]"):
            # the first Databricks item packs the projects before any request.
            "packing": lambda: any(
                re.search(r"collected|workers \[", line) for line in session.lines
            ),
            "uploading": lambda: fake.log.arrived("POST", "workspace/import") > 0,
            "submitting": lambda: fake.log.arrived("POST", "runs/submit") > 0,
            "waiting": lambda: len(fake.active_runs()) == 3,
        }
        reached = session.wait_for(conditions[scenario.phase])
        with contextlib.suppress(ProcessLookupError):  # it may have ended: counted below
            if scenario.group:
                os.killpg(session.process.pid, scenario.signum)
            else:
                session.process.send_signal(scenario.signum)
        code, hung = session.end()
        result.seconds = time.monotonic() - session.started
        result.exit_code, result.hung = code, int(hung)
        if not reached:
            result.note = "the phase was not reached"
        if code not in (2, -signal.SIGTERM):
            result.false_green += 1  # the session did not end as interrupted
        fake.faults.reset()
        count_harm(result, fake, root, session.output, 3)
        result.shown = first_line(session.output, r"cancelled run", r"KeyboardInterrupt")
        if code == -signal.SIGTERM:
            cancels = len(fake.log.calls("POST", "runs/cancel"))
            result.shown = (
                f"pytest is killed by SIGTERM; its xdist workers cancel the runs ({cancels} "
                "cancelled), without a word on the terminal"
                if fake.log.calls("POST", "runs/submit")
                else "pytest is killed by SIGTERM before any run exists (exit status -15)"
            )
        # The next session, in the same folder, against the same workspace.
        (project / "slow.py").write_text("print('quick now')\n")
        fake.log.clear()
        following = Session(root, environment(fake.host, root))
        next_code, next_hung = following.end()
        if (
            next_code != 0
            or next_hung
            or outcomes(following.output) != dict.fromkeys(("e0", "e1", "e2"), "passed")
        ):
            result.next_failed = 1
    return result


#: Projects no one should have to check, and the code each must fail with (None: passes).
HOSTILE: dict[str, tuple[dict[str, str | bytes | None], str | None]] = {
    "good": ({}, None),
    "alias-bomb": (
        {
            "MLproject": "\n".join(
                ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
                + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
            )
            + "\n"
        },
        "MLP104",
    ),
    "recursive": ({"MLproject": "a: &a [1, *a]\n"}, "MLP104"),
    "deep": ({"MLproject": "a: " + "[" * 5000 + "]" * 5000 + "\n"}, "MLP101"),
    "nested": ({"MLproject": "a: " + "[" * 40 + "]" * 40 + "\n"}, "MLP103"),
    "binary": ({"MLproject": bytes(range(256))}, "MLP105"),
    "latin-1": ({"MLproject": "name: caf\xe9\n".encode("latin-1")}, "MLP105"),
    "huge": ({"MLproject": None}, "MLP102"),
    "env-fifo": ({"MLproject": "conda_env: conda.yaml\n", "conda.yaml": None}, "MLP309"),
    "env-huge": ({"MLproject": "python_env: env.yaml\n", "env.yaml": None}, "MLP308"),
    "spec-device": (
        {"pytest-mlproject.yaml": "databricks:\n  cluster_spec: /dev/zero\n"},
        "MLP803",
    ),
    "settings-bomb": ({"pytest-mlproject.yaml": "a: &a [1, *a]\n"}, "MLP801"),
    "link-out": ({"MLproject": None}, "MLP106"),
}


def hostile(scenario: Scenario) -> Result:
    """Every project of HOSTILE in one repository, with link loops, and 5,000 parameters."""
    result = Result(scenario.name, items=len(HOSTILE) + 1)
    good = "entry_points:\n  main:\n    command: python train.py\n"
    with tempfile.TemporaryDirectory(prefix="reliability-") as folder:
        root = Path(folder) / "repo"
        root.mkdir()
        (root / "pytest.ini").write_text("[pytest]\n")
        for name, (files, _) in HOSTILE.items():
            project = root / name
            project.mkdir()
            (project / "train.py").write_text("")
            if "MLproject" not in files:
                (project / "MLproject").write_text(good)
            for file, content in files.items():
                path = project / file
                if isinstance(content, bytes):
                    path.write_bytes(content)
                elif content is None and name == "link-out":
                    path.symlink_to("/etc/hostname")
                elif content is None and "fifo" in name:
                    os.mkfifo(path)
                elif content is None:
                    with path.open("wb") as handle:
                        handle.write(b"# huge\n")
                        handle.truncate(100 * 1024 * 1024)
                else:
                    suffix = good if file == "MLproject" and "entry_points" not in content else ""
                    path.write_text(content + suffix)
        (root / "good" / "to-deep").symlink_to("../deep")
        (root / "deep" / "to-good").symlink_to("../good")
        (root / "deep" / "to-good-again").symlink_to("../good")
        many = root / "many"
        many.mkdir()
        params = "".join(f"      p{i}: {{type: float, default: {i}}}\n" for i in range(5000))
        used = " ".join(f"--p{i} {{p{i}}}" for i in range(5000))
        (many / "MLproject").write_text(
            f'entry_points:\n  main:\n    parameters:\n{params}    command: "python t.py {used}"\n'
        )
        (many / "t.py").write_text("")
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "pytest", "--mlproject", "-p", "no:cacheprovider", "-q", "-rf"],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        timer = threading.Timer(HANG_AFTER, process.kill)
        timer.start()
        assert process.stdout is not None
        output = process.stdout.read().decode("utf-8", "replace")
        _, status, usage = os.wait4(process.pid, 0)
        timer.cancel()
        result.seconds = time.monotonic() - started
        result.exit_code = os.waitstatus_to_exitcode(status)
        result.hung = int(result.exit_code == -signal.SIGKILL)
        result.peak_rss_mb = usage.ru_maxrss / 1024
        for name, (_, code) in HOSTILE.items():
            failed = f"FAILED {name}/MLproject::spec" in output
            said = code is not None and re.search(rf"\b{name}/[\w.-]+:\d+: {code} ", output)
            if code is None:
                result.false_red += int(failed)
            elif not failed or not said:
                result.escaped += 1
                result.note += f" {name}"
        result.escaped += output.count("pytest-mlproject failed while reading")
        result.escaped += int("many/MLproject::main::check" in output and "FAILED many" in output)
        result.shown = first_line(output, r"passed|failed")
    return result


_BREAKOUTS = [
    "$(touch {canary})",
    "`touch {canary}`",
    "'; touch {canary}; '",
    '"; touch {canary}; "',
    "a\ntouch {canary}",
    "\\'; touch {canary} #",
    "$'\\x27'; touch {canary}",
    "&& touch {canary}",
    "| touch {canary}",
    "> {canary}",
    "${IFS}touch${IFS}{canary}",
    "{{}}; touch {canary}",
]


def mutated(rng: random.Random, canary: Path) -> str:
    """A value built to break out of quoting: break-outs spliced into random text."""
    alphabet = "'\"\\$`;&|<>(){}[]*?!#~=%\n\t -abc"
    parts = []
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.5:
            parts.append(rng.choice(_BREAKOUTS).replace("{canary}", str(canary)))
        else:
            parts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))))
    return "".join(parts)


def commands_fuzz(scenario: Scenario, count: int = 1500) -> Result:
    """Parameter values and keys, as ``--mlproject-param`` gives them, rendered and run."""
    from pytest_mlproject import commands, spec

    result = Result(scenario.name, items=count)
    rng = random.Random(time.time_ns())
    started = time.monotonic()
    entry = spec.EntryPoint(
        "main",
        "printf '%s\\0' {p} --q={q} x{p}y",
        {n: spec.Parameter(n, "string", "d", 1) for n in ("p", "q")},
        1,
    )
    with tempfile.TemporaryDirectory(prefix="reliability-") as folder:
        canary = Path(folder) / "canary"
        for _ in range(count):
            p, q, extra = (mutated(rng, canary) for _ in range(3))
            key = mutated(rng, canary).replace("=", "") or "k"
            if key in ("p", "q"):
                continue
            try:
                specs = commands.parse_param_specs(
                    [f"main:p={p}", f"main:q={q}", f"main:{key}={extra}"]
                )
            except commands.ParameterError:
                continue  # refused as a spec: nothing rendered
            command = commands.render_command(entry, commands.user_parameters(entry, specs))
            words = subprocess.run(
                ["bash", "-c", command], cwd=folder, capture_output=True, check=False
            ).stdout.split(b"\0")[:-1]
            expected = [p, f"--q={q}", f"x{p}y", f"--{key}", extra]
            if canary.exists() or [w.decode("utf-8", "replace") for w in words] != expected:
                result.escaped += 1
                result.note = f"escaped: {shlex.quote(command)[:120]}"
                canary.unlink(missing_ok=True)
    result.seconds = time.monotonic() - started
    result.shown = f"{count} renders, each one word per value"
    return result


def scenarios() -> list[Scenario]:
    every = r"trying again in .*"
    found = [
        Scenario("baseline", "no fault", remote, shown=(r"entry point 'fails'",)),
        Scenario(
            "429",
            "30% of requests answered 429 (Retry-After: 0), every endpoint",
            remote,
            (("error_rate", 0.3), ("error_status", 429), ("retry_after", 0)),
            shown=(every,),
        ),
        Scenario(
            "503",
            "30% of requests answered 503, every endpoint",
            remote,
            (("error_rate", 0.3), ("error_status", 503), ("retry_after", 0)),
            shown=(every,),
        ),
        Scenario(
            "500",
            "30% of requests answered 500 (not retried by the SDK), every endpoint",
            remote,
            (("error_rate", 0.3), ("error_status", 500)),
            shown=(every,),
        ),
        Scenario(
            "dropped",
            "20% of connections dropped after the request was handled",
            remote,
            (("drop_rate", 0.2),),
        ),
        Scenario(
            "mixed",
            "20% answered 500 and 10% dropped, with a server quoting the Authorization header",
            remote,
            (
                ("error_rate", 0.2),
                ("error_status", 500),
                ("drop_rate", 0.1),
                ("echo_auth_in_errors", True),
            ),
            shown=(every,),
        ),
        Scenario(
            "slow",
            "every answer 0.5 s late",
            remote,
            (("latency", 0.5),),
        ),
        Scenario(
            "pending",
            "runs pending for 8 polls, clusters 3 s to start",
            remote,
            (("pending_polls", 8), ("cluster_start_seconds", 3.0)),
        ),
        Scenario(
            "internal-error",
            "every run ends INTERNAL_ERROR",
            remote,
            (("run_outcome", "INTERNAL_ERROR"),),
            expect=tuple((entry, "failed") for entry in ENTRIES),
            shown=(r"INTERNAL_ERROR",),
        ),
        Scenario(
            "skipped",
            "every run ends SKIPPED",
            remote,
            (("run_outcome", "SKIPPED"),),
            expect=tuple((entry, "failed") for entry in ENTRIES),
            shown=(r"SKIPPED",),
        ),
        Scenario(
            "xdist-faults",
            "-n 2, 20% answered 500 and 10% dropped",
            remote,
            (("error_rate", 0.2), ("error_status", 500), ("drop_rate", 0.1)),
            args=("-n", "2"),
        ),
        Scenario("revoked", "credentials revoked while the runs are going", revoked),
        Scenario("gone", "the workspace goes away while the runs are going", gone),
        Scenario("hostile-input", "a repository of hostile projects", hostile),
        Scenario("commands", "random values and keys built to break out of quoting", commands_fuzz),
    ]
    for phase in ("packing", "uploading", "submitting", "waiting"):
        for signum in (signal.SIGINT, signal.SIGTERM):
            for xdist in (False, True):
                group = xdist and signum == signal.SIGINT  # Ctrl-C in a terminal
                name = f"{signal.Signals(signum).name}-{phase}{'-xdist' if xdist else ''}"
                found.append(
                    Scenario(
                        name,
                        f"{signal.Signals(signum).name} while {phase}"
                        + (" under -n 2 (to the group)" if group else "")
                        + (" under -n 2 (to the controller)" if xdist and not group else ""),
                        interrupted,
                        args=("-n", "2") if xdist else (),
                        phase=phase,
                        signum=signum,
                        group=group,
                    )
                )
    return found


# -- the sweep -----------------------------------------------------------------------------------


def summarize(results: list[Result], chosen: list[Scenario], cut: dict[str, int]) -> list[Any]:
    rows = []
    for scenario in chosen:
        mine = [r for r in results if r.scenario == scenario.name]
        if not mine:
            continue
        total = {
            field: sum(getattr(r, field) for r in mine)
            for field in (
                "items",
                "false_red",
                "false_green",
                "duplicated",
                "left_active",
                "leaks",
                "hung",
                "next_failed",
                "escaped",
            )
        }
        rows.append(
            {
                "scenario": scenario.name,
                "what": scenario.what,
                "sessions": len(mine),
                "cut": cut.get(scenario.name, 0),
                **total,
                "max_seconds": round(max(r.seconds for r in mine), 1),
                "peak_rss_mb": round(max(r.peak_rss_mb for r in mine), 1),
                "shown": next((r.shown for r in mine if r.shown), ""),
                "notes": sorted({r.note.strip() for r in mine if r.note.strip()}),
            }
        )
    return rows


SAME = "the same outcomes as with no fault; the session takes longer"
RETRYING = (
    SAME + ", with lines such as `Databricks: demo::main: trying again in 0.5 s: Uploading "
    "...: Databricks answered INTERNAL_ERROR: ...` while it tries again"
)
SEES = {
    "baseline": "3 passed, 1 failed: `entry point 'fails' on Databricks, run N: TERMINATED "
    "FAILED (RUN_EXECUTION_ERROR: ...)`, the run page and the end of the run's log",
    "429": SAME,
    "503": SAME,
    "500": RETRYING,
    "dropped": SAME,
    "mixed": RETRYING + "; the header the server quotes shows as `***`",
    "slow": SAME,
    "pending": SAME,
    "internal-error": "every item fails: `run N: INTERNAL_ERROR (Run encountered an unexpected "
    "error in the Databricks platform.)`",
    "skipped": "every item fails: `run N: SKIPPED (Run was skipped.)`",
    "xdist-faults": SAME,
    "revoked": "every item fails: `run N: the workspace stopped accepting our credentials: "
    "Reading run N (jobs/runs/get): Databricks answered UNAUTHENTICATED: ...`",
    "gone": "every item fails: `lost contact with the workspace: Reading run N "
    "(jobs/runs/get): gave up after ... of retries; last: connection refused` (after ten "
    "minutes in a real session, two seconds here)",
    "hostile-input": "each hostile project is one failing `::spec` item with its code "
    "(MLP101-MLP106, MLP308, MLP309, MLP801, MLP803); the good project and the one with 5,000 "
    "parameters pass; no duplicate items from the link loop",
    "commands": "every value and key arrives as one word; nothing else runs",
}


def sees(name: str) -> str:
    """What the user sees, in words (checked against the lines the sweep kept)."""
    if name in SEES:
        return SEES[name]
    signum, _, rest = name.partition("-")
    phase = rest.removesuffix("-xdist")
    if rest.endswith("-xdist"):
        if signum == "SIGINT":
            return (
                "pytest's `KeyboardInterrupt`; the workers cancel what they submitted, "
                "without a line on the terminal"
            )
        return (
            "pytest dies at once (exit status -15); its workers notice, cancel whatever they "
            "submitted (they may still submit what they had prepared), and end, without a "
            "line on the terminal"
        )
    if phase in ("packing", "uploading"):
        if signum == "SIGTERM" and phase == "packing":
            return "pytest dies at once (exit status -15); no run exists yet"
        return (
            "pytest's `KeyboardInterrupt`"
            + (" (`signal 15`)" if signum == "SIGTERM" else "")
            + "; no run exists yet"
        )
    return (
        "`Databricks: cancelled run N (demo::e0): the session stopped early` for each run "
        "submitted, then pytest's `KeyboardInterrupt`"
        + (" (`signal 15`)" if signum == "SIGTERM" else "")
    )


COUNTS = (
    ("false_red", "false red"),
    ("false_green", "false green"),
    ("duplicated", "run started twice"),
    ("left_active", "run left active"),
    ("leaks", "secret shown"),
    ("hung", "hung"),
    ("next_failed", "next session failed"),
    ("escaped", "got past"),
)


def markdown(rows: list[Any]) -> str:
    """The table for docs/reliability.md, then every count."""
    lines = [
        "| fault or hostile input | sessions | items | what the user sees | what was lost |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lost = ", ".join(f"{r[k]} {label}" for k, label in COUNTS if r[k]) or "nothing"
        lines.append(
            f"| {r['what']} | {r['sessions']} | {r['items']} | {sees(r['scenario'])} | {lost} |"
        )
    lines += [
        "",
        "| scenario | " + " | ".join(label for _, label in COUNTS) + " | longest session (s) |",
        "| --- " * (len(COUNTS) + 2) + "|",
    ]
    for r in rows:
        counts = " | ".join(str(r[k]) for k, _ in COUNTS)
        lines.append(f"| {r['scenario']} | {counts} | {r['max_seconds']} |")
    kept = [f"- `{r['scenario']}`: {r['shown']}" for r in rows if r["shown"]]
    return "\n".join([*lines, "", "A line each session printed, as kept:", "", *kept, ""])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="sessions per scenario")
    parser.add_argument("--jobs", type=int, default=3, help="sessions at a time")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds; then stop")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names")
    parser.add_argument(
        "--report", action="store_true", help="print the tables of the last sweep again"
    )
    options = parser.parse_args()
    if options.report:
        print(markdown(json.loads((OUT / "reliability.json").read_text())["rows"]))
        return 0
    import logging

    import databricks.sdk  # noqa: F401 - loaded once, before the sessions' threads

    # The SDK warns on every client it builds here that the fake has no host metadata.
    logging.getLogger("databricks.sdk").setLevel(logging.ERROR)

    chosen = [s for s in scenarios() if options.only is None or s.name in options.only]
    queue = [s for _ in range(options.rounds) for s in chosen]  # round by round
    started = time.monotonic()
    results: list[Result] = []
    cut: dict[str, int] = {}
    # The coordinator of `gone` patches a module constant: it runs alone, after the rest.
    serial = [s for s in queue if s.name == "gone"]
    parallel = [s for s in queue if s.name != "gone"]

    def one(scenario: Scenario) -> Result | None:
        if time.monotonic() - started > options.budget:
            cut[scenario.name] = cut.get(scenario.name, 0) + 1
            return None
        try:
            result = scenario.run(scenario)
        except Exception as exc:  # a failure of the sweep itself: counted, not hidden
            result = Result(scenario.name, note=f"sweep error: {exc!r}", escaped=1)
        _log(
            f"{time.monotonic() - started:6.0f} s  {scenario.name:24} {result.seconds:5.1f} s  "
            + " ".join(
                f"{k}={v}"
                for k, v in dataclasses.asdict(result).items()
                if isinstance(v, int) and v and k not in ("items", "exit_code")
            )
        )
        return result

    with concurrent.futures.ThreadPoolExecutor(options.jobs) as pool:
        for found in pool.map(one, parallel):
            if found is not None:
                results.append(found)
    for scenario in serial:
        found = one(scenario)
        if found is not None:
            results.append(found)
    rows = summarize(results, chosen, cut)
    OUT.mkdir(exist_ok=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    meta = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "rounds": options.rounds,
        "jobs": options.jobs,
        "budget": options.budget,
        "seconds": round(time.monotonic() - started, 1),
        "children_cpu_seconds": round(children.ru_utime + children.ru_stime, 1),
    }
    (OUT / "reliability.json").write_text(
        json.dumps(
            {"meta": meta, "rows": rows, "sessions": [dataclasses.asdict(r) for r in results]},
            indent=2,
        )
    )
    text = markdown(rows)
    (OUT / "reliability.md").write_text(text)
    print(text)
    print(f"{len(results)} sessions in {meta['seconds']} s; cut by the budget: {sum(cut.values())}")
    harm = sum(
        r[k]
        for r in rows
        for k in ("false_red", "false_green", "duplicated", "left_active", "leaks", "hung")
    )
    harm += sum(r["next_failed"] + r["escaped"] for r in rows)
    return 1 if harm else 0


if __name__ == "__main__":
    sys.exit(main())
