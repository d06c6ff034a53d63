"""``python -m pytest_mlproject.testing``: a fake Databricks workspace for a person to poke at."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from types import FrameType

from pytest_mlproject.testing.server import FakeWorkspace


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mlproject.testing",
        description="Serve a fake Databricks workspace on 127.0.0.1 until Ctrl-C.",
    )
    parser.add_argument("--token", help="the token clients must send (default: a random one)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random fault share")
    parser.add_argument("--user", default="someone@example.com", help="the user name it reports")
    parser.add_argument(
        "--task-host",
        choices=("databricks", "process"),
        default="databricks",
        help="how a spark_python_task file runs: as a Databricks driver runs it (exec in a "
        "Python host, no __file__, SystemExit fails; the default), or as `python FILE`",
    )
    args = parser.parse_args(argv)
    # `kill` stops it as cleanly as Ctrl-C: runs killed, temporary directory removed.
    signal.signal(signal.SIGTERM, _interrupt)
    workspace = FakeWorkspace(
        token=args.token, seed=args.seed, user_name=args.user, task_host=args.task_host
    ).start()
    print(f"DATABRICKS_HOST={workspace.host}")
    print(f"DATABRICKS_TOKEN={workspace.token}")
    print(f"# files under {workspace.root}; Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        workspace.stop()
    print("# stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
