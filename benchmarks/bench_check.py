"""How long ``pytest --mlproject`` takes to check N descriptors, beside what it cannot beat.

Run from the repository root with the project's virtualenv (``pip install -e '.[benchmark]'``
brings MLflow's loader, for ``--extra``)::

    .venv/bin/python benchmarks/bench_check.py        # 100, 2,220, 10,000; start-up; both installs
    .venv/bin/python benchmarks/bench_check.py --sizes 2220 --pairs 9 --startup 0
    .venv/bin/python benchmarks/bench_check.py --plugin-commit HEAD   # a commit, not the tree

For each size N, the 111 corpus cases (``$MLPROJECT_CORPUS``, default ``../shared/corpus``)
are copied, whole folders, into a temporary tree, cycling through the cases with a numeric
suffix until there are N folders. The tree is deleted afterwards; nothing is written into the
repository but the results, in ``benchmarks/out/`` (git-ignored), and bytecode. Each runner is
a process of its own, timed from start to exit, its CPU time and peak RSS taken from its own
rusage:

``ours``
    ``pytest --mlproject -p no:cacheprovider -q``, default warning handling (no ``-W``) and
    default ``--tb``: the corpus's failures and warnings are reported as a user sees them.
``floor``
    the same pytest command with the real plugin disabled (``-p no:mlproject``) and
    ``floor_plugin.py`` instead: the same nodes, failing and warning on the same items with
    the same text (recorded from an untimed run of ours with ``record_outcomes.py``), and
    doing nothing but parse each descriptor with PyYAML's C loader.

Ours and the floor run in ``--pairs`` alternating pairs; the figure is the median of the
pairs' ratios, so that the load of a shared machine falls on both sides alike. With
``--extra``, once a pair: ``floor-pass`` (every item passing), ``ours-tb-line`` and
``floor-tb-line`` (``--tb=line``, which skips pytest's per-failure scan of every report,
quadratic in a session this size), ``mlflow`` (a loop over MLflow's ``load_project``) and
``yaml`` (a loop of ``yaml.load(f, Loader=yaml.CSafeLoader)``).

``--install`` says how the plugin is installed (see :class:`Install`): ``editable`` (the
project's virtualenv) and ``wheel`` (a wheel of the working tree, or of ``--plugin-commit``,
installed by pip into a fresh virtualenv). Untimed runs write bytecode for both sides (and
pytest's rewritten plugin modules); timed runs only read it. ``--startup ROUNDS`` compares
``pytest --mlproject`` with ``pytest -p no:mlproject`` (the goal's baseline) and with the floor
on one descriptor, in rounds of the three through all six orders. Results go to
``benchmarks/out/bench_check.json`` and ``.md``; ``--profile`` adds a cProfile of ours and of
the floor at the largest size.

Times on a shared machine move with its neighbours' work, by tens of percent from one run to
the next. ``--instructions`` adds a count that does not: each side once more under valgrind
(``cachegrind`` without its cache simulation), which counts the instructions the process
executes in user space; with ``--pairs 0`` nothing is timed, and the run may then go on
beside other work.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "out"
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
DESCRIPTOR_NAMES = frozenset({"mlproject", "mlproject.yaml", "mlproject.yml"})
PYTEST_FLAGS = ("-p", "no:cacheprovider", "-q")
FLOOR_FLAGS = ("-p", "no:mlproject", "-p", "floor_plugin")
TREE = "projects"
LABELS = {
    "ours": "ours",
    "floor": "floor",
    "floor-pass": "floor, all pass",
    "ours-tb-line": "ours --tb=line",
    "floor-tb-line": "floor --tb=line",
    "mlflow": "MLflow loader",
    "yaml": "bare YAML",
}
RUNNERS = tuple(LABELS)
#: The two runners measured in alternating pairs; the others, with --extra, once a pair.
PAIR = ("ours", "floor")
_SINGULAR = {"warnings": "warning", "errors": "error"}
_COUNT = re.compile(r"(\d+) (failed|passed|skipped|errors?|warnings?|xfailed|xpassed)\b")


@dataclass(frozen=True)
class Measurement:
    """One process: wall time, CPU time (user + system) and peak resident set size."""

    seconds: float
    cpu_seconds: float
    max_rss_mib: float
    returncode: int
    summary: str
    #: The 1-minute load average when it started: other work on the machine skews a run.
    load_before: float


@dataclass
class Result:
    runner: str
    runs: list[Measurement] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return statistics.median(run.seconds for run in self.runs)

    @property
    def cpu_seconds(self) -> float:
        return statistics.median(run.cpu_seconds for run in self.runs)

    @property
    def max_rss_mib(self) -> float:
        return max(run.max_rss_mib for run in self.runs)


@dataclass(frozen=True)
class Tree:
    """A temporary copy of N corpus cases, and what a real run of ours found in it."""

    root: Path
    #: The interpreter of the install measured (see :class:`Install`).
    python: str
    env: dict[str, str]
    folders: list[Path]
    descriptors: list[Path]
    record: Path
    items: int
    failing: int
    warning_items: int
    warnings: int

    @property
    def exit_code(self) -> int:
        """How ours, and the floor replaying it, end on this tree: 1 if an item fails."""
        return 1 if self.failing else 0


# --- the tree ---------------------------------------------------------------------------


def corpus_cases(corpus: Path) -> list[Path]:
    projects = corpus / "projects"
    if not projects.is_dir():
        sys.exit(f"bench_check: no corpus at {corpus} (set MLPROJECT_CORPUS)")
    return sorted(path for path in projects.iterdir() if path.is_dir())


def copy_cases(cases: Sequence[Path], size: int, target: Path) -> list[Path]:
    """Copy whole case folders into ``target``: every case once, then again with ``__1``..."""
    folders = []
    for index in range(size):
        case = cases[index % len(cases)]
        round_ = index // len(cases)
        folder = target / (case.name if round_ == 0 else f"{case.name}__{round_}")
        shutil.copytree(case, folder, symlinks=True)
        folders.append(folder)
    return folders


def descriptors_in(folders: Sequence[Path]) -> list[Path]:
    return [
        path
        for folder in folders
        for path in sorted(folder.iterdir())
        if path.name.lower() in DESCRIPTOR_NAMES
    ]


def export_plugin(ref: str, target: Path) -> str:
    """Put ``pytest_mlproject/`` as of ``ref`` into ``target``; return the commit's id."""
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}").strip()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", "--format=tar", commit, "pytest_mlproject"],
        check=True,
        capture_output=True,
    ).stdout
    target.mkdir()
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return commit


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True
    ).stdout


