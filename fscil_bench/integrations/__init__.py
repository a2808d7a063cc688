"""Bridges to other continual- and meta-learning libraries.

Each library lives behind exactly one module here, imported only when a method or a user asks
for it, so ``import fscil_bench`` and the core never import them:

* :mod:`fscil_bench.integrations.learn2learn_tasks`: few-shot episode sampling with learn2learn.
* :mod:`fscil_bench.integrations.avalanche_adapter`: Avalanche strategies as fscil-bench
  methods, and fscil-bench benchmarks as Avalanche benchmarks.
* :mod:`fscil_bench.integrations.timm_backbones` and
  :mod:`fscil_bench.integrations.open_clip_backbones`: pretrained image models of timm and CLIP
  image towers of open_clip, built offline and loaded from local files.

:mod:`fscil_bench.integrations.pretrained` (no third-party import of its own) turns either, or a
torchvision-style network, into a frozen backbone whose features are computed once.
"""
