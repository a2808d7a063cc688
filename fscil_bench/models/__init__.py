"""Backbones and heads shared by methods."""

from .backbones import BACKBONES, build_backbone

__all__ = ["BACKBONES", "build_backbone"]
