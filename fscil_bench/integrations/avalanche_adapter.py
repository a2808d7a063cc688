"""Avalanche integration: the only module of fscil-bench that imports Avalanche (avalanche-lib 0.6.0).

Two directions:

1. **Avalanche strategies as fscil-bench methods.** :class:`AvalancheStrategyMethod` wraps any
   ``SupervisedTemplate`` strategy of ``avalanche.training.supervised`` (``Naive``, ``LwF``,
   ``EWC``, ``Replay``, ...) and runs it on our sessions: the base session is the strategy's first
   training experience, each few-shot session the next one. Subclasses name the strategy and its
   arguments (``baselines/avalanche_methods.py`` registers ``avalanche-naive``, ``-lwf``,
   ``-ewc`` and ``-replay``).
2. **fscil-bench benchmarks as Avalanche benchmarks.** :func:`to_avalanche_benchmark` exports
   any of our schedules with its standard FSCIL splits as an Avalanche ``CLScenario`` with a
   ``train_stream`` and a ``test_stream``.

Avalanche is imported on first use (inside the functions), never at import time: the methods
appear in ``fscil-bench list`` without it, and a run without it fails with one clear message.

Data. Every experience's dataset is an Avalanche ``TaskAwareSupervisedClassificationDataset``
built from our uint8 images (``TensorDataset``) with ``targets`` and a constant task label 0
(class-incremental), and with our benchmark's own transforms as its ``train`` and ``eval``
transform groups, applied one image at a time (:class:`PerImage`): Avalanche's ``train()`` /
``eval()`` switch picks augmentation (random crop + flip for glyphs100 and CIFAR) or the test-time
view, exactly as for our own methods.

Network. The backbone is followed by Avalanche's ``IncrementalClassifier`` (it grows with the
classes of each experience and masks the units of unseen classes). By default
(``init_from_base_model``) the backbone and the base rows of the classifier are initialised from
the shared cross-entropy base model (:func:`fscil_bench.base_models.cross_entropy_base_model`,
the same cached model finetune and prototype use), and the strategy trains the base experience
for ``base_epochs`` epochs (0 in the presets: the strategy's plugins still see the base
experience, so LwF keeps its teacher, EWC computes its importances and Replay fills its buffer
from it). ``base_samples_per_class`` hands the strategy a seeded subset of the base images as its
base experience (every image when None); in ``quick`` this bounds what EWC's Fisher pass and
Replay's buffer selection cost. Each few-shot session is then trained by the strategy for
``epochs`` epochs with SGD. ``predict`` returns the classifier's logits for the seen classes.
Avalanche's evaluation is quiet: an ``EvaluationPlugin`` with no metrics and no loggers.

Metric definitions: ours (``fscil_bench.metrics``) against Avalanche's (0.6.0)
-------------------------------------------------------------------------------
With the test stream of :func:`to_avalanche_benchmark` (experience ``g`` = test images of the
classes introduced in session ``g``) and the model evaluated after session ``t`` on
``test_stream[:t+1]``:

* Avalanche ``accuracy_metrics(experience=True)`` after training experience ``t`` on test
  experience ``g`` is our ``A[t][g]`` (the accuracy matrix).
* Avalanche ``accuracy_metrics(stream=True)`` (``Top1_Acc_Stream``) is sample-weighted over
  every evaluated image: it equals our per-session accuracy ``A_t``. The standalone
  ``avalanche.evaluation.metrics.Accuracy`` fed with all predictions of session ``t`` gives the
  same number. Neither is the unweighted mean of the per-experience accuracies (the base group
  has 6,000 test images, a novel group 500), which some continual-learning papers call
  "average accuracy"; our ``avg_acc`` is different again: the mean of ``A_t`` over sessions.
* Avalanche's forgetting (``ExperienceForgetting`` / ``StreamForgetting``, and the functional
  ``avalanche.evaluation.functional.forgetting``) is *initial-based*: for experience ``g`` the
  accuracy recorded when it was trained minus the current one, ``A[g][g] - A[t][g]``, and the
  stream value averages it over the experiences trained before ``t``. That is our
  ``forgetting_initial`` (``-bwt``). Our headline ``forgetting_max`` is *max-based*: the drop from
  the best accuracy the group ever had, ``max_{g <= t' < t} A[t'][g] - A[t][g]``; it is never
  smaller than the initial-based value and differs whenever a group's accuracy rose after it
  was learned.
* Avalanche's stream forgetting needs the experience to have been evaluated right after it was
  trained (it records the "initial" value only when the evaluated experience is the one just
  trained); ours is computed from the saved per-sample predictions of every session, so it
  never depends on when evaluation ran.

``tests/test_integrations.py`` checks these identities on the same predictions.
"""

