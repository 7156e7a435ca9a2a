"""Why is the Jacobian lens worse than the logit lens above layer 0 on glassllm? (issue 14).

Fits the reference Jacobian lens on packed tinyshakespeare rows and measures, with
:func:`tuned_lens.evaluate` on held-out rows, per-layer KL(model ‖ lens) in nats for:

* ``logit``: the logit lens (``J = I``);
* ``jacobian``: the reference estimator (``JacobianLens.fit``: target positions ``t' ≥ t``
  summed, source positions averaged);
* ``jacobian_fp16``: the same lens after a reference-format ``.pt`` round trip (fp16 ``J``);
* ``diagonal``: the per-position estimator ``mean_t ∂h_final[t] / ∂h_i[t]`` (the alternative the
  reference's docstring mentions and does not compute): the same-position part of ``J``;
* ``cross``: ``J − diagonal``, the part that comes from other target positions, alone;
* ``jacobian_affine``: ``J h + b`` with ``b = E[h_final] − J E[h]`` on the fitting positions (the
  first-order expansion about the mean rather than about 0; a diagnostic, not the reference);
* ``shortcut``: the least-squares affine map (Din et al.), the best linear map on these states.

The diagonal / cross split comes from the full per-position Jacobian blocks, one backward pass
per target position (all ``d`` output dimensions at once, on a batch of ``d`` copies); its sum
is checked against ``JacobianLens.fit``. Also printed: ``‖J − D‖_F / ‖J‖_F`` per layer and, on
held-out states, ``‖(J − D) h‖ / ‖J h‖``.

Run: ``.venv/bin/python benches/jlens_diagnosis.py --fit 16 --eval 64`` (about a minute on two
cores).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from tuned_lens import evaluate
from tuned_lens.architectures import resolve_architecture
from tuned_lens.assets import load_glassllm, tinyshakespeare_text
from tuned_lens.data import pack_documents
from tuned_lens.nn import JacobianLens, LinearShortcutLens, LogitLens
from tuned_lens.nn.jacobian_fit import _Capture, _frozen_parameters, _StopForward
from tuned_lens.nn.lenses import Lens


class AffineLogitLens(Lens):
    """``unembed(h + b_i)``: the logit lens with the same kind of offset (diagnostic only)."""

    def __init__(self, unembed: torch.nn.Module, bias: dict[int, torch.Tensor]):
        super().__init__(unembed)  # type: ignore[arg-type]
        self.bias = bias

    def transform_hidden(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        return h + self.bias[-1 - idx].to(h.dtype)

    def forward(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        return self.unembed(self.transform_hidden(h, idx))


def update_alignment(
    model: torch.nn.Module, lenses: dict[str, Lens], rows: list[list[int]]
) -> dict[str, dict[int, float]]:
    """Held-out mean cosine between a lens's update ``T(h) − h`` and the true ``h_f − h``.

    A pre-norm block ``g`` is scale-invariant in its input, so ``(∂g/∂h) h = 0``: a Jacobian
    is blind to what the blocks add to the very state it is applied to.
    """
    out: dict[str, dict[int, float]] = {name: {} for name in lenses}
    pairs = [final_states(model, r) for r in rows]
    for name, lens in lenses.items():
        for i in range(4):
            h = torch.cat([s[i][0, 1:] for s, _ in pairs])
            truth = torch.cat([f[1:] for _, f in pairs]) - h
            with torch.no_grad():
                moved = lens.transform_hidden(h, i) - h
            cos = torch.nn.functional.cosine_similarity(moved.double(), truth.double(), dim=-1)
            out[name][i] = round(float(cos.mean()), 4)
    return out


class AffineJacobianLens(Lens):
    """``unembed(J_i h + b_i)``: a Jacobian lens with a per-layer offset (diagnostic only)."""

    def __init__(self, inner: JacobianLens, bias: dict[int, torch.Tensor]):
        super().__init__(inner.unembed)
        self.inner, self.bias = inner, bias
        self.layers = inner.layers

    def __len__(self) -> int:
        return len(self.inner)

    def transform_hidden(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        return self.inner.transform_hidden(h, idx) + self.bias[idx].to(h.dtype)

    def forward(self, h: torch.Tensor, idx: int) -> torch.Tensor:
        return self.unembed(self.transform_hidden(h, idx))


def split_blocks(
    model: torch.nn.Module, ids: list[int], layers: list[int], skip_first: int
) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """One prompt's ``(J, D)`` per layer: the reference ``J`` and its same-position part ``D``.

    ``J = 1/|V| Σ_t Σ_{t'≥t} ∂h_f[t']/∂h[t]`` and ``D = 1/|V| Σ_t ∂h_f[t]/∂h[t]``, float64.
    """
    blocks = resolve_architecture(model).layers
    valid = list(range(skip_first, len(ids) - 1))
    d = model.config.hidden_size
    batch = torch.as_tensor([ids] * d)
    capture = _Capture(blocks, layers)
    with torch.enable_grad(), capture.installed():
        try:
            model(batch, use_cache=False)
        except _StopForward:
            pass
    target = capture.target
    assert target is not None
    sources = [capture.sources[i] for i in layers]
    full = {i: torch.zeros(d, d, dtype=torch.float64) for i in layers}
    same = {i: torch.zeros(d, d, dtype=torch.float64) for i in layers}
    rows = torch.arange(d)
    pos = torch.as_tensor(valid)
    for k, t_out in enumerate(valid):
        cotangent = torch.zeros_like(target)
        cotangent[rows, t_out, rows] = 1.0  # copy b asks for output dimension b at t_out
        grads = torch.autograd.grad(
            target, sources, grad_outputs=cotangent, retain_graph=k + 1 < len(valid)
        )
        for i, grad in zip(layers, grads):
            full[i] += grad[:, pos].double().sum(dim=1)
            same[i] += grad[:, t_out].double()
    return (
        {i: v / len(valid) for i, v in full.items()},
        {i: v / len(valid) for i, v in same.items()},
    )


def final_states(model: torch.nn.Module, ids: list[int]) -> tuple[tuple, torch.Tensor]:
    """``(hidden_states, h_final)`` of one row: ``h_final`` the last block's pre-norm output."""
    kept: dict[str, torch.Tensor] = {}

    def keep(_m: torch.nn.Module, _a: tuple, out: object) -> None:
        kept["h"] = out[0] if isinstance(out, tuple) else out  # type: ignore[assignment]

    hook = resolve_architecture(model).layers[-1].register_forward_hook(keep)
    try:
        with torch.no_grad():
            out = model(torch.as_tensor([ids]), output_hidden_states=True)
    finally:
        hook.remove()
    return out.hidden_states, kept["h"][0]


