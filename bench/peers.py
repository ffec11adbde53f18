"""Peers: one permuted-MNIST protocol through clorch, a bare PyTorch loop and Avalanche.

What it measures
    The same continual-learning run, timed end to end for each contestant and
    scored on the same test images:

    protocol  permuted MNIST as clorch's ``permuted_mnist`` (protocol standard:
              784 flat pixels, task 0 unpermuted, tasks 1-4 seeded permutations,
              permutation_seed 0), 5 tasks, identity order, domain-incremental
              (one 10-way head shared by every task), ``val_fraction`` 0 (each
              task trains on all 60,000 training images; tests on all 10,000);
              MLP 784-256-256-10 (ReLU), SGD lr 0.01 momentum 0.9 (a fresh
              optimiser per task), batch 128, 1 epoch per task, cross-entropy;
              after every task, every task seen so far is evaluated on its test
              split (what a clorch trial does; 15 evaluations of 10,000 images).
    bare      the loop a PyTorch user writes by hand on the float tensors the
              clorch trial itself trains on (``Task.on``: uint8 -> float,
              standardised with the training images' mean and std): per task a
              fresh SGD, per epoch ``torch.randperm`` from one generator seeded as
              clorch's method seeds its own, per step zero_grad / forward /
              cross_entropy / backward / step; evaluation in batches of 4096 under
              no_grad. It starts from clorch's initial weights and draws clorch's
              batches, so its final weights must equal clorch finetune's: the
              script checks that (``same weights``), to show both did the same work.
    clorch    ``orchestrator.run.trial.run_trial`` (what a study's Tune worker
              calls, orchestrator/run/trainable.py) on a ``TrialSpec`` of method
              ``finetune`` (and ``ewc``), in this process, without Ray: the
              Ray worker, Tune's reporting and the driver's MLflow/JSON writes are
              not in these figures (bench/orchestration_overhead.py measures
              those). As in a study it gets the benchmark (uint8 arrays), builds
              the method, moves and converts every split itself (counted in its
              time), reports a row per task and, with ``checkpoints=True`` and a
              study's default ``checkpoint_every_s`` (10 s) as the trainable
              does, builds a TrialState after a task once that much time passed,
              which the report callback writes to a temporary directory with
              ``orchestrator.run.checkpoint.save_state`` (``--checkpoint-every-s
              0``: after every task; ``--no-checkpoints``: never). EWC: clorch's
              ``ewc`` at ``--ewc-lambda``.
    avalanche ``avalanche.training.Naive`` and ``EWC`` (avalanche-lib 0.6.0, when
              importable), on the same float tensors: one
              ``_make_taskaware_tensor_classification_dataset`` per task and split
              (task label 0, targets the labels), a benchmark from
              ``benchmark_from_datasets(train=..., test=...)``, the same
              ``nn.Sequential`` MLP with clorch's initial weights, the same SGD,
              ``train_mb_size`` 128, ``train_epochs`` 1, ``eval_mb_size`` 4096,
              ``device`` cpu; per task ``strategy.train(exp,
              reset_optimizer_state=True)`` (a fresh SGD state, as the others) then
              ``strategy.eval(test_stream[:k + 1])``. Building the benchmark from
              the tensors is not timed; building the strategy is.

    Differences that remain, by design of each library (and that the times include):
    - Avalanche feeds batches through torch DataLoaders over its dataset objects
      (``__getitem__`` per sample, then collate; ``num_workers`` 0), shuffled by
      the global torch RNG (seeded before each run); clorch and the bare loop
      index whole batches out of one tensor.
    - Avalanche's evaluation goes through its EvaluationPlugin: here accuracy at
      experience level and no loggers (its ``default_evaluator`` adds epoch and
      stream accuracy and loss and an InteractiveLogger printing progress bars).
      clorch counts each step's training accuracy on the device (its
      ``online_acc``), which the bare loop does not.
    - EWC is not the same estimator in the two libraries, so the two EWC rows
      are each library's EWC, not one algorithm. clorch: after each task the
      diagonal Fisher from per-sample gradients (torch.func) of 1,024 training
      images, penalty (lambda / 2) sum F (theta - theta*)^2 with the tasks' Fishers
      folded into one (A, m) pair. Avalanche (mode "separate"): an extra pass over
      all 60,000 training images, F = the mean over minibatches of the squared
      minibatch-mean gradient, one penalty term per past task, lambda sum F (theta -
      theta*)^2. A squared minibatch-mean gradient is about 1/batch of the mean
      squared per-sample one, so ``--avalanche-ewc-lambda`` defaults to
      batch / 2 x ``--ewc-lambda`` (6,400 for 100) to ask for about the same
      penalty; its accuracies are not tuned.
    - clorch's time includes turning the uint8 arrays into float tensors
      (``Task.on``, every test split once and each task's train split when it is
      trained); the bare loop and Avalanche get those tensors ready-made.

    Timing: torch.set_num_threads(1); each contestant runs once untimed (warm-up),
    then ``--repeats`` timed runs, the contestants' order rotated every repeat so
    machine noise spreads over all of them; medians reported, and the ratio of
    each median to the bare loop's, of wall time and of this process's CPU time
    over the same span (``time.process_time``: with one torch thread and no
    DataLoader workers it is the work each contestant did, and much less moved
    than wall time by other jobs on a shared machine). Accuracy: each contestant's own evaluation
    after the last task (clorch's trial record, the bare loop's, Avalanche's
    Top1_Acc_Exp metric), averaged over the 5 tasks (ACC); Avalanche's final
    weights are also scored with the bare loop's evaluation function, as a check
    that its metric reads the same images the same way.

Measured (2-core machine shared with other jobs, load average 2-5; median of 5)
    bare 7.81 s; clorch finetune 7.93 s = 1.02x; clorch ewc 13.45 s = 1.72x;
    Avalanche Naive 17.49 s = 2.24x (CPU 1.84x); Avalanche EWC 37.92 s = 4.86x
    (its eval alone 4.2-4.8 s against clorch's 0.7 s). Final ACC: bare = clorch
    finetune 83.03 (the same weights), Avalanche Naive 83.53, clorch ewc 91.43,
    Avalanche EWC 91.00. clorch finetune against the bare loop alone, in four
    more runs (3-5 rounds each): 1.08x, 1.22x, 1.30x, 1.38x (the machine's noise:
    single runs of either moved by 20-70%), so read it as 1.0-1.4x, about 1.2x;
    what clorch does beyond the bare loop is Task.on of the train splits (0.75-0.95
    s in all, ~10% of the bare run); its learn_task on ready tensors is 0.95-1.06x
    the bare loop. An
    older main (a2003dd: a checkpoint after every task, EWC before its _foreach
    penalty) measured 1.24x (finetune) and 2.58x (ewc), the Avalanche rows 2.35x
    and 5.25x.

How to run (from the repository root)
    .venv/bin/python bench/peers.py                     # clorch and bare only, if avalanche is missing
    .venv/bin/python bench/peers.py --avalanche-path /work/avl --repeats 5

    avalanche-lib is never a dependency of clorch. To add it without touching the
    project's environment or its torch, into a separate folder:

        .venv/bin/pip install --target /tmp/avl --no-deps avalanche-lib==0.6.0 \\
            dill gdown beautifulsoup4 soupsieve pytorchcv wandb xxhash psutil gputil \\
            torchmetrics lightning-utilities tensorboard absl-py qpsolvers
        .venv/bin/python bench/peers.py --avalanche-path /tmp/avl

    (--no-deps: avalanche-lib's own requirements would pull another torch; the
    list is the modules ``import avalanche.training`` needs beside what clorch
    already has. ``--avalanche-path`` is appended to sys.path, so it never
    shadows the environment's packages.)
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from datasets import LoadContext, load_benchmark  # noqa: E402
from methods import METHODS, MethodContext, seed_everything  # noqa: E402
from orchestrator.run.trial import run_trial  # noqa: E402
from orchestrator.study.schema import Study, TrialSpec  # noqa: E402

NUM_TASKS = 5
HIDDEN = [256, 256]
LR, MOMENTUM, BATCH, EPOCHS = 0.01, 0.9, 128, 1
EVAL_BATCH = 4096   # clorch's methods.loop.accuracy batch; the bare loop and Avalanche use it too
SEED = 0
SETTING = "domain_incremental"  # permuted_mnist standard's default: one head shared by every task
AVALANCHE_VERSION = "0.6.0"
STUDY_CHECKPOINT_EVERY_S = Study.model_fields["checkpoint_every_s"].default  # what a study does by default
INSTALL_HINT = (f".venv/bin/pip install --target /tmp/avl --no-deps avalanche-lib=={AVALANCHE_VERSION} dill gdown "
                "beautifulsoup4 soupsieve pytorchcv wandb xxhash psutil gputil torchmetrics lightning-utilities "
                "tensorboard absl-py qpsolvers   # then: --avalanche-path /tmp/avl")


def finetune_params() -> dict[str, Any]:
    return {"network": {"backbone": "mlp", "hidden": HIDDEN},
            "training": {"epochs": EPOCHS, "batch_size": BATCH},
            "optimizer": {"name": "sgd", "lr": LR, "momentum": MOMENTUM, "weight_decay": 0.0}}


# ---------------------------------------------------------------- data and model
class Data:
    """The benchmark (what a clorch trial gets) and the float tensors it trains and tests on."""

    def __init__(self, root: Path, val_fraction: float):
        params = {"num_tasks": NUM_TASKS, "protocol": "standard", "val_fraction": val_fraction}
        self.params = params
        self.bench = load_benchmark("permuted_mnist", params, LoadContext(root))  # reads the .gz, unpacks nothing
        cpu = torch.device("cpu")
        self.train = [self.bench.split(k, cpu, "train", SETTING) for k in range(NUM_TASKS)]
        self.test = [self.bench.split(k, cpu, "test", SETTING) for k in range(NUM_TASKS)]


def initial_network():
    """clorch's network as a trial builds it (seed_everything(seed), then the method): its initial weights."""
    seed_everything(SEED)
    entry = METHODS.get("finetune")
    ctx = MethodContext((784,), (10,) * NUM_TASKS, SETTING, torch.device("cpu"), SEED)
    return entry.target(entry.params.model_validate(finetune_params()), ctx).net


