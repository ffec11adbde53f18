"""HALRP: Hessian Aware Low-Rank Perturbation (Li et al., arXiv 2311.15161; specs/halrp.md).

The first task of the order trains a plain network (CE + wd_rate/2 sum ||W||^2
over the backbone's conv/linear weights); its backbone is then frozen as the
base W0, shared by every later task. The order enters mainly here. Each later
task t gets, for every nn.Conv2d and nn.Linear of the backbone (any backbone:
mlp, small_cnn, lenet, alexnet, resnet9 with its 1x1 shortcuts),
W_t = diag(mR) W0 diag(mS) + R S (methods/halrp_layers.py), plus its own
biases, BatchNorm copies and head. Learning task t >= 2:

1. free fine-tune: a copy of the base (weights, biases, BN) and the task's
   head, everything trained for ``est_rank_epochs`` with plain CE -> W~;
2. importance F_l: empirical Fisher of the free model on the task's
   validation split (eval mode, true labels), one scalar per layer;
3-6. least-squares scales, SVD of the residual, one global rank ranking over
   all layers (score c_l F_l s^2, ``approx_rate``, ``upper_rank``), factors
   from the SVD (methods/halrp_math.py); W~ is discarded, the free model's
   biases, BN and head are the task's starting point;
7. low-rank training for ``epochs - est_rank_epochs`` epochs of
   CE + l1_hyp sum(|S|_1 + |R|_1) + wd_rate/2 sum(|mS-c|^2 + |mR-c|^2 + |S|^2 + |R|^2)
   over head, task biases, BN, scales and factors (c = ``scale_l2_target``);
8. pruning of every task's factors so the model stays within 1 - prune_bound
   of the base's size (``prune_rule``); earlier tasks are re-pruned as it grows.

Every phase uses a fresh optimiser (Adam by default, weight decay 0) whose lr
is decayed by ``lr_decay`` per epoch (``lr_schedule``), and methods/loop.py's ``fit``.

Parameters: the ``network``, ``training`` and ``optimizer`` components (adam |
sgd | rmsprop, lr 1e-3 by default) and HALRP's own fields; no lr_scheduler
(HALRP has its own lr_decay / lr_schedule) and no penalties (its L2 is wd_rate).

Presets and the variant (methods/halrp_presets.py): ``preset: <benchmark>`` is
the authors' run: their hyperparameters, their network and every quirk of
their code; ``variant: clorch`` keeps the preset's hyperparameters with our
choices for the quirks. Explicit keys win over the variant, the variant over
the preset.

Quirks of the authors' code, each a switch (our default first):
- ``scale_l2_target``: 1 | 0 (the code pulls the scales toward 0);
- ``count_task_biases``: true | false (the code's capacity count omits them);
- ``lr_schedule``: epoch | batch | batch_cifar. epoch: lr x lr_decay after
  each epoch; batch: the same per-epoch factor spread over the epoch's real
  steps, lr x lr_decay ** (1 / steps_per_epoch) after every batch (the
  presets: lr_decay = the official run's per-epoch factor); batch_cifar: the
  code's formula as written, lr x lr_decay ** (B / (50000/T * 0.8)) per
  batch, T = the study's task count;
- ``grad_multiplier``: 1 | 10 (the code scales gradients by 10 before the
  step: a no-op for Adam up to its eps);
- ``prune_rule``: strict | paper (see methods/halrp_math.pruning_rate);
- AlexNet's BN without running statistics: backbone ``alexnet_batch_stats``;
  the code's ResNet-18 (conv bias, avg_pool2d(., 2)): backbone ``resnet18_halrp``.

[ours], where the spec is silent:
- ``importance_split: val`` with no validation split (val_fraction 0) is an
  error naming benchmark.params.val_fraction; ``importance_split: train``
  uses the training split (the code's own fallback when it has no val loader).
- The Fisher is taken w.r.t. the free model's weights W~ (the spec's
  dCE/dW~_l), in contiguous minibatches of ``batch_size``.
- A task not learned yet is predicted with the base backbone and its
  (untrained) head; a task is learned at most once.
- Capacity: |theta_0| = base backbone + the base task's head; a later task
  adds its scales, S and R (nonzero ones after pruning), BN parameters, head
  and (count_task_biases) biases. BN running statistics are buffers, not counted.
"""
from __future__ import annotations

