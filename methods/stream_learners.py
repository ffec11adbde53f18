"""Linear online learners for regression streams (specs/idbd.md), one loop for all rules.

Each learner predicts yhat = w.x, pays (y - yhat)^2 BEFORE updating (the
online error the paper averages), then updates. The loop is batched: state
arrays have a leading dimension B (hyperparameter values or seeds side by
side); time stays a Python loop because every step depends on the last, so
each step costs a handful of numpy calls on (B, d) arrays.

Rules (delta = y - yhat; the gradient of 0.5 delta^2 is -delta x):
- lms:      w += eta delta x
- rmsprop:  v = (1-gamma_g) v + gamma_g grad^2;  w -= eta grad / sqrt(v + eps)
- adam:     m = (1-gamma_m) m + gamma_m grad, v as rmsprop, both bias-corrected;
            w -= eta m_hat / sqrt(v_hat + eps)   (gamma_m = 1: no momentum)
- idbd:     beta += theta delta x h; alpha = exp(beta); w += alpha delta x;
            h = h max(0, 1 - alpha x^2) + alpha delta x
- autostep: v = max(|delta x h|, v + alpha x^2 (|delta x h| - v) / tau);
            alpha *= exp(mu delta x h / v) where v > 0; alpha /= max(sum alpha x^2, 1);
            w += alpha delta x; h = h (1 - alpha x^2) + alpha delta x
- oracle_sgd: lms on the relevant weights only, the others held at 0 (weight_flipping)
"""
from __future__ import annotations

from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from methods.protocol import TrainingDiverged
from methods.registry import METHODS

Rule = Literal["lms", "rmsprop", "adam", "idbd", "autostep", "oracle_sgd"]
TRACE_POINTS = 200


