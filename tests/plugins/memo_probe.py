"""The prototype method, noting how many test images its frozen-backbone memo holds when each
incremental session starts (``ctx.extra["memo_sizes"]``): the memo lives as long as the worker."""

from fscil_bench.baselines.prototype import Prototype


class MemoProbe(Prototype):
    name = "memo-probe"

    def fit_session(self, session, ctx):
        ctx.extra.setdefault("memo_sizes", []).append(len(self.test_features))
        super().fit_session(session, ctx)
