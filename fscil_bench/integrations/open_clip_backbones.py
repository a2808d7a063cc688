"""CLIP image towers from open_clip, loaded from a local file (the one module that imports open_clip).

Ilharco et al., "OpenCLIP" (https://github.com/mlfoundations/open_clip): CLIP models (Radford et
al., ICML 2021) built by configuration name (``ViT-B-16``, ``ViT-B-16-quickgelu`` for OpenAI's
weights, ...). The model is built without network access; its weights come from a local file in
the format open_clip saves (a ``state_dict`` as ``.safetensors``, ``.pt`` or ``.bin``), read by
open_clip's strict loader, or from one of OpenAI's TorchScript archives (``ViT-B-16.pt``), whose
``state_dict`` is read with :func:`torch.jit.load` (never with pickle) and loaded strictly.
``args`` override the named configuration's keys (``embed_dim``, ``vision_cfg``, ``text_cfg``,
``quick_gelu``), as :func:`open_clip.create_model`'s keyword arguments do.

Only the image tower is kept. Features are ``encode_image`` without normalisation: the pooled
token after ``ln_post``, projected to the joint embedding (``embed_dim``). The input view is the
tower's preprocessing configuration (size, mean, std, interpolation).
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fscil_bench.models.input_view import InputView
from fscil_bench.models.weights import WeightsError

#: Entries of OpenAI's archives that are not parameters (open_clip's loader drops them too).
_ARCHIVE_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:
        raise ImportError("open_clip backbones need open_clip: pip install 'fscil-bench[pretrained]' "
                          "(or pip install open_clip_torch)") from exc
    return open_clip


def is_torchscript_archive(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``constants.pkl``), as torch decides."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") or name == "constants.pkl" for name in archive.namelist())


def build_open_clip_backbone(arch: str, path: Path, args: Mapping[str, Any]) -> tuple[Any, int, InputView, str]:
    """open_clip's ``arch`` with the weights of ``path``: ``(image tower, feature dimension, its
    input view, "open_clip <version>")``."""
    open_clip = import_open_clip()
    if arch not in open_clip.list_models():
        raise WeightsError(f"open_clip has no model configuration {arch!r} (see open_clip.list_models())")
    try:
        if is_torchscript_archive(path):
            model = open_clip.create_model(arch, pretrained=None, **dict(args))
            state = torch.jit.load(str(path), map_location="cpu").state_dict()
            for key in _ARCHIVE_EXTRAS:
                state.pop(key, None)
            model.load_state_dict(state, strict=True)
        else:
            model = open_clip.create_model(arch, pretrained=str(path), **dict(args))
    except RuntimeError as exc:
        raise WeightsError(f"weights file {path} does not fit open_clip model {arch!r}: "
                           f"{' '.join(str(exc).split())[:400]}") from exc
    except Exception as exc:  # unreadable files: pickle, zip, safetensors errors
        raise WeightsError(f"cannot read weights file {path}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    visual = model.visual.eval().requires_grad_(False)
    pre = getattr(visual, "preprocess_cfg", {}) or {}
    size = pre.get("size", visual.image_size)
    size = int(size[-1] if isinstance(size, (tuple, list)) else size)
    view = InputView(size=size, mean=tuple(pre.get("mean", visual.image_mean)), std=tuple(pre.get("std", visual.image_std)),
                     interpolation="bicubic" if pre.get("interpolation", "bicubic") == "bicubic" else "bilinear")
    out_dim = getattr(visual, "output_dim", None)
    if out_dim is None:  # towers built on timm models do not state it
        with torch.no_grad():
            out_dim = visual(torch.zeros(1, 3, size, size)).shape[-1]
    return visual, int(out_dim), view, f"open_clip {open_clip.__version__}"
