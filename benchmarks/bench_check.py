"""How long ``pytest --mlproject`` takes to check N descriptors, beside what it cannot beat.

Run from the repository root with the project's virtualenv (``pip install -e '.[benchmark]'``
brings MLflow's loader)::

    .venv/bin/python benchmarks/bench_check.py --sizes 100 1000 10000
    .venv/bin/python benchmarks/bench_check.py --sizes 10000 --repeat 5 --profile
    .venv/bin/python benchmarks/bench_check.py --plugin-commit HEAD   # a commit, not the tree

For each size N, the 111 corpus cases (``$MLPROJECT_CORPUS``, default ``../shared/corpus``)
are copied, whole folders, into a temporary tree, cycling through the cases with a numeric
suffix until there are N folders. The tree is deleted afterwards; nothing is written into the
repository but the results, in ``benchmarks/out/`` (git-ignored). Each runner is a process
of its own, timed from start to exit, its CPU time and peak RSS taken from its own rusage:

``ours``
    ``pytest --mlproject -p no:cacheprovider -q``, default warning handling (no ``-W``) and
    default ``--tb``: the corpus's failures and warnings are reported as a user sees them.
``floor``
    the same pytest command with the real plugin disabled (``-p no:mlproject``) and
    ``floor_plugin.py`` instead: the same nodes, failing and warning on the same items with
    the same text (recorded from an untimed run of ours with ``record_outcomes.py``), and
    doing nothing but parse each descriptor with PyYAML's C loader.
``floor-pass``
    the floor with every item passing (the issue's "floor without failures").
``ours-tb-line``, ``floor-tb-line``
    ours and the floor with ``--tb=line``, which skips pytest's per-failure scan of every
    report (``_get_teardown_reports``), quadratic in a session this size.
``mlflow``
    a loop over MLflow's ``load_project`` on the same folders, exceptions caught.
``yaml``
    a loop of ``yaml.load(f, Loader=yaml.CSafeLoader)`` over the same descriptor files.

The plugin measured is the one Python imports (the editable install: the working tree), or
with ``--plugin-commit REF`` that commit's ``pytest_mlproject/``, exported to the temporary
folder and put first on ``PYTHONPATH``. Times are medians over ``--repeat`` rounds, the
runners taking turns within a round. Results go to ``benchmarks/out/bench_check.json`` and
``.md``; ``--profile`` adds a cProfile of ours and of the floor at the largest size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
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
#: The ratios reported: (numerator, denominator).
RATIOS = (
    ("ours", "floor"),
    ("ours", "floor-pass"),
    ("ours-tb-line", "floor-tb-line"),
    ("ours", "mlflow"),
    ("ours", "yaml"),
)
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
    env: dict[str, str]
    folders: list[Path]
    descriptors: list[Path]
    record: Path
    items: int
    failing: int
    warning_items: int
    warnings: int


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
    """The caller's environment without pytest's own variables; ``plugin`` first on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    if plugin is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin), env.get("PYTHONPATH")]))
    return env


def with_benchmarks_on_path(env: dict[str, str], **extra: str) -> dict[str, str]:
    path = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(HERE)]))
    return {**env, "PYTHONPATH": path, **extra}


def pytest_command(*flags: str) -> list[str]:
    return [sys.executable, "-m", "pytest", *PYTEST_FLAGS, *flags, TREE]


def runner_command(runner: str, tree: Tree) -> tuple[list[str], dict[str, str]]:
    tb_line = ("--tb=line",) if runner.endswith("-tb-line") else ()
    if runner.startswith("ours"):
        return pytest_command("--mlproject", *tb_line), tree.env
    if runner.startswith("floor"):
        env = with_benchmarks_on_path(tree.env)
        if runner != "floor-pass":
            env["MLPROJECT_FLOOR_OUTCOMES"] = str(tree.record)
        return pytest_command(*FLOOR_FLAGS, *tb_line), env
    paths = tree.folders if runner == "mlflow" else tree.descriptors
    listing = tree.root / f"{runner}-paths.txt"
    listing.write_text("".join(f"{path}\n" for path in paths), "utf-8")
    return [sys.executable, str(HERE / "loops.py"), runner, str(listing)], tree.env


