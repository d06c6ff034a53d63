"""Local runs in built environments: ``pytest --mlproject --mlproject-run`` against
``mlflow run -e NAME --env-manager uv``, side by side in one run.

Run from the repository root with the project's virtualenv (``pip install -e '.[benchmark]'``
brings MLflow; uv comes with pytest-mlproject)::

    .venv/bin/python benchmarks/bench_envs.py [--package packaging==25.0] [--repeat 3]

This reaches the package index uv is configured for (PyPI by default): unlike the tests, it
measures what a user's machine does. Three cases, each a process timed from start to exit,
with fresh environment folders for both tools in every round and uv's package cache warmed
once before the first round:

``three``
    a project with a python_env of one pinned package (``--package``) and three entry
    points: one ``pytest --mlproject --mlproject-run`` session against three ``mlflow run
    -e NAME --env-manager uv`` calls (MLflow builds the environment on the first).
``warm``
    the same session again, its environments built, against the same session with
    ``--mlproject-env-manager local``.
``tutorial``
    ``fixtures/tutorial`` (a conda.yaml without a Python pin, a ``pip:`` list): one session
    against ``mlflow run --env-manager uv``.

MLflow records its runs in a SQLite store in the temporary folder. Times are medians over
``--repeat`` rounds; results go to ``benchmarks/out/bench_envs.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
BIN = Path(sys.executable).parent
ENTRY_POINTS = ("first", "second", "third")


def project(folder: Path, package: str) -> Path:
    folder.mkdir(parents=True)
    module = package.split("==", maxsplit=1)[0].replace("-", "_")
    lines = ["name: three", "python_env: python_env.yaml", "entry_points:"]
    for name in ENTRY_POINTS:
        lines += [f"  {name}:", f"    command: python -c 'import {module}; print(\"{name}\")'"]
    (folder / "MLproject").write_text("\n".join(lines) + "\n")
    (folder / "python_env.yaml").write_text(f"dependencies:\n  - {package}\n")
    return folder


def timed(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return took


def ours(target: Path, env_dir: Path, env: dict[str, str], *extra: str) -> list[str]:
    return [
        str(BIN / "pytest"), "--mlproject", "--mlproject-run", str(target), "-q",
        "-p", "no:cacheprovider", "-p", "no:randomly", "--mlproject-env-dir", str(env_dir),
        *extra,
    ]  # fmt: skip


def mlflow(target: Path, entry: str) -> list[str]:
    return [str(BIN / "mlflow"), "run", str(target), "-e", entry, "--env-manager", "uv"]


def one_round(work: Path, package: str, env: dict[str, str]) -> dict[str, float]:
    proj = work / "three"
    if not proj.exists():
        project(proj, package)
    fresh = Path(tempfile.mkdtemp(dir=work))
    mlflow_env = {**env, "MLFLOW_ENV_ROOT": str(fresh / "mlflow-envs")}
    times = {
        "three: ours": timed(ours(proj, fresh / "ours-envs", env), env, work),
        "three: mlflow": sum(timed(mlflow(proj, e), mlflow_env, work) for e in ENTRY_POINTS),
        "warm: ours": timed(ours(proj, fresh / "ours-envs", env), env, work),
        "warm: local": timed(
            ours(proj, fresh / "ours-envs", env, "--mlproject-env-manager", "local"), env, work
        ),
        "tutorial: ours": timed(
            ours(REPO / "fixtures" / "tutorial", fresh / "ours-envs", env), env, work
        ),
        "tutorial: mlflow": timed(mlflow(REPO / "fixtures" / "tutorial", "main"), mlflow_env, work),
    }
    shutil.rmtree(fresh)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # One the benchmark's own environment has, so that the `local` session passes too.
    from importlib.metadata import version

    parser.add_argument("--package", default=f"packaging=={version('packaging')}")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        }
        env.pop("VIRTUAL_ENV", None)
        warm_up = Path(tempfile.mkdtemp(dir=work))
        project(warm_up / "three", args.package)
        timed(ours(warm_up / "three", warm_up / "envs", env), env, work)  # uv's package cache
        timed(ours(REPO / "fixtures" / "tutorial", warm_up / "envs", env), env, work)
        rounds = [one_round(work, args.package, env) for _ in range(args.repeat)]
    medians = {name: statistics.median(r[name] for r in rounds) for name in rounds[0]}
    OUT.mkdir(exist_ok=True)
    (OUT / "bench_envs.json").write_text(json.dumps({"rounds": rounds, "medians": medians}))
    lines = ["| case | ours | other | ratio |", "| --- | ---: | ---: | ---: |"]
    for case, other in (("three", "mlflow"), ("warm", "local"), ("tutorial", "mlflow")):
        a, b = medians[f"{case}: ours"], medians[f"{case}: {other}"]
        lines.append(f"| {case} (vs {other}) | {a:.2f} s | {b:.2f} s | {a / b:.2f}x |")
    table = "\n".join(lines)
    (OUT / "bench_envs.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
