"""Whole-study overhead: `clorch run STUDY` against the ideal packing of its trials plus Ray's own floor.

What it measures (issue 21's first target), side by side in one run, median of ``--repeats``:

- floor: a fresh Python that does a bare ``ray.init`` (embedded, the CPUs of the study) and runs one remote
  task that imports torch: what any Ray study must pay before its first trial;
- whole: ``clorch run STUDY --overwrite`` as a user runs it (a fresh process running the command's entry point,
  its own results directory and MLflow database), from process start to exit, with the time of each phase (imports and validation, Ray start,
  the trials, the summary and the report) stamped by wrapping the driver's functions in that process;
- ideal: the trials' own wall times (each trial stamps its start and end, so this includes building the method,
  moving data, training, evaluating, checkpoints) packed on the slots (CPUs / CPUs per trial) by longest first,
  the makespan a perfect scheduler with zero overhead would reach.

Target: whole <= 1.3 x ideal + floor + 3 s. The per-phase line says where the rest goes.

How to run (from the repository root)
    .venv/bin/python bench/study_overhead.py                       # studies/quickstart.yaml, 5 repeats
    .venv/bin/python bench/study_overhead.py --study studies/X.yaml --repeats 3 --data-root ../shared/data
"""
from __future__ import annotations

import argparse
import heapq
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FLOOR = """
import time, ray
t0 = time.perf_counter()
ray.init(address="local", num_cpus={cpus}, include_dashboard=False, logging_level="ERROR")
@ray.remote(num_cpus=1)
def warm():
    import torch
    return torch.__version__
ray.get(warm.remote())
print("FLOOR", time.perf_counter() - t0)
ray.shutdown()
"""

# Runs `clorch run` in this fresh process, stamping the driver's phases by wrapping its functions.
WHOLE = """
import json, sys, time
T0 = time.perf_counter()
stamps = {{}}
def wrap(module, name, key):
    fn = getattr(module, name)
    def timed(*a, **k):
        s = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            stamps[key] = stamps.get(key, 0.0) + time.perf_counter() - s
    setattr(module, name, timed)
from orchestrator import cli
import orchestrator.run.driver as driver
import orchestrator.cluster.connect as connect
wrap(driver, "connect", "ray_start_s")
wrap(driver.TuneRuns, "run_fixed", "trials_s")
wrap(driver.TuneRuns, "run_optuna", "trials_s")
wrap(driver, "run_study", "run_study_s")
wrap(cli, "_report_after_run", "report_s")
stamps["import_s"] = time.perf_counter() - T0
import atexit
def done():
    stamps["process_s"] = time.perf_counter() - T0
    print("STAMPS " + json.dumps(stamps), flush=True)
atexit.register(done)
sys.argv = ["clorch", "run", {study!r}, "--overwrite"] + {extra!r}
if hasattr(cli, "entry"):
    cli.entry()  # what the installed `clorch` command runs
else:  # a checkout from before the entry point (a 'before' measurement)
    sys.exit(cli.main())
"""


def ideal_packing(walls: list[float], slots: int) -> float:
    """Longest-processing-time-first makespan of the trials on ``slots`` identical slots."""
    heap = [0.0] * max(1, slots)
    for w in sorted(walls, reverse=True):
        heapq.heappush(heap, heapq.heappop(heap) + w)
    return max(heap)


def floor_s(python: str, cpus: int) -> float:
    out = subprocess.run([python, "-c", FLOOR.format(cpus=cpus)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "RAY_DEDUP_LOGS": "1", "PYTHONWARNINGS": "ignore"})
    line = [x for x in out.stdout.splitlines() if x.startswith("FLOOR")]
    if not line:
        raise RuntimeError(f"floor run failed: {out.stderr[-2000:]}")
    return float(line[0].split()[1])


