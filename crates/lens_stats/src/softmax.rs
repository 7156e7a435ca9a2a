//! `logsumexp` and `log_softmax` over the last axis.
//!
//! Per row: `m = max x` and `s = Σ exp(x - m)` in one streaming pass (running max, rebased in
//! f64; 16 f32 lanes combined in f64), `lse = m + ln s`; `log_softmax` then writes `x - lse`
//! with streaming stores (a row of 50k f32 is still in L2, so that pass does not touch DRAM
//! for its input).
//!
//! Special values: a row of `-inf` only has `lse = -inf` and a `log_softmax` of NaN (there is no
//! distribution); a NaN makes its row NaN; a `+inf` logit gives `lse = +inf` (as
//! `torch.logsumexp`) and a `log_softmax` of NaN.

use crate::dims::{check_out, Dims};
use crate::elem::{with_elem, Elem, Values};
use crate::error::Result;
use crate::pool::Exec;
use crate::reduce::online_normalisers;
use crate::simd::{Isa, RowOp, LANES};
use crate::PerRow;

/// `ln Σ exp(x)` of a row, in f64 (one streaming pass, see [`online_normalisers`]).
#[inline(always)]
pub(crate) fn row_logsumexp<I: Isa, E: Elem>(row: &[E::Raw]) -> f64 {
    let n = online_normalisers::<I, E, false>(row);
    n.max as f64 + n.sum.ln()
}

struct LogSumExpOp<'a, E: Elem> {
    x: &'a [E::Raw],
    vocab: usize,
}

impl<E: Elem> RowOp for LogSumExpOp<'_, E> {
    type Out = f32;
    #[inline(always)]
    fn row<I: Isa>(&self, index: usize, out: &mut [f32]) {
        let row = &self.x[index * self.vocab..(index + 1) * self.vocab];
        out[0] = row_logsumexp::<I, E>(row) as f32;
    }
}

struct LogSoftmaxOp<'a, E: Elem> {
    x: &'a [E::Raw],
    vocab: usize,
}

impl<E: Elem> RowOp for LogSoftmaxOp<'_, E> {
    type Out = f32;
    #[inline(always)]
    fn row<I: Isa>(&self, index: usize, out: &mut [f32]) {
        let row = &self.x[index * self.vocab..(index + 1) * self.vocab];
        let lse = row_logsumexp::<I, E>(row) as f32;
        // The output is written once and not read back here: streaming stores (where the
        // unit has them) skip the read of every destination line that a plain store makes,
        // a third of this call's memory traffic. They need 64-byte-aligned vectors, so the
        // first entries up to that boundary and the tail are written plainly.
        let n = out.len().min(row.len());
        let head = out.as_ptr().align_offset(64).min(n);
        for (d, &raw) in out[..head].iter_mut().zip(&row[..head]) {
            *d = E::get(raw) - lse;
        }
        let mut i = head;
        while i + LANES <= n {
            let mut v = E::load16::<I>(&row[i..i + LANES]);
            for x in &mut v {
                *x -= lse;
            }
            I::store16_stream(&mut out[i..i + LANES], v);
            i += LANES;
        }
        for (d, &raw) in out[i..n].iter_mut().zip(&row[i..n]) {
            *d = E::get(raw) - lse;
        }
        I::store_fence();
    }
}

/// Whether a row holds a `+inf` and no NaN: its `lse` is `+inf`.
fn infinite_not_nan<E: Elem>(row: &[E::Raw]) -> bool {
    let mut infinite = false;
    for &raw in row {
        let x = E::get(raw);
        if x.is_nan() {
            return false;
        }
        infinite |= x == f32::INFINITY;
    }
    infinite
}

/// `log Σ_v exp(x[..., v])`, shape `x.shape[:-1]`.
///
/// The streaming pass gives NaN for a row holding `+inf` (`exp(inf - inf)`); such rows are
/// set to `+inf` afterwards, re-reading only rows whose result is NaN (the hot loop is not
/// burdened with the case).
pub fn logsumexp(exec: &Exec, x: Values<'_>, shape: &[usize]) -> Result<PerRow<f32>> {
    let dims = Dims::of("logits", shape, x.len())?;
    let mut out = vec![0.0f32; dims.rows];
    let vocab = dims.vocab;
    with_elem!(x, s, E => {
        exec.run_rows(&LogSumExpOp::<E> { x: s, vocab }, &mut out, 1, vocab)?;
        for (r, lse) in out.iter_mut().enumerate() {
            if lse.is_nan() && infinite_not_nan::<E>(&s[r * vocab..(r + 1) * vocab]) {
                *lse = f32::INFINITY;
            }
        }
        Ok::<(), crate::error::StatsError>(())
    })?;
    Ok(PerRow {
        data: out,
        shape: dims.out_shape(None),
    })
}

/// `x - logsumexp(x)` written into `out` (same shape as `x`, contiguous f32).
pub fn log_softmax_into(
    exec: &Exec,
    x: Values<'_>,
    shape: &[usize],
    out: &mut [f32],
    out_shape: &[usize],
) -> Result<()> {
    let dims = Dims::of("logits", shape, x.len())?;
    check_out("out", out_shape, shape)?;
    check_out("out", &[out.len()], &[x.len()])?;
    with_elem!(x, s, E => {
        exec.run_rows(&LogSoftmaxOp::<E> { x: s, vocab: dims.vocab }, out, dims.vocab, dims.vocab)
    })?;
    Ok(())
}
