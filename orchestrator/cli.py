"""The ``clorch`` command: run, validate, list, report, compare.

Exit codes: 0 success; 1 the study ran but some trials failed (all finished
results are kept); 2 bad input (nothing was started or written), or for
``report`` a study found neither in the results directory nor in MLflow (for ``compare``: a study not
found, or no config label two studies share).
"""
from __future__ import annotations

import argparse
import os
import sys

from orchestrator.study.base import StudyError  # pydantic only: `clorch --help` imports no torch, Ray or MLflow

DEFAULT_STORE = "mlflow.db"  # tracking.uri's default, sqlite:///mlflow.db: the file in the working directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clorch", description="order-robustness studies for continual learning")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study (embedded Ray and MLflow by default)")
    run.add_argument("study", help="study YAML file")
    run.add_argument("--address", help="Ray cluster address to join (default: start an embedded local Ray)")
    run.add_argument("--data-root", help="dataset root when the study sets none (default: $CLORCH_DATA_ROOT, else ./data)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a study field, e.g. --set orders.count=3 --set methods.0.params.epochs=2")
    run.add_argument("--verbose", action="store_true",
                     help="show Ray's and MLflow's own warnings and tips (hidden in a normal run)")
    run.add_argument("--resume", action="store_true",
                     help="continue an interrupted study: keep its finished trials (no rerun, no second MLflow "
                          "run), start unfinished ones from their last checkpoint")
    run.add_argument("--overwrite", action="store_true",
                     help="start a study that ran before over: its trial records are removed and its MLflow runs "
                          "moved to MLflow's deleted stage (restorable); without it such a rerun is refused")
    run.add_argument("--allow-changes", action="store_true",
                     help="with --resume, of a study changed since it ran: keep only the earlier trials that still "
                          "belong to it (same trial id), run the rest")
    configs_help = ("another study's results directory (results/<study>/) or summary.json: each method entry "
                    "whose label is in its `best` runs that winner's params, fixed (tune on one benchmark, "
                    "evaluate on another)")
    run.add_argument("--configs-from", metavar="OTHER", help=configs_help)
    val = sub.add_parser("validate", help="check a study file without running it")
    val.add_argument("study")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    val.add_argument("--configs-from", metavar="OTHER", help=configs_help)
    val.add_argument("--data-root", help="also check the benchmark's files are there (cheap: no full load)")
    lst = sub.add_parser("list", help="methods and benchmarks with their parameters (plugins' beside the built-ins)")
    lst.add_argument("targets", nargs="*", metavar="STUDY.yaml|NAME",
                     help="a study file (its plugins are listed too) and/or names of methods or benchmarks to show alone")
    lst.add_argument("--plugin", dest="plugins", action="append", default=[], metavar="P",
                     help="a plugin to load first: a .py file or package folder (relative to here) or a module name")
    rep = sub.add_parser("report", help="write results/<study>/report.md and its figures (and log them to MLflow)")
    rep.add_argument("study", help="study name (the `name:` of its file)")
    rep.add_argument("--results-dir", default="results",
                     help="the study's output_dir; the report reads and writes <results-dir>/<study>/ (default: results)")
    rep.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                     help="MLflow store: read the study from it when the results directory lacks it, and update the "
                          "report of its study run (default: $MLFLOW_TRACKING_URI, else ./mlflow.db when there, the "
                          "store a study writes by default)")
    rep.add_argument("--experiment", help="MLflow experiment to look in (default: every experiment)")
    rep.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    cmp = sub.add_parser("compare", help="one report across studies: a table per shared config label, the "
                                         "differences and figures (compare/<a>_vs_<b>/report.md)")
    cmp.add_argument("studies", nargs="+", metavar="STUDY",
                     help="a study's results directory (results/<study>/), or with --tracking-uri a study name "
                          "in the MLflow store; two or more")
    cmp.add_argument("--out", help="output directory (default: ./compare/<a>_vs_<b>/)")
    cmp.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI"),
                     help="MLflow store to read a study from when no results directory has it "
                          "(default: $MLFLOW_TRACKING_URI)")
    cmp.add_argument("--experiment", help="MLflow experiment to look in (default: every experiment)")
    cmp.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    # ---- Ray Jobs on a cluster: submit / status / logs (orchestrator/jobs.py) ----
    cluster_help = ("the head's job server, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS); "
                    "`ray dashboard cluster.yaml` forwards it to http://127.0.0.1:8265")
    sbm = sub.add_parser("submit", help="run a study on a Ray cluster as a Ray Job (the driver runs on the head)")
    sbm.add_argument("study", help="study YAML file (validated here first; uploaded with this clorch's code)")
    sbm.add_argument("--address", help=cluster_help)
    sbm.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a study field, here and in the job, e.g. --set tracking.uri=http://127.0.0.1:5000")
    sbm.add_argument("--data-root", help="dataset root on the head (an absolute path there)")
    sbm.add_argument("--resume", action="store_true", help="the job runs `clorch run --resume`")
    sbm.add_argument("--no-wait", action="store_true",
                     help="return once submitted (default: print the job's log until it ends, exit with its code)")
    sts = sub.add_parser("status", help="status of a submitted job")
    sts.add_argument("job", help="job id printed by `clorch submit`")
    sts.add_argument("--address", help=cluster_help)
    lgs = sub.add_parser("logs", help="log of a submitted job (the driver's output)")
    lgs.add_argument("job", help="job id printed by `clorch submit`")
    lgs.add_argument("--address", help=cluster_help)
    lgs.add_argument("--follow", action="store_true", help="keep printing until the job ends; exit with its code")
    args = parser.parse_args(argv)
    if args.command in ("run", "report", "compare"):  # they render figures
        from orchestrator.results.png_render import env_problem

        problem = env_problem()
        if problem:
            print(f"clorch: {problem}", file=sys.stderr)
            return 2
    from orchestrator.study.loading import load_study  # the methods' parameters: torch, only once a command runs
    if args.command in ("submit", "status", "logs"):
        from orchestrator.cluster import jobs

        return {"submit": jobs.submit_command, "status": jobs.status_command, "logs": jobs.logs_command}[args.command](args)
    # ---- end of Ray Jobs ----

    if args.command == "list":
        return _list(args)
    if args.command == "report":
        return _report(args)
    if args.command == "compare":
        return _compare(args)
    try:
        study = load_study(args.study, args.overrides, configs_from=args.configs_from)
        if args.command == "validate" or not args.address:  # --address: checked on the cluster once joined
            from orchestrator.study.resources import check_resources

            check_resources(study)
    except StudyError as e:
        from orchestrator.study.redact import redact_text

        print(redact_text(str(e)), file=sys.stderr)  # an echoed --set value may be a URI with a password
        return 2
    from orchestrator.study import preflight  # tracking store, storage, data files: before Ray, before writing

    problems = preflight.check(study, data_root=args.data_root, tracking=args.command == "run",
                               data=args.command == "run" or args.data_root is not None)
    if problems:
        print(StudyError(args.study, problems), file=sys.stderr)
        return 2
    _print_notes()
    if study.configs_from is not None:
        from orchestrator.study.configs_from import describe

        print(describe(study.configs_from), flush=True)
    if args.command == "validate":
        from orchestrator.study.expand import expand_configs

        from orchestrator.study.expand import is_adaptive

        searched = sum(is_adaptive(study, i) for i in range(len(study.methods)))
        n = (len(expand_configs(study)) + searched * study.search.num_samples) * len(study.task_orders()) \
            * len(study.seeds)
        shape = ("a regression stream" if study.kind == "regression_stream"
                 else f"{study.num_tasks} tasks per order")
        print(f"{args.study}: ok ({n} trials, {shape})")
        return 0

    from orchestrator.cluster.connect import ClusterUnreachable, use_cluster_token

    use_cluster_token(args.address)  # before anything imports ray
    _quiet(args.verbose)
    from orchestrator.run.driver import run_study

    from orchestrator.run.callbacks import Unschedulable
    from orchestrator.run.interrupt import StudyInterrupted

    try:
        summary = run_study(study, address=args.address, data_root=args.data_root, resume=args.resume,
                            overwrite=args.overwrite, allow_changes=args.allow_changes)
    except (FileNotFoundError, ValueError, ClusterUnreachable, Unschedulable) as e:  # a dataset missing, no
        print(f"clorch: {e}", file=sys.stderr)  # cluster there, trials no node can take
        return 2
    except (StudyInterrupted, KeyboardInterrupt) as e:  # Ctrl-C / SIGTERM: finished tasks kept, no summary
        kept = f"{e.kept} unfinished trials kept their finished tasks; " if isinstance(e, StudyInterrupted) else ""
        print(f"clorch: interrupted; {kept}no summary written. Go on with: clorch run {args.study} --resume",
              file=sys.stderr, flush=True)
        return 130
    _report_after_run(study, summary)
    return 1 if summary["trials_failed"] else 0