def bare_model(init_net) -> nn.Sequential:
    """The same MLP, built the obvious way, with clorch's initial weights (backbone, then the one head)."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = 784
    for h in HIDDEN:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, 10))
    model = nn.Sequential(*layers)
    src = list(init_net.backbone.parameters()) + list(init_net.heads[0].parameters())
    dst = list(model.parameters())
    assert [t.shape for t in src] == [t.shape for t in dst]
    with torch.no_grad():
        for s, d in zip(src, dst):
            d.copy_(s)
    return model


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    for i in range(0, x.shape[0], EVAL_BATCH):
        correct += int((model(x[i:i + EVAL_BATCH]).argmax(1) == y[i:i + EVAL_BATCH]).sum())
    return 100.0 * correct / x.shape[0]


# ---------------------------------------------------------------- contestants
class Result:
    """One run: wall seconds, the seconds spent training and evaluating (the rest is setup: building the
    method or strategy, moving/converting data, checkpoints), and the accuracies after the last task."""

    def __init__(self, seconds: float, cpu_s: float, train_s: float, eval_s: float, final_row: list[float],
                 extra: dict[str, Any] | None = None):
        self.seconds, self.cpu_s, self.train_s, self.eval_s = seconds, cpu_s, train_s, eval_s
        self.final_row, self.extra = final_row, extra or {}

    @property
    def acc(self) -> float:
        return sum(self.final_row) / len(self.final_row)


def run_bare(data: Data, init_net) -> Result:
    model = bare_model(init_net)  # not timed: the clorch trial's network construction is, but it is ~ms
    t0, c0 = time.perf_counter(), time.process_time()
    generator = torch.Generator().manual_seed(SEED)  # clorch's Finetune: one generator over all tasks
    row: list[float] = []
    train_s = eval_s = 0.0
    for k in range(NUM_TASKS):
        t1 = time.perf_counter()
        x, y = data.train[k].x, data.train[k].y
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)  # fresh per task, as clorch's default
        model.train()
        n = x.shape[0]
        for _ in range(EPOCHS):
            perm = torch.randperm(n, generator=generator)
            for i in range(0, n, BATCH):
                idx = perm[i:i + BATCH]
                opt.zero_grad()
                loss = F.cross_entropy(model(x[idx]), y[idx])
                loss.backward()
                opt.step()
        t2 = time.perf_counter()
        row = [evaluate(model, data.test[j].x, data.test[j].y) for j in range(k + 1)]
        train_s, eval_s = train_s + t2 - t1, eval_s + time.perf_counter() - t2
    return Result(time.perf_counter() - t0, time.process_time() - c0, train_s, eval_s, row, {"model": model})


def clorch_runner(method: str, params: dict[str, Any], checkpoints: bool,
                  every_s: float) -> Callable[[Data, Any], Result]:
    from orchestrator.run.checkpoint import save_state

    def run(data: Data, init_net) -> Result:
        spec = TrialSpec(f"peers-{method}", f"peers-{method}", method, method, params, tuple(range(NUM_TASKS)), 0,
                         SEED, SETTING, False)
        with tempfile.TemporaryDirectory() as tmp:
            def report(row: dict[str, Any]) -> None:  # as the trainable: the per-task checkpoint to disk
                state = row.pop("checkpoint", None)
                if state is not None:
                    save_state(os.path.join(tmp, f"task{row['position']}"), state)

            t0, c0 = time.perf_counter(), time.process_time()
            rec = run_trial(spec, data.bench, report=report, checkpoints=checkpoints, checkpoint_every_s=every_s)
            seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        assert rec["status"] == "completed", rec
        timings = rec["timings"]  # per task: train_s (learn_task, with the train split's Task.on), eval_s
        return Result(seconds, cpu_s, sum(t["train_s"] for t in timings), sum(t["eval_s"] for t in timings),
                      [float(v) for v in rec["matrix"][-1]])

    return run


def avalanche_runner(kind: str, ewc_lambda: float):
    """Avalanche's Naive or EWC; the benchmark from the same tensors is built once per Data, outside the timing."""
    from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
    from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_tensor_classification_dataset
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import EWC, Naive

    cache: dict[int, Any] = {}

    def scenario(data: Data):
        if id(data) not in cache:
            def ds(split):
                return _make_taskaware_tensor_classification_dataset(split.x, split.y, task_labels=0, targets=split.y)

            cache[id(data)] = benchmark_from_datasets(train=[ds(s) for s in data.train], test=[ds(s) for s in data.test])
        return cache[id(data)]

    pattern = re.compile(r"Top1_Acc_Exp/eval_phase/test_stream/(?:Task\d+/)?Exp(\d+)$")

    def run(data: Data, init_net) -> Result:
        bm = scenario(data)
        model = bare_model(init_net)
        torch.manual_seed(SEED)  # Avalanche shuffles with the global RNG
        t0, c0 = time.perf_counter(), time.process_time()
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
        evaluator = EvaluationPlugin(accuracy_metrics(experience=True), loggers=[])
        common = dict(model=model, optimizer=opt, criterion=nn.CrossEntropyLoss(), train_mb_size=BATCH,
                      train_epochs=EPOCHS, eval_mb_size=EVAL_BATCH, device="cpu", evaluator=evaluator)
        strategy = (Naive(**common) if kind == "naive" else EWC(ewc_lambda=ewc_lambda, mode="separate", **common))
        test = list(bm.test_stream)
        row: dict[int, float] = {}
        train_s = eval_s = 0.0
        for k, exp in enumerate(bm.train_stream):
            t1 = time.perf_counter()
            # fresh optimiser state per task, as in clorch and the bare loop (Avalanche's default keeps
            # SGD's momentum buffers across experiences)
            strategy.train(exp, reset_optimizer_state=True)
            t2 = time.perf_counter()
            metrics = strategy.eval(test[:k + 1])
            train_s, eval_s = train_s + t2 - t1, eval_s + time.perf_counter() - t2
            row = {int(m.group(1)): 100.0 * float(v) for name, v in metrics.items()
                   if (m := pattern.search(name))}
        seconds, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        check = [evaluate(model, data.test[j].x, data.test[j].y) for j in range(NUM_TASKS)]
        return Result(seconds, cpu_s, train_s, eval_s, [row[j] for j in range(NUM_TASKS)], {"check_row": check})

    return run


