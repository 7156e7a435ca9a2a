"""Shared pieces of the Jacobian-lens and linear-shortcut tests: text, the exact definition."""

from __future__ import annotations

import torch
from tuned_lens.architectures import resolve_architecture

# Lewis Carroll (public domain), the kind of text glassllm was trained on. The first block is for
# fitting, the second is held out for the measurements.
FIT_TEXT = [
    "Alice was beginning to get very tired of sitting by her sister on the bank, and of having "
    "nothing to do: once or twice she had peeped into the book her sister was reading.",
    "So she was considering in her own mind, as well as she could, for the hot day made her feel "
    "very sleepy and stupid, whether the pleasure of making a daisy-chain would be worth it.",
    "There was nothing so very remarkable in that; nor did Alice think it so very much out of "
    "the way to hear the Rabbit say to itself, Oh dear! Oh dear! I shall be late!",
    "The rabbit-hole went straight on like a tunnel for some way, and then dipped suddenly down, "
    "so suddenly that Alice had not a moment to think about stopping herself.",
    "Either the well was very deep, or she fell very slowly, for she had plenty of time as she "
    "went down to look about her and to wonder what was going to happen next.",
    "Down, down, down. Would the fall never come to an end? I wonder how many miles I have "
    "fallen by this time? she said aloud. I must be getting somewhere near the centre.",
]
HELD_OUT_TEXT = [
    "The Cat only grinned when it saw Alice. It looked good-natured, she thought: still it had "
    "very long claws and a great many teeth, so she felt that it ought to be treated with respect.",
    "The Queen turned crimson with fury, and, after glaring at her for a moment like a wild "
    "beast, screamed Off with her head! Nonsense! said Alice, very loudly and decidedly.",
    "The Mock Turtle sighed deeply, and drew the back of one flapper across his eyes. He looked "
    "at Alice, and tried to speak, but for a minute or two sobs choked his voice.",
    "Alice had no idea what to do, and in despair she put her hand in her pocket, and pulled out "
    "a box of comfits, and handed them round as prizes to all the party.",
]


def exact_jacobian(model, ids: torch.Tensor, idx: int, skip_first: int) -> torch.Tensor:
    """The definition, from the full Jacobian by ``torch.func.jacrev``: ``(d, d)``.

    ``1/|V| Σ_{t∈V} Σ_{t'∈V} ∂h_final[t'] / ∂hidden_states[idx][t]`` for one ``(T,)`` prompt,
    ``V = skip_first .. T-2``, ``h_final`` the last block's output.
    """
    blocks = resolve_architecture(model).layers
    batch = ids[None]
    with torch.no_grad():
        start = model(batch, output_hidden_states=True).hidden_states[idx]

    def final_from(x: torch.Tensor) -> torch.Tensor:
        kept: dict[str, torch.Tensor] = {}
        if idx == 0:
            first = blocks[0].register_forward_pre_hook(
                lambda m, a, k: ((x, *a[1:]), k) if a else (a, {**k, "hidden_states": x}),
                with_kwargs=True,
            )
        else:
            # A block returns a tuple on transformers 4.x, the hidden states alone on 5.x.
            first = blocks[idx - 1].register_forward_hook(
                lambda m, a, o: (x, *o[1:]) if isinstance(o, tuple) else x
            )
        last = blocks[-1].register_forward_hook(
            lambda m, a, o: kept.__setitem__("h", o[0] if isinstance(o, tuple) else o)
        )
        try:
            model(batch, use_cache=False)
        finally:
            first.remove()
            last.remove()
        return kept["h"]

    full = torch.func.jacrev(final_from)(start)[0, :, :, 0]  # (T, d, T, d): [t', a, t, b]
    valid = list(range(skip_first, ids.shape[0] - 1))
    return full[valid][:, :, valid].sum(dim=0).mean(dim=1)


def kl_model_lens(model_logits: torch.Tensor, lens_logits: torch.Tensor) -> torch.Tensor:
    """``KL(model ‖ lens)`` per position, nats: ``(n, V), (n, V) -> (n,)``."""
    p_log = model_logits.double().log_softmax(-1)
    q_log = lens_logits.double().log_softmax(-1)
    return (p_log.exp() * (p_log - q_log)).sum(-1)