def whole(python: str, study: Path, workdir: Path, extra: list[str]) -> dict:
    """One `clorch run` in a fresh process inside ``workdir`` (its own results/ and mlflow.db)."""
    shutil.copy(study, workdir / study.name)
    start = time.perf_counter()
    out = subprocess.run([python, "-c", WHOLE.format(study=study.name, extra=extra)], cwd=workdir,
                         capture_output=True, text=True, timeout=3600,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - start
    line = [x for x in out.stdout.splitlines() if x.startswith("STAMPS ")]
    if out.returncode not in (0, 1) or not line:
        raise RuntimeError(f"clorch run failed ({out.returncode}): {out.stderr[-3000:]}")
    stamps = json.loads(line[0][len("STAMPS "):])
    summaries = list((workdir / "results").glob("*/summary.json"))
    summary = json.loads(summaries[0].read_text())
    walls, starts, ends = [], [], []
    for f in (summaries[0].parent / "trials").glob("*.json"):
        rec = json.loads(f.read_text())
        if rec.get("wall_s"):
            walls.append(float(rec["wall_s"]))
            starts.append(float(rec["started_at"]))
            ends.append(float(rec["ended_at"]))
    return {"wall_s": wall, "stamps": stamps, "walls": walls, "trials_span_s": max(ends) - min(starts),
            "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--study", default=str(ROOT / "studies" / "quickstart.yaml"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    study = Path(args.study).resolve()
    extra = ["--data-root", str(Path(args.data_root).resolve())] if args.data_root else []
    cpus = os.cpu_count() or 1
    import yaml  # the study's CPUs per trial set the slots

    per_trial = float((yaml.safe_load(study.read_text()).get("resources") or {}).get("cpu", 1))
    slots = max(1, int(cpus // per_trial))
    rows = []
    for r in range(args.repeats):  # alternate floor and study so that machine noise is spread over both
        fl = floor_s(args.python, cpus)
        with tempfile.TemporaryDirectory(prefix="clorch-overhead-") as tmp:
            w = whole(args.python, study, Path(tmp), extra)
        ideal = ideal_packing(w["walls"], slots)
        budget = 1.3 * ideal + fl + 3.0
        rows.append({"floor": fl, "whole": w["wall_s"], "ideal": ideal, "sum": sum(w["walls"]), "budget": budget,
                     "span": w["trials_span_s"], "n": len(w["walls"]), **w["stamps"]})
        st = w["stamps"]
        print(f"repeat {r + 1}: whole {w['wall_s']:.1f} s | ideal {ideal:.1f} s ({len(w['walls'])} trials, "
              f"sum {sum(w['walls']):.1f} s on {slots} slots) | floor {fl:.1f} s | budget {budget:.1f} s | "
              f"phases: imports {st.get('import_s', 0):.1f}, Ray {st.get('ray_start_s', 0):.1f}, "
              f"trials {st.get('trials_s', 0):.1f} (first start to last end {w['trials_span_s']:.1f}), "
              f"run_study {st.get('run_study_s', 0):.1f}, report {st.get('report_s', 0):.1f}", flush=True)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if isinstance(rows[0][k], (int, float))}
    print(f"\nmedian of {len(rows)}: whole {med['whole']:.1f} s, ideal packing {med['ideal']:.1f} s, "
          f"floor {med['floor']:.1f} s -> (whole - floor - 3) / ideal = "
          f"{(med['whole'] - med['floor'] - 3) / med['ideal']:.2f}x (target <= 1.3x); "
          f"whole / budget = {med['whole'] / med['budget']:.2f} (target <= 1)")
    print(f"median phases: imports {med.get('import_s', 0):.1f} s, Ray start {med.get('ray_start_s', 0):.1f} s, "
          f"Tune trials {med.get('trials_s', 0):.1f} s (span {med['span']:.1f} s), "
          f"run_study {med.get('run_study_s', 0):.1f} s, report {med.get('report_s', 0):.1f} s, "
          f"process {med.get('process_s', 0):.1f} s")


if __name__ == "__main__":
    main()
