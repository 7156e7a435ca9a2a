//! Shannon entropy `H = -Σ p log p` (nats) per row, from log-probabilities or fused from logits.
//!
//! `0 · log 0 = 0`: an entry with `lp = -inf`, or with `exp(lp)` below f32's normal range
//! (`lp < -87.33`), contributes exactly 0; on the AVX2 copy that holds from `-88` down, and
//! between the two an entry contributes at most its true `-e^lp lp` (under 1.1e-36). A NaN
//! makes its row NaN. `entropy` assumes normalised input and does not renormalise;
//! `entropy_from_logits` normalises on the fly without writing a normalised
//! copy: with `m` the row max, `e = exp(x - m)`, `s = Σ e`: `H = ln s - Σ e (x - m) / s`.
//! A row of `-inf` logits has no distribution and gives NaN.

use crate::dims::Dims;
use crate::elem::{with_elem, Elem, Lanes, Values};
use crate::error::Result;
use crate::pool::Exec;
use crate::reduce::online_normalisers;
use crate::simd::math::{hsum, underflow_floor, SUM_BLOCK};
use crate::simd::{Isa, RowOp, LANES};
use crate::PerRow;

/// `-Σ exp(lp) lp` of a row.
#[inline(always)]
pub(crate) fn row_entropy<I: Isa, E: Elem>(row: &[E::Raw]) -> f64 {
    let mut total = 0.0f64;
    for block in row.chunks(SUM_BLOCK) {
        total += I::plogp_sum::<E>(block);
    }
    -total
}

/// `Σ exp(lp) lp` over one block (f32 lanes, summed in f64), `lp` floored at `EXP8_FLOOR`
/// (where `e^lp` is `+0`, so `0 · lp` is 0 for `-inf`): the generic definition of
/// [`Isa::plogp_sum`].
#[inline(always)]
pub(crate) fn plogp_sum_lanes<I: Isa, E: Elem>(block: &[E::Raw]) -> f64 {
    let mut acc = [0.0f32; LANES];
    for mut x in Lanes::<I, E>::new(block) {
        for v in &mut x {
            *v = underflow_floor(*v);
        }
        let p = I::exp16_floored(x);
        for j in 0..LANES {
            acc[j] = I::fma(p[j], x[j], acc[j]);
        }
    }
    hsum(&acc)
}

/// Entropy of `softmax(row)` without materialising it (one streaming pass).
#[inline(always)]
pub(crate) fn row_entropy_from_logits<I: Isa, E: Elem>(row: &[E::Raw]) -> f64 {
    let n = online_normalisers::<I, E, true>(row);
    n.sum.ln() - n.weighted / n.sum
}

struct EntropyOp<'a, E: Elem> {
    x: &'a [E::Raw],
    vocab: usize,
    from_logits: bool,
}

impl<E: Elem> RowOp for EntropyOp<'_, E> {
    type Out = f32;
    #[inline(always)]
    fn row<I: Isa>(&self, index: usize, out: &mut [f32]) {
        let row = &self.x[index * self.vocab..(index + 1) * self.vocab];
        out[0] = if self.from_logits {
            row_entropy_from_logits::<I, E>(row) as f32
        } else {
            row_entropy::<I, E>(row) as f32
        };
    }
}

fn run(
    exec: &Exec,
    arg: &'static str,
    x: Values<'_>,
    shape: &[usize],
    from_logits: bool,
) -> Result<PerRow<f32>> {
    let dims = Dims::of(arg, shape, x.len())?;
    let mut out = vec![0.0f32; dims.rows];
    with_elem!(x, s, E => {
        let op = EntropyOp::<E> { x: s, vocab: dims.vocab, from_logits };
        exec.run_rows(&op, &mut out, 1, dims.vocab)
    })?;
    Ok(PerRow {
        data: out,
        shape: dims.out_shape(None),
    })
}

/// `-Σ_v p log p` with `p = exp(log_probs)`, shape `log_probs.shape[:-1]`.
pub fn entropy(exec: &Exec, log_probs: Values<'_>, shape: &[usize]) -> Result<PerRow<f32>> {
    run(exec, "log_probs", log_probs, shape, false)
}

/// The entropy of `softmax(logits)`, fused (no normalised copy), shape `logits.shape[:-1]`.
pub fn entropy_from_logits(
    exec: &Exec,
    logits: Values<'_>,
    shape: &[usize],
) -> Result<PerRow<f32>> {
    run(exec, "logits", logits, shape, true)
}
