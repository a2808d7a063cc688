#!/usr/bin/env python
"""CEC's attention classifier: the literal per-query sets against the inner-product fast path.

:class:`~fscil_bench.toolkit.set_attention.PrototypeAttentionHead` scores every query against
the prototypes adapted to that query. Computed literally, one ``(C + 1)``-token set per query, it
costs ``O(N C^2 d + N C d^2)``; the fast path gives the same numbers in ``O(N C d)``. This prints
the median time of each (and their largest difference) for a meta-training episode (450 queries,
30 prototypes; forward and backward) and for an evaluation (queries against 100 prototypes).

    python perf/cec_attention.py                  # d = 128 (convnet4-small), 2,000 test queries
    python perf/cec_attention.py --dim 512 --queries 10000
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from fscil_bench.toolkit.set_attention import PrototypeAttentionHead


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=2000, help="test queries of the evaluation case")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    head = PrototypeAttentionHead(args.dim).eval()
    episode = (torch.randn(30, args.dim), torch.randn(450, args.dim), torch.arange(30).repeat_interleave(15))
    evaluation = (torch.randn(100, args.dim), torch.randn(args.queries, args.dim))

    def train_step(path):
        def run():
            prototypes, queries, labels = episode
            F.cross_entropy(path(prototypes, queries), labels).backward()
        return run

    def test(path):
        def run():
            with torch.no_grad():
                path(*evaluation)
        return run

    print(f"d = {args.dim}, {torch.get_num_threads()} threads")
    for name, case in (("episode (450 x 30, forward + backward)", train_step),
                       (f"evaluation ({args.queries} x 100)", test)):
        literal = _median_seconds(case(head.literal), args.repeats)
        fast = _median_seconds(case(head.fast), args.repeats)
        print(f"{name}: literal {1000 * literal:.1f} ms, fast {1000 * fast:.1f} ms ({literal / fast:.0f}x)")
    with torch.no_grad():
        gap = (head.literal(*evaluation[:1], evaluation[1][:500]) - head.fast(*evaluation[:1], evaluation[1][:500]))
    print(f"largest |literal - fast| logit over 500 queries: {gap.abs().max().item():.2e}")


if __name__ == "__main__":
    main()
