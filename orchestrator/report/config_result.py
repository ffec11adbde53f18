"""What the report knows of one config: its summary entry, its trials, intervals, and its colour.

A type of its own, so figure modules depend on it and not on the analysis that
builds it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib import colormaps

from orchestrator.report import bootstrap
from orchestrator.results.records import TrialRecord
from orchestrator.study.schema import Config


@dataclass
class ConfigResult:
    config: Config
    name: str                              # unique and short: the label, or "label #k" within a search
    entry: dict[str, Any]                  # summary.config_entry: R, ACC/BWT/... mean and std, AOPD, MOPD
    records: list[TrialRecord]             # every trial of the config, failed ones included
    matrices: list[np.ndarray]             # completed trials only, aligned with ``orders``
    orders: list[tuple[int, ...]]
    acc_ci: tuple[float, float]
    aopd_ci: tuple[float, float]
    position: dict[str, Any] | None        # orchestrator.report.position.position_effect; None without trials

    @property
    def ok(self) -> bool:
        """At least one completed trial: the config has numbers to show."""
        return bool(self.matrices)

    def finals(self) -> tuple[list[tuple[int, ...]], np.ndarray]:
        """Distinct orders and their final accuracies (seeds averaged), as OPD sees them."""
        return bootstrap.order_finals(self.matrices, self.orders)


def config_colors(results: list[ConfigResult]) -> dict[str, Any]:
    """One color per config name (tab10, tab20 beyond 10 configs, cycling beyond 20)."""
    cmap = colormaps["tab10" if len(results) <= 10 else "tab20"]
    return {r.name: cmap(i % cmap.N) for i, r in enumerate(results)}


def chosen_on(r: ConfigResult) -> str:
    """The split whose numbers choose among configs (frontier, best): validation when the entry has it."""
    return "val" if r.entry.get("objective_split", "val") == "val" and r.entry.get("val") else "test"


def choice_point(r: ConfigResult) -> tuple[float | None, float | None]:
    """(AOPD, ACC) as the frontier compares them: on validation when the study selects on validation."""
    e = r.entry["val"] if chosen_on(r) == "val" else r.entry
    return e.get("aopd"), e.get("acc_mean")
