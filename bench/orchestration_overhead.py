"""Orchestration overhead: a study's wall time against the ideal packing of its trials.

What it measures
    A study of short trials (default: permuted_digits, 4 tasks, 2 configs x 6
    orders = 12 trials of a few seconds each, 1 CPU per trial) run through
    ``run_study`` on an embedded Ray that is already started. Each trial records
    its own wall time (``wall_s``: building the method, moving the data, every
    task, its checkpoints). The ideal is sum(trial wall_s) / slots, slots = the
    trials that fit at once (CPUs / CPUs per trial). Two ratios against it:

    - trials phase: from the first trial's start to the last trial's end, as
      the trials stamped them (Tune scheduling, actor reuse, result passing,
      per-task checkpoints, the driver's JSON and MLflow writes as trials end);
    - whole run: ``run_study`` from call to return, which adds loading the
      benchmark, the MLflow study/config runs, the summary and the report
      (bootstrap intervals and figures).

    Target (issue 9): trials phase <= 1.2x.

How to run (from the repository root)
    .venv/bin/python bench/orchestration_overhead.py              # 3 repeats, median
    .venv/bin/python bench/orchestration_overhead.py --repeats 5 --epochs 20
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def study_dict(root: Path, epochs: int, orders: int) -> dict:
    return {
        "name": "overhead",
        "benchmark": {"name": "permuted_digits", "params": {"num_tasks": 4}},
        "orders": {"kind": "random", "count": orders, "seed": 0},
        "methods": [{"name": "finetune", "params": {"training": {"epochs": epochs}, "network": {"hidden": [256, 256]},
                                                    "optimizer": {"name": "adam", "lr": {"grid": [0.001, 0.003]}}}}],
        "resources": {"cpu": 1},
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db"},
        "output_dir": str(root / "results"),
    }


def one_run(epochs: int, orders: int, slots: int) -> dict:
    from orchestrator.results.store import read_trials
    from orchestrator.run.driver import run_study
    from orchestrator.study.loading import parse_study

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        study = parse_study(study_dict(root, epochs, orders))
        started = time.time()
        run_study(study, overwrite=True)
        whole = time.time() - started
        records = read_trials(root / "results" / "overhead")
    assert all(r.completed for r in records), [r.error for r in records]
    work = sum(r.wall_s for r in records)
    ideal = work / slots
    first = min(r.started_at for r in records)
    last = max(r.started_at + r.wall_s for r in records)
    return {"trials": len(records), "mean_trial_s": work / len(records), "ideal_s": ideal,
            "trials_phase_s": last - first, "whole_s": whole,
            "trials_phase_ratio": (last - first) / ideal, "whole_ratio": whole / ideal}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15, help="epochs per task (sets the trial length)")
    parser.add_argument("--orders", type=int, default=6, help="orders; trials = 2 configs x orders")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the embedded Ray (= slots at 1 CPU per trial)")
    args = parser.parse_args()

    import ray

    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, logging_level="warning")
    runs = []
    for k in range(args.repeats):
        r = one_run(args.epochs, args.orders, args.cpus)
        runs.append(r)
        print(json.dumps({"run": k, **{key: round(v, 3) for key, v in r.items()}}), flush=True)
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    print(f"\n{int(med['trials'])} trials of {med['mean_trial_s']:.1f} s on {args.cpus} slots, median of "
          f"{args.repeats}: trials phase {med['trials_phase_s']:.1f} s vs ideal {med['ideal_s']:.1f} s = "
          f"{med['trials_phase_ratio']:.2f}x (target <= 1.2x); whole clorch run {med['whole_s']:.1f} s = "
          f"{med['whole_ratio']:.2f}x")


if __name__ == "__main__":
    main()
