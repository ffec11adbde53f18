"""Diagonal Fisher information of a network's parameters on one task's data.

Per-sample gradients through torch.func (vmap over grad), so the diagonal is
the exact mean of squared per-sample gradients, not the square of batch-mean
gradients that cheaper implementations use.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch.func import functional_call, grad, vmap

from methods.network import TaskNetwork

FisherKind = Literal["empirical", "expected"]


def diagonal_fisher(net: TaskNetwork, task_id: int, x: torch.Tensor, y: torch.Tensor,
                    kind: FisherKind = "empirical", chunk: int = 256) -> dict[str, torch.Tensor]:
    """F_i = mean_n (d log p(y_n | x_n) / d theta_i)^2, for every trainable parameter.

    ``empirical``: y_n are the true labels. ``expected``: the expectation over
    the model's own predictive distribution, sum_c p(c|x_n) (d log p(c|x_n))^2.
    Evaluated in eval mode (BatchNorm uses its running statistics).
    """
    was_training = net.training
    net.eval()
    params = {k: v.detach() for k, v in net.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in net.named_buffers()}

    def log_prob(p, xi, yi):
        logits = functional_call(net, (p, buffers), (xi.unsqueeze(0), task_id))
        return torch.log_softmax(logits, dim=1)[0].gather(0, yi.unsqueeze(0)).squeeze(0)

    per_sample = vmap(grad(log_prob), in_dims=(None, 0, 0))
    fisher = {k: torch.zeros_like(v) for k, v in params.items()}
    for start in range(0, x.shape[0], chunk):
        xb, yb = x[start:start + chunk], y[start:start + chunk]
        if kind == "empirical":
            weighted = [(per_sample(params, xb, yb), None)]
        else:
            with torch.no_grad():
                probs = torch.softmax(net(xb, task_id), dim=1)
            weighted = [(per_sample(params, xb, torch.full_like(yb, c)), probs[:, c])
                        for c in range(probs.shape[1])]
        for grads, weight in weighted:
            for k, g in grads.items():
                sq = g.pow(2)
                if weight is not None:
                    sq = sq * weight.view(-1, *([1] * (sq.dim() - 1)))
                fisher[k] += sq.sum(0)
    net.train(was_training)
    return {k: v / x.shape[0] for k, v in fisher.items()}
