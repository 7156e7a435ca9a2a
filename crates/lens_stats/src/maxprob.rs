//! The most likely token of each row and its probability.
//!
//! From log-probabilities: `(exp(max lp), argmax)`. From logits: `(1 / Σ exp(x - max), argmax)`,
//! i.e. the softmax maximum without a normalised copy. Ties go to the lowest id. A row holding a
//! NaN gets probability NaN (its id is that of the largest non-NaN entry); a row of `-inf` only
//! gets id 0 and probability 0 (log-probs) or NaN (logits: no distribution).

use crate::dims::Dims;
use crate::elem::{with_elem, Elem, Values};
use crate::error::Result;
use crate::pool::Exec;
use crate::reduce::{row_argmax, sum_exp};
use crate::simd::{Isa, RowOp};
use crate::PerRow;

struct MaxProbOp<'a, E: Elem> {
    x: &'a [E::Raw],
    vocab: usize,
    from_logits: bool,
}

impl<E: Elem> RowOp for MaxProbOp<'_, E> {
    type Out = (f32, i64);
    #[inline(always)]
    fn row<I: Isa>(&self, index: usize, out: &mut [(f32, i64)]) {
        let row = &self.x[index * self.vocab..(index + 1) * self.vocab];
        let best = row_argmax::<I, E>(row);
        let prob = if best.has_nan {
            f64::NAN
        } else if !self.from_logits {
            (best.value as f64).exp()
        } else if best.value == f32::NEG_INFINITY {
            f64::NAN
        } else {
            1.0 / sum_exp::<I, E>(row, best.value)
        };
        out[0] = (prob as f32, best.index as i64);
    }
}

/// `(probability, token id)` of the most likely token per row, each of shape `shape[:-1]`.
pub fn max_probability(
    exec: &Exec,
    x: Values<'_>,
    shape: &[usize],
    from_logits: bool,
) -> Result<(PerRow<f32>, PerRow<i64>)> {
    let arg = if from_logits { "logits" } else { "log_probs" };
    let dims = Dims::of(arg, shape, x.len())?;
    let mut pairs = vec![(0.0f32, 0i64); dims.rows];
    with_elem!(x, s, E => {
        let op = MaxProbOp::<E> { x: s, vocab: dims.vocab, from_logits };
        exec.run_rows(&op, &mut pairs, 1, dims.vocab)
    })?;
    let (probs, ids) = pairs.into_iter().unzip();
    let shape = dims.out_shape(None);
    Ok((
        PerRow {
            data: probs,
            shape: shape.clone(),
        },
        PerRow { data: ids, shape },
    ))
}
