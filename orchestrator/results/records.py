"""The trial record: built in one place from the rows a trial reports.

A failed trial's record keeps the tasks it finished, because it is built from
the rows that reached the driver, not from the trial's own state.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from orchestrator.study.schema import TrialSpec


def record(spec: TrialSpec, rows: list[dict[str, Any]], num_tasks: int, status: str,
           error: str | None = None) -> dict[str, Any]:
    """The trial's JSON record, built from its reported rows (so a failed trial keeps its finished tasks)."""
    matrix = [[None] * num_tasks for _ in range(num_tasks)]
    for row in rows:
        matrix[row["position"]] = list(row["row"])
    return {
        **spec.to_dict(), "kind": "classification", "status": status, "error": error, "num_tasks": num_tasks,
        "tasks_done": len(rows), "matrix": matrix,
        "timings": [{"position": r["position"], "task_id": r["task_id"], "train_s": r["train_s"],
                     "eval_s": r["eval_s"]} for r in rows],
        "task_info": [{k: v for k, v in r.items() if k.startswith("info_")} for r in rows],
    }


def matrix_array(rec: dict[str, Any]) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rec["matrix"]], dtype=float)


def to_json_row(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]
