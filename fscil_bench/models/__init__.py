"""Backbones and heads shared by methods."""

from fscil_bench.models.backbones import BACKBONES, build_backbone

__all__ = ["BACKBONES", "build_backbone"]