def run_rule(rule: Rule, x: np.ndarray, y: np.ndarray, hp: dict[str, np.ndarray],
             mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Run ``rule`` over the stream for B hyperparameter settings at once.

    x (T, d), y (T,), every hp value shape (B,). Returns squared errors (B, T),
    the step-size trace (B, TRACE_POINTS, d) sampled evenly over time, and
    ``diverged`` (B,): rows whose error became non-finite (their errors are
    NaN/inf from then on; the other rows are unaffected).
    """
    T, d = x.shape
    B = len(next(iter(hp.values())))
    col = {k: np.asarray(v, dtype=np.float64)[:, None] for k, v in hp.items()}  # (B, 1)
    w = np.zeros((B, d))
    sq = np.empty((B, T))
    every = max(1, T // TRACE_POINTS)
    trace = np.empty((B, -(-T // every), d))
    if rule in ("idbd", "autostep"):
        alpha = np.broadcast_to(col["alpha0"], (B, d)).copy()
        beta, h = np.log(alpha), np.zeros((B, d))
        v = np.zeros((B, d))
    if rule in ("rmsprop", "adam"):
        m, v = np.zeros((B, d)), np.zeros((B, d))
    keep = np.ones(d) if mask is None else mask.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging row must not stop the others
        _loop(rule, x, y, col, w, sq, trace, every, keep, locals())
    diverged = ~np.isfinite(sq).all(axis=1)
    return {"sq_err": sq, "step_trace": trace, "trace_every": np.array(every), "diverged": diverged}


def _loop(rule, x, y, col, w, sq, trace, every, keep, state) -> None:
    """The time loop; ``state`` carries the rule's arrays (alpha, beta, h, m, v)."""
    alpha, beta, h, m, v = (state.get(k) for k in ("alpha", "beta", "h", "m", "v"))
    B, d = w.shape
    for t in range(x.shape[0]):
        xt = x[t]
        delta = y[t] - w @ xt
        sq[:, t] = delta * delta
        dx = delta[:, None] * xt  # (B, d) = -grad
        if rule in ("lms", "oracle_sgd"):
            step = col["eta"] * keep
            w += step * dx
        elif rule == "rmsprop":
            v += col["gamma_g"] * (dx * dx - v)
            step = col["eta"] / np.sqrt(v + col["eps"])
            w += step * dx
        elif rule == "adam":
            m += col["gamma_m"] * (dx - m)
            v += col["gamma_g"] * (dx * dx - v)
            # bias corrections; with gamma_m = 1 the first is exactly 1 (no momentum)
            m_hat = m / (1 - (1 - col["gamma_m"]) ** (t + 1))
            v_hat = v / (1 - (1 - col["gamma_g"]) ** (t + 1))
            step = col["eta"] / np.sqrt(v_hat + col["eps"])
            w += step * m_hat
        elif rule == "idbd":
            beta += col["theta"] * dx * h
            alpha = np.exp(beta)
            w += alpha * dx
            h = h * np.maximum(0.0, 1 - alpha * xt * xt) + alpha * dx
            step = alpha
        else:  # autostep
            z = dx * h
            az = np.abs(z)
            v = np.maximum(az, v + alpha * xt * xt * (az - v) / col["tau"])
            alpha = alpha * np.exp(col["mu"] * np.divide(z, v, out=np.zeros_like(z), where=v > 0))
            alpha /= np.maximum((alpha * xt * xt).sum(axis=1, keepdims=True), 1.0)
            w += alpha * dx
            h = h * (1 - alpha * xt * xt) + alpha * dx
            step = alpha
        if t % every == 0:
            trace[:, t // every] = np.broadcast_to(step, (B, d))


class _StreamParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LmsParams(_StreamParams):
    eta: float = Field(0.01, gt=0.0, le=10.0, description="step-size")


class RmspropParams(_StreamParams):
    eta: float = Field(0.001, gt=0.0, le=10.0, description="step-size")
    gamma_g: float = Field(0.01, gt=0.0, le=1.0, description="rate of the squared-gradient average")
    eps: float = Field(1e-8, gt=0.0, le=1.0, description="added under the square root")


class AdamParams(RmspropParams):
    gamma_m: float = Field(0.1, gt=0.0, le=1.0, description="rate of the gradient average (1: no momentum)")


class IdbdParams(_StreamParams):
    theta: float = Field(0.01, ge=0.0, le=100.0, description="meta step-size (the IDBD meta-rate)")
    alpha0: float = Field(0.01, gt=0.0, le=10.0, description="initial step-size")


class AutostepParams(_StreamParams):
    mu: float = Field(0.01, ge=0.0, le=100.0, description="meta step-size")
    tau: float = Field(1e4, gt=0.0, description="time scale of the normaliser v")
    alpha0: float = Field(0.01, gt=0.0, le=10.0, description="initial step-size")


class StreamLearner:
    """A linear learner of a regression stream; the rule comes from the subclass."""

    kinds: ClassVar[tuple[str, ...]] = ("regression_stream",)
    rule: ClassVar[Rule]
    Params: ClassVar[type[BaseModel]]

    def __init__(self, params: BaseModel, ctx: Any = None):
        self.p = params

    def learn_stream(self, stream) -> dict[str, np.ndarray]:
        hp = {k: np.array([v]) for k, v in self.p.model_dump().items()}
        mask = None
        if self.rule == "oracle_sgd":
            if "relevant" not in stream.truth:
                raise ValueError("oracle_sgd needs a stream that knows its relevant weights (weight_flipping)")
            mask = stream.truth["relevant"]
        out = run_rule(self.rule, stream.x, stream.y, hp, mask)
        if out["diverged"][0]:
            first = int(np.argmax(~np.isfinite(out["sq_err"][0])))
            raise TrainingDiverged(f"{self.rule}: squared error became non-finite at step {first}; "
                                   "lower the step-size (eta, alpha0) or the meta-rate (theta, mu)")
        return {"sq_err": out["sq_err"][0], "step_trace": out["step_trace"][0], "trace_every": int(out["trace_every"])}


def _learner(name: str, method: str, rule: Rule, params: type[BaseModel], doc: str) -> type[StreamLearner]:
    cls = type(name, (StreamLearner,), {"rule": rule, "Params": params, "__doc__": doc})
    return METHODS.register(method, params)(cls)


# linear_* so a stream learner is never mistaken for finetune's optimiser of the same name
_learner("LinearSgd", "linear_sgd", "lms", LmsParams, "Linear SGD (LMS) with one step-size, for regression streams.")
_learner("LinearRmsprop", "linear_rmsprop", "rmsprop", RmspropParams, "Linear RMSProp as in the IDBD paper, for regression streams.")
_learner("LinearAdam", "linear_adam", "adam", AdamParams, "Linear Adam (bias-corrected; gamma_m = 1 is RMSProp), for regression streams.")
_learner("LinearIdbd", "linear_idbd", "idbd", IdbdParams, "Linear IDBD (Sutton 1992): meta-learned per-weight step-sizes, for regression streams.")
_learner("Autostep", "autostep", "autostep", AutostepParams, "Autostep (Mahmood et al. 2012): normalised IDBD, for regression streams.")
_learner("OracleSgd", "oracle_sgd", "oracle_sgd", LmsParams, "LMS on the relevant weights only (weight_flipping's oracle).")
