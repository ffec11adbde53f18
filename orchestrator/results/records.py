"""The trial record: one typed record per benchmark kind, built in one place from what a trial reports.

Two types share the trial's identity (the TrialSpec fields), its status
(``completed`` | ``failed`` | ``stopped``), its error and its timings:

- ``ClassificationRecord``: the accuracy matrices of a task sequence, built by
  ``ClassificationRecord.from_rows`` from the rows a trial reports at each task
  boundary, so a failed or stopped trial keeps the tasks it finished;
- ``StreamRecord``: one pass over a regression stream, built by
  ``StreamRecord.from_stream`` from the squared errors of the pass (and by
  ``StreamRecord.from_rows`` for a stream trial that left no result).

What used to be branches on the kind are methods: ``stats()``, ``matrix()``,
``mlflow_metrics()``, ``to_json()``, and the class methods ``config_stats``,
``empty_config_stats`` and ``objective`` that summarise a config's records.

JSON (results/<study>/trials/*.json and each MLflow trial run's trial.json)
keeps the layout of the version-1 dict records, plus ``"record_version": 2``;
``record_from_json`` reads both, dispatching on ``"kind"``. A record also reads
like that JSON (``rec["status"]``, ``rec.get("trace")``) for scripts written
against the dict records; orchestrator code uses the attributes.

Optional, absent from older records (None): ``init_row``, a classification
trial's accuracy on each task identity before any training (evaluated only
with the study's ``evaluate_unseen``; forward transfer needs it), and
``test_sizes``, the test examples per task identity (the binomial noise of
each accuracy).

Per-task series (``series``): what a method's optional ``task_series()``
returned after each task, ``{name: [value per task position]}``, each value
a float or a list of floats (None where a task did not report the name).
A trace (``trace``) is a method's optional per-step series dict (see
methods/protocol.py): kept as given, drawn generically by the report.

numpy only: no torch, Ray, methods or datasets (tests/test_layout.py).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Iterator, Sequence

import numpy as np

from orchestrator.results import stats
from orchestrator.study.schema import ObjectiveSpec, TrialSpec

RECORD_VERSION = 2
STATUSES = ("completed", "failed", "stopped")
STREAM_WINDOWS = 100  # a stream's squared error is kept as this many time-window means

_SPEC_FIELDS = tuple(f.name for f in fields(TrialSpec))  # a record carries its spec: one list, TrialSpec's
_SPEC_DEFAULTS = {"trial_id": "", "config_id": "", "label": "", "method": "", "params": {}, "order": (),
                  "order_index": 0, "seed": 0, "setting": "", "evaluate_unseen": False, "searched": {},
                  "max_tasks": None}  # what a partial JSON (older versions, tests) lacks
assert set(_SPEC_DEFAULTS) == set(_SPEC_FIELDS), "a TrialSpec field needs a default for old records here"


def to_json_row(values: np.ndarray) -> list[float | None]:
    """One matrix row as JSON: NaN -> None."""
    return [None if math.isnan(v) else float(v) for v in values]


def _metric_name(name: str) -> str:
    """A name MLflow accepts (alphanumerics, ``_ - . : /`` and spaces); anything else becomes ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-.:/ ]", "_", name)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _json_value(v: Any) -> Any:
    """A series value as JSON: a float, a list of floats, None for NaN."""
    if v is None:
        return None
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_json_value(x) for x in np.asarray(v, dtype=float).ravel().tolist()]
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


