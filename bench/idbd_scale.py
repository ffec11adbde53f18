"""The scale variant of weight-flipping (specs/idbd.md, Fig. 4): targets +-0.1, +-1, +-10.

For each target scale, sweeps IDBD's meta-rate theta (1e-8 .. 10) and SGD's
step eta on the same streams (3 seeds), vectorised over the grid, and reports
each method's best value. Scaling the targets by s multiplies the errors, and
so IDBD's meta-gradient, by s^2: the best theta should move by about s^-2 (two
decades per factor of 10), while SGD's best eta should not move. The grid edges
are flagged when an optimum sits on one.
Run: .venv/bin/python bench/idbd_scale.py [--steps N]
"""
from __future__ import annotations

import argparse

import numpy as np

import datasets
from methods.stream_learners import run_rule

THETAS = np.geomspace(1e-8, 10, 28)
ETAS = np.geomspace(1e-3, 0.09, 14)


def best(rule: str, grid: np.ndarray, hp: dict, streams) -> tuple[float, float, bool]:
    mse = np.zeros(len(grid))
    for s in streams:
        out = run_rule(rule, s.x, s.y, hp)
        with np.errstate(invalid="ignore"):
            mse += np.where(out["diverged"], np.inf, out["sq_err"].mean(axis=1))
    mse /= len(streams)
    i = int(np.argmin(mse))
    return float(grid[i]), float(mse[i]), i in (0, len(grid) - 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    print(f"weight_flipping, {args.steps} steps, {args.seeds} seeds; best = lowest mean squared error")
    print(f"{'scale':>6s} {'IDBD theta*':>12s} {'IDBD mse':>10s} {'SGD eta*':>10s} {'SGD mse':>10s}  mse/scale^2 (IDBD, SGD)")
    rows = []
    for scale in (0.1, 1.0, 10.0):
        bench = datasets.load_benchmark("weight_flipping", {"steps": args.steps, "target_scale": scale})
        streams = [bench.make_stream(seed) for seed in range(args.seeds)]
        th, th_mse, th_edge = best("idbd", THETAS, {"theta": THETAS, "alpha0": np.full(len(THETAS), 0.01)}, streams)
        eta, eta_mse, eta_edge = best("lms", ETAS, {"eta": ETAS}, streams)
        rows.append((scale, th, eta))
        edge = lambda e: " (grid edge!)" if e else ""
        print(f"{scale:6g} {th:12.3g}{edge(th_edge)} {th_mse:10.4g} {eta:10.3g}{edge(eta_edge)} {eta_mse:10.4g}  "
              f"{th_mse / scale ** 2:.4g}, {eta_mse / scale ** 2:.4g}", flush=True)
    th_move = np.log10(rows[-1][1] / rows[0][1])
    eta_move = np.log10(rows[-1][2] / rows[0][2])
    print(f"from scale 0.1 to 10: IDBD's best theta moves {th_move:+.1f} decades (theory: -4.0), "
          f"SGD's best eta {eta_move:+.1f} decades (theory: 0)")


if __name__ == "__main__":
    main()