# --- running and measuring --------------------------------------------------------------


def measure(command: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> Measurement:
    """Run ``command`` to completion; its own rusage (``wait4``) gives CPU time and peak RSS."""
    load_before = os.getloadavg()[0]
    with log.open("wb") as output:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=output)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    lines = log.read_text("utf-8", errors="replace").strip().splitlines()
    return Measurement(
        seconds=seconds,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        max_rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        returncode=process.returncode,
        summary=lines[-1] if lines else "",
        load_before=load_before,
    )


def base_env(plugin: Path | None) -> dict[str, str]:
    """The caller's environment without pytest's own variables; ``plugin`` first on the path.

    Bytecode may be written: the untimed runs (calibration, the floor's collection check)
    leave both sides' ``.pyc`` files, and pytest's rewritten ones for plugin modules, where
    a user's first run leaves them. Timed runs only read them (:func:`timed`).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if plugin is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin), env.get("PYTHONPATH")]))
    return env


def with_benchmarks_on_path(env: dict[str, str], **extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(HERE)]))
    return {**env, "PYTHONPATH": path, **extra}


def timed(env: dict[str, str]) -> dict[str, str]:
    """A timed run changes nothing on disk, for ours and the floor alike."""
    return {**env, "PYTHONDONTWRITEBYTECODE": "1"}


def pytest_command(python: str, *flags: str) -> list[str]:
    return [python, "-m", "pytest", *PYTEST_FLAGS, *flags, TREE]


def runner_command(runner: str, tree: Tree) -> tuple[list[str], dict[str, str]]:
    tb_line = ("--tb=line",) if runner.endswith("-tb-line") else ()
    if runner.startswith("ours"):
        return pytest_command(tree.python, "--mlproject", *tb_line), tree.env
    if runner.startswith("floor"):
        env = with_benchmarks_on_path(tree.env)
        if runner != "floor-pass":
            env["MLPROJECT_FLOOR_OUTCOMES"] = str(tree.record)
        return pytest_command(tree.python, *FLOOR_FLAGS, *tb_line), env
    paths = tree.folders if runner == "mlflow" else tree.descriptors
    listing = tree.root / f"{runner}-paths.txt"
    listing.write_text("".join(f"{path}\n" for path in paths), "utf-8")
    return [tree.python, str(HERE / "loops.py"), runner, str(listing)], tree.env


def counts(summary: str) -> dict[str, int]:
    """``3 failed, 10 passed, 4 warnings in 1.2s`` as ``{"failed": 3, ...}``."""
    found = {_SINGULAR.get(kind, kind): int(n) for n, kind in _COUNT.findall(summary)}
    return {key: found.get(key, 0) for key in ("failed", "passed", "warning", "error")}


def run_once(runner: str, tree: Tree) -> Measurement:
    """Measure one runner; stop the benchmark if it did not do what it stands for."""
    command, env = runner_command(runner, tree)
    log = tree.root / f"{runner}.log"
    result = measure(command, tree.root, timed(env), log)
    replays_ours = runner.startswith(("ours", "floor")) and runner != "floor-pass"
    expected = tree.exit_code if replays_ours else 0
    if result.returncode != expected:
        tail = "\n".join(log.read_text("utf-8", errors="replace").splitlines()[-20:])
        sys.exit(f"bench_check: {runner} exited with {result.returncode}:\n{tail}")
    found = counts(result.summary)
    if replays_ours and (found["failed"], found["warning"]) != (tree.failing, tree.warnings):
        sys.exit(f"bench_check: {runner} did not fail and warn as recorded: {result.summary}")
    if runner == "floor-pass" and (found["passed"], found["warning"]) != (tree.items, 0):
        sys.exit(f"bench_check: floor-pass did not pass every item: {result.summary}")
    return result


# --- calibration ------------------------------------------------------------------------


def build_tree(root: Path, cases: Sequence[Path], size: int, install: Install) -> Tree:
    """Copy the cases, then run ours once (untimed) to record which items fail and warn."""
    (root / "pytest.ini").write_text("[pytest]\n", "utf-8")  # rootdir; no ini search upward
    folders = copy_cases(cases, size, root / TREE)
    record = root / "outcomes.json"
    env = base_env(install.plugin_path)
    recording = with_benchmarks_on_path(env, MLPROJECT_BENCH_RECORD=str(record))
    command = pytest_command(install.python, "--mlproject", "-p", "record_outcomes")
    run = measure(command, root, recording, root / "calibrate.log")
    data = json.loads(record.read_text("utf-8"))
    outcomes: dict[str, dict[str, Any]] = data["outcomes"]
    tree = Tree(
        root=root,
        python=install.python,
        env=env,
        folders=folders,
        descriptors=descriptors_in(folders),
        record=record,
        items=len(data["nodeids"]),
        failing=sum(1 for o in outcomes.values() if o["failure"] is not None),
        warning_items=sum(1 for o in outcomes.values() if o["warnings"]),
        warnings=sum(len(o["warnings"]) for o in outcomes.values()),
    )
    found = counts(run.summary)
    if (found["failed"], found["warning"]) != (tree.failing, tree.warnings):
        sys.exit(f"bench_check: the calibration run disagrees with its record: {run.summary}")
    check_floor_collects_ours(tree, data["nodeids"])
    return tree


def check_floor_collects_ours(tree: Tree, nodeids: list[str]) -> None:
    command, env = runner_command("floor-pass", tree)
    command.insert(-1, "--collect-only")
    log = tree.root / "floor-collect.log"
    measure(command, tree.root, env, log)
    collected = [line for line in log.read_text("utf-8").splitlines() if "::" in line]
    if sorted(collected) != sorted(nodeids):
        missing = sorted(set(nodeids) - set(collected))[:5]
        extra = sorted(set(collected) - set(nodeids))[:5]
        sys.exit(f"bench_check: the floor's nodes differ from ours: {missing=} {extra=}")


def plugin_imported(tree: Tree) -> str:
    """Where the runs import the plugin from (run where they run: the current folder counts)."""
    code = "import pytest_mlproject; print(pytest_mlproject.__file__)"
    return subprocess.run(
        [tree.python, "-c", code],
        cwd=tree.root,
        env=tree.env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


# --- installs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Install:
    """How the plugin is installed for the runs: its interpreter, and a folder to put first on
    ``PYTHONPATH`` (``--plugin-commit`` with an editable install)."""

    name: str
    python: str
    plugin_path: Path | None = None
    commit: str | None = None


def editable_install(root: Path, plugin_ref: str | None) -> Install:
    """The project's own virtualenv, where ``pip install -e`` put the working tree; with a
    commit, that commit's ``pytest_mlproject/`` first on the path instead."""
    if plugin_ref is None:
        return Install("editable", sys.executable)
    plugin = root / "plugin"
    commit = export_plugin(plugin_ref, plugin)
    return Install("editable", sys.executable, plugin, commit)