from __future__ import annotations

import contextlib
import copy
import io
import warnings
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from fscil_bench.data.arrays import BatchTransform
from fscil_bench.models.inference import inference_network
from fscil_bench.protocol import Context, MemoryDeclaration, MethodBase, Session
from fscil_bench.toolkit.backbones import backbone_init
from fscil_bench.toolkit.base_models import (
    QUICK_BACKBONE,
    QUICK_BASE_SGD,
    cross_entropy_base_model,
    cross_entropy_recipe_for,
)
from fscil_bench.toolkit.exemplars import subsample_per_class
from fscil_bench.toolkit.training import SGDRecipe

_AVALANCHE: SimpleNamespace | None = None


@contextlib.contextmanager
def quiet():
    """Silence Avalanche's warnings and prints (its loggers are off anyway). Some of its
    deprecation notices reset the warning filters themselves, so the display is muted too."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        warnings.showwarning = lambda *args, **kwargs: None
        yield


def avalanche() -> SimpleNamespace:
    """The Avalanche names this module uses, imported on first call."""
    global _AVALANCHE
    if _AVALANCHE is None:
        try:
            with quiet():
                import avalanche as av
                import avalanche.training.supervised as strategies
                from avalanche.benchmarks.scenarios import (
                    DatasetExperience,
                    EagerCLStream,
                    benchmark_from_datasets,
                )
                from avalanche.benchmarks.scenarios.supervised import (
                    with_classes_timeline,
                )
                from avalanche.benchmarks.utils import (
                    ConstantSequence,
                    DataAttribute,
                    TaskAwareSupervisedClassificationDataset,
                    TaskLabels,
                    TransformGroups,
                )
                from avalanche.models import IncrementalClassifier
                from avalanche.training.plugins import EvaluationPlugin
        except ImportError as exc:
            raise ImportError(
                "this needs Avalanche: pip install 'avalanche-lib==0.6.0' (or the package's [avalanche] extra)"
                f" ({exc})"
            ) from exc
        _AVALANCHE = SimpleNamespace(
            version=getattr(av, "__version__", "?"),
            strategies=strategies,
            DatasetExperience=DatasetExperience,
            EagerCLStream=EagerCLStream,
            benchmark_from_datasets=benchmark_from_datasets,
            with_classes_timeline=with_classes_timeline,
            ConstantSequence=ConstantSequence,
            DataAttribute=DataAttribute,
            TaskAwareSupervisedClassificationDataset=TaskAwareSupervisedClassificationDataset,
            TaskLabels=TaskLabels,
            TransformGroups=TransformGroups,
            IncrementalClassifier=IncrementalClassifier,
            EvaluationPlugin=EvaluationPlugin,
        )
    return _AVALANCHE


# --- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PerImage:
    """One of our batch transforms applied to a single uint8 ``(H, W, 3)`` image, as Avalanche's
    datasets transform one sample at a time. Random augmentations draw from torch's global RNG."""

    transform: BatchTransform

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return self.transform(image.unsqueeze(0), None)[0]


def avalanche_dataset(images: torch.Tensor, labels: torch.Tensor, train_transform: BatchTransform,
                      eval_transform: BatchTransform, group: str = "train"):
    """An Avalanche classification dataset of uint8 ``(N, H, W, 3)`` ``images`` and their labels,
    with task label 0 and our transforms as its ``train`` / ``eval`` transform groups."""
    av = avalanche()
    labels = torch.as_tensor(labels, dtype=torch.long)
    data = av.TaskAwareSupervisedClassificationDataset(
        [torch.utils.data.TensorDataset(images, labels)],
        data_attributes=[
            av.DataAttribute(labels.tolist(), "targets"),
            av.TaskLabels(av.ConstantSequence(0, len(labels))),
        ],
        transform_groups=av.TransformGroups({"train": PerImage(train_transform), "eval": PerImage(eval_transform)}),
    )
    return data.with_transforms(group)


