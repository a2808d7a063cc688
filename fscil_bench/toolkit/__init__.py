"""The method toolkit: what a method's implementation reuses (training loops and learning-rate
schedules, losses, cached base models and features, heads, exemplar banks, preset helpers).

Built-in methods (``baselines/``) use exactly this toolkit, as a plugin would.
"""