def load_avalanche(path: str | None) -> str | None:
    """Import avalanche (``path`` appended to sys.path); its version, or None with the reason printed."""
    if path:
        sys.path.append(os.path.abspath(path))
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import avalanche
            import avalanche.training.supervised
    except Exception as e:  # noqa: BLE001 - any import failure means: skip, and say how to add it
        where = f" from {path}" if path else ""
        print(f"avalanche: not importable{where} ({type(e).__name__}: {str(e).splitlines()[0][:160]}); skipped.\n"
              f"  To add it (never a clorch dependency; leaves .venv's torch alone):\n    {INSTALL_HINT}")
        return None
    return getattr(avalanche, "__version__", "?")


# ---------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="/work/shared/data", help="torchvision data root holding MNIST/raw/*.gz")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per contestant (default 5)")
    ap.add_argument("--val-fraction", type=float, default=0.0, help="held out of each task's training set (default 0)")
    ap.add_argument("--ewc-lambda", type=float, default=100.0, help="clorch ewc's lambda (default 100)")
    ap.add_argument("--avalanche-ewc-lambda", type=float, default=None,
                    help="Avalanche EWC's lambda (default batch/2 x --ewc-lambda, see the docstring)")
    ap.add_argument("--avalanche-path", default=None, help="a folder holding avalanche-lib (pip --target)")
    ap.add_argument("--no-avalanche", action="store_true", help="clorch and the bare loop only")
    ap.add_argument("--no-ewc", action="store_true", help="leave out both EWC contestants")
    ap.add_argument("--no-checkpoints", action="store_true", help="clorch trials without checkpoints")
    ap.add_argument("--checkpoint-every-s", type=float, default=STUDY_CHECKPOINT_EVERY_S,
                    help=f"clorch trials checkpoint after a task once this many seconds passed (a study's "
                         f"checkpoint_every_s, default {STUDY_CHECKPOINT_EVERY_S:g}; 0: after every task)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    avl_lambda = args.avalanche_ewc_lambda if args.avalanche_ewc_lambda is not None else BATCH / 2 * args.ewc_lambda

    torch.set_num_threads(1)
    started = time.perf_counter()
    print(f"peers: permuted MNIST (standard), {NUM_TASKS} tasks, mlp 784-{'-'.join(map(str, HIDDEN))}-10, "
          f"sgd lr {LR} momentum {MOMENTUM}, batch {BATCH}, {EPOCHS} epoch/task, {SETTING}")
    print(f"  torch {torch.__version__}, cpu, 1 thread; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    data = Data(Path(args.data), args.val_fraction)
    print(f"  data: {data.train[0].x.shape[0]} training / {data.test[0].x.shape[0]} test images per task "
          f"(val_fraction {args.val_fraction}), loaded in {time.perf_counter() - t0:.1f} s")
    init_net = initial_network()

    checkpoints = not args.no_checkpoints
    contestants: dict[str, Callable[[Data, Any], Result]] = {
        "bare": run_bare,
        "clorch finetune": clorch_runner("finetune", finetune_params(), checkpoints, args.checkpoint_every_s),
    }
    if not args.no_ewc:
        contestants["clorch ewc"] = clorch_runner("ewc", {**finetune_params(), "ewc_lambda": args.ewc_lambda},
                                                  checkpoints, args.checkpoint_every_s)
    version = None if args.no_avalanche else load_avalanche(args.avalanche_path)
    if version is not None:
        print(f"  avalanche {version} (EWC lambda {avl_lambda:g}; clorch's {args.ewc_lambda:g})")
        contestants["avalanche naive"] = avalanche_runner("naive", avl_lambda)
        if not args.no_ewc:
            contestants["avalanche ewc"] = avalanche_runner("ewc", avl_lambda)
    names = list(contestants)
    print(f"  contestants: {', '.join(names)}; clorch via orchestrator.run.trial.run_trial in this process "
          f"(no Ray), {f'checkpoint_every_s {args.checkpoint_every_s:g}' if checkpoints else 'no checkpoints'}; "
          f"1 warm-up + "
          f"{args.repeats} timed runs each, order rotated every repeat\n", flush=True)

    results: dict[str, list[Result]] = {n: [] for n in names}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Avalanche's deprecation and no-logger warnings, torch's read-only arrays
        for r in range(-1, args.repeats):  # -1: the warm-up round
            shift = max(r, 0) % len(names)
            for name in names[shift:] + names[:shift]:
                res = contestants[name](data, init_net)
                if r >= 0:
                    results[name].append(res)
                label = "warm-up" if r < 0 else f"run {r + 1}"
                print(f"  {label:8s} {name:16s} {res.seconds:7.2f} s (CPU {res.cpu_s:6.2f} s)  ACC {res.acc:6.2f}",
                      flush=True)
        same = _same_as_clorch(results["bare"][0].extra["model"], data)
    convert_s = statistics.median(_convert_seconds(data) for _ in range(3))
    med = {n: {key: statistics.median(getattr(r, key) for r in results[n]) for key in ("seconds", "cpu_s")}
           for n in names}
    base, base_cpu = med["bare"]["seconds"], med["bare"]["cpu_s"]
    print(f"\n{'contestant':16s} {'wall s':>7s} {'min-max':>11s} {'x bare':>7s} {'CPU s':>6s} {'x bare':>7s} "
          f"{'train s':>8s} {'eval s':>7s} {'other s':>8s} {'ACC %':>7s}  final accuracy per task (%)")
    print("-" * 122)
    for name in names:
        rs = results[name]
        accs = [r.acc for r in rs]
        spread = "" if max(accs) - min(accs) < 1e-9 else f" (runs {min(accs):.2f}-{max(accs):.2f})"
        row = " ".join(f"{v:5.1f}" for v in rs[0].final_row)
        tr, ev = statistics.median(r.train_s for r in rs), statistics.median(r.eval_s for r in rs)
        other = statistics.median(r.seconds - r.train_s - r.eval_s for r in rs)
        wall, cpu = med[name]["seconds"], med[name]["cpu_s"]
        span = f"{min(r.seconds for r in rs):.1f}-{max(r.seconds for r in rs):.1f}"
        print(f"{name:16s} {wall:7.2f} {span:>11s} {wall / base:6.2f}x {cpu:6.2f} {cpu / base_cpu:6.2f}x "
              f"{tr:8.2f} {ev:7.2f} {other:8.2f} {statistics.median(accs):7.2f}  {row}{spread}")
    print("(medians; wall: elapsed, CPU: this process's CPU time over the same span -- with 1 thread and no "
          "loader workers, the\n work done, less disturbed by other jobs on the machine than wall time; train s / "
          "eval s: wall, summed over the 5 tasks;\n other: the rest -- building the method or strategy, clorch's "
          "Task.on of the test splits, its checkpoints; clorch's train s\n includes each train split's Task.on)")
    for name in names:
        check = results[name][0].extra.get("check_row")
        if check is not None:
            ok = max(abs(a - b) for a, b in zip(check, results[name][0].final_row))
            print(f"check: {name}'s final weights scored by the bare loop's evaluation: ACC "
                  f"{sum(check) / len(check):.2f} (largest per-task difference from its metric {ok:.2f} points)")
    print(f"clorch's share that the others do not do: Task.on of the 5 train and 5 test splits (uint8 -> float32, "
          f"standardised) takes {convert_s:.2f} s (median of 3, measured alone)")
    print(f"same work: bare loop's final weights {'equal' if same else 'DIFFER from'} clorch finetune's "
          f"(same initial weights, same batches)")
    for key, label, b in (("seconds", "wall", base), ("cpu_s", "CPU", base_cpu)):
        ratios = ", ".join(f"{n} {med[n][key] / b:.2f}x" for n in names if n != "bare")
        print(f"{'' if key == 'cpu_s' else chr(10)}peers, {label} time (median of {args.repeats}, vs the bare loop's "
              f"{b:.2f} s): {ratios}")
    paired = ", ".join(f"{n} {statistics.median(a.cpu_s / b.cpu_s for a, b in zip(results[n], results['bare'])):.2f}x"
                       for n in names if n != "bare")
    print(f"peers, CPU time, median of the {args.repeats} rounds' own ratios (each run against the bare run of its "
          f"round): {paired}")
    accs = ", ".join(f"{n} {statistics.median(r.acc for r in results[n]):.2f}" for n in names)
    print(f"final ACC (%, the 5 tasks' test accuracy after the last task): {accs}")
    print(f"({time.perf_counter() - started:.0f} s, load average now {os.getloadavg()[0]:.1f})")


def _convert_seconds(data: Data) -> float:
    """What a clorch trial spends turning the benchmark's uint8 arrays into the float tensors it trains on."""
    t0 = time.perf_counter()
    for k in range(NUM_TASKS):
        for split in ("train", "test"):
            data.bench.split(k, torch.device("cpu"), split, SETTING)
    return time.perf_counter() - t0


def _same_as_clorch(model: nn.Module, data: Data) -> bool:
    """Re-run clorch finetune's method on the same tensors (as run_trial does) and compare final weights."""
    seed_everything(SEED)
    entry = METHODS.get("finetune")
    ctx = MethodContext((784,), (10,) * NUM_TASKS, SETTING, torch.device("cpu"), SEED)
    method = entry.target(entry.params.model_validate(finetune_params()), ctx)
    for k in range(NUM_TASKS):
        method.learn_task(k, data.train[k])
    a = list(method.net.backbone.parameters()) + list(method.net.heads[0].parameters())
    return all(torch.allclose(p, q, rtol=1e-4, atol=1e-5) for p, q in zip(a, model.parameters()))


if __name__ == "__main__":
    main()
