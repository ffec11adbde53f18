"""``clorch compare``'s output: compare/<a>_vs_<b>/report.md, its figures and its tables (CSV and LaTeX).

The numbers are orchestrator.report.compare's; this module only lays them
out: a table per shared config label (the studies' numbers, then each
difference), the labels only one study has, a figure of each label's ACC per
study and a forest plot of the differences.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from orchestrator.report import bootstrap, tables
from orchestrator.report.compare import Difference, Study, differences, shared_labels, single_labels
from orchestrator.report.fmt import FIGURE_DPI, ci, file_safe, md_table, num, pm
from orchestrator.results import png_render
from orchestrator.report.tables import Table

REPORT_FILE = "report.md"
FIGURES_DIR = "figures"
VALUE_KEYS = ("R", "acc_mean", "acc_std", "forgetting_mean", "forgetting_std", "aopd", "mopd")
DIFF_KEYS = ("dacc", "dacc_lo", "dacc_hi", "p", "dforgetting", "dforgetting_lo", "dforgetting_hi", "p_forgetting",
             "daopd", "dmopd")


@dataclass
class CompareReport:
    path: Path
    figures: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, Path] = field(default_factory=dict)
    shared: list[str] = field(default_factory=list)


def default_dir(studies: list[Study]) -> Path:
    """./compare/<a>_vs_<b>[_vs_...]/ (the name cut to 120 characters)."""
    return Path("compare") / "_vs_".join(file_safe(s.name) for s in studies)[:120]


def values_table(studies: list[Study], labels: list[str]) -> Table:
    header = ["label", "study", "benchmark", "config", "R", "ACC", "Forgetting", "AOPD", "MOPD"]
    cells, values = [], []
    for label in labels:
        for s in studies:
            r = s.chosen.get(label)
            if r is None:
                continue
            e = r.entry
            cells.append([label, s.name, s.benchmark_name, r.config.config_id, str(e["R"]),
                          pm(e["acc_mean"], e["acc_std"]), pm(e["forgetting_mean"], e["forgetting_std"]),
                          num(e["aopd"]), num(e["mopd"])])
            values.append([label, s.name, s.benchmark_name, r.config.config_id] + [e[k] for k in VALUE_KEYS])
    return Table("compare_values", "Per shared config label and study: test ACC and forgetting (mean ± sample std "
                 "over trials), AOPD and MOPD over the study's R orders.", header, cells,
                 ["label", "study", "benchmark", "config_id", *VALUE_KEYS], values)


def _diff_cells(d: Difference) -> list[str]:
    v = d.values
    return [num(v["dacc"]), ci((v["dacc_lo"], v["dacc_hi"])), num(v["p"], 3), num(v["dforgetting"]),
            ci((v["dforgetting_lo"], v["dforgetting_hi"])), num(v["daopd"]), num(v["dmopd"])]


def differences_table(diffs: list[Difference]) -> Table:
    header = ["label", "difference", "pairing", "R", "ΔACC", "ΔACC CI", "p", "ΔForgetting", "ΔForgetting CI",
              "ΔAOPD", "ΔMOPD"]
    cells = [[d.label, f"{d.study} − {d.versus}", d.pairing, str(d.R), *_diff_cells(d)] for d in diffs]
    values = [[d.label, d.study, d.versus, d.pairing, d.R] + [d.values.get(k) for k in DIFF_KEYS] for d in diffs]
    return Table("compare_differences", "Differences per shared config label (study − reference, test): ΔACC and "
                 "Δforgetting with bootstrap intervals over orders (paired on common orders where the benchmark "
                 "is the same), ΔAOPD and ΔMOPD without an interval.", header, cells,
                 ["label", "study", "versus", "pairing", "R", *DIFF_KEYS], values)


def label_section(label: str, studies: list[Study], diffs: list[Difference]) -> list[str]:
    having = [s for s in studies if label in s.chosen]
    header = ["study", "benchmark", "config", "R", "ACC", "Forgetting", "AOPD", "MOPD", "p"]
    rows = []
    for s in having:
        r = s.chosen[label]
        e = r.entry
        rows.append([s.name, s.benchmark_name, f"`{r.config.config_id}`", str(e["R"]), pm(e["acc_mean"], e["acc_std"]),
                     pm(e["forgetting_mean"], e["forgetting_std"]), num(e["aopd"]), num(e["mopd"]), ""])
    for d in diffs:
        c = _diff_cells(d)
        rows.append([f"**{d.study} − {d.versus}**", d.pairing, "", str(d.R), f"{c[0]} {c[1]}", f"{c[3]} {c[4]}",
                     c[5], c[6], c[2]])
    lines = [f"### {label}", "", md_table(header, rows), ""]
    Rs = {s.chosen[label].entry["R"] for s in having}
    if len(Rs) > 1:
        listed = ", ".join(f"{s.name}: {s.chosen[label].entry['R']}" for s in having)
        lines += [f"> R differs between the studies ({listed}): "
                  "AOPD and MOPD grow with R, so their differences are not comparable here.", ""]
    if any(d.values["dacc_lo"] is None or d.values["dacc_lo"] != d.values["dacc_lo"] for d in diffs):
        lines += ["No interval where a study has fewer than 2 orders (paired: fewer than 2 in common).", ""]
    return lines


def acc_figure(studies: list[Study], labels: list[str]) -> Figure:
    """Per shared label, each study's ACC with its bootstrap interval over orders."""
    fig = Figure(figsize=(max(6.0, 1.2 * len(labels) * max(1, len(studies)) / 2 + 2), 4.5), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(1, len(studies))
    for k, s in enumerate(studies):
        xs, ys, lo, hi = [], [], [], []
        for i, label in enumerate(labels):
            r = s.chosen.get(label)
            if r is None or r.entry["acc_mean"] is None:
                continue
            xs.append(i - 0.4 + width * (k + 0.5))
            ys.append(r.entry["acc_mean"])
            lo.append(r.acc_ci[0])
            hi.append(r.acc_ci[1])
        if xs:
            y = np.array(ys)
            err = np.nan_to_num(np.array([y - np.array(lo), np.array(hi) - y]), nan=0.0)
            ax.errorbar(xs, ys, yerr=np.clip(err, 0, None), fmt="o", capsize=3, label=s.name)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel("test ACC (%)")
    ax.set_title("ACC per shared config label and study (bars: bootstrap intervals over orders)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return fig


def difference_figure(diffs: list[Difference]) -> Figure:
    """Forest plot: each difference (study − reference) of ACC and of forgetting with its interval."""
    fig = Figure(figsize=(9.0, 1.2 + 0.45 * max(1, len(diffs))), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    y = np.arange(len(diffs))[::-1]
    for ax, key, what in ((axes[0], "dacc", "ΔACC (points, higher is better)"),
                          (axes[1], "dforgetting", "ΔForgetting (points, lower is better)")):
        for yi, d in zip(y, diffs):
            mean, lo, hi = d.values[key], d.values[f"{key}_lo"], d.values[f"{key}_hi"]
            if mean is None or mean != mean:
                continue
            color = "tab:blue" if d.pairing == "paired" else "tab:orange"
            if lo is not None and lo == lo:
                ax.plot([lo, hi], [yi, yi], color=color, lw=2)
            ax.plot([mean], [yi], "o", color=color, ms=6)
        ax.axvline(0, color="gray", ls="--", lw=1)
        ax.set_xlabel(what)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [f"{d.label}: {d.study} − {d.versus} ({d.pairing}, R={d.R})" for d in diffs], fontsize=8)
    fig.suptitle("Differences between studies (blue: paired on common orders; orange: unpaired)")
    return fig


def _study_line(s: Study) -> str:
    recs = s.data.records
    T = recs[0].num_tasks if recs else "–"
    R = len({r.order for r in recs})
    return (f"- **{s.name}**: {s.data.source}; benchmark {s.benchmark_name}, {T} tasks, {R} orders, "
            f"{len(recs)} trials; labels: {', '.join(s.chosen) or 'none'}"
            + (f"; no selectable config: {', '.join(s.not_chosen)}" if s.not_chosen else ""))


def render(studies: list[Study], diffs: list[Difference], figure_files: dict[str, str],
           table_files: dict[str, Path], n_resamples: int, seed: int) -> str:
    labels = shared_labels(studies)
    lines = [f"# Comparison: {' vs '.join(s.name for s in studies)}", ""]
    lines += [_study_line(s) for s in studies]
    lines += [f"- generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}", "",
              "Each config label of a study is represented by one config: its only one, or for a search the "
              "config the study selected (summary `best`, chosen on validation; a `label@fresh` re-run on fresh "
              "orders is a label of its own). Every number is on test. ACC and forgetting: mean ± sample std "
              "over the config's completed trials; AOPD/MOPD over its R orders (they grow with R). A "
              "difference row is the study minus the first study (in the order given) that has the label. "
              "**paired**: the same benchmark (name and parameters) and 2 orders or more in common: mean of "
              "the per-order differences on the common orders (seeds of an order averaged; R = orders paired), "
              "its bootstrap interval over them and a two-sided sign-flip p (no p below 2/2^R). **unpaired** "
              "(another benchmark or other orders): the difference of the two means, with a percentile "
              f"interval from resampling each study's orders on their own ({n_resamples} resamples, seed "
              f"{seed}); R = the smaller R. ΔAOPD and ΔMOPD come without an interval: a resample can only "
              "narrow a range.", ""]
    lines += ["## Shared labels", ""]
    for label in labels:
        lines += label_section(label, studies, [d for d in diffs if d.label == label])
    lines += ["## Labels in one study only", ""]
    alone = single_labels(studies)
    lines += [f"- {name}: {', '.join(labs)}" for name, labs in alone.items() if labs] or ["(none)"]
    lines += ["", "## Figures", ""]
    captions = {"compare_acc": "ACC of each shared label per study, with the bootstrap interval over the "
                               "study's orders.",
                "compare_differences": "Each difference (study − reference) of ACC and forgetting with its "
                                       "interval; an interval that crosses the dashed zero line does not "
                                       "separate the two."}
    for name, caption in captions.items():
        if name in figure_files:
            lines += [f"![{name}]({figure_files[name]})", "", caption, ""]
    if table_files:
        lines += [tables.files_line(table_files), ""]
    return "\n".join(lines)


def write_compare(studies: list[Study], out_dir: Path, n_resamples: int = bootstrap.DEFAULT_RESAMPLES,
                  seed: int = bootstrap.DEFAULT_SEED) -> CompareReport:
    """Write ``out_dir``/report.md, figures/compare_*.png and tables/compare_*.csv/.tex."""
    labels = shared_labels(studies)
    diffs = differences(studies, n_resamples, seed)
    fig_dir = out_dir / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    drawn = {"compare_acc": acc_figure(studies, labels), "compare_differences": difference_figure(diffs)}
    written = {name: fig_dir / f"{name}.png" for name in drawn}
    png_render.save([(fig, written[name]) for name, fig in drawn.items()], FIGURE_DPI)
    table_files = tables.write_all([values_table(studies, labels), differences_table(diffs)], out_dir)
    text = render(studies, diffs, {n: f"{FIGURES_DIR}/{p.name}" for n, p in written.items()}, table_files,
                  n_resamples, seed)
    path = out_dir / REPORT_FILE
    path.write_text(text)
    return CompareReport(path, written, table_files, labels)
