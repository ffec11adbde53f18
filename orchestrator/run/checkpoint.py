"""A trial's state at a task boundary: what it needs to go on from there.

After every task a trial hands the runner a ``TrialState`` (the method's
state dict, every RNG the trial draws from, the rows of the accuracy matrix
so far); the runner stores it as a Ray Tune checkpoint. A worker that dies
mid-task is retried from the last finished task, and ``clorch run --resume``
starts an interrupted trial from it, instead of from scratch.

Plain torch and files, no Ray: a state saved here loads in a notebook.

Checkpoints live on storage a cluster shares (NFS, S3), so reading one must
not run code: the file is read with ``torch.load(weights_only=True)``, which
only rebuilds tensors and plain containers (dict, list, tuple, str, numbers,
bytes, None). What else a state holds is encoded into those on save and
decoded on load (``encode``/``decode``): numpy arrays and numpy scalars as
marked dicts around a tensor or bytes, deques as marked lists. A state that
holds anything else fails at save time, naming where; a file holding any
other pickled object is refused at load time (UnsafeCheckpoint) without
running it.
"""
from __future__ import annotations

import json
import pickle
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"
ROWS_FILE = "rows.json"  # the same rows as JSON: the driver reads them without torch.load
FORMAT = 2  # 2: weights_only-safe encoding (format 1 pickled numpy/RNG objects and is refused)
MARK = "__clorch__"  # the key of an encoded value's dict


class UnsafeCheckpoint(ValueError):
    """A checkpoint file that holds something ``torch.load(weights_only=True)`` will not rebuild."""


@dataclass
class TrialState:
    tasks_done: int                      # positions 0..tasks_done-1 of the order are learned
    rows: list[dict[str, Any]]           # the rows reported so far, one per learned task
    method: dict[str, Any]               # Method.state_dict()
    rng: dict[str, Any] = field(default_factory=dict)
    resumed_at: list[int] = field(default_factory=list)  # tasks_done at each earlier resume


def capture_rng() -> dict[str, Any]:
    """Every global RNG a trial may draw from (the methods' own generators are in their state).

    Plain values only: Python's state as lists, numpy's as its dict form.
    """
    version, internal, gauss = random.getstate()
    state = {"python": [version, list(internal), gauss],
             "numpy": np.random.get_state(legacy=False), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ------------------------------------------------------------ safe encoding
_SCALARS = (str, int, float, bool, complex, bytes, type(None))  # exact types: an IntEnum or np.float64 is not plain


def encode(value: Any, where: str = "state") -> Any:
    """``value`` as tensors and plain containers only (what weights_only loading rebuilds)."""
    if isinstance(value, torch.Tensor):
        if type(value) not in (torch.Tensor, torch.nn.Parameter):
            raise TypeError(f"{where}: a {type(value).__name__} tensor subclass cannot be checkpointed safely")
        return value
    if type(value) in _SCALARS or isinstance(value, (torch.dtype, torch.device, torch.Size)):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(f"{where}: a numpy array of Python objects cannot be checkpointed safely")
        data = np.ascontiguousarray(value)
        return {MARK: "ndarray", "dtype": data.dtype.str, "shape": list(data.shape), "bytes": data.tobytes()}
    if isinstance(value, np.generic):
        return {MARK: "npscalar", "dtype": value.dtype.str, "bytes": value.tobytes()}
    if isinstance(value, dict):
        items = {k: encode(v, f"{where}[{k!r}]") for k, v in value.items()}
        for k in items:
            if not isinstance(k, (str, int, float, bool, type(None))):
                raise TypeError(f"{where}: dict key {k!r} ({type(k).__name__}) cannot be checkpointed safely")
        if MARK in value:  # a user dict that happens to use our key: keep it apart from encoded values
            return {MARK: "dict", "items": list(items.items())}
        if isinstance(value, OrderedDict):
            out = OrderedDict(items)
            metadata = getattr(value, "_metadata", None)  # torch's state_dict version info
            if metadata is not None:
                out._metadata = encode(metadata, f"{where}._metadata")
            return out
        return items
    if isinstance(value, deque):
        return {MARK: "deque", "items": [encode(v, f"{where}[{i}]") for i, v in enumerate(value)],
                "maxlen": value.maxlen}
    if isinstance(value, (list, tuple, set, frozenset)) and type(value) in (list, tuple, set, frozenset):
        items = [encode(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if type(value) is list else type(value)(items)
    raise TypeError(f"{where}: a {type(value).__module__}.{type(value).__qualname__} cannot be checkpointed safely "
                    "(a state dict may hold tensors, numpy arrays, numbers, strings, bytes, None, "
                    "and dicts, lists, tuples, sets and deques of them)")


def decode(value: Any) -> Any:
    """The inverse of ``encode``."""
    if isinstance(value, dict):
        kind = value.get(MARK)
        if kind == "ndarray":
            return np.frombuffer(value["bytes"], dtype=np.dtype(value["dtype"])).reshape(value["shape"]).copy()
        if kind == "npscalar":
            return np.frombuffer(value["bytes"], dtype=np.dtype(value["dtype"]))[0]
        if kind == "deque":
            return deque((decode(v) for v in value["items"]), maxlen=value["maxlen"])
        if kind == "dict":
            return {k: decode(v) for k, v in value["items"]}
        out = type(value)((k, decode(v)) for k, v in value.items())
        metadata = getattr(value, "_metadata", None)
        if metadata is not None:
            out._metadata = decode(metadata)
        return out
    if type(value) in (list, tuple, set, frozenset):
        items = [decode(v) for v in value]
        return items if type(value) is list else type(value)(items)
    return value


# ------------------------------------------------------------ files
def save_state(directory: str | Path, state: TrialState) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(encode({"format": FORMAT, "tasks_done": state.tasks_done, "rows": state.rows, "method": state.method,
                       "rng": state.rng, "resumed_at": state.resumed_at}), directory / STATE_FILE)
    (directory / ROWS_FILE).write_text(json.dumps({"tasks_done": state.tasks_done, "rows": state.rows}))


def load_state(directory: str | Path) -> TrialState:
    """Read a checkpoint without running anything it holds (weights_only); refuse anything else."""
    path = Path(directory) / STATE_FILE
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # torch's own message suggests weights_only=False; say only what was found
        detail = next((ln for ln in lines if "Unsupported" in ln or "GLOBAL" in ln), lines[-1] if lines else "")[:300]
        raise UnsafeCheckpoint(
            f"refusing to load checkpoint {path}: it holds a pickled object that is not a tensor or plain data "
            f"({detail}). clorch never unpickles arbitrary objects from checkpoints (anyone who can write the "
            "shared storage could run code in the workers). It was written by an older clorch or altered: "
            "delete it, or run without --resume to start the trial over.") from None
    raw = decode(raw)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise UnsafeCheckpoint(f"checkpoint {path} is not a clorch trial state of format {FORMAT}; "
                               "delete it, or run without --resume to start the trial over")
    return TrialState(raw["tasks_done"], raw["rows"], raw["method"], raw["rng"], list(raw.get("resumed_at", [])))
