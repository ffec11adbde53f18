"""Is the first stretch's collapse at the jump (resnet9, initialized, mixed_similarity_mnist) BN statistics or weights?

Trains rot 0, 10, 20 and then P1 + rot 0 (every block), as the identity order
of studies/update_magnitude_mixed_resnet9.yaml does, prints the test accuracy
of the first stretch before and after the jump, then re-estimates every BN
layer's running statistics on rot 0's training images (weights untouched) and
prints it again.

    .venv/bin/python bench/update_magnitude_bn.py [--data-root ../shared/data]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from datasets import LoadContext, load_benchmark
from methods import METHODS, MethodContext, seed_everything
from methods.loop import accuracy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    a = ap.parse_args()
    torch.set_num_threads(1)
    b = load_benchmark("mixed_similarity_mnist", {"angles": [0, 10, 20], "stretches": 2, "train_fraction": 0.02,
                                                  "val_fraction": 0.01, "test_images": 2000}, LoadContext(a.data_root))
    cpu = torch.device("cpu")
    seed_everything(0)
    entry = METHODS.get("update_magnitude")
    p = entry.params(strategy="initialized", network={"backbone": "resnet9", "channels": [8, 16, 32, 64]},
                     training={"epochs": 2, "batch_size": 32}, optimizer={"name": "sgd", "lr": 0.01, "momentum": 0.9})
    m = entry.target(p, MethodContext(b.input_shape, b.classes_per_task, "task_incremental", cpu, 0))
    train = [t.on(cpu, "train") for t in b.tasks]
    test = [t.on(cpu, "test") for t in b.tasks]

    def accs(tasks):
        return [round(accuracy(lambda x, j=j: m.predict(x, j), test[j].x, test[j].y), 1) for j in tasks]

    for t in (0, 1, 2):
        m.learn_task(t, train[t])
    print("after rot 0 / 10 / 20:", accs((0, 1, 2)))
    m.learn_task(3, train[3])
    print("after the jump (P1 + rot 0, every block): rot 0 / 10 / 20, P1:", accs((0, 1, 2, 3)))
    for module in m.net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the passes below
    m.net.train()
    with torch.no_grad():
        for i in range(0, len(train[0].x), 64):
            m.net.backbone(train[0].x[i:i + 64])
    print("same weights, BN statistics re-estimated on rot 0:", accs((0, 1, 2, 3)))


if __name__ == "__main__":
    main()
