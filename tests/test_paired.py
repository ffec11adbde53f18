"""Paired comparisons against a baseline (orchestrator.results.paired): hand-computed differences,
the sign flips enumerated by hand, Holm's adjustment, and the summary's "paired" block."""
import math

import numpy as np
import pytest

from orchestrator.results import paired
from orchestrator.results.records import ClassificationRecord, to_json_row
from orchestrator.results.summary import build_summary
from orchestrator.study.schema import Config, TrialSpec

nan = float("nan")
O1, O2, O3 = (0, 1, 2), (2, 1, 0), (1, 0, 2)


def flat(order, learned, final):
    """A matrix whose seen entries are ``learned`` until the final row, all ``final``:
    ACC = final and forgetting = learned - final, whatever the order."""
    T = len(order)
    A = np.full((T, T), nan)
    for i in range(T):
        for j in order[:i + 1]:
            A[i, j] = learned if i < T - 1 else final
    return A


# Baseline ACC on O1, O2, O3: 70 (two seeds: 68 and 72), 72, 74; forgetting 90 - ACC: 20, 18, 16.
BASE = [(O1, flat(O1, 90, 68)), (O1, flat(O1, 90, 72)), (O2, flat(O2, 90, 72)), (O3, flat(O3, 90, 74))]
# Config ACC 73, 71, 78: d = +3, -1, +4 (mean 2); forgetting 17, 19, 12: d = -3, +1, -4 (mean -2).
CONF = [(O1, flat(O1, 90, 73)), (O2, flat(O2, 90, 71)), (O3, flat(O3, 90, 78))]


def split(pairs):
    return [A for _, A in pairs], [o for o, _ in pairs]


def test_order_values_average_the_seeds_of_an_order():
    v = paired.order_values(*split(BASE))
    assert v[O1] == {"acc": 70.0, "forgetting": 20.0} and v[O3] == {"acc": 74.0, "forgetting": 16.0}


def test_mean_difference_and_the_eight_sign_flips_by_hand():
    out = paired.compare(*split(CONF), *split(BASE))
    assert out["R"] == 3 and out["orders_left_out"] == 0
    assert out["dacc"] == pytest.approx(2.0) and out["dforgetting"] == pytest.approx(-2.0)
    # d = (3, -1, 4), observed |sum| = 6. The 8 sign vectors and |s . d|:
    #   +++ 6*  ++- 2   +-+ 8*  +-- 0   -++ 0   -+- 8*  --+ 2   --- 6*
    # four reach 6: p = 4/8 = 0.5 (forgetting: d = -(3, -1, 4), the same flips: 0.5)
    assert out["p"] == 0.5 and out["p_exact"] is True and out["p_forgetting"] == 0.5
    # the interval is a percentile interval of resampled means: within [min d, max d], around the mean
    assert -1.0 <= out["dacc_lo"] <= 2.0 <= out["dacc_hi"] <= 4.0


def test_all_positive_differences_reach_the_smallest_p_of_three_orders():
    # d = (2, 3, 5), |sum| = 10: only +++ and --- reach it (+-+ 4, -++ 6, ++- 0, ...): p = 2/8
    p, exact = paired.sign_flip_p([2.0, 3.0, 5.0])
    assert (p, exact) == (0.25, True)
    assert paired.sign_flip_p([0.0, 0.0, 0.0]) == (1.0, True)  # no difference at all
    assert math.isnan(paired.sign_flip_p([])[0])


def test_many_orders_use_a_seeded_monte_carlo_with_the_plus_one_correction():
    d = np.linspace(1, 2, 20)  # all positive: about 2 / 2^20 of the sign vectors reach |sum|
    p, exact = paired.sign_flip_p(d, seed=3)
    assert not exact and 1 / 20001 <= p <= 3 / 20001
    assert paired.sign_flip_p(d, seed=3) == (p, exact)
    # exactly 16 orders are still enumerated (2^16 sign vectors)
    assert paired.sign_flip_p(np.ones(16))[1] is True and paired.sign_flip_p(np.ones(16))[0] == 2 / 2 ** 16


