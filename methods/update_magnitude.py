"""Update magnitude (specs/hybrid.md): how much of the backbone a new task may change.

One method, three strategies that differ only in k_t, the number of backbone
blocks (counted from the output end) trained on task t; the head is always
trained and everything else is Finetune:

- ``initialized``: k_t = all blocks (warm start, train everything).
- ``frozen``: k_t = k_min.
- ``adaptive`` (the hybrid, Algorithm 1): s_t = cos(g_t, g_{t-1}) and
  ``threshold``: k_t = k_min if s_t >= tau else k_max, or
  ``graded``: k_t = k_min + ceil((1 - s_t)/2 * (k_max - k_min)) (tau unused).

[ours] readings, each a parameter or stated:
- The first task trains every block (``first_task: all``) under every
  strategy: "freeze the shared backbone" presumes a trained backbone; with
  ``first_task: k_min`` it trains k_min blocks over a random backbone.
- g_t is the mean gradient over the first ``grad_batches`` minibatches (a
  seeded permutation of the task's training set, its own RNG, so training
  batches do not move) of the training loss at the weights the task arrives
  at, w.r.t. the backbone parameters only (flattened, all of them, frozen or
  not), through the task's own head — in the task-incremental setting that
  head is still untrained. BN runs in training mode for the probe, and its
  running statistics are restored after it: the probe changes nothing.
  g_{t-1} is the vector stored when task t-1 arrived (no data kept).
- s_t is measured and logged for every strategy (so frozen/initialized runs
  show the task similarities too); only ``adaptive`` acts on it. A zero
  gradient gives s_t = NaN, read as "unrelated": k_max.
- Frozen blocks get requires_grad off and run in eval mode during training,
  so neither their weights nor their BN statistics move. The optimiser is
  Finetune's: frozen weights have no .grad, and sgd/adam/rmsprop/idbd skip
  weights without a gradient (weight decay included), so it equals an
  optimiser built over the trainable weights only.
"""
from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from datasets.benchmark import DeviceSplit
from methods.finetune import Finetune
from methods.network import TaskNetwork
from methods.params import GradientParams
from methods.protocol import MethodContext
from methods.registry import METHODS

Strategy = Literal["frozen", "initialized", "adaptive"]
Rule = Literal["threshold", "graded"]


class UpdateMagnitudeParams(GradientParams):
    strategy: Strategy = Field("adaptive", description="frozen: last k_min blocks | initialized: all | adaptive: k from the gradient cosine")
    rule: Rule = Field("threshold", description="adaptive: threshold (k_min if s >= tau else k_max) | graded (k_min + ceil((1-s)/2 (k_max-k_min)))")
    tau: float = Field(0.0, ge=-1.0, le=1.0, description="adaptive, threshold rule: cosine at or above which a task is related")
    k_min: int = Field(1, ge=0, description="backbone blocks trained on related tasks (frozen: on every task after the first)")
    k_max: int | None = Field(None, ge=0, description="backbone blocks trained on unrelated tasks; None: all blocks")
    grad_batches: int = Field(10, ge=1, le=100_000, description="minibatches whose mean gradient is g_t")
    first_task: Literal["all", "k_min"] = Field("all", description="blocks trained on the first task: all, or k_min")

    @model_validator(mode="after")
    def _k_order(self):
        if self.k_max is not None and self.k_min > self.k_max:
            raise ValueError(f"k_min={self.k_min} > k_max={self.k_max}: related tasks cannot train more blocks "
                             "than unrelated ones; lower k_min or raise k_max (None = all blocks)")
        return self