def to_avalanche_benchmark(benchmark, cumulative_test: bool = False):
    """Export a :class:`fscil_bench.benchmarks.Benchmark` as an Avalanche benchmark (``CLScenario``).

    * ``train_stream[t]``: exactly the training samples session ``t`` hands a method (all base
      images for ``t = 0``, the scheduled few shots afterwards), with the benchmark's training
      augmentation as the ``train`` transform group and its test-time transform as ``eval``.
    * ``test_stream[t]``: the test images of the classes introduced in session ``t`` (so
      ``test_stream[:t+1]`` is the FSCIL test set after session ``t``); with
      ``cumulative_test=True`` it is that whole set: every test image of the classes seen after
      session ``t``. Test datasets start in the ``eval`` transform group.

    Experiences carry Avalanche's class timeline (``classes_in_this_experience``,
    ``previous_classes``, ``classes_seen_so_far``, ``future_classes``) and task label 0.
    Samples keep our global class ids (label-id order = arrival order).
    """
    av = avalanche()

    def take(split, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        # Copies (the arrays may be read-only memory maps).
        return (torch.from_numpy(np.ascontiguousarray(split.images[indices])),
                torch.from_numpy(np.asarray(split.labels[indices], dtype=np.int64)))

    train, test = [], []
    for t, spec in enumerate(benchmark.schedule.sessions):
        images, labels = take(benchmark.train, np.asarray(spec.train_indices))
        train.append(avalanche_dataset(images, labels, benchmark.train_transform, benchmark.eval_transform, group="train"))
        start, stop = benchmark.schedule.class_groups()[t]
        lo = 0 if cumulative_test else start
        images, labels = take(benchmark.test, np.flatnonzero((benchmark.test.labels >= lo) & (benchmark.test.labels < stop)))
        test.append(avalanche_dataset(images, labels, benchmark.train_transform, benchmark.eval_transform, group="eval"))
    with quiet():
        return av.with_classes_timeline(av.benchmark_from_datasets(train=train, test=test))


# --- strategies as methods ---------------------------------------------------------------------


class AvalancheNet(nn.Module):
    """A backbone followed by a classifier (Avalanche's ``IncrementalClassifier``)."""

    def __init__(self, backbone: nn.Module, classifier: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))


@dataclass(frozen=True)
class AvalancheHparams:
    """Settings shared by every wrapped strategy (see the module docstring).

    Attributes:
        backbone, base: the shared cross-entropy base model that seeds the network.
        init_from_base_model: seed backbone and base classifier rows from that model (else random).
        base_epochs: epochs the strategy trains on the base experience.
        base_samples_per_class: base images per class in the base experience (None: all).
        epochs, batch_size, lr, momentum, weight_decay: the strategy's SGD on each few-shot session
            (``base_lr`` on the base experience).
        eval_batch_size: the strategy's evaluation mini-batch.
        pretrained, frozen_stages: the backbone's initial weights
            (:func:`fscil_bench.toolkit.backbones.backbone_init`).
        train_view, test_view: the method's own views (None: the benchmark's transforms).
    """

    backbone: str = QUICK_BACKBONE
    base: SGDRecipe = QUICK_BASE_SGD
    init_from_base_model: bool = True
    base_epochs: int = 0
    base_samples_per_class: int | None = 20
    base_lr: float = 0.1
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    eval_batch_size: int = 256
    pretrained: str | None = None
    frozen_stages: int = -1
    train_view: str | None = None
    test_view: str | None = None


