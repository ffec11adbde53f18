"""Per-training-step cost of the methods that add work to every step, against finetune (issue 21).

One run, side by side, one thread, the same model (MLP 784-256-256 by default,
``--backbone lenet`` for the HALRP LeNet on 3x32x32), the same batches (every
method draws its minibatches from the same seeded permutation) and the same
number of steps (``--steps``). Each contestant first learns task 0 untimed (so
EWC has a Fisher, replay a full memory, HALRP a frozen base), then the
optimiser steps of task 1 are timed (the process's CPU time by default, which
other processes' load on a shared machine does not inflate; ``--clock
wall``): the ``fit`` call that runs them, so
EWC's Fisher after the task and HALRP's free fine-tune, SVD and pruning are
not counted (HALRP: its low-rank phase, the later-task step). Every repeat
builds and prepares every contestant afresh, then runs their timed tasks back
to back in a rotated order (alternating contestants). The ratio is the median
seconds per step over the median of finetune with the same optimiser and
setting; ``paired`` beside it is the median over ``--repeats`` of the ratio
within each repeat.

  SGD lr 0.01, class-incremental: finetune, ewc, ewc online, l2, wasserstein, er, der_pp (buffer 500)
  Adam lr 1e-3, task-incremental:  finetune, halrp (later task, low-rank phase)

Run: .venv/bin/python bench/step_cost.py [--steps N] [--repeats R] [--batch B] [--backbone mlp|lenet]
     [--clock cpu|wall] [--only LABEL ...]
"""
from __future__ import annotations

import argparse
import gc
import statistics
import time

import torch

import methods.finetune
import methods.halrp
from datasets.benchmark import DeviceSplit
from methods import METHODS, MethodContext, seed_everything

SGD = {"name": "sgd", "lr": 0.01}
ADAM = {"name": "adam", "lr": 1e-3}
CLASS_INC, TASK_INC = "class_incremental", "task_incremental"

# label: (method, its own params, optimizer, setting, target ratio or None for a reference)
CONTESTANTS = {
    "finetune": ("finetune", {}, SGD, CLASS_INC, None),
    "ewc": ("ewc", {"ewc_lambda": 100.0}, SGD, CLASS_INC, 1.2),
    "ewc online": ("ewc", {"ewc_lambda": 100.0, "online": True, "gamma": 0.9}, SGD, CLASS_INC, 1.2),
    "l2": ("finetune", {"penalties": [{"name": "l2", "lambda": 1e-3}]}, SGD, CLASS_INC, 1.2),
    "wasserstein": ("finetune", {"penalties": [{"name": "wasserstein", "lambda": 1e-2}]}, SGD, CLASS_INC, 1.2),
    "er": ("er", {}, SGD, CLASS_INC, 2.0),
    "der_pp": ("der_pp", {}, SGD, CLASS_INC, 3.0),
    "finetune adam": ("finetune", {}, ADAM, TASK_INC, None),
    "halrp later": ("halrp", {"est_rank_epochs": 1, "importance_split": "train"}, ADAM, TASK_INC, 1.3),
}
REFERENCE = {(SGD["name"], CLASS_INC): "finetune", (ADAM["name"], TASK_INC): "finetune adam"}


class FitTimer:
    """Wraps the modules' ``fit``: the wall time and step count of every call, in order."""

    def __init__(self, clock=time.perf_counter):
        self.clock = clock
        self.calls: list[tuple[float, int]] = []
        self.originals = {mod: mod.fit for mod in (methods.finetune, methods.halrp)}

    def __enter__(self):
        for mod, original in self.originals.items():
            mod.fit = self._wrap(original)
        return self

    def __exit__(self, *exc):
        for mod, original in self.originals.items():
            mod.fit = original

    def _wrap(self, original):
        def timed(step, x, y, *, epochs, batch_size, generator):
            steps = [0]

            def counted(xb, yb):
                steps[0] += 1
                return step(xb, yb)

            started = self.clock()
            out = original(counted, x, y, epochs=epochs, batch_size=batch_size, generator=generator)
            self.calls.append((self.clock() - started, steps[0]))
            return out
        return timed