@dataclass(kw_only=True, eq=False)
class TrialRecord:
    """What both kinds share: the trial's spec, how it ended, and its timings."""

    kind: ClassVar[str]
    ordered: ClassVar[bool]         # whether the record has a task order (the order statistics apply)

    trial_id: str
    config_id: str
    label: str
    method: str
    params: dict[str, Any]
    order: tuple[int, ...]
    order_index: int
    seed: int
    setting: str
    evaluate_unseen: bool
    searched: dict[str, Any] = field(default_factory=dict)  # the config's values drawn from search spaces, by path
    max_tasks: int | None = None  # a search trial of search.protocol first_tasks: it learned order[:max_tasks]
    status: str = "completed"
    error: str | None = None
    timings: list[dict[str, Any]] = field(default_factory=list)  # {position, task_id, train_s, eval_s}
    started_at: float | None = None   # unix seconds, when the trial's (last) attempt began
    wall_s: float | None = None       # that attempt's wall time: building the method, moving data, every task
    resumed_at: list[int] = field(default_factory=list)  # tasks done at each resume from a checkpoint
    ended_at: float | None = None     # unix seconds, when the driver saw it end (the report's time axis)
    extra: dict[str, Any] = field(default_factory=dict)  # keys of a JSON record this version does not know

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"trial {self.trial_id}: status {self.status!r} is not one of {', '.join(STATUSES)}")
        self.order = tuple(int(t) for t in self.order)

    # ------------------------------------------------------------ identity
    @property
    def spec(self) -> TrialSpec:
        return TrialSpec(**{k: getattr(self, k) for k in _SPEC_FIELDS})

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @staticmethod
    def _spec_kwargs(spec: TrialSpec) -> dict[str, Any]:
        return {k: getattr(spec, k) for k in _SPEC_FIELDS}

    @classmethod
    def for_spec(cls, spec: TrialSpec, **values: Any):
        """A record of ``spec`` with the given fields (tests, synthetic records)."""
        return cls(**cls._spec_kwargs(spec), **values)

    # ------------------------------------------------------------ JSON
    def _common_json(self) -> dict[str, Any]:
        d = {**self.spec.to_dict(), "kind": self.kind, "status": self.status, "error": self.error}
        if d.get("max_tasks") is None:  # the full protocol: the record's JSON is as before
            d.pop("max_tasks", None)
        return d

    def _tail_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"timings": [dict(t) for t in self.timings], "started_at": self.started_at,
                             "wall_s": self.wall_s, "resumed_at": list(self.resumed_at)}
        if self.ended_at is not None:
            d["ended_at"] = self.ended_at
        return d

    def to_json(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _common_from_json(cls, d: dict[str, Any]) -> dict[str, Any]:
        if "status" not in d:
            raise ValueError(f"trial record {d.get('trial_id', '?')}: no 'status' (not a trial record)")
        kw = {k: d.get(k, _SPEC_DEFAULTS[k]) for k in _SPEC_FIELDS}
        kw["params"] = dict(kw["params"] or {})
        kw.update(status=d["status"], error=d.get("error"), timings=[dict(t) for t in d.get("timings") or []],
                  started_at=d.get("started_at"), wall_s=d.get("wall_s"), resumed_at=list(d.get("resumed_at") or []),
                  ended_at=d.get("ended_at"))
        return kw

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TrialRecord):
            return NotImplemented
        return type(self) is type(other) and self.to_json() == other.to_json()

    # ------------------------------------------------------------ the JSON view, read-only
    def __getitem__(self, key: str) -> Any:
        return self.to_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_json().get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self.to_json()

    def keys(self) -> Iterator[str]:
        return iter(self.to_json())

    # ------------------------------------------------------------ per-kind behaviour
    def stats(self, split: str = "test") -> dict[str, float] | None:
        """The per-trial statistics on ``split`` (test: what is reported; val: what chooses); None unless completed."""
        raise NotImplementedError

    def matrix(self, split: str = "test") -> np.ndarray:
        raise NotImplementedError

    def has_split(self, split: str) -> bool:
        """Whether the record has accuracies on ``split`` (a benchmark without validation has none on val)."""
        return split == "test"

    def mlflow_metrics(self) -> list[tuple[str, float, int]]:
        """(name, value, step) of every metric the trial's MLflow run gets; finite numbers only."""
        raise NotImplementedError

    def _timing_metrics(self) -> list[tuple[str, float, int]]:
        out = []
        for t in self.timings:
            out += [(k, float(t[k]), int(t["position"])) for k in ("train_s", "eval_s") if _finite(t.get(k))]
        return out

    @staticmethod
    def _stat_metrics(values: dict[str, Any] | None) -> list[tuple[str, float, int]]:
        return [(k, float(v), 0) for k, v in (values or {}).items() if _finite(v)]

    @classmethod
    def config_stats(cls, records: Sequence["TrialRecord"], split: str = "test") -> dict[str, Any]:
        """The summary's statistics of one config from its completed records (at least one), on ``split``."""
        raise NotImplementedError

    @classmethod
    def empty_config_stats(cls) -> dict[str, Any]:
        """The same keys for a config with no completed record."""
        raise NotImplementedError

    @classmethod
    def objective(cls, spec: ObjectiveSpec, records: Sequence["TrialRecord"], split: str = "val") -> float:
        """The search objective (higher is better) of one config from its completed records (at least one),
        on ``split``: validation unless a study says ``search.selection: test``."""
        raise NotImplementedError


