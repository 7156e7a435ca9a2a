//! Statistics that read the log-probability of given token ids: `target_log_prob`,
//! `log_prob_diff`, and `target_rank`.
//!
//! `targets` holds one id per row (already broadcast to `shape[:-1]` by the caller); ids are
//! range-checked here. `target_log_prob` and `log_prob_diff` read only the selected entries, so
//! a NaN elsewhere in the row does not reach them.

use crate::dims::{check_ids, check_out, Dims};
use crate::elem::{with_elem, Elem, Lanes, Values};
use crate::error::Result;
use crate::pool::Exec;
use crate::simd::{Isa, RowOp, LANES};
use crate::PerRow;

fn checked(
    log_probs: &Values<'_>,
    shape: &[usize],
    ids: &[(&'static str, &[i64])],
) -> Result<Dims> {
    let dims = Dims::of("log_probs", shape, log_probs.len())?;
    for &(arg, t) in ids {
        check_out(arg, &[t.len()], &[dims.rows])?;
        check_ids(arg, t, dims.vocab)?;
    }
    Ok(dims)
}

fn gather<E: Elem>(x: &[E::Raw], vocab: usize, targets: &[i64]) -> Vec<f32> {
    targets
        .iter()
        .enumerate()
        .map(|(row, &t)| E::get(x[row * vocab + t as usize]))
        .collect()
}

/// `log_probs[..., targets]`, shape `log_probs.shape[:-1]`.
pub fn target_log_prob(
    log_probs: Values<'_>,
    shape: &[usize],
    targets: &[i64],
) -> Result<PerRow<f32>> {
    let dims = checked(&log_probs, shape, &[("targets", targets)])?;
    let data = with_elem!(log_probs, s, E => gather::<E>(s, dims.vocab, targets));
    Ok(PerRow {
        data,
        shape: dims.out_shape(None),
    })
}

/// `log_probs[..., targets] - log_probs[..., anti_targets]`.
pub fn log_prob_diff(
    log_probs: Values<'_>,
    shape: &[usize],
    targets: &[i64],
    anti_targets: &[i64],
) -> Result<PerRow<f32>> {
    let dims = checked(
        &log_probs,
        shape,
        &[("targets", targets), ("anti_targets", anti_targets)],
    )?;
    let data = with_elem!(log_probs, s, E => {
        let a = gather::<E>(s, dims.vocab, targets);
        let b = gather::<E>(s, dims.vocab, anti_targets);
        a.iter().zip(&b).map(|(x, y)| x - y).collect()
    });
    Ok(PerRow {
        data,
        shape: dims.out_shape(None),
    })
}

struct RankOp<'a, E: Elem> {
    x: &'a [E::Raw],
    vocab: usize,
    targets: &'a [i64],
}

/// `1 + #{v : row[v] > row[target]}`; a NaN target value gets the worst rank `V`.
#[inline(always)]
pub(crate) fn row_rank<I: Isa, E: Elem>(row: &[E::Raw], target: usize) -> i64 {
    let threshold = E::get(row[target]);
    if threshold.is_nan() {
        return row.len() as i64;
    }
    let mut count = [0u32; LANES];
    for x in Lanes::<I, E>::new(row) {
        for j in 0..LANES {
            count[j] += (x[j] > threshold) as u32;
        }
    }
    1 + count.iter().map(|&c| c as i64).sum::<i64>()
}

impl<E: Elem> RowOp for RankOp<'_, E> {
    type Out = i64;
    #[inline(always)]
    fn row<I: Isa>(&self, index: usize, out: &mut [i64]) {
        let row = &self.x[index * self.vocab..(index + 1) * self.vocab];
        out[0] = row_rank::<I, E>(row, self.targets[index] as usize);
    }
}

/// `1 + #{v : lp[v] > lp[target]}` per row (ties share the best rank), int64.
pub fn target_rank(
    exec: &Exec,
    log_probs: Values<'_>,
    shape: &[usize],
    targets: &[i64],
) -> Result<PerRow<i64>> {
    let dims = checked(&log_probs, shape, &[("targets", targets)])?;
    let mut out = vec![0i64; dims.rows];
    with_elem!(log_probs, s, E => {
        let op = RankOp::<E> { x: s, vocab: dims.vocab, targets };
        exec.run_rows(&op, &mut out, 1, dims.vocab)
    })?;
    Ok(PerRow {
        data: out,
        shape: dims.out_shape(None),
    })
}
