"""Trial records -> per-config robustness summary, and the table printed at the end."""
from __future__ import annotations

from typing import Any, Sequence

from orchestrator.results import paired as paired_stats
from orchestrator.results.objective import objective_value
from orchestrator.results.records import TrialRecord, as_record, as_records, completed, record_type
from orchestrator.study.schema import Config, ObjectiveSpec

STAT_KEYS = ("acc", "bwt", "forgetting", "task_acc")


def trial_stats(record: TrialRecord | dict[str, Any]) -> dict[str, float] | None:
    """The per-trial statistics of a record (or of its JSON); None unless it completed."""
    return as_record(record).stats()


VAL_KEYS = ("acc_mean", "acc_std", "bwt_mean", "forgetting_mean", "task_acc_mean", "aopd", "mopd")


def config_entry(config: Config, records: Sequence[TrialRecord | dict[str, Any]],
                 objective: ObjectiveSpec | None = None, kind: str | None = None,
                 selection: str = "val") -> dict[str, Any]:
    """One config's row of the summary; ``kind`` (the benchmark's) shapes the row of a config with no record.

    The statistics at the top level are on TEST (what a table reports); ``objective`` is on ``selection``
    (validation by default: what chooses), and ``val`` holds the main statistics on validation.
    """
    records = as_records(records)
    done = completed(records)
    entry: dict[str, Any] = {
        "config_id": config.config_id, "label": config.label, "method": config.method,
        "params": config.params, "searched": config.searched,
        "trials": len(records), "trials_failed": sum(r.status == "failed" for r in records),
        "trials_stopped": sum(r.status == "stopped" for r in records),
        "objective": objective_value(objective or ObjectiveSpec(), records, selection),
        "objective_split": selection,
    }
    kind_of = type(records[0]) if records else record_type(kind)
    entry.update(kind_of.config_stats(done) if done else kind_of.empty_config_stats())
    if done and kind_of.ordered and all(r.has_split("val") for r in done):
        val = kind_of.config_stats(done, "val")
        entry["val"] = {k: val[k] for k in VAL_KEYS}
    entry["trials"] = len(records)  # config_stats counts completed ones only
    return entry


def build_summary(study_name: str, meta: dict[str, Any], configs: list[Config],
                  records: Sequence[TrialRecord | dict[str, Any]], objective: ObjectiveSpec | None = None,
                  fresh_suffix: str = "@fresh", selection: str = "val", full_suffix: str = "@full",
                  first_tasks: int | None = None) -> dict[str, Any]:
    records = as_records(records)
    by_config: dict[str, list[TrialRecord]] = {c.config_id: [] for c in configs}
    for r in records:
        by_config.setdefault(r.config_id, []).append(r)
    entries = [config_entry(c, by_config[c.config_id], objective, meta.get("kind"), selection) for c in configs]
    if first_tasks:  # the full-order runs of first_tasks winners: also over the tasks the search never saw
        for e in entries:
            if e["label"].endswith(full_suffix):
                e.update(unseen_entry(by_config[e["config_id"]], first_tasks))
    summary = {"study": study_name, **meta, "selection": selection, "trials_total": len(records),
               "trials_failed": sum(e["trials_failed"] for e in entries),
               "trials_stopped": sum(e["trials_stopped"] for e in entries), "configs": entries,
               "best": best_per_label(entries, fresh_suffix, full_suffix)}
    baseline = meta.get("baseline") or (configs[0].label if configs else None)
    block = paired_block(entries, by_config, summary["best"], baseline, fresh_suffix, full_suffix)
    if block is not None:
        summary["paired"] = block
    return summary


def compared_configs(entries: list[dict[str, Any]], best: dict[str, dict[str, Any]],
                     fresh_suffix: str = "@fresh", full_suffix: str = "@full") -> dict[str, str]:
    """Per method label, the config a paired comparison uses: the search's selected config
    (``best[label]``; under search.protocol first_tasks its full-order run), else the label's only
    config; labels of fresh re-runs are left out (they run on other orders)."""
    by_label: dict[str, list[str]] = {}
    for e in entries:
        if not e["label"].endswith((fresh_suffix, full_suffix)):
            by_label.setdefault(e["label"], []).append(e["config_id"])
    out = {}
    for label, ids in by_label.items():
        if label in best:
            full = best[label].get("full") or {}
            out[label] = full.get("config_id") or best[label]["config_id"]
        elif len(ids) == 1:
            out[label] = ids[0]
    return out


