"""``fscil-bench compare A B``: two methods on one benchmark, paired run by run, with confidence intervals."""

from __future__ import annotations

import argparse

from fscil_bench.cli.common import UserError

EXAMPLES = """examples:
  fscil-bench compare prototype finetune                      # every run both have (seeds, splits, orders)
  fscil-bench compare prototype etf --splits 0 --orders 0     # the standard split and order only
  fscil-bench compare prototype:quick prototype:paper -b cifar100
"""


def cmd_compare(args: argparse.Namespace) -> int:
    from fscil_bench.reporting.compare import CompareError, compare_methods, format_comparison
    from fscil_bench.results.store import ResultsStore

    store = ResultsStore(args.runs)
    if not store.root.is_dir():
        raise UserError(f"no results folder at {store.root} (run 'fscil-bench run' first, or pass --runs)")
    if not 0 < args.confidence < 1:
        raise UserError(f"--confidence must be between 0 and 1, not {args.confidence}")
    if args.resamples < 100:
        raise UserError(f"--resamples must be at least 100, not {args.resamples}")
    try:
        comparison = compare_methods(store, args.a, args.b, benchmark=args.benchmark, preset=args.preset,
                                     seeds=args.seeds, splits=args.splits, orders=args.orders,
                                     confidence=args.confidence, resamples=args.resamples, seed=args.bootstrap_seed)
    except CompareError as exc:
        raise UserError(str(exc)) from exc
    print(format_comparison(comparison))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    cmp = sub.add_parser("compare", help="compare two methods run by run: B - A with confidence intervals",
                         description="The difference B - A in last-session and average accuracy over the runs both "
                                     "methods completed at the same seed, split and order: per run with a bootstrap "
                                     "interval over its test images, and over the runs with a paired t interval and "
                                     "the Wilcoxon signed-rank test.",
                         epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp.add_argument("a", metavar="A", help="the method compared against, NAME or NAME:PRESET")
    cmp.add_argument("b", metavar="B", help="the method compared, NAME or NAME:PRESET")
    cmp.add_argument("--runs", default="runs", help="results folder (default: ./runs)")
    cmp.add_argument("--benchmark", "-b", help="benchmark name or name@version (default: the one both methods have runs on)")
    cmp.add_argument("--preset", help="preset of both methods (default: the one each has runs of)")
    cmp.add_argument("--seeds", type=int, nargs="+", help="only these seeds (default: all shared)")
    cmp.add_argument("--splits", type=int, nargs="+", help="only these few-shot splits (default: all shared)")
    cmp.add_argument("--orders", type=int, nargs="+", help="only these class orders (default: all shared)")
    cmp.add_argument("--confidence", type=float, default=0.95, help="confidence level of the intervals (default: 0.95)")
    cmp.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples of the test images (default: 2000)")
    cmp.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    cmp.set_defaults(func=cmd_compare)