@dataclass(kw_only=True, eq=False)
class ClassificationRecord(TrialRecord):
    """A task sequence: the test accuracy matrix (rows: after each position; columns: task identities)."""

    kind: ClassVar[str] = "classification"
    ordered: ClassVar[bool] = True

    num_tasks: int
    rows: list[list[float | None]]     # the TEST matrix as JSON, num_tasks x num_tasks, None where not evaluated
    val_rows: list[list[float | None]] | None = None  # the same on the validation splits (None: the benchmark has none)
    tasks_done: int = 0
    task_info: list[dict[str, float]] = field(default_factory=list)  # per task position: the method's info_* scalars
    series: dict[str, list[Any]] = field(default_factory=dict)     # per name: a value per task position
    trace: dict[str, Any] | None = None                            # the method's per-step trace, when it has one
    init_row: list[float | None] | None = None  # accuracy on each task identity before any training (evaluate_unseen)
    test_sizes: list[int] | None = None         # test examples per task identity (binomial noise of each accuracy)
    collapsed_tasks: list[int] | None = None    # positions whose task was at chance on val right after learning it

    @classmethod
    def from_rows(cls, spec: TrialSpec, rows: Sequence[dict[str, Any]], num_tasks: int, status: str,
                  error: str | None = None, *, started_at: float | None = None, wall_s: float | None = None,
                  resumed_at: Sequence[int] = (), trace: dict[str, Any] | None = None) -> "ClassificationRecord":
        """The record of a trial from the rows it reported, one per finished task.

        A row: ``position``, ``task_id``, ``row`` (that matrix row, None where not
        evaluated), ``train_s``, ``eval_s``, the method's scalars as ``info_*``,
        and ``series`` ({name: value}) when the method has ``task_series()``.
        The row of position 0 may carry ``init_row`` (the accuracies before any
        training) and ``test_sizes`` (test examples per task identity): they
        travel in the rows so that a resumed trial or a partial record keeps them.
        """
        matrix: list[list[float | None]] = [[None] * num_tasks for _ in range(num_tasks)]
        val = [[None] * num_tasks for _ in range(num_tasks)] if any(r.get("val_row") for r in rows) else None
        series: dict[str, list[Any]] = {}
        first = next((r for r in rows if r["position"] == 0), {})
        init_row, test_sizes = first.get("init_row"), first.get("test_sizes")
        for k, row in enumerate(rows):
            matrix[row["position"]] = [None if v is None or v != v else float(v) for v in row["row"]]
            if val is not None and row.get("val_row"):
                val[row["position"]] = [None if v is None or v != v else float(v) for v in row["val_row"]]
            for name, value in (row.get("series") or {}).items():
                series.setdefault(name, [None] * len(rows))[k] = _json_value(value)
        return cls(**cls._spec_kwargs(spec), status=status, error=error, num_tasks=num_tasks, rows=matrix,
                   val_rows=val, tasks_done=len(rows),
                   timings=[{"position": r["position"], "task_id": r["task_id"], "train_s": r["train_s"],
                             "eval_s": r["eval_s"]} for r in rows],
                   task_info=[{k: v for k, v in r.items() if k.startswith("info_")} for r in rows],
                   series=series, trace=trace, started_at=started_at, wall_s=wall_s, resumed_at=list(resumed_at),
                   init_row=None if init_row is None else [None if v is None or v != v else float(v) for v in init_row],
                   test_sizes=None if test_sizes is None else [int(n) for n in test_sizes])

    def matrix(self, split: str = "test") -> np.ndarray:
        """The accuracy matrix on ``split`` (test | val), NaN where a task was not evaluated (or not reached)."""
        rows = self.rows if split == "test" else self.val_rows
        if split not in ("test", "val"):
            raise ValueError(f"split must be test or val, not {split!r}")
        if rows is None:
            return np.full((self.num_tasks, self.num_tasks), np.nan)
        return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float) \
            .reshape(self.num_tasks, self.num_tasks)

    def has_split(self, split: str) -> bool:
        return split == "test" or (split == "val" and self.val_rows is not None)

    def stats(self, split: str = "test") -> dict[str, float] | None:
        """Per-trial statistics; a truncated trial's (``max_tasks`` k) are those of its k x k sub-matrix."""
        if not self.completed or not self.has_split(split):
            return None
        A, order = self.scored(split)
        return stats.trial_stats(A, order, None if self.truncated else self.init_row)

    @property
    def truncated(self) -> bool:
        """A search trial that learned only the first ``max_tasks`` tasks of its order (search.protocol first_tasks)."""
        return self.max_tasks is not None and self.max_tasks < len(self.order)

    def scored(self, split: str = "test") -> tuple[np.ndarray, tuple[int, ...]]:
        """(matrix, order) the statistics read: the whole matrix and order, or for a truncated trial the
        k x k sub-matrix over the tasks ``order[:k]``, reindexed (column i: the i-th task learned; order 0..k-1)."""
        A = self.matrix(split)
        if not self.truncated:
            return A, self.order
        k = self.max_tasks
        return A[:k][:, list(self.order[:k])], tuple(range(k))

    def unseen_stats(self, k: int, split: str = "test") -> dict[str, float] | None:
        """Over the tasks ``order[k:]`` only (those a first_tasks search never saw): ACC of their final
        accuracies, and forgetting over them (each but the last task of the order). None unless completed."""
        if not self.completed or not self.has_split(split) or not 0 < k < len(self.order):
            return None
        A = self.matrix(split)
        unseen = list(self.order[k:])
        drops = []
        for position, j in enumerate(self.order):
            if j in unseen and position < len(self.order) - 1:
                history = A[position:-1, j]
                if np.any(~np.isnan(history)):
                    drops.append(float(np.nanmax(history)) - A[-1, j])
        final = A[-1, unseen]
        final = final[~np.isnan(final)]
        drops = [d for d in drops if d == d]
        return {"unseen_acc": float(final.mean()) if final.size else float("nan"),
                "unseen_forgetting": float(np.mean(drops)) if drops else float("nan")}

    def mlflow_metrics(self) -> list[tuple[str, float, int]]:
        out = self._stat_metrics(self.stats())
        out += [(f"val_{k}", v, step) for k, v, step in self._stat_metrics(self.stats("val"))]
        for position, row in enumerate(self.rows[:self.tasks_done]):
            out += [(f"acc_task_{j}", float(v), position) for j, v in enumerate(row) if _finite(v)]
        for position, row in enumerate((self.val_rows or [])[:self.tasks_done]):
            out += [(f"val_acc_task_{j}", float(v), position) for j, v in enumerate(row) if _finite(v)]
        out += self._timing_metrics()
        for position, info in enumerate(self.task_info):
            out += [(k, float(v), position) for k, v in info.items() if _finite(v)]
        for name, values in self.series.items():
            for position, v in enumerate(values):
                if isinstance(v, list):
                    out += [(_metric_name(f"series/{name}/{i}"), float(x), position)
                            for i, x in enumerate(v) if _finite(x)]
                elif _finite(v):
                    out.append((_metric_name(f"series/{name}"), float(v), position))
        return out

    def to_json(self) -> dict[str, Any]:
        d = {**self._common_json(), "record_version": RECORD_VERSION, "num_tasks": self.num_tasks,
             "tasks_done": self.tasks_done, "matrix": [list(r) for r in self.rows],
             "val_matrix": None if self.val_rows is None else [list(r) for r in self.val_rows], **self._tail_json(),
             "task_info": [dict(i) for i in self.task_info], "series": {k: list(v) for k, v in self.series.items()}}
        if self.trace is not None:
            d["trace"] = self.trace
        if self.init_row is not None:
            d["init_row"] = list(self.init_row)
        if self.test_sizes is not None:
            d["test_sizes"] = list(self.test_sizes)
        if self.collapsed_tasks is not None:
            d["collapsed_tasks"] = list(self.collapsed_tasks)
        return {**self.extra, **d}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ClassificationRecord":
        rows = d.get("matrix") or []
        num_tasks = int(d.get("num_tasks") or len(rows))
        rows = [list(r) for r in rows] or [[None] * num_tasks for _ in range(num_tasks)]
        known = {f.name for f in fields(cls)} | {"kind", "record_version", "matrix", "val_matrix"}
        val = d.get("val_matrix")
        return cls(**cls._common_from_json(d), num_tasks=num_tasks, rows=rows,
                   val_rows=None if val is None else [list(r) for r in val],
                   tasks_done=int(d.get("tasks_done", sum(any(v is not None for v in r) for r in rows))),
                   task_info=[dict(i) for i in d.get("task_info") or []],
                   series={k: list(v) for k, v in (d.get("series") or {}).items()}, trace=d.get("trace"),
                   init_row=None if d.get("init_row") is None else list(d["init_row"]),
                   test_sizes=None if d.get("test_sizes") is None else [int(n) for n in d["test_sizes"]],
                   collapsed_tasks=None if d.get("collapsed_tasks") is None else [int(p) for p in d["collapsed_tasks"]],
                   extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def config_stats(cls, records: Sequence[TrialRecord], split: str = "test") -> dict[str, Any]:
        if not any(r.truncated for r in records):
            return stats.config_stats([r.matrix(split) for r in records], [r.order for r in records],
                                      [r.init_row for r in records], [r.test_sizes for r in records])
        # Truncated search trials: their k x k sub-matrices. Every reindexed order is 0..k-1, so R and OPD
        # are computed here over the orders' real prefixes: AOPD/MOPD over OPD_i, the spread of the final ACC
        # of the i-th task learned. Per task identity OPD is undefined (orders learn different tasks): NaN.
        scored = [r.scored(split) for r in records]
        out = stats.config_stats([A for A, _ in scored], [o for _, o in scored])
        finals = _by_prefix(records, [stats.final_accuracies(A) for A, _ in scored])
        opd_i = stats.opd(np.array([np.mean(v, axis=0) for v in finals.values()]))
        known = opd_i[~np.isnan(opd_i)]
        out.update(R=len(finals), aopd=float(known.mean()) if known.size else float("nan"),
                   mopd=float(known.max()) if known.size else float("nan"),
                   opd_per_task=[float("nan")] * records[0].num_tasks)
        return out

    @classmethod
    def empty_config_stats(cls) -> dict[str, Any]:
        return {"R": 0, **{f"{k}_{s}": None for k in ("acc", "bwt", "forgetting", "task_acc")
                           for s in ("mean", "std")}, "aopd": None, "mopd": None, "opd_per_task": None,
                "min_acc_mean": None, "wc_acc_mean": None, "fwt_mean": None, "curve": None, "acc_binomial_se": None}

    @classmethod
    def objective(cls, spec: ObjectiveSpec, records: Sequence[TrialRecord], split: str = "val") -> float:
        if not any(r.truncated for r in records):
            return stats.order_objective([r.matrix(split) for r in records], [r.order for r in records],
                                         spec.kind, k=spec.k, c=spec.c)
        scored = [r.scored(split) for r in records]
        accs = [stats.acc(A) for A, _ in scored]
        if spec.kind == "worst_acc":  # seeds of an order averaged first, as for full orders
            return float(min(np.mean(v) for v in _by_prefix(records, accs).values()))
        if spec.kind == "acc_minus_aopd":
            aopd = cls.config_stats(records, split)["aopd"]
            return float(np.nanmean(accs)) - spec.c * (0.0 if aopd != aopd else aopd)
        return stats.order_objective([A for A, _ in scored], [o for _, o in scored], spec.kind, k=spec.k, c=spec.c)


@dataclass(kw_only=True, eq=False)
class StreamRecord(TrialRecord):
    """One pass over a regression stream: squared error overall and per time window, the step-size trace."""

    kind: ClassVar[str] = "regression_stream"
    ordered: ClassVar[bool] = False

    steps: int = 0
    mse: float | None = None
    window: int | None = None
    window_mse: list[float] = field(default_factory=list)
    step_trace: list[Any] = field(default_factory=list)   # (points x weights) step-sizes every trace_every steps
    trace_every: int | None = None
    truth: dict[str, list] = field(default_factory=dict)  # the stream's truth sampled like step_trace (for plots)

    @classmethod
    def from_stream(cls, spec: TrialSpec, sq_err: np.ndarray, step_trace: np.ndarray, trace_every: int,
                    truth: dict[str, np.ndarray], train_s: float, *, started_at: float | None = None,
                    wall_s: float | None = None) -> "StreamRecord":
        """The record of a finished pass: ``sq_err`` per step, the step-size trace, the stream's truth."""
        sq = np.asarray(sq_err, dtype=float)
        window = max(1, len(sq) // STREAM_WINDOWS)
        usable = len(sq) // window * window
        every = int(trace_every)
        return cls(**cls._spec_kwargs(spec), status="completed", steps=int(len(sq)), mse=float(sq.mean()),
                   window=window, window_mse=[float(v) for v in sq[:usable].reshape(-1, window).mean(axis=1)],
                   step_trace=np.asarray(step_trace).tolist(), trace_every=every,
                   truth=_truth_at_trace(truth, len(sq), every),
                   timings=[{"position": 0, "task_id": 0, "train_s": train_s, "eval_s": 0.0}],
                   started_at=started_at, wall_s=wall_s)

    @classmethod
    def from_rows(cls, spec: TrialSpec, rows: Sequence[dict[str, Any]], num_tasks: int, status: str,
                  error: str | None = None, **timing: Any) -> "StreamRecord":
        """A stream trial that left no result (failed, stopped, not run): its spec, status and error."""
        return cls(**cls._spec_kwargs(spec), status=status, error=error,
                   **{k: v for k, v in timing.items() if k in ("started_at", "wall_s")})

    def matrix(self, split: str = "test") -> np.ndarray:
        """A stream has no tasks: an empty 0 x 0 matrix."""
        return np.zeros((0, 0))

    def has_split(self, split: str) -> bool:
        return True  # a stream is scored by its own prequential error: there is no split to choose on

    def stats(self, split: str = "test") -> dict[str, float] | None:
        return {"mse": self.mse} if self.completed and self.mse is not None else None

    def mlflow_metrics(self) -> list[tuple[str, float, int]]:
        out = self._stat_metrics(self.stats())
        out += [("window_mse", float(v), window) for window, v in enumerate(self.window_mse) if _finite(v)]
        return out + self._timing_metrics()

    def to_json(self) -> dict[str, Any]:
        done = 1 if self.completed else 0
        d = {**self._common_json(), "record_version": RECORD_VERSION, "steps": self.steps, "mse": self.mse,
             "window": self.window, "window_mse": list(self.window_mse), "step_trace": self.step_trace,
             "trace_every": self.trace_every, "truth": self.truth, **self._tail_json(),
             "tasks_done": done, "num_tasks": 1, "matrix": None, "task_info": []}
        return {**self.extra, **d}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "StreamRecord":
        known = {f.name for f in fields(cls)} | {"kind", "record_version", "matrix", "tasks_done", "num_tasks",
                                                 "task_info"}
        return cls(**cls._common_from_json(d), steps=int(d.get("steps") or 0), mse=d.get("mse"),
                   window=d.get("window"), window_mse=list(d.get("window_mse") or []),
                   step_trace=list(d.get("step_trace") or []), trace_every=d.get("trace_every"),
                   truth=dict(d.get("truth") or {}), extra={k: v for k, v in d.items() if k not in known})

    @classmethod
    def config_stats(cls, records: Sequence[TrialRecord], split: str = "test") -> dict[str, Any]:
        """A stream config over its seeds: mean squared error (all steps), and per time window."""
        mse = np.array([r.mse for r in records], dtype=float)
        windows = np.array([r.window_mse for r in records], dtype=float)
        return {"kind": cls.kind, "seeds": len(records), "mse_mean": float(mse.mean()),
                "mse_std": float(mse.std(ddof=1)) if len(mse) > 1 else float("nan"),
                "window": records[0].window, "window_mse_mean": [float(v) for v in windows.mean(axis=0)]}

    @classmethod
    def empty_config_stats(cls) -> dict[str, Any]:
        return {"kind": cls.kind, "seeds": 0, "mse_mean": None, "mse_std": None}

    @classmethod
    def objective(cls, spec: ObjectiveSpec, records: Sequence[TrialRecord], split: str = "val") -> float:
        """-MSE (mean over seeds), whatever the study's objective: a stream has no orders to aggregate."""
        return -float(np.mean([r.mse for r in records]))


def _by_prefix(records: Sequence[TrialRecord], values: Sequence[Any]) -> dict[tuple[int, ...], list[Any]]:
    """``values`` (one per record) grouped by the part of the order each record learned."""
    out: dict[tuple[int, ...], list[Any]] = {}
    for r, v in zip(records, values):
        out.setdefault(tuple(r.order[:r.max_tasks or len(r.order)]), []).append(v)
    return out


def _truth_at_trace(truth: dict[str, np.ndarray], steps: int, every: int) -> dict[str, list]:
    """The stream's truth for plots: per-step series sampled where the step-size trace is."""
    out = {}
    for key, value in truth.items():
        value = np.asarray(value)
        if value.ndim == 1 and len(value) == steps:
            out[key] = value[::every].tolist()
        elif value.ndim == 1 and value.size <= 1000:
            out[key] = value.tolist()
    return out


RECORD_TYPES: dict[str, type[TrialRecord]] = {c.kind: c for c in (ClassificationRecord, StreamRecord)}


def collapsed_positions(rec: "ClassificationRecord", classes: Sequence[int], val_sizes: Sequence[int],
                        z: float = 2.0) -> list[int]:
    """Positions j whose task, right after it was learned, is at chance on VALIDATION: A_val[j, order[j]] at or
    below 100/classes + z binomial standard errors (n: that task's validation size). A flag, never a filter:
    training that stayed finite but learned nothing (SGD at lr 10) is otherwise a "completed" trial.

    z = 2: a task truly at chance escapes the flag ~2% of the time; z = 3 flagged learned tasks on small
    validation splits (80% on 25 two-class images, 8 points of test accuracy above the threshold's meaning)."""
    if rec.val_rows is None:
        return []
    out = []
    for position, task in enumerate(rec.order[:rec.tasks_done]):
        acc = rec.val_rows[position][task] if position < len(rec.val_rows) else None
        c, n = int(classes[task]), int(val_sizes[task])
        if acc is None or c < 2 or n < 1:
            continue
        p = 1.0 / c
        if acc <= 100.0 * (p + z * math.sqrt(p * (1 - p) / n)):
            out.append(position)
    return out


def record_type(kind: str | None) -> type[TrialRecord]:
    """The record type of a benchmark kind (``classification`` | ``regression_stream``)."""
    try:
        return RECORD_TYPES[kind or ClassificationRecord.kind]
    except KeyError:
        raise ValueError(f"no trial record type for kind {kind!r}; known: {', '.join(RECORD_TYPES)}") from None


def record_from_json(d: dict[str, Any]) -> TrialRecord:
    """A record from its JSON (version 1 or 2), by its ``kind``.

    A JSON without ``kind`` (hand-written) is a stream record when it has a
    stream's keys (``mse``, ``step_trace``), else a classification record.
    """
    kind = d.get("kind") or ("regression_stream" if "mse" in d or "step_trace" in d else "classification")
    return record_type(kind).from_json(d)


def as_record(rec: TrialRecord | dict[str, Any]) -> TrialRecord:
    """A typed record from a record or its JSON (what crosses the Tune boundary, what files hold)."""
    return rec if isinstance(rec, TrialRecord) else record_from_json(rec)


def as_records(recs: Sequence[TrialRecord | dict[str, Any]]) -> list[TrialRecord]:
    return [as_record(r) for r in recs]


def completed(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in records if r.completed]


def matrix_array(rec: TrialRecord | dict[str, Any]) -> np.ndarray:
    """The accuracy matrix of a record or of its JSON (for scripts): NaN where not evaluated."""
    return as_record(rec).matrix()
