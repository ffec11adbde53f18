"""Benchmark memory: 4 concurrent trials sharing one benchmark vs loading it each.

What it measures
    The memory of N (default 4) concurrent Ray trials holding a real benchmark
    (default: permuted MNIST, 10 tasks, from the MNIST archives under
    /work/shared/data), two ways:

    A. shared   - the driver loads the benchmark once and does ``ray.put`` once
                  (what ``tune.with_parameters`` does in orchestrator/run/driver.py);
                  every trial does ``ray.get(ref)``. Numpy arrays come back as
                  zero-copy, read-only views of the node's object store (shared
                  memory, /dev/shm/plasma*), so the raw arrays exist once per node.
    B. per trial - every trial calls ``load_benchmark(...)`` itself (reads the
                  files, builds every task), so every trial holds its own copy.

    Each trial (a Ray actor, all N alive together) then materialises what a
    trial really uses: ``task.on("cpu", "test")`` for every task (kept alive,
    for the accuracy matrix) plus ``task.on("cpu", "train")`` for the first task
    (a trial trains one task at a time). Only after all N are loaded does each
    report ``psutil.Process().memory_full_info()`` (USS, PSS, RSS) and, from
    /proc/self/smaps, how much of that lies in the object-store mapping. The
    node is also measured: ``psutil.virtual_memory().used`` (total - available,
    which counts shared-memory pages) before and after loading, and the bytes
    the object store holds. Each way runs ``--repeats`` times (fresh actors,
    killed with ``ray.kill`` between runs, ways alternated); medians reported.

    --study: the figure a user meets, from a real study. ``clorch run`` (a fresh
    interpreter per run: a fresh embedded Ray, a fresh MLflow SQLite store) of
    one finetune config (MLP 256-256, SGD lr 0.01 momentum 0.9, batch 128, 1 epoch
    per task) over ``--trials`` task orders, one seed: ``--trials`` trials at
    CPUs / trials CPU each, so all of them run at once; the benchmark reaches
    them through the object store as in every study. This process samples the
    run's whole process tree (the driver, Ray's GCS, raylet and agents, the
    worker processes) every ``--interval`` s (RSS; PSS, which costs a read of
    each process's smaps_rollup, every 8th sample) and keeps the peaks: RSS of each
    Tune trial worker (``ray::ImplicitFunc``), the trial workers' RSS and PSS
    summed at one moment, the whole tree's PSS (every page once: the real
    total), the driver's RSS, and the node's used memory (total - available)
    over its value before the run. Medians over ``--repeats`` runs. Peaks are
    of samples, so a spike shorter than the interval can be missed.

Why
    DESIGN.md, speed rules of thumb: "a benchmark is loaded once per node and
    shared with trials (Ray object store), not once per trial". Permuted
    benchmarks are a full copy of the dataset per task, so a per-trial copy
    multiplies the largest allocation of a study by the trials on the node.

Measured (2 cores, 23.5 GiB; permuted MNIST standard, 10 tasks, 4 trials, medians of 3)
    snapshot (the script as it was on main): shared 3,799 MiB total PSS against
    5,829 MiB loaded per trial (1.53x), RSS of one trial 1,180 against 1,697 MiB.
    --study (main at dc97b4a): peak RSS of one trial worker 2,005 MiB (12
    workers: 2,004-2,014), the 4 together 7,907 MiB RSS / 5,038 MiB PSS, the
    whole study (driver, Ray, workers) 6,797 MiB PSS, the driver 1,976 MiB RSS;
    a run 82-234 s (load). On a2003dd: 2,009 / 8,032 / 5,092 / 6,757 / 1,971.
    A trial's peak is near its end: the float32 test and validation splits of
    every task (Task.on, private), the current train split, and the store pages
    of every task it has read.

How to run (from the repository root)
    .venv/bin/python bench/benchmark_memory.py
    .venv/bin/python bench/benchmark_memory.py --num-tasks 20 --repeats 5
    .venv/bin/python bench/benchmark_memory.py --protocol halrp --num-tasks 3
    .venv/bin/python bench/benchmark_memory.py --study       # peak memory of a real 4-trial study
    Runtime: 2.5 minutes on a busy 2-core machine (load average ~5), less when
    idle; most of it is starting 4 x 2 x repeats actor processes that import
    torch, and way B's loads. Node-level figures include whatever else runs.
    (halrp is 3x32x32 per image, ~4x the bytes of standard: with 10 tasks the
    per-trial way needs ~17 GB for 4 trials; lower --num-tasks on small nodes.)

What the numbers mean
    RSS  every page a process has resident, shared ones counted in full (the
         sum over processes double-counts shared libraries and shared memory).
    USS  memory unique to the process: what killing it would give back.
    PSS  USS plus each shared page divided by the number of processes mapping
         it; summed over processes it counts every page exactly once, so the
         sum of PSS is the real total. Zero-copy object-store arrays are shared
         pages: they show in every trial's RSS but only 1/k of them in its PSS.
    total  the honest node cost of the N trials: sum of their PSS outside the
         object store, plus the object store's copy once, in full (the driver
         wrote those pages, so part of them sits in the driver's PSS and pages
         no trial touched -- e.g. tasks not trained yet -- in no trial's PSS).
         For way B there is no store copy and total = sum of PSS.
    idle the actor before any data (Python + Ray worker + torch); the same in
         both ways, so "data" = total - N x idle PSS is what the benchmark costs.

    heap trimmed  the same trials measured again right after ``malloc_trim(0)``:
         on CPU, Task.on's float temporaries under 32 MiB (31 MiB for one
         standard MNIST test split) fall
         under glibc's dynamic mmap threshold (it rises to 32 MiB after the
         first such block is freed), so they come from the heap and, once
         freed, stay resident. Real CPU trials carry that too; the trimmed rows
         show what the data itself costs.

    ``Task.on`` turns uint8 images into float32 (scaled, standardised): that
    copy is 4 bytes per pixel of what the trial uses and is private to each
    trial in both ways, by design (it is the trial's device copy; on a GPU it
    lives in GPU memory). The difference between the ways is the raw arrays:
    one shared copy per node vs one copy per trial.

psutil is not a project dependency; Ray vendors it (ray/thirdparty_files), so
it is imported after ray.
"""
from __future__ import annotations

