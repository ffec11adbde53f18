"""Peak memory and time of EWC's per-sample diagonal Fisher on the HALRP LeNet (about 3M parameters).

Builds the LeNet on 3x32x32 inputs with a 10-class head, then runs
methods.fisher.diagonal_fisher on ``--samples`` random samples and prints the
rise of the process's peak resident memory (ru_maxrss) over what it held
before, and the seconds it took. ``--chunk`` forces the samples per vmap call
(the old fixed 256); by default the chunk follows the memory budget. Run the
same script against another checkout with PYTHONPATH=that/checkout to compare.
Run: .venv/bin/python bench/fisher_memory.py [--samples N] [--kind empirical|expected] [--chunk C]
"""
from __future__ import annotations

import argparse
import resource
import time

import torch

from methods import MethodContext
from methods.backbones import NetworkParams
import methods.fisher
from methods.fisher import diagonal_fisher
from methods.network import TaskNetwork


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--kind", default="empirical", choices=["empirical", "expected"])
    ap.add_argument("--chunk", type=int, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    ctx = MethodContext((3, 32, 32), (10,), "task_incremental", torch.device("cpu"), 0)
    net = TaskNetwork(NetworkParams(backbone="lenet").build((3, 32, 32)), ctx)
    n_params = sum(w.numel() for w in net.parameters())
    x, y = torch.randn(args.samples, 3, 32, 32), torch.randint(0, 10, (args.samples,))
    kwargs = {} if args.chunk is None else {"chunk": args.chunk}
    auto = hasattr(methods.fisher, "fisher_chunk") and args.chunk is None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.perf_counter()
    fisher = diagonal_fisher(net, 0, x, y, args.kind, **kwargs)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    total = float(sum(f.double().sum() for f in fisher.values()))
    print(f"lenet 3x32x32, {n_params / 1e6:.2f}M parameters, {args.samples} samples, {args.kind}, "
          f"chunk {args.chunk or (methods.fisher.fisher_chunk(n_params, 4) if auto else 'default')}: "
          f"peak +{(peak - before) / 2**20:.2f} GiB, {seconds:.1f} s, sum of F {total:.6e}")


if __name__ == "__main__":
    main()