def _report_after_run(study, summary: dict) -> None:
    """The end of ``clorch run``: the report, from the results just written (data flows run -> results -> report)."""
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from orchestrator.report.render import report_after_run
    from orchestrator.results.store import study_dir

    tracker = SimpleNamespace(client=MlflowClient(tracking_uri=study.tracking.uri),
                              study_run=summary.get("mlflow_study_run"))
    report_after_run(study_dir(study.output_dir, study.name), study.name, tracker)  # warns, never raises


def _quiet(verbose: bool) -> None:
    """A normal run prints clorch's lines only: Ray's and MLflow's warnings and tips need --verbose."""
    import logging
    import warnings

    if verbose:
        os.environ["CLORCH_VERBOSE"] = "1"
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # Ray workers and MLflow inherit it
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "alembic", "ray", "ray.tune", "ray.train", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _print_notes() -> None:
    """What validation noticed but accepts (old flat method keys), one line each, on stderr."""
    from orchestrator.study.checks import NOTES, WARNINGS

    for warning in WARNINGS:
        print(f"clorch: warning: {warning}", file=sys.stderr)
    for note in NOTES:
        print(f"clorch: note: {note}", file=sys.stderr)


def _list(args) -> int:
    """``clorch list [STUDY.yaml ...] [NAME ...] [--plugin P ...]``: nothing is run or written."""
    from pathlib import Path

    import yaml

    from orchestrator.study import plugins
    from orchestrator.study.listing import describe_all, describe_names

    studies = [t for t in args.targets if t.endswith((".yaml", ".yml"))]
    names = [t for t in args.targets if t not in studies]
    try:
        plugins.load(args.plugins, Path.cwd(), where="--plugin")
        for path in studies:
            try:
                raw = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as e:
                print(f"clorch: cannot read {path}: {e}", file=sys.stderr)
                return 2
            entries = raw.get("plugins", []) if isinstance(raw, dict) else []
            plugins.load(entries if isinstance(entries, list) else [], Path(path).resolve().parent,
                         where=f"{path}: plugins")
    except plugins.PluginError as e:
        print(f"clorch: {e}", file=sys.stderr)
        return 2
    try:
        print(describe_names(names) if names else describe_all())
    except KeyError as e:
        print(f"clorch: {e}", file=sys.stderr)
        return 2
    return 0


