"""Trial records -> per-config robustness summary, and the table printed at the end."""
from __future__ import annotations

from typing import Any

from orchestrator import stats
from orchestrator.expand import Config
from orchestrator.trial import matrix_array

STAT_KEYS = ("acc", "bwt", "forgetting", "task_acc")


def trial_stats(record: dict[str, Any]) -> dict[str, float] | None:
    if record["status"] != "completed":
        return None
    return stats.trial_stats(matrix_array(record), record["order"])


def config_entry(config: Config, records: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in records if r["status"] == "completed"]
    entry: dict[str, Any] = {
        "config_id": config.config_id, "label": config.label, "method": config.method,
        "params": config.params, "searched": config.searched,
        "trials": len(records), "trials_failed": len(records) - len(done),
    }
    if done:
        entry.update(stats.config_stats([matrix_array(r) for r in done], [r["order"] for r in done]))
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
            "trials_failed": sum(e["trials_failed"] for e in entries), "configs": entries}


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None or mean != mean:
        return "-"
    return f"{mean:6.2f}" + (f" ± {std:5.2f}" if std is not None and std == std else "")


def _num(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:6.2f}"


def format_table(summary: dict[str, Any]) -> str:
    header = ["config", "R", "ACC", "BWT", "Forgetting", "Task.Acc", "AOPD", "MOPD", "failed"]
    rows = [header]
    for e in summary["configs"]:
        name = e["label"] + (" " + " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                            for k, v in e["searched"].items()) if e["searched"] else "")
        rows.append([name, str(e["R"]), _pm(e["acc_mean"], e["acc_std"]), _pm(e["bwt_mean"], e["bwt_std"]),
                     _pm(e["forgetting_mean"], e["forgetting_std"]), _pm(e["task_acc_mean"], e["task_acc_std"]),
                     _num(e["aopd"]), _num(e["mopd"]), f"{e['trials_failed']}/{e['trials']}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n(accuracies in %, mean ± sample std over trials; OPD over R orders)"