def mean_offsets(
    model: torch.nn.Module, lens: JacobianLens, rows: list[list[int]], skip_first: int
) -> tuple[dict[int, torch.Tensor], dict[str, dict[int, float]]]:
    """``b_i = E[h_final] − J_i E[h_i]`` over the fitting positions ``V`` (float64), and how
    large the means are: ``‖b_i‖ / ‖E h_f‖`` (``J``) against ``‖E h_f − E h_i‖ / ‖E h_f‖``
    (identity), and ``‖E h_f‖ / rms‖h_f − E h_f‖``."""
    sums: dict[int, torch.Tensor] = {}
    finals = []
    for ids in rows:
        states, final = final_states(model, ids)
        v = slice(skip_first, len(ids) - 1)
        finals.append(final[v].double())
        for i in lens.layers:
            h = states[i][0, v].double().sum(0)
            sums[i] = sums.get(i, torch.zeros_like(h)) + h
    f = torch.cat(finals)
    mu_f, n = f.mean(0), len(f)
    bias = {i: mu_f - lens.jacobian(i).double() @ (sums[i] / n) for i in lens.layers}
    bias.update({-1 - i: mu_f - sums[i] / n for i in lens.layers})  # identity's, at -1-i
    sizes = {
        "offset_share_jacobian": {i: float(bias[i].norm() / mu_f.norm()) for i in lens.layers},
        "offset_share_identity": {i: float(bias[-1 - i].norm() / mu_f.norm()) for i in lens.layers},
        "final_mean_over_spread": {
            -1: float(mu_f.norm() / (f - mu_f).norm(dim=-1).pow(2).mean().sqrt())
        },
    }
    return bias, sizes


def cross_share(
    model: torch.nn.Module, jac: dict[int, torch.Tensor], diag: dict[int, torch.Tensor], rows
) -> dict[int, float]:
    """Held-out ``mean ‖(J − D) h‖ / ‖J h‖`` per layer."""
    out = {}
    with torch.no_grad():
        states = [
            model(torch.as_tensor([r]), output_hidden_states=True).hidden_states for r in rows
        ]
    for i in jac:
        h = torch.cat([s[i][0, 1:] for s in states]).double()
        ratio = (h @ (jac[i] - diag[i]).T).norm(dim=-1) / (h @ jac[i].T).norm(dim=-1)
        out[i] = float(ratio.mean())
    return out


