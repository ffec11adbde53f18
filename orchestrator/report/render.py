"""``clorch report``: results/<study>/report.md, its figures, and their copy in MLflow.

The report answers "which method is robust to task order, and by how much"
with the uncertainty that R orders allow: a comparison table (the summary's
numbers plus bootstrap intervals over orders), the paired comparisons against
the baseline (paired_view), learning and forgetting curves (curves), the
position effect, a search's parameter importances (importance), the figures
of orchestrator.report.figures and trace_figures, and the tables as CSV and
LaTeX under tables/ (tables, main_tables). It reads the trial records alone (from the
results directory or from MLflow, orchestrator.report.sources), so it can be rebuilt
at any time, also for a study that ran on a cluster. Only the driver (or the
``clorch report`` process) writes the MLflow artifacts, under ``report/`` of
the study run.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orchestrator.report import bootstrap
from orchestrator.report import figures
from orchestrator.report.fmt import FIGURE_DPI, file_safe, md_table as _table, num as _num, pm as _pm
from orchestrator.report import curves, importance, main_tables, paired_view, tables, trace_figures
from orchestrator.report.analysis import analyse, searches
from orchestrator.report.config_result import ConfigResult, choice_point, chosen_on
from orchestrator.results import png_render
from orchestrator.results.store import study_dir as results_study_dir
from orchestrator.report.sources import StudyData, find_study_run, from_results, load_study
from orchestrator.results.records import TrialRecord
from orchestrator.results.summary import best_per_label
from orchestrator.study.redact import redact_uri
from orchestrator.study.schema import ObjectiveSpec

REPORT_FILE = "report.md"
FIGURES_DIR = "figures"
ARTIFACT_DIR = "report"

CAPTIONS = {
    "accuracy_matrix": "Accuracy matrix, mean over each config's trials. Rows: after training the i-th task "
                       "of the order; columns: the task learned p-th (aligned by position, so that the mean "
                       "over orders averages the same quantity). The last row is the final accuracy by position. "
                       "The colour scale spans the range of the values shown, shared by the panels.",
    "final_accuracy_per_task": "Final accuracy of each task (one panel per task identity) across orders, one "
                               "point per order (seeds averaged). The spread of a config's points is that "
                               "task's OPD.",
    "opd_per_task": "OPD per task: max − min over orders of the task's final accuracy.",
    "acc_vs_aopd": "Robustness frontier: ACC against AOPD; the lines are the bootstrap intervals over orders; "
                   "circled (and joined by a dashed line): the configs no other config beats on both (higher "
                   "ACC and lower AOPD). Compare AOPD only between configs with the same R.",
    "position_effect": "Position effect e(p) with its bootstrap band: above 0, tasks learned at position p end "
                       "better than their own average over orders.",
    "search_progress": "Search: each config's objective (the study's own rule over its trials) at the time its "
                       "last trial ended, colored by config; the black steps are, per searched method, the best "
                       "config objective so far. Configs with a failed or stopped trial are left out (they "
                       "cannot be chosen as best).",
}


@dataclass
class Report:
    path: Path                               # report.md
    figures: dict[str, Path] = field(default_factory=dict)
    results: list[ConfigResult] = field(default_factory=list)
    logged_to: str | None = None             # the MLflow run id the report was logged to
    tables: dict[str, Path] = field(default_factory=dict)   # tables/<name>.csv and .tex


@dataclass
class Views:
    """What the report computes beside the per-config results: the paired block and the searches' analysis."""
    paired: dict[str, Any] | None                      # orchestrator.report.paired_view.block_for
    searches: list[dict[str, Any]]                     # orchestrator.report.importance.analyse_searches
    table_files: dict[str, Path] = field(default_factory=dict)


def views_of(data: StudyData, results: list[ConfigResult]) -> Views:
    summary = data.summary or {}
    best = summary.get("best") or best_per_label([r.entry for r in results])
    return Views(paired_view.block_for(summary, results),
                 importance.analyse_searches(results, searches(results), study_objective(summary), best))