import argparse
import gc
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import ray  # noqa: E402
import psutil  # noqa: E402  (Ray's vendored copy)

MiB = 1 << 20


# ---------------------------------------------------------------- helpers
def mirror_root(data: Path) -> Path:
    """A temporary data root whose files are symlinks to ``data``'s (unpacking writes there, not in ``data``)."""
    tmp = Path(tempfile.mkdtemp(prefix="clorch-bench-mem-"))
    for src in data.rglob("*"):
        if src.is_file():
            dst = tmp / src.relative_to(data)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src.resolve())
    return tmp


def bench_arrays(bench) -> list[tuple[str, np.ndarray]]:
    """Every numpy array of a benchmark once (tasks may share arrays), named task/field."""
    seen, out = set(), []
    for k, t in enumerate(bench.tasks):
        for f in ("x_train", "y_train", "x_test", "y_test", "x_val", "y_val"):
            a = getattr(t, f)
            if isinstance(a, np.ndarray) and id(a) not in seen:
                seen.add(id(a))
                out.append((f"task {k} {f}", a))
    return out


def materialised_float_bytes(bench) -> int:
    """Bytes of the float32 inputs a trial builds with Task.on: every task's test split + task 0's train split."""
    n = sum(t.x_test.size for t in bench.tasks) + bench.tasks[0].x_train.size
    return 4 * n


def store_bytes_used() -> int | None:
    """Bytes held by this node's object store (raylet stats); None if Ray's internal API moved."""
    try:
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        reply = get_memory_info_reply(get_state_from_address(ray.get_runtime_context().gcs_address))
        return int(reply.store_stats.object_store_bytes_used)
    except Exception:  # noqa: BLE001 - a private API; the figure is optional
        return None


