"""Loop overhead: the project's trial training loop against a bare PyTorch loop.

What it measures
    Wall-clock time of ``Finetune(params, ctx).learn_task(0, split)`` (contestant
    A: TaskNetwork + methods.loop.fit, the loop every trial runs) against the
    loop a PyTorch user would write by hand (contestant B): the same MLP built
    identically (nn.Flatten, Linear+ReLU per hidden width, Linear head), the same
    SGD optimiser and lr, the same tensors, the same number of steps, batches
    drawn by index from a fresh torch.randperm each epoch, and per step only
    zero_grad / forward / cross_entropy / backward / step. Both start from the
    same initial weights and the same shuffling seed, so after training their
    parameters must agree; the script checks that, to show they did the same work.

Why
    A trial's loop must not add per-step Python work on top of the model's own
    cost: with small models (the digit benchmarks, an MLP of two 100-wide layers)
    per-step overhead is a large share of the step, and it multiplies over every
    trial of a study. The target is median(A) / median(B) <= 1.15.

How to run (from the repository root)
    .venv/bin/python bench/loop_overhead.py
    .venv/bin/python bench/loop_overhead.py --repeats 9 --epochs 5

Timing runs with torch.set_num_threads(1) so that small-tensor kernels are not
dominated by thread scheduling noise. Each configuration is warmed up once per
contestant, then timed ``--repeats`` times, alternating A and B so that machine
noise is spread across both; the median of each is reported.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from datasets.benchmark import DeviceSplit  # noqa: E402
from methods.finetune import Finetune, FinetuneParams  # noqa: E402
from methods.protocol import MethodContext  # noqa: E402

INPUT_SHAPE = (1, 8, 8)  # the permuted-digits image shape
N_CLASSES = 10
HIDDEN = [100, 100]      # the NetworkParams default
LR = 0.01
SEED = 0
TARGET = 1.15


def make_task(n: int, seed: int) -> DeviceSplit:
    """Synthetic permuted-digits-like task: n images (1, 8, 8), 10 learnable classes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, *INPUT_SHAPE, generator=g)
    w = torch.randn(64, N_CLASSES, generator=g)
    y = (x.reshape(n, -1) @ w).argmax(dim=1)
    return DeviceSplit(x.contiguous(), y.contiguous())


def project_params(epochs: int, batch_size: int) -> FinetuneParams:
    return FinetuneParams(network={"backbone": "mlp", "hidden": HIDDEN},
                          training={"epochs": epochs, "batch_size": batch_size},
                          optimizer={"name": "sgd", "lr": LR, "momentum": 0.0, "weight_decay": 0.0})


def project_method(epochs: int, batch_size: int, num_tasks: int) -> Finetune:
    ctx = MethodContext(input_shape=INPUT_SHAPE, classes_per_task=(N_CLASSES,) * num_tasks,
                        setting="task_incremental", device=torch.device("cpu"), seed=SEED)
    torch.manual_seed(SEED)  # same initial weights every time, for the same-work check
    return Finetune(project_params(epochs, batch_size), ctx)


def bare_model() -> nn.Module:
    """The same architecture, built the obvious way."""
    width = INPUT_SHAPE[0] * INPUT_SHAPE[1] * INPUT_SHAPE[2]
    layers: list[nn.Module] = [nn.Flatten()]
    for h in HIDDEN:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, N_CLASSES))
    return nn.Sequential(*layers)


def copy_initial_weights(src: Finetune, dst: nn.Module) -> None:
    """Give the bare model the project network's starting weights (backbone + head 0)."""
    src_tensors = list(src.net.backbone.parameters()) + list(src.net.heads[0].parameters())
    dst_tensors = list(dst.parameters())
    assert [t.shape for t in src_tensors] == [t.shape for t in dst_tensors]
    with torch.no_grad():
        for s, d in zip(src_tensors, dst_tensors):
            d.copy_(s)


