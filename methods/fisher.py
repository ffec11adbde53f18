"""Diagonal Fisher information of a network's parameters on one task's data.

Per-sample gradients through torch.func (vmap over grad), so the diagonal is
the exact mean of squared per-sample gradients, not the square of batch-mean
gradients that cheaper implementations use.

Memory: a chunk of c samples holds c per-sample gradients, c x (number of
parameters) values, at once. The chunk is chosen from a budget
(``FISHER_MEMORY_BYTES``, 256 MiB) given the parameter count, at most 256
samples: an MLP 784-256-256 still takes about 250 at a time, the HALRP LeNet (3.0M
parameters, 12 MB of gradients per sample) 22 instead of 256, and its peak
fell from +5.8 GiB to +0.5 GiB (bench/fisher_memory.py, 256 samples). The
gradients are squared and weighted in place, and the expected Fisher takes one
class at a time (it held every class's gradients at once), so nothing else of
that size is held. The chunk changes only the order of the float additions.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch.func import functional_call, grad, vmap

from methods.network import TaskNetwork

FisherKind = Literal["empirical", "expected"]

FISHER_MEMORY_BYTES = 256 * 2**20
"""Bytes of per-sample gradients one chunk may hold (the chunk's size follows from the parameter count)."""
MAX_CHUNK = 256


def fisher_chunk(num_params: int, itemsize: int, budget: int = FISHER_MEMORY_BYTES, most: int = MAX_CHUNK) -> int:
    """Samples per vmap call: as many as fit ``budget`` bytes of per-sample gradients, 1 to ``most``."""
    return max(1, min(most, budget // max(1, num_params * itemsize)))


def diagonal_fisher(net: TaskNetwork, task_id: int, x: torch.Tensor, y: torch.Tensor,
                    kind: FisherKind = "empirical", chunk: int | None = None,
                    memory: int = FISHER_MEMORY_BYTES) -> dict[str, torch.Tensor]:
    """F_i = mean_n (d log p(y_n | x_n) / d theta_i)^2, for every trainable parameter.

    ``empirical``: y_n are the true labels. ``expected``: the expectation over
    the model's own predictive distribution, sum_c p(c|x_n) (d log p(c|x_n))^2.
    Evaluated in eval mode (BatchNorm uses its running statistics). ``chunk``:
    samples per vmap call (None: from the ``memory`` budget, see fisher_chunk).
    """
    was_training = net.training
    net.eval()
    params = {k: v.detach() for k, v in net.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in net.named_buffers()}
    if chunk is None:
        itemsize = max((v.element_size() for v in params.values()), default=4)
        chunk = fisher_chunk(sum(v.numel() for v in params.values()), itemsize, memory)

    def log_prob(p, xi, yi):
        logits = functional_call(net, (p, buffers), (xi.unsqueeze(0), task_id))
        return torch.log_softmax(logits, dim=1)[0].gather(0, yi.unsqueeze(0)).squeeze(0)

    per_sample = vmap(grad(log_prob), in_dims=(None, 0, 0))
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}

    def accumulate(xb: torch.Tensor, yb: torch.Tensor, weight: torch.Tensor | None) -> None:
        grads = per_sample(params, xb, yb)
        for k in list(grads):
            g = grads.pop(k)  # popped: each chunk of gradients is freed as soon as it is summed
            sq = g.square_() if g.is_contiguous() else g.square()  # in place when ours alone (not expanded)
            if weight is not None:
                sq.mul_(weight.view(-1, *([1] * (sq.dim() - 1))))
            fisher[k] += sq.sum(0)

    for start in range(0, x.shape[0], chunk):
        xb, yb = x[start:start + chunk], y[start:start + chunk]
        if kind == "empirical":
            accumulate(xb, yb, None)
        else:
            with torch.no_grad():
                probs = torch.softmax(net(xb, task_id), dim=1)
            for c in range(probs.shape[1]):  # one class at a time: one chunk of gradients held
                accumulate(xb, torch.full_like(yb, c), probs[:, c])
    net.train(was_training)
    return {k: v / x.shape[0] for k, v in fisher.items()}
