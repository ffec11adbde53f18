"""Per-training-step cost of the methods that add work to every step, against finetune (issue 21).

One run, side by side, one thread, the same model (MLP 784-256-256 by default,
``--backbone lenet`` for the HALRP LeNet on 3x32x32), the same batches (every
method draws its minibatches from the same seeded permutation) and the same
number of steps (``--steps``). Each contestant first learns task 0 untimed (so
EWC has a Fisher, replay a full memory, HALRP a frozen base); then all of
them learn task 1 in lock step: each in its own thread, one thread running at
a time, handing over to the next contestant every ``--turn`` (5) optimiser
steps, so their steps alternate and every contestant meets the same load of a
shared machine (the first step of a turn finds the caches cold, the next
ones warm, as for a trial sharing a machine). A step's time is its thread's
CPU time from the start of the step to the start of the next (the step and
the next batch's draw, no waiting for a turn; ``--clock wall``: wall time), on
the ``fit`` call that runs the timed steps, so EWC's Fisher after the task and
HALRP's free fine-tune, SVD and pruning are not counted (HALRP: the low-rank
phase, the later-task step). Every repeat builds every contestant afresh; a
repeat's time per step is the mean over its steps, and the table gives the
median over ``--repeats``: ms/step, its ratio to finetune with the same
optimiser and setting, and (``paired``) the median of the within-repeat ratios.

  SGD lr 0.01, class-incremental: finetune, ewc, ewc online, l2, wasserstein, er, der_pp (buffer 500)
  Adam lr 1e-3, task-incremental:  finetune, halrp (later task, low-rank phase)

Run: .venv/bin/python bench/step_cost.py [--steps N] [--repeats R] [--batch B] [--backbone mlp|lenet]
     [--turn K] [--clock cpu|wall] [--only LABEL ...]
"""
from __future__ import annotations

import argparse
import gc
import statistics
import threading
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


class LockStep:
    """Round-robin turns between threads: a thread runs only while it holds the turn."""

    def __init__(self, labels: list[str]):
        self.cond = threading.Condition()
        self.order, self.active, self.turn = list(labels), set(labels), 0

    def _holder(self) -> str:
        return self.order[self.turn % len(self.order)]

    def wait(self, label: str) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self._holder() == label)

    def hand_over(self, label: str) -> None:
        with self.cond:
            self._advance()

    def leave(self, label: str) -> None:
        with self.cond:
            self.active.discard(label)
            if self._holder() == label:
                self._advance()

    def _advance(self) -> None:
        if self.active:
            self.turn += 1
            while self._holder() not in self.active:
                self.turn += 1
        self.cond.notify_all()


class StepTimer:
    """Patches the modules' ``fit``: every step first hands the turn over; the thread's time between two
    handovers (a step and the next batch's draw), per fit call, per thread's label."""

    def __init__(self, lock: LockStep, clock, every: int):
        self.lock, self.clock, self.every = lock, clock, every
        self.calls: dict[str, list[list[float]]] = {}
        self.local = threading.local()
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
            label = self.local.label
            times: list[float] = []
            last = [None]

            def turn(xb, yb):
                if last[0] is not None:
                    times.append(self.clock() - last[0])
                if len(times) % self.every == 0:
                    self.lock.hand_over(label)
                    self.lock.wait(label)
                last[0] = self.clock()
                return step(xb, yb)

            out = original(turn, x, y, epochs=epochs, batch_size=batch_size, generator=generator)
            times.append(self.clock() - last[0])
            self.calls.setdefault(label, []).append(times)
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


def lock_step(ready: dict, order: list[str], steps: int, clock, every: int) -> dict[str, float]:
    """Every contestant learns its task 1 in its own thread, in lock step (``every`` steps a turn);
    seconds per timed step."""
    lock = LockStep(order)
    with StepTimer(lock, clock, every) as timer:
        def run(label: str) -> None:
            timer.local.label = label
            lock.wait(label)
            try:
                method, second = ready[label]
                method.learn_task(1, second)
            finally:
                lock.leave(label)

        threads = [threading.Thread(target=run, args=(label,), name=label) for label in order]
        gc.collect()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    out = {}
    for label in order:
        times = timer.calls[label][-1]  # finetune family: its one fit; halrp: the low-rank phase (the last fit)
        assert len(times) == steps, (label, len(times))
        out[label] = sum(times) / len(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--buffer", type=int, default=500)
    ap.add_argument("--first", type=int, default=2000, help="samples of the untimed task 0")
    ap.add_argument("--backbone", default="mlp", choices=["mlp", "lenet"])
    ap.add_argument("--turn", type=int, default=5, help="steps a contestant takes before handing over")
    ap.add_argument("--clock", default="cpu", choices=["cpu", "wall"],
                    help="cpu: the thread's CPU time (robust to other load on a shared machine) | wall")
    ap.add_argument("--only", nargs="*", help="contestants to time (their references are added)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    input_shape = (784,) if args.backbone == "mlp" else (3, 32, 32)
    labels = list(CONTESTANTS) if not args.only else [
        k for k in CONTESTANTS if k in args.only or k in {REFERENCE[(CONTESTANTS[o][2]["name"], CONTESTANTS[o][3])]
                                                          for o in args.only}]
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    times: dict[str, list[float]] = {k: [] for k in labels}
    for r in range(args.repeats):
        ready = {label: prepared(label, args, input_shape) for label in labels}
        shift = r % len(labels)
        for label, t in lock_step(ready, labels[shift:] + labels[:shift], args.steps, clock, args.turn).items():
            times[label].append(t)
        del ready
    print(f"{args.backbone} {'784-256-256' if args.backbone == 'mlp' else '3x32x32'}, batch {args.batch}, "
          f"{args.steps} steps of task 1 in lock step ({args.turn} a turn), one thread, {args.clock} time, median of {args.repeats} "
          f"repeats")
    print(f"  {'method':14s} {'ms/step':>8s} {'x finetune':>11s} {'paired':>7s} {'target':>7s}  reference")
    for label in labels:
        _, _, optimizer, setting, target = CONTESTANTS[label]
        ref = REFERENCE[(optimizer["name"], setting)]
        ratio = statistics.median(times[label]) / statistics.median(times[ref])
        paired = statistics.median(a / b for a, b in zip(times[label], times[ref]))
        mark = "" if target is None else f"{'<=' if ratio <= target else '> '}{target:.1f}"
        print(f"  {label:14s} {1e3 * statistics.median(times[label]):8.2f} {ratio:11.2f} {paired:7.2f} {mark:>7s}  "
              f"{ref} ({optimizer['name']}, {setting})")
    print("  x finetune: median ms/step over the reference's; paired: median over repeats of the ratio within one")

if __name__ == "__main__":
    main()
