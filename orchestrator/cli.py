"""The ``clorch`` command: run, validate, list.

Exit codes: 0 success; 1 the study ran but some trials failed (all finished
results are kept); 2 bad input (nothing was started or written).
"""
from __future__ import annotations

import argparse
import sys

from orchestrator.spec import StudyError, load_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clorch", description="order-robustness studies for continual learning")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study (embedded Ray and MLflow by default)")
    run.add_argument("study", help="study YAML file")
    run.add_argument("--address", help="Ray cluster address to join (default: start an embedded local Ray)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a study field, e.g. --set orders.count=3 --set methods.0.params.epochs=2")
    val = sub.add_parser("validate", help="check a study file without running it")
    val.add_argument("study")
    val.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sub.add_parser("list", help="methods and benchmarks with their parameters")
    args = parser.parse_args(argv)

    if args.command == "list":
        from orchestrator.listing import describe_all

        print(describe_all())
        return 0
    try:
        study = load_study(args.study, args.overrides)
    except StudyError as e:
        print(e, file=sys.stderr)
        return 2
    if args.command == "validate":
        from orchestrator.expand import expand_configs

        n = len(expand_configs(study)) * len(study.task_orders()) * len(study.seeds)
        print(f"{args.study}: ok ({n} trials, {study.num_tasks} tasks per order)")
        return 0

    from orchestrator.cluster import ClusterUnreachable, use_cluster_token

    use_cluster_token(args.address)  # before anything imports ray
    from orchestrator.runner import run_study

    try:
        summary = run_study(study, address=args.address)
    except (FileNotFoundError, ValueError, ClusterUnreachable) as e:  # a dataset missing, no cluster there
        print(f"clorch: {e}", file=sys.stderr)
        return 2
    return 1 if summary["trials_failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
