"""The rehearsal memory every replay method composes: a fixed budget of past samples on the device.

``ReplayBuffer`` holds at most ``size`` samples across all tasks (inputs,
labels, task ids and, for dark experience replay, the logits stored with each
sample) in preallocated device tensors. Two policies decide what stays:

- ``reservoir`` (Vitter's algorithm R, as ER/DER use it): the n-th sample
  seen replaces a uniformly drawn slot with probability size/n, so every
  sample seen so far is in the buffer with the same probability. A batch is
  inserted with tensor ops only: a draw per sample, then, where several
  samples of one batch draw the same slot, the later one wins (what the
  sequential algorithm does).
- ``class_balanced``: after an insertion, each class seen keeps an equal
  share of the budget (counts differ by at most one; the remainder goes to
  the lowest class ids), the kept samples of an over-full class drawn at
  random. Also tensor ops only (a sort by class and random key).

Both are seeded by their own generator (replay never moves the training
batches) and the whole state, generator included, is ``state_dict``, so a
checkpoint, a retry or a resume continues with exactly the same memory.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from methods.components import Component

Policy = Literal["reservoir", "class_balanced"]


class BufferParams(Component):
    """The rehearsal memory: its budget and what it keeps."""

    kind = "buffer"

    size: int = Field(200, ge=1, le=10_000_000, description="samples kept across all tasks (the memory budget)")
    policy: Policy = Field("reservoir", description="reservoir: every sample seen equally likely kept | class_balanced: equal share per class seen")
    batch_size: int | None = Field(None, ge=1, le=1_000_000, description="samples replayed per step (None: the training batch size)")


class ReplayBuffer:
    """At most ``size`` (x, y, task, logits) rows on ``device``, kept by ``policy``."""

    def __init__(self, size: int, policy: Policy, device: torch.device | str, seed: int):
        self.size, self.policy, self.device = size, policy, torch.device(device)
        self.x: torch.Tensor | None = None
        self.y = torch.zeros(size, dtype=torch.long, device=self.device)
        self.task = torch.zeros(size, dtype=torch.long, device=self.device)
        self.logits: torch.Tensor | None = None
        self.filled = 0       # rows in use (the first ``filled``)
        self.seen = 0         # samples offered so far (reservoir's n)
        self.generator = torch.Generator(device="cpu").manual_seed(seed + 611953)  # its own stream

    def __len__(self) -> int:
        return self.filled

    # ------------------------------------------------------------ insertion
    def add(self, x: torch.Tensor, y: torch.Tensor, task: int | torch.Tensor,
            logits: torch.Tensor | None = None) -> None:
        """Offer a batch; the policy decides which rows it takes. ``logits`` only if every add has them."""
        n = x.shape[0]
        if n == 0:
            return
        x, y = x.detach(), y.detach()
        self._allocate(x, logits)
        if self.policy == "reservoir":  # an int task is written as a fill, never made into a column
            self._reservoir(x, y, task.detach() if isinstance(task, torch.Tensor) else int(task), logits)
        else:
            tasks = task.detach() if isinstance(task, torch.Tensor) else torch.full((n,), int(task), device=x.device)
            self._balanced(x, y, tasks, logits)
        self.seen += n

    def _allocate(self, x: torch.Tensor, logits: torch.Tensor | None) -> None:
        if self.x is None:
            self.x = torch.zeros((self.size, *x.shape[1:]), dtype=x.dtype, device=self.device)
        if logits is not None and self.logits is None:
            self.logits = torch.zeros((self.size, logits.shape[1]), dtype=logits.dtype, device=self.device)

    def _write(self, slots: torch.Tensor, rows: torch.Tensor, x, y, tasks: int | torch.Tensor, logits) -> None:
        """Row rows[k] of the batch into slot slots[k] (slots distinct), every field."""
        def put(store: torch.Tensor, values: torch.Tensor) -> None:
            store.index_copy_(0, slots, values.index_select(0, rows).to(self.device, store.dtype))
        put(self.x, x)
        put(self.y, y)
        if isinstance(tasks, int):
            self.task.index_fill_(0, slots, tasks)
        else:
            put(self.task, tasks)
        if logits is not None:
            put(self.logits, logits.detach())

    def _reservoir(self, x, y, tasks: int | torch.Tensor, logits) -> None:
        n = x.shape[0]
        free = min(self.size - self.filled, n)
        if free > 0:  # the buffer is not full yet: the first rows go to the empty slots in turn
            slots = torch.arange(self.filled, self.filled + free, device=self.device)
            self._write(slots, torch.arange(free, device=x.device), x, y, tasks, logits)
            self.filled += free
        if free == n:
            return
        # sample i of the rest is the (seen + free + i + 1)-th offered: it draws j ~ U{0..seen+free+i}
        # and takes slot j if j < size; the later sample wins a slot drawn twice
        counts = torch.arange(free, n, dtype=torch.float64).add_(self.seen + 1)  # exact integers
        draws = torch.rand(n - free, generator=self.generator, dtype=torch.float64).mul_(counts).long()
        taken = torch.nonzero(draws < self.size).squeeze(1)
        if taken.numel() == 0:
            return
        winner = torch.full((self.size,), -1, dtype=torch.long).scatter_reduce_(
            0, draws.index_select(0, taken), taken.add_(free), "amax")  # slot -> the last row drawing it
        won = torch.nonzero(winner >= 0).squeeze(1)
        self._write(_host_to(won, self.device), _host_to(winner.index_select(0, won), x.device), x, y, tasks, logits)

    def _balanced(self, x, y, tasks, logits) -> None:
        # the candidates: what is kept now and the new batch, in one pool
        keep = self.filled
        pool_x = torch.cat([self.x[:keep], x.to(self.device)])
        pool_y = torch.cat([self.y[:keep], y.to(self.device)])
        pool_t = torch.cat([self.task[:keep], tasks.to(self.device)])
        pool_l = None if logits is None else torch.cat([self.logits[:keep], logits.detach().to(self.device)])
        classes, counts = torch.unique(pool_y, return_counts=True)  # (on CUDA its one sync: a size only it knows)
        # per class, counts within one of each other; the few-element water filling on the host (on CUDA each of
        # its rounds would read the device), the quotas back without a wait
        quota = _host_to(_shares(self.size, counts.cpu()), self.device)
        # rank of each candidate within its class in a random order: sort by (class, random key)
        key = _host_to(torch.rand(pool_y.shape[0], generator=self.generator), self.device)
        cls_index = torch.searchsorted(classes, pool_y)
        order = torch.argsort(cls_index.double() * 2.0 + key, stable=True)
        sorted_cls = cls_index[order]
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(order.shape[0], device=self.device) - starts[sorted_cls]
        chosen = order[rank < quota[sorted_cls]]
        chosen = chosen.sort().values  # the kept rows in pool order: older samples first
        m = chosen.shape[0]
        self.x[:m] = pool_x[chosen]
        self.y[:m] = pool_y[chosen]
        self.task[:m] = pool_t[chosen]
        if pool_l is not None:
            self.logits[:m] = pool_l[chosen]
        self.filled = m

    def replace(self, x: torch.Tensor, y: torch.Tensor, task: torch.Tensor,
                logits: torch.Tensor | None = None) -> None:
        """Set the contents outright (a method that selects its own exemplars: iCaRL's herding)."""
        n = x.shape[0]
        if n > self.size:
            raise ValueError(f"{n} exemplars do not fit a buffer of {self.size}")
        self._allocate(x, logits)
        if n:
            rows = torch.arange(n, device=self.device)
            self._write(rows, torch.arange(n, device=x.device), x.detach(), y.detach(), task.detach(), logits)
        self.filled = n

    # ------------------------------------------------------------ reading
    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """``n`` rows drawn uniformly without replacement (all of them if fewer): x, y, task[, logits]."""
        return self.rows(self.sample_index(n, generator))

    def sample_index(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The rows ``sample`` takes (the same draw), on the device."""
        n = min(n, self.filled)
        return _host_to(torch.randperm(self.filled, generator=generator or self.generator)[:n], self.device)

    def rows(self, idx: torch.Tensor, x: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """x, y, task[, logits] of rows ``idx`` (``x``: those inputs, already gathered by the caller)."""
        out = (self.x[idx] if x is None else x, self.y[idx], self.task[idx])
        return out + (self.logits[idx],) if self.logits is not None else out

    def class_counts(self, num_classes: int) -> list[int]:
        """How many kept samples of each label 0..num_classes-1 (for the trial record)."""
        return torch.bincount(self.y[:self.filled], minlength=num_classes)[:num_classes].tolist()

    def task_counts(self, num_tasks: int) -> list[int]:
        """How many kept samples came from each task identity."""
        return torch.bincount(self.task[:self.filled], minlength=num_tasks)[:num_tasks].tolist()

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"x": None if self.x is None else self.x.clone(), "y": self.y.clone(), "task": self.task.clone(),
                "logits": None if self.logits is None else self.logits.clone(), "filled": self.filled,
                "seen": self.seen, "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.x = None if state["x"] is None else state["x"].clone().to(self.device)
        self.y, self.task = state["y"].clone().to(self.device), state["task"].clone().to(self.device)
        self.logits = None if state["logits"] is None else state["logits"].clone().to(self.device)
        self.filled, self.seen = int(state["filled"]), int(state["seen"])
        self.generator.set_state(state["generator"])


def _host_to(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A tensor drawn on the host (the buffer's CPU generator: the same draws on every device) moved to
    ``device`` without waiting for it: from pinned memory, asynchronously (a plain copy from pageable memory
    would hold the host until the GPU caught up, every step). The pinned block is kept by PyTorch's host
    allocator until the copy is done."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _shares(size: int, counts: torch.Tensor) -> torch.Tensor:
    """Per class: an equal share of ``size`` (the remainder to the first classes), capped at what the class
    has; a class with fewer samples than its share leaves the rest to the others (water filling)."""
    k = counts.shape[0]
    quota = torch.zeros_like(counts)
    left, open_ = size, torch.ones(k, dtype=torch.bool, device=counts.device)
    for _ in range(k):  # at most one round per class (each round closes at least one class, or ends)
        n_open = int(open_.sum())
        if n_open == 0 or left <= 0:
            break
        share = torch.full((k,), left // n_open, device=counts.device)
        extra = torch.cumsum(open_.long(), 0) <= left % n_open
        share = (share + (extra & open_).long()) * open_.long()
        room = counts - quota
        give = torch.minimum(share, room)
        quota += give
        left -= int(give.sum())
        full = open_ & (quota >= counts)
        if not bool(full.any()):
            break
        open_ &= ~full
    return quota
