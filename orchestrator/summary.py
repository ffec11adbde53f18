"""Trial records -> per-config robustness summary, and the table printed at the end."""
from __future__ import annotations

from typing import Any

import numpy as np

import methods
from orchestrator import stats
from orchestrator.expand import Config
from orchestrator.trial import matrix_array

STAT_KEYS = ("acc", "bwt", "forgetting", "task_acc")


def is_stream(record: dict[str, Any]) -> bool:
    # records written before "kind" was stamped on failed trials: know them by their method
    return record.get("kind", "regression_stream" if record.get("method") in _stream_methods() else None) \
        == "regression_stream"


def trial_stats(record: dict[str, Any]) -> dict[str, float] | None:
    if record["status"] != "completed":
        return None
    if is_stream(record):
        return {"mse": record["mse"]}
    return stats.trial_stats(matrix_array(record), record["order"])


def stream_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A stream config over its seeds: mean squared error (all steps), and per time window."""
    mse = np.array([r["mse"] for r in records])
    windows = np.array([r["window_mse"] for r in records])
    return {"kind": "regression_stream", "seeds": len(records), "mse_mean": float(mse.mean()),
            "mse_std": float(mse.std(ddof=1)) if len(mse) > 1 else float("nan"),
            "window": records[0]["window"], "window_mse_mean": [float(v) for v in windows.mean(axis=0)]}


def config_entry(config: Config, records: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in records if r["status"] == "completed"]
    entry: dict[str, Any] = {
        "config_id": config.config_id, "label": config.label, "method": config.method,
        "params": config.params, "searched": config.searched,
        "trials": len(records), "trials_failed": len(records) - len(done),
    }
    if done and is_stream(done[0]):
        entry.update(stream_stats(done))
    elif done:
        entry.update(stats.config_stats([matrix_array(r) for r in done], [r["order"] for r in done]))
    elif any(is_stream(r) for r in records) or config.method in _stream_methods():
        entry.update({"kind": "regression_stream", "seeds": 0, "mse_mean": None, "mse_std": None})
    else:
        entry.update({"R": 0, **{f"{k}_{s}": None for k in STAT_KEYS for s in ("mean", "std")},
                      "aopd": None, "mopd": None, "opd_per_task": None})
    entry["trials"] = len(records)  # config_stats counts completed ones only
    return entry


def build_summary(study_name: str, meta: dict[str, Any], configs: list[Config],
                  records: list[dict[str, Any]]) -> dict[str, Any]:
    by_config: dict[str, list[dict[str, Any]]] = {c.config_id: [] for c in configs}
    for r in records:
        by_config.setdefault(r["config_id"], []).append(r)
    entries = [config_entry(c, by_config[c.config_id]) for c in configs]
    return {"study": study_name, **meta, "trials_total": len(records),
            "trials_failed": sum(e["trials_failed"] for e in entries), "configs": entries,
            "best": best_per_label(entries)}


def best_per_label(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per method label, the config with the best mean objective over the same trials that
    produced it (highest ACC; lowest MSE for streams). Only configs whose every trial
    completed are eligible: a mean over the survivors would flatter a config that diverged
    on some orders or seeds. Searching and reporting on the same orders and seeds flatters
    the winner too: re-run it on fresh ones for an unbiased estimate."""
    best: dict[str, dict[str, Any]] = {}
    for e in entries:
        if e["trials_failed"]:
            continue
        stream = e.get("kind") == "regression_stream"
        value = e.get("mse_mean") if stream else e.get("acc_mean")
        if value is None or value != value:
            continue
        current = best.get(e["label"])
        better = current is None or (value < current["value"] if stream else value > current["value"])
        if better:
            best[e["label"]] = {"config_id": e["config_id"], "metric": "mse_mean" if stream else "acc_mean",
                                "value": value, "searched": e["searched"]}
    return best


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None or mean != mean:
        return "-"
    return f"{mean:6.2f}" + (f" ± {std:5.2f}" if std is not None and std == std else "")


def _num(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:6.2f}"


def _stream_methods() -> set[str]:
    return {n for n in methods.METHODS.names()
            if "regression_stream" in getattr(methods.METHODS.get(n).target, "kinds", ())}


def _name(e: dict[str, Any]) -> str:
    searched = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in e["searched"].items())
    return e["label"] + (" " + searched if searched else "")


def _format_stream_table(summary: dict[str, Any]) -> str:
    rows = [["config", "seeds", "MSE", "failed"]]
    for e in summary["configs"]:
        mse = "-" if e["mse_mean"] is None else f"{e['mse_mean']:.4g}" + (
            f" ± {e['mse_std']:.2g}" if e["mse_std"] is not None and e["mse_std"] == e["mse_std"] else "")
        rows.append([_name(e), str(e["seeds"]), mse, f"{e['trials_failed']}/{e['trials']}"])
    text = _grid(rows) + "\n(mean squared error over every step of the stream, mean ± sample std over seeds)"
    return text + _best_lines(summary)


def _best_lines(summary: dict[str, Any]) -> str:
    lines = [f"  {label}: {b['metric']} {b['value']:.4g}" + (f" at {b['searched']}" if b["searched"] else "")
             for label, b in summary.get("best", {}).items()]
    return "\nbest per method:\n" + "\n".join(lines) if lines else ""


def _grid(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_table(summary: dict[str, Any]) -> str:
    if summary["configs"] and summary["configs"][0].get("kind") == "regression_stream":
        return _format_stream_table(summary)
    header = ["config", "R", "ACC", "BWT", "Forgetting", "Task.Acc", "AOPD", "MOPD", "failed"]
    rows = [header]
    for e in summary["configs"]:
        rows.append([_name(e), str(e["R"]), _pm(e["acc_mean"], e["acc_std"]), _pm(e["bwt_mean"], e["bwt_std"]),
                     _pm(e["forgetting_mean"], e["forgetting_std"]), _pm(e["task_acc_mean"], e["task_acc_std"]),
                     _num(e["aopd"]), _num(e["mopd"]), f"{e['trials_failed']}/{e['trials']}"])
    text = _grid(rows) + "\n(accuracies in %, mean ± sample std over trials; OPD over R orders)"
    searched = any(e["searched"] for e in summary["configs"])
    return text + (_best_lines(summary) if searched else "")