def counts(summary: str) -> dict[str, int]:
    """``3 failed, 10 passed, 4 warnings in 1.2s`` as ``{"failed": 3, ...}``."""
    found = {_SINGULAR.get(kind, kind): int(n) for n, kind in _COUNT.findall(summary)}
    return {key: found.get(key, 0) for key in ("failed", "passed", "warning", "error")}


def run_once(runner: str, tree: Tree) -> Measurement:
    """Measure one runner; stop the benchmark if it did not do what it stands for."""
    command, env = runner_command(runner, tree)
    log = tree.root / f"{runner}.log"
    result = measure(command, tree.root, env, log)
    replays_ours = runner.startswith(("ours", "floor")) and runner != "floor-pass"
    expected = 1 if replays_ours and tree.failing else 0
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


def build_tree(root: Path, cases: Sequence[Path], size: int, plugin: Path | None) -> Tree:
    """Copy the cases, then run ours once (untimed) to record which items fail and warn."""
    (root / "pytest.ini").write_text("[pytest]\n", "utf-8")  # rootdir; no ini search upward
    folders = copy_cases(cases, size, root / TREE)
    record = root / "outcomes.json"
    env = base_env(plugin)
    recording = with_benchmarks_on_path(env, MLPROJECT_BENCH_RECORD=str(record))
    command = pytest_command("--mlproject", "-p", "record_outcomes")
    run = measure(command, root, recording, root / "calibrate.log")
    data = json.loads(record.read_text("utf-8"))
    outcomes: dict[str, dict[str, Any]] = data["outcomes"]
    tree = Tree(
        root=root,
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
        [sys.executable, "-c", code],
        cwd=tree.root,
        env=tree.env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


# --- the benchmark ----------------------------------------------------------------------


@dataclass
class SizeResult:
    tree: Tree
    results: dict[str, Result]
    profiles: dict[str, Any]
    plugin_file: str


def bench_size(
    cases: Sequence[Path], size: int, repeat: int, profile: bool, plugin_ref: str | None
) -> tuple[SizeResult, str | None]:
    with tempfile.TemporaryDirectory(prefix="bench-mlproject-") as name:
        root = Path(name)
        if root.resolve().is_relative_to(REPO):
            sys.exit("bench_check: TMPDIR points into the repository; copies go elsewhere")
        plugin = root / "plugin" if plugin_ref else None
        commit = export_plugin(plugin_ref, plugin) if plugin_ref and plugin else None
        say(f"N={size}: copying and calibrating in {root}")
        tree = build_tree(root, cases, size, plugin)
        results = {runner: Result(runner) for runner in RUNNERS}
        for round_ in range(repeat):
            for runner in RUNNERS:
                run = run_once(runner, tree)
                results[runner].runs.append(run)
                say(
                    f"N={size} round {round_ + 1}/{repeat} {runner}: {run.seconds:.2f} s, "
                    f"{run.cpu_seconds:.2f} s CPU, {run.max_rss_mib:.0f} MiB, "
                    f"load {run.load_before:.2f}"
                )
        profiles = profile_runs(tree) if profile else {}
        return SizeResult(tree, results, profiles, plugin_imported(tree)), commit


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- profiles ---------------------------------------------------------------------------


def profile_runs(tree: Tree) -> dict[str, Any]:
    """cProfile ours and the floor; keep the ``.prof`` files and a text summary in out/."""
    OUT.mkdir(exist_ok=True)
    summaries = {}
    for runner in ("ours", "floor"):
        say(f"N={len(tree.folders)}: profiling {runner}")
        command, env = runner_command(runner, tree)
        target = OUT / f"profile-{runner}-{len(tree.folders)}.prof"
        profiled = [sys.executable, "-m", "cProfile", "-o", str(target), *command[1:]]
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


def markdown(sizes: Sequence[SizeResult]) -> str:
    labels = [LABELS[r] for r in RUNNERS]
    wall, cpu, rss, ratios = [], [], [], []
    for size in sizes:
        tree, by = size.tree, size.results
        n = str(len(tree.folders))
        items = f"{tree.items} ({tree.failing} / {tree.warning_items})"
        wall.append([n, items, *(f"{by[r].seconds:.2f} s" for r in RUNNERS)])
        cpu.append([n, *(f"{by[r].cpu_seconds:.2f} s" for r in RUNNERS)])
        rss.append([n, *(f"{by[r].max_rss_mib:.0f} MiB" for r in RUNNERS)])
        ratios.append(
            [
                n,
                *(
                    f"{by[a].seconds / by[b].seconds:.2f}x "
                    f"({by[a].cpu_seconds / by[b].cpu_seconds:.2f}x)"
                    for a, b in RATIOS
                ),
            ]
        )
    ratio_labels = [f"{LABELS[a]} / {LABELS[b]}" for a, b in RATIOS]
    return (
        "Wall time, median (items: all, failing / warning):\n\n"
        + table(["N", "items", *labels], wall)
        + "\nRatios of median wall time (of median CPU time):\n\n"
        + table(["N", *ratio_labels], ratios)
        + "\nCPU time (user + system), median:\n\n"
        + table(["N", *labels], cpu)
        + "\nPeak RSS (largest of the rounds):\n\n"
        + table(["N", *labels], rss)
    )


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
    sizes: Sequence[SizeResult], argv: Sequence[str], plugin: dict[str, Any]
) -> dict[str, Any]:
    return {
        "command": " ".join(["python", "benchmarks/bench_check.py", *argv]),
        "machine": machine(),
        "plugin": plugin,
        "pytest_flags": list(PYTEST_FLAGS),
        "sizes": [
            {
                "size": len(size.tree.folders),
                "descriptors": len(size.tree.descriptors),
                "items": size.tree.items,
                "failing_items": size.tree.failing,
                "warning_items": size.tree.warning_items,
                "warnings": size.tree.warnings,
                "runners": {
                    r.runner: {
                        "median_seconds": r.seconds,
                        "median_cpu_seconds": r.cpu_seconds,
                        "min_seconds": min(run.seconds for run in r.runs),
                        "min_cpu_seconds": min(run.cpu_seconds for run in r.runs),
                        "max_rss_mib": r.max_rss_mib,
                        "runs": [asdict(run) for run in r.runs],
                    }
                    for r in size.results.values()
                },
                "profiles": size.profiles,
            }
            for size in sizes
        ],
    }