def split_fit(model: torch.nn.Module, fit_rows: list[list[int]], args: argparse.Namespace):
    """``J`` and ``D`` on ``split_rows`` fitting rows cut to ``split_len`` (the split costs
    ``|V|`` backward passes per prompt); ``J`` is checked against ``JacobianLens.fit``."""
    rows = [r[: args.split_len] for r in fit_rows[: args.split_rows]]
    start = time.perf_counter()
    short = JacobianLens.fit(model, rows, skip_first=args.skip_first, progress=False)
    layers = list(short.layers)
    jac = {i: torch.zeros(short.d_model, short.d_model, dtype=torch.float64) for i in layers}
    diag = {i: torch.zeros_like(jac[i]) for i in layers}
    with _frozen_parameters(model):
        for ids in rows:
            j_p, d_p = split_blocks(model, ids, layers, args.skip_first)
            for i in layers:
                jac[i] += j_p[i] / len(rows)
                diag[i] += d_p[i] / len(rows)
    agree = max(float((jac[i] - short.jacobian(i).double()).abs().max()) for i in layers)
    return jac, diag, time.perf_counter() - start, agree


def kl_table(result) -> dict[str, list[float]]:
    return {
        name: [round(layers[i]["kl"].mean, 4) if i in layers else float("nan") for i in range(4)]
        for name, layers in result.lenses.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", type=int, default=16, help="fitting rows of 128 tokens")
    parser.add_argument("--eval", type=int, default=64, help="held-out rows of 128 tokens")
    parser.add_argument("--skip_first", type=int, default=16)
    parser.add_argument("--split_rows", type=int, default=8, help="rows for the D / J split")
    parser.add_argument("--split_len", type=int, default=48, help="their length (cost ~ T^2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bos", action="store_true", help="BOS first in every row (as [R])")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tokenizer = load_glassllm()
    text = tinyshakespeare_text()
    cut = text.index("\n\n", int(len(text) * 0.9)) + 2  # hold out the last tenth
    train = pack_documents([text[:cut]], tokenizer, max_seq_len=128).input_ids
    held = pack_documents([text[cut:]], tokenizer, max_seq_len=128).input_ids
    step = max(len(train) // args.fit, 1)
    fit_rows = [r.tolist() for r in train[::step][: args.fit]]
    eval_rows = [r.tolist() for r in held[: args.eval]]
    if args.bos:  # the reference's prompts start with BOS (BOS counts toward max_seq_len)
        fit_rows = [[tokenizer.bos_token_id, *r[:-1]] for r in fit_rows]
        eval_rows = [[tokenizer.bos_token_id, *r[:-1]] for r in eval_rows]

    start = time.perf_counter()
    lens = JacobianLens.fit(model, fit_rows, skip_first=args.skip_first, progress=False)
    fit_s = time.perf_counter() - start
    layers = list(lens.layers)
    split = split_fit(model, fit_rows, args) if args.split_rows else None

    with tempfile.TemporaryDirectory() as tmp:
        lens.save(Path(tmp) / "lens.pt")
        fp16 = JacobianLens.from_pretrained(Path(tmp) / "lens.pt", model=model)
    unembed = lens.unembed
    bias, sizes = mean_offsets(model, lens, fit_rows, args.skip_first)
    shifted = {i: lens.jacobian(i + 1) for i in layers[:-1]}  # an off-by-one wiring, for scale
    lenses: dict[str, Lens] = {
        "logit": LogitLens.from_model(model),
        "jacobian": lens,
        "jacobian_fp16": fp16,
        "jacobian_next_layer": JacobianLens(unembed, shifted, num_layers=4),
        "jacobian_affine": AffineJacobianLens(lens, bias),
        "logit_affine": AffineLogitLens(unembed, bias),
        "shortcut": LinearShortcutLens.fit(model, fit_rows, ridge=0.1, progress=False),
    }
    report: dict[str, object] = {
        "fit_rows": len(fit_rows),
        "bos": args.bos,
        "fit_seconds": round(fit_s, 2),
        **sizes,
    }
    if split is not None:
        jac, diag, split_s, agree = split
        lenses["jacobian_short"] = JacobianLens(unembed, jac, num_layers=4)
        lenses["diagonal"] = JacobianLens(unembed, diag, num_layers=4)
        lenses["cross"] = JacobianLens(unembed, {i: jac[i] - diag[i] for i in layers}, num_layers=4)
        report["split_seconds"] = round(split_s, 2)
        report["max_abs_split_vs_fit"] = agree
        report["rel_frobenius_cross"] = {
            i: float((jac[i] - diag[i]).norm() / jac[i].norm()) for i in layers
        }
        report["heldout_cross_share"] = cross_share(model, jac, diag, eval_rows[:16])
    report["update_cosine"] = update_alignment(
        model, {k: lenses[k] for k in ("jacobian", "jacobian_affine", "shortcut")}, eval_rows[:16]
    )
    result = evaluate(model, lenses, eval_rows, n_boot=200)
    report["eval_tokens"] = result.tokens
    report["kl"] = kl_table(result)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
