"""Speed of the linear stream learners: 200,000 steps of weight-flipping (d = 20).

The time loop is inherently sequential; the batch dimension (hyperparameter
values x seeds side by side) is what makes a sweep cheap. Prints seconds per
run for B = 1, 8, 32 and 128 settings at once, and the cost per setting.
Run: .venv/bin/python bench/stream_speed.py [--steps N] [--repeats R]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import datasets
from methods.stream_learners import run_rule

HP = {
    "lms": lambda b: {"eta": np.geomspace(1e-3, 0.05, b)},
    "idbd": lambda b: {"theta": np.geomspace(1e-5, 1e-2, b), "alpha0": np.full(b, 0.01)},
    "autostep": lambda b: {"mu": np.geomspace(1e-3, 1e-1, b), "tau": np.full(b, 1e4), "alpha0": np.full(b, 0.01)},
    "adam": lambda b: {"eta": np.geomspace(1e-4, 1e-2, b), "gamma_g": np.full(b, 0.01),
                       "gamma_m": np.full(b, 0.1), "eps": np.full(b, 1e-8)},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    s = datasets.load_benchmark("weight_flipping", {"steps": args.steps}).make_stream(0)
    print(f"weight_flipping, {args.steps} steps, d = {s.dim}; median of {args.repeats} runs")
    print(f"{'rule':10s} {'B':>4s} {'seconds':>8s} {'s per setting':>14s}")
    for rule, hp in HP.items():
        for b in (1, 8, 32, 128):
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                run_rule(rule, s.x, s.y, hp(b))
                times.append(time.perf_counter() - t)
            med = statistics.median(times)
            print(f"{rule:10s} {b:4d} {med:8.2f} {med / b:14.3f}", flush=True)


if __name__ == "__main__":
    main()
