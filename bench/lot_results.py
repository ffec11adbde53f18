"""The tables of a loss-of-trainability study (specs/lot.md) from its trial records.

Reads results/<study>/trials/*.json (what `clorch run` wrote) and prints, per
Adam lr, one row per arm (the study's label): seeds, mean ONLINE training
accuracy (info_online_acc: the minibatch predictions made during training,
before each update, averaged over a task; then over all tasks and over the
last 5), its last epoch's (info_online_acc_last_epoch), mean a[t,t] (test =
the task's own images, right after training it), the dead-unit fraction per
hidden layer after the last task (info_dead_*), the scheduler's cools and
warms per layer summed over the tasks (series n_lot_cools/<layer>,
n_lot_warms/<layer>) and its decisions, and the trial's wall time. Each
figure is the mean over seeds; ``[lo, hi]`` gives the seeds' range. Then, for
each X with an X + scheduler arm (labels adam_<x> and adam_lot_<x>), the difference in mean
online accuracy, per seed.

Run: python bench/lot_results.py results/lot_random_label_mnist [--markdown]
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np


def own_task_accuracy(rec: dict) -> np.ndarray:
    rows = rec["matrix"]
    return np.array([np.nan if rows[p][j] is None else rows[p][j] for p, j in enumerate(rec["order"])], dtype=float)


def info_series(rec: dict, key: str) -> np.ndarray:
    return np.array([i.get(key, np.nan) for i in rec["task_info"]], dtype=float)


def lr_of(rec: dict) -> float:
    return float(rec["params"]["optimizer"]["lr"])


def arm_of(rec: dict) -> str:
    """The arm without the lr: the label (a grid over lr gives one label per lr config)."""
    return rec["label"]


def counts(rec: dict, kind: str) -> dict[str, float]:
    out = {}
    for name, values in (rec.get("series") or {}).items():
        if name.startswith(f"n_lot_{kind}/"):
            out[name.split("/", 1)[1]] = float(sum(v for v in values if v is not None))
    return out


def fmt(values: list[float], digits: int = 1) -> str:
    v = np.array(values, dtype=float)
    if v.size == 0 or np.isnan(v).all():
        return "–"
    mean = np.nanmean(v)
    if v.size == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{np.nanmin(v):.{digits}f}, {np.nanmax(v):.{digits}f}]"


def summarise(records: list[dict]) -> dict:
    out = {"seeds": sorted(r["seed"] for r in records)}
    online = [info_series(r, "info_online_acc") for r in records]
    out["online_all"] = [float(np.nanmean(o)) for o in online]
    out["online_last5"] = [float(np.nanmean(o[-5:])) for o in online]
    out["online_last_epoch"] = [float(np.nanmean(info_series(r, "info_online_acc_last_epoch"))) for r in records]
    out["att"] = [float(np.nanmean(own_task_accuracy(r))) for r in records]
    out["att_last5"] = [float(np.nanmean(own_task_accuracy(r)[-5:])) for r in records]
    dead_keys = sorted({k for r in records for k in r["task_info"][-1] if k.startswith("info_dead_")})
    out["dead"] = {k.removeprefix("info_dead_"): [r["task_info"][-1].get(k, np.nan) for r in records]
                   for k in dead_keys}
    for kind in ("cools", "warms"):
        per = [counts(r, kind) for r in records]
        layers = sorted({k for p in per for k in p})
        out[kind] = {layer: [p.get(layer, np.nan) for p in per] for layer in layers}
    out["decisions"] = [float(np.nansum(info_series(r, "info_lot_control_steps"))) for r in records]
    out["wall_s"] = [r.get("wall_s") or np.nan for r in records]
    out["per_seed_online"] = {r["seed"]: float(np.nanmean(info_series(r, "info_online_acc"))) for r in records}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("results", type=Path, help="results/<study> (with trials/*.json)")
    args = ap.parse_args()
    records = [json.loads(p.read_text()) for p in sorted((args.results / "trials").glob("*.json"))]
    records = [r for r in records if r.get("status") == "completed"]
    groups: dict[float, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        groups[lr_of(r)][arm_of(r)].append(r)
    print(f"{args.results}: {len(records)} completed trials; "
          f"wall time of the trials summed: {sum(r.get('wall_s') or 0 for r in records):.0f} s")
    for lr in sorted(groups):
        arms = groups[lr]
        print(f"\n### Adam lr {lr:g}\n")
        print("| arm | seeds | online acc, all tasks | online acc, last 5 | last epoch | a[t,t] | dead units "
              "(layer: fraction) after the last task | cools (layer: total) | warms | decisions | wall s |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        summaries = {arm: summarise(recs) for arm, recs in sorted(arms.items())}
        for arm, s in summaries.items():
            dead = ", ".join(f"{k}: {fmt(v, 2)}" for k, v in s["dead"].items()) or "–"
            cools = ", ".join(f"{k}: {fmt(v, 0)}" for k, v in s["cools"].items()) or "–"
            warms = ", ".join(f"{k}: {fmt(v, 0)}" for k, v in s["warms"].items()) or "–"
            decisions = fmt(s["decisions"], 0) if s["cools"] else "–"
            print(f"| {arm} | {len(s['seeds'])} | {fmt(s['online_all'])} | {fmt(s['online_last5'])} | "
                  f"{fmt(s['online_last_epoch'])} | {fmt(s['att'])} | {dead} | {cools} | {warms} | {decisions} | "
                  f"{fmt(s['wall_s'], 0)} |")
        pairs = [(x, x.replace("adam", "adam_lot", 1)) for x in summaries
                 if "_lot" not in x and x.replace("adam", "adam_lot", 1) in summaries]
        if pairs:
            print("\n| X | X + scheduler | Δ online acc (all tasks), per seed | Δ last 5, per seed | "
                  "scheduler's cools / warms (all layers) |")
            print("|---|---|---|---|---|")
            for x, y in pairs:
                a, b = summaries[x], summaries[y]
                seeds = sorted(set(a["per_seed_online"]) & set(b["per_seed_online"]))
                d_all = [b["online_all"][b["seeds"].index(s)] - a["online_all"][a["seeds"].index(s)] for s in seeds]
                d_last = [b["online_last5"][b["seeds"].index(s)] - a["online_last5"][a["seeds"].index(s)]
                          for s in seeds]
                c = sum(np.nanmean(v) for v in b["cools"].values())
                w = sum(np.nanmean(v) for v in b["warms"].values())
                print(f"| {x} | {y} | " + ", ".join(f"{d:+.2f}" for d in d_all) + " | "
                      + ", ".join(f"{d:+.2f}" for d in d_last) + f" | {c:.0f} / {w:.0f} |")


if __name__ == "__main__":
    main()