def paired_block(entries: list[dict[str, Any]], by_config: dict[str, list[TrialRecord]],
                 best: dict[str, dict[str, Any]], baseline: str | None, fresh_suffix: str = "@fresh",
                 full_suffix: str = "@full",
                 n_resamples: int = paired_stats.DEFAULT_RESAMPLES, confidence: float = paired_stats.DEFAULT_CONFIDENCE,
                 seed: int = paired_stats.DEFAULT_SEED) -> dict[str, Any] | None:
    """The summary's "paired" block: each method's config against the baseline's, order by order
    (orchestrator.results.paired, on the test matrices of completed trials), Holm-adjusted over the
    family of comparisons. None for streams, without a baseline config, or with nothing to compare."""
    if baseline is None or any(e.get("kind") == "regression_stream" for e in entries):
        return None
    chosen = compared_configs(entries, best, fresh_suffix, full_suffix)
    base_id = chosen.pop(baseline, None)
    base_recs = completed(by_config.get(base_id, [])) if base_id else []
    if not base_recs or not chosen:
        return None
    entry_of = {e["config_id"]: e for e in entries}
    base_se = entry_of[base_id].get("acc_binomial_se")
    rows = []
    for label, cid in chosen.items():
        recs = completed(by_config.get(cid, []))
        if not recs:
            continue
        row = {"config_id": cid, "label": label, **paired_stats.compare(
            [r.matrix() for r in recs], [r.order for r in recs], [r.matrix() for r in base_recs],
            [r.order for r in base_recs], n_resamples=n_resamples, confidence=confidence, seed=seed)}
        se = entry_of[cid].get("acc_binomial_se")
        both = se is not None and base_se is not None and se == se and base_se == base_se
        row["dacc_binomial_se"] = float((se ** 2 + base_se ** 2) ** 0.5) if both else None
        row["within_binomial_noise"] = bool(abs(row["dacc"]) < 2 * row["dacc_binomial_se"]) \
            if both and row["dacc"] == row["dacc"] else None
        rows.append(row)
    for key, p in (("p_holm", "p"), ("p_forgetting_holm", "p_forgetting")):
        for row, adj in zip(rows, paired_stats.holm([r[p] for r in rows])):
            row[key] = adj
    return {"baseline": baseline, "baseline_config_id": base_id,
            "on": "test final accuracies of completed trials; seeds averaged within an order; orders are the pairs",
            "n_comparisons": sum(r["p"] == r["p"] for r in rows), "confidence": confidence,
            "n_resamples": n_resamples, "seed": seed, "configs": rows}


UNSEEN_KEYS = ("unseen_acc_mean", "unseen_acc_std", "unseen_forgetting_mean", "unseen_forgetting_std")


def unseen_entry(records: Sequence[TrialRecord], k: int) -> dict[str, Any]:
    """search.protocol first_tasks k: test ACC and forgetting over the tasks order[k:] of each completed trial
    (tasks no search trial learned), mean and sample std over trials."""
    import numpy as np

    values = [s for s in (r.unseen_stats(k) for r in completed(records) if hasattr(r, "unseen_stats")) if s]
    out: dict[str, Any] = {"unseen_after": k}
    for key in ("unseen_acc", "unseen_forgetting"):
        v = np.array([s[key] for s in values], dtype=float)
        v = v[~np.isnan(v)]
        out[f"{key}_mean"] = float(v.mean()) if v.size else None
        out[f"{key}_std"] = float(v.std(ddof=1)) if v.size > 1 else None
    return out


