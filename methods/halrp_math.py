"""HALRP's arithmetic as pure functions (specs/halrp.md steps 3-6 and 8), so tests can check them by hand.

Shapes: a weight is (out, in) or (out, in, kh, kw); "kernel positions" are the
kh*kw entries of a conv filter (1 for a linear layer).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch

EPS = 1e-20  # clamp of the least-squares denominators, as in the authors' code

PruneRule = Literal["strict", "paper"]


def least_squares_scales(w_free: torch.Tensor, w0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mR, mS): per-output then per-input scales fitting mR[j] mS[i] W0[j,i] to W~[j,i].

    mR[j] = <W~[j], W0[j]> / ||W0[j]||^2; then, with mR fixed,
    mS[i] = sum_j mR[j] W0[j,i] W~[j,i] / sum_j (mR[j] W0[j,i])^2; sums run over kernel positions too.
    """
    out_f, in_f = w0.shape[:2]
    wf, wb = w_free.reshape(out_f, in_f, -1), w0.reshape(out_f, in_f, -1)
    scale_out = (wf * wb).sum(dim=(1, 2)) / (wb * wb).sum(dim=(1, 2)).clamp_min(EPS)
    scaled = scale_out[:, None, None] * wb
    scale_in = (scaled * wf).sum(dim=(0, 2)) / (scaled * scaled).sum(dim=(0, 2)).clamp_min(EPS)
    return scale_out, scale_in


def residual_matrix(w_free: torch.Tensor, w0: torch.Tensor, scale_out: torch.Tensor,
                    scale_in: torch.Tensor) -> torch.Tensor:
    """D = W~ - mR * W0 * mS, averaged over the kernel positions of a conv: an out x in matrix."""
    out_f, in_f = w0.shape[:2]
    d = w_free.reshape(out_f, in_f, -1) - scale_out[:, None, None] * w0.reshape(out_f, in_f, -1) * scale_in[None, :, None]
    return d.mean(dim=2)


def svd(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """D = U diag(s) Vh, thin (k = min(out, in)), s descending, returned in D's dtype.

    Computed in float64 from the eigendecomposition of the smaller Gram
    matrix (D D^T or D^T D), then the other side's vectors as D^T U / s (or
    D V / s): on LeNet's 800 x 3200 layer that is ~10x faster on a CPU than
    LAPACK's SVD, and s agrees to ~1e-15 relative for the values that matter.
    Singular values below 1e-7 s_max (their score s^2 is < 1e-14 of the top
    one) keep their value but get zero vectors on the divided side, where
    dividing by them would only amplify rounding.
    """
    x = d.double()
    wide = x.shape[0] <= x.shape[1]
    gram = x @ x.T if wide else x.T @ x
    eigenvalues, vectors = torch.linalg.eigh(gram)
    s = eigenvalues.flip(0).clamp_min(0).sqrt()
    side = vectors.flip(1)
    other = (x.T @ side if wide else x @ side)
    usable = s > 1e-7 * s[0] if s.numel() and s[0] > 0 else torch.zeros_like(s, dtype=torch.bool)
    other = torch.where(usable[None, :], other / torch.where(usable, s, 1.0)[None, :], 0.0)
    u, v = (side, other) if wide else (other, side)
    return u.to(d.dtype), s.to(d.dtype), v.T.contiguous().to(d.dtype)


def select_ranks(spectra: Sequence[torch.Tensor], importances: Sequence[float], positions: Sequence[int],
                 approx_rate: float, upper_rank: int, method: Literal["importance", "flat"] = "importance") -> list[int]:
    """r_l for every layer from one global ranking of score_{l,k} = c_l F_l s_{l,k}^2.

    The scores of all layers are sorted descending (ties keep layer order);
    the kept set is the shortest prefix whose share of the total exceeds
    ``approx_rate`` (all of them when none does, e.g. approx_rate = 1); r_l is
    the number of layer l's scores kept, clamped to [1, min(upper_rank, len(s_l))].
    A zero (or non-finite) total gives every layer rank 1. ``flat``: every
    layer gets min(upper_rank, len(s_l)).
    """
    caps = [max(1, min(upper_rank, len(s))) for s in spectra]
    if method == "flat":
        return caps
    scores = torch.cat([c * float(f) * s.double() ** 2 for s, f, c in zip(spectra, importances, positions)])
    owner = torch.cat([torch.full((len(s),), layer) for layer, s in enumerate(spectra)])
    total = float(scores.sum())
    if not math.isfinite(total) or total <= 0:
        return [1] * len(spectra)
    ordered, index = torch.sort(scores, descending=True, stable=True)
    share = torch.cumsum(ordered, 0) / total
    above = torch.nonzero(share > approx_rate)
    kept = int(above[0]) + 1 if len(above) else len(scores)
    counts = torch.bincount(owner[index[:kept]], minlength=len(spectra))
    return [int(min(max(int(n), 1), cap)) for n, cap in zip(counts, caps)]


def factor_init(u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, S) = (U_r diag(sqrt(s_r)), diag(sqrt(s_r)) Vh_r): R S is the best rank-r approximation of D."""
    root = s[:rank].clamp_min(0).sqrt()
    return u[:, :rank] * root[None, :], root[:, None] * vh[:rank]


def pruning_rate(rule: PruneRule, bound: float, base: int, fixed: int, factors: int) -> float:
    """rho, the share of every task's factor entries (S and R) to zero; 0 when nothing needs pruning.

    ``fixed``: added parameters never pruned (scales, BN, heads, task biases);
    ``factors``: S and R entries, dense (pruned ones counted). The dense
    increment I = (fixed + factors) / base. Then
    - ``paper``: nothing when I < 1 - q, else rho = 1 - (1 - q) / I (the
      authors' l1_pruning, I from count_parameter(sparse=False): it counts the
      never-pruned parameters, but only factors are removed, so the model ends
      rho * fixed / base above the bound);
    - ``strict`` [ours]: nothing when I <= 1 - q, else
      rho = 1 - ((1 - q) base - fixed) / factors, the rate at which the
      increment after pruning is exactly 1 - q (1 when the never-pruned
      parameters alone exceed the bound: every factor goes).
    """
    if factors <= 0:
        return 0.0
    increment = (fixed + factors) / base
    if rule == "paper":
        return 0.0 if increment < 1.0 - bound else 1.0 - (1.0 - bound) / increment
    if increment <= 1.0 - bound:
        return 0.0
    return min(1.0, max(0.0, 1.0 - ((1.0 - bound) * base - fixed) / factors))


def prune_threshold(magnitudes: np.ndarray, rho: float, floor: float, rule: PruneRule) -> float:
    """Entries with |v| <= the returned value are zeroed (one task's S and R entries, all layers).

    ``paper``: max(rho-quantile of |v| (numpy's linear interpolation, as the
    authors' np.percentile), floor). ``strict``: the quantile as an order
    statistic, so that at most floor((1 - rho) n) entries survive: the
    bound then holds exactly, ties included.
    """
    v = np.sort(np.asarray(magnitudes, dtype=np.float64).ravel())
    n = v.size
    if n == 0:
        return floor
    if rule == "paper":
        return max(float(np.percentile(v, 100.0 * rho)), floor)
    keep = math.floor((1.0 - rho) * n)
    return floor if keep >= n else max(float(v[n - keep - 1]), floor)
