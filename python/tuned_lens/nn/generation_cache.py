"""The key/value cache behind :meth:`tuned_lens.nn.Lens.generate`.

:class:`StepCache` knows which argument carries the cache (``cache`` on transformers >= 5.2x,
``past_key_values`` before) and, for the models whose own cache would not hold the whole
generation, allocates one that does. On transformers 4.46–4.5x a Gemma-2 model (config
``cache_implementation="hybrid"``) called without a cache builds a ``HybridCache`` exactly as long
as its first input, so the first generated token overflowed it (an ``IndexError`` in the
cache's ``_static_update``). ``transformers``' own ``generate`` allocates that cache for the full
length and passes ``cache_position``; so does :class:`StepCache`. Other models keep building
their own (dynamic) cache, as before.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

__all__ = ["StepCache", "cache_argument_name"]


def cache_argument_name(model: nn.Module) -> str:
    """``"cache"`` for transformers >= 5.2x models, ``"past_key_values"`` for older ones."""
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def _fixed_size_cache(
    model: nn.Module, *, batch: int, max_len: int, device: torch.device
) -> Any | None:
    """A ``HybridCache`` for ``batch`` rows of ``max_len`` tokens when the model asks for one.

    Only configs with ``cache_implementation == "hybrid"`` (Gemma-2 and its relatives on
    transformers < 4.53, whose forward would otherwise size the cache to its first input) get
    one; ``None`` for every other model, which then builds its own cache.
    """
    import transformers

    config = getattr(model, "config", None)
    hybrid = getattr(transformers, "HybridCache", None)
    if config is None or hybrid is None:
        return None
    if getattr(config, "cache_implementation", None) != "hybrid":
        return None
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    # 4.46 names the batch size ``batch_size``; 4.47 renamed it ``max_batch_size`` (each warns
    # about the other name).
    params = inspect.signature(hybrid.__init__).parameters
    major_minor = tuple(int(part) for part in transformers.__version__.split(".")[:2])
    size_name = (
        "batch_size" if "batch_size" in params and major_minor < (4, 47) else "max_batch_size"
    )
    dtype = getattr(model, "dtype", None)
    return hybrid(
        text_config,
        **{size_name: batch},
        max_cache_len=max_len,
        device=device,
        dtype=dtype if isinstance(dtype, torch.dtype) else torch.float32,
    )


class StepCache:
    """The cache of one incremental generation: what to pass to each call, what to keep.

    Args:
        model: The Hugging Face causal LM that generates.
        batch: Number of rows generated together.
        max_len: Prompt length plus the most tokens that will be appended.
        device: The device of the model's inputs.
    """

    def __init__(self, model: nn.Module, *, batch: int, max_len: int, device: torch.device):
        self.argument = cache_argument_name(model)
        self.past: Any = _fixed_size_cache(model, batch=batch, max_len=max_len, device=device)
        # A fixed-size cache cannot count its own tokens past a sliding window: say where the
        # new tokens go, as transformers' generate does.
        self._positions = self.past is not None
        self._device = device
        self._seen = 0

    def kwargs(self, n_new: int) -> dict[str, Any]:
        """Keyword arguments of the next call, which feeds ``n_new`` new tokens."""
        kwargs: dict[str, Any] = {self.argument: self.past}
        if self._positions:
            kwargs["cache_position"] = torch.arange(
                self._seen, self._seen + n_new, device=self._device
            )
        return kwargs

    def update(self, output: Any, n_new: int) -> None:
        """Keep the cache that the call which fed ``n_new`` tokens returned in ``output``."""
        self._seen += n_new
        past = output.get("cache", None)
        if past is None:
            past = output.get("past_key_values", None)
        if past is not None:
            self.past = past
