"""Adam's effective step per layer, the superseded reading against the authors' (specs/lot.md).

On one model state — plain Adam (reset_optimizer false) after --tasks tasks
of random-label MNIST (the main study's setting: 2500 images, MLP
784-256-256-10, batch 256, 20 epochs per task) — it prints per layer:

- old: clorch 2026-11, mean over every element (weights and bias) of
  lr / ((1 - beta1^t)(sqrt(v_hat_i) + eps));
- new: the authors', per weight tensor lr / ((1 - beta1^t)(sqrt(mean(v)/(1 - beta2^t)) + eps)),
  bias skipped;
- their ratio, the share of the weight's v entries below 1e-12 (weights that
  barely ever get a gradient: those reading dead units), the dead-unit
  fraction of the layer's input, and on a minibatch of the last task the
  noise-only threshold tau = B G / sigma^2 and what the rule would decide with
  either reading (safety 0.8, floor 0.12: cool if eta_eff > floor and > 0.8 tau).

Run: python bench/lot_eta_eff.py --data-root ../shared/data [--tasks 5] [--lrs 1e-3 1e-2]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import datasets
from datasets.common import LoadContext
from methods import METHODS, MethodContext, seed_everything
from methods.lot_scheduler import COOL, WARM, lot_action
from methods.lot_signals import (
    adam_effective_step,
    dead_unit_fractions,
    elementwise_effective_step,
    layer_groups,
    signal_and_noise,
    threshold,
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--tasks", type=int, default=5)
    ap.add_argument("--images", type=int, default=2500)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    entry = datasets.BENCHMARKS.get("random_label_mnist")
    bench = entry.target(entry.params(num_tasks=args.tasks, num_images=args.images, download=False),
                         LoadContext.resolve(cli_root=args.data_root))
    print(f"random_label_mnist, {args.images} images, {args.epochs} epochs x batch 256 per task, MLP 784-256-256-10, "
          f"plain Adam (state kept over tasks), seed {args.seed}; state after {args.tasks} tasks")
    names = {"backbone.1": "hidden 1 (784x256)", "backbone.3": "hidden 2 (256x256)", "heads.0": "output (256x10)"}
    reads = {"backbone.1": None, "backbone.3": "backbone.2", "heads.0": "backbone.4"}  # the activation it reads
    for lr in args.lrs:
        seed_everything(args.seed)
        ctx = MethodContext(bench.input_shape, bench.classes_per_task, "domain_incremental", torch.device("cpu"),
                            args.seed)
        m = METHODS.get("finetune").target(METHODS.get("finetune").params(
            optimizer={"name": "adam", "lr": lr}, network={"hidden": [256, 256]},
            training={"batch_size": 256, "epochs": args.epochs, "reset_optimizer": False}), ctx)
        started = time.perf_counter()
        for t in range(args.tasks):
            info = m.learn_task(t, bench.tasks[t].on(ctx.device, "train"))
        data = bench.tasks[args.tasks - 1].on(ctx.device, "train")
        net = m.net
        dead = dead_unit_fractions(net, lambda xb, net=net: net(xb, 0), data.x)
        opt = m.optimizer
        hyper = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
        xb, yb = data.x[:256], data.y[:256]
        layers = layer_groups(m.net)
        noise = signal_and_noise(net, lambda a, b, net=net: F.cross_entropy(net(a, 0), b), layers, xb, yb)
        print(f"\nAdam lr {lr:g} ({time.perf_counter() - started:.0f} s; last task's online acc "
              f"{info['online_acc']:.1f}%)")
        print("| layer | eta_eff old | eta_eff new | old / new | v_W < 1e-12 | dead units read | tau (noise-only) "
              "| rule with old | rule with new |")
        print("|---|---:|---:|---:|---:|---:|---:|---|---|")
        word = {COOL: "cool", WARM: "warm", 0: "keep"}
        for name, params in layers.items():
            if name not in names:
                continue
            group = {**hyper, "params": [w for _, w in params]}
            old = elementwise_effective_step(opt, group)
            new, _ = adam_effective_step(opt, group)
            weight = next(w for _, w in params if w.ndim >= 2)
            tiny = float((opt.state[weight]["exp_avg_sq"] < 1e-12).float().mean())
            tau = threshold(xb.shape[0], *noise[name])
            late = (50, 100)  # past the warm window: only cooling can fire
            rule = [word[lot_action(e, tau, *late)] for e in (old, new)]
            d = dead.get(reads[name]) if reads[name] else None
            print(f"| {names[name]} | {old:.3g} | {new:.3g} | {old / new:.1f}x | {tiny:.1%} | "
                  f"{'–' if d is None else f'{d:.1%}'} | {tau:.3g} | {rule[0]} | {rule[1]} |")


if __name__ == "__main__":
    main()
