"""results/<study>/: one JSON per trial and the summary, written atomically.

A file is written to a temporary name and renamed, so a reader (or a resumed
study) never sees half a file.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from orchestrator.results.records import TrialRecord, record_from_json


def study_dir(output_dir: str | Path, study_name: str) -> Path:
    return Path(output_dir).resolve() / study_name


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(clean(data), indent=1, allow_nan=False))
    os.replace(tmp, path)


def clean(data: Any) -> Any:
    """NaN/inf -> None, so the files are strict JSON any tool reads."""
    if isinstance(data, float):
        return None if math.isnan(data) or math.isinf(data) else data
    if isinstance(data, dict):
        return {k: clean(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [clean(v) for v in data]
    return data


def write_trial(directory: Path, record: TrialRecord) -> Path:
    path = directory / "trials" / f"{record.trial_id}.json"
    write_json(path, record.to_json())
    return path


def read_trials(directory: Path) -> list[TrialRecord]:
    """The typed records of results/<study>/trials/*.json (version 1 or 2), by file name."""
    return [record_from_json(json.loads(p.read_text())) for p in sorted((directory / "trials").glob("*.json"))]
