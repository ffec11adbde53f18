"""Cost of the loss-of-trainability scheduler (specs/lot.md) against plain Adam.

What it measures, on the spec's MLP 784-256-256-10 with batch 256, one thread:
- one plain Adam training step through Finetune (zero_grad, forward, backward, step);
- one control step of the scheduler alone, and its parts: the gradients with
  create_graph, the per-sample G and sigma^2 (torch.func), the sharpness (one
  Hessian-vector product per layer), Adam's state read (eta_eff);
- the average step of Finetune with ``lr_scheduler: lot`` every K steps,
  against plain Adam on the same data and steps: the per-step overhead;
- for comparison, the step with each companion penalty (penalties wasserstein,
  l2), whose cost is paid at every step (a sort of every tensor
  for the Wasserstein one).
Each figure is the median of --repeats runs; the contestants (plain, scheduled,
penalties; the control parts) alternate within every repeat so that machine
noise spreads over all of them. Wall clock and this thread's CPU time (which a
busy machine disturbs less) are both printed. The data are random (the cost
does not depend on them).

Run: .venv/bin/python bench/lot_overhead.py [--steps 400] [--repeats 5] [--every 40] [--no-penalties]
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from methods import METHODS, MethodContext, seed_everything
from methods.lot_signals import adam_effective_step, rayleigh_sharpness, signal_and_noise

CPU = torch.device("cpu")


def method(every: int | None, **extra):
    seed_everything(0)
    ctx = MethodContext((784,), (10,), "domain_incremental", CPU, 0)
    if every is not None:
        extra = {**extra, "lr_scheduler": {"name": "lot", "every": every}}
    return METHODS.get("finetune").target(METHODS.get("finetune").params(
        optimizer={"name": "adam", "lr": 1e-3}, network={"hidden": [256, 256]},
        training={"batch_size": 256, "epochs": 1, "reset_optimizer": False}, **extra), ctx)


def train_seconds(m, x, y) -> tuple[float, float]:
    """(wall, this thread's CPU) seconds of one pass of Finetune.train over (x, y)."""
    t, c = time.perf_counter(), time.thread_time()
    m.train(lambda xb: m.net(xb, 0), F.cross_entropy, x, y)
    return time.perf_counter() - t, time.thread_time() - c


def timed(fn) -> tuple[float, float]:
    t, c = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - t, time.thread_time() - c


def control_parts(m, xb, yb) -> dict[str, Callable[[], object]]:
    """The control step and its parts, each a call, on the state the timed runs left (eval mode)."""
    s = m.scheduler
    active = s.layers
    names = [k for params in active.values() for k, _ in params]
    weights = [w for params in active.values() for _, w in params]
    data, full = s._gradients(weights, xb, yb)
    mean = {k: g.detach() for k, g in zip(names, data)}
    full = dict(zip(names, full))

    def sharpness():
        for name, params in active.items():
            rayleigh_sharpness([full[k] for k, _ in params], [w for _, w in params], s.vectors[name], s.p.power_iters)

    return {"control step (all layers)": lambda: s.control(xb, yb),
            "  gradients, create_graph": lambda: s._gradients(weights, xb, yb),
            "  per-sample G, sigma^2": lambda: signal_and_noise(m.net, s.loss, active, xb, yb, mean),
            "  sharpness (1 HVP a layer)": sharpness,
            "  Adam state (eta_eff)": lambda: [adam_effective_step(s.optimizer, s.groups[n], s.p.weights_only)
                                               for n in active]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400, help="optimiser steps per timed run")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs (median; at least 5)")
    ap.add_argument("--every", type=int, default=40, help="K, steps between control steps (default: the scheduler's)")
    ap.add_argument("--no-penalties", action="store_true", help="skip the wasserstein and l2 comparisons")
    args = ap.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256 * args.steps, 784, generator=gen)
    y = torch.randint(0, 10, (256 * args.steps,), generator=gen)
    runs = {"plain": method(None), "lot": method(args.every)}
    if not args.no_penalties:
        runs.update({"wasserstein": method(None, penalties=[{"name": "wasserstein", "lambda": 1e-2}]),
                     "l2": method(None, penalties=[{"name": "l2", "lambda": 1e-3}])})
    for m in runs.values():  # warm-up: Adam state, allocator, first control step
        train_seconds(m, x[:256 * args.every], y[:256 * args.every])
    per_step: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # the contestants alternate within every repeat
        for name, m in runs.items():
            wall, cpu = train_seconds(m, x, y)
            per_step[name].append((wall / args.steps, cpu / args.steps))

    lot = runs["lot"]
    xb, yb = x[:256], y[:256]
    lot.net.eval()
    parts = control_parts(lot, xb, yb)
    part_times: dict[str, list[tuple[float, float]]] = {k: [] for k in parts}
    for _ in range(args.repeats):  # alternating too
        for k, fn in parts.items():
            part_times[k].append(timed(fn))
    lot.net.train()

    def med(values, i):
        return statistics.median(v[i] for v in values)

    print(f"MLP 784-256-256-10, batch 256, one thread; median of {args.repeats} alternating runs of {args.steps} "
          f"steps (control parts: of {args.repeats} calls); wall clock and, in brackets, this thread's CPU time")
    step = [med(per_step["plain"], i) for i in (0, 1)]
    print(f"  plain Adam training step           {step[0] * 1e3:8.2f} ms ({step[1] * 1e3:7.2f})")
    control = [med(part_times["control step (all layers)"], i) for i in (0, 1)]
    for k, v in part_times.items():
        t = [med(v, i) for i in (0, 1)]
        print(f"  {k:33s}{t[0] * 1e3:8.2f} ms ({t[1] * 1e3:7.2f})  = {t[0] / step[0]:5.1f} Adam steps "
              f"({t[1] / step[1]:4.1f})")
    lot_t = [med(per_step["lot"], i) for i in (0, 1)]
    print(f"  average step with the scheduler, K={args.every:<4d}{lot_t[0] * 1e3:6.2f} ms ({lot_t[1] * 1e3:7.2f})  "
          f"= {lot_t[0] / step[0]:5.2f}x plain Adam ({lot_t[1] / step[1]:4.2f}x); control/K predicts "
          f"{1 + control[0] / args.every / step[0]:4.2f}x ({1 + control[1] / args.every / step[1]:4.2f}x)")
    for k in (10, 40, 160, 640):
        print(f"    predicted average at K={k:<4d}     {1 + control[0] / k / step[0]:5.2f}x ({1 + control[1] / k / step[1]:4.2f}x)")
    for name in ("wasserstein", "l2"):
        if name in per_step:
            t = [med(per_step[name], i) for i in (0, 1)]
            print(f"  step with the {name} penalty{' ' * (12 - len(name))}{t[0] * 1e3:7.2f} ms ({t[1] * 1e3:7.2f})  "
                  f"= {t[0] / step[0]:5.2f}x plain Adam ({t[1] / step[1]:4.2f}x)")


if __name__ == "__main__":
    main()
