"""``causal.remove_subspace`` against the original's solve-based formula (issue 12, item 1).

The original computes the projector ``P = A (AᵀA)⁻¹ Aᵀ`` with ``torch.linalg.solve`` and applies
it as ``u - u P``; this package solves the (k, k) normal equations by Cholesky and never forms
the (d, d) projector. Cases are 900-dimensional, where an SVD-based version was 6-16x slower.

Usage: ``.venv/bin/python benches/bench_remove_subspace.py [--repeats N]``; prints a markdown
table with the time of each and the ratio ours / original (below 1: ours is faster).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tuned_lens.causal import remove_subspace

#: (rows, d, k): a batch of 900-dimensional states and subspaces of 1 to 256 directions.
CASES = [(4096, 900, 1), (4096, 900, 16), (4096, 900, 128), (512, 900, 256), (64, 900, 16)]


def original(u: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """The original's ``remove_subspace(u, A, mode="zero", orthonormal=False)``."""
    proj = A @ torch.linalg.solve(A.mT @ A, A.mT)
    return u - u @ proj


def _best(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print("| rows | d | k | original (ms) | ours (ms) | ours / original |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for rows, d, k in CASES:
        gen = torch.Generator().manual_seed(0)
        u = torch.randn(rows, d, generator=gen)
        A = torch.randn(d, k, generator=gen)
        torch.testing.assert_close(remove_subspace(u, A), original(u, A), atol=1e-3, rtol=1e-3)
        t_orig = _best(lambda u=u, A=A: original(u, A), args.repeats)
        t_ours = _best(lambda u=u, A=A: remove_subspace(u, A), args.repeats)
        print(
            f"| {rows} | {d} | {k} | {t_orig * 1e3:.2f} | {t_ours * 1e3:.2f} | "
            f"{t_ours / t_orig:.2f} |"
        )


if __name__ == "__main__":
    main()
