"""Linear IDBD and Autostep on regression streams (specs/idbd.md), against hand computation."""
import math

import numpy as np
import pytest

import datasets
from methods.stream_learners import run_rule

X = np.array([[1.0, 2.0, -1.0], [1.0, 2.0, -1.0]])  # the same sample twice
Y = np.array([1.0, 1.0])


def test_linear_idbd_two_steps_by_hand():
    out = run_rule("idbd", X, Y, {"theta": np.array([0.5]), "alpha0": np.array([0.1])})
    # step 1: delta = 1, h = 0 so beta stays log 0.1; w = 0.1 x; h = alpha delta x = 0.1 x
    # step 2: yhat = 0.1 + 0.4 + 0.1 = 0.6 -> squared error 0.16
    assert out["sq_err"][0].tolist() == pytest.approx([1.0, 0.16])
    # beta += theta delta x h = 0.5 * 0.4 * [0.1, 0.4, 0.1] -> alpha = 0.1 exp([0.02, 0.08, 0.02])
    alpha = 0.1 * np.exp([0.02, 0.08, 0.02])
    assert out["step_trace"][0, 1] == pytest.approx(alpha, rel=1e-9)


def test_linear_idbd_weights_and_traces_by_hand():
    """Run three steps: the third prediction checks w and h after step 2."""
    x = np.vstack([X, X[:1]])
    y = np.array([1.0, 1.0, 1.0])
    out = run_rule("idbd", x, y, {"theta": np.array([0.5]), "alpha0": np.array([0.1])})
    a = 0.1 * np.exp([0.02, 0.08, 0.02])
    w = np.array([0.1, 0.2, -0.1]) + a * 0.4 * np.array([1.0, 2.0, -1.0])  # w += alpha delta x
    yhat = w @ np.array([1.0, 2.0, -1.0])
    assert out["sq_err"][0, 2] == pytest.approx((1 - yhat) ** 2, rel=1e-9)


def test_autostep_two_steps_by_hand():
    out = run_rule("autostep", np.vstack([X, X[:1]]), np.array([1.0, 1.0, 1.0]),
                   {"mu": np.array([1.0]), "tau": np.array([1e4]), "alpha0": np.array([0.1])})
    # step 1: h = v = 0, so alpha stays 0.1 (sum alpha x^2 = 0.6 < 1); w = 0.1 x; h = 0.1 x
    # step 2: delta = 0.4; z = delta x h = [0.04, 0.16, 0.04]; v = max(|z|, ~0) = |z|
    #   alpha *= exp(mu z / v) = e -> 0.27183 each; sum alpha x^2 = 1.631 > 1 -> alpha = 1/6
    assert out["step_trace"][0, 1] == pytest.approx([1 / 6] * 3, rel=1e-9)
    # w = 0.1 x + (1/6)(0.4) x = (0.1 + 0.0667) x -> yhat = 6 * 0.16667 = 1.0, error 0 at step 3
    assert out["sq_err"][0].tolist() == pytest.approx([1.0, 0.16, 0.0], abs=1e-12)


def test_batched_rows_equal_single_runs():
    """Vectorised over hyperparameters: each row is its own single run (up to BLAS summation order)."""
    s = datasets.load_benchmark("weight_flipping", {"steps": 3000}).make_stream(1)
    thetas = np.array([1e-4, 1e-3, 1e-2])
    batch = run_rule("idbd", s.x, s.y, {"theta": thetas, "alpha0": np.full(3, 0.01)})["sq_err"]
    for i, th in enumerate(thetas):
        single = run_rule("idbd", s.x, s.y, {"theta": np.array([th]), "alpha0": np.array([0.01])})["sq_err"][0]
        assert np.allclose(batch[i], single, rtol=1e-12, atol=1e-12)


def test_idbd_learns_small_steps_on_constant_weights_large_on_flipping_ones():
    s = datasets.load_benchmark("weight_flipping", {"steps": 20_000}).make_stream(0)
    out = run_rule("idbd", s.x, s.y, {"theta": np.array([0.002]), "alpha0": np.array([0.01])})
    final = out["step_trace"][0, -1]
    relevant = s.truth["relevant"]
    assert final[relevant].min() > 5 * final[~relevant].max()
    assert final[~relevant].max() < 0.01 < final[relevant].min()  # moved from alpha0 both ways


def test_rmsprop_and_adam_first_steps_by_hand():
    """The paper's RMSProp has no bias correction; Adam (gamma_m = 1: no momentum) has."""
    hp = {"eta": np.array([0.003]), "gamma_g": np.array([0.01]), "eps": np.array([0.0])}
    # step 1: delta = 1, -grad = x; RMSProp v = 0.01 x^2, w = 0.003 x / (0.1 |x|) = 0.03 sign(x)
    #   -> yhat = 0.03 + 0.06 + 0.03 = 0.12, error 0.88^2
    rms = run_rule("rmsprop", X, Y, hp)["sq_err"][0]
    assert rms.tolist() == pytest.approx([1.0, 0.88 ** 2])
    # Adam: v_hat = v / (1 - 0.99) = x^2, m_hat = x -> w = 0.003 sign(x), yhat = 0.012
    adam = run_rule("adam", X, Y, {**hp, "gamma_m": np.array([1.0])})["sq_err"][0]
    assert adam.tolist() == pytest.approx([1.0, 0.988 ** 2])


def test_a_diverging_setting_leaves_the_rest_of_the_batch_alone():
    s = datasets.load_benchmark("weight_flipping", {"steps": 3000}).make_stream(1)
    out = run_rule("idbd", s.x, s.y, {"theta": np.array([1e-3, 10.0]), "alpha0": np.array([0.01, 0.5])})
    assert out["diverged"].tolist() == [False, True]
    assert np.isfinite(out["sq_err"][0]).all()