def _report(args) -> int:
    from orchestrator.report.render import report_study
    from orchestrator.report.sources import StudyNotFound

    if args.resamples < 1:
        print("clorch: --resamples must be at least 1", file=sys.stderr)
        return 2
    uri = args.tracking_uri
    if uri is None and os.path.isfile(DEFAULT_STORE):  # where `clorch run` writes by default (tracking.uri)
        uri = f"sqlite:///{DEFAULT_STORE}"
        print(f"clorch: MLflow store: {uri} (found here; --tracking-uri picks another)", file=sys.stderr)
    try:
        report = report_study(args.study, args.results_dir, uri, args.experiment, n_resamples=args.resamples)
    except StudyNotFound as e:
        print(f"clorch: {e}", file=sys.stderr)
        return 2
    logged = f"; updated in MLflow study run {report.logged_to} under report/" if report.logged_to else ""
    print(f"report: {report.path} ({len(report.figures)} figures){logged}")
    return 0


def _compare(args) -> int:
    """``clorch compare A B ...``: every argument is read and checked before anything is written."""
    from pathlib import Path

    from orchestrator.report.compare import CompareError, load_all
    from orchestrator.report.compare_render import default_dir, write_compare

    if args.resamples < 1:
        print("clorch: --resamples must be at least 1", file=sys.stderr)
        return 2
    try:
        studies = load_all(args.studies, args.tracking_uri, args.experiment, n_resamples=args.resamples)
    except CompareError as e:
        print(f"clorch: compare: {e}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_dir(studies)
    report = write_compare(studies, out, n_resamples=args.resamples)
    print(f"compare: {report.path} ({len(report.shared)} shared labels, {len(report.figures)} figures, "
          f"tables in {out / 'tables'})")
    return 0


def entry() -> None:
    """The ``clorch`` command: ``main()``, then the exit handlers a normal exit runs (logging, Ray, MLflow), then
    exit without Python's teardown of every loaded module, which after a study (torch, Ray's threads, MLflow)
    took about 3 s of nothing the user waits for (bench/study_overhead.py). An exception exits the normal way."""
    import atexit

    rc = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":
    entry()
