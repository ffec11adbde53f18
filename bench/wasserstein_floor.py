"""How much of the Wasserstein penalty's step cost is the sort it cannot avoid (issue 21's 1.2x target).

The penalty (methods/penalties.py) needs, every step, the rank of every weight within its tensor: one
full sort per tensor. This bench times, side by side on the same weights (MLP 784-256-256-10, the
shape bench/step_cost.py uses, one thread), in alternation, median of ``--repeats``:

- step: a bare PyTorch SGD step of that MLP on a batch (forward, backward, update), what finetune pays;
- penalty: the penalty's value and gradient as training computes them (``WassersteinPenalty.value_and_grad``);
- sort: the penalty's own ``argsort`` of each tensor (its 64-bit keys, value bits over index, built and sorted);
- values: numpy's sort of the float32 values alone, no index: below any exact rank.

``1 + sort / step`` is the least a Wasserstein step can cost against finetune's with a full sort per
step on this machine, whatever the rest of the penalty costs.

Run: .venv/bin/python bench/wasserstein_floor.py [--batch 128] [--repeats 7]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from methods.penalties import WassersteinPenalty, argsort


def ms_per_call(fn, calls: int) -> float:
    start = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - start) / calls * 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=50, help="calls per timing")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    penalty = WassersteinPenalty(1e-2, net)  # it reads only named_parameters()
    params = [(k, w) for k, w in net.named_parameters()]
    names, ws = tuple(k for k, _ in params), [w for _, w in params]
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.randn(args.batch, 784), torch.randint(0, 10, (args.batch,))

    def step():
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()

    flats = [w.detach().reshape(-1) for w in ws]
    contestants = {
        "step": step,
        "penalty": lambda: penalty.value_and_grad(names, ws),
        "sort": lambda: [argsort(f) for f in flats],
        "values": lambda: [np.sort(f.numpy()) for f in flats],
    }
    times: dict[str, list[float]] = {k: [] for k in contestants}
    for _ in range(args.repeats):
        for label, fn in contestants.items():
            fn()
            times[label].append(ms_per_call(fn, args.calls))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"MLP 784-256-256-10 ({sum(w.numel() for w in ws):,} weights in {len(ws)} tensors), batch {args.batch}, "
          f"one thread, CPU time, median of {args.repeats}")
    for label in contestants:
        print(f"  {label:8s} {med[label]:6.2f} ms  {med[label] / med['step']:5.2f}x the step")
    print(f"  least Wasserstein step with a full sort (1 + sort/step): {1 + med['sort'] / med['step']:.2f}x; "
          f"with a sort of the values alone: {1 + med['values'] / med['step']:.2f}x")


if __name__ == "__main__":
    main()