import copy
import math
import time
from typing import Annotated, Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from datasets.benchmark import DeviceSplit
from methods import optimizers
from methods.backbones import NetworkParams
from methods.components import migrate_flat_keys
from methods.halrp_layers import (
    Perturbed,
    kernel_positions,
    make_perturbed,
    perturbable_layers,
    replace_module,
)
from methods.halrp_math import (
    factor_init,
    least_squares_scales,
    prune_threshold,
    pruning_rate,
    residual_matrix,
    select_ranks,
    svd,
)
from methods.halrp_presets import OFFICIAL_RUNS, PRESETS, VARIANTS, apply_preset
from methods.loop import LoopParams, fit, num_batches
from methods.network import TaskNetwork
from methods.penalties import PenaltyTerm
from methods.protocol import MethodContext
from methods.registry import METHODS

PHASES = ("base", "free_finetune", "importance", "svd_rank", "lowrank", "prune")


_HALRP_LR = {"gt": 0.0, "le": 10.0, "description": "initial learning rate of every phase"}
Decay = Annotated[float, Field(gt=0.0, le=1.0)]


class Adam(optimizers.Adam):
    lr: float = Field(1e-3, **_HALRP_LR)


class Sgd(optimizers.Sgd):
    lr: float = Field(1e-3, **_HALRP_LR)


class Rmsprop(optimizers.Rmsprop):
    lr: float = Field(1e-3, **_HALRP_LR)


class HALRPParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    network: NetworkParams = Field(default_factory=NetworkParams, description="the backbone (its conv/linear layers are perturbed)")
    training: LoopParams = Field(default_factory=LoopParams, description="epochs (free fine-tune + low-rank) and batches of every phase; reset_optimizer must stay true")
    optimizer: Annotated[Adam | Sgd | Rmsprop, Field(discriminator="name")] = Field(
        default_factory=Adam, description="optimiser of every phase (the paper: adam), lr 1e-3 by default")
    preset: str | None = Field(None, description=f"the authors' run (hyperparameters, network, quirks), filling every parameter not set: {' | '.join(PRESETS)}")
    variant: Literal[VARIANTS] | None = Field(None, description="official: the authors' quirks | clorch: ours (scale_l2_target 1, prune_rule strict, task biases counted, lr x0.95 per epoch, grad_multiplier 1, backbones alexnet/resnet9); null: official under a preset, else the field defaults (ours); explicit keys win")  # type: ignore[valid-type]
    wd_rate: float = Field(1e-3, ge=0.0, le=10.0, description="lambda_0: wd_rate/2 * squared norm of the base weights (first task) and of scales and factors (later tasks)")
    l1_hyp: float = Field(1e-6, ge=0.0, le=10.0, description="lambda_1: l1_hyp * (|S|_1 + |R|_1) summed over layers")
    approx_rate: float = Field(0.9, gt=0.0, le=1.0, description="share of the total importance-weighted residual energy the chosen ranks must exceed")
    upper_rank: int = Field(100, ge=1, le=1_000_000, description="largest rank of a layer's perturbation")
    rank_method: Literal["importance", "flat"] = Field("importance", description="importance: global ranking of c_l F_l s^2 | flat: every layer upper_rank")
    est_rank_epochs: int = Field(1, ge=1, le=100_000, description="epochs of the free fine-tune (must be < epochs; the rest train the low-rank model)")
    prune_bound: float | None = Field(0.4, ge=0.0, lt=1.0, description="q: the model may grow to (2 - q) x the base (increment <= 1 - q); null: no pruning")
    prune_floor: float = Field(1e-5, ge=0.0, le=1.0, description="a: factor entries at or below this are pruned whenever pruning happens")
    prune_rule: Literal["strict", "paper"] = Field("strict", description="strict: rate that meets the bound exactly | paper: rho = 1 - (1-q)/I (overshoots by rho * never-pruned params)")
    importance_split: Literal["val", "train"] = Field("val", description="data of the layer importance (Fisher): the task's validation split (needs benchmark val_fraction > 0) | training split")
    scale_l2_target: Literal[0, 1] = Field(1, description="value the L2 term pulls the scales mR, mS toward (the authors' code: 0)")
    count_task_biases: bool = Field(True, description="count each task's biases in the capacity (the authors' code: false)")
    lr_decay: Decay | list[Decay] = Field(0.95, description="lr factor per epoch of every phase; a list: one per task identity (the 5-Datasets presets); batch_cifar: the base of the code's formula")
    lr_schedule: Literal["epoch", "batch", "batch_cifar"] = Field("epoch", description="epoch: x lr_decay after each epoch | batch: x lr_decay ** (1/steps_per_epoch) after every batch (same factor per epoch, the official schedule's shape) | batch_cifar: the code's formula as written, x lr_decay ** (B / (50000/T * 0.8)) per batch")
    grad_multiplier: float = Field(1.0, gt=0.0, le=1e6, description="gradients multiplied by this before each step (the authors' code: 10)")

    @model_validator(mode="before")
    @classmethod
    def _flat_keys_and_preset(cls, data: Any) -> Any:
        return apply_preset(migrate_flat_keys(cls, data))

    @model_validator(mode="after")
    def _halrp_fits(self):
        epochs = self.training.epochs
        if self.est_rank_epochs >= epochs:
            raise ValueError(f"est_rank_epochs={self.est_rank_epochs} must be < training.epochs={epochs}: a later "
                             f"task trains est_rank_epochs free, then epochs - est_rank_epochs low-rank; raise "
                             f"training.epochs or lower est_rank_epochs")
        if isinstance(self.lr_decay, list) and self.lr_schedule == "batch_cifar":
            raise ValueError("lr_schedule batch_cifar takes one lr_decay (the base of the code's formula), not a list "
                             "per task: use lr_schedule batch or epoch with a list")
        if not self.training.reset_optimizer:
            raise ValueError("halrp has its own schedule: set training: {reset_optimizer: true} (every HALRP phase "
                             "starts a fresh optimiser)")
        return self

    OFFICIAL_VAL_FRACTION: ClassVar[float] = 0.2  # the authors hold out 20% of each task's training set (Tiny: 10%)

    def benchmark_notes(self, benchmark: str, params: Any) -> list[str]:
        """A preset is the authors' run: their validation split (the layer importance is taken on it) and,
        on permuted MNIST, their input."""
        if self.preset is None:
            return []
        notes = []
        official = OFFICIAL_RUNS[self.preset].val_fraction
        val = getattr(params, "val_fraction", None)
        if val is not None and val != official:
            notes.append(f"halrp preset {self.preset!r} is the authors' run with benchmark.params.val_fraction "
                         f"{official:g}; this study has {val:g} (set it to {official:g} to match their data)")
        if self.preset == "pmnist" and benchmark == "permuted_mnist" and (
                getattr(params, "protocol", None) != "halrp" or getattr(params, "pmnist_input", None) != "official"):
            notes.append("halrp preset 'pmnist' is the authors' run on their input: set benchmark.params "
                         "{protocol: halrp, pmnist_input: official} (resized to 32x32, 3 channels, all 3072 values "
                         "permuted)")
        return notes

    def benchmark_problems(self, benchmark: str, params: Any, setting: str | None = None) -> list[str]:
        """What fails every trial: importance on a validation split the benchmark lacks; no task ids."""
        out = []
        if self.importance_split == "val" and getattr(params, "val_fraction", None) == 0:
            out.append(f"halrp scores layer importance on each task's validation split (importance_split: val) "
                       f"but {benchmark} has val_fraction 0: set benchmark.params.val_fraction > 0 (the paper "
                       f"holds out {self.OFFICIAL_VAL_FRACTION:g}), or importance_split: train")
        if setting is not None and setting != "task_incremental":
            out.append(f"halrp picks each task's perturbation and head by its task id, which {setting} does not "
                       "give at test time: set benchmark.setting: task_incremental (or use another method)")
        return out


def lr_factors(schedule: str, lr_decay: float | list[float], task_id: int, n_train: int, batch_size: int,
               num_tasks: int) -> tuple[float, float]:
    """(factor after each epoch, factor after each batch) of one phase on one task.

    epoch: (f, 1); batch: (1, f ** (1 / steps)), steps = the batches ``fit`` takes per epoch, so one epoch
    decays by f exactly; batch_cifar: (1, f ** (B / (50000 / T * 0.8))), the authors' formula as written.
    f = lr_decay, or lr_decay[task_id] for a per-task list.
    """
    factor = lr_decay[task_id] if isinstance(lr_decay, list) else lr_decay
    if schedule == "epoch":
        return factor, 1.0
    if schedule == "batch":
        return 1.0, factor ** (1.0 / num_batches(n_train, batch_size))
    return 1.0, factor ** (batch_size / (50000 / num_tasks * 0.8))


