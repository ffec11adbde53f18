"""CLI start-up: `clorch --help`, `clorch list`, `clorch validate` against `python -c 'import torch'`.

Each is a fresh process of the installed command (``.venv/bin/clorch``), timed from start to exit, the
contestants alternating, median of ``--repeats``. Targets (issue 21): ``--help`` under 0.5 s (it imports
no torch, Ray or MLflow); ``list`` and ``validate`` within 1.5x of importing torch (they need the methods'
parameters, so torch, and nothing heavier: tests/test_layout.py holds which modules they may load).

How to run (from the repository root)
    .venv/bin/python bench/cli_startup.py [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    clorch = str(Path(sys.executable).with_name("clorch"))
    contestants = {
        "import torch": [sys.executable, "-c", "import torch"],
        "clorch --help": [clorch, "--help"],
        "clorch list": [clorch, "list"],
        "clorch validate studies/quickstart.yaml": [clorch, "validate", "studies/quickstart.yaml"],
    }
    times: dict[str, list[float]] = {k: [] for k in contestants}
    for _ in range(args.repeats):
        for name, argv in contestants.items():
            times[name].append(timed(argv))
    torch_s = statistics.median(times["import torch"])
    print(f"median of {args.repeats}, fresh processes, contestants alternating")
    for name, ts in times.items():
        med = statistics.median(ts)
        target = {"clorch --help": "target < 0.5 s"}.get(name, "target <= 1.5x" if name != "import torch" else "")
        print(f"  {name:42s} {med:6.2f} s  {med / torch_s:5.2f}x import torch  {target}")


if __name__ == "__main__":
    main()
