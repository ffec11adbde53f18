"""Trials per hour with k trials packed on one GPU (issue 9: 1, 2, 4, 8 per GPU).

What it measures
    A permuted_mnist study (standard protocol, MLP, a fraction of the data so
    a trial takes seconds to a minute) run through ``run_study`` with
    ``resources: {cpu: C, gpu: 1/k}`` for each k, on an embedded Ray that sees
    one GPU: Ray packs k trials on the GPU at once. Reported: trials per hour
    (trials / wall of the trials phase * 3600), and the speed-up over k = 1.
    ``--device cpu`` runs the same with ``gpu: 0`` and ``cpu: CPUS/k`` (to
    check the script, or to see CPU packing).

How to run (from the repository root, on a machine with a GPU and MNIST)
    .venv/bin/python bench/gpu_packing.py --data-root ../shared/data
    .venv/bin/python bench/gpu_packing.py --packing 1 2 4 8 --trials 16 --epochs 2
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def study_dict(root: Path, k: int, args) -> dict:
    gpu = args.device == "gpu"
    return {
        "name": f"packing{k}",
        "benchmark": {"name": "permuted_mnist",
                      "params": {"protocol": "standard", "num_tasks": args.tasks, "train_fraction": args.fraction}},
        "orders": {"kind": "random", "count": args.trials, "seed": 0},
        "methods": [{"name": "finetune", "params": {"training": {"epochs": args.epochs, "batch_size": 128},
                                                    "network": {"hidden": [400, 400]},
                                                    "optimizer": {"name": "adam", "lr": 0.001}}}],
        "resources": {"cpu": 1 if gpu else max(0.01, args.cpus / k), "gpu": 1.0 / k if gpu else 0},
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db"},
        "output_dir": str(root / "results"),
        "data_root": args.data_root,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--packing", type=int, nargs="+", default=[1, 2, 4, 8], help="trials per GPU")
    parser.add_argument("--trials", type=int, default=16, help="trials per setting (orders)")
    parser.add_argument("--tasks", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--fraction", type=float, default=0.25, help="train_fraction of each task")
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--data-root", default=os.environ.get("CLORCH_DATA_ROOT", "data"))
    args = parser.parse_args()

    import ray

    from orchestrator.results.store import read_trials
    from orchestrator.run.driver import run_study
    from orchestrator.study.loading import parse_study

    ray.init(address="local", num_cpus=args.cpus, num_gpus=1 if args.device == "gpu" else 0,
             include_dashboard=False, logging_level="warning")
    rows = []
    for k in args.packing:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            run_study(parse_study(study_dict(root, k, args)), overwrite=True)
            records = read_trials(root / "results" / f"packing{k}")
        done = [r for r in records if r.completed]
        first = min(r.started_at for r in done)
        last = max(r.started_at + r.wall_s for r in done)
        rows.append((k, len(done), last - first, len(done) / (last - first) * 3600))
    base = rows[0][3]
    print(f"\n{'per GPU' if args.device == 'gpu' else 'per node'}  trials  wall s  trials/hour  speed-up")
    for k, n, wall, per_hour in rows:
        print(f"{k:7d}  {n:6d}  {wall:6.1f}  {per_hour:11.0f}  {per_hour / base:7.2f}x")


if __name__ == "__main__":
    main()
