"""nnsight: an ``nnsight.LanguageModel`` (or any nnsight model wrapping a Hugging Face one).

Lenses and trajectories take the nnsight model itself: the architecture resolver and the
decoding loop ask :func:`tuned_lens.integrations.unwrap_model` for the Hugging Face model
inside it (dispatched first, when nnsight loaded it lazily on the meta device), so the numbers
are those of that model. Inside a trace, apply a lens to a saved hidden state as
``docs/integrations.md`` shows. Nothing here imports ``nnsight``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["hf_model", "is_nnsight_model"]


def is_nnsight_model(model: Any) -> bool:
    """Whether ``model`` is an nnsight model (a class of the ``nnsight`` package, wrapping a
    module)."""
    wraps = "_module" in getattr(model, "__dict__", {})
    return wraps and any(cls.__module__.split(".")[0] == "nnsight" for cls in type(model).__mro__)


def hf_model(model: Any) -> Any:
    """The module an nnsight model wraps, with real weights (dispatching it if needed)."""
    if getattr(model, "dispatched", True) is False:
        model.dispatch()
    return vars(model)["_module"]