def wheel_install(root: Path, plugin_ref: str | None) -> Install:
    """A fresh virtualenv with the wheel built from the working tree (or a commit) installed
    by pip, as users install a release; the dependencies are those of the project's virtualenv
    (a ``.pth`` line), so both installs run the same pytest and PyYAML."""
    source, commit = REPO, None
    if plugin_ref is not None:
        commit = git("rev-parse", "--verify", f"{plugin_ref}^{{commit}}").strip()
        source = root / "source"
        source.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", commit],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive, check=True)
    wheels = root / "wheel"
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(source)], check=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    (Path(site) / "bench_dependencies.pth").write_text(f"{ours}\n", "utf-8")
    wheel = next(wheels.glob("pytest_mlproject-*.whl"))
    # pip compiles the installed modules, as it does for users.
    # --ignore-installed: leave the editable install in the running environment alone.
    install = [*pip, "install", "--no-deps", "--ignore-installed", "--prefix", str(venv)]
    subprocess.run([*install, str(wheel)], check=True)
    return Install("wheel", python, None, commit)


INSTALLS = {"editable": editable_install, "wheel": wheel_install}


# --- the benchmark ----------------------------------------------------------------------


@dataclass
class SizeResult:
    install: str
    tree: Tree
    results: dict[str, Result]
    profiles: dict[str, Any]
    plugin_file: str
    #: Instructions each runner executed (``--instructions``): one run each, under valgrind.
    instructions: dict[str, int] = field(default_factory=dict)

    def pair_ratios(self, what: str) -> list[float]:
        if "ours" not in self.results:  # --pairs 0
            return []
        ours, floor = self.results["ours"].runs, self.results["floor"].runs
        return [getattr(a, what) / getattr(b, what) for a, b in zip(ours, floor, strict=True)]

    def ratio(self, what: str) -> float:
        """The median of the pairs' ratios, ours / floor: load falls on both of a pair."""
        return statistics.median(self.pair_ratios(what))

    @property
    def loads(self) -> list[float]:
        return [run.load_before for result in self.results.values() for run in result.runs]


