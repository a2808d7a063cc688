"""Named views: the training augmentations and test-time views a method may declare for itself.

A benchmark comes with standard transforms (its ``train_transform`` and ``eval_transform``). A
method's preset may name its own instead, by the hyperparameter fields ``train_view`` and
``test_view`` (names in :data:`VIEWS`), or override :meth:`fscil_bench.protocol.MethodBase.views`;
the runner then hands the method its sessions with those transforms attached and shows it the
raw test images through its test view. Nothing else of the protocol changes: the images, the
labels the method sees and the evaluation are the benchmark's.

A view is built for a benchmark from :class:`ViewInputs`: the benchmark's family, its
normalisation and whether a mirror image keeps its class. A view that names its own
normalisation constants uses them on the family they were published for and the benchmark's
elsewhere; a view with a flip leaves the flip out where mirroring changes the class
(glyphs100). The views of the published recipes (sources: NeuralCollapseApplications/FSCIL@37a5475,
icoz69/CEC-CVPR2021@3a5d335, CanPeng123/FSCIL_ALICE@955e640, zysong0113/SAVC@1543c9c):

======================  ==========================================================================
``nc-cifar-train``      RandomResizedCrop 32, scale (0.6, 1), bicubic without antialiasing (OpenCV);
                        flip 0.5; mmcls ColorJitter 0.4/0.4/0.4 (no hue; grey weights applied to the
                        RGB array in OpenCV's BGR order, as NC-FSCIL does on CIFAR); NC's CIFAR
                        normalisation (``configs/_base_/datasets/cifar_fscil.py:8-16``)
``nc-cifar-test``       resize to 36 (bicubic, OpenCV), centre crop 32 (``cifar_fscil.py:18-24``)
``nc-mini-train``       RandomResizedCrop 84 (scale 0.08-1, bilinear, OpenCV), flip, ColorJitter 0.4;
                        ImageNet normalisation (``configs/_base_/datasets/mini_imagenet_fscil.py:9-18``)
``nc-mini-test``        resize the shorter side to 96 (bilinear, OpenCV), centre crop 84 (``:20-27``)
``nc-cub-train``        RandomResizedCrop 224 of the whole image, flip, ColorJitter 0.4 (``cub_fscil.py:10-19``)
``nc-cub-test``         resize the shorter side to 256, centre crop 224 (``cub_fscil.py:21-28``)
``cec-cifar-train``     random crop 32 with 4 px of black padding, flip; CEC's CIFAR normalisation
                        (``dataloader/cifar100/cifar.py:74-85``)
``cec-cifar-test``      the image as it is, CEC's CIFAR normalisation
``cec-mini-train``      torchvision RandomResizedCrop 84 (bilinear, antialiased), flip
                        (``dataloader/miniimagenet/miniimagenet.py:48-66``)
``cec-mini-test``       resize to 92 x 92 (both sides), centre crop 84
``cec-cub-train``       resize the shorter side to 256, torchvision RandomResizedCrop 224, flip
                        (``dataloader/cub200/cub200.py:20-39``)
``cec-cub-test``        resize the shorter side to 256, centre crop 224
``alice-cifar-train``   torchvision RandomResizedCrop 32 (scale 0.2-1), flip, ColorJitter
                        0.4/0.4/0.4/0.1 applied with p 0.8, grayscale with p 0.2; ALICE's normalisation
                        (CIFAR-10's constants, on all three datasets) (``alice/dataloader/cifar100/cifar.py:72-79``)
``alice-cifar-test``    resize to 36 (bicubic), centre crop 32 (``cifar.py:81-86``)
``alice-mini-train``    resize to 92 x 92, then as ``alice-cifar-train`` at 84 px
                        (``alice/dataloader/miniimagenet/miniimagenet.py:45-53``)
``alice-mini-test``     resize to 92 x 92, centre crop 84 (``miniimagenet.py:63-68``)
``alice-cub-train``     resize the shorter side to 256, then as ``alice-cifar-train`` at 224 px
                        (``alice/dataloader/cub200/cub200.py:19-27``)
``alice-cub-test``      resize the shorter side to 256, centre crop 224 (``cub200.py:38-43``)
``savc-cifar-train``    as ``cec-cifar-train`` with SAVC's CIFAR normalisation
                        (``dataloader/cifar100/cifar.py:85``, ``dataloader/data_utils.py:34-35``)
``savc-cifar-test``     the image as it is, SAVC's CIFAR normalisation
======================  ==========================================================================

Every step of these views works on 8-bit levels (:class:`~fscil_bench.data.augment.Pipeline`'s
``uint8_steps``), as the official pipelines do on uint8 images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fscil_bench.data.arrays import BatchTransform
from fscil_bench.data.augment import (
    CenterCrop,
    ColorJitter,
    HorizontalFlip,
    Operation,
    Pipeline,
    RandomApply,
    RandomCrop,
    RandomGrayscale,
    RandomResizedCrop,
    Resize,
)
from fscil_bench.data.transforms import Normalization
from fscil_bench.registry import Registry

#: NC-FSCIL's CIFAR-100 constants (given on 0-255 in ``cifar_fscil.py``), scaled to [0, 1].
NC_CIFAR_NORM = Normalization(mean=(129.304 / 255, 124.070 / 255, 112.434 / 255),
                              std=(68.170 / 255, 65.392 / 255, 70.418 / 255))
#: CEC's CIFAR-100 constants (``dataloader/cifar100/cifar.py:78,84``).
CEC_CIFAR_NORM = Normalization(mean=(0.507, 0.487, 0.441), std=(0.267, 0.256, 0.276))
#: ImageNet's constants (NC-FSCIL's mini and CUB pipelines, CEC's mini and CUB loaders).
IMAGENET_NORM = Normalization(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

#: ALICE's constants on every dataset: CIFAR-10's (``alice/dataloader/cifar100/cifar.py:78``,
#: ``miniimagenet.py:52``, ``cub200.py:26``).
ALICE_NORM = Normalization(mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010))

#: SAVC's CIFAR-100 constants (``dataloader/cifar100/cifar.py:85``, ``dataloader/data_utils.py:34-35``).
SAVC_CIFAR_NORM = Normalization(mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761))

#: OpenCV's BGR grey weights applied to an RGB array: NC-FSCIL's ColorJitter on CIFAR (whose
#: arrays are RGB while mmcv's grey conversion assumes BGR) weighs R by 0.114 and B by 0.299.
SWAPPED_LUMA = (0.114, 0.587, 0.299)


@dataclass(frozen=True)
class ViewInputs:
    """What a view may depend on: the benchmark's ``family``, its normalisation ``norm`` and
    whether a mirror image keeps its class (``flip``)."""

    family: str
    norm: Normalization
    flip: bool = True


@dataclass(frozen=True)
class View:
    """A named view: ``build(inputs)`` makes its transform for a benchmark; ``description`` and
    ``source`` are what ``fscil-bench recipe`` prints."""

    name: str
    description: str
    source: str
    build: Callable[[ViewInputs], BatchTransform]


@dataclass(frozen=True)
class MethodViews:
    """A method's own transforms for one benchmark (None: the benchmark's) and their names."""

    train: BatchTransform | None = None
    test: BatchTransform | None = None
    train_name: str | None = None
    test_name: str | None = None

    @property
    def identity(self) -> dict[str, str] | None:
        """What the views add to a cache key: None for the benchmark's own, else their names or reprs."""
        if self.train is None and self.test is None:
            return None
        return {"train": self.train_name or (repr(self.train) if self.train is not None else "benchmark"),
                "test": self.test_name or (repr(self.test) if self.test is not None else "benchmark")}


