"""Why the Jacobian lens trails the logit lens above layer 0 on glassllm (issue 14, item 1).

Not a bug in the estimator (``test_jacobian_lens.py`` checks it against ``jacrev``) but a
property of the definition. Every sublayer of a pre-norm block (RMSNorm first) is
scale-invariant in its input, ``g(a x) = g(x)``, so by Euler's theorem its Jacobian annihilates
the state it was taken at: ``(∂g/∂x) x = 0``. Chained through a block ``x → x + a(x) = y →
y + m(y)`` this gives, for the Jacobian ``J`` of the block at ``h`` applied to ``h`` itself,

    J h = h + (∂m/∂y)(J_a h) = h − (∂m/∂y) a(h)

instead of the block's output ``h + a + m``: the transport carries ``h`` forward but none of
what the sublayers add to it (only a correction of the attention update by the MLP's
derivative, with the wrong sign). ``benches/jlens_diagnosis.py`` measures what this costs the
lens (docs/lenses.md).
"""

from __future__ import annotations

import pytest
import torch
from jlens_helpers import HELD_OUT_TEXT
from tuned_lens.architectures import resolve_architecture


@pytest.mark.slow
def test_a_pre_norm_blocks_jacobian_misses_the_blocks_own_update():
    assets = pytest.importorskip("tuned_lens.assets")
    try:
        model, tokenizer = assets.load_glassllm(dtype=torch.float64)
    except assets.AssetMissingError as err:
        pytest.skip(str(err))
    blocks = resolve_architecture(model).layers
    block = blocks[-1]  # a Llama block: self_attn, post_attention_layernorm, mlp
    ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(HELD_OUT_TEXT[1])["input_ids"][:40]]])

    def run(x: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The last block's output and its attention update, with its input replaced by x."""
        kept: dict[str, torch.Tensor] = {}

        def first(_m, _a, o):
            kept["in"] = o[0] if isinstance(o, tuple) else o
            if x is None:
                return None
            return (x, *o[1:]) if isinstance(o, tuple) else x

        def last(_m, _a, o):
            kept["out"] = o[0] if isinstance(o, tuple) else o

        def attn(_m, _a, o):
            kept["attn"] = o[0] if isinstance(o, tuple) else o

        handles = [
            blocks[-2].register_forward_hook(first),
            block.register_forward_hook(last),
            block.self_attn.register_forward_hook(attn),
        ]
        try:
            with torch.no_grad():
                model(ids, use_cache=False)
        finally:
            for handle in handles:
                handle.remove()
        return kept["out"], kept["attn"]

    with torch.no_grad():
        h = model(ids, output_hidden_states=True).hidden_states[len(blocks) - 1]
    out, a = run(h)
    # Central differences; Llama's RMSNorm computes in float32 even in a float64 model, so the
    # step is large enough for its rounding (1e-7 / eps) and small for the O(eps^2) error.
    eps = 1e-2
    along_h = (run((1 + eps) * h)[0] - run((1 - eps) * h)[0]) / (2 * eps)  # J h

    def mlp(y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return block.mlp(block.post_attention_layernorm(y))

    y = h + a
    dm_a = (mlp(y + eps * a) - mlp(y - eps * a)) / (2 * eps)  # (∂m/∂y) a
    update = out - h  # a + m: what the block adds
    assert float(update.norm() / h.norm()) > 0.1
    # J h = h − (∂m/∂y) a (measured 2e-5 of the update: differencing error).
    assert float((along_h - (h - dm_a)).norm() / update.norm()) < 2e-4
    missed = float((along_h - out).norm() / update.norm())
    print(
        f"glassllm last block: |update|/|h| {float(update.norm() / h.norm()):.3f}, "
        f"|J h - out|/|update| {missed:.3f}"
    )
    # So J h misses the update: its error is larger than the update itself (the logit lens's).
    assert float((along_h - out).norm()) > float(update.norm())
