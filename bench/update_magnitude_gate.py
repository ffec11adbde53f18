"""The update-magnitude gate's per-block cosines on MNIST task pairs (specs/hybrid.md's unit checks).

A network is trained on task A (2 epochs, SGD), then task B arrives: s_t per
block (input -> output) is what ``learn_task`` logs for B (g_{t-1} at the end
of A, g_t at B's arrival, same weights). Pairs: identical (A = B = upright),
rot 0 -> rot 10, perm P1 -> perm P2 (two unrelated permutations), and rot 0 ->
P1. The images are the same N training images transformed.

    .venv/bin/python bench/update_magnitude_gate.py [--backbone mlp|resnet9] [--images 640]
        [--set gate_head=shared --set reference_head=trained ...]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from datasets.benchmark import DeviceSplit
from datasets.mnist import _rotate, mnist_arrays
from methods import METHODS, MethodContext, seed_everything

NETS = {"mlp": ({"backbone": "mlp", "hidden": [128, 128, 128]}, 0.05),
        "resnet9": ({"backbone": "resnet9", "channels": [8, 16, 32, 64]}, 0.01)}


def views(root: Path, n: int) -> dict[str, DeviceSplit]:
    x_tr, y_tr, _, _ = mnist_arrays("mnist", root, False)
    rng = np.random.default_rng(0)
    idx = rng.choice(len(y_tr), n, replace=False)
    x, y = x_tr[idx][:, None], torch.from_numpy(y_tr[idx])
    p1, p2 = rng.permutation(784), rng.permutation(784)

    def split(a):
        return DeviceSplit((torch.from_numpy(np.ascontiguousarray(a)).float() / 255 - 0.1307) / 0.3081, y)

    def scramble(a, perm):
        return a.reshape(len(a), -1)[:, perm].reshape(a.shape)

    return {"rot0": split(x), "rot10": split(_rotate(x, 10.0)), "perm1": split(scramble(x, p1)),
            "perm2": split(scramble(x, p2))}


def cosines(net: dict, lr: float, first: DeviceSplit, then: DeviceSplit, **params) -> list[float]:
    entry = METHODS.get("update_magnitude")
    seed_everything(0)
    p = entry.params(strategy="frozen", network=net, training={"epochs": 2, "batch_size": 32},
                     optimizer={"name": "sgd", "lr": lr, "momentum": 0.9}, **params)
    m = entry.target(p, MethodContext((1, 28, 28), (10, 10), "task_incremental", torch.device("cpu"), 0))
    m.learn_task(0, first)
    info = m.learn_task(1, then)
    return [info[f"s_t_{b}"] for b in range(len(m.freezer))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", choices=sorted(NETS), default="mlp")
    ap.add_argument("--images", type=int, default=640)
    ap.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="a gate parameter (gate_head, reference_head, probe_sample, probe_steps, grad_batches, ...)")
    a = ap.parse_args()
    params = {}
    for kv in a.sets:
        k, v = kv.split("=", 1)
        params[k] = int(v) if v.isdigit() else float(v) if v.replace(".", "", 1).isdigit() else v
    torch.set_num_threads(1)
    v = views(a.data_root, a.images)
    net, lr = NETS[a.backbone]
    print(f"{a.backbone}, {a.images} images, {params or 'defaults'}: s_t per block, input -> output")
    for name, (first, then) in {"identical": ("rot0", "rot0"), "rot 0 -> rot 10": ("rot0", "rot10"),
                                "perm P1 -> perm P2": ("perm1", "perm2"), "rot 0 -> perm P1": ("rot0", "perm1")}.items():
        s = cosines(net, lr, v[first], v[then], **params)
        print(f"  {name:20s} " + " ".join(f"{c:+.2f}" for c in s) + f"   mean {np.mean(s):+.2f}")


if __name__ == "__main__":
    main()