def node_used() -> int:
    return psutil.virtual_memory().used  # total - available: includes /dev/shm (object store) pages


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ---------------------------------------------------------------- the trial
@ray.remote(num_cpus=1)
class TrialProbe:
    """Stands in for one Tune trial: gets or loads the benchmark, materialises what a trial uses, reports memory."""

    def __init__(self, root: str):
        if root not in sys.path:
            sys.path.insert(0, root)
        import torch

        import datasets  # noqa: F401 - registers the benchmarks, imports what a trial imports

        torch.set_num_threads(1)
        self.bench = None
        self.keep = None

    def ready(self) -> int:
        return os.getpid()

    def load_shared(self, boxed: list) -> dict:
        """Way A: the benchmark from the object store (boxed so the ref reaches us unresolved, as in Tune)."""
        t0 = time.perf_counter()
        bench = ray.get(boxed[0])
        return self._use(bench, t0)

    def load_own(self, name: str, params: dict, data_root: str) -> dict:
        """Way B: this process reads the files and builds the benchmark itself."""
        from datasets import LoadContext, load_benchmark

        t0 = time.perf_counter()
        bench = load_benchmark(name, params, LoadContext(Path(data_root)))
        return self._use(bench, t0)

    def _use(self, bench, t0: float) -> dict:
        self.bench = bench
        self.keep = [t.on("cpu", "test") for t in bench.tasks] + [bench.tasks[0].on("cpu", "train")]
        gc.collect()
        seconds = time.perf_counter() - t0
        regions = self._store_regions()
        shared = copied = 0
        copied_names = []
        for label, a in bench_arrays(bench):
            ptr = a.__array_interface__["data"][0]
            if any(lo <= ptr < hi for lo, hi in regions):
                shared += a.nbytes
            else:
                copied += a.nbytes
                copied_names.append(f"{label} (C-contiguous={a.flags.c_contiguous}, writeable={a.flags.writeable})")
        return {"seconds": seconds, "in_store_bytes": shared, "private_bytes": copied, "private": copied_names[:5]}

    @staticmethod
    def _store_regions() -> list[tuple[int, int]]:
        out = []
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and "plasma" in parts[5]:
                    lo, hi = (int(x, 16) for x in parts[0].split("-"))
                    out.append((lo, hi))
        return out

    def measure(self) -> dict:
        m = psutil.Process().memory_full_info()
        store_rss = store_pss = 0
        in_store = False
        with open("/proc/self/smaps") as f:  # Rss/Pss of the object-store mapping(s)
            for line in f:
                head = line.split(maxsplit=1)[0]
                if "-" in head and not head.endswith(":"):
                    in_store = "plasma" in line
                elif in_store and head == "Rss:":
                    store_rss += int(line.split()[1]) * 1024
                elif in_store and head == "Pss:":
                    store_pss += int(line.split()[1]) * 1024
        return {"uss": m.uss, "pss": m.pss, "rss": m.rss, "store_rss": store_rss, "store_pss": store_pss}

    def trim(self) -> bool:
        """Give freed heap back to the OS (glibc malloc_trim); False where there is no glibc."""
        try:
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
            return True
        except (OSError, AttributeError):
            return False


# ---------------------------------------------------------------- one run
def run_way(way: str, n: int, ref, name: str, params: dict, data_root: str, store_copy: int) -> dict:
    actors = [TrialProbe.remote(ROOT) for _ in range(n)]
    pids = ray.get([a.ready.remote() for a in actors])
    idle = ray.get([a.measure.remote() for a in actors])
    used0 = node_used()
    if way == "shared":
        loads = [a.load_shared.remote([ref]) for a in actors]
    else:
        loads = [a.load_own.remote(name, params, data_root) for a in actors]
    infos = ray.get(loads)  # barrier: all N loaded and materialised ...
    mem = ray.get([a.measure.remote() for a in actors])  # ... before any is measured, all still alive
    used1 = node_used()
    trimmed = all(ray.get([a.trim.remote() for a in actors]))  # then again without the C heap's free pages
    mem_t = ray.get([a.measure.remote() for a in actors]) if trimmed else mem
    used1_t = node_used()
    for a in actors:
        ray.kill(a)
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=30)
    time.sleep(0.5)
    store = store_copy if way == "shared" else 0

    def summary(mem, used1):
        return {
            "mem": mem, "pss_sum": sum(m["pss"] for m in mem), "store": store,
            "total": sum(m["pss"] - m["store_pss"] for m in mem) + store,
            # the store's pages were resident before used0 (the put came first), so add them back
            "node_delta": used1 - used0 + store,
        }

    return {"way": way, "idle": idle, "infos": infos, "idle_pss_sum": sum(m["pss"] for m in idle),
            "trimmed": trimmed, **summary(mem, used1), "after_trim": summary(mem_t, used1_t)}