def bare_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, batch_size: int,
               generator: torch.Generator) -> None:
    """Contestant B: the loop a PyTorch user writes by hand."""
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    model.train()
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()


def run_project(data: DeviceSplit, epochs: int, batch_size: int, num_tasks: int) -> tuple[float, Finetune]:
    method = project_method(epochs, batch_size, num_tasks)  # construction is not timed
    t0 = time.perf_counter()
    method.learn_task(0, data)
    return time.perf_counter() - t0, method


def run_bare(data: DeviceSplit, epochs: int, batch_size: int, num_tasks: int) -> tuple[float, nn.Module]:
    init = project_method(epochs, batch_size, num_tasks)  # same initial weights, not timed
    model = bare_model()
    copy_initial_weights(init, model)
    generator = torch.Generator().manual_seed(SEED)
    t0 = time.perf_counter()
    bare_train(model, data.x, data.y, epochs=epochs, batch_size=batch_size, generator=generator)
    return time.perf_counter() - t0, model


def same_result(method: Finetune, model: nn.Module) -> bool:
    a = list(method.net.backbone.parameters()) + list(method.net.heads[0].parameters())
    b = list(model.parameters())
    return all(torch.allclose(p, q, rtol=1e-5, atol=1e-6) for p, q in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per contestant (default 5)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    ap.add_argument("--samples", type=int, default=4000, help="training samples (default 4000)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128],
                    help="batch sizes, one configuration each (default 32 128)")
    ap.add_argument("--tasks", type=int, default=1,
                    help="task heads in the project network (task_incremental; only head 0 trains)")
    args = ap.parse_args()
    if args.repeats < 1 or args.epochs < 1 or args.samples < 1:
        ap.error("--repeats, --epochs and --samples must be >= 1")

    torch.set_num_threads(1)
    data = make_task(args.samples, SEED)
    print("loop overhead: Finetune.learn_task (A) vs bare PyTorch loop (B)")
    print(f"  torch {torch.__version__}, cpu, torch.set_num_threads(1); "
          f"{args.samples} samples of {INPUT_SHAPE}, {N_CLASSES} classes, mlp {HIDDEN}, "
          f"sgd lr={LR}, {args.epochs} epochs, task_incremental ({args.tasks} head(s)), "
          f"{args.repeats} timed runs each after 1 warm-up, alternating A/B")
    print()
    header = f"{'batch':>6} {'steps':>6} {'A median s':>11} {'B median s':>11} {'A us/step':>10} " \
             f"{'B us/step':>10} {'ratio':>7} {'same weights':>13}"
    print(header)
    print("-" * len(header))

    summary = []
    for bs in args.batch_sizes:
        steps = args.epochs * -(-args.samples // bs)
        _, m = run_project(data, args.epochs, bs, args.tasks)   # warm-up A
        _, b = run_bare(data, args.epochs, bs, args.tasks)      # warm-up B
        same = same_result(m, b)
        ta, tb = [], []
        for r in range(args.repeats):
            order = (run_project, run_bare) if r % 2 == 0 else (run_bare, run_project)
            for fn in order:
                t, _ = fn(data, args.epochs, bs, args.tasks)
                (ta if fn is run_project else tb).append(t)
        ma, mb = statistics.median(ta), statistics.median(tb)
        ratio = ma / mb
        summary.append((bs, ratio))
        print(f"{bs:>6} {steps:>6} {ma:>11.4f} {mb:>11.4f} {1e6 * ma / steps:>10.1f} "
              f"{1e6 * mb / steps:>10.1f} {ratio:>6.2f}x {('yes' if same else 'NO'):>13}")

    print()
    parts = ", ".join(f"{r:.2f}x (batch {bs})" for bs, r in summary)
    verdict = "ok" if all(r <= TARGET for _, r in summary) else "OVER TARGET"
    print(f"loop overhead: {parts}; target <= {TARGET:.2f}x  [{verdict}]")


if __name__ == "__main__":
    main()
