"""The related-stretch vs unrelated-jump breakdown of an update_magnitude study on mixed_similarity_mnist.

Reads results/<study>/trials/*.json (plain JSON; no torch) and prints, per
arm (method label):

- ACC (mean final accuracy) and -BWT (mean over all but the last task of
  a[k,k] - a[M,k], the spec's "Forgetting"; summary.json's Forgetting takes
  the max over the rows instead of a[k,k]);
- for every position after the first, whether the arriving task is *related*
  (same stretch as its predecessor: a 10-degree rotation) or a *jump* (a
  new stretch: another permutation), and per kind: a[t,t] (accuracy on the
  task just learned), its final accuracy a[M,t], the blocks trained k_t,
  and the gate's s_t per block (input to output), all averaged over trials;
- the paired differences (same order, same seed) frozen - initialized and
  adaptive - the better of the two, per kind, with their standard error
  over the pairs.

Binomial noise: one accuracy p on n test images has SE sqrt(p (1 - p) / n);
it is printed for the mean accuracies beside the spread over trials.

    .venv/bin/python bench/update_magnitude_stream.py update_magnitude_mixed_mlp [--stretch 3]
"""
from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np


def load(study: str, results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((results / study / "trials").glob("*.json"))]


def per_trial(rec: dict, stretch: int) -> dict:
    A = np.array([[np.nan if v is None else v for v in row] for row in rec["matrix"]], dtype=float)
    order = rec["order"]
    M = len(order)
    final = A[M - 1]
    out = {"acc": float(np.mean(final[order])),
           "neg_bwt": float(np.mean([A[p, order[p]] - final[order[p]] for p in range(M - 1)])),
           "kinds": {}}
    info = rec["task_info"]
    series = rec.get("series", {}).get("s_t")
    for p in range(M):
        kind = "first" if p == 0 else ("related" if order[p] // stretch == order[p - 1] // stretch else "jump")
        s = None if series is None or p == 0 else [np.nan if v is None else v for v in series[p]]
        out["kinds"].setdefault(kind, []).append({
            "just": A[p, order[p]], "final": final[order[p]], "k": info[p].get("info_k_t", np.nan), "s": s})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--results", default="results", type=Path)
    ap.add_argument("--stretch", type=int, default=3, help="tasks per stretch (len(angles))")
    a = ap.parse_args()
    recs = [r for r in load(a.study, a.results) if r["status"] == "completed"]
    n_test = recs[0]["test_sizes"][0]
    by_label: dict[str, dict[tuple, dict]] = defaultdict(dict)
    for r in recs:
        by_label[r["label"]][(tuple(r["order"]), r["seed"])] = per_trial(r, a.stretch)
    labels = list(by_label)
    print(f"{a.study}: {len(recs)} completed trials; {n_test} test images per task "
          f"(binomial SE of one accuracy p: sqrt(p(1-p)/{n_test}), e.g. {100 * math.sqrt(0.9 * 0.1 / n_test):.2f} at 90%)")
    print("\n| arm | trials | ACC | -BWT | a[t,t] related | a[t,t] jump | final related | final jump | k_t related | k_t jump |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for lab in labels:
        trials = list(by_label[lab].values())
        acc = np.array([t["acc"] for t in trials])
        fg = np.array([t["neg_bwt"] for t in trials])
        cells = []
        for field in ("just", "final"):
            for kind in ("related", "jump"):
                v = np.array([e[field] for t in trials for e in t["kinds"].get(kind, [])])
                cells.append(f"{v.mean():.2f} ± {v.std(ddof=1) if len(v) > 1 else 0:.2f}" if len(v) else "–")
        for kind in ("related", "jump"):
            v = np.array([e["k"] for t in trials for e in t["kinds"].get(kind, [])])
            cells.append(f"{v.mean():.2f}" if len(v) else "–")
        print(f"| {lab} | {len(trials)} | {acc.mean():.2f} ± {acc.std(ddof=1):.2f} | {fg.mean():.2f} ± {fg.std(ddof=1):.2f} | "
              + " | ".join(cells) + " |")
    print("\n(mean ± std over the arrivals of that kind across trials)")

    print("\ngate s_t per block (input -> output), mean over arrivals [min, max]:")
    for lab in labels:
        for kind in ("related", "jump"):
            s = np.array([e["s"] for t in by_label[lab].values() for e in t["kinds"].get(kind, []) if e["s"] is not None])
            if len(s):
                print(f"  {lab:16s} {kind:8s} n={len(s):3d} mean " + " ".join(f"{x:+.2f}" for x in np.nanmean(s, 0))
                      + f"   block min {np.nanmin(s):+.2f} max {np.nanmax(s):+.2f}"
                      + f"   per-arrival min over blocks: [{np.nanmin(np.nanmin(s, 1)):+.2f}, {np.nanmax(np.nanmin(s, 1)):+.2f}]")

    def mean_of(lab: str, field: str, kind: str) -> float:
        return float(np.mean([e[field] for t in by_label[lab].values() for e in t["kinds"].get(kind, [])]))

    def paired(lhs: str, rhs: str, field: str, kind: str):
        d = np.array([e[field] - o["kinds"][kind][i][field] for key, t in by_label[lhs].items()
                      if (o := by_label[rhs].get(key)) is not None for i, e in enumerate(t["kinds"].get(kind, []))])
        return (d.mean(), d.std(ddof=1) / math.sqrt(len(d)), len(d)) if len(d) > 1 else (math.nan, math.nan, len(d))

    print("\npaired differences (same order and seed, same arrival), mean ± SE over arrivals; for adaptive, "
          "against the better (by mean) of frozen and initialized on that kind:")
    for lhs in [lab for lab in labels if lab == "frozen" or lab.startswith("adaptive")]:
        cells = []
        for field in ("just", "final"):
            for kind in ("related", "jump"):
                if not any(kind in t["kinds"] for t in by_label[lhs].values()):
                    continue
                rhs = "initialized" if lhs == "frozen" else max(("frozen", "initialized"),
                                                                key=lambda r: mean_of(r, field, kind))
                m, se, n = paired(lhs, rhs, field, kind)
                cells.append(f"{field} {kind} vs {rhs}: {m:+.2f} ± {se:.2f} (n={n})")
        print(f"  {lhs}: " + "; ".join(cells))
    print("\npaired ACC differences (same order and seed), mean ± SE over trials:")
    for lhs in [lab for lab in labels if lab != "initialized"]:
        cells = []
        for rhs in ("initialized", "frozen"):
            if rhs == lhs or rhs not in by_label:
                continue
            d = np.array([t["acc"] - by_label[rhs][k]["acc"] for k, t in by_label[lhs].items() if k in by_label[rhs]])
            cells.append(f"vs {rhs} {d.mean():+.2f} ± {d.std(ddof=1) / math.sqrt(len(d)):.2f} (n={len(d)})")
        print(f"  {lhs}: " + "; ".join(cells))


if __name__ == "__main__":
    main()
