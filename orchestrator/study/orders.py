"""Task orders: permutations of task identities 0..T-1 (specs/orders.md).

Each orders model of the study file generates its own permutations
(``generate(num_tasks)``), so a new kind of orders is one class here and one
entry in ``OrdersSpec``; nothing else names the kinds.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

import numpy as np
from pydantic import Field

from orchestrator.study.base import Strict

Order = tuple[int, ...]

# The five APD orders used by HALRP's CIFAR scripts (Yoon et al. 2020).
APD_ORDERS: dict[str, list[Order]] = {
    "cifar100_split": [
        tuple(range(10)),
        (1, 7, 4, 5, 2, 0, 8, 6, 9, 3),
        (7, 0, 5, 1, 8, 4, 3, 6, 2, 9),
        (5, 8, 2, 9, 0, 4, 3, 7, 6, 1),
        (2, 9, 5, 4, 8, 0, 6, 1, 3, 7),
    ],
    "cifar100_superclass": [
        tuple(range(20)),
        (15, 12, 5, 9, 7, 16, 18, 17, 1, 0, 3, 8, 11, 14, 10, 6, 2, 4, 13, 19),
        (17, 1, 19, 18, 12, 7, 6, 0, 11, 15, 10, 5, 13, 3, 9, 16, 4, 14, 2, 8),
        (11, 9, 6, 5, 12, 4, 0, 10, 13, 7, 14, 3, 15, 16, 8, 1, 2, 19, 18, 17),
        (6, 14, 0, 11, 12, 17, 13, 4, 9, 1, 7, 19, 8, 10, 3, 15, 18, 5, 2, 16),
    ],
}


def check_permutation(order: list[int] | Order, num_tasks: int) -> Order:
    """Return ``order`` as a tuple, or raise ValueError saying what is wrong with it."""
    order = tuple(int(t) for t in order)
    if len(order) != num_tasks:
        raise ValueError(f"has {len(order)} entries but the benchmark has {num_tasks} tasks")
    missing = sorted(set(range(num_tasks)) - set(order))
    if missing:
        dup = sorted({t for t in order if order.count(t) > 1})
        bad = sorted(t for t in order if not 0 <= t < num_tasks)
        detail = f"out of range {bad}" if bad else f"repeated {dup}"
        raise ValueError(f"is not a permutation of 0..{num_tasks - 1}: missing {missing}, {detail}")
    return order


def random_orders(num_tasks: int, count: int, seed: int, include_identity: bool = False) -> list[Order]:
    """``count`` distinct seeded permutations (the identity first if asked).

    Distinct because a repeated order adds no information about order spread;
    when ``count`` exceeds T! every permutation is returned once.
    """
    import math

    count = min(count, math.factorial(num_tasks))
    rng = np.random.default_rng(seed)
    orders: list[Order] = [tuple(range(num_tasks))] if include_identity else []
    seen = set(orders)
    while len(orders) < count:
        order = tuple(int(t) for t in rng.permutation(num_tasks))
        if order not in seen:
            seen.add(order)
            orders.append(order)
    return orders


def latin_square(num_tasks: int) -> list[Order]:
    """T cyclic orders: every task appears in every position exactly once."""
    return [tuple((r + p) % num_tasks for p in range(num_tasks)) for r in range(num_tasks)]


def williams_design(num_tasks: int) -> list[Order]:
    """A balanced Latin square (Williams 1949).

    Besides each task taking each position once, each ordered pair of tasks is
    adjacent (a directly before b) equally often: once for even T over T orders;
    for odd T the square and its mirror are both used (2T orders), twice each.
    """
    t = num_tasks
    first, lo, hi = [0], 1, t - 1
    for k in range(1, t):  # 0, 1, T-1, 2, T-2, ...
        if k % 2:
            first.append(lo); lo += 1
        else:
            first.append(hi); hi -= 1
    rows = [tuple((x + r) % t for x in first) for r in range(t)]
    if t % 2:
        rows += [tuple(reversed(row)) for row in rows]
    return rows


def apd_orders(name: str, num_tasks: int) -> list[Order]:
    if name not in APD_ORDERS:
        raise ValueError(f"unknown APD order set {name!r}; choose {', '.join(APD_ORDERS)}")
    orders = APD_ORDERS[name]
    if len(orders[0]) != num_tasks:
        raise ValueError(f"APD set {name!r} orders {len(orders[0])} tasks but the benchmark has {num_tasks}")
    return list(orders)


# ---------------------------------------------------------------- the study file's orders section
class RandomOrders(Strict):
    kind: Literal["random"]
    count: int = Field(ge=1, le=100_000)
    seed: int = 0
    include_identity: bool = False

    def generate(self, num_tasks: int) -> list[Order]:
        return random_orders(num_tasks, self.count, self.seed, self.include_identity)


class ExplicitOrders(Strict):
    kind: Literal["explicit"]
    orders: list[list[int]] = Field(min_length=1)

    def generate(self, num_tasks: int) -> list[Order]:
        return [check_permutation(x, num_tasks) for x in self.orders]


class ApdOrders(Strict):
    kind: Literal["apd"]
    set: Literal[tuple(APD_ORDERS)]  # type: ignore[valid-type]

    def generate(self, num_tasks: int) -> list[Order]:
        return apd_orders(self.set, num_tasks)


class LatinSquareOrders(Strict):
    kind: Literal["latin_square"]

    def generate(self, num_tasks: int) -> list[Order]:
        return latin_square(num_tasks)


class WilliamsOrders(Strict):
    kind: Literal["williams"]

    def generate(self, num_tasks: int) -> list[Order]:
        return williams_design(num_tasks)


ORDERS_MODELS = (RandomOrders, ExplicitOrders, ApdOrders, LatinSquareOrders, WilliamsOrders)
OrdersSpec = Annotated[Union[ORDERS_MODELS], Field(discriminator="kind")]  # type: ignore[valid-type]
ORDER_KINDS: tuple[str, ...] = tuple(m.model_fields["kind"].annotation.__args__[0] for m in ORDERS_MODELS)
