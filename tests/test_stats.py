"""Order-robustness statistics (orchestrator/stats.py) against specs/orders.md.

Every expected number below is worked out by hand in the comments; the asserts
hold literal values. Convention: A[i, j] = accuracy (%) on task IDENTITY j after
training the i-th task of the order (row = position, column = identity).
The main matrix uses the order (2, 0, 1) so that any mix-up between a task's
position and its identity changes the result.
"""
import math

import numpy as np
import pytest

from orchestrator.results import stats

nan = float("nan")

# Order (2, 0, 1): pos(2) = 0, pos(0) = 1, pos(1) = 2.
ORDER_201 = (2, 0, 1)
#                 task0 task1 task2      (columns are identities)
A_201 = np.array([[nan, nan, 90.0],   # after training task 2 (position 0)
                  [80.0, nan, 95.0],  # after training task 0 (position 1): task 2 went UP to 95
                  [60.0, 70.0, 85.0]])  # after training task 1 (position 2, final)

# Same trial with forward-transfer evaluation switched on: the entries of tasks
# not yet trained are filled (deliberately high, so that reading them by mistake
# as "history" or "just learned" would change every statistic).
A_201_FWD = np.array([[99.0, 98.0, 90.0],
                      [80.0, 97.0, 95.0],
                      [60.0, 70.0, 85.0]])

# Two more trials for the across-orders statistics (one seed each).
ORDER_012 = (0, 1, 2)
A_012 = np.array([[90.0, nan, nan],
                  [85.0, 88.0, nan],
                  [70.0, 80.0, 92.0]])
# ACC = (70+80+92)/3 = 242/3 = 80.667; BWT = ((70-90) + (80-88))/2 = -14
# Forgetting = ((90-70) + (88-80))/2 = 14; Task.Acc = (90+88+92)/3 = 90

ORDER_120 = (1, 2, 0)  # pos(1) = 0, pos(2) = 1, pos(0) = 2
A_120 = np.array([[nan, 94.0, nan],
                  [nan, 90.0, 89.0],
                  [91.0, 76.0, 83.0]])
# ACC = (91+76+83)/3 = 250/3 = 83.333; BWT = ((76-94) + (83-89))/2 = -12
# Forgetting = ((94-76) + (89-83))/2 = 12; Task.Acc = (91+94+89)/3 = 274/3 = 91.333

# A second seed of order (2, 0, 1).
A_201_SEED2 = np.array([[nan, nan, 86.0],
                        [84.0, nan, 88.0],
                        [70.0, 74.0, 81.0]])
# ACC = (70+74+81)/3 = 75; BWT = ((81-86) + (70-84))/2 = -9.5
# Forgetting = ((88-81) + (84-70))/2 = 10.5; Task.Acc = (84+74+86)/3 = 244/3 = 81.333


# ---------------------------------------------------------------- per trial


@pytest.mark.parametrize("A", [A_201, A_201_FWD], ids=["unseen-nan", "forward-transfer-filled"])
def test_per_trial_statistics_follow_task_identity_not_position(A):
    """ACC/BWT/forgetting/plasticity of one trial, order (2, 0, 1): columns are
    task identities, so a position/identity mix-up (or reading forward-transfer
    entries taken before a task was trained) gives different numbers."""
    # Final row, by identity.
    assert list(stats.final_accuracies(A)) == [60.0, 70.0, 85.0]
    # ACC = (60 + 70 + 85) / 3 = 215/3
    assert stats.acc(A) == pytest.approx(71.6666667)
    # P_j = A[pos(j), j]: P_0 = A[1,0] = 80, P_1 = A[2,1] = 70, P_2 = A[0,2] = 90
    # (the diagonal A[i,i] would be [nan/99, nan/97, 85] instead).
    assert list(stats.plasticity(A, ORDER_201)) == [80.0, 70.0, 90.0]
    # Task.Acc = (80 + 70 + 90) / 3 = 80
    assert stats.task_acc(A, ORDER_201) == pytest.approx(80.0)
    # BWT over tasks not last in the order (2 and 0; task 1 is last):
    #   task 2: 85 - 90 = -5 ; task 0: 60 - 80 = -20 ; mean = -12.5
    assert stats.bwt(A, ORDER_201) == pytest.approx(-12.5)
    # Forgetting over the same tasks, max over rows pos(j) .. T-1 (final row excluded):
    #   task 2: max(A[0,2], A[1,2]) = max(90, 95) = 95 (NOT the just-learned 90); 95 - 85 = 10
    #   task 0: max(A[1,0]) = 80; 80 - 60 = 20
    #   mean = 15   (just-learned instead of the max would give 12.5)
    assert stats.forgetting(A, ORDER_201) == pytest.approx(15.0)
    # min-ACC over tasks not last, min over the boundaries AFTER the task was learned:
    #   task 2: min(A[1,2], A[2,2]) = min(95, 85) = 85 ; task 0: min(A[2,0]) = 60 ; mean = 72.5
    # WC-ACC = (1/3) a_T + (2/3) min-ACC, a_T = A[2, 1] = 70 (the task just learned): 70/3 + 145/3 = 71.6666667
    # FWT: no init_row -> NaN
    assert stats.trial_stats(A, ORDER_201) == pytest.approx(
        {"acc": 71.6666667, "bwt": -12.5, "forgetting": 15.0, "task_acc": 80.0, "min_acc": 72.5,
         "wc_acc": 71.6666667, "fwt": nan}, nan_ok=True)