class AvalancheStrategyMethod(MethodBase):
    """Runs an Avalanche ``SupervisedTemplate`` strategy through our sessions.

    Subclasses set ``strategy`` (a class name in ``avalanche.training.supervised``) and override
    :meth:`strategy_kwargs` for its own arguments; :meth:`make_evaluator` may be overridden to
    attach Avalanche metrics (the default is silent).
    """

    strategy: ClassVar[str] = "Naive"

    def strategy_kwargs(self, hp: Any) -> dict[str, Any]:
        """Strategy-specific constructor arguments (e.g. LwF's ``alpha`` and ``temperature``)."""
        return {}

    def make_evaluator(self):
        """The strategy's ``EvaluationPlugin``: no metrics, no loggers (nothing printed)."""
        with quiet():
            return avalanche().EvaluationPlugin()

    def base_model_recipes(self, ctx: Context) -> list[dict[str, Any]]:
        hp: AvalancheHparams = ctx.hparams
        return ([cross_entropy_recipe_for(ctx, hp.backbone, hp.base, hp.pretrained, hp.frozen_stages)]
                if hp.init_from_base_model else [])

    def fit_base(self, session: Session, ctx: Context) -> None:
        hp: AvalancheHparams = ctx.hparams
        av = avalanche()
        if hp.init_from_base_model:
            base = cross_entropy_base_model(session, ctx, hp.backbone, hp.base, hp.pretrained, hp.frozen_stages)
            backbone = copy.deepcopy(base.backbone)  # the cached model may be shared in this process
        else:
            init = backbone_init(ctx, hp.backbone, hp.pretrained, hp.frozen_stages)
            torch.manual_seed(ctx.stage_seed("avalanche-init"))
            backbone = init.build()
        classifier = av.IncrementalClassifier(backbone.out_dim, initial_out_features=session.num_seen)
        if hp.init_from_base_model:
            with torch.no_grad():
                classifier.classifier.weight.copy_(base.head.weight)
                classifier.classifier.bias.copy_(base.head.bias)
        self._image_bytes = int(session.train.raw_images[0].numel())
        self.model = AvalancheNet(backbone, classifier).to(ctx.device)
        optimizer = torch.optim.SGD(self.model.parameters(), lr=hp.base_lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        strategy_cls = getattr(av.strategies, self.strategy)
        with quiet():
            self.avalanche_strategy = strategy_cls(
                model=self.model,
                optimizer=optimizer,
                criterion=nn.CrossEntropyLoss(),
                train_mb_size=hp.batch_size,
                train_epochs=hp.base_epochs,
                eval_mb_size=hp.eval_batch_size,
                device=ctx.device,
                evaluator=self.make_evaluator(),
                **self.strategy_kwargs(hp),
            )
        picks = subsample_per_class(session.train.labels, hp.base_samples_per_class,
                                    torch.Generator().manual_seed(ctx.stage_seed("avalanche-base-subset")))
        data = avalanche_dataset(session.train.raw_images[picks], session.train.labels[picks],
                                 session.train.train_transform, session.train.eval_transform)
        ctx.extra["avalanche"] = {"version": av.version, "strategy": self.strategy,
                                  "base_experience_samples": len(picks)}
        self._train(data, session, ctx, epochs=hp.base_epochs, lr=hp.base_lr)

    def fit_session(self, session: Session, ctx: Context) -> None:
        hp: AvalancheHparams = ctx.hparams
        data = avalanche_dataset(session.train.raw_images, session.train.labels,
                                 session.train.train_transform, session.train.eval_transform)
        self._train(data, session, ctx, epochs=hp.epochs, lr=hp.lr)

    def _train(self, data, session: Session, ctx: Context, epochs: int, lr: float) -> None:
        av = avalanche()
        experience = av.DatasetExperience(dataset=data, current_experience=session.index)
        experience.origin_stream = av.EagerCLStream("train", [experience], set_stream_info=False)
        first = session.new_classes[0]
        experience.classes_in_this_experience = list(session.new_classes)
        experience.previous_classes = list(range(first))
        experience.classes_seen_so_far = list(range(session.num_seen))
        experience.future_classes = list(range(session.num_seen, ctx.num_classes_total))
        strategy = self.avalanche_strategy
        strategy.train_epochs = epochs
        for group in strategy.optimizer.param_groups:
            group["lr"] = lr
        # Avalanche shuffles and augments with torch's global RNG: seed it per session.
        torch.manual_seed(ctx.stage_seed("avalanche-session", session.index))
        with quiet():
            strategy.train(experience, eval_streams=[])
        self.model = strategy.model
        self.num_seen = session.num_seen

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return inference_network(self.model.backbone)(images)

    @torch.no_grad()
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model.classifier(features)[:, : self.num_seen]

    def classifier_weights(self) -> torch.Tensor:
        """The rows of Avalanche's (incremental) linear classifier for the seen classes."""
        return self.model.classifier.classifier.weight.detach()[: self.num_seen]

    def memory(self) -> MemoryDeclaration:
        exemplars, nbytes, notes = 0, 0, []
        for plugin in getattr(self.avalanche_strategy, "plugins", []):
            policy = getattr(plugin, "storage_policy", None)
            if policy is not None:  # replay buffer: raw training images
                buffer = policy.buffer
                exemplars += len(buffer)
                nbytes += len(buffer) * self._image_bytes
                notes.append(f"replay buffer of {len(buffer)} training images ({type(policy).__name__})")
            lwf = getattr(plugin, "lwf", None)
            if lwf is not None and getattr(lwf, "prev_model", None) is not None:
                nbytes += sum(p.numel() * p.element_size() for p in lwf.prev_model.parameters())
                notes.append("a frozen copy of the previous network (distillation teacher)")
            importances = getattr(plugin, "importances", None)
            if importances:
                tensors = [d.data for per_exp in list(importances.values()) + list(plugin.saved_params.values())
                           for d in per_exp.values()]
                nbytes += sum(t.numel() * t.element_size() for t in tensors)
                notes.append(f"EWC importances and parameter snapshots of {len(importances)} experiences")
        return MemoryDeclaration(exemplars=exemplars, bytes=nbytes, notes="; ".join(notes))
