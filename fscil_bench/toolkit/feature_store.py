"""Per-sample features of a frozen network, kept on disk between runs.

:class:`fscil_bench.toolkit.features.FrozenFeatureMemo` remembers, within one run, the feature of
every input it has seen. Given a :class:`FeatureStore` it also remembers them across runs and
processes: each batch of newly computed features is written as one checksummed chunk
(``chunk-<digest of its keys>.npz``, a checked entry of :mod:`fscil_bench.cache`) into the store's
folder, and a new memo starts from every chunk there. The folder must identify the network and its
input view exactly (its name is a hash of them); samples are keyed by a digest of their exact input
tensor, so a test image is embedded once per (network, view), whichever method asks for it.

Writers never collide: a chunk is written under a temporary name and renamed into place, and two
processes that embed the same samples write chunks with the same content. A damaged chunk fails
its checksum and is ignored (its samples are computed again).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fscil_bench.cache import load_arrays, save_arrays, stable_hash


class FeatureStore:
    """A folder of feature chunks: ``keys`` (``(n, 16)`` uint8 digests) and ``features`` (``(n, d)``)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def load(self) -> dict[bytes, torch.Tensor]:
        """Every stored feature by its sample key (CPU tensors), from the chunks that verify."""
        out: dict[bytes, torch.Tensor] = {}
        for path in sorted(self.folder.glob("chunk-*.npz")):
            arrays = load_arrays(path)
            if arrays is None or "keys" not in arrays or "features" not in arrays:
                continue
            features = torch.from_numpy(arrays["features"])
            for key, feature in zip(arrays["keys"], features):
                out[key.tobytes()] = feature
        return out

    def add(self, keys: list[bytes], features: torch.Tensor) -> Path:
        """Write one chunk holding ``features`` (row ``i`` is the sample of ``keys[i]``)."""
        key_array = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), -1)
        path = self.folder / f"chunk-{stable_hash(key_array.tobytes().hex(), length=24)}.npz"
        save_arrays(path, {"keys": key_array, "features": features.detach().to("cpu", torch.float32).numpy()})
        return path