def test_identity_order_trial():
    """Sanity check with the identity order (0, 1, 2), used below across orders."""
    # ACC = 242/3; BWT = (-20 - 8)/2; forgetting = (20 + 8)/2; Task.Acc = 270/3
    # min-ACC = (min(85, 70) + min(80)) / 2 = 75; WC-ACC = 92/3 + (2/3) 75 = 242/3
    assert stats.trial_stats(A_012, ORDER_012) == pytest.approx(
        {"acc": 80.6666667, "bwt": -14.0, "forgetting": 14.0, "task_acc": 90.0, "min_acc": 75.0,
         "wc_acc": 80.6666667, "fwt": nan}, nan_ok=True)


def test_unevaluated_intermediate_entry_is_skipped_by_forgetting():
    """A task not evaluated at some intermediate step does not count in the max
    of its history; the other statistics do not look at that entry."""
    A = A_201.copy()
    A[1, 2] = nan  # task 2 not evaluated after training task 0
    # Forgetting: task 2: max(90, NaN) -> 90; 90 - 85 = 5 ; task 0: 80 - 60 = 20 ; mean 12.5
    assert stats.forgetting(A, ORDER_201) == pytest.approx(12.5)
    # Unchanged: ACC 215/3, BWT -12.5, Task.Acc 80
    assert stats.acc(A) == pytest.approx(71.6666667)
    assert stats.bwt(A, ORDER_201) == pytest.approx(-12.5)
    assert stats.task_acc(A, ORDER_201) == pytest.approx(80.0)


def test_missing_just_learned_entry_drops_that_task_from_bwt_and_task_acc():
    """If the accuracy right after learning a task is missing, that task is left
    out of BWT and Task.Acc, while forgetting still uses its later history."""
    A = A_201.copy()
    A[0, 2] = nan  # task 2 not evaluated right after it was trained
    # P = [80, 70, NaN]; Task.Acc = (80 + 70) / 2 = 75
    p = stats.plasticity(A, ORDER_201)
    assert list(p[:2]) == [80.0, 70.0] and math.isnan(p[2])
    assert stats.task_acc(A, ORDER_201) == pytest.approx(75.0)
    # BWT: task 2: 85 - NaN skipped ; task 0: 60 - 80 = -20 ; mean -20
    assert stats.bwt(A, ORDER_201) == pytest.approx(-20.0)
    # Forgetting: task 2: max(NaN, 95) = 95; 95 - 85 = 10 ; task 0: 20 ; mean 15
    assert stats.forgetting(A, ORDER_201) == pytest.approx(15.0)


def test_nan_in_final_row_is_skipped():
    """A task whose final accuracy is missing is left out of ACC, BWT and
    forgetting (not counted as zero, not poisoning the mean)."""
    A = A_201.copy()
    A[2, 0] = nan  # task 0 not evaluated at the end
    # ACC = (70 + 85) / 2 = 77.5
    assert stats.acc(A) == pytest.approx(77.5)
    # BWT: task 2: 85 - 90 = -5 ; task 0: NaN skipped ; mean -5
    assert stats.bwt(A, ORDER_201) == pytest.approx(-5.0)
    # Forgetting: task 2: 95 - 85 = 10 ; task 0: NaN skipped ; mean 10
    assert stats.forgetting(A, ORDER_201) == pytest.approx(10.0)
    # Task.Acc does not use the final row of task 0: (80 + 70 + 90)/3 = 80
    assert stats.task_acc(A, ORDER_201) == pytest.approx(80.0)


