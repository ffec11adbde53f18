"""Cost of one deep IDBD optimiser step against one Adam step on the same model.

Times ``optimizer.step()`` alone (gradients computed once and reused), and the
whole training step (zero_grad, forward, backward, step), on the MLP and the
small CNN the quickstart uses, for IDBD per-parameter / per-layer / scalar and
the normalised variant. Median of R repeats of N steps; ratio against Adam.
Run: .venv/bin/python bench/idbd_step_cost.py [--steps N] [--repeats R]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from methods.backbones import MLP, SmallCNN
from methods.idbd import IDBD

VARIANTS = {
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "idbd per-weight": lambda p: IDBD(p, lr=1e-2, meta_lr=1e-3),
    "idbd per-layer": lambda p: IDBD(p, lr=1e-2, meta_lr=1e-3, groups="layer"),
    "idbd scalar": lambda p: IDBD(p, lr=1e-2, meta_lr=1e-3, groups="scalar"),
    "idbd normalized": lambda p: IDBD(p, lr=1e-2, meta_lr=1e-3, normalized=True),
}


def timed(fn, steps: int, repeats: int) -> float:
    fn()  # warm-up (state allocation)
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(steps):
            fn()
        runs.append((time.perf_counter() - t) / steps)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    models = {"mlp 784-256-256-10": (lambda: torch.nn.Sequential(MLP((784,), [256, 256]), torch.nn.Linear(256, 10)), (128, 784)),
              "small_cnn 3x32x32": (lambda: torch.nn.Sequential(SmallCNN((3, 32, 32), [32, 64]), torch.nn.Linear(64, 10)), (128, 3, 32, 32))}
    print(f"one thread, batch 128; median of {args.repeats} x {args.steps} steps")
    for name, (make, shape) in models.items():
        x, y = torch.randn(shape), torch.randint(0, 10, (shape[0],))
        base_step = base_full = None
        print(f"\n{name}")
        print(f"  {'optimiser':16s} {'step() us':>10s} {'x adam':>7s} {'train step us':>14s} {'x adam':>7s}")
        for label, make_opt in VARIANTS.items():
            torch.manual_seed(0)
            model = make()
            opt = make_opt(model.parameters())
            F.cross_entropy(model(x), y).backward()
            only_step = timed(opt.step, args.steps, args.repeats)

            def full():
                opt.zero_grad()
                F.cross_entropy(model(x), y).backward()
                opt.step()

            whole = timed(full, args.steps // 4, args.repeats)
            base_step = base_step or only_step
            base_full = base_full or whole
            print(f"  {label:16s} {only_step * 1e6:10.0f} {only_step / base_step:7.2f} "
                  f"{whole * 1e6:14.0f} {whole / base_full:7.2f}", flush=True)


if __name__ == "__main__":
    main()
