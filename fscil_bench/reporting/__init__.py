"""Leaderboard reports from the results store, one job per module.

* :mod:`.collect`: read records and aggregate them per benchmark and (method, preset).
* :mod:`.reported`: published numbers (``reported_results.json``) and the measured-vs-reported check.
* :mod:`.tables`: the leaderboard table (cells, best marks) as Markdown and CSV.
* :mod:`.plots`: PNG figures (accuracy curves, base vs novel, accuracy matrix, diagnostics).
* :mod:`.html`: a standalone, sortable HTML page per benchmark and an index page.
* :mod:`.provenance`: where the numbers come from (commands, code versions, hardware, dates).

The entry point is :func:`fscil_bench.report.write_reports`.
"""
