"""Start-up time of the fake Databricks workspace (``pytest_mlproject.testing``).

    python benchmarks/bench_workspace_startup.py [--starts 20]

Measures, in this process: importing the server (once, first thing), ``start()`` (temporary
directory, bound socket, serving thread), ``start()`` plus the first answered request (an
authenticated ``GET .../scim/v2/Me`` over ``http.client``, so the SDK's own 1.5 s import is not
counted), and ``stop()``. Prints a Markdown table of the median, minimum and maximum.
"""

from __future__ import annotations

import argparse
import http.client
import importlib
import platform
import statistics
import sys
import time


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=20, help="how many starts to time")
    args = parser.parse_args()

    started = time.perf_counter()
    # The package itself is lazy: the server module is what a first FakeWorkspace imports.
    server = importlib.import_module("pytest_mlproject.testing.server")
    import_seconds = time.perf_counter() - started
    timings: dict[str, list[float]] = {"start()": [], "start() + first answer": [], "stop()": []}
    for _ in range(args.starts):
        workspace = server.FakeWorkspace()
        began = time.perf_counter()
        workspace.start()
        up = time.perf_counter()
        port = int(workspace.host.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        headers = {"Authorization": f"Bearer {workspace.token}"}
        connection.request("GET", "/api/2.0/preview/scim/v2/Me", headers=headers)
        response = connection.getresponse()
        response.read()
        answered = time.perf_counter()
        connection.close()
        if response.status != 200:
            print(f"unexpected status {response.status}", file=sys.stderr)
            return 1
        workspace.stop()
        timings["start()"].append(up - began)
        timings["start() + first answer"].append(answered - began)
        timings["stop()"].append(time.perf_counter() - answered)

    print(f"Python {platform.python_version()} on {platform.system()}, {args.starts} starts")
    print(f"import pytest_mlproject.testing.server: {_ms(import_seconds)} ms")
    print()
    print("| step | median ms | min ms | max ms |")
    print("| --- | --- | --- | --- |")
    for step, values in timings.items():
        row = (_ms(statistics.median(values)), _ms(min(values)), _ms(max(values)))
        print(f"| {step} | {' | '.join(row)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
