"""The report's paired comparisons against the baseline: the block, its table and its forest plot.

The block is orchestrator.results.summary.paired_block over the report's own
records (the same function as summary.json's ``paired``), so a study without
a summary gets it too. In a search the compared config of each method is its
selected one (summary ``best``, chosen on validation).
"""
from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

from orchestrator.report.config_result import ConfigResult
from orchestrator.report.fmt import ci, num
from orchestrator.report.tables import Table
from orchestrator.results.summary import best_per_label, paired_block

FOREST_CAPTION = ("Paired differences against the baseline (config − baseline, order by order; seeds of an "
                  "order averaged): the mean over the paired orders with its bootstrap interval over orders, "
                  "for ACC (higher is better) and forgetting (lower is better). An interval that crosses the "
                  "dashed zero line does not tell the config from the baseline; read the Holm-adjusted p in "
                  "the table before calling any difference real.")


def block_for(summary: dict[str, Any] | None, results: list[ConfigResult]) -> dict[str, Any] | None:
    """The paired block of the report's configs (baseline: the summary's, else the first config's label)."""
    summary = summary or {}
    entries = [r.entry for r in results]
    best = summary.get("best") or best_per_label(entries)
    baseline = summary.get("baseline") or (results[0].config.label if results else None)
    return paired_block(entries, {r.config.config_id: r.records for r in results}, best, baseline)


def table(block: dict[str, Any], names: dict[str, str]) -> Table:
    header = ["config", "R", "ΔACC", "ΔACC CI", "p", "p (Holm)", "ΔForgetting", "ΔForgetting CI",
              "binomial SE of ΔACC"]
    keys = ["R", "dacc", "dacc_lo", "dacc_hi", "p", "p_exact", "p_holm", "dforgetting", "dforgetting_lo",
            "dforgetting_hi", "p_forgetting", "p_forgetting_holm", "dacc_binomial_se", "within_binomial_noise"]
    cells, values = [], []
    for c in block["configs"]:
        name = names.get(c["config_id"], c["label"])
        cells.append([name, str(c["R"]), num(c["dacc"]), ci((c["dacc_lo"], c["dacc_hi"])),
                      num(c["p"], 3) + ("" if c["p_exact"] else " (MC)"), num(c["p_holm"], 3),
                      num(c["dforgetting"]), ci((c["dforgetting_lo"], c["dforgetting_hi"])),
                      num(c["dacc_binomial_se"])])
        values.append([name, c["config_id"], c["label"], block["baseline"]] + [c.get(k) for k in keys])
    return Table("paired", f"Paired differences against the baseline {block['baseline']} (config − baseline, "
                 "per order, test): ΔACC and Δforgetting in points with bootstrap intervals over orders, "
                 "sign-flip p and Holm-adjusted p.", header, cells,
                 ["config", "config_id", "label", "baseline"] + keys, values)


def section(block: dict[str, Any] | None, names: dict[str, str], figure: str | None) -> list[str]:
    """report.md's "Paired comparisons": the table, how to read it, the forest plot, the noise warning."""
    if block is None:
        return []
    base = names.get(block["baseline_config_id"], block["baseline"])
    noisy = [f"{names.get(c['config_id'], c['label'])} (ΔACC {num(c['dacc'])}, 2 SE = "
             f"{num(2 * c['dacc_binomial_se'])})" for c in block["configs"] if c["within_binomial_noise"]]
    m = block["n_comparisons"]
    R = min((c["R"] for c in block["configs"]), default=0)
    lines = ["## Paired comparisons", "",
             f"Against the baseline **{base}** (study field `baseline`; default the first method, or without "
             f"a summary.json the first config listed). Every "
             f"config runs on the same orders and seeds, so each is compared order by order: Δ = config − "
             f"baseline, per order, of the test ACC and forgetting (seeds of an order averaged first), on the "
             f"orders both completed (R; an order either lacks is left out). In a search the compared config "
             f"of each method is its selected one.", ""]
    lines += [table(block, names).markdown(), "",
              f"ΔACC and ΔForgetting in points (forgetting: lower is better, so a negative Δ is an improvement). "
              f"CI: {block['confidence'] * 100:g}% percentile bootstrap over the paired orders "
              f"({block['n_resamples']} resamples, seed {block['seed']}). p: two-sided sign-flip permutation "
              f"test of ΔACC (exact over all 2^R sign vectors for R ≤ 16, else 20,000 random ones, marked MC); "
              f"with R orders it cannot go below 2/2^R" + (f" (= {2 / 2 ** R:.3g} at R = {R})" if R else "")
              + f". Multiple comparisons: {m} comparison(s) against the same baseline form one family; "
              f"p (Holm) is Holm's step-down adjustment, which keeps the chance of any false 'different' at "
              f"or below the level for the whole family: read p (Holm), not p, when asking which differ. "
              f"Binomial SE of ΔACC: sqrt(SE_config² + SE_baseline²) of the two ACC binomial SEs above.", ""]
    if figure:
        lines += [f"![paired forest plot]({figure})", "", FOREST_CAPTION, ""]
    if noisy:
        lines += [f"> **Warning: within test-set noise.** These differences are smaller than 2 binomial "
                  f"standard errors of the test-set measurement: {'; '.join(noisy)}. A larger test set (or "
                  f"more tasks) is needed before reading them as real.", ""]
    return lines


def forest(block: dict[str, Any], names: dict[str, str]) -> Figure:
    """Two panels (ΔACC, Δforgetting): one row per compared config, the mean difference and its interval."""
    rows = block["configs"]
    fig = Figure(figsize=(9.0, 1.2 + 0.45 * max(1, len(rows))), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(rows))[::-1]
    for ax, key, what in ((axes[0], "dacc", "ΔACC (points, higher is better)"),
                          (axes[1], "dforgetting", "ΔForgetting (points, lower is better)")):
        for yi, c in zip(y, rows):
            mean, lo, hi = c[key], c[f"{key}_lo"], c[f"{key}_hi"]
            if mean is None or mean != mean:
                continue
            if lo is not None and lo == lo:
                ax.plot([lo, hi], [yi, yi], color="tab:blue", lw=2)
            ax.plot([mean], [yi], "o", color="tab:blue", ms=6)
        ax.axvline(0, color="gray", ls="--", lw=1)
        ax.set_xlabel(what)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [f"{names.get(c['config_id'], c['label'])} (R={c['R']})" for c in rows])
    base = names.get(block["baseline_config_id"], block["baseline"])
    fig.suptitle(f"Paired differences against the baseline {base} "
                 f"({block['confidence'] * 100:g}% bootstrap intervals over orders)")
    return fig
