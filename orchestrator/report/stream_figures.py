"""Figures of regression-stream studies (specs/idbd.md): what the step-sizes learned.

Drawn from the trial records alone. For each method label, its best config
(lowest mean squared error) is shown, averaged over seeds:
- weight_flipping: step-size over time, mean over the relevant (flipping)
  weights against the mean over the irrelevant (constant) ones;
- rate_tracking: step-size over time against the optimal alpha*_t, for one
  seed (each seed draws its own drift schedule, so averaging would blur it).
"""
from __future__ import annotations

from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from orchestrator.results.records import StreamRecord, TrialRecord, as_records  # noqa: E402


def _best_records(summary: dict[str, Any], records: list[TrialRecord]) -> dict[str, list[StreamRecord]]:
    best_ids = {label: b["config_id"] for label, b in summary.get("best", {}).items()}
    out: dict[str, list[StreamRecord]] = {}
    for r in records:
        if isinstance(r, StreamRecord) and r.completed and r.step_trace and best_ids.get(r.label) == r.config_id:
            out.setdefault(r.label, []).append(r)
    return out


def step_size_figure(summary: dict[str, Any], records: Sequence[TrialRecord | dict[str, Any]]) -> Figure | None:
    """One figure for a stream study; None when no trial kept a step-size trace."""
    groups = _best_records(summary, as_records(records))
    if not groups:
        return None
    first = next(iter(groups.values()))[0]
    truth = first.truth
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if "relevant" in truth:
        relevant = np.array(truth["relevant"], dtype=bool)
        for label, recs in groups.items():
            trace = np.mean([np.array(r.step_trace) for r in recs], axis=0)  # (points, d)
            steps = np.arange(trace.shape[0]) * recs[0].trace_every
            line, = ax.plot(steps, trace[:, relevant].mean(axis=1), label=f"{label}: relevant")
            ax.plot(steps, trace[:, ~relevant].mean(axis=1), ls="--", color=line.get_color(),
                    label=f"{label}: irrelevant")
        ax.set_title("Learned step-sizes, weight-flipping (best config per method, mean over seeds)")
        ax.set_ylim(bottom=1e-6)  # Autostep drives irrelevant step-sizes towards 0 (1e-40 and below)
    else:
        # each seed draws its own drift schedule: show one seed's stream, not an average
        for label, recs in groups.items():
            same = [r for r in recs if r.seed == first.seed] or recs[:1]
            trace = np.array(same[0].step_trace)[:, 0]
            ax.plot(np.arange(len(trace)) * same[0].trace_every, trace, label=label)
        if "alpha_star" in truth:
            star = np.array(truth["alpha_star"])
            ax.plot(np.arange(len(star)) * first.trace_every, star, color="black", ls=":", label="alpha* (optimal)")
        ax.set_title(f"Step-size against the optimal alpha*, rate-tracking (best config per method, seed {first.seed})")
    ax.set_xlabel("step")
    ax.set_ylabel("step-size alpha")
    ax.set_yscale("log")
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    return fig
