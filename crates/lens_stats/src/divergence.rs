//! Divergences between two distributions given as log-probabilities of identical shape.
//!
//! With `p = exp(log_p)`, `q = exp(log_q)` per entry, 16 f32 lanes, combined per row in f64:
//! * `kl`: `KL(p‖q) = Σ p (log p - log q)`; entries with `p = 0` contribute 0 (also when
//!   `q = 0`); `+inf` where `q = 0 < p`.
//! * `js`: the true Jensen–Shannon divergence `½KL(p‖m) + ½KL(q‖m)`, `m = (p + q)/2`, in
//!   `[0, ln 2]`.
//! * `symmetric_kl`: `½KL(p‖q) + ½KL(q‖p) = ½Σ (p - q)(log p - log q)` (the original library's
//!   "JS").
//! * `total_variation`: `½Σ|p - q|` in `[0, 1]`.
//! * `max_abs_diff`: `max |p - q|` (the original library's "TV").
//!
//! A NaN in either row makes that row's result NaN. Results are clamped to their mathematical
//! range (rounding of normalised inputs can otherwise give e.g. `-1e-9`), NaN and `+inf` kept.

use crate::dims::Dims;
use crate::elem::{for_each_vector_pair, with_elem_pair, Elem, Values};
use crate::error::Result;
use crate::pool::Exec;
use crate::simd::math::{exp16, hsum, SUM_BLOCK};
use crate::simd::{Isa, RowOp, LANES};
use crate::PerRow;

/// Which divergence a [`PairOp`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Divergence {
    Kl,
    Js,
    SymmetricKl,
    TotalVariation,
    MaxAbsDiff,
}

/// `p (log p - log q)` for one entry, with `0 · anything = 0` unless `q` is NaN.
#[inline(always)]
pub(crate) fn kl_term(p: f32, lp: f32, lq: f32) -> f32 {
    let t = p * (lp - lq);
    if p != 0.0 || lq.is_nan() {
        t
    } else {
        0.0
    }
}

/// Clamp to `[lo, hi]`, keeping NaN.
#[inline(always)]
fn clamp_keep_nan(x: f64, lo: f64, hi: f64) -> f64 {
    if x < lo {
        lo
    } else if x > hi {
        hi
    } else {
        x
    }
}

/// The sum of one divergence's terms over one block of a row pair (f32 lanes).
#[inline(always)]
fn block_sum<I: Isa, E: Elem>(kind: Divergence, a: &[E::Raw], b: &[E::Raw]) -> f64 {
    let mut acc = [0.0f32; LANES];
    match kind {
        Divergence::Kl => for_each_vector_pair::<I, E>(
            a,
            b,
            #[inline(always)]
            |lp, lq| {
                let p = exp16::<I>(lp);
                for j in 0..LANES {
                    acc[j] += kl_term(p[j], lp[j], lq[j]);
                }
            },
        ),
        Divergence::Js => for_each_vector_pair::<I, E>(
            a,
            b,
            #[inline(always)]
            |lp, lq| acc = I::add16(acc, I::js16(lp, lq)),
        ),
        Divergence::SymmetricKl => for_each_vector_pair::<I, E>(
            a,
            b,
            #[inline(always)]
            |lp, lq| {
                let (p, q) = (exp16::<I>(lp), exp16::<I>(lq));
                for j in 0..LANES {
                    let t = (p[j] - q[j]) * (lp[j] - lq[j]);
                    acc[j] += if p[j] != q[j] { t } else { 0.0 };
                }
            },
        ),
        Divergence::TotalVariation | Divergence::MaxAbsDiff => for_each_vector_pair::<I, E>(
            a,
            b,
            #[inline(always)]
            |lp, lq| {
                // Floored exponentials: an entry under 1.2e-38 changes these sums by as much.
                let (p, q) = (I::exp16_floored(lp), I::exp16_floored(lq));
                for j in 0..LANES {
                    acc[j] += (p[j] - q[j]).abs();
                }
            },
        ),
    }
    hsum(&acc)
}

/// `max |p - q|` over a row pair, NaN if any entry is NaN.
#[inline(always)]
fn row_max_abs_diff<I: Isa, E: Elem>(a: &[E::Raw], b: &[E::Raw]) -> f64 {
    let mut acc = [0.0f32; LANES];
    let mut nan = [0u32; LANES];
    for_each_vector_pair::<I, E>(
        a,
        b,
        #[inline(always)]
        |lp, lq| {
            let (p, q) = (I::exp16_floored(lp), I::exp16_floored(lq));
            for j in 0..LANES {
                let d = (p[j] - q[j]).abs();
                acc[j] = if d > acc[j] { d } else { acc[j] };
                nan[j] |= d.is_nan() as u32;
            }
        },
    );
    if nan.iter().any(|&b| b != 0) {
        f64::NAN
    } else {
        acc.iter().fold(0.0f32, |m, &d| if d > m { d } else { m }) as f64
    }
}

/// One divergence between two rows, in f64.
#[inline(always)]
pub(crate) fn row_divergence<I: Isa, E: Elem>(kind: Divergence, a: &[E::Raw], b: &[E::Raw]) -> f64 {
    if kind == Divergence::MaxAbsDiff {
        return row_max_abs_diff::<I, E>(a, b);
    }
    let mut total = 0.0f64;
    for (block_a, block_b) in a.chunks(SUM_BLOCK).zip(b.chunks(SUM_BLOCK)) {
        total += block_sum::<I, E>(kind, block_a, block_b);
    }
    match kind {
        Divergence::Kl => clamp_keep_nan(total, 0.0, f64::INFINITY),
        Divergence::Js => clamp_keep_nan(0.5 * total, 0.0, std::f64::consts::LN_2),
        Divergence::SymmetricKl => clamp_keep_nan(0.5 * total, 0.0, f64::INFINITY),
        Divergence::TotalVariation | Divergence::MaxAbsDiff => {
            clamp_keep_nan(0.5 * total, 0.0, 1.0)
        }
    }
}

struct PairOp<'a, E: Elem> {
    p: &'a [E::Raw],
    q: &'a [E::Raw],
    vocab: usize,
    kind: Divergence,
}

impl<E: Elem> RowOp for PairOp<'_, E> {
    type Out = f32;
    #[inline(always)]
    fn row<I: Isa>(&self, index: usize, out: &mut [f32]) {
        let span = index * self.vocab..(index + 1) * self.vocab;
        out[0] = row_divergence::<I, E>(self.kind, &self.p[span.clone()], &self.q[span]) as f32;
    }
}

/// One divergence per row between `log_p` and `log_q` (same shape, same dtype), shape
/// `log_p.shape[:-1]`.
pub fn divergence(
    exec: &Exec,
    kind: Divergence,
    log_p: Values<'_>,
    p_shape: &[usize],
    log_q: Values<'_>,
    q_shape: &[usize],
) -> Result<PerRow<f32>> {
    let dims = Dims::pair("log_p", p_shape, log_p.len(), "log_q", q_shape, log_q.len())?;
    let mut out = vec![0.0f32; dims.rows];
    with_elem_pair!(log_p, log_q, "log_q", p, q, E => {
        let op = PairOp::<E> { p, q, vocab: dims.vocab, kind };
        exec.run_rows(&op, &mut out, 1, 2 * dims.vocab)
    })?;
    Ok(PerRow {
        data: out,
        shape: dims.out_shape(None),
    })
}