# ---------------------------------------------------------------- --study: a real study's peak memory
STUDY_NAME = "memory"
TRIAL_TITLE = "ray::ImplicitFu"  # Tune's function-trainable actor: ray::ImplicitFunc(.train); comm cuts it at 15
PSS_EVERY = 8  # samples: RSS every --interval, PSS (and USS) every 8th


def study_dict(root: Path, data_root: Path, args) -> dict:
    """--trials trials (one finetune config x --trials orders), all running at once: cpu per trial = CPUs / trials."""
    params: dict = {"num_tasks": args.num_tasks}
    if args.benchmark == "permuted_mnist":
        params["protocol"] = args.protocol
    return {
        "name": STUDY_NAME,
        "data_root": str(data_root),
        "benchmark": {"name": args.benchmark, "params": params},
        "orders": {"kind": "random", "count": args.trials, "seed": 0, "include_identity": True},
        "seeds": [0],
        "methods": [{"name": "finetune", "params": {
            "network": {"backbone": "mlp", "hidden": [256, 256]},
            "training": {"epochs": 1, "batch_size": 128},
            "optimizer": {"name": "sgd", "lr": 0.01, "momentum": 0.9}}}],
        "resources": {"cpu": min(1.0, (os.cpu_count() or 1) / args.trials)},
        "tracking": {"uri": f"sqlite:///{root}/mlflow.db"},
        "output_dir": str(root / "results"),
    }


def _title(p: psutil.Process) -> str:
    """A Ray worker's process title (ray::ImplicitFunc.train, ray::IDLE, ...), else the executable's name."""
    try:
        cmd = p.cmdline()
        return cmd[0] if cmd and cmd[0].startswith("ray::") else p.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return "?"


