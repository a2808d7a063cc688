"""Pretrained weights: the named files the suite knows, local files, checks, and loading.

A method's hyperparameters name its initial weights by ``pretrained``: either the name of a
known file (:data:`KNOWN_WEIGHTS`, e.g. ``torchvision-resnet18-imagenet1k-v1``), looked up in the
weights folder (``fscil-bench run --weights-dir``, default ``<cache>/weights``), or a path to a
file of your own. Nothing is downloaded during a run: ``fscil-bench weights fetch NAME`` fetches
a known file on a machine with a network, and a run that needs a missing file stops before
training with one line saying which file it needs and where it comes from.

A known file is checked against the sha256 prefix its name or address carries (torchvision's and
timm's convention: ``resnet18-f37072fd.pth`` starts with ``f37072fd``; OpenAI publishes CLIP's
full sha256 in the address); every file's full sha256 enters the cache keys of what is trained
from it and the run's record.

:attr:`WeightsSpec.backbone` names the network the file fits: a name of
:data:`fscil_bench.models.BACKBONES` (torchvision's ``state_dict`` format), or ``timm:<model>`` /
``open_clip:<config>`` for a file in the format timm or open_clip saves, built by the adapters of
:mod:`fscil_bench.integrations.pretrained` (optional: ``pip install 'fscil-bench[pretrained]'``). Weights trained on data beyond the
benchmark are declared: :attr:`WeightsSpec.trained_on` is shown next to every run that uses them,
and :attr:`WeightsSpec.overlaps` names the benchmarks whose classes that data contains (ImageNet
weights on miniImageNet).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fscil_bench.cache import sha256_file
from fscil_bench.registry import Registry, did_you_mean


class WeightsError(RuntimeError):
    """Weights that cannot be found, verified or loaded; the message says what to do."""


@dataclass(frozen=True)
class WeightsSpec:
    """A known weights file.

    Attributes:
        name: its name in presets and on the command line.
        file: its file name in the weights folder.
        url: where ``fscil-bench weights fetch`` downloads it from.
        sha256_prefix: the leading hex digits of its sha256 (checked on every use).
        backbone: the backbone it fits: a name of :data:`fscil_bench.models.BACKBONES`, or
            ``timm:<model>`` / ``open_clip:<config>`` (a library's model built without weights).
        trained_on: the data it was trained on, in words (shown next to every run using it).
        overlaps: benchmark families whose classes that data contains.
        source: who publishes it and under which terms.
        backbone_args: keyword arguments of the library's model constructor, as ``(name, value)``
            pairs (e.g. a smaller image size), when the file fits a variant of ``backbone``.
    """

    name: str
    file: str
    url: str
    sha256_prefix: str
    backbone: str
    trained_on: str
    overlaps: tuple[str, ...] = ()
    source: str = ""
    backbone_args: tuple[tuple[str, Any], ...] = ()


KNOWN_WEIGHTS: Registry[WeightsSpec] = Registry("weights")
KNOWN_WEIGHTS.add("torchvision-resnet18-imagenet1k-v1", WeightsSpec(
    name="torchvision-resnet18-imagenet1k-v1",
    file="resnet18-f37072fd.pth",
    url="https://download.pytorch.org/models/resnet18-f37072fd.pth",
    sha256_prefix="f37072fd",
    backbone="resnet18",
    trained_on="ImageNet-1k (1.28M images, 1,000 classes)",
    overlaps=("mini_imagenet",),
    source="torchvision ResNet18_Weights.IMAGENET1K_V1 (the 'torchvision://resnet18' of NC-FSCIL and CEC), BSD-3-Clause",
))
#: ImageNet-21k's 21,843 WordNet classes include ImageNet-1k's (miniImageNet's images are
#: ImageNet-1k images), the CIFAR-100 class nouns and many of CUB-200's bird species; CLIP's
#: web image-text pairs cover all of them. Weights trained on such data are flagged on those benchmarks.
_BROAD_DATA_OVERLAPS = ("mini_imagenet", "cifar100", "cub200")
KNOWN_WEIGHTS.add("timm-vit-b16-in21k", WeightsSpec(
    name="timm-vit-b16-in21k",
    file="jx_vit_base_patch16_224_in21k-e5005f0a.pth",
    url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/"
        "jx_vit_base_patch16_224_in21k-e5005f0a.pth",
    sha256_prefix="e5005f0a",
    backbone="timm:vit_base_patch16_224",
    trained_on="ImageNet-21k (14M images, 21,843 classes)",
    overlaps=_BROAD_DATA_OVERLAPS,
    source="Google's ViT-B/16 ImageNet-21k weights (Dosovitskiy et al., ICLR 2021) as ported to timm "
           "(timm's vit_base_patch16_224.orig_in21k), Apache-2.0",
))
KNOWN_WEIGHTS.add("timm-vit-b16-in21k-ft-in1k", WeightsSpec(
    name="timm-vit-b16-in21k-ft-in1k",
    file="jx_vit_base_p16_224-80ecf9dd.pth",
    url="https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-vitjx/jx_vit_base_p16_224-80ecf9dd.pth",
    sha256_prefix="80ecf9dd",
    backbone="timm:vit_base_patch16_224",
    trained_on="ImageNet-21k (14M images, 21,843 classes), then fine-tuned on ImageNet-1k (1.28M images, 1,000 classes)",
    overlaps=_BROAD_DATA_OVERLAPS,
    source="Google's ViT-B/16 fine-tuned on ImageNet-1k (Dosovitskiy et al., ICLR 2021) as ported to timm, Apache-2.0",
))
KNOWN_WEIGHTS.add("clip-vit-b16-openai", WeightsSpec(
    name="clip-vit-b16-openai",
    file="ViT-B-16.pt",
    url="https://openaipublic.azureedge.net/clip/models/"
        "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f/ViT-B-16.pt",
    sha256_prefix="5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f",
    backbone="open_clip:ViT-B-16-quickgelu",
    trained_on="WIT, 400M image-text pairs collected from the web (OpenAI CLIP)",
    overlaps=_BROAD_DATA_OVERLAPS,
    source="OpenAI CLIP ViT-B/16 (Radford et al., ICML 2021), MIT; a TorchScript archive, read by the open_clip adapter",
))


@dataclass(frozen=True)
class LocalWeights:
    """A weights file on disk, verified: its name, path, full sha256 and, when known, its spec."""

    name: str
    path: Path
    sha256: str
    spec: WeightsSpec | None = None

    @property
    def trained_on(self) -> str:
        return self.spec.trained_on if self.spec else f"unknown (the file {self.path})"

    def describe(self) -> dict[str, object]:
        """What a record says about these weights."""
        return {"name": self.name, "file": str(self.path), "sha256": self.sha256, "trained_on": self.trained_on,
                "overlaps": list(self.spec.overlaps) if self.spec else []}

    @property
    def backbone(self) -> str | None:
        """The backbone a known file fits (None for a file of your own)."""
        return self.spec.backbone if self.spec else None


def missing_message(spec: WeightsSpec, folder: Path) -> str:
    return (f"needs the pretrained weights {spec.name!r} ({spec.trained_on}): put {spec.file} in {folder} "
            f"(from {spec.url}), or run 'fscil-bench weights fetch {spec.name} --weights-dir {folder}' on a "
            f"machine with a network")


def resolve_weights(reference: str, folder: Path) -> LocalWeights:
    """The verified weights named by ``reference``: a known name (looked up in ``folder``) or a path.

    Raises :class:`WeightsError` with one line when the file is missing or fails its check.
    """
    if reference in KNOWN_WEIGHTS:
        spec = KNOWN_WEIGHTS.get(reference)
        path = Path(folder) / spec.file
        if not path.is_file():
            raise WeightsError(missing_message(spec, Path(folder)))
        digest = sha256_file(path)
        if not digest.startswith(spec.sha256_prefix):
            shown = max(8, min(len(spec.sha256_prefix), 16))
            raise WeightsError(f"weights file {path} does not match {spec.name!r} (its sha256 starts with "
                               f"{digest[:shown]}, expected {spec.sha256_prefix[:shown]}); fetch it again from {spec.url}")
        return LocalWeights(spec.name, path, digest, spec)
    path = Path(reference).expanduser()
    if not path.is_file():
        hint = did_you_mean(reference, KNOWN_WEIGHTS.names())
        raise WeightsError(f"pretrained weights {reference!r} are neither a file nor a known name{hint}; known: "
                           f"{', '.join(KNOWN_WEIGHTS.names())}")
    return LocalWeights(path.stem, path.resolve(), sha256_file(path))


def load_state_dict(backbone: nn.Module, weights: LocalWeights) -> None:
    """Load a ``state_dict`` file (torchvision's format) into ``backbone`` (into its ``.net`` when it
    wraps a torchvision model). Classification-layer weights (``fc.*``) and a ``module.`` prefix are
    ignored; any other missing or unexpected key is a :class:`WeightsError`."""
    try:
        state = torch.load(weights.path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors alike
        raise WeightsError(f"cannot read weights file {weights.path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise WeightsError(f"weights file {weights.path} holds a {type(state).__name__}, not a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    target = getattr(backbone, "net", backbone)
    missing, unexpected = target.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WeightsError(f"weights file {weights.path} does not fit the backbone: missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}")


def fetch_weights(name: str, folder: Path, log: Callable[[str], None] = print) -> Path:
    """Download the known weights ``name`` into ``folder`` (needs a network) and verify them."""
    spec = KNOWN_WEIGHTS.get(name)
    path = Path(folder) / spec.file
    if path.is_file() and sha256_file(path).startswith(spec.sha256_prefix):
        log(f"{spec.name}: {path} is already there")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"downloading {spec.name} from {spec.url} into {path}")
    try:
        torch.hub.download_url_to_file(spec.url, str(path), hash_prefix=spec.sha256_prefix, progress=True)
    except Exception as exc:  # network and hash errors come in many types
        path.unlink(missing_ok=True)
        raise WeightsError(f"could not download {spec.name} from {spec.url}: {type(exc).__name__}: {exc}") from exc
    resolve_weights(name, folder)
    return path