def _norm(inputs: ViewInputs, family: str, published: Normalization) -> Normalization:
    """``published`` on ``family`` (the data it was published for), the benchmark's elsewhere."""
    return published if inputs.family == family else inputs.norm


def _flip(inputs: ViewInputs) -> tuple[Operation, ...]:
    return (HorizontalFlip(0.5),) if inputs.flip else ()


def _nc_jitter(luma: tuple[float, float, float] | None = None) -> ColorJitter:
    extra = {"luma": luma} if luma else {}
    return ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, uint8_levels=True, **extra)


def _pipeline(norm: Normalization, *steps: Operation) -> Pipeline:
    return Pipeline(norm, tuple(steps), uint8_steps=True)


def _alice_train(inputs: ViewInputs, family: str, size: int, *resize: Operation) -> Pipeline:
    """ALICE's training view: ``resize`` steps, then RandomResizedCrop ``size`` (scale 0.2-1), flip,
    ColorJitter 0.4/0.4/0.4/0.1 with p 0.8 and grayscale with p 0.2 (torchvision on PIL images)."""
    jitter = ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, uint8_levels=True)
    return _pipeline(_norm(inputs, family, ALICE_NORM), *resize, RandomResizedCrop(size, (0.2, 1.0)), *_flip(inputs),
                     RandomApply(jitter, 0.8), RandomGrayscale(0.2))


