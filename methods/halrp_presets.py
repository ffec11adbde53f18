"""HALRP's official settings per benchmark, as named presets (``preset: pmnist`` in a study).

A preset fills the parameters a study did not set; anything set explicitly
wins. Values: specs/halrp.md "Hyperparameters" (epochs, batch, lr, wd_rate,
l1_hyp, approx_rate, upper_rank, est_rank_epochs, prune_bound), and for
Tiny-ImageNet, where the spec gives only epochs/batch/est_rank_epochs, the
authors' scripts (scripts/tiny{20,40}_{AlexNet,ResNet18}_HALRP.sh).

A preset sets method parameters only. The benchmark side is the study's:
the paper holds out 20% of each task's training set for validation (10% on
Tiny-ImageNet): ``benchmark.params.val_fraction: 0.2``. Our quirk switches
(scale_l2_target, count_task_biases, lr_schedule, grad_multiplier,
prune_rule) keep our defaults under every preset.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

RESNET18_REDUCED = [32, 64, 128, 256]  # resnet9 stage widths: the spec's width-32 reduced ResNet-18


def _official(backbone: str, epochs: int, batch_size: int, lr: float, wd_rate: float, l1_hyp: float,
              approx_rate: float, upper_rank: int, est_rank_epochs: int, prune_bound: float) -> dict[str, Any]:
    network: dict[str, Any] = {"backbone": backbone}
    if backbone == "resnet9":
        network["channels"] = list(RESNET18_REDUCED)
    return dict(network=network, training={"epochs": epochs, "batch_size": batch_size},
                optimizer={"name": "adam", "lr": lr}, wd_rate=wd_rate, l1_hyp=l1_hyp, approx_rate=approx_rate,
                upper_rank=upper_rank, est_rank_epochs=est_rank_epochs, prune_bound=prune_bound)


PRESETS: dict[str, dict[str, Any]] = {
    # PMNIST 10x10, LeNet
    "pmnist": _official("lenet", 12, 128, 1e-3, 1e-3, 1e-6, 0.9, 100, 1, 0.40),
    # CIFAR-100 Split 10x10 and SuperClass 20x5, LeNet
    "cifar100_split": _official("lenet", 20, 128, 1e-3, 1e-4, 1e-4, 0.9, 100, 1, 0.80),
    "cifar100_superclass": _official("lenet", 20, 128, 1e-3, 1e-4, 1e-4, 0.9, 100, 1, 0.80),
    # 5-Datasets 5x10
    "five_datasets_alexnet": _official("alexnet", 12, 128, 1e-3, 1e-4, 1e-6, 0.9, 100, 1, 0.40),
    "five_datasets_resnet": _official("resnet9", 12, 128, 1e-3, 1e-4, 1e-6, 0.95, 120, 3, 0.40),
    # Tiny-ImageNet 20x10 / 40x5 (authors' scripts)
    "tinyimagenet20_alexnet": _official("alexnet", 50, 32, 1e-3, 5e-4, 1e-5, 0.9, 100, 25, 0.40),
    "tinyimagenet40_alexnet": _official("alexnet", 50, 32, 1e-3, 1e-4, 5e-4, 0.9, 100, 20, 0.40),
    "tinyimagenet_resnet": _official("resnet9", 50, 32, 5e-4, 1e-4, 5e-4, 0.9, 100, 25, 0.40),
}


def apply_preset(data: Any) -> Any:
    """Raw params (a dict, flat keys already nested) with the preset's values filled in where the user
    gave none, component by component: ``optimizer: {lr: 0.01}`` keeps the preset's adam."""
    if not isinstance(data, dict) or data.get("preset") is None:
        return data
    name = data["preset"]
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(PRESETS)} (or null for none)")
    return _fill(PRESETS[name], data)


def _fill(preset: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(preset)
    for key, value in given.items():
        if isinstance(value, BaseModel):
            value = value.model_dump(by_alias=True)
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            value = _fill(out[key], value)
        out[key] = value
    return out