def report_tables(results: list[ConfigResult], views: Views) -> list[tables.Table]:
    """The tables exported beside report.md (tables/<name>.csv and .tex)."""
    names = {r.config.config_id: r.name for r in results}
    out = [main_tables.comparison(results)]
    if views.paired is not None:
        out.append(paired_view.table(views.paired, names))
    out += [main_tables.sequence(results), main_tables.position(results)]
    if any(a["params"] for a in views.searches):
        out.append(importance.table(views.searches))
    return out


# ---------------------------------------------------------------- formatting


def comparison_rows(results: list[ConfigResult]) -> tuple[list[str], list[list[str]]]:
    """The comparison table: header and one row of formatted cells per config."""
    t = main_tables.comparison(results)
    return t.header, t.cells


def r_warning(results: list[ConfigResult]) -> str | None:
    """A warning when configs are compared at different R (OPD grows with R)."""
    rs = {r.name: r.entry["R"] for r in results if r.ok}
    if len(set(rs.values())) <= 1:
        return None
    listed = ", ".join(f"{name}: R={R}" for name, R in rs.items())
    return (f"> **Warning: configs are compared at different R** ({listed}). OPD grows with the number "
            f"of orders, so AOPD and MOPD (and their intervals) are only comparable between configs with "
            f"the same R. Failed trials reduce a config's R.")


def _few_orders_note(results: list[ConfigResult]) -> str:
    smallest = min((r.entry["R"] for r in results if r.ok), default=0)
    if 0 < smallest < 8:
        return (f" With as few as R = {smallest} orders there are few distinct resamples: the intervals are "
                f"rough, and an interval of width 0 only means the orders agreed.")
    return ""


def _configs_section(results: list[ConfigResult]) -> list[str]:
    header = ["config", "method", "config id", "searched parameters"]
    rows = [[r.name, r.config.method, f"`{r.config.config_id}`",
             ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.config.searched.items())
             or "–"] for r in results]
    return ["## Configs", "", _table(header, rows), ""]


def study_objective(summary: dict[str, Any] | None) -> ObjectiveSpec:
    """The study's search objective as the summary recorded it; mean ACC without one."""
    given = ((summary or {}).get("search") or {}).get("objective")
    try:
        return ObjectiveSpec(**given) if given else ObjectiveSpec()
    except ValueError:
        return ObjectiveSpec()


def _test_sizes(records: list[TrialRecord]) -> list[int] | None:
    return next((list(r.test_sizes) for r in records if getattr(r, "test_sizes", None)), None)


