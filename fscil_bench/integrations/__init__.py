"""Bridges to other continual- and meta-learning libraries.

Each library lives behind exactly one module here, imported only when a method or a user asks
for it, so ``import fscil_bench`` and the core never import them:

* :mod:`fscil_bench.integrations.learn2learn_tasks`: few-shot episode sampling with learn2learn.
* :mod:`fscil_bench.integrations.avalanche_adapter`: Avalanche strategies as fscil-bench
  methods, and fscil-bench benchmarks as Avalanche benchmarks.
"""