def layer_importance(backbone: nn.Module, head: nn.Module, names: list[str], x: torch.Tensor, y: torch.Tensor,
                     batch_size: int) -> list[float]:
    """F_l = sum over minibatches b of (B_b / n_batches) * mean((dCE_b / dW_l)^2), eval mode, true labels."""
    modules = dict(backbone.named_modules())
    weights = [modules[n].weight for n in names]
    backbone.eval()
    head.eval()
    chunks = torch.arange(x.shape[0], device=x.device).split(batch_size)
    total = torch.zeros(len(names), dtype=torch.float64, device=x.device)
    for idx in chunks:
        loss = F.cross_entropy(head(backbone(x[idx])), y[idx])
        grads = torch.autograd.grad(loss, weights)
        total += torch.stack([g.double().pow(2).mean() for g in grads]) * (len(idx) / len(chunks))
    return total.tolist()


class LowRankPenalty:
    """l1 sum(|S|_1 + |R|_1) + wd/2 sum(|mS - c|^2 + |mR - c|^2 + |S|^2 + |R|^2) over a task's perturbed layers.

    ``plain`` is the formula through autograd; ``loss`` is the same value with its gradient
    (l1 sign(f) + wd f for a factor, wd (m - c) for a scale) computed directly, a few _foreach ops over
    all the layers' tensors instead of a graph of abs, pow and sum nodes per tensor (PenaltyTerm).
    """

    def __init__(self, layers: list[nn.Module], l1: float, wd: float, target: float):
        self.layers, self.l1, self.wd, self.target = layers, l1, wd, target
        self.factors = [f for m in layers for f in (m.factor_in, m.factor_out)]
        self.scales = [s for m in layers for s in (m.scale_in, m.scale_out)]

    def plain(self) -> torch.Tensor:
        layers, target = self.layers, self.target
        sparse = sum(m.factor_in.abs().sum() + m.factor_out.abs().sum() for m in layers)
        square = sum((m.scale_in - target).pow(2).sum() + (m.scale_out - target).pow(2).sum()
                     + m.factor_in.pow(2).sum() + m.factor_out.pow(2).sum() for m in layers)
        return self.l1 * sparse + 0.5 * self.wd * square

    def loss(self) -> torch.Tensor:
        return PenaltyTerm.apply(self, len(self.factors), *self.factors, *self.scales)

    def value_and_grad(self, n_factors: int, ws):
        factors = list(ws[:n_factors])  # no graph: a Function's forward runs without grad
        off = list(torch._foreach_sub(ws[n_factors:], self.target))  # m - c
        sparse = torch.stack(torch._foreach_norm(factors, 1)).sum()
        square = torch.stack(torch._foreach_norm(factors + off)).square().sum()
        value = self.l1 * sparse + 0.5 * self.wd * square
        grads = list(torch._foreach_mul(factors, self.wd))
        torch._foreach_add_(grads, torch._foreach_sign(factors), alpha=self.l1)
        torch._foreach_mul_(off, self.wd)
        return value, grads + off

    def gradient(self, n_factors: int, ws):
        return ([self.l1 * torch.sign(f) + self.wd * f for f in ws[:n_factors]]
                + [self.wd * (s - self.target) for s in ws[n_factors:]])


