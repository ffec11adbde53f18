"""A trial's state at a task boundary: what it needs to go on from there.

After every task a trial hands the runner a ``TrialState`` (the method's
state dict, every RNG the trial draws from, the rows of the accuracy matrix
so far); the runner stores it as a Ray Tune checkpoint. A worker that dies
mid-task is retried from the last finished task, and ``clorch run --resume``
starts an interrupted trial from it, instead of from scratch.

Plain torch and files, no Ray: a state saved here loads in a notebook.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"
ROWS_FILE = "rows.json"  # the same rows as JSON: the driver reads them without torch.load


@dataclass
class TrialState:
    tasks_done: int                      # positions 0..tasks_done-1 of the order are learned
    rows: list[dict[str, Any]]           # the rows reported so far, one per learned task
    method: dict[str, Any]               # Method.state_dict()
    rng: dict[str, Any] = field(default_factory=dict)
    resumed_at: list[int] = field(default_factory=list)  # tasks_done at each earlier resume


def capture_rng() -> dict[str, Any]:
    """Every global RNG a trial may draw from (the methods' own generators are in their state)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(directory: str | Path, state: TrialState) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save({"tasks_done": state.tasks_done, "rows": state.rows, "method": state.method,
                "rng": state.rng, "resumed_at": state.resumed_at}, directory / STATE_FILE)
    (directory / ROWS_FILE).write_text(json.dumps({"tasks_done": state.tasks_done, "rows": state.rows}))


def load_state(directory: str | Path) -> TrialState:
    # weights_only=False: the state holds RNG tuples and numpy arrays; it is our own file.
    raw = torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=False)
    return TrialState(raw["tasks_done"], raw["rows"], raw["method"], raw["rng"], list(raw.get("resumed_at", [])))

