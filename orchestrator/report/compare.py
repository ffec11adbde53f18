"""``clorch compare``: the numbers of one comparison across studies (the writing is compare_render's).

Each study is read as ``clorch report`` reads it (orchestrator.report.sources:
a results directory, else the MLflow store), and each of its config labels is
represented by one config: the label's only config, or for a search the config
the study selected (summary ``best``, chosen on validation). A label present
in two studies or more gets a comparison: per study R, ACC, forgetting (mean ±
sample std over trials, test), AOPD and MOPD (the summary's own numbers,
orchestrator.results.summary.config_entry), and for each study after the
first that has the label, the difference to that first one:

- **paired**, when both studies ran the same benchmark (same name and
  parameters) and share 2 orders or more: order by order, as the report's
  paired comparisons (orchestrator.results.paired.compare: mean difference on
  the common orders, bootstrap interval over them, sign-flip p);
- **unpaired** otherwise (another benchmark, other orders): the difference of
  the two means over trials, with a percentile interval from resampling each
  study's orders independently (seeds of an order travel together); none
  when a study has fewer than 2 orders.

AOPD and MOPD are ranges over orders: their differences come without an
interval (a bootstrap can only narrow a range, so it would be biased), and
they compare only at equal R.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from orchestrator.report import bootstrap
from orchestrator.report.analysis import analyse, configs_from_records
from orchestrator.report.config_result import ConfigResult
from orchestrator.report.sources import StudyData, StudyNotFound, load_study
from orchestrator.results import paired, stats
from orchestrator.results.summary import best_per_label, config_entry

MIN_ORDERS = 2


class CompareError(ValueError):
    """Bad input to ``clorch compare``; the message names the argument. Nothing is written."""


@dataclass
class Study:
    arg: str                                  # as given on the command line
    name: str                                 # unique among the compared studies
    data: StudyData
    chosen: dict[str, ConfigResult]           # label -> the config that represents it
    not_chosen: list[str] = field(default_factory=list)   # labels with no eligible config (every one failed)

    @property
    def benchmark(self) -> dict[str, Any] | None:
        return (self.data.summary or {}).get("benchmark")

    @property
    def benchmark_name(self) -> str:
        return (self.benchmark or {}).get("name", "–")


@dataclass
class Difference:
    label: str
    study: str                                # this study minus ``versus``
    versus: str
    pairing: str                              # "paired" or "unpaired"
    R: int                                    # orders paired (paired), or the smaller R of the two (unpaired)
    values: dict[str, float | None]           # dacc, dacc_lo, dacc_hi, dforgetting (+ _lo/_hi), daopd, dmopd, p


def load(arg: str, tracking_uri: str | None, experiment: str | None) -> StudyData:
    """One argument: a results directory (results/<study>/), else a study name in the MLflow store."""
    path = Path(arg)
    if path.name == "summary.json" and path.is_file():
        path = path.parent
    try:
        data = load_study(path.name or arg, path, tracking_uri, experiment)
    except StudyNotFound as e:
        raise CompareError(f"{arg}: {e}") from None
    if not any(r.ordered for r in data.records):
        raise CompareError(f"{arg}: a regression-stream study (no task orders); compare needs studies with orders")
    data.records = [r for r in data.records if r.ordered]
    return data


def chosen_configs(data: StudyData) -> tuple[dict[str, str], list[str]]:
    """(label -> config id representing it, labels with no eligible config): a search's selected config."""
    configs = configs_from_records(data.records, data.summary)
    by_label: dict[str, list[str]] = {}
    for c in configs:
        by_label.setdefault(c.label, []).append(c.config_id)
    best = (data.summary or {}).get("best")
    if best is None:
        selection = (data.summary or {}).get("selection", "val")
        entries = [config_entry(c, [r for r in data.records if r.config_id == c.config_id], selection=selection)
                   for c in configs if len(by_label[c.label]) > 1]
        best = best_per_label(entries)
    out, missing = {}, []
    for label, ids in by_label.items():
        cid = ids[0] if len(ids) == 1 else (best.get(label) or {}).get("config_id")
        if cid in ids:
            out[label] = cid
        else:
            missing.append(label)
    return out, missing


def study(arg: str, name: str, data: StudyData, n_resamples: int, seed: int) -> Study:
    ids, missing = chosen_configs(data)
    keep = set(ids.values())
    results = analyse([r for r in data.records if r.config_id in keep], data.summary, n_resamples=n_resamples,
                      seed=seed)
    by_id = {r.config.config_id: r for r in results}
    chosen = {label: by_id[cid] for label, cid in ids.items() if by_id[cid].ok}
    return Study(arg, name, data, chosen, missing + [label for label, cid in ids.items() if not by_id[cid].ok])


def unique_names(args: Sequence[str], datas: Sequence[StudyData]) -> list[str]:
    """The study names; where two studies share one, each is named by its argument as well."""
    names = [d.name for d in datas]
    return [n if names.count(n) == 1 else f"{n} ({a})" for n, a in zip(names, args)]