def plugin_description(commit: str | None, imported: str) -> dict[str, Any]:
    if commit is not None:
        return {"commit": commit, "imported_from": imported}
    dirty = bool(git("status", "--porcelain", "--", "pytest_mlproject").strip())
    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": dirty, "imported_from": imported}


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Benchmark pytest --mlproject (see the source).")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000], metavar="N")
    parser.add_argument("--repeat", type=int, default=3, help="rounds per size (median)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile ours and the floor at the largest size"
    )
    parser.add_argument(
        "--plugin-commit", metavar="REF", help="measure pytest_mlproject/ as of this commit"
    )
    parser.add_argument(
        "--corpus", type=Path, default=Path(os.environ.get("MLPROJECT_CORPUS", DEFAULT_CORPUS))
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or min(args.sizes) < 1:
        parser.error("--sizes and --repeat must be at least 1")
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    cases = corpus_cases(args.corpus.resolve())
    sizes: list[SizeResult] = []
    largest = max(args.sizes)
    commit = None
    for n in sorted(set(args.sizes)):
        profile = args.profile and n == largest
        size, commit = bench_size(cases, n, args.repeat, profile, args.plugin_commit)
        sizes.append(size)
    plugin = plugin_description(commit, sizes[-1].plugin_file)
    OUT.mkdir(exist_ok=True)
    report = markdown(sizes)
    (OUT / "bench_check.md").write_text(report, "utf-8")
    results = as_json(sizes, argv, plugin)
    (OUT / "bench_check.json").write_text(json.dumps(results, indent=2) + "\n", "utf-8")
    print(f"plugin: {plugin}\n\n{report}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