def _sequence_section(results: list[ConfigResult], records: list[TrialRecord]) -> list[str]:
    """Within-sequence and transfer metrics, and the binomial noise of each config's ACC."""
    lines = ["## Within the sequence, transfer and test-set noise", ""]
    sizes = _test_sizes(records)
    if sizes:
        ordered = sorted(sizes)
        median = (ordered[(len(ordered) - 1) // 2] + ordered[len(ordered) // 2]) / 2
        lines += [f"Test examples per task: min {min(sizes)}, median {median:g} (per task identity: "
                  f"{', '.join(str(n) for n in sizes)}). An accuracy p measured on n examples has binomial "
                  f"standard error sqrt(p(1 − p)/n): {_num(100 * (0.25 / min(sizes)) ** 0.5)} points at "
                  f"p = 50% on the smallest task.", ""]
    else:
        lines += ["The trial records do not carry test-set sizes (written before they were recorded): no "
                  "binomial noise figures.", ""]
    fwt = "FWT" in main_tables.sequence(results).header
    lines += [main_tables.sequence(results).markdown(), "",
              "Means over the config's completed trials (test accuracies). min-ACC (De Lange et al., "
              "arXiv 2205.13452): per task not last in the order, its lowest accuracy at any task boundary "
              "after it was learned, averaged; WC-ACC = (1/T) a_T + (1 − 1/T) min-ACC, a_T the accuracy on "
              "the last task. Evaluated at task boundaries only, so a dip inside a task's training that "
              "recovers is not seen (the paper evaluates continually)."
              + (" FWT: mean over tasks not first of the accuracy on the task just before it is trained "
                 "minus the untrained network's accuracy on it (needs evaluate_unseen)." if fwt else "")
              + " ACC binomial SE: per trial 100·sqrt(Σ_j p_j(1 − p_j)/n_j)/T over the final accuracies, "
              "then the root mean square over trials (every trial uses the same test sets, so averaging "
              "trials does not remove this noise). Learning curve: after each position, the mean accuracy "
              "over the tasks learned so far.", ""]
    return lines


def _collapsed(data: StudyData) -> list[str]:
    """One short line: trials whose validation accuracy sat at chance right after learning a task (kept)."""
    hit = [r for r in data.records if getattr(r, "collapsed_tasks", None)]
    if not hit:
        return []
    configs = sorted({r.label for r in hit})
    return [f"Collapsed: {len(hit)} of {len(data.records)} trials ({len(configs)} configs: {', '.join(configs[:5])}"
            f"{', ...' if len(configs) > 5 else ''}) were at chance on validation right after learning a task "
            "(within 3 binomial SEs); they are kept in every number above.", ""]


def _failures(data: StudyData) -> list[str]:
    failed = [r for r in data.records if not r.completed]
    if not failed:
        return _collapsed(data)
    stopped = sum(r.status == "stopped" for r in failed)
    what = f"{len(failed) - stopped} failed" + (f" and {stopped} were stopped early (scheduler or time budget)"
                                               if stopped else "")
    lines = ["## Failed and stopped trials" if stopped else "## Failed trials", "",
             f"Of {len(data.records)} trials {what}; their configs' numbers use the completed trials only.", ""]
    for r in failed[:20]:
        error = (r.error or "").strip().splitlines()
        lines.append(f"- `{r.trial_id}`: {error[-1] if error else 'no error recorded'}")
    if len(failed) > 20:
        lines.append(f"- ... and {len(failed) - 20} more (see the trial records)")
    return lines + [""] + _collapsed(data)


VALIDATION_SOURCES = {
    "held_out": "a validation split held out of each task's training set",
    "training_set": "the training set itself (a trainability benchmark: it is evaluated on what it trains on)",
    "none": "none (val_fraction 0)",
}


def _selection_line(summary: dict) -> str:
    """Which split chose and which is reported: the first thing a reviewer asks."""
    source = VALIDATION_SOURCES.get(summary.get("validation", ""), "unknown (an older study)")
    if summary.get("selection", "val") == "test":
        return (f"**SELECTED ON TEST** (search.selection: test): every choice (objective, ASHA, best config, "
                f"frontier) read the test numbers reported here, which are therefore optimistic; validation: {source}")
    return (f"selection on validation: every choice (objective, ASHA, Optuna, best config, frontier) read the "
            f"validation matrices; every number in the tables is on test. Validation: {source}")


def _protocol_lines(summary: dict) -> list[str]:
    """search.protocol first_tasks and --configs-from: what tuning saw, and the numbers on the tasks it did not."""
    lines: list[str] = []
    origin = summary.get("configs_from_study")
    if summary.get("configs_from") and origin:
        reused = ", ".join(f"{label} ({cid})" for label, cid in (origin.get("configs") or {}).items()) or "none"
        lines.append(f"- configs chosen on study {origin.get('study')} (benchmark {origin.get('benchmark')}), "
                     f"read from {summary['configs_from']}: {reused} ran those fixed params here, no search"
                     + (f"; kept as in this study: {', '.join(origin['absent'])}" if origin.get("absent") else ""))
    k = summary.get("first_tasks")
    if not k:
        return lines + ([""] if lines else [])
    T = summary.get("num_tasks", "T")
    lines.append(f"- tuning protocol first_tasks {k}: every search trial learned only the first {k} tasks of its "
                 f"order, so those {k} tasks of every order were SEEN WHILE TUNING; each searched method's winner "
                 f"then ran on all {T} tasks of the full orders (label @full), and those runs' test numbers are "
                 f"the ones to report. Over tasks {k + 1}..{T} only (never seen while tuning):")
    lines.append("")
    rows = [[e["label"], _pm(e.get("acc_mean"), e.get("acc_std")),
             _pm(e.get("unseen_acc_mean"), e.get("unseen_acc_std")),
             _pm(e.get("unseen_forgetting_mean"), e.get("unseen_forgetting_std"))]
            for e in summary.get("configs", []) if "unseen_acc_mean" in e]
    if rows:
        lines += [_table(["config", "ACC (all tasks)", f"ACC tasks {k + 1}..{T}", f"Forgetting tasks {k + 1}..{T}"],
                         rows), ""]
    else:
        lines += ["(no full-order run completed)", ""]
    return lines


def render(data: StudyData, results: list[ConfigResult], figure_files: dict[str, str],
           n_resamples: int, confidence: float, seed: int, views: Views | None = None) -> str:
    """report.md's text. ``figure_files``: figure name -> path relative to report.md."""
    summary = data.summary or {}
    views = views or views_of(data, results)
    names = {r.config.config_id: r.name for r in results}
    records = data.records
    T = records[0].num_tasks
    orders = {r.order for r in records}
    seeds = sorted({r.seed for r in records})
    failed = sum(r.status == "failed" for r in records)
    stopped = sum(r.status == "stopped" for r in records)
    bench = summary.get("benchmark", {}).get("name", "–")
    pct = f"{confidence * 100:g}%"
    lines = [
        f"# Study report: {data.name}", "",
        f"- source: {data.source}",
        f"- benchmark: {bench}, {T} tasks, setting {records[0].setting or '–'}",
        f"- {len(orders)} distinct orders × {len(seeds)} seed(s) {seeds} × {len(results)} configs = "
        f"{len(records)} trials, {failed} failed" + (f", {stopped} stopped early" if stopped else ""),
        f"- generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- {_selection_line(summary)}", "",
    ]
    lines += [f"- note: {n}" for n in data.notes]
    lines += _protocol_lines(summary)
    lines += ["## Comparison", ""]
    warning = r_warning(results)
    if warning:
        lines += [warning, ""]
    lines += [_table(*comparison_rows(results)), "",
              f"Accuracies in %, BWT/forgetting/OPD in points. ACC, BWT, Forgetting, Task.Acc: mean ± sample "
              f"std over the config's completed trials. AOPD = mean and MOPD = max over tasks of OPD (max − "
              f"min of a task's final accuracy over the R orders; seeds of an order averaged first). "
              f"CI: {pct} percentile bootstrap interval over orders ({n_resamples} resamples of the R orders "
              f"with replacement, seed {seed}). A resample can only narrow a range, so the AOPD interval sits "
              f"at or below AOPD and can exclude it: read it as how much AOPD moves with the orders drawn, "
              f"and take AOPD from few orders as optimistic." + _few_orders_note(results), ""]
    ranked = [r for r in results if r.ok and None not in choice_point(r)]
    if ranked:
        best = figures.frontier([choice_point(r) for r in ranked])
        split = "validation" if chosen_on(ranked[0]) == "val" else "TEST"
        lines += [f"Robustness frontier, chosen on {split} (no other config has both a higher ACC and a lower "
                  f"AOPD there; the table shows their test numbers): {', '.join(ranked[i].name for i in best)}.", ""]
    lines += _configs_section(results)
    lines += paired_view.section(views.paired, names, figure_files.get("paired_forest"))
    lines += _sequence_section(results, records)
    for name in curves.FIGURES:
        if name in figure_files:
            lines += [f"![{name.replace('_', ' ')}]({figure_files[name]})", "", curves.CAPTIONS[name], ""]
    lines += ["## Position effect", "",
              "Does learning a task later help or hurt it? For each order r and task j, d = final accuracy of "
              "j under r − mean of j's final accuracy over the orders (removes task difficulty). e(p) = mean "
              "of d over the tasks learned at position p (1 = first); slope = least-squares slope of d "
              "against the task's position relative to its own mean position (a within-task regression), in "
              f"points per position. CI: {pct} bootstrap over orders as above; the "
              "answer is 'later helps' / 'later hurts' when the slope's interval excludes 0.", "",
              main_tables.position(results).markdown(), ""]
    if "position_effect" in figure_files:
        lines += [f"![position effect]({figure_files['position_effect']})", "", CAPTIONS["position_effect"], ""]
    lines += ["## Figures", ""]
    for name in ("accuracy_matrix", "final_accuracy_per_task", "opd_per_task", "acc_vs_aopd"):
        if name in figure_files:
            lines += [f"### {name.replace('_', ' ')}", "", f"![{name}]({figure_files[name]})", "",
                      CAPTIONS[name], ""]
    lines += ["## Search", ""]
    searched = searches(results)
    if "search_progress" in figure_files:
        lines += [f"Searches (methods with more than one config): {', '.join(searched)}.", "",
                  f"![search progress]({figure_files['search_progress']})", "", CAPTIONS["search_progress"], ""]
        chosen = summary.get("best") or {}
        objective = (summary.get("search") or {}).get("objective_text", "mean ACC")
        for label in searched:
            ok = [r for r in results if r.config.label == label and r.ok]
            b = chosen.get(label)
            winner = next((r for r in ok if b and r.config.config_id == b["config_id"]), None)
            if winner is not None and b.get("objective") is not None:
                split = "validation" if summary.get("selection", "val") == "val" else "TEST"
                line = (f"- best {label} by {objective} on {split}: {winner.name} (objective {_num(b['objective'])} "
                        f"on the search orders; test ACC {_pm(winner.entry['acc_mean'], winner.entry['acc_std'])}, "
                        f"AOPD {_num(winner.entry['aopd'])})")
                f = b.get("fresh")
                if f and f.get("objective") is not None:
                    line += (f"; re-run on {f['R']} fresh orders, the estimate to report: objective "
                             f"{_num(f['objective'])}, ACC {_pm(f['acc_mean'], f['acc_std'])}, AOPD {_num(f['aopd'])}")
                u = b.get("full")  # search.protocol first_tasks: the winner on the full orders
                if u and u.get("acc_mean") is not None:
                    line += (f"; tuned on the first {u.get('unseen_after')} tasks, run on {u['R']} full orders, the "
                             f"numbers to report: ACC {_pm(u['acc_mean'], u['acc_std'])}, AOPD {_num(u['aopd'])}")
                lines.append(line)
            elif ok:
                best = max(ok, key=lambda r: r.entry["acc_mean"])
                lines.append(f"- best {label} by ACC: {best.name} (ACC {_pm(best.entry['acc_mean'], best.entry['acc_std'])}, "
                             f"AOPD {_num(best.entry['aopd'])})")
        lines.append("")
        lines += _importance_lines(views, figure_files, summary)
    else:
        lines += ["No search in this study (every method has one config): the objective-per-trial figure is "
                  "skipped.", ""]
    lines += _failures(data)
    if views.table_files:
        lines += [tables.files_line(views.table_files), ""]
    return "\n".join(lines)


def _importance_lines(views: Views, figure_files: dict[str, str], summary: dict[str, Any]) -> list[str]:
    """The searches' parameter importances (Optuna fANOVA) and each searched parameter against the objective."""
    shown = [a for a in views.searches if a["params"]]
    if not shown:
        return []
    lines = ["### Searched parameters", "",
             "Which searched parameter moved the objective: Optuna's fANOVA importance (seeded; the share of "
             "the objective's variance each parameter explains, summing to 1 per method) over the configs of "
             "the search whose every trial completed, rebuilt as an in-memory Optuna study from their searched "
             f"values and objectives. n/a with fewer than {importance.MIN_CONFIGS} such configs. With a few "
             "configs the importances are rough: a random forest fitted to a handful of points.", "",
             importance.table(views.searches).markdown(), ""]
    split = "validation" if summary.get("selection", "val") == "val" else "TEST"
    for a in shown:
        name = f"search_params_{file_safe(a['label'])}"
        if name in figure_files:
            lines += [f"![{name}]({figure_files[name]})", ""]
    if any(n.startswith("search_params_") for n in figure_files):
        lines += [importance.CAPTION.replace("selection split", f"selection split, here {split}"), ""]
    return lines


# ---------------------------------------------------------------- writing


def write_report(data: StudyData, out_dir: Path, n_resamples: int = bootstrap.DEFAULT_RESAMPLES,
                 confidence: float = bootstrap.DEFAULT_CONFIDENCE, seed: int = bootstrap.DEFAULT_SEED) -> Report:
    """Write ``out_dir``/report.md and ``out_dir``/figures/*.png from ``data``; return what was written."""
    streams = [r for r in data.records if not r.ordered]
    if streams:  # regression streams have no task orders: nothing here applies to them
        data = StudyData(data.name, [r for r in data.records if r.ordered], data.summary, data.source,
                         data.study_run_id, data.notes + [f"{len(streams)} regression-stream trials left out "
                                                          "(no task orders; their numbers are in summary.json)"])
    if not data.records:
        return _write_stream_report(data, streams, out_dir)
    results = analyse(data.records, data.summary, n_resamples=n_resamples, confidence=confidence, seed=seed)
    views = views_of(data, results)
    fig_dir = out_dir / FIGURES_DIR
    fig_dir.mkdir(parents=True, exist_ok=True)
    drawn = _draw(results, views, data.summary, fig_dir) if any(r.ok for r in results) else {}
    for path in [*(fig_dir / f"{n}.png" for n in _OWN_FIGURES), *fig_dir.glob("search_params_*.png")]:
        if path.stem not in drawn:
            path.unlink(missing_ok=True)  # a figure of an earlier report that no longer applies
    traced, traced_text = trace_figures.draw(results, fig_dir)  # records with a trace or per-task series
    written = {name: fig_dir / f"{name}.png" for name in drawn}
    traced_files = {name: fig_dir / f"{name}.png" for name in traced}
    # every figure at once: rendering is the cost, spread over the cores (orchestrator/results/png_render.py)
    png_render.save([(fig, written[n]) for n, fig in drawn.items()]
                    + [(fig, traced_files[n]) for n, fig in traced.items()], FIGURE_DPI)
    views.table_files = tables.write_all(report_tables(results, views), out_dir)
    text = render(data, results, {n: f"{FIGURES_DIR}/{p.name}" for n, p in written.items()},
                  n_resamples, confidence, seed, views) + traced_text
    written.update(traced_files)
    return Report(_write_text(out_dir / REPORT_FILE, text), written, results, tables=views.table_files)


_OWN_FIGURES = [*figures.FIGURES, *curves.FIGURES, "paired_forest"]


def _draw(results: list[ConfigResult], views: Views, summary: dict[str, Any] | None, fig_dir: Path) -> dict:
    """name -> Figure of every figure of the report but the trace figures (orchestrator.report.trace_figures)."""
    out = {}
    for name, draw in figures.FIGURES.items():
        if name == "search_progress" and not searches(results):
            continue
        out[name] = draw(results, objective=study_objective(summary)) if name == "search_progress" else draw(results)
    for name, draw in curves.FIGURES.items():
        out[name] = draw(results, summary)
    if views.paired is not None and views.paired["configs"]:
        out["paired_forest"] = paired_view.forest(views.paired, {r.config.config_id: r.name for r in results})
    split = "validation" if (summary or {}).get("selection", "val") == "val" else "test"
    for a in views.searches:
        if a["params"] and a["configs"]:
            out[f"search_params_{file_safe(a['label'])}"] = importance.scatter(
                a["label"], a["configs"], a["objectives"], a["params"], a["chosen"], a["importances"], split)
    return out


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _write_stream_report(data: StudyData, records: list[TrialRecord], out_dir: Path) -> Report:
    """A regression-stream study: no task orders, so no order statistics; the squared-error
    table, each method's best config, and what the best configs' step-sizes learned."""
    from orchestrator.report.stream_figures import step_size_figure
    from orchestrator.results.summary import format_table

    lines = [f"# Study report: {data.name}", "", f"- source: {data.source}",
             f"- {len(records)} regression-stream trials (no task orders: the order-robustness "
             "statistics do not apply)", ""]
    if data.summary:
        lines += ["## Mean squared error", "", "```", format_table(data.summary), "```", ""]
        table_files = tables.write_all([main_tables.stream(data.summary)], out_dir)
        lines += [tables.files_line(table_files), ""]
    else:
        table_files = {}
    written: dict[str, Path] = {}
    fig = step_size_figure(data.summary or {}, records) if data.summary else None
    if fig is not None:
        path = out_dir / FIGURES_DIR / "step_sizes.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=FIGURE_DPI)
        written["step_sizes"] = path
        lines += ["## Learned step-sizes", "",
                  "Best config of each method (lowest mean squared error), step-size traces averaged over "
                  "seeds. Weight-flipping: relevant (flipping) against irrelevant (constant) weights; "
                  "rate-tracking: against the optimal alpha*.", "", f"![step sizes]({FIGURES_DIR}/step_sizes.png)", ""]
    return Report(_write_text(out_dir / REPORT_FILE, "\n".join(lines)), written, tables=table_files)


def log_report(client, run_id: str, report: Report) -> None:
    """report.md, the figures and the tables as artifacts of the study run, under report/ (report/figures/,
    report/tables/).

    A study run holds one report: a new one replaces the files of the last (same names), the figures and
    tables it no longer has are deleted after, and the run's ``clorch.report_updated`` tag says when; no
    run is added."""
    from orchestrator.results.tracking import prune_artifacts

    client.log_artifact(run_id, str(report.path), ARTIFACT_DIR)
    for path in report.figures.values():
        client.log_artifact(run_id, str(path), f"{ARTIFACT_DIR}/{FIGURES_DIR}")
    for path in report.tables.values():
        client.log_artifact(run_id, str(path), f"{ARTIFACT_DIR}/{tables.TABLES_DIR}")
    prune_artifacts(client, run_id, f"{ARTIFACT_DIR}/{FIGURES_DIR}", {p.name for p in report.figures.values()})
    prune_artifacts(client, run_id, f"{ARTIFACT_DIR}/{tables.TABLES_DIR}", {p.name for p in report.tables.values()})
    client.set_tag(run_id, "clorch.report_updated", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    report.logged_to = run_id


def report_study(name: str, results_dir: str | Path = "results", tracking_uri: str | None = None,
                 experiment: str | None = None, n_resamples: int = bootstrap.DEFAULT_RESAMPLES,
                 seed: int = bootstrap.DEFAULT_SEED) -> Report:
    """``clorch report``: load (results dir, else MLflow), write results/<study>/report.md, log when a URI is known.

    Raises sources.StudyNotFound when neither source has the study.
    """
    out = results_study_dir(results_dir, name)
    data = load_study(name, out, tracking_uri, experiment)
    report = write_report(data, out, n_resamples=n_resamples, seed=seed)
    if tracking_uri:
        from mlflow import MlflowClient

        run_id = data.study_run_id
        if run_id is None:
            found = find_study_run(tracking_uri, name, experiment)
            run_id = found.info.run_id if found else None
        if run_id is None:
            print(f"clorch: warning: no study run of '{name}' in MLflow {redact_uri(tracking_uri)}; the report is not "
                  f"logged there", file=sys.stderr)
        else:
            log_report(MlflowClient(tracking_uri=tracking_uri), run_id, report)
    return report


def report_after_run(out: Path, study_name: str, tracker: Any) -> Report | None:
    """The end of ``clorch run``: write and log the report; a failure only warns (the results are kept)."""
    retry = f"retry with: clorch report {study_name} --results-dir {out.parent}"
    try:
        data = from_results(out, study_name)
        if data is None:
            raise FileNotFoundError(f"no trial records in {out / 'trials'}")
        data.study_run_id = tracker.study_run
        report = write_report(data, out)
    except Exception as e:  # noqa: BLE001 - the study's results are written; a report is not worth losing them
        print(f"clorch: warning: the report failed ({type(e).__name__}: {e}); the study's results are "
              f"complete in {out}; {retry}", file=sys.stderr, flush=True)
        return None
    try:
        log_report(tracker.client, tracker.study_run, report)
    except Exception as e:  # noqa: BLE001 - same: the report is on disk
        print(f"clorch: warning: the report is written to {report.path} but logging it to MLflow failed "
              f"({type(e).__name__}: {e}); {retry} --tracking-uri URI", file=sys.stderr, flush=True)
        return report
    print(f"report: {report.path} (and MLflow run {tracker.study_run}, artifacts under {ARTIFACT_DIR}/)",
          flush=True)
    return report