def measure_study(args, data_root: Path, k: int) -> dict:
    """One `clorch run` in a fresh interpreter (a fresh embedded Ray), its whole process tree sampled."""
    import json

    work = Path(tempfile.mkdtemp(prefix=f"clorch-bench-mem-study{k}-"))
    try:
        path = work / "memory.yaml"
        path.write_text(json.dumps(study_dict(work, data_root, args)))  # JSON is YAML
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        log = open(work / "run.log", "w")
        used0 = node_used()
        started = time.perf_counter()
        proc = psutil.Popen([sys.executable, "-m", "orchestrator.cli", "run", str(path)], cwd=work, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
        peak = {"tree_rss": 0, "tree_pss": 0, "trials_rss": 0, "trials_pss": 0, "node": 0, "driver_rss": 0}
        per_pid: dict[int, dict] = {}  # peak RSS/PSS of every process seen, and its titles
        samples = 0
        while proc.poll() is None:
            try:
                tree = [proc, *proc.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            full = samples % PSS_EVERY == 0  # PSS reads /proc/PID/smaps_rollup: dearer than RSS (statm)
            tree_rss = tree_pss = trials_rss = trials_pss = 0
            for p in tree:
                try:
                    m = p.memory_full_info() if full else p.memory_info()
                    title = _title(p)
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                rec = per_pid.setdefault(p.pid, {"rss": 0, "pss": 0, "titles": set()})
                rec["rss"] = max(rec["rss"], m.rss)
                rec["titles"].add(title)
                tree_rss += m.rss
                trial = TRIAL_TITLE in title  # a Tune trial actor (the function trainable)
                if trial:
                    trials_rss += m.rss
                if full:
                    rec["pss"] = max(rec["pss"], m.pss)
                    tree_pss += m.pss
                    trials_pss += m.pss if trial else 0
                if p.pid == proc.pid:
                    peak["driver_rss"] = max(peak["driver_rss"], m.rss)
            for key, v in (("tree_rss", tree_rss), ("tree_pss", tree_pss), ("trials_rss", trials_rss),
                           ("trials_pss", trials_pss), ("node", node_used() - used0)):
                peak[key] = max(peak[key], v)
            samples += 1
            time.sleep(args.interval)
        rc = proc.wait()
        wall = time.perf_counter() - started
        log.close()
        if rc != 0:
            tail = (work / "run.log").read_text()[-3000:]
            raise SystemExit(f"clorch run exited {rc}; the end of its output:\n{tail}")
        trials = [r for r in per_pid.values() if any(TRIAL_TITLE in t for t in r["titles"])]
        return {"wall": wall, "samples": samples, **peak, "trial_rss": sorted(r["rss"] for r in trials),
                "trial_pss": sorted(r["pss"] for r in trials),
                "titles": sorted({t for r in per_pid.values() for t in r["titles"]})}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def study_main(args) -> None:
    started = time.perf_counter()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"{psutil.virtual_memory().total / (1 << 30):.1f} GiB memory")
    cpu = min(1.0, (os.cpu_count() or 1) / args.trials)
    print(f"study: clorch run, {args.benchmark} ({args.num_tasks} tasks"
          f"{', protocol ' + args.protocol if args.benchmark == 'permuted_mnist' else ''}), finetune mlp 256-256, "
          f"sgd, batch 128, 1 epoch/task, {args.trials} orders x 1 seed = {args.trials} trials at {cpu:g} CPU each "
          f"(all at once), embedded Ray and MLflow; the benchmark goes to the trials through the object store "
          f"(tune.with_parameters); process tree sampled every {args.interval:g} s (PSS every {PSS_EVERY}th sample); "
          f"{args.repeats} runs")
    tmp = mirror_root(Path(args.data))
    runs = []
    try:
        for k in range(args.repeats):
            r = measure_study(args, tmp, k)
            runs.append(r)
            print(f"  run {k + 1}: {r['wall']:.0f} s, {r['samples']} samples, {len(r['trial_rss'])} trial workers; "
                  f"peak RSS per trial worker {', '.join(f'{v / MiB:.0f}' for v in r['trial_rss'])} MiB; trial workers "
                  f"together RSS {r['trials_rss'] / MiB:.0f} / PSS {r['trials_pss'] / MiB:.0f} MiB; whole study "
                  f"PSS {r['tree_pss'] / MiB:.0f} MiB (RSS {r['tree_rss'] / MiB:.0f}); driver RSS "
                  f"{r['driver_rss'] / MiB:.0f} MiB; node used +{r['node'] / MiB:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    titles = sorted({t for r in runs for t in r["titles"]})
    print(f"processes seen: {', '.join(titles)}")
    per_trial = [v for r in runs for v in r["trial_rss"]]
    if not per_trial:
        raise SystemExit(f"no Tune trial worker ({TRIAL_TITLE}*) was seen: Ray's process titles changed?")
    med = {key: median([r[key] for r in runs]) for key in ("tree_pss", "tree_rss", "trials_rss", "trials_pss",
                                                           "node", "driver_rss", "wall")}
    print(f"\n{args.trials}-trial study, medians of {args.repeats} runs (MiB): peak RSS of one trial worker "
          f"{median(per_trial) / MiB:.0f} (median of {len(per_trial)} workers; max {max(per_trial) / MiB:.0f}); "
          f"peak of the trial workers together: RSS {med['trials_rss'] / MiB:.0f} (counts the shared object-store "
          f"pages once per worker), PSS {med['trials_pss'] / MiB:.0f}; peak PSS of the whole study (driver, Ray's "
          f"processes, workers; every page once) {med['tree_pss'] / MiB:.0f}; driver RSS {med['driver_rss'] / MiB:.0f};"
          f" node used at peak +{med['node'] / MiB:.0f} (includes whatever else ran); a run {med['wall']:.0f} s")
    print(f"({time.perf_counter() - started:.0f} s, load average now {os.getloadavg()[0]:.1f})")


# ---------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--benchmark", default="permuted_mnist")
    ap.add_argument("--num-tasks", type=int, default=10)
    ap.add_argument("--protocol", default="standard", choices=["standard", "halrp"], help="permuted_mnist only")
    ap.add_argument("--trials", type=int, default=4, help="concurrent trials (actors)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default="/work/shared/data", help="a torchvision data root (MNIST/raw/*.gz)")
    ap.add_argument("--study", action="store_true",
                    help="measure a real study instead: `clorch run` of --trials concurrent finetune trials on the "
                         "benchmark, its process tree sampled for peak RSS/PSS (see the docstring)")
    ap.add_argument("--interval", type=float, default=0.25, help="--study: seconds between memory samples")
    args = ap.parse_args()
    if args.study:
        study_main(args)
        return

    from datasets import BENCHMARKS, LoadContext, load_benchmark

    fields = BENCHMARKS.get(args.benchmark).params.model_fields
    params: dict = {}
    if "num_tasks" in fields:
        params["num_tasks"] = args.num_tasks
    if "protocol" in fields:
        params["protocol"] = args.protocol

    started = time.perf_counter()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"{psutil.virtual_memory().total / (1 << 30):.1f} GiB memory")
    tmp = mirror_root(Path(args.data))
    try:
        t0 = time.perf_counter()
        bench = load_benchmark(args.benchmark, params, LoadContext(tmp))  # unpacks the archives into tmp once
        load_s = time.perf_counter() - t0
        arrays = bench_arrays(bench)
        total_bytes = sum(a.nbytes for _, a in arrays)
        x_bytes = sum(a.nbytes for label, a in arrays if " x_" in label)
        float_bytes = materialised_float_bytes(bench)
        print(f"benchmark {args.benchmark} {params}: {bench.num_tasks} tasks, {len(arrays)} arrays, "
              f"{total_bytes / MiB:.1f} MiB in total ({x_bytes / MiB:.1f} MiB images "
              f"{arrays[0][1].dtype}, {(total_bytes - x_bytes) / MiB:.1f} MiB labels); "
              f"loaded in {load_s:.1f} s")
        print(f"a trial materialises (Task.on, float32, private to each trial in both ways): "
              f"{float_bytes / MiB:.1f} MiB = every task's test split + task 0's train split")

        ray.init(address="local", num_cpus=args.trials, include_dashboard=False, log_to_driver=False)
        store_before = store_bytes_used()
        t0 = time.perf_counter()
        ref = ray.put(bench)  # once, as tune.with_parameters does
        put_s = time.perf_counter() - t0
        store_after = store_bytes_used()
        store_copy = (store_after - store_before) if store_after is not None else total_bytes
        print(f"ray.put once: {put_s:.2f} s, object store holds {store_copy / MiB:.1f} MiB"
              f"{'' if store_after is not None else ' (store stats unavailable; array bytes assumed)'}")

        runs = {"shared": [], "per_trial": []}
        for r in range(args.repeats):
            for way in ("shared", "per_trial"):
                t0 = time.perf_counter()
                res = run_way(way, args.trials, ref, args.benchmark, params, str(tmp), store_copy)
                runs[way].append(res)
                load = median([i["seconds"] for i in res["infos"]])
                print(f"  run {r + 1} {way:9s}: sum PSS {res['pss_sum'] / MiB:7.1f} MiB, total "
                      f"{res['total'] / MiB:7.1f} MiB, node delta {res['node_delta'] / MiB:7.1f} MiB, "
                      f"get/load+materialise {load:.2f} s/trial, run {time.perf_counter() - t0:.1f} s", flush=True)
        del ref

        audit = runs["shared"][0]["infos"][0]
        print(f"zero-copy check (a shared trial): {audit['in_store_bytes'] / MiB:.1f} MiB of arrays are views "
              f"into the object store's shared memory, {audit['private_bytes'] / MiB:.1f} MiB were copied"
              + (f": {'; '.join(audit['private'])}" if audit["private"] else ""))

        def row(way: str, label: str, trimmed: bool = False) -> tuple[str, dict]:
            rs = [dict(res, **res["after_trim"]) if trimmed else res for res in runs[way]]
            mem = [m for res in rs for m in res["mem"]]
            idle = [m for res in rs for m in res["idle"]]
            v = {
                "uss": median([m["uss"] for m in mem]), "pss": median([m["pss"] for m in mem]),
                "rss": median([m["rss"] for m in mem]), "store_rss": median([m["store_rss"] for m in mem]),
                "pss_sum": median([res["pss_sum"] for res in rs]), "store": median([res["store"] for res in rs]),
                "total": median([res["total"] for res in rs]), "node": median([res["node_delta"] for res in rs]),
                "idle_uss": median([m["uss"] for m in idle]), "idle_pss": median([m["pss"] for m in idle]),
                "idle_sum": median([res["idle_pss_sum"] for res in rs]),
            }
            v["data"] = v["total"] - v["idle_sum"]
            return label, v

        rows = [row("shared", "A shared (object store)"), row("per_trial", "B loaded per trial")]
        have_trim = all(res["trimmed"] for rs in runs.values() for res in rs)
        rows_t = [row("shared", "A, heap trimmed", True), row("per_trial", "B, heap trimmed", True)] if have_trim else []
        n = args.trials
        print(f"\n{n} concurrent trials, medians of {args.repeats} runs (MiB; per-trial columns: median of "
              f"{n * args.repeats} trials)")
        head = (f"{'way':25s} {'USS/trial':>9s} {'PSS/trial':>9s} {'RSS/trial':>9s} {'in store':>8s} "
                f"{'sum PSS':>8s} {'+store':>7s} {'total':>7s} {'data':>7s} {'node d':>7s}")
        print(head)
        print("-" * len(head))
        for label, v in rows + rows_t:
            print(f"{label:25s} {v['uss'] / MiB:9.1f} {v['pss'] / MiB:9.1f} {v['rss'] / MiB:9.1f} "
                  f"{v['store_rss'] / MiB:8.1f} {v['pss_sum'] / MiB:8.1f} {v['store'] / MiB:7.1f} "
                  f"{v['total'] / MiB:7.1f} {v['data'] / MiB:7.1f} {v['node'] / MiB:7.1f}")
        a, b = rows[0][1], rows[1][1]
        if rows_t:
            waste = median([m["uss"] - t["uss"] for rs in runs.values() for res in rs
                            for m, t in zip(res["mem"], res["after_trim"]["mem"])])
            print(f"heap trimmed = measured again after malloc_trim(0) in every trial: {waste / MiB:.1f} MiB of a "
                  f"trial's USS (median) is heap glibc freed but kept -- mostly Task.on's float temporaries on CPU "
                  f"(under glibc's 32 MiB mmap ceiling, so they come from the heap and are not given back)")
        print(f"idle trial (Python + Ray worker + torch, before any data): USS {a['idle_uss'] / MiB:.1f}, "
              f"PSS {a['idle_pss'] / MiB:.1f} MiB")
        print("columns: in store = the trial's resident pages of the object-store mapping (zero-copy arrays it "
              "has read; in RSS, shared in PSS); sum PSS = over the trials; +store = the object store's copy, "
              "counted once; total = sum PSS outside the store + store copy; data = total - trials x idle PSS; "
              "node d = change of node used memory (total - available) while loading, plus the store copy "
              "(its pages were resident before). Node figures include whatever else runs on the machine.")
        print(f"both ways: each trial's float32 copy of what it uses ({float_bytes / MiB:.1f} MiB, Task.on) is "
              f"private by design; the difference is the raw {total_bytes / MiB:.1f} MiB of arrays: once per node "
              f"(A) vs once per trial (B, plus each process's file cache of the source arrays).")
        print(f"\n{n} concurrent trials: shared via object store {a['total'] / MiB:.0f} MiB total PSS vs loaded "
              f"per trial {b['total'] / MiB:.0f} MiB ({b['total'] / a['total']:.2f} x); benchmark data alone "
              f"{a['data'] / MiB:.0f} vs {b['data'] / MiB:.0f} MiB ({b['data'] / a['data']:.2f} x); RSS of one "
              f"trial {a['rss'] / MiB:.0f} vs {b['rss'] / MiB:.0f} MiB (medians of {n * args.repeats} trials; "
              f"a shared trial's RSS counts the store pages it read)")
        if rows_t:
            at, bt = rows_t[0][1], rows_t[1][1]
            print(f"  with the C heap trimmed: {at['total'] / MiB:.0f} vs {bt['total'] / MiB:.0f} MiB "
                  f"({bt['total'] / at['total']:.2f} x); data alone {at['data'] / MiB:.0f} vs "
                  f"{bt['data'] / MiB:.0f} MiB ({bt['data'] / at['data']:.2f} x)")
        print(f"({time.perf_counter() - started:.0f} s, load average now {os.getloadavg()[0]:.1f})")
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