def test_statistic_with_nothing_left_is_nan():
    """When every entry a statistic needs is missing it reports NaN, not 0."""
    A = np.array([[75.0, nan],
                  [nan, 88.0]])  # order (0, 1); final accuracy of task 0 missing
    # BWT / forgetting only have task 0, whose final entry is NaN.
    assert math.isnan(stats.bwt(A, (0, 1)))
    assert math.isnan(stats.forgetting(A, (0, 1)))
    assert stats.acc(A) == pytest.approx(88.0)
    assert stats.task_acc(A, (0, 1)) == pytest.approx((75.0 + 88.0) / 2)  # 81.5
    # Final row entirely missing: ACC is NaN.
    assert math.isnan(stats.acc(np.array([[75.0, nan], [nan, nan]])))


def test_single_task_has_no_bwt_or_forgetting():
    """T = 1: no task precedes the last one, so BWT and forgetting are NaN;
    ACC and Task.Acc are the single accuracy."""
    A = np.array([[70.0]])
    assert stats.acc(A) == pytest.approx(70.0)
    assert stats.task_acc(A, (0,)) == pytest.approx(70.0)
    assert math.isnan(stats.bwt(A, (0,)))
    assert math.isnan(stats.forgetting(A, (0,)))
    out = stats.config_stats([A], [(0,)])
    assert out["R"] == 1 and out["trials"] == 1
    assert out["opd_per_task"] == [0.0]
    assert math.isnan(out["bwt_mean"]) and math.isnan(out["bwt_std"])
    assert math.isnan(out["forgetting_mean"])


# ------------------------------------------------------------ across orders


def test_opd_is_max_minus_min_per_task_over_orders():
    """OPD_j = max_r - min_r of task j's final accuracy (rows = orders)."""
    finals = np.array([[70.0, 80.0, 92.0],
                       [60.0, 70.0, 85.0],
                       [91.0, 76.0, 83.0]])
    # task 0: 91 - 60 = 31 ; task 1: 80 - 70 = 10 ; task 2: 92 - 83 = 9
    assert list(stats.opd(finals)) == pytest.approx([31.0, 10.0, 9.0])


def test_opd_skips_missing_final_accuracies():
    """An order whose final accuracy on a task is missing does not count for
    that task's OPD; a task with no value at all gets NaN."""
    finals = np.array([[50.0, nan, nan],
                       [70.0, 40.0, nan],
                       [65.0, 44.0, nan]])
    # task 0: 70 - 50 = 20 ; task 1: 44 - 40 = 4 ; task 2: nothing -> NaN
    out = stats.opd(finals)
    assert list(out[:2]) == pytest.approx([20.0, 4.0])
    assert math.isnan(out[2])


def test_config_stats_over_three_orders():
    """R = 3 orders, one seed each: OPD per task, AOPD, MOPD, and the mean and
    sample std (ddof=1) of ACC, BWT, forgetting and Task.Acc across orders."""
    out = stats.config_stats([A_012, A_201, A_120], [ORDER_012, ORDER_201, ORDER_120])
    assert out["R"] == 3 and out["trials"] == 3
    # Final accuracies by identity: (0,1,2) -> [70, 80, 92]; (2,0,1) -> [60, 70, 85];
    # (1,2,0) -> [91, 76, 83].  OPD = [91-60, 80-70, 92-83] = [31, 10, 9]
    assert out["opd_per_task"] == pytest.approx([31.0, 10.0, 9.0])
    assert out["aopd"] == pytest.approx(16.6666667)  # (31 + 10 + 9) / 3 = 50/3
    assert out["mopd"] == pytest.approx(31.0)
    # ACC per order: 726/9, 645/9, 750/9 ; mean 707/9 = 78.5556
    # deviations 19/9, -62/9, 43/9 ; squares sum (361 + 3844 + 1849)/81 = 6054/81
    # std = sqrt(6054/81 / 2) = sqrt(3027)/9 = 6.11313
    assert out["acc_mean"] == pytest.approx(78.5555556)
    assert out["acc_std"] == pytest.approx(6.1131310)
    # BWT: -14, -12.5, -12 ; mean -38.5/3 = -12.8333
    # deviations -7/6, 2/6, 5/6 ; squares sum 78/36 ; std = sqrt(78/72) = 1.040833
    assert out["bwt_mean"] == pytest.approx(-12.8333333)
    assert out["bwt_std"] == pytest.approx(1.0408330)
    # Forgetting: 14, 15, 12 ; mean 41/3 = 13.6667
    # deviations 1/3, 4/3, -5/3 ; squares sum 42/9 ; std = sqrt(21/9) = 1.527525
    assert out["forgetting_mean"] == pytest.approx(13.6666667)
    assert out["forgetting_std"] == pytest.approx(1.5275252)
    # Task.Acc: 810/9, 720/9, 822/9 ; mean 784/9 = 87.1111
    # deviations 26/9, -64/9, 38/9 ; squares sum 6216/81 ; std = sqrt(3108)/9 = 6.19438
    assert out["task_acc_mean"] == pytest.approx(87.1111111)
    assert out["task_acc_std"] == pytest.approx(6.1943822)


