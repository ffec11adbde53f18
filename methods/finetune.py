"""Fine-tuning: train the same network on each task in turn, nothing else.

The lower bound every continual-learning method must beat: no replay, no
frozen parts. In the task-incremental setting each task still gets its own
head. Other methods reuse this learner by composition: a ``Penalty`` adds a
term to the loss and consolidates after each task (EWC is Finetune plus a
Fisher penalty).

Components every subclass inherits (GradientParams, methods/params.py; the
switches all off by default): ``penalties`` entries attach the weight
penalties of methods/penalties.py, and ``lr_scheduler: {name: lot}`` puts the
loss-of-trainability scheduler (methods/lot_scheduler.py) on top of Adam: one
param group per layer, and a call before every optimiser step (after the
backward, so on the weights, gradients and penalties the step acts on) that
does its per-layer work every ``every`` steps only.

Every task's info carries ``online_acc`` (the training minibatches' accuracy
in their own step's forward pass, before the update: mean over the task, and
``online_acc_last_epoch``); ``training: {dead_units: true}`` adds
``dead_<activation>``, the fraction of each ReLU/CReLU layer's units that
output 0 on every training image of the task, after it.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from datasets.benchmark import DeviceSplit
from methods.loop import fit, num_batches
from methods.lot_scheduler import LotSchedule, LotScheduler
from methods.lot_signals import dead_unit_fractions
from methods.network import TaskNetwork
from methods.params import GradientParams
from methods.penalties import weight_penalties
from methods.protocol import MethodContext
from methods.registry import METHODS


class Penalty(Protocol):
    """A loss term that depends on the past (EWC, L2 to an anchor, ...).

    Optional: ``begin_task(net, task_id)``, called before a task is trained
    (the weight penalties use it to leave other tasks' heads alone).
    """

    def loss(self, net: TaskNetwork) -> torch.Tensor | None:
        """Added to the task loss at every step; None when inactive."""

    def after_task(self, net: TaskNetwork, task_id: int, data: DeviceSplit) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class FinetuneParams(GradientParams):
    pass


@METHODS.register("finetune", FinetuneParams)
class Finetune:
    """Sequential fine-tuning with sgd, adam, rmsprop or idbd (the lower bound)."""

    Params = FinetuneParams

    def __init__(self, params: GradientParams, ctx: MethodContext, penalties: Sequence[Penalty] = ()):
        self.p = params
        self.ctx = ctx
        self.net = TaskNetwork(params.network.build(ctx.input_shape), ctx).to(ctx.device)
        self.generator = torch.Generator(device="cpu").manual_seed(ctx.seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self.penalties = list(penalties) + weight_penalties(params.penalties, self.net)
        schedule = params.lr_scheduler
        self.scheduler = (LotScheduler(schedule, params.optimizer.lr, self.net, ctx.seed)
                          if isinstance(schedule, LotSchedule) else None)

    # ---- hooks: a subclass (``methods.Learner``) overrides any of these; each is a no-op here
    def begin_task(self, task_id: int, data: DeviceSplit) -> None:
        """Before the task is trained (e.g. snapshot the model, grow a head)."""

    def extra_loss(self, task_id: int) -> torch.Tensor | None:
        """Added to the task's loss at every step (a regulariser); None adds nothing."""
        return None

    def end_task(self, task_id: int, data: DeviceSplit) -> dict[str, float]:
        """After the task is trained (consolidate, fill a buffer); scalars returned are logged per task."""
        return {}

    # per-step hooks (rehearsal methods, methods/rehearsal.py): each is called only when a subclass defines it
    def batch_loss(self, xb: torch.Tensor, yb: torch.Tensor, logits: torch.Tensor,
                   loss: torch.Tensor) -> torch.Tensor:
        """The loss to minimise on this minibatch, given the current batch's ``loss`` (task loss plus
        penalties and extra_loss) and its raw ``logits`` (TaskNetwork.raw: class_incremental's unseen
        classes not masked): replay adds a buffer batch's term here."""
        return loss

    def batch_forward(self, forward: Callable[[torch.Tensor], torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        """The raw logits of the step's minibatch, ``forward(xb)`` (rehearsal runs its replay batches through
        the backbone in the same pass here, methods/rehearsal.py)."""
        return forward(xb)

    def before_step(self) -> None:
        """After backward, before the optimiser step: edit the gradients (A-GEM's projection)."""

    def after_step(self, xb: torch.Tensor, yb: torch.Tensor, logits: torch.Tensor) -> None:
        """After the optimiser step, with the batch just trained on (a buffer inserts it)."""

    def learn_task(self, task_id: int, data: DeviceSplit) -> dict[str, float]:
        self.net.activate(task_id)  # class_incremental: the task's classes join the head
        self.begin_task(task_id, data)
        for penalty in self.penalties:
            begin = getattr(penalty, "begin_task", None)
            if begin is not None:
                begin(self.net, task_id)
        self._task_id = task_id
        net = self.net  # raw logits through the loop (what the per-step hooks see), masked for the loss
        info = self.train(partial(net.raw, task_id=task_id), lambda z, y: F.cross_entropy(net.mask(z), y),
                          data.x, data.y)
        if self.p.training.dead_units:
            info.update({f"dead_{k}": v for k, v in
                         dead_unit_fractions(self.net, lambda xb: self.net(xb, task_id), data.x).items()})
        for penalty in self.penalties:
            info.update(penalty.after_task(self.net, task_id, data))
        if self.scheduler is not None:
            info.update(self.scheduler.task_info())
        info.update(self.end_task(task_id, data) or {})
        return info

    def task_series(self) -> dict[str, float]:
        """The scheduler's per-layer counts of this task: ``n_lot_cools/<layer>``, ``n_lot_warms/<layer>``."""
        return {} if self.scheduler is None else self.scheduler.task_series()

    def trace(self) -> dict[str, list] | None:
        """The scheduler's per-layer series over the control steps (None without a scheduler)."""
        return None if self.scheduler is None else self.scheduler.trace()

    def _optimizer_params(self):
        """What the optimiser is built over: every parameter, or one group per layer for the scheduler."""
        return self.net.parameters() if self.scheduler is None else self.scheduler.param_groups()

    def train(self, forward: Callable[[torch.Tensor], torch.Tensor],
              criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
              x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
        """Epochs of minibatch steps of criterion(forward(x), y) + penalties.

        Returns the loop's loss figures and, when ``y`` holds class labels,
        ``online_acc`` (and ``online_acc_last_epoch``): the percentage of the
        training minibatches' samples the network predicted right in the
        forward pass of their step, before the update (counted on the device:
        one sync per task).
        """
        loop = self.p.training
        if self.optimizer is None or loop.reset_optimizer:
            self.optimizer = self.p.optimizer.build(self._optimizer_params())
        net, opt, penalties, scheduler = self.net, self.optimizer, self.penalties, self.scheduler
        # a hook costs a call per step only when a subclass defines it
        hook, batch_forward, batch_loss, before_step, after_step = (
            getattr(self, name) if getattr(type(self), name) is not getattr(Finetune, name) else None
            for name in ("extra_loss", "batch_forward", "batch_loss", "before_step", "after_step"))
        task_id = getattr(self, "_task_id", None)

        def extra_terms() -> list[torch.Tensor]:
            """What the step adds to the task loss, in order: the penalties, then the hook's term."""
            terms = [t for t in (penalty.loss(net) for penalty in penalties) if t is not None]
            if hook is not None:
                extra = hook(task_id)
                if extra is not None:
                    terms.append(extra)
            return terms

        per_epoch = num_batches(x.shape[0], loop.batch_size)
        if scheduler is not None:
            scheduler.begin(opt, lambda xb, yb: criterion(forward(xb), yb), total_steps=loop.epochs * per_epoch,
                            extra=extra_terms)
        net.train()
        labels = y.ndim == 1 and not torch.is_floating_point(y)  # class labels: count the hits
        correct = torch.zeros((), dtype=torch.long, device=x.device)
        counted = {"steps": 0, "last_epoch_from": (loop.epochs - 1) * per_epoch, "last_epoch_correct": None}
        masked = getattr(net, "mask", None)  # class_incremental: predictions among the live classes only

        def step(xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            nonlocal correct
            logits = forward(xb) if batch_forward is None else batch_forward(forward, xb)
            loss = criterion(logits, yb)
            for extra in extra_terms():
                loss = loss + extra
            if labels:
                if counted["steps"] == counted["last_epoch_from"]:
                    counted["last_epoch_correct"] = correct.clone()
                shown = logits.detach() if masked is None else masked(logits.detach())
                correct = correct + (shown.argmax(dim=1) == yb).sum()
                counted["steps"] += 1
            if batch_loss is not None:
                loss = batch_loss(xb, yb, logits, loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if before_step is not None:
                before_step()
            if scheduler is not None:  # measures on the weights and gradients this step will act on
                scheduler.before_step(xb, yb)
            opt.step()
            if after_step is not None:
                after_step(xb, yb, logits)
            return loss

        info = fit(step, x, y, epochs=loop.epochs, batch_size=loop.batch_size, generator=self.generator)
        check = getattr(opt, "check", None)  # optimisers that can tell divergence the loss does not show yet
        if check is not None:
            check()
        if labels:
            n = x.shape[0]
            info["online_acc"] = 100.0 * correct.item() / (loop.epochs * n)
            last = correct - counted["last_epoch_correct"] if counted["last_epoch_correct"] is not None else correct
            info["online_acc_last_epoch"] = 100.0 * last.item() / n
        return info

    @torch.no_grad()
    def predict(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        self.net.eval()
        return self.net(x, task_id)

    def state_dict(self) -> dict[str, Any]:
        # A snapshot: torch's state dicts alias live tensors (and Adam's state
        # would be shared after load_state_dict), so copy.
        return copy.deepcopy({
            "net": self.net.state_dict(),
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "penalties": [p.state_dict() for p in self.penalties],
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        })

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.generator.set_state(state["generator"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.optimizer = None
        if state["optimizer"] is not None:
            self.optimizer = self.p.optimizer.build(self._optimizer_params())
            self.optimizer.load_state_dict(state["optimizer"])
        for penalty, s in zip(self.penalties, state["penalties"]):
            penalty.load_state_dict(s)
