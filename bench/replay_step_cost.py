"""Per-step cost of each rehearsal method against finetune on the same batches and model.

Class-incremental, MLP 784-256-256-10, SGD, batch 128 (replay batch 128),
synthetic inputs (cost does not depend on the pixels): each method first
learns task 0 (so its memory is full), then the time of training task 1
(``--steps`` optimiser steps) is measured; median of ``--repeats`` runs, one
thread, ratio against finetune's same task. ER trains on two batches per
step, DER++ on three: the issue's targets are <= 2x and <= 3x finetune.
Run: .venv/bin/python bench/replay_step_cost.py [--steps N] [--repeats R]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from datasets.benchmark import DeviceSplit
from methods import METHODS, MethodContext, seed_everything

METHODS_TIMED = ("finetune", "er", "der", "der_pp", "agem", "lwf", "icarl")


def make(name: str, batch: int, buffer: int):
    entry = METHODS.get(name)
    params = {"network": {"backbone": "mlp", "hidden": [256, 256]}, "training": {"epochs": 1, "batch_size": batch},
              "optimizer": {"name": "sgd", "lr": 0.01}}
    if "buffer" in entry.params.model_fields:
        params["buffer"] = {"size": buffer, "batch_size": batch}
    seed_everything(0)
    ctx = MethodContext((784,), (2, 2, 2, 2, 2), "class_incremental", torch.device("cpu"), 0)
    return entry.target(entry.params.model_validate(params), ctx)


def task(k: int, n: int) -> DeviceSplit:
    g = torch.Generator().manual_seed(k)
    return DeviceSplit(torch.randn(n, 784, generator=g), torch.randint(2 * k, 2 * k + 2, (n,), generator=g))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--buffer", type=int, default=500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    first, second = task(0, 2000), task(1, args.steps * args.batch)
    times: dict[str, float] = {}
    for name in METHODS_TIMED:
        runs = []
        for _ in range(args.repeats):
            method = make(name, args.batch, args.buffer)
            method.learn_task(0, first)
            t = time.perf_counter()
            method.learn_task(1, second)
            runs.append((time.perf_counter() - t) / args.steps)
        times[name] = statistics.median(runs)
    print(f"class-incremental MLP 784-256-256-10, batch {args.batch}, buffer {args.buffer}, one thread; "
          f"median of {args.repeats} x {args.steps} steps (task 1, memory full)")
    print(f"  {'method':10s} {'ms/step':>8s} {'x finetune':>11s}")
    for name, t in times.items():
        print(f"  {name:10s} {1e3 * t:8.2f} {t / times['finetune']:11.2f}")


if __name__ == "__main__":
    main()
