"""Non-stationary regression streams of specs/idbd.md (benchmark kind ``regression_stream``).

A stream is one long sequence of (x_t, y_t); a learner predicts y_t from x_t,
pays the squared error, then updates. There are no tasks and no orders: the
trial's seed draws the realisation, so seeds average over streams.

- weight_flipping: d = 20, x ~ N(0, I); w*_1..15 = 0 ("irrelevant"),
  w*_16..20 = +-target_scale ("relevant", signs drawn at start). Every
  ``flip_every`` samples one relevant weight, chosen uniformly, flips sign.
  y = w*.x, no noise. The paper: 200,000 steps, targets +-1 (scale variant:
  +-0.1, +-1, +-10).
- rate_tracking: d = 1, x = 1; y_t = z_t + N(0, noise^2), z_{t+1} = z_t +
  N(0, sigma_t^2), sigma_t redrawn from U(0, sigma_max) every ``redraw_every``
  steps. The optimal step-size (a Kalman gain, noise = 1) is
  alpha*_t = (-sigma_t^2 + sqrt(sigma_t^4 + 4 sigma_t^2)) / 2, recorded with the stream.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from datasets.benchmark import Benchmark
from datasets.common import LoadContext
from datasets.registry import BENCHMARKS


@dataclass(frozen=True)
class Stream:
    """One realisation: inputs (T, d), targets (T,), and the truth behind them for plots."""

    name: str
    x: np.ndarray
    y: np.ndarray
    truth: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return self.y.shape[0]

    @property
    def dim(self) -> int:
        return self.x.shape[1]


class _StreamParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: ClassVar[str] = "regression_stream"
    steps: int = Field(200_000, ge=100, le=100_000_000, description="length of the stream")

    @property
    def num_tasks(self) -> int:
        return 1  # one stream: the only "order" is (0,)


class WeightFlippingParams(_StreamParams):
    dim: int = Field(20, ge=2, le=100_000, description="input dimension d")
    relevant: int = Field(5, ge=1, description="non-zero target weights (the last ones)")
    flip_every: int = Field(20, ge=1, description="samples between sign flips of one relevant weight")
    target_scale: float = Field(1.0, gt=0.0, description="magnitude of the relevant weights (+-scale)")


class RateTrackingParams(_StreamParams):
    steps: int = Field(1_000_000, ge=100, le=100_000_000, description="length of the stream")
    redraw_every: int = Field(50_000, ge=1, description="steps between redraws of the drift sigma_t")
    sigma_max: float = Field(3.0, gt=0.0, description="sigma_t ~ U(0, sigma_max)")
    noise: float = Field(1.0, gt=0.0, description="std of the observation noise")


def optimal_rate(sigma: np.ndarray) -> np.ndarray:
    """alpha* for a random walk of drift std sigma observed under unit noise."""
    s2 = np.asarray(sigma, dtype=np.float64) ** 2
    return (-s2 + np.sqrt(s2 * s2 + 4 * s2)) / 2


def weight_flipping_stream(p: WeightFlippingParams, seed: int) -> Stream:
    if p.relevant > p.dim:
        raise ValueError(f"relevant={p.relevant} exceeds dim={p.dim}")
    rng = np.random.default_rng([seed, 1])
    x = rng.standard_normal((p.steps, p.dim))
    w = np.zeros(p.dim)
    w[-p.relevant:] = p.target_scale * rng.choice([-1.0, 1.0], p.relevant)
    n_blocks = -(-p.steps // p.flip_every)
    flips = rng.integers(p.dim - p.relevant, p.dim, size=n_blocks)  # which weight flips after each block
    w_blocks = np.empty((n_blocks, p.dim))
    for b in range(n_blocks):  # per block of flip_every samples, not per sample
        w_blocks[b] = w
        w[flips[b]] = -w[flips[b]]
    w_t = np.repeat(w_blocks, p.flip_every, axis=0)[: p.steps]
    y = np.einsum("td,td->t", x, w_t)
    relevant = np.zeros(p.dim, dtype=bool)
    relevant[-p.relevant:] = True
    return Stream("weight_flipping", x, y, {"relevant": relevant, "w_star_blocks": w_blocks})


def rate_tracking_stream(p: RateTrackingParams, seed: int) -> Stream:
    rng = np.random.default_rng([seed, 2])
    n_blocks = -(-p.steps // p.redraw_every)
    sigma = np.repeat(rng.uniform(0.0, p.sigma_max, n_blocks), p.redraw_every)[: p.steps]
    z = np.cumsum(np.concatenate([[0.0], sigma[:-1] * rng.standard_normal(p.steps - 1)]))
    y = z + p.noise * rng.standard_normal(p.steps)
    return Stream("rate_tracking", np.ones((p.steps, 1)), y, {"sigma": sigma, "alpha_star": optimal_rate(sigma)})


@BENCHMARKS.register("weight_flipping", WeightFlippingParams)
def weight_flipping(p: WeightFlippingParams, ctx: LoadContext | None = None) -> Benchmark:
    """Linear regression whose 5 relevant weights flip sign; 15 irrelevant ones stay 0 (specs/idbd.md)."""
    if p.relevant > p.dim:
        raise ValueError(f"relevant={p.relevant} exceeds dim={p.dim}")
    return Benchmark("weight_flipping", (), (p.dim,), kind="regression_stream",
                     make_stream=partial(weight_flipping_stream, p))


@BENCHMARKS.register("rate_tracking", RateTrackingParams)
def rate_tracking(p: RateTrackingParams, ctx: LoadContext | None = None) -> Benchmark:
    """1-D noisy random walk whose drift changes every 50,000 steps (specs/idbd.md)."""
    return Benchmark("rate_tracking", (), (1,), kind="regression_stream",
                     make_stream=partial(rate_tracking_stream, p))
