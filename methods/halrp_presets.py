"""HALRP's official runs, as named presets (``preset: pmnist`` in a study), and the ``variant`` switch.

A preset named after a benchmark is what a reader takes for "the paper's
setting", so it is the authors' run (specs/halrp.md, "Presets must be the
authors' runs"): the hyperparameters of their script
(lijiaqi/HALRP scripts/<benchmark>_<net>_HALRP.sh) AND every quirk of their
code (``OFFICIAL_QUIRKS``), the learning-rate decay their code applies to
that benchmark, and their network (``resnet18_halrp``: conv bias,
avg_pool2d(., 2), 1024-d head input; ``alexnet_batch_stats``: BatchNorm on
batch statistics).

``variant`` picks the set of quirk values: ``official`` (the default under a
preset) or ``clorch`` (our preferences: ``CLORCH_QUIRKS``, and for the
AlexNet/ResNet presets our backbones ``alexnet`` / ``resnet9`` at the same
widths). Precedence, key by key: what the study sets explicitly, then the
variant, then the preset, then the field defaults (which are ours).

The learning-rate decay. The code steps an ExponentialLR after every batch
with gamma = 0.95 ** (B / (50000 / T * (1 - valid))) (run_<benchmark>.py;
50000/T x 0.8 = 4000 is a CIFAR-100-split task's training set), so one epoch
of a task of N training images over S = N // B (drop_last) or ceil(N / B)
batches decays the lr by f_epoch = gamma ** S = 0.95 ** (S B / 4000), about
0.95 ** (N / 4000): x0.54 on PMNIST (N = 48,000), x0.95 on CIFAR-100 split.
A preset fixes ``lr_decay`` to that f_epoch (``official_epoch_factor``) and
``lr_schedule: batch`` spreads it over the steps our loop really takes,
gamma_batch = f_epoch ** (1 / steps_per_epoch), so a reduced study
(train_fraction < 1, fewer tasks) decays per epoch exactly as the official
run did. 5-Datasets tasks differ in N, so their factor is a list, one per
task identity of our ``five_datasets`` (CIFAR-10, MNIST, SVHN,
Fashion-MNIST, notMNIST).

A preset sets method parameters only. The benchmark side is the study's:
``benchmark.params.val_fraction: 0.2`` (0.1 on Tiny-ImageNet), and on
permuted_mnist ``protocol: halrp`` with ``pmnist_input: official`` (the
default: bilinear resize to 32x32, Normalize(0.1307, 0.3081), 3 channels,
one permutation of all 3072 values per task).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

RESNET18_WIDTHS = [32, 64, 128, 256]  # the code's ResNet_flat_18, nf = 32
DECAY_BASE = 0.95  # the code's 0.95 ** (B / (50000 / T * (1 - valid)))
VARIANTS = ("official", "clorch")

# Every quirk of the authors' code that does not depend on the benchmark (specs/halrp.md steps 7-9).
OFFICIAL_QUIRKS: dict[str, Any] = {
    "scale_l2_target": 0,        # the L2 term pulls mR, mS toward 0
    "prune_rule": "paper",       # rho = 1 - (1 - q) / I
    "count_task_biases": False,  # count_parameter() leaves the task biases out
    "grad_multiplier": 10.0,     # param.grad *= 10.0 before every step
}
# Our preferences: the field defaults of HALRPParams.
CLORCH_QUIRKS: dict[str, Any] = {
    "scale_l2_target": 1, "prune_rule": "strict", "count_task_biases": True, "grad_multiplier": 1.0,
    "lr_schedule": "epoch", "lr_decay": 0.95,
}
# variant clorch under a preset that uses the authors' network: ours at the same widths
CLORCH_BACKBONES: dict[str, dict[str, Any]] = {
    "alexnet_batch_stats": {"backbone": "alexnet"},
    "resnet18_halrp": {"backbone": "resnet9", "channels": list(RESNET18_WIDTHS)},
}


def official_epoch_factor(n_train: int, batch_size: int, drop_last: bool, tasks: int, valid: float) -> float:
    """f_epoch of the official run: its per-batch gamma compounded over its batches of one epoch.

    gamma = 0.95 ** (B / (50000 / T * (1 - valid))); batches = N // B with
    drop_last, else ceil(N / B) (train_size 1 in every official script).
    """
    steps = n_train // batch_size if drop_last else math.ceil(n_train / batch_size)
    return (DECAY_BASE ** (batch_size / (50000 / tasks * (1 - valid)))) ** steps


@dataclass(frozen=True)
class OfficialData:
    """What the official per-batch decay of one task sees: its training images after validation is held out."""

    n_train: int      # training images of the task after the validation split
    drop_last: bool   # the code's training DataLoader
    tasks: int        # n_task in the code's gamma formula
    valid: float      # --valid_size (the gamma formula's (1 - valid))
    source: str       # where N comes from

    def factor(self, batch_size: int) -> float:
        return official_epoch_factor(self.n_train, batch_size, self.drop_last, self.tasks, self.valid)


@dataclass(frozen=True)
class OfficialRun:
    """One official script: its hyperparameters, network and the data its lr decay is sized by."""

    script: str
    backbone: str
    epochs: int
    batch_size: int
    lr: float
    wd_rate: float
    l1_hyp: float
    approx_rate: float
    upper_rank: int
    est_rank_epochs: int
    prune_bound: float
    val_fraction: float
    data: tuple[OfficialData, ...]  # one entry, or one per task identity (5-Datasets)

    def lr_decay(self) -> float | list[float]:
        factors = [d.factor(self.batch_size) for d in self.data]
        return factors[0] if len(factors) == 1 else factors

    def params(self) -> dict[str, Any]:
        """The preset: every parameter the official run fixes, as raw HALRP params."""
        network: dict[str, Any] = {"backbone": self.backbone}
        return dict(network=network, training={"epochs": self.epochs, "batch_size": self.batch_size},
                    optimizer={"name": "adam", "lr": self.lr}, wd_rate=self.wd_rate, l1_hyp=self.l1_hyp,
                    approx_rate=self.approx_rate, upper_rank=self.upper_rank,
                    est_rank_epochs=self.est_rank_epochs, prune_bound=self.prune_bound,
                    **OFFICIAL_QUIRKS, lr_schedule="batch", lr_decay=self.lr_decay())


# The training sets the official lr decay is sized by (loader_*.py of the official code).
_PMNIST = OfficialData(48_000, True, 10, 0.2, "loader_pmnist.py: 60,000 - int(0.2 x 60,000), drop_last")
_CIFAR_SPLIT = OfficialData(4_000, False, 10, 0.2, "loader_cifar100.py: 5,000 - floor(0.2 x 5,000)")
_CIFAR_SUPER = OfficialData(2_000, False, 20, 0.2, "loader_cifar100.py: 2,500 - floor(0.2 x 2,500)")
_FIVE = tuple(OfficialData(n - int(0.2 * n), True, 5, 0.2, f"loader_five.py: {name} {n:,} - int(0.2 x {n:,}), drop_last")
              for name, n in (("CIFAR-10", 50_000), ("MNIST", 60_000), ("SVHN", 73_257),
                              ("Fashion-MNIST", 60_000),
                              # the code downloads ACL's notmnist pickle; its size is not in the code:
                              # 16,853 training images is ACL's table (assumed here)
                              ("notMNIST", 16_853)))
_TINY20 = OfficialData(4_500, False, 20, 0.1, "loader_tiny: 10 classes x (500 - int(0.1 x 500))")
_TINY40 = OfficialData(2_250, False, 40, 0.1, "loader_tiny: 5 classes x (500 - int(0.1 x 500))")

OFFICIAL_RUNS: dict[str, OfficialRun] = {
    "pmnist": OfficialRun("pmnist_LeNet_HALRP.sh", "lenet", 12, 128, 1e-3, 1e-3, 1e-6, 0.9, 100, 1, 0.40, 0.2,
                          (_PMNIST,)),
    "cifar100_split": OfficialRun("cifar100_splits100_LeNet_HALRP.sh", "lenet", 20, 128, 1e-3, 1e-4, 1e-4, 0.9, 100,
                                  1, 0.80, 0.2, (_CIFAR_SPLIT,)),
    "cifar100_superclass": OfficialRun("cifar100_super100_LeNet_HALRP.sh", "lenet", 20, 128, 1e-3, 1e-4, 1e-4, 0.9,
                                       100, 1, 0.80, 0.2, (_CIFAR_SUPER,)),
    "five_datasets_alexnet": OfficialRun("five_AlexNet_HALRP.sh", "alexnet_batch_stats", 12, 128, 1e-3, 1e-4, 1e-6,
                                         0.9, 100, 1, 0.40, 0.2, _FIVE),
    "five_datasets_resnet": OfficialRun("five_ResNet18_HALRP.sh", "resnet18_halrp", 12, 128, 1e-3, 1e-4, 1e-6, 0.95,
                                        120, 3, 0.40, 0.2, _FIVE),
    "tinyimagenet20_alexnet": OfficialRun("tiny20_AlexNet_HALRP.sh", "alexnet_batch_stats", 50, 32, 1e-3, 5e-4,
                                          1e-5, 0.9, 100, 25, 0.40, 0.1, (_TINY20,)),
    "tinyimagenet40_alexnet": OfficialRun("tiny40_AlexNet_HALRP.sh", "alexnet_batch_stats", 50, 32, 1e-3, 1e-4,
                                          5e-4, 0.9, 100, 20, 0.40, 0.1, (_TINY40,)),
    "tinyimagenet20_resnet": OfficialRun("tiny20_ResNet18_HALRP.sh", "resnet18_halrp", 50, 32, 5e-4, 1e-4, 5e-4,
                                         0.9, 100, 25, 0.40, 0.1, (_TINY20,)),
    "tinyimagenet40_resnet": OfficialRun("tiny40_ResNet18_HALRP.sh", "resnet18_halrp", 50, 32, 5e-4, 1e-4, 5e-4,
                                         0.9, 100, 25, 0.40, 0.1, (_TINY40,)),
}

PRESETS: dict[str, dict[str, Any]] = {name: run.params() for name, run in OFFICIAL_RUNS.items()}


def variant_values(variant: str, preset: str | None) -> dict[str, Any]:
    """What ``variant`` sets (over the preset's values, under the study's explicit keys)."""
    if variant == "official":
        if preset is None:  # no benchmark known: the code's own formula, sized for a CIFAR-100 task
            return {**OFFICIAL_QUIRKS, "lr_schedule": "batch_cifar", "lr_decay": DECAY_BASE}
        return {**OFFICIAL_QUIRKS, "lr_schedule": "batch", "lr_decay": PRESETS[preset]["lr_decay"]}
    out = dict(CLORCH_QUIRKS)
    backbone = PRESETS[preset]["network"]["backbone"] if preset is not None else None
    if backbone in CLORCH_BACKBONES:
        out["network"] = dict(CLORCH_BACKBONES[backbone])
    return out


def apply_preset(data: Any) -> Any:
    """Raw params (a dict, flat keys already nested) with preset and variant values filled in where the
    study gave none, component by component (``optimizer: {lr: 0.01}`` keeps the preset's adam).

    ``variant`` null resolves to ``official`` under a preset; the resolved name is kept in the params, so a
    record says which set of quirks it ran.
    """
    if not isinstance(data, dict) or (data.get("preset") is None and data.get("variant") is None):
        return data
    preset, variant = data.get("preset"), data.get("variant")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {', '.join(PRESETS)} (or null for none)")
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; available: {' | '.join(VARIANTS)} (or null: official "
                         "under a preset, else the field defaults)")
    variant = variant or "official"
    layered = _fill(PRESETS[preset] if preset is not None else {}, variant_values(variant, preset))
    return {**_fill(layered, data), "variant": variant}


def _fill(preset: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(preset)
    for key, value in given.items():
        if isinstance(value, BaseModel):
            value = value.model_dump(by_alias=True)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = _fill(out[key], value)
        out[key] = value
    return out
