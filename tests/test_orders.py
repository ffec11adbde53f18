"""Task orders: the permutations a study runs, exactly as specs/orders.md lists them."""
import math
from collections import Counter

import pytest

from orchestrator.study.orders import (APD_ORDERS, apd_orders, check_permutation, latin_square, random_orders,
                                 williams_design)


def test_random_orders_are_seeded_distinct_permutations():
    a = random_orders(6, 10, seed=3)
    assert a == random_orders(6, 10, seed=3)
    assert a != random_orders(6, 10, seed=4)
    assert len(set(a)) == 10
    assert all(sorted(o) == list(range(6)) for o in a)


def test_random_orders_identity_first_and_capped_at_all_permutations():
    o = random_orders(3, 4, seed=0, include_identity=True)
    assert o[0] == (0, 1, 2) and len(o) == 4
    assert len(random_orders(3, 50, seed=0)) == math.factorial(3)


@pytest.mark.parametrize("order, message", [
    ([0, 1, 2], "has 3 entries but the benchmark has 4 tasks"),
    ([0, 1, 1, 3], r"missing \[2\], repeated \[1\]"),
    ([0, 1, 2, 7], r"missing \[3\], out of range \[7\]"),
])
def test_explicit_orders_are_validated(order, message):
    with pytest.raises(ValueError, match=message):
        check_permutation(order, 4)
    assert check_permutation([3, 1, 0, 2], 4) == (3, 1, 0, 2)


@pytest.mark.parametrize("t", [2, 3, 5, 8])
def test_latin_square_puts_every_task_in_every_position_once(t):
    rows = latin_square(t)
    assert len(rows) == t
    for column in zip(*rows):
        assert sorted(column) == list(range(t))


@pytest.mark.parametrize("t", [2, 3, 4, 5, 6, 7, 10])
def test_williams_design_balances_positions_and_predecessors(t):
    rows = williams_design(t)
    assert len(rows) == (t if t % 2 == 0 else 2 * t)
    for column in zip(*rows):
        assert Counter(column) == Counter({k: len(rows) // t for k in range(t)})
    pairs = Counter((r[i], r[i + 1]) for r in rows for i in range(t - 1))
    assert len(pairs) == t * (t - 1)  # every ordered pair occurs ...
    assert len(set(pairs.values())) == 1  # ... equally often


def test_apd_orders_are_the_published_lists():
    split = apd_orders("cifar100_split", 10)
    assert split[0] == tuple(range(10))
    assert split[1] == (1, 7, 4, 5, 2, 0, 8, 6, 9, 3)
    assert split[4] == (2, 9, 5, 4, 8, 0, 6, 1, 3, 7)
    superclass = apd_orders("cifar100_superclass", 20)
    assert superclass[3][:5] == (11, 9, 6, 5, 12) and superclass[4][-1] == 16
    for orders in APD_ORDERS.values():
        assert len(orders) == 5
        for o in orders:
            check_permutation(o, len(o))


def test_apd_orders_refuse_a_benchmark_of_another_length():
    with pytest.raises(ValueError, match="orders 10 tasks but the benchmark has 5"):
        apd_orders("cifar100_split", 5)
    with pytest.raises(ValueError, match="unknown APD order set"):
        apd_orders("cifar10", 5)
