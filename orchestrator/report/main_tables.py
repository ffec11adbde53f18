"""The report's per-config tables as ``Table``s: comparison, within the sequence, position effect.

The cells are report.md's (orchestrator.report.fmt); the raw values are the
config's summary entry (orchestrator.results.summary.config_entry, the same
numbers as summary.json) and the bootstrap intervals of the analysis.
"""
from __future__ import annotations

from orchestrator.report.config_result import ConfigResult
from orchestrator.report.fmt import ci, num, pm
from orchestrator.report.position import verdict
from orchestrator.report.tables import Table

STATS = ("acc", "bwt", "forgetting", "task_acc")


def comparison(results: list[ConfigResult]) -> Table:
    """One row per config: R, ACC (and its CI), BWT, forgetting, Task.Acc, AOPD (and its CI), MOPD, failed."""
    header = ["config", "R", "ACC", "ACC CI", "BWT", "Forgetting", "Task.Acc", "AOPD", "AOPD CI", "MOPD",
              "failed"]
    columns = ["config", "config_id", "label", "R"]
    for key in STATS:
        columns += [f"{key}_mean", f"{key}_std"] + (["acc_ci_lo", "acc_ci_hi"] if key == "acc" else [])
    columns += ["aopd", "aopd_ci_lo", "aopd_ci_hi", "mopd", "trials_failed", "trials"]
    cells, values = [], []
    for r in results:
        e = r.entry
        cells.append([r.name, str(e["R"]), pm(e["acc_mean"], e["acc_std"]), ci(r.acc_ci),
                      pm(e["bwt_mean"], e["bwt_std"]), pm(e["forgetting_mean"], e["forgetting_std"]),
                      pm(e["task_acc_mean"], e["task_acc_std"]), num(e["aopd"]), ci(r.aopd_ci),
                      num(e["mopd"]), f"{e['trials_failed']}/{e['trials']}"])
        row = [r.name, r.config.config_id, r.config.label, e["R"]]
        for key in STATS:
            row += [e[f"{key}_mean"], e[f"{key}_std"]] + (list(r.acc_ci) if key == "acc" else [])
        values.append(row + [e["aopd"], *r.aopd_ci, e["mopd"], e["trials_failed"], e["trials"]])
    return Table("comparison", "Per config: test accuracies in %, BWT, forgetting and OPD in points; mean ± "
                 "sample std over trials; CI: bootstrap over orders.", header, cells, columns, values)


def sequence(results: list[ConfigResult]) -> Table:
    """min-ACC, WC-ACC, FWT (when any config has it), the binomial SE of ACC and the learning curve."""
    fwt = any(r.entry.get("fwt_mean") is not None and r.entry.get("fwt_mean") == r.entry.get("fwt_mean")
              for r in results)
    header = ["config", "min-ACC", "WC-ACC"] + (["FWT"] if fwt else []) + ["ACC binomial SE", "learning curve"]
    columns = ["config", "config_id", "min_acc_mean", "wc_acc_mean"] + (["fwt_mean"] if fwt else []) \
        + ["acc_binomial_se", "curve"]
    cells, values = [], []
    for r in results:
        e = r.entry
        curve = e.get("curve") or []
        cells.append([r.name, num(e.get("min_acc_mean")), num(e.get("wc_acc_mean"))]
                     + ([num(e.get("fwt_mean"))] if fwt else [])
                     + [num(e.get("acc_binomial_se")), " ".join(num(v, 1) for v in curve) or "–"])
        values.append([r.name, r.config.config_id, e.get("min_acc_mean"), e.get("wc_acc_mean")]
                      + ([e.get("fwt_mean")] if fwt else []) + [e.get("acc_binomial_se"), list(curve)])
    return Table("sequence", "Within the sequence: min-ACC, WC-ACC, the binomial SE of ACC and the learning "
                 "curve (mean accuracy over the tasks seen so far after each position), means over trials.",
                 header, cells, columns, values)


def position(results: list[ConfigResult]) -> Table:
    """The position effect: slope with its CI, the answer, and e(p) per position."""
    T = max((len(r.position["curve"]) for r in results if r.position), default=0)
    header = ["config", "R", "slope (points/position)", "slope CI", "answer"] + [f"e({p})" for p in range(1, T + 1)]
    columns = ["config", "config_id", "R", "slope", "slope_lo", "slope_hi", "answer"] + \
        [f"e{p}" for p in range(1, T + 1)]
    cells, values = [], []
    for r in results:
        if not r.position:
            cells.append([r.name, "0", "–", "–", "no completed trial"] + ["–"] * T)
            values.append([r.name, r.config.config_id, 0, None, None, None, "no completed trial"] + [None] * T)
            continue
        e = r.position
        cells.append([r.name, str(e["R"]), num(e["slope"]), ci((e["slope_lo"], e["slope_hi"])), verdict(e)]
                     + [num(v) for v in e["curve"]])
        values.append([r.name, r.config.config_id, e["R"], e["slope"], e["slope_lo"], e["slope_hi"], verdict(e)]
                      + list(e["curve"]))
    return Table("position_effect", "Position effect: slope of a task's final accuracy (minus its mean over "
                 "orders) against its position, in points per position, and e(p) per position.",
                 header, cells, columns, values)


def stream(summary: dict) -> Table:
    """A regression-stream study's configs (summary.json's entries): mean squared error over seeds."""
    header = ["config", "searched parameters", "seeds", "MSE", "failed"]
    cells, values = [], []
    for e in summary.get("configs", []):
        searched = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in (e.get("searched") or {}).items()) or "–"
        mse = "–" if e.get("mse_mean") is None else f"{e['mse_mean']:.4g}" + (
            f" ± {e['mse_std']:.2g}" if e.get("mse_std") is not None and e["mse_std"] == e["mse_std"] else "")
        cells.append([e["label"], searched, str(e.get("seeds", 0)), mse, f"{e['trials_failed']}/{e['trials']}"])
        values.append([e["label"], e["config_id"], searched, e.get("seeds"), e.get("mse_mean"), e.get("mse_std"),
                       e["trials_failed"], e["trials"]])
    return Table("mse", "Regression stream: mean squared error over every step, mean ± sample std over seeds.",
                 header, cells, ["label", "config_id", "searched", "seeds", "mse_mean", "mse_std", "trials_failed",
                                 "trials"], values)
