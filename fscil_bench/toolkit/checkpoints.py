"""Which state of a network base training ends with: the last, or the best by a score.

Three rules (:attr:`fscil_bench.toolkit.training.SGDRecipe.checkpoint`):

* ``"last"`` (the default, protocol-clean): the state after the last epoch.
* ``"validation"`` (protocol-clean): a seeded ``validation_fraction`` of every class's training
  samples (at least one sample of a class with two or more; drawn with a generator seeded by the
  run's seed and the training stage) is held out of training. After every ``checkpoint_every``
  loader epochs, and after the last, the model's accuracy on the held-out samples (under the
  method's test view) is measured; the state with the best accuracy is kept, the later one on a tie.
* ``"best-on-test"`` (**not protocol-clean**; it reproduces the papers' ``best.pth``, NC-FSCIL and
  CEC both keep the base checkpoint with the best base-class test accuracy): the same, scored by
  the accuracy on the base classes' test images. The method never sees test labels: the runner
  supplies the scoring function (``Context.base_test_accuracy``), and marks the run's record as
  not protocol-clean. A method that asks for it without the runner's function fails.

A scored rule needs the caller's ``predict`` (images -> logits over the training classes).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from fscil_bench.data.arrays import LabelledImages
from fscil_bench.protocol import Context
from fscil_bench.toolkit.exemplars import labelled_images

CHECKPOINT_RULES = ("last", "validation", "best-on-test")


def validation_split(labels: torch.Tensor, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted ``(train_rows, validation_rows)``: ``max(1, round(fraction * n_c))`` random samples of
    every class with ``n_c >= 2`` samples are held out."""
    held = []
    for c in torch.unique(labels).tolist():
        rows = torch.nonzero(labels == c).flatten()
        if len(rows) >= 2:
            count = min(len(rows) - 1, max(1, round(fraction * len(rows))))
            held.append(rows[torch.randperm(len(rows), generator=generator)[:count]])
    val = torch.cat(held).sort().values if held else torch.zeros(0, dtype=torch.long)
    keep = torch.ones(len(labels), dtype=torch.bool)
    keep[val] = False
    return torch.nonzero(keep).flatten(), val


@torch.no_grad()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], data: LabelledImages, device: torch.device,
             batch_size: int = 256) -> float:
    """Top-1 accuracy of ``predict`` on ``data`` under its test-time view."""
    correct = total = 0
    for x, y in data.batches(batch_size, augment=False, device=device):
        correct += int((predict(x).argmax(1) == y).sum())
        total += len(y)
    return correct / max(1, total)


class CheckpointSelector:
    """Keeps the best state of ``model`` by ``score()``, measured every ``every`` epochs and at the end."""

    def __init__(self, model: nn.Module, score: Callable[[], float], every: int, rule: str, ctx: Context, desc: str):
        self.model, self.score, self.every, self.rule, self.ctx, self.desc = model, score, max(1, every), rule, ctx, desc
        self.best: tuple[float, int, dict[str, torch.Tensor]] | None = None
        self.scores: list[tuple[int, float]] = []

    def after_epoch(self, epoch: int, last: bool) -> None:
        if (epoch + 1) % self.every and not last:
            return
        training = self.model.training
        self.model.eval()
        value = float(self.score())
        self.model.train(training)
        self.scores.append((epoch + 1, value))
        if self.best is None or value >= self.best[0]:
            self.best = (value, epoch + 1, copy.deepcopy(self.model.state_dict()))

    def finish(self) -> None:
        """Load the best state into the model and note the choice in the run's record."""
        if self.best is None:
            return
        value, epoch, state = self.best
        self.model.load_state_dict(state)
        self.ctx.extra.setdefault("checkpoints", {})[self.desc] = {
            "rule": self.rule, "epoch": epoch, "score": round(value, 6),
            "scores": [[e, round(v, 6)] for e, v in self.scores]}


def checkpoint_selection(model: nn.Module, data: LabelledImages, recipe, predict: Callable[[torch.Tensor], torch.Tensor] | None,
                         ctx: Context, desc: str) -> tuple[LabelledImages, CheckpointSelector | None]:
    """The data to train on and the selector of ``recipe.checkpoint`` (None for ``"last"``)."""
    rule = recipe.checkpoint
    if rule == "last":
        return data, None
    if predict is None:
        raise ValueError(f"checkpoint rule {rule!r} needs the method's predict function for {desc!r}")
    if rule == "validation":
        generator = torch.Generator().manual_seed(ctx.stage_seed("validation-split", desc))
        train_rows, val_rows = validation_split(data.labels, recipe.validation_fraction, generator)
        held_out = labelled_images(data.raw_images[val_rows], data.labels[val_rows], data)
        data = labelled_images(data.raw_images[train_rows], data.labels[train_rows], data)
        score = lambda: accuracy(predict, held_out, ctx.device)  # noqa: E731
    elif rule == "best-on-test":
        scorer = ctx.base_test_accuracy
        if scorer is None:
            raise ValueError("checkpoint rule 'best-on-test' needs the runner's test scoring (run it through "
                             "fscil-bench run, with a preset ending in '+best-on-test')")
        score = lambda: scorer(predict)  # noqa: E731
    else:
        raise ValueError(f"unknown checkpoint rule {rule!r}; choose from {', '.join(CHECKPOINT_RULES)}")
    return data, CheckpointSelector(model, score, recipe.checkpoint_every, rule, ctx, desc)
