"""Cost of the loss-of-trainability scheduler (specs/lot.md) against plain Adam.

What it measures, on the spec's MLP 784-256-256-10 with batch 256, one thread:
- one plain Adam training step through Finetune (zero_grad, forward, backward, step);
- one control step of the scheduler alone (per-sample gradients by torch.func
  for G and sigma^2, one Hessian-vector product per layer, Adam's state read),
  and the part of it spent on the per-sample gradients;
- the average step of Finetune with ``lr_scheduler: lot`` every K steps,
  against plain Adam on the same data and steps: the per-step overhead;
- for comparison, the step with each companion penalty (penalties wasserstein,
  l2), whose cost is paid at every step (a sort of every tensor
  for the Wasserstein one).
Each figure is the median of --repeats runs; plain and scheduled runs alternate
so that machine noise spreads over both. The data are random (the cost does
not depend on them).

Run: .venv/bin/python bench/lot_overhead.py [--steps 400] [--repeats 5] [--every 40]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from methods import METHODS, MethodContext, seed_everything
from methods.lot_signals import signal_and_noise

CPU = torch.device("cpu")


def method(every: int | None, **extra):
    seed_everything(0)
    ctx = MethodContext((784,), (10,), "domain_incremental", CPU, 0)
    if every is not None:
        extra = {**extra, "lr_scheduler": {"name": "lot", "every": every}}
    return METHODS.get("finetune").target(METHODS.get("finetune").params(
        optimizer={"name": "adam", "lr": 1e-3}, network={"hidden": [256, 256]},
        training={"batch_size": 256, "epochs": 1, "reset_optimizer": False}, **extra), ctx)


def train_seconds(m, x, y) -> float:
    t = time.perf_counter()
    m.train(lambda xb: m.net(xb, 0), F.cross_entropy, x, y)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400, help="optimiser steps per timed run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--every", type=int, default=40, help="K, steps between control steps")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256 * args.steps, 784, generator=gen)
    y = torch.randint(0, 10, (256 * args.steps,), generator=gen)
    runs = {"plain": method(None), "lot": method(args.every), "wasserstein": method(None, penalties=[{"name": "wasserstein", "lambda": 1e-2}]),
            "l2": method(None, penalties=[{"name": "l2", "lambda": 1e-3}])}
    for m in runs.values():  # warm-up: Adam state, allocator, first control step
        train_seconds(m, x[:256 * args.every], y[:256 * args.every])
    per_step: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, m in runs.items():
            per_step[name].append(train_seconds(m, x, y) / args.steps)
    plain_s, lot_s, lot = per_step["plain"], per_step["lot"], runs["lot"]

    s = lot.scheduler
    xb, yb = x[:256], y[:256]
    control_s, noise_s = [], []
    active = s.layers
    for _ in range(args.repeats):
        t = time.perf_counter()
        s.control(xb, yb)
        control_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        signal_and_noise(lot.net, s.loss, active, xb, yb)
        noise_s.append(time.perf_counter() - t)

    step, step_lot = statistics.median(plain_s), statistics.median(lot_s)
    control, noise = statistics.median(control_s), statistics.median(noise_s)
    print(f"MLP 784-256-256-10, batch 256, one thread; median of {args.repeats} runs of {args.steps} steps")
    print(f"  plain Adam step                      {step * 1e3:8.2f} ms")
    print(f"  one control step (all {len(active)} layers)     {control * 1e3:8.2f} ms  = {control / step:5.1f} Adam steps")
    print(f"    per-sample G, sigma^2 alone       {noise * 1e3:8.2f} ms  (torch.func vmap(grad), chunks of 16; timed on its own)")
    print(f"  step with the scheduler, K={args.every:<4d}      {step_lot * 1e3:8.2f} ms  = {step_lot / step:5.2f}x plain Adam "
          f"(+{(step_lot / step - 1) * 100:.0f}%; control/K predicts +{control / args.every / step * 100:.0f}%)")
    for k in (10, 40, 160, 640):
        print(f"    predicted average overhead at K={k:<4d} +{control / k / step * 100:6.1f}%")
    for name in ("wasserstein", "l2"):
        t = statistics.median(per_step[name])
        print(f"  step with the {name} penalty{' ' * (12 - len(name))}{t * 1e3:8.2f} ms  = {t / step:5.2f}x plain Adam")


if __name__ == "__main__":
    main()
