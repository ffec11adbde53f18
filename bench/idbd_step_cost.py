"""Cost of one deep IDBD optimiser step against one Adam step on the same model.

Two figures per optimiser, both from the same timed runs:
- ``step()``: optimizer.step() ALONE, timed around the call inside real
  training steps (fresh gradients every step, so the optimiser state evolves
  as in training);
- ``train step``: the WHOLE training step (zero_grad, forward, backward, step).
Models: the MLP 784-256-256-10 and the small CNN on 3x32x32, batch 128, one
thread; optimisers: Adam (the project's ``adam``: torch's, with its multi-tensor step) and IDBD
per weight / per layer / scalar / normalised. Every contestant starts from the
same weights and sees the same batches; the contestants alternate within each
repeat (adam, idbd..., adam, idbd..., ...) so that machine noise spreads over
all of them. Figures are the median over --repeats runs of --steps steps;
ratios are against Adam's median.
``--reference`` adds the per-tensor step IDBD had before its foreach step (the
copy kept in tests/test_idbd_foreach.py) as further contestants: before and
after side by side in one run.
Run: .venv/bin/python bench/idbd_step_cost.py [--steps N] [--repeats R] [--reference]
"""
from __future__ import annotations

import argparse
import importlib.util
import pathlib
import statistics
import time

import torch
import torch.nn.functional as F

from methods.backbones import MLP, SmallCNN
from methods.idbd import IDBD
from methods.optimizers import Adam

VARIANTS = {
    "adam": lambda p: Adam(lr=1e-3).build(p),  # the project's adam: torch's, multi-tensor step
    "idbd per-weight": lambda p: IDBD(p, lr=1e-2, meta_lr=1e-3),
    "idbd per-layer": lambda p: IDBD(p, lr=1e-2, meta_lr=1e-3, groups="layer"),
    "idbd scalar": lambda p: IDBD(p, lr=1e-2, meta_lr=1e-3, groups="scalar"),
    "idbd normalized": lambda p: IDBD(p, lr=1e-2, meta_lr=1e-3, normalized=True),
}
MODELS = {
    "mlp 784-256-256-10": (lambda: torch.nn.Sequential(MLP((784,), [256, 256]), torch.nn.Linear(256, 10)), (784,)),
    "small_cnn 3x32x32": (lambda: torch.nn.Sequential(SmallCNN((3, 32, 32), [32, 64]), torch.nn.Linear(64, 10)),
                          (3, 32, 32)),
}


def reference_variants() -> dict:
    """The pre-foreach per-tensor IDBD step (tests/test_idbd_foreach.py), one contestant per variant."""
    path = pathlib.Path(__file__).resolve().parent.parent / "tests" / "test_idbd_foreach.py"
    spec = importlib.util.spec_from_file_location("idbd_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ref = module.ReferenceIDBD
    return {"old per-weight": lambda p: ref(p, lr=1e-2, meta_lr=1e-3),
            "old per-layer": lambda p: ref(p, lr=1e-2, meta_lr=1e-3, groups="layer"),
            "old scalar": lambda p: ref(p, lr=1e-2, meta_lr=1e-3, groups="scalar"),
            "old normalized": lambda p: ref(p, lr=1e-2, meta_lr=1e-3, normalized=True)}


class Contestant:
    def __init__(self, make_model, make_opt):
        torch.manual_seed(0)
        self.model = make_model()
        self.opt = make_opt(self.model.parameters())

    def run(self, batches) -> tuple[float, float, float, float]:
        """Per step over ``batches``: wall seconds in step(), wall seconds of the whole training
        step, and the same two in this thread's CPU time (which a busy machine disturbs less)."""
        in_step = in_step_cpu = 0.0
        start, start_cpu = time.perf_counter(), time.thread_time()
        for x, y in batches:
            self.opt.zero_grad()
            F.cross_entropy(self.model(x), y).backward()
            t, c = time.perf_counter(), time.thread_time()
            self.opt.step()
            in_step_cpu += time.thread_time() - c
            in_step += time.perf_counter() - t
        whole, whole_cpu = time.perf_counter() - start, time.thread_time() - start_cpu
        n = len(batches)
        return in_step / n, whole / n, in_step_cpu / n, whole_cpu / n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=100, help="training steps per timed run")
    ap.add_argument("--cnn-steps", type=int, default=20, help="training steps per timed run of the small CNN")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per contestant (median; at least 5)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument("--reference", action="store_true", help="also time the old per-tensor IDBD step")
    args = ap.parse_args()
    variants = {**VARIANTS, **(reference_variants() if args.reference else {})}
    torch.set_num_threads(1)
    print(f"one thread, batch {args.batch}; median of {args.repeats} alternating runs of {args.steps} steps "
          f"({args.cnn_steps} for the CNN); 'step()' = optimizer.step() ALONE, 'train step' = the WHOLE "
          f"training step (zero_grad + forward + backward + step())")
    for name in args.models:
        make, shape = MODELS[name]
        gen = torch.Generator().manual_seed(0)
        steps = args.steps if name.startswith("mlp") else args.cnn_steps
        batches = [(torch.randn((args.batch, *shape), generator=gen), torch.randint(0, 10, (args.batch,), generator=gen))
                   for _ in range(steps)]
        contestants = {label: Contestant(make, make_opt) for label, make_opt in variants.items()}
        for c in contestants.values():  # warm-up: optimiser state, allocator
            c.run(batches[:5])
        times: dict[str, list[tuple[float, float, float, float]]] = {label: [] for label in contestants}
        for _ in range(args.repeats):
            for label, c in contestants.items():
                times[label].append(c.run(batches))
        med = {k: [statistics.median(run[i] for run in v) for i in range(4)] for k, v in times.items()}
        n = sum(p.numel() for p in contestants["adam"].model.parameters())
        print(f"\n{name} ({n:,} parameters)          wall clock                         thread CPU time")
        print(f"  {'optimiser':16s} {'step() us':>10s} {'x adam':>7s} {'train step us':>14s} {'x adam':>7s}"
              f"   {'step() us':>10s} {'x adam':>7s} {'train step us':>14s} {'x adam':>7s}")
        for label in contestants:
            row = "".join(f" {med[label][i] * 1e6:{10 if i % 2 == 0 else 14}.0f} {med[label][i] / med['adam'][i]:7.2f}"
                          + ("  " if i == 1 else "") for i in (0, 1, 2, 3))
            print(f"  {label:16s}{row}", flush=True)

if __name__ == "__main__":
    main()