def bench_size(
    cases: Sequence[Path],
    size: int,
    pairs: int,
    install: Install,
    root: Path,
    *,
    profile: bool,
    extra: bool,
    instructions: bool = False,
) -> SizeResult:
    """``pairs`` alternating pairs of ours and the floor (ours first in every other pair),
    with ``extra`` the other runners once a pair, and with ``instructions`` one run each of
    ours and the floor under valgrind."""
    with tempfile.TemporaryDirectory(prefix=f"bench-mlproject-{size}-", dir=root) as name:
        folder = Path(name)
        say(f"{install.name} N={size}: copying and calibrating in {folder}")
        tree = build_tree(folder, cases, size, install)
        results = {runner: Result(runner) for runner in RUNNERS}
        others = [r for r in RUNNERS if r not in PAIR] if extra else []
        for index in range(pairs):
            order = PAIR if index % 2 == 0 else PAIR[::-1]
            for runner in (*order, *others):
                run = run_once(runner, tree)
                results[runner].runs.append(run)
                say(
                    f"{install.name} N={size} pair {index + 1}/{pairs} {runner}: "
                    f"{run.seconds:.2f} s, {run.cpu_seconds:.2f} s CPU, "
                    f"{run.max_rss_mib:.0f} MiB, load {run.load_before:.2f}"
                )
        results = {name: result for name, result in results.items() if result.runs}
        profiles = profile_runs(tree) if profile else {}
        counted: dict[str, int] = {}
        if instructions:
            for runner in PAIR:
                command, env = runner_command(runner, tree)
                counted[runner] = count_instructions(
                    command, tree.root, timed(env), (tree.exit_code,)
                )
                say(f"{install.name} N={size} {runner}: {counted[runner]:,} instructions")
        return SizeResult(install.name, tree, results, profiles, plugin_imported(tree), counted)


# --- instructions -----------------------------------------------------------------------

#: Valgrind's cachegrind without its cache simulation: it counts the instructions a process
#: executes in user space, the same from run to run (within 0.1% here), however loaded the
#: machine is. Kernel time (system calls such as ``stat``) is not in the count.
VALGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")
_INSTRUCTIONS = re.compile(r"^==\d+== I\s+refs:\s+([\d,]+)\s*$", re.MULTILINE)


