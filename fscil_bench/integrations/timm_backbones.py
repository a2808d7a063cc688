"""timm's image models as frozen feature extractors, loaded from a local file (the one module that imports timm).

Wightman, "PyTorch Image Models" (timm, https://github.com/huggingface/pytorch-image-models):
ViT, ConvNeXt, ResNet and hundreds of other architectures, each built by name. The model is
built without network access and its weights are read from a local file in the format timm
itself saves or publishes (a ``state_dict`` as ``.safetensors``, ``.pth`` or ``.bin``, optionally
under a ``state_dict``/``model`` key), read by timm's own reader and loaded by timm through the
architecture's own checkpoint filter (which converts older layouts, e.g. the original ViT ports). The classifier of
the file, whatever its size, is loaded and then removed, so every other key must fit: a file of
another architecture fails with a :class:`fscil_bench.models.weights.WeightsError`.

Features are the model's pooled pre-logits features (``num_classes=0``: for a ViT the class
token after the final LayerNorm, for a CNN the globally pooled last stage). The input view is
the model's own (:func:`timm.data.resolve_model_data_config`): its input size (or ``img_size``
when given), interpolation, mean and std.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fscil_bench.models.input_view import InputView
from fscil_bench.models.weights import WeightsError


def import_timm() -> Any:
    try:
        import timm
    except ImportError as exc:
        raise ImportError("timm backbones need timm: pip install 'fscil-bench[pretrained]' (or pip install timm)") from exc
    return timm


def _classifier_size(timm: Any, arch: str, state: Mapping[str, Any]) -> int:
    """How many classes the file's classifier has (0 when it has none)."""
    names = timm.models.get_pretrained_cfg_value(arch, "classifier") or "head"
    for name in (names,) if isinstance(names, str) else tuple(names):
        weight = state.get(f"{name}.weight")
        if weight is not None and getattr(weight, "ndim", 0) == 2:
            return int(weight.shape[0])
    return 0


def build_timm_backbone(arch: str, path: Path, args: Mapping[str, Any]) -> tuple[Any, int, InputView, str]:
    """timm model ``arch`` (constructor arguments ``args``) with the weights of ``path``, without its
    classifier: ``(network, feature dimension, its input view, "timm <version>")``."""
    timm = import_timm()
    if not timm.is_model(arch):
        raise WeightsError(f"timm has no model {arch!r} (see timm.list_models())")
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as exc:  # pickle, safetensors and torch errors alike
        raise WeightsError(f"cannot read weights file {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    classes = _classifier_size(timm, arch, state)
    try:
        # num_classes equal to the file's keeps timm's loader strict: a missing or unexpected key raises.
        model = timm.create_model(arch, pretrained=True, num_classes=classes,
                                  pretrained_cfg_overlay={"state_dict": state, "num_classes": classes}, **dict(args))
    except RuntimeError as exc:
        raise WeightsError(f"weights file {path} does not fit timm model {arch!r}: {str(exc).splitlines()[0]}"
                           + _key_hint(str(exc))) from exc
    model.reset_classifier(0)
    model.eval().requires_grad_(False)
    config = timm.data.resolve_model_data_config(model)
    size = args.get("img_size") or config["input_size"][-1]
    size = int(size[-1] if isinstance(size, (tuple, list)) else size)
    view = InputView(size=size, mean=tuple(config["mean"]), std=tuple(config["std"]),
                     interpolation="bicubic" if config.get("interpolation") == "bicubic" else "bilinear")
    return model, int(model.num_features), view, f"timm {timm.__version__}"


def _key_hint(message: str) -> str:
    """The first missing or unexpected keys of a ``load_state_dict`` error, on the same line."""
    lines = [line.strip() for line in message.splitlines()[1:] if line.strip()]
    return f" ({'; '.join(lines)[:300]})" if lines else ""