def best_per_label(entries: list[dict[str, Any]], fresh_suffix: str = "@fresh",
                   full_suffix: str = "@full") -> dict[str, dict[str, Any]]:
    """Per method label, the config with the best objective over the same trials that produced
    it (the study's objective, higher is better; for streams -MSE, shown as MSE). Only configs
    whose every trial completed are eligible: a mean over the survivors would flatter a config
    that diverged or was stopped on some orders or seeds. Searching and reporting on the same
    orders flatters the winner too: where the study re-ran it on fresh orders
    (``search.final_orders``), ``fresh`` holds that re-run's statistics and objective — the
    estimate to report. Under search.protocol first_tasks the winner (chosen on the first k tasks) ran on the
    full orders as label + ``full_suffix``: ``full`` holds that run's statistics — the numbers to report."""
    best: dict[str, dict[str, Any]] = {}
    fresh = {e["label"][:-len(fresh_suffix)]: e for e in entries if e["label"].endswith(fresh_suffix)}
    full = {e["label"][:-len(full_suffix)]: e for e in entries if e["label"].endswith(full_suffix)}
    for e in entries:
        if e["trials_failed"] or e["trials_stopped"] or e["label"].endswith((fresh_suffix, full_suffix)):
            continue
        stream = e.get("kind") == "regression_stream"
        value = e["objective"]
        if value is None or value != value:
            continue
        current = best.get(e["label"])
        if current is None or value > current["objective"]:
            best[e["label"]] = {"config_id": e["config_id"], "metric": "mse_mean" if stream else "acc_mean",
                                "value": e.get("mse_mean") if stream else e.get("acc_mean"),
                                "objective": value, "searched": e["searched"]}
    for label, b in best.items():
        f = fresh.get(label)
        if f is not None and f["config_id"] == b["config_id"] + fresh_suffix:
            b["fresh"] = {k: f.get(k) for k in ("config_id", "R", "trials", "trials_failed", "objective", "acc_mean",
                                                "acc_std", "aopd", "mopd", "bwt_mean", "forgetting_mean")}
        f = full.get(label)
        if f is not None and f["config_id"] == b["config_id"] + full_suffix:
            b["full"] = {k: f.get(k) for k in ("config_id", "R", "trials", "trials_failed", "trials_stopped",
                                               "objective", "acc_mean", "acc_std", "aopd", "mopd", "bwt_mean",
                                               "forgetting_mean", "unseen_after", *UNSEEN_KEYS)}
    return best


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None or mean != mean:
        return "-"
    return f"{mean:6.2f}" + (f" ± {std:5.2f}" if std is not None and std == std else "")


def _num(v: float | None) -> str:
    return "-" if v is None or v != v else f"{v:6.2f}"


def _name(e: dict[str, Any]) -> str:
    searched = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in e["searched"].items())
    return e["label"] + (" " + searched if searched else "")


def _format_stream_table(summary: dict[str, Any]) -> str:
    rows = [["config", "seeds", "MSE", "failed"]]
    for e in summary["configs"]:
        mse = "-" if e["mse_mean"] is None else f"{e['mse_mean']:.4g}" + (
            f" ± {e['mse_std']:.2g}" if e["mse_std"] is not None and e["mse_std"] == e["mse_std"] else "")
        rows.append([_name(e), str(e["seeds"]), mse, _failed(e)])
    text = _grid(rows) + "\n(mean squared error over every step of the stream, mean ± sample std over seeds)"
    return text + _best_lines(summary)


def _best_lines(summary: dict[str, Any]) -> str:
    objective = summary.get("search", {}).get("objective_text", "mean ACC")
    lines = []
    for label, b in summary.get("best", {}).items():
        line = f"  {label}: {b['metric']} {b['value']:.4g}"
        if b["metric"] != "mse_mean":
            split = "validation" if summary.get("selection", "val") == "val" else "TEST (selection: test)"
            line += f" on test; chosen by {objective} {b['objective']:.4g} on {split}, the search orders"
        line += f" at {b['searched']}" if b["searched"] else ""
        f = b.get("fresh")
        if f and f.get("objective") is not None:
            line += (f"\n    re-run on {f['R']} fresh orders (the estimate to report): objective "
                     f"{f['objective']:.4g}, ACC {_pm(f['acc_mean'], f['acc_std']).strip()}, AOPD {_num(f['aopd']).strip()}")
        u = b.get("full")
        if u and u.get("acc_mean") is not None:
            line += (f"\n    tuned on the first {u['unseen_after']} tasks; on {u['R']} full orders (the numbers to "
                     f"report): ACC {_pm(u['acc_mean'], u['acc_std']).strip()}, AOPD {_num(u['aopd']).strip()}; "
                     f"tasks {u['unseen_after'] + 1}.. only: ACC {_num(u.get('unseen_acc_mean')).strip()}, "
                     f"forgetting {_num(u.get('unseen_forgetting_mean')).strip()}")
        lines.append(line)
    return "\nbest per method:\n" + "\n".join(lines) if lines else ""


def _failed(e: dict[str, Any]) -> str:
    stopped = e.get("trials_stopped") or 0
    return f"{e['trials_failed']}/{e['trials']}" + (f" ({stopped} stopped)" if stopped else "")


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
                     _num(e["aopd"]), _num(e["mopd"]), _failed(e)])
    text = _grid(rows) + "\n(test accuracies in %, mean ± sample std over trials; OPD over R orders)"
    searched = any(e["searched"] for e in summary["configs"])
    if searched and summary.get("selection") == "test":
        text += "\nwarning: configs were SELECTED ON TEST (search.selection: test): the best configs' numbers are optimistic"
    return text + (_best_lines(summary) if searched else "")
