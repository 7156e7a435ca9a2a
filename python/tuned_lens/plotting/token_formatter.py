"""Formatting of tokenizer tokens for display in heat-map cells and hover tables."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["TokenFormatter"]


@dataclass
class TokenFormatter:
    """Format tokens for display in a plot.

    A token is first truncated to ``max_string_len`` characters (the last character becomes
    ``ellipsis``), then the byte-level BPE markers are replaced: ``newline_token`` ("Ċ") by
    ``newline_replacement`` (the two characters ``\\n``) and ``whitespace_token`` ("Ġ") by
    ``whitespace_replacement`` ("_"). The replacements happen after truncation, so a formatted
    token can be one character longer than ``max_string_len``.

    Attributes:
        ellipsis: Appended to truncated tokens.
        newline_replacement: Shown instead of ``newline_token``.
        newline_token: The tokenizer's newline marker.
        whitespace_token: The tokenizer's leading-space marker.
        whitespace_replacement: Shown instead of ``whitespace_token``.
        max_string_len: Longest token shown untruncated; ``None`` disables truncation.

    Example:
        >>> TokenFormatter().format("ThisIsALongToken")
        'ThisIs…'
        >>> TokenFormatter().format("Ġthe")
        '_the'
    """

    ellipsis: str = "…"
    newline_replacement: str = "\\n"
    newline_token: str = "Ċ"
    whitespace_token: str = "Ġ"
    whitespace_replacement: str = "_"
    max_string_len: int | None = 7

    def format(self, token: Any) -> str:
        """Format a token for display in a plot.

        Args:
            token: A token string; anything else (e.g. ``None`` for an unknown id) is shown
                as ``"<unk>"``.

        Returns:
            The display string.
        """
        if not isinstance(token, str):
            return "<unk>"
        if self.max_string_len is not None and len(token) > self.max_string_len:
            keep = max(self.max_string_len - len(self.ellipsis), 0)
            token = token[:keep] + self.ellipsis
        token = token.replace(self.newline_token, self.newline_replacement)
        return token.replace(self.whitespace_token, self.whitespace_replacement)

    def vectorized_format(self, tokens: Any) -> NDArray[np.str_]:
        """Format every token of an array (any shape), keeping the shape.

        Each distinct token is formatted once, so large label arrays with few distinct
        tokens are cheap.

        Args:
            tokens: An array-like of token strings (or ``None``), any shape.

        Returns:
            A ``numpy.str_`` array of the same shape.
        """
        array = np.asarray(tokens, dtype=object)
        cache: dict[Any, str] = {}
        formatted = []
        for token in array.ravel().tolist():
            key = (type(token), token) if _hashable(token) else None
            if key is None:
                formatted.append(self.format(token))
                continue
            if key not in cache:
                cache[key] = self.format(token)
            formatted.append(cache[key])
        return np.array(formatted, dtype=np.str_).reshape(array.shape)

    def pad_token_repr_to_max_len(self, token_repr: str) -> str:
        """Pad a token representation with spaces on the right to ``max_string_len``.

        Args:
            token_repr: An already formatted token.

        Returns:
            ``token_repr`` padded to ``max_string_len`` characters (unchanged when it is
            already that long or when truncation is disabled).
        """
        if self.max_string_len is None or len(token_repr) >= self.max_string_len:
            return token_repr
        return token_repr + " " * (self.max_string_len - len(token_repr))


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