def build(label: str, backbone: str, input_shape: tuple[int, ...], batch: int, buffer: int):
    name, own, optimizer, setting, _ = CONTESTANTS[label]
    entry = METHODS.get(name)
    network = {"backbone": "mlp", "hidden": [256, 256]} if backbone == "mlp" else {"backbone": backbone}
    epochs = 2 if name == "halrp" else 1  # halrp: one free epoch, then one low-rank epoch
    params = {"network": network, "training": {"epochs": epochs, "batch_size": batch}, "optimizer": optimizer, **own}
    if "buffer" in entry.params.model_fields:
        params["buffer"] = {"size": buffer, "batch_size": batch}
    seed_everything(0)
    ctx = MethodContext(input_shape, (2, 2, 2, 2, 2), setting, torch.device("cpu"), 0)
    return entry.target(entry.params.model_validate(params), ctx)


def task(k: int, n: int, input_shape: tuple[int, ...], setting: str) -> DeviceSplit:
    g = torch.Generator().manual_seed(k)
    low = 2 * k if setting == CLASS_INC else 0
    return DeviceSplit(torch.randn(n, *input_shape, generator=g), torch.randint(low, low + 2, (n,), generator=g))


def prepared(label: str, args, input_shape):
    """A freshly built contestant that has learned task 0 (untimed), and its task 1."""
    setting = CONTESTANTS[label][3]
    method = build(label, args.backbone, input_shape, args.batch, args.buffer)
    method.learn_task(0, task(0, args.first, input_shape, setting))
    return method, task(1, args.steps * args.batch, input_shape, setting)


def step_time(label: str, method, second: DeviceSplit, steps: int, clock) -> float:
    """Seconds per optimiser step of task 1 (finetune family: its one fit; halrp: the low-rank phase)."""
    gc.collect()
    with FitTimer(clock) as timer:
        method.learn_task(1, second)
    seconds, counted = timer.calls[-1]
    assert counted == steps, (label, counted)
    return seconds / counted


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--buffer", type=int, default=500)
    ap.add_argument("--first", type=int, default=2000, help="samples of the untimed task 0")
    ap.add_argument("--backbone", default="mlp", choices=["mlp", "lenet"])
    ap.add_argument("--clock", default="cpu", choices=["cpu", "wall"],
                    help="cpu: the process's CPU time (robust to other load on a shared machine) | wall")
    ap.add_argument("--only", nargs="*", help="contestants to time (their references are added)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    input_shape = (784,) if args.backbone == "mlp" else (3, 32, 32)
    labels = list(CONTESTANTS) if not args.only else [
        k for k in CONTESTANTS if k in args.only or k in {REFERENCE[(CONTESTANTS[o][2]["name"], CONTESTANTS[o][3])]
                                                          for o in args.only}]
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {k: [] for k in labels}
    for r in range(args.repeats):
        ready = {label: prepared(label, args, input_shape) for label in labels}
        shift = r % len(labels)
        for label in labels[shift:] + labels[:shift]:  # the timed tasks back to back, in a rotated order
            times[label].append(step_time(label, *ready[label], args.steps, clock))
        del ready
    print(f"{args.backbone} {'784-256-256' if args.backbone == 'mlp' else '3x32x32'}, batch {args.batch}, "
          f"{args.steps} steps of task 1, one thread, {args.clock} time, median of {args.repeats} repeats "
          f"(rotated order)")
    print(f"  {'method':14s} {'ms/step':>8s} {'x finetune':>11s} {'paired':>7s} {'target':>7s}  reference")
    for label in labels:
        _, _, optimizer, setting, target = CONTESTANTS[label]
        ref = REFERENCE[(optimizer["name"], setting)]
        ratio = statistics.median(times[label]) / statistics.median(times[ref])
        paired = statistics.median(a / b for a, b in zip(times[label], times[ref]))
        mark = "" if target is None else f"{'<=' if ratio <= target else '> '}{target:.1f}"
        print(f"  {label:14s} {1e3 * statistics.median(times[label]):8.2f} {ratio:11.2f} {paired:7.2f} {mark:>7s}  "
              f"{ref} ({optimizer['name']}, {setting})")
    print("  x finetune: median ms/step over median ms/step of the reference; paired: median over repeats of the "
          "ratio within a repeat")

if __name__ == "__main__":
    main()