def test_bootstrap_interval_is_seeded_and_degenerate_for_one_order():
    d = [3.0, -1.0, 4.0]
    assert paired.bootstrap_mean_ci(d, seed=1) == paired.bootstrap_mean_ci(d, seed=1)
    picks = np.random.default_rng(1).integers(0, 3, size=(2000, 3))
    means = np.array(d)[picks].mean(axis=1)
    assert paired.bootstrap_mean_ci(d, seed=1) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert paired.bootstrap_mean_ci([5.0]) == (5.0, 5.0)


def test_configs_missing_some_orders_are_paired_on_the_common_orders_only():
    out = paired.compare(*split(CONF[:2]), *split(BASE))  # the config lacks O3
    # d = (3, -1): mean 1; sign flips ++ 2, +- 4, -+ -4, -- -2: all reach |2|, p = 1
    assert out["R"] == 2 and out["orders_left_out"] == 1
    assert out["dacc"] == pytest.approx(1.0) and out["p"] == 1.0


def test_holm_by_hand():
    # sorted 0.01, 0.03, 0.04 (m = 3): 3*0.01 = 0.03; 2*0.03 = 0.06; 1*0.04 = 0.04 -> max(0.06, 0.04) = 0.06
    assert paired.holm([0.01, 0.04, 0.03, nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(paired.holm([0.01, 0.04, 0.03, nan])[3])
    assert paired.holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1


# ---------------------------------------------------------------- the summary's block


def records(config_id, label, pairs, sizes=(100, 100, 100)):
    out = []
    for k, (order, A) in enumerate(pairs):
        spec = TrialSpec(f"{config_id}-{k}", config_id, label, "finetune", {}, order, k, k, "task_incremental", False)
        rows = [{"position": i, "task_id": t, "row": to_json_row(A[i]), "train_s": 0.1, "eval_s": 0.1}
                for i, t in enumerate(order)]
        rows[0]["test_sizes"] = list(sizes)
        out.append(ClassificationRecord.from_rows(spec, rows, len(order), status="completed"))
    return out


def test_summary_has_a_paired_block_against_the_baseline():
    configs = [Config("b-1", "base", "finetune", {}, {}), Config("c-1", "other", "finetune", {}, {}),
               Config("d-1", "third", "finetune", {}, {})]
    better = [(O1, flat(O1, 90, 72)), (O2, flat(O2, 90, 75)), (O3, flat(O3, 90, 79))]  # d = 2, 3, 5
    recs = records("b-1", "base", BASE) + records("c-1", "other", CONF) + records("d-1", "third", better)
    summary = build_summary("s", {"baseline": "base"}, configs, recs)
    block = summary["paired"]
    assert block["baseline"] == "base" and block["baseline_config_id"] == "b-1" and block["n_comparisons"] == 2
    by = {c["config_id"]: c for c in block["configs"]}
    assert by["c-1"]["dacc"] == pytest.approx(2.0) and by["c-1"]["p"] == 0.5
    assert by["d-1"]["dacc"] == pytest.approx(10 / 3) and by["d-1"]["p"] == 0.25
    # Holm over the family {0.5, 0.25}: 2*0.25 = 0.5; max(0.5, 1*0.5) = 0.5
    assert by["d-1"]["p_holm"] == pytest.approx(0.5) and by["c-1"]["p_holm"] == pytest.approx(0.5)
    # binomial noise of the difference: sqrt(se_c^2 + se_b^2) from each config's pooled ACC SE
    se = math.hypot(summary["configs"][1]["acc_binomial_se"], summary["configs"][0]["acc_binomial_se"])
    assert by["c-1"]["dacc_binomial_se"] == pytest.approx(se)
    assert by["c-1"]["within_binomial_noise"] == (2.0 < 2 * se)
    # default baseline: the first config's label
    assert build_summary("s", {}, configs, recs)["paired"]["baseline"] == "base"