def load_all(args: Sequence[str], tracking_uri: str | None = None, experiment: str | None = None,
             n_resamples: int = bootstrap.DEFAULT_RESAMPLES, seed: int = bootstrap.DEFAULT_SEED) -> list[Study]:
    """Every argument read and analysed; CompareError (naming the argument) on the first bad one."""
    if len(args) < 2:
        raise CompareError(f"compare needs two studies or more, got {len(args)}: {' '.join(args) or 'none'}")
    seen: dict[str, str] = {}
    for a in args:
        key = str(Path(a).resolve()) if Path(a).exists() else a
        if key in seen:
            raise CompareError(f"{a}: given twice (also as {seen[key]})")
        seen[key] = a
    datas = [load(a, tracking_uri, experiment) for a in args]
    studies = [study(a, n, d, n_resamples, seed) for a, n, d in zip(args, unique_names(args, datas), datas)]
    if not shared_labels(studies):
        listed = "; ".join(f"{s.arg}: {', '.join(s.chosen) or 'none with a completed trial'}" for s in studies)
        raise CompareError(f"no config label is in two of the studies, nothing to compare ({listed})")
    return studies


def shared_labels(studies: list[Study]) -> list[str]:
    """Labels in two studies or more, in the order they first appear."""
    labels = list(dict.fromkeys(label for s in studies for label in s.chosen))
    return [label for label in labels if sum(label in s.chosen for s in studies) >= 2]


def single_labels(studies: list[Study]) -> dict[str, list[str]]:
    """Study name -> its labels no other study has."""
    return {s.name: [lab for lab in s.chosen if sum(lab in t.chosen for t in studies) == 1] for s in studies}


# ---------------------------------------------------------------- differences


def _trial_means(values: Sequence[float], orders: Sequence[Sequence[int]]
                 ) -> tuple[int, Callable[[np.ndarray], np.ndarray]]:
    """(number of orders, batched mean over the trials of the resampled orders), as bootstrap.acc_statistic."""
    groups: dict[tuple[int, ...], list[float]] = {}
    for v, o in zip(values, orders):
        groups.setdefault(tuple(o), []).append(v)
    arrays = [np.array(v, dtype=float) for v in groups.values()]
    sums = np.array([np.nansum(a) for a in arrays])
    counts = np.array([np.sum(~np.isnan(a)) for a in arrays])

    def mean(picks: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums[picks].sum(axis=1) / counts[picks].sum(axis=1)

    return len(groups), mean


def unpaired_ci(a: tuple[list[float], list], b: tuple[list[float], list], n_resamples: int,
                confidence: float, seed: int) -> tuple[float, float]:
    """Percentile interval of mean(b) − mean(a), each study's orders resampled on their own; NaN below 2 orders."""
    na, fa = _trial_means(*a)
    nb, fb = _trial_means(*b)
    if na < MIN_ORDERS or nb < MIN_ORDERS:
        return float("nan"), float("nan")
    d = fb(bootstrap.resample_orders(nb, n_resamples, seed + 1)) - fa(bootstrap.resample_orders(na, n_resamples, seed))
    alpha = (1 - confidence) / 2
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(d, [alpha, 1 - alpha])
    return float(lo), float(hi)


def _per_trial(r: ConfigResult, key: str) -> list[float]:
    """Each completed trial's ACC or forgetting (test)."""
    return [stats.acc(A) if key == "acc" else stats.forgetting(A, o) for A, o in zip(r.matrices, r.orders)]


def _sub(x: float | None, y: float | None) -> float | None:
    return None if x is None or y is None or x != x or y != y else x - y


def pairable(a: Study, b: Study, ra: ConfigResult, rb: ConfigResult) -> bool:
    """Same benchmark (name and parameters, from the summaries) and 2 orders or more in common."""
    if a.benchmark is None or a.benchmark != b.benchmark:
        return False
    return len(set(ra.orders) & set(rb.orders)) >= MIN_ORDERS


def difference(label: str, a: Study, b: Study, n_resamples: int = bootstrap.DEFAULT_RESAMPLES,
               confidence: float = bootstrap.DEFAULT_CONFIDENCE, seed: int = bootstrap.DEFAULT_SEED) -> Difference:
    """Study b's config of ``label`` minus study a's."""
    ra, rb = a.chosen[label], b.chosen[label]
    ea, eb = ra.entry, rb.entry
    values: dict[str, float | None] = {"daopd": _sub(eb["aopd"], ea["aopd"]), "dmopd": _sub(eb["mopd"], ea["mopd"])}
    if pairable(a, b, ra, rb):
        c = paired.compare(rb.matrices, rb.orders, ra.matrices, ra.orders, n_resamples=n_resamples,
                           confidence=confidence, seed=seed)
        values.update({k: c[k] for k in ("dacc", "dacc_lo", "dacc_hi", "dforgetting", "dforgetting_lo",
                                         "dforgetting_hi", "p", "p_forgetting")})
        return Difference(label, b.name, a.name, "paired", int(c["R"]), values)
    for key in ("acc", "forgetting"):
        values[f"d{key}"] = _sub(eb[f"{key}_mean"], ea[f"{key}_mean"])
        lo, hi = unpaired_ci((_per_trial(ra, key), ra.orders), (_per_trial(rb, key), rb.orders), n_resamples,
                             confidence, seed)
        values[f"d{key}_lo"], values[f"d{key}_hi"] = lo, hi
    values["p"] = values["p_forgetting"] = None
    return Difference(label, b.name, a.name, "unpaired", min(ea["R"], eb["R"]), values)


def differences(studies: list[Study], n_resamples: int = bootstrap.DEFAULT_RESAMPLES,
                seed: int = bootstrap.DEFAULT_SEED) -> list[Difference]:
    """Per shared label, each study after the first that has it, minus that first one."""
    out = []
    for label in shared_labels(studies):
        having = [s for s in studies if label in s.chosen]
        out += [difference(label, having[0], s, n_resamples, seed=seed) for s in having[1:]]
    return out
