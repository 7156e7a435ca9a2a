"""The one answer to "may we reach the Hugging Face Hub?".

Every loader of the package (models, tokenizers, data sets, lens files) asks :func:`hub_offline`
and passes ``local_files_only=True`` to Hugging Face when it says so.
"""

from __future__ import annotations

import os

__all__ = ["OFFLINE_VARIABLES", "TRUE_VALUES", "hub_offline"]

# huggingface_hub.constants: HF_HUB_OFFLINE, or TRANSFORMERS_OFFLINE when that is unset or empty.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# huggingface_hub.constants.ENV_VARS_TRUE_VALUES, compared case-insensitively.
TRUE_VALUES = frozenset({"1", "ON", "YES", "TRUE"})


def hub_offline() -> bool:
    """Whether the environment asks for cache-only loading, parsed as huggingface_hub does.

    ``HF_HUB_OFFLINE`` decides when it is set to a non-empty value; otherwise
    ``TRANSFORMERS_OFFLINE`` does. A value counts as true when it is one of ``1``, ``ON``,
    ``YES``, ``TRUE`` in any case (surrounding spaces ignored); anything else (``0``, ``off``,
    ``false``, ...) means online. The environment is read at each call, so a variable set
    after ``huggingface_hub`` was imported is honoured too.
    """
    value = os.environ.get(OFFLINE_VARIABLES[0]) or os.environ.get(OFFLINE_VARIABLES[1])
    return value is not None and value.strip().upper() in TRUE_VALUES
