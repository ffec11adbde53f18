"""torch's per-tensor optimiser step against its multi-tensor (``foreach``) step, on the CPU, one thread.

Why: on the CPU torch steps its optimisers tensor by tensor unless told ``foreach=True`` (its default on
CUDA). clorch builds ``adam`` and ``rmsprop`` with ``foreach=True`` (methods/optimizers.py); this bench is
the evidence, and the check that SGD, which keeps torch's default, does not gain from it.

Two parameter sets: the benchmark MLP's six tensors (784-256-256-10) and a dozen small ones shaped like
HALRP's later-task parameters on that MLP (scales, rank-100 and rank-60 factors, biases, a head). Every
contestant starts from the same values and gets the same gradients; per-tensor and foreach alternate within
each repeat; the figure is the median over ``--repeats`` of the mean ``step()`` time over ``--steps`` steps
(thread CPU time). The last column says whether the two ended bit for bit equal.

Run: .venv/bin/python bench/optimizer_foreach.py [--steps N] [--repeats R]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

SHAPES = {
    "mlp (6 tensors)": [(256, 784), (256,), (256, 256), (256,), (10, 256), (10,)],
    "halrp-like (12 tensors)": [(256,), (784,), (256, 100), (100, 784), (256,), (256,), (256,), (256, 60),
                                (60, 256), (256,), (2, 256), (2,)],
}
OPTIMIZERS = {
    "adam": lambda p, **k: torch.optim.Adam(p, lr=1e-3, **k),
    "adam wd": lambda p, **k: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-4, **k),
    "sgd momentum wd": lambda p, **k: torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=1e-4, **k),
    "sgd": lambda p, **k: torch.optim.SGD(p, lr=0.01, **k),
    "rmsprop": lambda p, **k: torch.optim.RMSprop(p, lr=0.01, momentum=0.9, weight_decay=1e-4, **k),
}


def contestant(make, shapes, foreach: bool):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen)) for s in shapes]
    return params, make(params, foreach=foreach)


def run(params, opt, grads) -> float:
    """Mean thread CPU seconds of one ``step()`` over ``grads`` (a list of per-step gradient lists)."""
    spent = 0.0
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g
        start = time.thread_time()
        opt.step()
        spent += time.thread_time() - start
    return spent / len(grads)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per contestant (median; at least 5)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"one thread; median of {args.repeats} alternating runs of {args.steps} steps; step() CPU time")
    print(f"  {'parameters':24s} {'optimiser':16s} {'per-tensor us':>14s} {'foreach us':>11s} {'ratio':>6s}  equal")
    for set_name, shapes in SHAPES.items():
        gen = torch.Generator().manual_seed(1)
        grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(args.steps)]
        for opt_name, make in OPTIMIZERS.items():
            pair = {fe: contestant(make, shapes, fe) for fe in (False, True)}
            for params, opt in pair.values():  # warm-up: state, allocator
                run(params, opt, grads[:3])
            times = {fe: [] for fe in pair}
            for _ in range(args.repeats):
                for fe, (params, opt) in pair.items():
                    times[fe].append(run(params, opt, grads))
            slow, fast = (statistics.median(times[fe]) for fe in (False, True))
            equal = all(torch.equal(a, b) for a, b in zip(pair[False][0], pair[True][0]))
            print(f"  {set_name:24s} {opt_name:16s} {slow * 1e6:14.0f} {fast * 1e6:11.0f} {fast / slow:6.2f}  "
                  f"{'yes' if equal else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
