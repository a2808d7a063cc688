"""Export an fscil-bench schedule as an Avalanche benchmark and run an Avalanche strategy on it.

    .venv/bin/python examples/avalanche_export.py                      # glyphs100-tiny, about a minute on a CPU
    .venv/bin/python examples/avalanche_export.py --benchmark glyphs100-small --base-epochs 15

``to_avalanche_benchmark`` turns the schedule into Avalanche's ``train_stream`` (experience t =
the training samples of session t: the whole base set, then the few shots) and ``test_stream``
(experience t = the test images of the classes introduced in session t, so ``test_stream[:t+1]``
is the FSCIL test set after session t). From there on it is plain Avalanche: here a ``Naive``
strategy with an ``IncrementalClassifier``, evaluated with Avalanche's own accuracy and
forgetting metrics after every experience.

The defaults only demonstrate the plumbing: glyphs100-tiny has 20 training images per base
class and two epochs teach a network little, so the accuracies stay near chance. For numbers
that mean something, use a bigger benchmark and more epochs (``--benchmark glyphs100-small
--base-epochs 15``; minutes on a CPU).

Needs avalanche-lib (``pip install 'avalanche-lib==0.6.0'``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn


def main(bench, epochs: int = 1, base_epochs: int = 2, backbone: str = "convnet4-small", log=print) -> list[float]:
    """Train Avalanche's Naive strategy through ``bench``'s sessions (``base_epochs`` on the base
    experience, ``epochs`` on each later one); return the stream accuracy (Avalanche's
    ``Top1_Acc_Stream``, i.e. our A_t) after each experience."""
    from fscil_bench.integrations.avalanche_adapter import quiet, to_avalanche_benchmark
    from fscil_bench.models import build_backbone

    with quiet():  # Avalanche's import warns about optional solvers it does not need here
        from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
        from avalanche.models import IncrementalClassifier
        from avalanche.training.plugins import EvaluationPlugin
        from avalanche.training.supervised import Naive

    scenario = to_avalanche_benchmark(bench)
    log(f"{bench.id} as an Avalanche benchmark: {len(scenario.train_stream)} train / {len(scenario.test_stream)} test experiences")
    for train_exp, test_exp in zip(scenario.train_stream, scenario.test_stream):
        classes = sorted(train_exp.classes_in_this_experience)
        log(f"  experience {train_exp.current_experience}: classes {classes[0]}-{classes[-1]}, "
            f"{len(train_exp.dataset)} train / {len(test_exp.dataset)} test images")

    torch.manual_seed(0)
    features = build_backbone(backbone)
    model = nn.Sequential(features, IncrementalClassifier(features.out_dim, initial_out_features=bench.schedule.num_base_classes))
    with quiet():  # an EvaluationPlugin without loggers warns that nothing will be printed
        evaluator = EvaluationPlugin(accuracy_metrics(experience=True, stream=True), forgetting_metrics(stream=True), loggers=[])
    strategy = Naive(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4),
                     criterion=nn.CrossEntropyLoss(), train_mb_size=64, train_epochs=epochs, eval_mb_size=256,
                     evaluator=evaluator)
    accuracies = []
    for t, experience in enumerate(scenario.train_stream):
        strategy.train_epochs = base_epochs if t == 0 else epochs
        with quiet():
            strategy.train(experience, eval_streams=[])
            metrics = strategy.eval(scenario.test_stream[: t + 1])
        acc = next(v for k, v in metrics.items() if k.startswith("Top1_Acc_Stream/eval_phase/test_stream"))
        forgetting = metrics.get("StreamForgetting/eval_phase/test_stream", 0.0)
        accuracies.append(float(acc))
        log(f"after experience {t}: accuracy on all seen classes {100 * acc:.2f}%, forgetting {100 * forgetting:.2f}")
    return accuracies


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="glyphs100-tiny")
    parser.add_argument("--cache-dir", default=None, help="dataset cache (default: fscil-bench's)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per few-shot experience")
    parser.add_argument("--base-epochs", type=int, default=2, help="epochs on the base experience")
    args = parser.parse_args()

    from fscil_bench.benchmarks import LoadOptions, get_benchmark
    from fscil_bench.defaults import default_cache_dir

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    main(get_benchmark(args.benchmark).load(LoadOptions(cache_dir=cache)), epochs=args.epochs, base_epochs=args.base_epochs)
