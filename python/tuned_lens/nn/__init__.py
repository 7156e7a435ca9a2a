"""Lenses and the unembedding they decode through."""

from .jacobian_lens import JacobianLens
from .lenses import Lens, LogitLens, TunedLens, TunedLensConfig
from .shortcut_lens import LinearShortcutLens
from .unembed import InversionOutput, Unembed

__all__ = [
    "Lens",
    "LogitLens",
    "TunedLens",
    "TunedLensConfig",
    "InversionOutput",
    "Unembed",
    "JacobianLens",
    "LinearShortcutLens",
]