NC = "NeuralCollapseApplications/FSCIL@37a5475"
CEC = "icoz69/CEC-CVPR2021@3a5d335"
ALICE = "CanPeng123/FSCIL_ALICE@955e640"
SAVC = "zysong0113/SAVC@1543c9c"

VIEWS: Registry[View] = Registry("view")
for _view in (
    View("nc-cifar-train", "RandomResizedCrop 32 (scale 0.6-1, bicubic, no antialias), flip, ColorJitter 0.4 "
         "(random order, BGR grey weights on RGB)", f"{NC} configs/_base_/datasets/cifar_fscil.py:8-16",
         lambda i: _pipeline(_norm(i, "cifar100", NC_CIFAR_NORM),
                             RandomResizedCrop(32, (0.6, 1.0), interpolation="bicubic", antialias=False),
                             *_flip(i), _nc_jitter(SWAPPED_LUMA if i.family == "cifar100" else None))),
    View("nc-cifar-test", "resize to 36 (bicubic, no antialias), centre crop 32",
         f"{NC} configs/_base_/datasets/cifar_fscil.py:18-24",
         lambda i: _pipeline(_norm(i, "cifar100", NC_CIFAR_NORM), Resize(36, "bicubic", antialias=False), CenterCrop(32))),
    View("nc-mini-train", "RandomResizedCrop 84 (scale 0.08-1, bilinear, no antialias), flip, ColorJitter 0.4",
         f"{NC} configs/_base_/datasets/mini_imagenet_fscil.py:9-18",
         lambda i: _pipeline(_norm(i, "mini_imagenet", IMAGENET_NORM),
                             RandomResizedCrop(84, antialias=False), *_flip(i), _nc_jitter())),
    View("nc-mini-test", "resize the shorter side to 96 (bilinear, no antialias), centre crop 84",
         f"{NC} configs/_base_/datasets/mini_imagenet_fscil.py:20-27",
         lambda i: _pipeline(_norm(i, "mini_imagenet", IMAGENET_NORM), Resize(96, antialias=False), CenterCrop(84))),
    View("nc-cub-train", "RandomResizedCrop 224 (scale 0.08-1, bilinear, no antialias), flip, ColorJitter 0.4",
         f"{NC} configs/_base_/datasets/cub_fscil.py:10-19",
         lambda i: _pipeline(_norm(i, "cub200", IMAGENET_NORM),
                             RandomResizedCrop(224, antialias=False), *_flip(i), _nc_jitter())),
    View("nc-cub-test", "resize the shorter side to 256 (bilinear, no antialias), centre crop 224",
         f"{NC} configs/_base_/datasets/cub_fscil.py:21-28",
         lambda i: _pipeline(_norm(i, "cub200", IMAGENET_NORM), Resize(256, antialias=False), CenterCrop(224))),
    View("cec-cifar-train", "random crop 32 with 4 px black padding, flip", f"{CEC} dataloader/cifar100/cifar.py:74-79",
         lambda i: _pipeline(_norm(i, "cifar100", CEC_CIFAR_NORM), RandomCrop(32, padding=4), *_flip(i))),
    View("cec-cifar-test", "the image as it is", f"{CEC} dataloader/cifar100/cifar.py:82-85",
         lambda i: _pipeline(_norm(i, "cifar100", CEC_CIFAR_NORM))),
    View("cec-mini-train", "RandomResizedCrop 84 (scale 0.08-1, bilinear, antialiased), flip",
         f"{CEC} dataloader/miniimagenet/miniimagenet.py:48-54",
         lambda i: _pipeline(_norm(i, "mini_imagenet", IMAGENET_NORM), RandomResizedCrop(84), *_flip(i))),
    View("cec-mini-test", "resize to 92 x 92, centre crop 84", f"{CEC} dataloader/miniimagenet/miniimagenet.py:61-66",
         lambda i: _pipeline(_norm(i, "mini_imagenet", IMAGENET_NORM), Resize(92, square=True), CenterCrop(84))),
    View("cec-cub-train", "resize the shorter side to 256, RandomResizedCrop 224 (bilinear, antialiased), flip",
         f"{CEC} dataloader/cub200/cub200.py:20-27",
         lambda i: _pipeline(_norm(i, "cub200", IMAGENET_NORM), Resize(256), RandomResizedCrop(224), *_flip(i))),
    View("cec-cub-test", "resize the shorter side to 256, centre crop 224", f"{CEC} dataloader/cub200/cub200.py:34-39",
         lambda i: _pipeline(_norm(i, "cub200", IMAGENET_NORM), Resize(256), CenterCrop(224))),
    View("alice-cifar-train", "RandomResizedCrop 32 (scale 0.2-1), flip, ColorJitter 0.4/0.4/0.4/0.1 (p 0.8), "
         "grayscale (p 0.2)", f"{ALICE} alice/dataloader/cifar100/cifar.py:72-79",
         lambda i: _alice_train(i, "cifar100", 32)),
    View("alice-cifar-test", "resize to 36 (bicubic), centre crop 32", f"{ALICE} alice/dataloader/cifar100/cifar.py:81-86",
         lambda i: _pipeline(_norm(i, "cifar100", ALICE_NORM), Resize(36, "bicubic"), CenterCrop(32))),
    View("alice-mini-train", "resize to 92 x 92, RandomResizedCrop 84 (scale 0.2-1), flip, ColorJitter (p 0.8), "
         "grayscale (p 0.2)", f"{ALICE} alice/dataloader/miniimagenet/miniimagenet.py:45-53",
         lambda i: _alice_train(i, "mini_imagenet", 84, Resize(92, square=True))),
    View("alice-mini-test", "resize to 92 x 92, centre crop 84", f"{ALICE} alice/dataloader/miniimagenet/miniimagenet.py:63-68",
         lambda i: _pipeline(_norm(i, "mini_imagenet", ALICE_NORM), Resize(92, square=True), CenterCrop(84))),
    View("alice-cub-train", "resize the shorter side to 256, RandomResizedCrop 224 (scale 0.2-1), flip, ColorJitter "
         "(p 0.8), grayscale (p 0.2)", f"{ALICE} alice/dataloader/cub200/cub200.py:19-27",
         lambda i: _alice_train(i, "cub200", 224, Resize(256))),
    View("alice-cub-test", "resize the shorter side to 256, centre crop 224", f"{ALICE} alice/dataloader/cub200/cub200.py:38-43",
         lambda i: _pipeline(_norm(i, "cub200", ALICE_NORM), Resize(256), CenterCrop(224))),
    View("savc-cifar-train", "random crop 32 with 4 px black padding, flip; SAVC's CIFAR normalisation",
         f"{SAVC} dataloader/cifar100/cifar.py:85; dataloader/data_utils.py:34-35",
         lambda i: _pipeline(_norm(i, "cifar100", SAVC_CIFAR_NORM), RandomCrop(32, padding=4), *_flip(i))),
    View("savc-cifar-test", "the image as it is; SAVC's CIFAR normalisation",
         f"{SAVC} dataloader/cifar100/cifar.py:85; dataloader/data_utils.py:34-35",
         lambda i: _pipeline(_norm(i, "cifar100", SAVC_CIFAR_NORM))),
):
    VIEWS.add(_view.name, _view)


def build_view(name: str, inputs: ViewInputs) -> BatchTransform:
    """The transform of view ``name`` for a benchmark described by ``inputs``."""
    return VIEWS.get(name).build(inputs)


def views_from_names(train_view: str | None, test_view: str | None, inputs: ViewInputs) -> MethodViews:
    """The views named by a method's ``train_view`` and ``test_view`` (None: the benchmark's)."""
    return MethodViews(
        train=build_view(train_view, inputs) if train_view else None,
        test=build_view(test_view, inputs) if test_view else None,
        train_name=train_view,
        test_name=test_view,
    )