def count_instructions(
    command: Sequence[str], cwd: Path, env: dict[str, str], expected: tuple[int, ...]
) -> int:
    """Run ``command`` once under valgrind (``parse_args`` made sure it is there); the
    instructions it executed."""
    process = subprocess.run(
        [*VALGRIND, *command], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    found = _INSTRUCTIONS.findall(process.stderr)
    if process.returncode not in expected or len(found) != 1:
        tail = process.stderr.strip().splitlines()[-3:]
        sys.exit(f"bench_check: {' '.join(command)} under valgrind: {process.returncode} {tail}")
    return int(found[0].replace(",", ""))


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- start-up ---------------------------------------------------------------------------


@dataclass
class StartupResult:
    install: str
    ours: list[Measurement]
    without: list[Measurement]
    floor: list[Measurement]
    instructions: dict[str, int] = field(default_factory=dict)

    def differences_ms(self, what: str, against: str = "without") -> list[float]:
        """Ours minus ``against`` (``without`` or ``floor``), round by round."""
        others: list[Measurement] = getattr(self, against)
        return [
            1000 * (getattr(a, what) - getattr(b, what))
            for a, b in zip(self.ours, others, strict=True)
        ]


STARTUP_RUNNERS = ("ours", "floor", "without")
#: Round n runs the three in the n-th of these orders: over six rounds each side runs first,
#: second and third twice, and before each other side three times.
STARTUP_ORDERS = tuple(itertools.permutations(STARTUP_RUNNERS))


def bench_startup(
    case: Path, rounds: int, install: Install, root: Path, *, instructions: bool = False
) -> StartupResult:
    """One descriptor, in ``rounds`` rounds through the six orders: ``pytest --mlproject``;
    ``pytest -p no:mlproject`` on the same tree (which collects nothing), the goal's baseline;
    and the floor on the same tree (the same items, replaying ours' failures and warnings),
    which shows how much of the difference any plugin giving these items pays (PyYAML's
    import, pytest running two items)."""
    with tempfile.TemporaryDirectory(prefix="bench-mlproject-startup-", dir=root) as name:
        tree = build_tree(Path(name), [case], 1, install)  # untimed: bytecode, outcomes
        commands = {
            "ours": runner_command("ours", tree),
            "floor": runner_command("floor", tree),
            "without": (pytest_command(install.python, "-p", "no:mlproject"), tree.env),
        }
        # The floor replays ours' failures; 5: nothing collected.
        expected = {"ours": (tree.exit_code,), "floor": (tree.exit_code,), "without": (5,)}
        for runner, (command, env) in commands.items():  # untimed: bytecode for each side
            measure(command, tree.root, env, tree.root / f"warm-{runner}.log")
        runs: dict[str, list[Measurement]] = {runner: [] for runner in STARTUP_RUNNERS}
        for index in range(rounds):
            for runner in STARTUP_ORDERS[index % len(STARTUP_ORDERS)]:
                command, env = commands[runner]
                run = measure(command, tree.root, timed(env), tree.root / f"{runner}.log")
                if run.returncode not in expected[runner]:
                    sys.exit(f"bench_check: startup {runner} exited with {run.returncode}")
                runs[runner].append(run)
        counted: dict[str, int] = {}
        if instructions:
            for runner, (command, env) in commands.items():
                counted[runner] = count_instructions(
                    command, tree.root, timed(env), expected[runner]
                )
                say(f"{install.name} startup {runner}: {counted[runner]:,} instructions")
        result = StartupResult(install.name, runs["ours"], runs["without"], runs["floor"], counted)
        if rounds:
            over = statistics.median(result.differences_ms("seconds"))
            over_floor = statistics.median(result.differences_ms("seconds", "floor"))
            say(
                f"{install.name} startup, median of {rounds} rounds: ours - without "
                f"{over:.0f} ms, ours - floor {over_floor:.0f} ms"
            )
        return result


# --- profiles ---------------------------------------------------------------------------


def profile_runs(tree: Tree) -> dict[str, Any]:
    """cProfile ours and the floor; keep the ``.prof`` files and a text summary in out/."""
    OUT.mkdir(exist_ok=True)
    summaries = {}
    for runner in ("ours", "floor"):
        say(f"N={len(tree.folders)}: profiling {runner}")
        command, env = runner_command(runner, tree)
        target = OUT / f"profile-{runner}-{len(tree.folders)}.prof"
        profiled = [tree.python, "-m", "cProfile", "-o", str(target), *command[1:]]
        measure(profiled, tree.root, env, tree.root / f"profile-{runner}.log")
        summaries[runner] = summarise_profile(target)
        text = OUT / f"profile-{runner}-{len(tree.folders)}.txt"
        text.write_text(profile_text(target, summaries[runner]), "utf-8")
    return summaries


def _origin(filename: str) -> str:
    if "/pytest_mlproject/" in filename:
        return "plugin"
    if filename.endswith("/floor_plugin.py"):
        return "plugin"
    if "/_pytest/" in filename or "/pluggy/" in filename:
        return "pytest"
    return "other"


#: pytest's end-of-session summaries, whose cost grows with failures times reports.
SUMMARY_FUNCTIONS = ("summary_failures", "summary_warnings", "short_test_summary")


def summarise_profile(path: Path) -> dict[str, Any]:
    """Total time; the plugin's share; pytest's end-of-run summaries; the top functions.

    The plugin's share is the cumulative time of its outermost calls (a plugin function
    called from outside the plugin), so nested calls count once. What pytest does inside
    them (building nodes in ``from_parent``, for instance) counts as the plugin's.
    """
    stats = pstats.Stats(str(path))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total: float = stats.total_tt  # type: ignore[attr-defined]
    plugin = 0.0
    functions: list[tuple[float, str]] = []
    summaries: dict[str, float] = {}
    for key, (_, _, _, cumulative, callers) in table.items():
        origin = _origin(key[0])
        if origin == "pytest" and key[2] in SUMMARY_FUNCTIONS:
            summaries[key[2]] = summaries.get(key[2], 0.0) + cumulative
        if origin != "plugin":
            continue
        plugin += sum(t[3] for caller, t in callers.items() if _origin(caller[0]) != "plugin")
        functions.append((cumulative, _label(key)))
    functions.sort(reverse=True)
    return {
        "total_seconds": total,
        "plugin_seconds": plugin,
        "pytest_summary_seconds": summaries,
        "plugin_functions": [[label, seconds] for seconds, label in functions[:20]],
    }


def _label(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    return f"{'/'.join(Path(filename).parts[-2:])}:{line}({function})"


def profile_text(path: Path, summary: dict[str, Any]) -> str:
    lines = [
        f"total {summary['total_seconds']:.2f} s under cProfile",
        f"in the plugin (outermost calls, cumulative): {summary['plugin_seconds']:.2f} s",
        *(f"    {s:8.2f} s  {label}" for label, s in summary["plugin_functions"]),
        "pytest's end-of-session summaries:",
        *(f"    {s:8.2f} s  {name}" for name, s in summary["pytest_summary_seconds"].items()),
        "",
    ]
    with tempfile.TemporaryFile("w+") as stream:
        stats = pstats.Stats(str(path), stream=stream)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(25)
        stream.seek(0)
        lines.append(stream.read())
    return "\n".join(lines)


# --- reporting --------------------------------------------------------------------------


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---:"] * len(header), *rows]
    return "".join(f"| {' | '.join(line)} |\n" for line in lines)


def load_range(loads: Sequence[float]) -> str:
    return f"{min(loads):.1f} to {max(loads):.1f}"


def markdown(sizes: Sequence[SizeResult], startups: Sequence[StartupResult]) -> str:
    parts = []
    timed_sizes = [size for size in sizes if "ours" in size.results]
    timed_startups = [startup for startup in startups if startup.ours]
    if timed_sizes:
        rows = []
        for size in timed_sizes:
            by = size.results
            ours, floor = by["ours"], by["floor"]
            tree = size.tree
            rows.append(
                [
                    size.install,
                    str(len(tree.folders)),
                    f"{tree.items} ({tree.failing} / {tree.warning_items})",
                    f"{ours.seconds:.2f} s",
                    f"{floor.seconds:.2f} s",
                    f"**{size.ratio('seconds'):.2f}x**",
                    f"{ours.cpu_seconds:.2f} s",
                    f"{floor.cpu_seconds:.2f} s",
                    f"**{size.ratio('cpu_seconds'):.2f}x**",
                    f"{ours.max_rss_mib:.0f} / {floor.max_rss_mib:.0f} MiB",
                    f"**{size.ratio('max_rss_mib'):.2f}x**",
                    load_range(size.loads),
                ]
            )
        parts.append(
            "Ours against the floor: medians of each side, and the median of the pairs' "
            "ratios (items: all, failing / warning):\n\n"
            + table(
                [
                    "install",
                    "N",
                    "items",
                    "ours, wall",
                    "floor, wall",
                    "wall ratio",
                    "ours, CPU",
                    "floor, CPU",
                    "CPU ratio",
                    "peak RSS, largest",
                    "RSS ratio",
                    "load",
                ],
                rows,
            )
        )
        others = [(s, r) for s in timed_sizes for r in s.results.values() if r.runner not in PAIR]
        if others:
            parts.append(
                "Other runners, median wall (CPU) time:\n\n"
                + table(
                    ["install", "N", "runner", "wall", "CPU"],
                    [
                        [
                            s.install,
                            str(len(s.tree.folders)),
                            LABELS[r.runner],
                            f"{r.seconds:.2f} s",
                            f"{r.cpu_seconds:.2f} s",
                        ]
                        for s, r in others
                    ],
                )
            )
    if timed_startups:
        rows = []
        for startup in timed_startups:

            def over(what: str, against: str, startup: StartupResult = startup) -> str:
                return f"{statistics.median(startup.differences_ms(what, against)):+.0f} ms"

            def wall(runs: list[Measurement]) -> str:
                return f"{statistics.median(r.seconds for r in runs) * 1000:.0f} ms"

            rows.append(
                [
                    startup.install,
                    wall(startup.ours),
                    wall(startup.floor),
                    wall(startup.without),
                    f"**{over('seconds', 'without')}**",
                    over("cpu_seconds", "without"),
                    over("seconds", "floor"),
                    over("cpu_seconds", "floor"),
                    load_range(
                        [r.load_before for r in (*startup.ours, *startup.floor, *startup.without)]
                    ),
                ]
            )
        rounds = len(timed_startups[0].ours)
        parts.append(
            f"Start-up, one descriptor, {rounds} rounds: `pytest --mlproject`, the floor and "
            "`pytest -p no:mlproject` (medians), and the medians of ours' differences from "
            "each, round by round:\n\n"
            + table(
                [
                    "install",
                    "--mlproject",
                    "floor",
                    "-p no:mlproject",
                    "over -p no:mlproject, wall",
                    "CPU",
                    "over the floor, wall",
                    "CPU",
                    "load",
                ],
                rows,
            )
        )
    parts.extend(instructions_tables(sizes, startups))
    return "\n".join(parts)


def instructions_tables(
    sizes: Sequence[SizeResult], startups: Sequence[StartupResult]
) -> list[str]:
    parts = []
    counted = [size for size in sizes if size.instructions]
    if counted:
        rows = [
            [
                size.install,
                str(len(size.tree.folders)),
                f"{size.instructions['ours'] / 1e6:,.0f} M",
                f"{size.instructions['floor'] / 1e6:,.0f} M",
                f"**{size.instructions['ours'] / size.instructions['floor']:.3f}x**",
            ]
            for size in counted
        ]
        parts.append(
            "Instructions executed in user space, one run each under valgrind (the same from "
            "run to run, whatever the load):\n\n"
            + table(["install", "N", "ours", "floor", "ratio"], rows)
        )
    counted_startups = [startup for startup in startups if startup.instructions]
    if counted_startups:
        rows = []
        for startup in counted_startups:
            ours, floor, without = (
                startup.instructions[runner] for runner in ("ours", "floor", "without")
            )
            rows.append(
                [
                    startup.install,
                    f"{ours / 1e6:,.0f} M",
                    f"{floor / 1e6:,.0f} M",
                    f"{without / 1e6:,.0f} M",
                    f"**{(ours - without) / 1e6:+,.0f} M**",
                    f"{(ours - floor) / 1e6:+,.0f} M",
                    f"{(floor - without) / 1e6:+,.0f} M",
                ]
            )
        parts.append(
            "Start-up in instructions, one descriptor, one run each under valgrind:\n\n"
            + table(
                [
                    "install",
                    "--mlproject",
                    "floor",
                    "-p no:mlproject",
                    "ours over -p no:mlproject",
                    "ours over the floor",
                    "floor over -p no:mlproject",
                ],
                rows,
            )
        )
    return parts


def machine() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    packages = {}
    for name in ("pytest", "pluggy", "PyYAML", "mlflow-skinny", "pytest-xdist"):
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "absent"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "packages": packages,
    }


def as_json(
    sizes: Sequence[SizeResult],
    startups: Sequence[StartupResult],
    argv: Sequence[str],
    plugin: dict[str, Any],
) -> dict[str, Any]:
    return {
        "command": " ".join(["python", "benchmarks/bench_check.py", *argv]),
        "machine": machine(),
        "plugin": plugin,
        "pytest_flags": list(PYTEST_FLAGS),
        "sizes": [
            {
                "install": size.install,
                "size": len(size.tree.folders),
                "descriptors": len(size.tree.descriptors),
                "items": size.tree.items,
                "failing_items": size.tree.failing,
                "warning_items": size.tree.warning_items,
                "warnings": size.tree.warnings,
                "plugin_file": size.plugin_file,
                "pair_ratios": {
                    what: size.pair_ratios(what)
                    for what in ("seconds", "cpu_seconds", "max_rss_mib")
                },
                "runners": {
                    r.runner: {
                        "median_seconds": r.seconds,
                        "median_cpu_seconds": r.cpu_seconds,
                        "max_rss_mib": r.max_rss_mib,
                        "runs": [asdict(run) for run in r.runs],
                    }
                    for r in size.results.values()
                },
                "profiles": size.profiles,
                "instructions": size.instructions,
            }
            for size in sizes
        ],
        "startup": [
            {
                "install": s.install,
                "ours": [asdict(run) for run in s.ours],
                "without": [asdict(run) for run in s.without],
                "floor": [asdict(run) for run in s.floor],
                "instructions": s.instructions,
            }
            for s in startups
        ],
    }


def plugin_description(commit: str | None) -> dict[str, Any]:
    if commit is not None:
        return {"commit": commit}
    dirty = bool(git("status", "--porcelain", "--", "pytest_mlproject").strip())
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": dirty}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark pytest --mlproject (see the source).")
    parser.add_argument("--sizes", type=int, nargs="*", default=[100, 2220, 10000], metavar="N")
    parser.add_argument(
        "--pairs", type=int, default=5, help="alternating pairs of ours and the floor per size"
    )
    parser.add_argument(
        "--startup",
        type=int,
        default=20,
        metavar="ROUNDS",
        help="rounds of the start-up comparison (0: skip it)",
    )
    parser.add_argument(
        "--install",
        nargs="+",
        choices=sorted(INSTALLS),
        default=["editable", "wheel"],
        help="how the plugin is installed for the runs",
    )
    parser.add_argument(
        "--extra",
        action="store_true",
        help="also the floor with every item passing, --tb=line, MLflow's loader, bare YAML",
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile ours and the floor at the largest size"
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count each side's instructions once under valgrind (with --pairs 0, only that)",
    )
    parser.add_argument(
        "--plugin-commit", metavar="REF", help="measure the plugin as of this commit"
    )
    parser.add_argument(
        "--corpus", type=Path, default=Path(os.environ.get("MLPROJECT_CORPUS", DEFAULT_CORPUS))
    )
    args = parser.parse_args(argv)
    if args.instructions and shutil.which(VALGRIND[0]) is None:
        parser.error("--instructions needs valgrind on PATH (apt install valgrind)")
    least_pairs = 0 if args.instructions else 1
    if args.pairs < least_pairs or (args.sizes and min(args.sizes) < 1) or args.startup < 0:
        parser.error(
            "--sizes must be at least 1, --pairs at least 1 (0 with --instructions), "
            "--startup at least 0"
        )
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    cases = corpus_cases(args.corpus.resolve())
    sizes: list[SizeResult] = []
    startups: list[StartupResult] = []
    commit = None
    with tempfile.TemporaryDirectory(prefix="bench-mlproject-") as name:
        root = Path(name)
        if root.resolve().is_relative_to(REPO):
            sys.exit("bench_check: TMPDIR points into the repository; copies go elsewhere")
        for install_name in args.install:
            install_root = root / install_name
            install_root.mkdir()
            install = INSTALLS[install_name](install_root, args.plugin_commit)
            commit = install.commit
            if args.startup:
                # --pairs 0 (with --instructions): the counts alone, no timed rounds either.
                rounds = args.startup if args.pairs else 0
                startups.append(
                    bench_startup(
                        cases[0], rounds, install, install_root, instructions=args.instructions
                    )
                )
            largest = max(args.sizes, default=0)
            for n in sorted(set(args.sizes)):
                profile = args.profile and n == largest
                sizes.append(
                    bench_size(
                        cases,
                        n,
                        args.pairs,
                        install,
                        install_root,
                        profile=profile,
                        extra=args.extra,
                        instructions=args.instructions,
                    )
                )
    plugin = plugin_description(commit)
    OUT.mkdir(exist_ok=True)
    report = markdown(sizes, startups)
    (OUT / "bench_check.md").write_text(report, "utf-8")
    results = as_json(sizes, startups, argv, plugin)
    (OUT / "bench_check.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print(f"plugin: {plugin}\n\n{report}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