def blocks_to_train(s: float, rule: Rule, tau: float, k_min: int, k_max: int) -> int:
    """k_t from the cosine s_t. NaN (no direction to compare) counts as unrelated.

    The graded rule rounds a product within 1e-9 of an integer down, so that a
    cosine of 1 up to float error still gives k_min.
    """
    if math.isnan(s):
        return k_max
    if rule == "threshold":
        return k_min if s >= tau else k_max
    s = min(1.0, max(-1.0, s))
    return k_min + math.ceil((1.0 - s) / 2.0 * (k_max - k_min) - 1e-9)


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) in float64; NaN when either vector is zero (torch's eps would say 0)."""
    a, b = a.double(), b.double()
    denom = a.norm() * b.norm()
    return math.nan if denom == 0 else float(a @ b / denom)


def backbone_blocks(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's freezable units in order from input to output.

    A backbone with ``blocks`` (ResNet9) gives those. A Sequential (mlp,
    small_cnn) is cut before every child that holds parameters or buffers:
    each Linear/Conv with the ReLU/pool after it is one block (a leading
    Flatten joins the first).
    """
    if hasattr(backbone, "blocks"):
        return list(backbone.blocks)
    if not isinstance(backbone, nn.Sequential):
        raise ValueError(f"backbone {type(backbone).__name__} has no ordered blocks to freeze: "
                         "give it a `blocks` ModuleList (input to output) or make it an nn.Sequential")
    groups: list[list[nn.Module]] = []
    lead: list[nn.Module] = []
    for child in backbone.children():
        stateful = any(True for _ in child.parameters()) or any(True for _ in child.buffers())
        if stateful:
            groups.append(lead + [child])
            lead = []
        elif groups:
            groups[-1].append(child)
        else:
            lead.append(child)
    if not groups:
        raise ValueError(f"backbone {type(backbone).__name__} has no parameters to train")
    return [nn.Sequential(*g) for g in groups]


class BlockFreezer:
    """Trains only the last k blocks: the others lose requires_grad and run in eval mode.

    Finetune.train puts the whole network in training mode; a forward pre-hook
    on the backbone puts the frozen blocks back in eval mode before they run,
    so their BN running statistics stay as they are.
    """

    def __init__(self, backbone: nn.Module):
        self.blocks = backbone_blocks(backbone)
        self.frozen: list[nn.Module] = []
        backbone.register_forward_pre_hook(self._frozen_to_eval)

    def __len__(self) -> int:
        return len(self.blocks)

    def train_last(self, k: int) -> None:
        cut = len(self.blocks) - k
        for i, block in enumerate(self.blocks):
            block.requires_grad_(i >= cut)
        self.frozen = self.blocks[:cut]

    def _frozen_to_eval(self, module: nn.Module, args: Any) -> None:
        if module.training:
            for block in self.frozen:
                if block.training:
                    block.eval()


def mean_backbone_gradient(net: TaskNetwork, task_id: int, x: torch.Tensor, y: torch.Tensor,
                           batches: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """Mean over ``batches`` minibatches of d loss / d backbone, flattened; BN statistics restored.

    Needs every backbone parameter to require grad. N forward/backward passes,
    no optimiser step, no per-sample work.
    """
    params = list(net.backbone.parameters())
    saved = {k: b.clone() for k, b in net.backbone.named_buffers()}
    idx = torch.randperm(x.shape[0], generator=generator)[: batches * batch_size].to(x.device)
    total = torch.zeros(sum(p.numel() for p in params), device=x.device)
    chunks = idx.split(batch_size)
    net.train()
    for chunk in chunks:
        loss = F.cross_entropy(net(x[chunk], task_id), y[chunk])
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        total += torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])
    with torch.no_grad():
        for k, b in net.backbone.named_buffers():
            b.copy_(saved[k])
    return total / len(chunks)


@METHODS.register("update_magnitude", UpdateMagnitudeParams)
class UpdateMagnitude(Finetune):
    """Frozen / initialized / adaptive training of the last k backbone blocks (specs/hybrid.md)."""

    Params = UpdateMagnitudeParams

    def __init__(self, params: UpdateMagnitudeParams, ctx: MethodContext):
        super().__init__(params, ctx)
        self.freezer = BlockFreezer(self.net.backbone)
        n = len(self.freezer)
        self.k_max = n if params.k_max is None else params.k_max
        if self.k_max > n:
            raise ValueError(f"k_max={self.k_max} but backbone {params.network.backbone} has {n} blocks; "
                             f"use k_max <= {n} (or None for all)")
        if params.k_min > n:
            raise ValueError(f"k_min={params.k_min} but backbone {params.network.backbone} has {n} blocks; use k_min <= {n}")
        self.stored_grad: torch.Tensor | None = None  # g of the previous task, at its arrival
        self.tasks_seen = 0
        # its own RNG: choosing the probe's minibatches must not move the training batches
        self.probe_generator = torch.Generator().manual_seed(ctx.seed + 104729)

    def blocks_for(self, s: float) -> int:
        """k_t of this strategy, given the cosine s_t of the arriving task."""
        p, everything = self.p, len(self.freezer)
        if p.strategy == "initialized":
            return everything
        if self.tasks_seen == 0:
            return everything if p.first_task == "all" else p.k_min
        if p.strategy == "frozen":
            return p.k_min
        return blocks_to_train(s, p.rule, p.tau, p.k_min, self.k_max)

    def similarity(self, task_id: int, data: DeviceSplit) -> float:
        """Probe g_t, return cos(g_t, g_{t-1}) (NaN for the first task) and store g_t."""
        self.freezer.train_last(len(self.freezer))
        g = mean_backbone_gradient(self.net, task_id, data.x, data.y, self.p.grad_batches, self.p.training.batch_size,
                                   self.probe_generator)
        s = math.nan if self.stored_grad is None else cosine(g, self.stored_grad)
        self.stored_grad = g
        return s

    def learn_task(self, task_id: int, data: DeviceSplit) -> dict[str, float]:
        s = self.similarity(task_id, data)
        k = self.blocks_for(s)
        self.freezer.train_last(k)
        trainable = sum(w.numel() for w in self.net.backbone.parameters() if w.requires_grad)
        trainable += sum(w.numel() for w in self.net.head(task_id).parameters())
        self.net.zero_grad(set_to_none=True)
        try:
            info = super().learn_task(task_id, data)
        finally:
            self.freezer.train_last(len(self.freezer))  # the freeze lasts one task
        self.tasks_seen += 1
        return {**info, "s_t": s, "k_t": float(k), "trainable_params": float(trainable)}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["update_magnitude"] = {
            "stored_grad": None if self.stored_grad is None else self.stored_grad.clone(),
            "tasks_seen": self.tasks_seen,
            "probe_generator": self.probe_generator.get_state(),
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        own = state["update_magnitude"]
        self.stored_grad = None if own["stored_grad"] is None else own["stored_grad"].clone()
        self.tasks_seen = own["tasks_seen"]
        self.probe_generator.set_state(own["probe_generator"])
