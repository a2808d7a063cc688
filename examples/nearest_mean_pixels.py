"""An example fscil-bench plugin: nearest class mean on downsampled edge maps.

Run it beside the built-in methods with:

    fscil-bench run --plugin examples/nearest_mean_pixels.py --methods nearest-mean-pixels,prototype

It keeps one mean vector per class (declared in ``memory``), so it never forgets, but pooled
edges are a weak representation: it is a floor any learned method should beat.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fscil_bench import Context, MemoryDeclaration, MethodBase, Session


@dataclass(frozen=True)
class Hparams:
    pool: int = 8  # edge maps are average-pooled to pool x pool before comparing


class NearestMeanPixels(MethodBase):
    name = "nearest-mean-pixels"
    presets = {"quick": Hparams(), "paper": Hparams(pool=16)}

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled edge strength of the grey image, centred and unit-norm: blind to colours."""
        grey = images.mean(1, keepdim=True)
        edges = (grey.diff(dim=2)[..., :, 1:]).abs() + (grey.diff(dim=3)[..., 1:, :]).abs()
        pooled = F.adaptive_avg_pool2d(edges, self.pool).flatten(1)
        return F.normalize(pooled - pooled.mean(1, keepdim=True), dim=1)

    def fit_base(self, session: Session, ctx: Context) -> None:
        self.pool = ctx.hparams.pool
        self.means = torch.empty(0, self.pool**2, device=ctx.device)
        self.fit_session(session, ctx)

    def fit_session(self, session: Session, ctx: Context) -> None:
        sums = torch.zeros(len(session.new_classes), self.pool**2, device=ctx.device)
        counts = torch.zeros(len(session.new_classes), device=ctx.device)
        first = session.new_classes[0]
        for images, labels in session.train.batches(256, augment=False, device=ctx.device):
            sums.index_add_(0, labels - first, self.embed(images))
            counts.index_add_(0, labels - first, torch.ones_like(labels, dtype=torch.float))
        self.means = torch.cat([self.means, sums / counts[:, None]])

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images) @ F.normalize(self.means, dim=1).T

    def memory(self) -> MemoryDeclaration:
        n, d = self.means.shape
        return MemoryDeclaration(feature_vectors=n, bytes=4 * n * d, notes="one mean edge vector per seen class")
