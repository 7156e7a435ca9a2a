"""Streaming marginal statistics of predicted categorical distributions, and a Dirichlet fit.

``LogitStats`` keeps, for a stream of predicted distributions p (one per row of logits), the
column sums Σ p and Σ log p and the row count. From those it exposes the marginal (average
predicted) distribution, the Dirichlet sufficient statistics E[log p], and the Dirichlet maximum
likelihood estimate of the distribution the predictions were drawn from.

Partial statistics from different batches, workers or ranks combine exactly by adding sums
(``merge`` / ``+`` / ``all_reduce_``).
"""

from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Dirichlet

__all__ = ["LogitStats"]


class LogitStats:
    """Running sums of predicted probabilities and log-probabilities over a vocabulary of V.

    The state is three numbers per column: ``n`` (rows seen, int), ``sum_probs`` (V,) and
    ``sum_log_probs`` (V,), both float64. Sums rather than float32 running means (as the original
    library kept): a running mean m ← m + (x̄ − m)·N/n adds ever smaller corrections as n grows,
    and once N/n is below float32's 2⁻²⁴ resolution relative to m the updates round away, so long
    evaluations silently stop counting late batches. Float64 sums keep about 1e-16 relative error
    per addition, are independent of batch boundaries, and merge across workers by plain addition.

    CPU inputs (numpy arrays or CPU tensors) go through the Rust core
    (``tuned_lens.lens_stats.log_softmax`` into a reused buffer, then ``marginal_sums``); tensors on
    an accelerator are reduced with torch on that device.

    Args:
        n: rows already summarised by ``marginal_probs`` / ``sufficient_stats``.
        marginal_probs: (V,) mean predicted probabilities of those ``n`` rows.
        sufficient_stats: (V,) mean predicted log-probabilities of those ``n`` rows.

    Either give all three (a non-empty summary) or none of the statistics (``n`` None or 0).
    """

    def __init__(
        self,
        n: int | None = None,
        marginal_probs: Tensor | np.ndarray | None = None,
        sufficient_stats: Tensor | np.ndarray | None = None,
    ) -> None:
        self.n: int = 0
        self.sum_probs: Tensor | None = None
        self.sum_log_probs: Tensor | None = None
        self._log_prob_buffer: np.ndarray | None = None

        if (marginal_probs is None) != (sufficient_stats is None):
            raise ValueError("marginal_probs and sufficient_stats must be given together")
        if marginal_probs is None:
            if n not in (None, 0):
                raise ValueError(f"n={n} given without marginal_probs and sufficient_stats")
            return
        if n is None or int(n) <= 0:
            raise ValueError(
                f"n must be a positive row count when statistics are given (got n={n}); it "
                "weights them when merging with other statistics"
            )
        probs = torch.as_tensor(marginal_probs, dtype=torch.float64)
        log_probs = torch.as_tensor(sufficient_stats, dtype=torch.float64, device=probs.device)
        if probs.ndim != 1 or probs.shape != log_probs.shape:
            raise ValueError(
                "marginal_probs and sufficient_stats must both have shape (V,), got "
                f"{tuple(probs.shape)} and {tuple(log_probs.shape)}"
            )
        self.n = int(n)
        self.sum_probs = probs * self.n
        self.sum_log_probs = log_probs * self.n

    # ------------------------------------------------------------------ accumulation

    @property
    def vocab_size(self) -> int | None:
        """V, or None before the first update."""
        return None if self.sum_probs is None else int(self.sum_probs.shape[0])

    def update(self, logits: Tensor | np.ndarray, assume_normalized: bool = False) -> None:
        """Add a batch of predicted distributions.

        Args:
            logits: (..., V) logits; every leading axis is a row axis. float16, bfloat16,
                float32 and float64 are accepted.
            assume_normalized: the input already holds log-probabilities (skip log-softmax).
        """
        if isinstance(logits, Tensor):
            if logits.ndim == 0:
                raise ValueError("logits must have shape (..., V), got a scalar")
            if not logits.dtype.is_floating_point:
                raise TypeError(f"logits must be floating point, got {logits.dtype}")
            vocab = int(logits.shape[-1])
        else:
            logits = np.asarray(logits)
            if logits.ndim == 0:
                raise ValueError("logits must have shape (..., V), got a scalar")
            vocab = int(logits.shape[-1])
        self._check_vocab(vocab, "logits")
        rows = int(np.prod(logits.shape[:-1], dtype=np.int64))
        if rows == 0:
            return

        if isinstance(logits, Tensor) and logits.device.type != "cpu":
            sum_probs, sum_log_probs = _torch_marginal_sums(logits, assume_normalized)
        else:
            sum_probs, sum_log_probs = self._rust_marginal_sums(logits, assume_normalized)
        self._add(rows, sum_probs, sum_log_probs)

    def _rust_marginal_sums(
        self, logits: Tensor | np.ndarray, assume_normalized: bool
    ) -> tuple[Tensor, Tensor]:
        from tuned_lens import lens_stats

        if isinstance(logits, Tensor):
            logits = logits.detach()
        vocab = int(logits.shape[-1])
        flat = logits.reshape(-1, vocab)
        if not assume_normalized:
            rows = int(flat.shape[0])
            buffer = self._log_prob_buffer
            if buffer is None or buffer.shape[0] < rows or buffer.shape[1] != vocab:
                buffer = np.empty((rows, vocab), dtype=np.float32)
                self._log_prob_buffer = buffer
            flat = lens_stats.log_softmax(flat, out=buffer[:rows])
        sum_probs, sum_log_probs, _ = lens_stats.marginal_sums(flat)
        return torch.from_numpy(np.asarray(sum_probs)), torch.from_numpy(np.asarray(sum_log_probs))

    def _add(self, rows: int, sum_probs: Tensor, sum_log_probs: Tensor) -> None:
        if self.sum_probs is None or self.sum_log_probs is None:
            self.sum_probs = sum_probs.to(torch.float64).clone()
            self.sum_log_probs = sum_log_probs.to(torch.float64).clone()
        else:
            device = self.sum_probs.device
            self.sum_probs += sum_probs.to(device=device, dtype=torch.float64)
            self.sum_log_probs += sum_log_probs.to(device=device, dtype=torch.float64)
        self.n += rows

    def _check_vocab(self, vocab: int, what: str) -> None:
        if vocab == 0:
            raise ValueError(f"{what} has an empty vocabulary axis")
        if self.vocab_size is not None and vocab != self.vocab_size:
            raise ValueError(
                f"{what} has a vocabulary of {vocab}, but these statistics hold {self.vocab_size}"
            )

    # ------------------------------------------------------------------ combination

    def merge(self, other: LogitStats) -> LogitStats:
        """A new ``LogitStats`` summarising the rows of both ``self`` and ``other``."""
        if not isinstance(other, LogitStats):
            raise TypeError(f"can only merge LogitStats, got {type(other).__name__}")
        merged = LogitStats()
        for part in (self, other):
            if part.sum_probs is None or part.sum_log_probs is None:
                continue
            merged._check_vocab(part.vocab_size or 0, "other")
            merged._add(part.n, part.sum_probs, part.sum_log_probs)
        return merged

    def __add__(self, other: LogitStats) -> LogitStats:
        if not isinstance(other, LogitStats):
            return NotImplemented
        return self.merge(other)

    def __iadd__(self, other: LogitStats) -> LogitStats:
        if not isinstance(other, LogitStats):
            return NotImplemented
        if other.sum_probs is not None and other.sum_log_probs is not None:
            self._check_vocab(other.vocab_size or 0, "other")
            self._add(other.n, other.sum_probs, other.sum_log_probs)
        return self

    def all_reduce_(self) -> None:
        """Sum the statistics of every torch.distributed rank, in place (a no-op without one).

        Rows are counted, so every rank ends up with the count-weighted result of all rows.
        Ranks that saw no rows take part with zeros. Works with gloo (CPU) and nccl (CUDA).
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend() == "nccl"
            else torch.device("cpu")
        )
        # Agree on V first: a rank that saw nothing does not know it yet.
        vocab = torch.tensor([self.vocab_size or 0], dtype=torch.int64, device=device)
        dist.all_reduce(vocab, op=dist.ReduceOp.MAX)
        total_vocab = int(vocab.item())
        if total_vocab == 0:
            return
        self._check_vocab(total_vocab, "another rank's statistics")

        packed = torch.zeros(2 * total_vocab + 1, dtype=torch.float64, device=device)
        if self.sum_probs is not None and self.sum_log_probs is not None:
            packed[:total_vocab] = self.sum_probs.to(device)
            packed[total_vocab:-1] = self.sum_log_probs.to(device)
        # n in float64 is exact below 2**53 rows.
        packed[-1] = float(self.n)
        dist.all_reduce(packed, op=dist.ReduceOp.SUM)

        home = self.sum_probs.device if self.sum_probs is not None else torch.device("cpu")
        packed = packed.to(home)
        self.sum_probs = packed[:total_vocab].clone()
        self.sum_log_probs = packed[total_vocab:-1].clone()
        self.n = int(round(packed[-1].item()))

    # ------------------------------------------------------------------ derived statistics

    @property
    def marginal_probs(self) -> Tensor:
        """(V,) float64 mean predicted distribution E[p]."""
        return self._require_sums()[0] / self.n

    @property
    def sufficient_stats(self) -> Tensor:
        """(V,) float64 mean predicted log-probabilities E[log p] (Dirichlet sufficient stats)."""
        return self._require_sums()[1] / self.n

    def _require_sums(self) -> tuple[Tensor, Tensor]:
        if self.sum_probs is None or self.sum_log_probs is None or self.n == 0:
            raise ValueError("LogitStats is empty: call update() first")
        return self.sum_probs, self.sum_log_probs

    def mle(self, max_iter: int = 100, tol: float = 1e-4) -> Dirichlet:
        """Maximum-likelihood Dirichlet for the observed predicted distributions.

        Maximises the mean log-likelihood
        ``ℓ(α) = lgamma(Σα) − Σ lgamma(α) + Σ (α − 1)·E[log p]`` with Newton's method, using
        the diagonal-plus-rank-one structure of the Hessian (Minka, "Estimating a Dirichlet
        distribution", 2000) so each step is O(V). ℓ is concave in α (an exponential family in
        its natural parameter), so Newton steps are damped by halving until α stays positive
        and ℓ does not decrease; that makes the iteration globally convergent. The original
        used one L-BFGS run over log α; Newton converges in a handful of iterations and does not
        stall on concentrated Dirichlets where first-order methods crawl. The start is
        α = V · E[p] (α = 1 for uniform marginals, the original's start).

        Args:
            max_iter: maximum number of Newton iterations.
            tol: stop once the largest change of log α in an iteration is below ``tol``.

        Returns:
            ``torch.distributions.Dirichlet`` with float64 concentration on the stats' device.

        Raises:
            ValueError: no rows were seen, or some E[log p] is not finite (a category got exactly
                zero probability in some row, so no Dirichlet with finite α explains the data).
        """
        if max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {max_iter}")
        stats = self.sufficient_stats
        if not torch.isfinite(stats).all():
            raise ValueError(
                "sufficient_stats contains non-finite values (a category had zero probability in "
                "some row); the Dirichlet likelihood has no maximum with finite concentration"
            )
        vocab = stats.shape[0]
        alpha = (self.marginal_probs.clamp_min(1e-12) * vocab).clone()
        value = _dirichlet_mean_log_likelihood(alpha, stats)
        for _ in range(max_iter):
            step = _newton_step(alpha, stats)
            scale = 1.0
            for _ in range(60):
                candidate = alpha + scale * step
                if bool((candidate > 0).all()):
                    candidate_value = _dirichlet_mean_log_likelihood(candidate, stats)
                    if candidate_value >= value - 1e-12 * abs(value):
                        break
                scale *= 0.5
            else:
                break  # no ascent direction left at float64 resolution: converged
            change = (candidate.log() - alpha.log()).abs().max().item()
            alpha, value = candidate, candidate_value
            if change < tol:
                break
        return Dirichlet(alpha)

    # ------------------------------------------------------------------ serialisation

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors for ``safetensors.torch.save_file`` / ``torch.save``: n, sum_probs, sum_log_probs.

        An empty ``LogitStats`` gives zero-length sums.
        """
        empty = torch.zeros(0, dtype=torch.float64)
        return {
            "n": torch.tensor(self.n, dtype=torch.int64),
            "sum_probs": (self.sum_probs if self.sum_probs is not None else empty).detach().cpu(),
            "sum_log_probs": (self.sum_log_probs if self.sum_log_probs is not None else empty)
            .detach()
            .cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace the statistics with those of ``state_dict()`` or ``to_dict()`` output."""
        missing = {"n", "sum_probs", "sum_log_probs"} - set(state)
        if missing:
            raise KeyError(f"state is missing {sorted(missing)}")
        n = int(torch.as_tensor(state["n"]).item())
        sum_probs = torch.as_tensor(state["sum_probs"], dtype=torch.float64)
        sum_log_probs = torch.as_tensor(state["sum_log_probs"], dtype=torch.float64)
        if sum_probs.ndim != 1 or sum_probs.shape != sum_log_probs.shape:
            raise ValueError(
                "sum_probs and sum_log_probs must both have shape (V,), got "
                f"{tuple(sum_probs.shape)} and {tuple(sum_log_probs.shape)}"
            )
        if n < 0 or (n == 0) != (sum_probs.numel() == 0):
            raise ValueError(f"inconsistent state: n={n} with {sum_probs.numel()} columns")
        self.n = n
        self.sum_probs = sum_probs.clone() if n else None
        self.sum_log_probs = sum_log_probs.clone() if n else None

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> LogitStats:
        stats = cls()
        stats.load_state_dict(state)
        return stats

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (Python floats round-trip float64 exactly through ``json``)."""
        state = self.state_dict()
        return {
            "n": self.n,
            "sum_probs": state["sum_probs"].tolist(),
            "sum_log_probs": state["sum_log_probs"].tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogitStats:
        return cls.from_state_dict(data)

    def __repr__(self) -> str:
        return f"LogitStats(n={self.n}, vocab_size={self.vocab_size})"


def _torch_marginal_sums(logits: Tensor, assume_normalized: bool) -> tuple[Tensor, Tensor]:
    """Column sums of p and log p on the tensor's own device (accelerator path).

    ``lens_stats`` with ``keep_device=True`` computes CUDA tensors with the torch twin, which
    reduces in row blocks so that no full-size ``exp`` copy of the batch is materialised, and
    leaves the sums on the device.
    """
    from tuned_lens import lens_stats

    log_probs = logits.detach()
    if not assume_normalized:
        log_probs = cast(Tensor, lens_stats.log_softmax(log_probs, keep_device=True))
    sum_probs, sum_log_probs, _ = lens_stats.marginal_sums(log_probs, keep_device=True)
    return cast(Tensor, sum_probs), cast(Tensor, sum_log_probs)


def _dirichlet_mean_log_likelihood(alpha: Tensor, stats: Tensor) -> float:
    value = torch.lgamma(alpha.sum()) - torch.lgamma(alpha).sum() + ((alpha - 1) * stats).sum()
    result = float(value.item())
    return result if math.isfinite(result) else -math.inf


def _newton_step(alpha: Tensor, stats: Tensor) -> Tensor:
    """The Newton ascent direction −H⁻¹g for the mean Dirichlet log-likelihood.

    g = ψ(α₀) − ψ(α) + s and H = −diag(ψ'(α)) + ψ'(α₀)·11ᵀ; Sherman–Morrison gives
    −H⁻¹g = (g − b)/ψ'(α) with b = Σ(g/ψ'(α)) / (Σ 1/ψ'(α) − 1/ψ'(α₀)).
    """
    total = alpha.sum()
    grad = torch.digamma(total) - torch.digamma(alpha) + stats
    curvature = torch.polygamma(1, alpha)
    total_curvature = torch.polygamma(1, total)
    b = (grad / curvature).sum() / ((1.0 / curvature).sum() - 1.0 / total_curvature)
    return (grad - b) / curvature