def test_config_stats_single_order_has_zero_opd_and_nan_std():
    """R = 1: there is no spread between orders (OPD all zero) and a standard
    deviation of a single value is NaN, not 0."""
    out = stats.config_stats([A_201], [ORDER_201])
    assert out["R"] == 1 and out["trials"] == 1
    assert out["opd_per_task"] == [0.0, 0.0, 0.0]
    assert out["aopd"] == 0.0 and out["mopd"] == 0.0
    assert out["acc_mean"] == pytest.approx(71.6666667)
    assert out["bwt_mean"] == pytest.approx(-12.5)
    for key in ("acc_std", "bwt_std", "forgetting_std", "task_acc_std"):
        assert math.isnan(out[key]), key


def test_config_stats_averages_seeds_of_one_order_before_opd():
    """Two seeds of order (2, 0, 1) plus order (0, 1, 2): OPD measures the
    spread between orders, so the seeds' final accuracies are averaged first;
    R counts distinct orders while `trials` counts every run."""
    out = stats.config_stats([A_201, A_201_SEED2, A_012], [ORDER_201, (2, 0, 1), ORDER_012])
    assert out["R"] == 2
    assert out["trials"] == 3
    # (2,0,1): mean of [60, 70, 85] and [70, 74, 81] = [65, 72, 83]
    # (0,1,2): [70, 80, 92]
    # OPD = [70-65, 80-72, 92-83] = [5, 8, 9]
    # (without averaging the seeds it would be [70-60, 80-70, 92-81] = [10, 10, 11])
    assert out["opd_per_task"] == pytest.approx([5.0, 8.0, 9.0])
    assert out["aopd"] == pytest.approx(7.3333333)  # 22/3
    assert out["mopd"] == pytest.approx(9.0)


def test_config_stats_seed_repeats_mean_and_std_run_over_all_trials():
    """With repeated seeds, ACC/BWT mean and std run over all trials (the
    documented convention of config_stats), not over per-order averages."""
    out = stats.config_stats([A_201, A_201_SEED2, A_012], [ORDER_201, ORDER_201, ORDER_012])
    # ACC per trial: 215/3, 75, 242/3 = 645/9, 675/9, 726/9 ; mean 682/9 = 75.7778
    # deviations -37/9, -7/9, 44/9 ; squares (1369 + 49 + 1936)/81 = 3354/81
    # std = sqrt(3354/162) = 4.550132
    # (per-order means instead would be 73.3333 and 80.6667: mean 77.0, std 5.18545)
    assert out["acc_mean"] == pytest.approx(75.7777778)
    assert out["acc_std"] == pytest.approx(4.5501323)
    # BWT per trial: -12.5, -9.5, -14 ; mean -12 ; deviations -0.5, 2.5, -2
    # squares 0.25 + 6.25 + 4 = 10.5 ; std = sqrt(5.25) = 2.291288
    assert out["bwt_mean"] == pytest.approx(-12.0)
    assert out["bwt_std"] == pytest.approx(2.2912878)


@pytest.mark.parametrize("matrices, orders", [
    ([], []),
    ([A_201], []),
    ([A_201, A_012], [ORDER_201]),
    ([A_201], [ORDER_201, ORDER_012]),
])
def test_config_stats_rejects_mismatched_or_empty_input(matrices, orders):
    """One order per matrix and at least one trial, else a clear ValueError."""
    with pytest.raises(ValueError, match="one order per matrix"):
        stats.config_stats(matrices, orders)


# ---------------------------------------------------------------- within-sequence and transfer


def test_learning_curve_averages_the_tasks_seen_so_far_by_identity():
    # Order (2, 0, 1), forward-transfer entries filled (they must be ignored):
    #   after position 0: seen {2}: 90 ; after 1: seen {2, 0}: (80 + 95)/2 = 87.5 ; after 2: ACC = 215/3
    for A in (A_201, A_201_FWD):
        assert list(stats.learning_curve(A, ORDER_201)) == pytest.approx([90.0, 87.5, 71.6666667])


