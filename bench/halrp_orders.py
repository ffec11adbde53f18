"""HALRP against fine-tuning on permuted MNIST (HALRP protocol, LeNet) over task orders, CPU-sized.

Prints, per method: ACC, forgetting, AOPD and MOPD over the orders
(orchestrator/stats.py), HALRP's capacity increment and ranks per task
position, and the training time per task position of both methods.

Every trial runs through orchestrator.run.trial.run_trial, as a study would. To fit
a CPU, each task keeps ``--train-fraction`` of its training images, and the
validation and test splits are cut (the benchmark's max_val_per_task /
max_test_per_task: stratified, seeded, the same images in every task) to
``--val-per-task`` / ``--test-per-task`` images: fewer images for HALRP's
layer importance and for every accuracy, the same training. The input is
the authors' (pmnist_input official); HALRP is ``preset: pmnist`` (the
authors' run and quirks) with this script's epochs, batch size and
prune_bound. Both methods get the same epochs, batch size and Adam lr.
studies/halrp_pmnist_reproduction.yaml is the study-file reproduction (the
README's figures).

    .venv/bin/python bench/halrp_orders.py                    # defaults below
    .venv/bin/python bench/halrp_orders.py --tasks 10 --orders 5 --epochs 3
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import methods
from datasets import LoadContext, load_benchmark
from orchestrator.results.records import matrix_array
from orchestrator.results.stats import config_stats
from orchestrator.run.trial import run_trial
from orchestrator.study.orders import random_orders
from orchestrator.study.schema import TrialSpec

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--orders", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=3, help="per task; HALRP: 1 free fine-tune + the rest low-rank")
    ap.add_argument("--train-fraction", type=float, default=0.01, help="of the 48,000 training images left after validation")
    ap.add_argument("--val-per-task", type=int, default=200)
    ap.add_argument("--test-per-task", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--prune-bound", type=float, default=0.4)
    ap.add_argument("--data-root", default=str(SHARED_DATA))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:  # torchvision may write beside the archives: never into shared
        raw = Path(tmp) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        for f in (Path(args.data_root) / "MNIST" / "raw").glob("*"):
            os.symlink(f.resolve(), raw / f.name)
        bench = load_benchmark("permuted_mnist", {"protocol": "halrp", "pmnist_input": "official",
                                                  "num_tasks": args.tasks, "val_fraction": 0.2,
                                                  "train_fraction": args.train_fraction, "download": False,
                                                  "max_val_per_task": args.val_per_task,
                                                  "max_test_per_task": args.test_per_task},
                               LoadContext(Path(tmp)))
    shared = {"network": {"backbone": "lenet"}, "optimizer": {"name": "adam", "lr": 1e-3},
              "training": {"epochs": args.epochs, "batch_size": args.batch_size}}
    configs = {
        "halrp": resolved_params("halrp", preset="pmnist", **shared, prune_bound=args.prune_bound),
        "finetune": resolved_params("finetune", **shared),
    }
    orders = random_orders(args.tasks, args.orders, seed=0, include_identity=True)
    print(f"permuted_mnist halrp protocol: {args.tasks} tasks, {len(bench.tasks[0].y_train)} training / "
          f"{len(bench.tasks[0].y_val)} validation / {len(bench.tasks[0].y_test)} test images per task; "
          f"LeNet, Adam 1e-3, {args.epochs} epochs, batch {args.batch_size}; {len(orders)} orders; "
          f"{torch.get_num_threads()} thread(s)")
    records: dict[str, list[dict]] = {name: [] for name in configs}
    started = time.perf_counter()
    for i, order in enumerate(orders):
        for name, params in configs.items():
            spec = TrialSpec(f"{name}-{i}", name, name, name, params, tuple(order), i, 0, "task_incremental", False)
            rec = run_trial(spec, bench)
            records[name].append(rec)
            print(f"  order {i} {list(order)} {name:8s} ACC {np.nanmean(matrix_array(rec)[-1]):6.2f}  "
                  f"train {sum(t['train_s'] for t in rec['timings']):6.1f}s  ({time.perf_counter() - started:5.0f}s)",
                  flush=True)

    print("\nmethod     ACC (mean +- std)   forgetting   AOPD    MOPD")
    for name, recs in records.items():
        s = config_stats([matrix_array(r) for r in recs], [r["order"] for r in recs])
        print(f"{name:9s} {s['acc_mean']:6.2f} +- {s['acc_std']:5.2f}    {s['forgetting_mean']:6.2f}     "
              f"{s['aopd']:6.2f}  {s['mopd']:6.2f}")

    halrp = records["halrp"]
    print("\nHALRP per task position (mean over orders):")
    keys = [k for k in halrp[0]["task_info"][-1] if k.startswith("info_rank_")]  # input to output
    print("pos  capacity_increment  prune_rate  " + "  ".join(k.removeprefix("info_") for k in keys))
    for pos in range(args.tasks):
        rows = [r["task_info"][pos] for r in halrp]
        cap = np.mean([row["info_capacity_increment"] for row in rows])
        rho = np.mean([row["info_prune_rate"] for row in rows])
        ranks = "  ".join(f"{np.mean([row[k] for row in rows]):{len(k) - 5}.1f}" for k in keys)
        print(f"{pos:3d}  {cap:18.3f}  {rho:10.3f}  {ranks}")

    print("\ntraining time per task position, seconds (mean over orders); HALRP phases")
    phases = ("base", "free_finetune", "importance", "svd_rank", "lowrank", "prune")
    print("pos  finetune   halrp  " + "  ".join(phases))
    for pos in range(args.tasks):
        ft = np.mean([r["timings"][pos]["train_s"] for r in records["finetune"]])
        hl = np.mean([r["timings"][pos]["train_s"] for r in halrp])
        ph = "  ".join(f"{np.mean([r['task_info'][pos][f'info_time_{p}_s'] for r in halrp]):{len(p)}.2f}" for p in phases)
        print(f"{pos:3d}  {ft:8.2f}  {hl:6.2f}  {ph}")
    total = {n: sum(t["train_s"] for r in recs for t in r["timings"]) for n, recs in records.items()}
    print(f"\ntotal training time: halrp {total['halrp']:.0f}s, finetune {total['finetune']:.0f}s "
          f"(ratio {total['halrp'] / total['finetune']:.2f}); wall {time.perf_counter() - started:.0f}s")


def resolved_params(name: str, **params) -> dict:
    """Every parameter, validated and resolved (presets filled), as a trial record stores them."""
    return methods.METHODS.get(name).params(**params).model_dump()


if __name__ == "__main__":
    main()
