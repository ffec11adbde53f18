"""What a trial's MLflow files cost the driver: the time ``StudyTracker.log_trial`` takes per trial.

What it measures
    Synthetic completed trials (T tasks, a full T x T accuracy matrix) logged by ``StudyTracker.log_trial`` to a
    fresh SQLite store, once with the per-trial figures (``matrix.png`` drawn with matplotlib and ``matrix.csv``:
    ``tracking.trial_artifacts: true``, the default) and once without (trial.json and params.json only). The
    difference is what the figures add to each trial; the driver logs a trial as it ends, while other trials keep
    running in their workers, so this is driver time, not trial time. Also timed alone: drawing one heatmap
    (``run_artifacts.matrix_png``), and a config's two figures (drawn once per config at the end of a study).

How to run (from the repository root)
    .venv/bin/python bench/mlflow_artifacts.py                  # 5 tasks, 30 trials each way
    .venv/bin/python bench/mlflow_artifacts.py --tasks 20 --trials 20
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from orchestrator.results import run_artifacts  # noqa: E402
from orchestrator.results.records import ClassificationRecord, to_json_row  # noqa: E402
from orchestrator.results.tracking import StudyTracker  # noqa: E402
from orchestrator.study.schema import Config, TrialSpec  # noqa: E402

PARAMS = {"optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9}, "training": {"epochs": 5, "batch_size": 32}}


def record(T: int, r: int, rng: np.random.Generator) -> ClassificationRecord:
    order = tuple(int(t) for t in rng.permutation(T))
    spec = TrialSpec(f"ft-0123abcd-o{r}-s0", "ft-0123abcd", "ft", "finetune", PARAMS, order, r, 0,
                     "task_incremental", False)
    A = np.full((T, T), np.nan)
    for i in range(T):
        A[i, list(order[:i + 1])] = rng.uniform(60, 100, i + 1)
    rows = [{"position": i, "task_id": t, "row": to_json_row(A[i]), "train_s": 0.5, "eval_s": 0.05}
            for i, t in enumerate(order)]
    return ClassificationRecord.from_rows(spec, rows, T, status="completed", started_at=time.time() - 5, wall_s=5.0)


def per_trial_s(root: Path, T: int, n: int, figures: bool) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(0)
    config = Config("ft-0123abcd", "ft", "finetune", PARAMS, {})
    tracker = StudyTracker(f"sqlite:///{root}/mlflow.db", f"bench-{figures}", "bench", {"benchmark": "none"},
                           [config], trial_artifacts=figures)
    recs = [record(T, r, rng) for r in range(n + 1)]
    tracker.log_trial(recs[0])  # the first one pays for imports (matplotlib) and warms the store
    wall, cpu = [], []
    for rec in recs[1:]:
        t, c = time.perf_counter(), time.process_time()
        tracker.log_trial(rec)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=5)
    p.add_argument("--trials", type=int, default=30)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # MLflow's ./mlruns artifact folder lands here
        root = Path(tmp)
        without = per_trial_s(root, args.tasks, args.trials, figures=False)
        with_ = per_trial_s(root, args.tasks, args.trials, figures=True)
        rng = np.random.default_rng(1)
        recs = [record(args.tasks, r, rng) for r in range(args.trials)]
        draw, draw_cpu = [], []
        for rec in recs:
            t, c = time.perf_counter(), time.process_time()
            run_artifacts.matrix_png(rec, "ft o0 s0")
            draw.append(time.perf_counter() - t)
            draw_cpu.append(time.process_time() - c)
        t = time.perf_counter()
        run_artifacts.learning_curve_png(recs, "ft")
        run_artifacts.opd_per_task_png(recs, "ft")
        config_s = time.perf_counter() - t
    med = statistics.median
    print(f"{args.tasks} tasks, {args.trials} trials each way; median seconds per trial of log_trial, "
          f"wall (CPU of this process); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs:")
    print(f"  trial.json + params.json only      {med(without[0]):.3f} ({med(without[1]):.3f})")
    print(f"  + matrix.png and matrix.csv        {med(with_[0]):.3f} ({med(with_[1]):.3f})")
    print(f"  added by the figures               {med(with_[0]) - med(without[0]):+.3f} "
          f"({med(with_[1]) - med(without[1]):+.3f})")
    print(f"  drawing one heatmap alone          {med(draw):.3f} ({med(draw_cpu):.3f})")
    print(f"  a config's two figures ({args.trials} trials)  {config_s:.3f}")


if __name__ == "__main__":
    main()
