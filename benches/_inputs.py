"""Benchmark inputs: float32 log-probability arrays (L, T, V) and their bfloat16 copies."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

# Logit scale: top-1 probabilities from a few percent to ~0.9, like a language model's layers.
LOGIT_SCALE = 3.0


@dataclass
class BenchInputs:
    """Inputs of one benchmark size.

    Attributes:
        lp: (L, T, V) log-probabilities (float32 numpy, or a bfloat16 torch tensor).
        lq: (L, T, V) a second, related distribution of the same type.
        targets: (T,) int64 token ids (broadcast over L).
        dtype: "float32" or "bfloat16".
    """

    lp: np.ndarray | torch.Tensor
    lq: np.ndarray | torch.Tensor
    targets: np.ndarray
    dtype: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.lp.shape)

    @property
    def itemsize(self) -> int:
        return 4 if self.dtype == "float32" else 2

    @property
    def array_bytes(self) -> int:
        return int(np.prod(self.shape)) * self.itemsize


def make_float32(shape: tuple[int, int, int], *, seed: int = 0, tiled: bool = False) -> BenchInputs:
    """Random float32 log-probs, normalised one layer at a time (no full-size temporaries).

    Random numbers are drawn once per (T, V) slab; each layer rolls the slab along the vocabulary
    by a random offset and sharpens it a little more than the layer before (like a lens
    trajectory, whose later layers are more confident). With ``tiled=True`` every layer is the same
    slab (faster; for the memory measurement, where values do not matter).
    """
    layers, positions, vocab = shape
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn((positions, vocab), generator=gen) * LOGIT_SCALE
    noise = torch.randn((positions, vocab), generator=gen) * 0.5
    lp = np.empty(shape, dtype=np.float32)
    lq = np.empty(shape, dtype=np.float32)
    for layer in range(layers):
        if tiled:
            logits = base
        else:
            shift = int(torch.randint(0, vocab, (1,), generator=gen))
            logits = torch.roll(base, shift, dims=-1) * (0.5 + layer / max(1, layers - 1))
        lp[layer] = torch.log_softmax(logits, -1).numpy()
        lq[layer] = torch.log_softmax(logits + noise, -1).numpy()
    targets = torch.randint(0, vocab, (positions,), generator=gen).numpy().astype(np.int64)
    return BenchInputs(lp, lq, targets, "float32")


def to_bfloat16(inputs: BenchInputs) -> BenchInputs:
    """bfloat16 torch CPU copies of float32 inputs, in numpy-allocated memory.

    numpy backs large arrays with transparent huge pages and torch's CPU allocator does not; a
    bfloat16 tensor on 4 KiB pages reads measurably slower than the float32 numpy array it is
    compared with (hardware prefetch restarts at every page). Allocating both the same way makes
    the bfloat16-vs-float32 row compare the data type, not the allocator.
    """

    def same_allocator_copy(array: np.ndarray) -> torch.Tensor:
        bits = np.empty(array.shape, dtype=np.int16)
        tensor = torch.from_numpy(bits).view(torch.bfloat16)
        for layer in range(array.shape[0]):  # converts one layer at a time: no full temporary
            tensor[layer].copy_(torch.from_numpy(array[layer]))
        return tensor

    return BenchInputs(
        same_allocator_copy(inputs.lp), same_allocator_copy(inputs.lq), inputs.targets, "bfloat16"
    )
