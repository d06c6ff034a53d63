"""Worker of ``bench_check.py``: load descriptors in a plain loop, in a process of its own.

    python benchmarks/loops.py yaml PATHS_FILE     # yaml.load(f, Loader=yaml.CSafeLoader)
    python benchmarks/loops.py mlflow PATHS_FILE   # mlflow's own load_project(folder)

``PATHS_FILE`` holds one path a line: descriptor files for ``yaml``, project folders for
``mlflow``. Exceptions are caught and counted, as a checker must survive every file. Prints
one JSON object: how many loaded, how many failed, the import time and the loop time.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def yaml_loader() -> Callable[[str], Any]:
    import yaml

    def load(path: str) -> Any:
        with open(path, "rb") as handle:
            return yaml.load(handle, Loader=yaml.CSafeLoader)

    return load


def mlflow_loader() -> Callable[[str], Any]:
    # Looked up, not imported by name: MLflow's loader is untyped, and private.
    module = importlib.import_module("mlflow.projects._project_spec")
    load_project: Callable[[str], Any] = module.load_project
    return load_project


LOADERS: dict[str, Callable[[], Callable[[str], Any]]] = {
    "yaml": yaml_loader,
    "mlflow": mlflow_loader,
}


def run(kind: str, paths: list[str]) -> dict[str, Any]:
    started = time.perf_counter()
    load = LOADERS[kind]()
    imported = time.perf_counter()
    failed = 0
    for path in paths:
        try:
            load(path)
        except Exception:  # a malformed descriptor: count it and go on, as a checker must
            failed += 1
    finished = time.perf_counter()
    return {
        "kind": kind,
        "loaded": len(paths) - failed,
        "failed": failed,
        "import_seconds": imported - started,
        "loop_seconds": finished - imported,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in LOADERS:
        print(f"usage: loops.py {{{','.join(LOADERS)}}} PATHS_FILE", file=sys.stderr)
        return 2
    paths = Path(argv[1]).read_text("utf-8").splitlines()
    print(json.dumps(run(argv[0], paths)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