@METHODS.register("halrp", HALRPParams)
class HALRP:
    """Hessian-aware low-rank perturbation: a frozen base from the first task, per-task scales + low-rank factors."""

    Params = HALRPParams
    uses_validation = True

    def __init__(self, params: HALRPParams, ctx: MethodContext):
        if ctx.setting != "task_incremental":
            raise ValueError("halrp gives every task its own perturbation and head, chosen by the task id at test "
                             "time: it needs setting: task_incremental")
        if isinstance(params.lr_decay, list) and len(params.lr_decay) != ctx.num_tasks:
            raise ValueError(f"halrp lr_decay is a list of {len(params.lr_decay)} per-task factors but the benchmark "
                             f"has {ctx.num_tasks} tasks: give one factor per task identity, or a single number")
        self.p, self.ctx = params, ctx
        self.net = TaskNetwork(params.network.build(ctx.input_shape), ctx).to(ctx.device)
        self.layer_names = [name for name, _ in perturbable_layers(self.net.backbone)]
        self.tasks = nn.ModuleDict()  # str(task_id) -> that task's perturbed backbone
        self.ranks: dict[int, dict[str, int]] = {}
        self.base_task: int | None = None
        self.learned: list[int] = []
        self.generator = torch.Generator(device="cpu").manual_seed(ctx.seed)

    # ------------------------------------------------------------ protocol
    def learn_task(self, task_id: int, data: DeviceSplit, val: DeviceSplit | None = None) -> dict[str, float]:
        if task_id in self.learned:
            raise ValueError(f"halrp learns each task once; task {task_id} was already learned")
        scoring = self._importance_data(data, val)
        info = self._learn_base(task_id, data) if self.base_task is None else self._learn_later(task_id, data, scoring)
        self.learned.append(task_id)
        return info

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        backbone = self.tasks[str(task_id)] if str(task_id) in self.tasks else self.net.backbone  # noqa: SIM401 (ModuleDict has no get)
        head = self.net.head(task_id)
        backbone.eval()
        head.eval()
        return head(backbone(x))

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy({
            "net": self.net.state_dict(),  # the base backbone and every head
            "tasks": {key: {"ranks": dict(self.ranks[int(key)]), "state": net.state_dict()}
                      for key, net in self.tasks.items()},
            "base_task": self.base_task,
            "learned": list(self.learned),
            "generator": self.generator.get_state(),
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.base_task = state["base_task"]
        self.learned = list(state["learned"])
        if self.base_task is not None:
            self._freeze(self.net.backbone, self.net.head(self.base_task))
        self.tasks, self.ranks = nn.ModuleDict(), {}
        for key, task in state["tasks"].items():
            net = self._task_backbone(self.net.backbone, task["ranks"])
            net.load_state_dict(task["state"])
            self._freeze(net, self.net.head(int(key)))
            self.tasks[key], self.ranks[int(key)] = net, dict(task["ranks"])
        self.generator.set_state(state["generator"])

    # ------------------------------------------------------------ the two kinds of task
    def _learn_base(self, task_id: int, data: DeviceSplit) -> dict[str, float]:
        started = self._clock()
        backbone, head = self.net.backbone, self.net.head(task_id)
        weights = [m.weight for _, m in perturbable_layers(backbone)]
        wd = self.p.wd_rate

        def l2() -> torch.Tensor:
            return 0.5 * wd * sum(w.pow(2).sum() for w in weights)

        first, last = self._train([*backbone.parameters(), *head.parameters()], lambda xb: head(backbone(xb)),
                                  [backbone, head], l2 if wd > 0 else None, data, self.p.training.epochs, task_id)
        self._freeze(backbone, head)
        self.base_task = task_id
        times = {"base": self._clock() - started}
        return {"is_base": 1.0, "loss_first_epoch": first, "loss_last_epoch": last, "free_loss_last_epoch": math.nan,
                **{f"rank_{_key(n)}": 0.0 for n in self.layer_names},
                **{f"importance_{_key(n)}": 0.0 for n in self.layer_names},
                **self._capacity_info(rho=0.0, dense_increment=0.0), **_times(times)}

    def _learn_later(self, task_id: int, data: DeviceSplit, scoring: DeviceSplit) -> dict[str, float]:
        p, times = self.p, {}
        head = self.net.head(task_id)
        # 1. free fine-tune of a copy of the base
        started = self._clock()
        free = copy.deepcopy(self.net.backbone).requires_grad_(True)
        head.requires_grad_(True)
        _, free_last = self._train([*free.parameters(), *head.parameters()], lambda xb: head(free(xb)),
                                   [free, head], None, data, p.est_rank_epochs, task_id)
        times["free_finetune"] = self._clock() - started
        # 2. importance of each layer
        started = self._clock()
        importance = layer_importance(free, head, self.layer_names, scoring.x, scoring.y,
                                      p.training.batch_size)
        times["importance"] = self._clock() - started
        # 3-6. scales, residual SVD, global ranks, factors
        started = self._clock()
        net, ranks = self._perturb(free, importance)
        times["svd_rank"] = self._clock() - started
        # 7. low-rank training
        started = self._clock()
        first, last = self._train([*net.parameters(), *head.parameters()], lambda xb: head(net(xb)),
                                  [net, head], self._lowrank_penalty(net), data, p.training.epochs - p.est_rank_epochs,
                                  task_id)
        self._freeze(net, head)
        self.tasks[str(task_id)], self.ranks[task_id] = net, ranks
        times["lowrank"] = self._clock() - started
        # 8. pruning of every task so far
        started = self._clock()
        rho, dense_increment = self._prune()
        times["prune"] = self._clock() - started
        return {"is_base": 0.0, "loss_first_epoch": first, "loss_last_epoch": last, "free_loss_last_epoch": free_last,
                **{f"rank_{_key(n)}": float(ranks[n]) for n in self.layer_names},
                **{f"importance_{_key(n)}": f for n, f in zip(self.layer_names, importance)},
                **self._capacity_info(rho, dense_increment, task_id), **_times(times)}

    # ------------------------------------------------------------ steps
    @torch.no_grad()
    def _perturb(self, free: nn.Module, importance: list[float]) -> tuple[nn.Module, dict[str, int]]:
        """Replace every conv/linear of ``free`` by its perturbed layer over the base, initialised from W~."""
        base = self.net.backbone
        fits = []
        for name in self.layer_names:
            w0, w_free = base.get_submodule(name).weight, free.get_submodule(name).weight
            scale_out, scale_in = least_squares_scales(w_free, w0)
            fits.append((scale_out, scale_in, *svd(residual_matrix(w_free, w0, scale_out, scale_in))))
        chosen = select_ranks([f[3] for f in fits], importance,
                              [kernel_positions(base.get_submodule(n)) for n in self.layer_names],
                              self.p.approx_rate, self.p.upper_rank, self.p.rank_method)
        for name, rank, (scale_out, scale_in, u, s, vh) in zip(self.layer_names, chosen, fits):
            layer = make_perturbed(base.get_submodule(name), free.get_submodule(name).bias, rank)
            factor_out, factor_in = factor_init(u, s, vh, rank)
            layer.scale_out.copy_(scale_out)
            layer.scale_in.copy_(scale_in)
            layer.factor_out.copy_(factor_out)
            layer.factor_in.copy_(factor_in)
            replace_module(free, name, layer)
        return free, dict(zip(self.layer_names, chosen))

    def _lowrank_penalty(self, net: nn.Module):
        penalty = LowRankPenalty([m for m in net.modules() if isinstance(m, Perturbed)], self.p.l1_hyp,
                                 self.p.wd_rate, float(self.p.scale_l2_target))
        return penalty.loss

    @torch.no_grad()
    def _prune(self) -> tuple[float, float]:
        """Prune every later task's factors to the bound; returns (rho, dense increment I before pruning)."""
        base = self._base_count()
        counts = [self._task_count(t) for t in self._later_tasks()]
        fixed, dense = sum(c[0] for c in counts), sum(c[1] for c in counts)
        increment = (fixed + dense) / base
        if self.p.prune_bound is None:
            return 0.0, increment
        rho = pruning_rate(self.p.prune_rule, self.p.prune_bound, base, fixed, dense)
        # the authors' rule prunes (at least the floor) from I >= 1 - q on, rho = 0 at equality included
        floor_only = self.p.prune_rule == "paper" and increment >= 1.0 - self.p.prune_bound
        if rho <= 0.0 and not floor_only:
            return 0.0, increment
        for t in self._later_tasks():
            factors = [f for m in self.tasks[str(t)].modules() if isinstance(m, Perturbed)
                       for f in (m.factor_in, m.factor_out)]
            magnitudes = torch.cat([f.detach().abs().flatten() for f in factors]).double().cpu().numpy()
            threshold = prune_threshold(magnitudes, rho, self.p.prune_floor, self.p.prune_rule)
            for f in factors:
                f.mul_((f.abs().double() > threshold).to(f.dtype))
        return rho, increment

    # ------------------------------------------------------------ counting
    def _later_tasks(self) -> list[int]:
        return [int(k) for k in self.tasks]  # in the order they were learned

    def _base_count(self) -> int:
        head = self.net.head(self.base_task)
        return sum(w.numel() for w in (*self.net.backbone.parameters(), *head.parameters()))

    def _task_count(self, task_id: int) -> tuple[int, int, int]:
        """(never-pruned added parameters, dense factor entries, nonzero factor entries) of one later task."""
        fixed = sum(w.numel() for w in self.net.head(task_id).parameters())
        dense = nonzero = 0
        for m in self.tasks[str(task_id)].modules():
            for name, w in m.named_parameters(recurse=False):
                if isinstance(m, Perturbed) and name in ("factor_in", "factor_out"):
                    dense += w.numel()
                    nonzero += int(torch.count_nonzero(w))
                elif not (isinstance(m, Perturbed) and name == "bias" and not self.p.count_task_biases):
                    fixed += w.numel()
        return fixed, dense, nonzero

    def _capacity_info(self, rho: float, dense_increment: float, task_id: int | None = None) -> dict[str, float]:
        """capacity_increment: (base + all added, nonzero factors) / base - 1, after pruning; ..._task: this task's share."""
        if self.base_task is None:
            return {"capacity_increment": 0.0, "capacity_task": 0.0, "capacity_increment_dense": 0.0, "prune_rate": 0.0}
        base = self._base_count()
        counts = {t: self._task_count(t) for t in self._later_tasks()}
        added = sum(c[0] + c[2] for c in counts.values())
        own = counts[task_id][0] + counts[task_id][2] if task_id in counts else 0
        return {"capacity_increment": added / base, "capacity_task": own / base,
                "capacity_increment_dense": dense_increment, "prune_rate": rho}

    # ------------------------------------------------------------ plumbing
    def _train(self, params: list[torch.Tensor], forward, modules: list[nn.Module], penalty, data: DeviceSplit,
               epochs: int, task_id: int) -> tuple[float, float]:
        """``epochs`` of fit() over CE (+ penalty) with a fresh optimiser; lr decayed per epoch or per batch."""
        opt = self.p.optimizer.build(params)
        for m in modules:
            m.train()
        multiplier = self.p.grad_multiplier
        batch_size = self.p.training.batch_size
        per_epoch, per_batch = lr_factors(self.p.lr_schedule, self.p.lr_decay, task_id, data.x.shape[0],
                                          batch_size, self.ctx.num_tasks)

        def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            loss = F.cross_entropy(forward(xb), yb)
            if penalty is not None:
                loss = loss + penalty()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if multiplier != 1.0:
                for w in params:
                    if w.grad is not None:
                        w.grad.mul_(multiplier)
            opt.step()
            if per_batch != 1.0:
                for group in opt.param_groups:
                    group["lr"] *= per_batch
            return loss

        first = last = math.nan
        for epoch in range(epochs):
            out = fit(step, data.x, data.y, epochs=1, batch_size=batch_size, generator=self.generator)
            first = out["loss_first_epoch"] if epoch == 0 else first
            last = out["loss_last_epoch"]
            if per_epoch != 1.0:
                for group in opt.param_groups:
                    group["lr"] *= per_epoch
        return first, last

    def _task_backbone(self, base: nn.Module, ranks: dict[str, int]) -> nn.Module:
        """The structure of a later task's backbone (BN copies, zero perturbations) over the base, for loading."""
        net = copy.deepcopy(base)
        for name in self.layer_names:
            layer = base.get_submodule(name)
            replace_module(net, name, make_perturbed(layer, layer.bias, ranks[name]))
        return net

    def _importance_data(self, data: DeviceSplit, val: DeviceSplit | None) -> DeviceSplit:
        if self.p.importance_split == "train":
            return data
        if val is None or val.x.shape[0] == 0:
            raise ValueError("halrp scores layer importance (the Fisher) on each task's validation split "
                             "(importance_split: val) but the benchmark has none: set benchmark.params.val_fraction "
                             "(the paper holds out 0.2), or importance_split: train to use the training split")
        return val

    @staticmethod
    def _freeze(backbone: nn.Module, head: nn.Module) -> None:
        backbone.requires_grad_(False)
        head.requires_grad_(False)
        backbone.eval()
        head.eval()

    def _clock(self) -> float:
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        return time.perf_counter()


def _key(layer_name: str) -> str:
    """A layer's name as a metric-key suffix: dots become underscores (blocks.1.body.0 -> blocks_1_body_0)."""
    return layer_name.replace(".", "_")


def _times(measured: dict[str, float]) -> dict[str, float]:
    """time_<phase>_s for every phase, 0 for those a task does not have (the base task has only ``base``)."""
    return {f"time_{phase}_s": float(measured.get(phase, 0.0)) for phase in PHASES}