def test_min_accuracy_is_taken_after_learning_not_at_it():
    # Task 2 learned at position 0 with 90, later 95 then 85: min over rows 1..2 = 85 (the 90 does not count).
    # Task 0 learned at position 1: min over row 2 = 60. Task 1 is last: NaN.
    m = stats.min_accuracies(A_201, ORDER_201)
    assert m[0] == 60.0 and m[2] == 85.0 and math.isnan(m[1])
    # A dip that recovers: task 0 (order 0, 1, 2) goes 90 -> 40 -> 70: min-ACC sees the 40, forgetting does not.
    A = np.array([[90.0, nan, nan], [40.0, 88.0, nan], [70.0, 80.0, 92.0]])
    # min-ACC = (40 + 80)/2 = 60 ; WC-ACC = 92/3 + (2/3) 60 = 30.6666667 + 40 = 70.6666667
    assert stats.min_acc(A, ORDER_012) == pytest.approx(60.0)
    assert stats.wc_acc(A, ORDER_012) == pytest.approx(70.6666667)


def test_min_and_worst_case_accuracy_of_a_single_task():
    A = np.array([[77.0]])
    assert math.isnan(stats.min_acc(A, (0,)))
    assert stats.wc_acc(A, (0,)) == 77.0  # WC-ACC_1 = a_1


def test_forward_transfer_against_the_untrained_network():
    # Order (2, 0, 1), tasks not first: 0 (pos 1) and 1 (pos 2).
    #   task 0: A[0, 0] = 99 (after training task 2 only) - init 50 = 49
    #   task 1: A[1, 1] = 97 (after tasks 2, 0) - init 10 = 87 ; FWT = (49 + 87)/2 = 68
    init = [50.0, 10.0, 30.0]
    assert stats.fwt(A_201_FWD, ORDER_201, init) == pytest.approx(68.0)
    assert math.isnan(stats.fwt(A_201_FWD, ORDER_201, None))      # no init row recorded
    assert math.isnan(stats.fwt(A_201, ORDER_201, init))          # unseen tasks not evaluated
    assert stats.trial_stats(A_201_FWD, ORDER_201, init)["fwt"] == pytest.approx(68.0)


def test_binomial_standard_error_of_an_accuracy_and_of_acc():
    # p = 90% on n = 100: 100 sqrt(0.9 * 0.1 / 100) = 100 * 0.03 = 3 points
    assert stats.binomial_se(90.0, 100) == pytest.approx(3.0)
    # ACC of A_012, finals 70, 80, 92 on n = 100, 400, 25:
    #   0.7*0.3/100 = 0.0021 ; 0.8*0.2/400 = 0.0004 ; 0.92*0.08/25 = 0.002944 ; sum = 0.005444
    #   SE = 100 sqrt(0.005444) / 3 = 100 * 0.0737835 / 3 = 2.459450
    assert stats.acc_binomial_se(A_012, [100, 400, 25]) == pytest.approx(2.459450, abs=1e-5)
    assert math.isnan(stats.acc_binomial_se(A_012, None))


def test_config_stats_new_keys_over_three_orders():
    out = stats.config_stats([A_201, A_012, A_120], [ORDER_201, ORDER_012, ORDER_120],
                             test_sizes=[[100, 100, 100], None, [100, 100, 100]])
    # min-ACC: A_201 72.5 ; A_012 75 ; A_120 (order 1, 2, 0): task 1 min(90, 76) = 76, task 2 min(83) = 83 -> 79.5
    #   mean = (72.5 + 75 + 79.5)/3 = 75.6666667
    assert out["min_acc_mean"] == pytest.approx(75.6666667)
    # WC-ACC: A_201 71.6666667 ; A_012 80.6666667 ; A_120 a_T = A[2, 0] = 91: 91/3 + (2/3) 79.5 = 83.3333333
    #   mean = (71.6666667 + 80.6666667 + 83.3333333)/3 = 78.5555556
    assert out["wc_acc_mean"] == pytest.approx(78.5555556)
    assert math.isnan(out["fwt_mean"])
    # curves: A_201 [90, 87.5, 71.667] ; A_012 [90, 86.5, 80.667] ; A_120 [94, 89.5, 83.333]
    assert out["curve"] == pytest.approx([91.3333333, 87.8333333, 78.5555556])
    # SE of A_201 (finals 60, 70, 85, n = 100): 0.0024 + 0.0021 + 0.001275 = 0.005775 -> 100 sqrt(.)/3 = 2.533114
    # SE of A_120 (finals 91, 76, 83): 0.000819 + 0.001824 + 0.001411 = 0.004054 -> 2.122368
    # pooled = sqrt((2.533114^2 + 2.122368^2)/2) = sqrt((6.416667 + 4.504444)/2) = 2.336783 (A_012 has no sizes)
    assert out["acc_binomial_se"] == pytest.approx(2.336783, abs=1e-5)
