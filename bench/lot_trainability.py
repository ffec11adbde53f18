"""Trainability on random-label MNIST (specs/lot.md): Adam against Adam + the lot scheduler.

Each task gives fresh random labels to the same N MNIST training images and is
tested on itself, so a[t, t] (accuracy on task t right after training it) says
whether the network can still fit a new task: loss of trainability is a[t, t]
falling with t. The spec's MLP 784-256-256-10, batch 256, Adam lr 1e-3 whose
state runs through the whole stream (reset_optimizer false), one order, one
thread, through run_trial (the code path of a study trial). Prints a[t, t] for
the first and last tasks, the scheduler's final per-layer lrs and the time.
At CPU scale (defaults: 20 tasks of 1000 images x 60 epochs = 240 steps each)
it takes a few minutes; studies/lot_random_label_mnist.yaml is the full study.

Run: .venv/bin/python bench/lot_trainability.py --data-root ../shared/data
     [--tasks 20] [--images 1000] [--epochs 60] [--every 40 10] [--figures DIR]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import datasets
from datasets.common import LoadContext
from methods import METHODS
from orchestrator.results.records import matrix_array
from orchestrator.run.trial import run_trial
from orchestrator.study.schema import TrialSpec


def own_task_accuracy(rec) -> np.ndarray:
    A = matrix_array(rec)
    return np.array([A[p, j] for p, j in enumerate(rec["order"])])


def _median(values) -> float:
    finite = [v for v in values if v is not None]
    return float(np.median(finite)) if finite else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default=None, help="torchvision root with MNIST/raw (else $CLORCH_DATA_ROOT, ./data)")
    ap.add_argument("--tasks", type=int, default=20)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--every", type=int, nargs="+", default=[40], help="K of each scheduled run (spec: 40)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--figures", type=Path, default=None, help="also save trainability and lr figures here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    entry = datasets.BENCHMARKS.get("random_label_mnist")
    bench = entry.target(entry.params(num_tasks=args.tasks, num_images=args.images, download=False),
                         LoadContext.resolve(cli_root=args.data_root))
    base = {"optimizer": {"name": "adam", "lr": 1e-3}, "network": {"hidden": [256, 256]},
            "training": {"batch_size": 256, "epochs": args.epochs, "reset_optimizer": False}}
    runs = {"adam": base} | {f"adam+lot K={k}": {**base, "lr_scheduler": {"name": "lot", "every": k}}
                             for k in args.every}
    order = tuple(range(args.tasks))
    steps = args.epochs * -(-args.images // 256)
    print(f"random_label_mnist: {args.tasks} tasks x {args.images} images, {args.epochs} epochs = {steps} Adam steps "
          f"per task, batch 256, MLP 784-256-256-10, seed {args.seed}, one thread")
    records = []
    for label, params in runs.items():
        p = METHODS.get("finetune").params(**params).model_dump()
        spec = TrialSpec(label, label, label, "finetune", p, order, 0, args.seed, "domain_incremental", False)
        started = time.perf_counter()
        rec = run_trial(spec, bench)
        seconds = time.perf_counter() - started
        records.append(rec)
        a = own_task_accuracy(rec)
        k = min(5, len(a) // 2)
        print(f"\n{label}  ({seconds:.0f} s)")
        print("  a[t,t] first tasks: " + "  ".join(f"t{t}: {v:5.1f}" for t, v in enumerate(a[:3])))
        print("  a[t,t] last tasks:  " + "  ".join(f"t{t}: {v:5.1f}" for t, v in list(enumerate(a))[-3:]))
        print(f"  mean a[t,t] of the first {k}: {a[:k].mean():5.1f}   of the last {k}: {a[-k:].mean():5.1f}")
        print("  a[t,t] all: " + " ".join(f"{v:.0f}" for v in a))
        online = np.array([r.get("info_online_acc", np.nan) for r in rec["task_info"]])
        print(f"  online training accuracy: mean {np.nanmean(online):5.1f}, of the last {k} {np.nanmean(online[-k:]):5.1f}")
        if "trace" in rec:
            trace = rec["trace"]
            final = {key.split("/", 1)[1]: next((v for v in reversed(trace[key]) if v is not None), None)
                     for key in trace if key.startswith("lr/")}
            cools = sum(r.get("info_lot_cools", 0) for r in rec["task_info"])
            warms = sum(r.get("info_lot_warms", 0) for r in rec["task_info"])
            control = sum(r.get("info_lot_control_s", 0) for r in rec["task_info"])
            print("  final lr per layer: " + ", ".join(f"{n} {v:.2e}" for n, v in final.items()))
            print(f"  {cools:.0f} cools, {warms:.0f} warms over {len(trace['step'])} control steps "
                  f"({control:.0f} s of control work)")
            for layer in final:
                medians = {q: _median(trace[f"{q}/{layer}"]) for q in ("eta_eff", "tau", "G", "sigma2", "V", "sharpness")}
                print(f"  {layer} medians over control steps: " + ", ".join(f"{q} {v:.3g}" for q, v in medians.items()))
    if args.figures is not None:
        from orchestrator.report.analysis import analyse
        from orchestrator.report.trace_figures import lr_trajectories, trainability

        args.figures.mkdir(parents=True, exist_ok=True)
        results = analyse(records, None, n_resamples=10)
        trainability(results).savefig(args.figures / "trainability.png", dpi=110)
        for r in results:
            if any("trace" in rec for rec in r.records):
                lr_trajectories(r).savefig(args.figures / f"lr_{r.name.replace(' ', '_').replace('=', '')}.png", dpi=110)
        print(f"\nfigures in {args.figures}")


if __name__ == "__main__":
    main()
