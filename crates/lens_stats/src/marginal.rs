//! Column sums over all rows: `Σ_rows exp(lp[row, v])` and `Σ_rows lp[row, v]` in f64, plus the
//! row count. Sums from several batches (or processes) merge by addition, which is what a
//! streaming mean of the predicted distribution needs.
//!
//! Parallel over blocks of columns (each block sums every row in row order), so the result is
//! bit-identical for any thread count and needs no per-thread V-sized accumulators.

use crate::dims::Dims;
use crate::elem::{padded, with_elem, Elem, Values};
use crate::error::Result;
use crate::pool::Exec;
use crate::simd::prefetch::Prefetch;
use crate::simd::{Isa, RowOp, LANES};

/// Columns per task: 1024 f32 = 4 KiB of each row (one page), f64 accumulators (16 KiB) on the
/// stack.
const COLUMNS: usize = 1024;
/// Rows read together, 16 columns at a time: their sums stay in registers over the group (one
/// load and store of the f64 accumulators per group, not per row), and the group's next rows
/// are what is prefetched.
const GROUP: usize = 8;

struct MarginalOp<'a, E: Elem> {
    x: &'a [E::Raw],
    rows: usize,
    vocab: usize,
}

/// One row's 16 columns into the sums: `e^x` into the probability sums, `x` into the log sums.
#[inline(always)]
fn add_to_sums((p, l): (&mut [f64; LANES], &mut [f64; LANES]), e: &[f32; LANES], x: &[f32; LANES]) {
    for j in 0..LANES {
        p[j] += e[j] as f64;
        l[j] += x[j] as f64;
    }
}

impl<E: Elem> MarginalOp<'_, E> {
    /// The 16 entries from `start` (fewer if `left < 16`: the missing ones read as `-inf`,
    /// which adds 0 to the probability sums; the log sums of those slots are never read),
    /// asking for the entry `ahead` on.
    #[inline(always)]
    fn vector<I: Isa>(&self, start: usize, left: usize, ahead: usize) -> [f32; LANES] {
        if left >= LANES {
            let chunk = &self.x[start..start + LANES];
            Prefetch::on().line(chunk.as_ptr().wrapping_add(ahead));
            E::load16::<I>(chunk)
        } else {
            padded::<E>(&self.x[start..start + left])
        }
    }

    /// Add `rows`' 16 columns from `first + at` to the sums, row by row in order.
    #[inline(always)]
    fn strip<I: Isa>(
        &self,
        rows: std::ops::Range<usize>,
        (first, at, width): (usize, usize, usize),
        sums: (&mut [f64; LANES], &mut [f64; LANES]),
    ) {
        // Software prefetch whatever the CPU's policy (`simd::prefetch`): the next group's
        // read of these columns (short segments of rows a stride apart, which the hardware
        // prefetchers do not follow).
        let ahead = GROUP * self.vocab;
        let (p64, l64) = sums;
        // The sums go through local copies, so that the compiler can keep them in registers
        // over the rows (through the references it loads, adds and stores them back per row).
        if I::VECTOR_REGISTERS >= 32 {
            let (mut p, mut l) = (*p64, *l64);
            for r in rows {
                let x = self.vector::<I>(r * self.vocab + first + at, width - at, ahead);
                add_to_sums((&mut p, &mut l), &I::exp16_floored(x), &x);
            }
            (*p64, *l64) = (p, l);
        } else {
            // Two passes, the exponentials through an L1 buffer: in one loop the sums (8
            // registers), the exponential's constants and temporaries do not fit in 16
            // registers, and the sums went to the stack for every row (AVX2: 2.1 -> 2.5 G
            // elements/s in L2; the AVX-512 copy, with 32, is 16% faster in one loop).
            let mut exps = [[0.0f32; LANES]; GROUP];
            let mut values = [[0.0f32; LANES]; GROUP];
            let n = rows.len();
            for (i, r) in rows.enumerate() {
                let x = self.vector::<I>(r * self.vocab + first + at, width - at, ahead);
                exps[i] = I::exp16_floored(x);
                values[i] = x;
            }
            let (mut p, mut l) = (*p64, *l64);
            for (e, x) in exps[..n].iter().zip(&values[..n]) {
                add_to_sums((&mut p, &mut l), e, x);
            }
            (*p64, *l64) = (p, l);
        }
    }
}

impl<E: Elem> RowOp for MarginalOp<'_, E> {
    type Out = (f64, f64);
    #[inline(always)]
    fn row<I: Isa>(&self, block: usize, out: &mut [(f64, f64)]) {
        let first = block * COLUMNS;
        let width = out.len();
        let mut probs = [0.0f64; COLUMNS];
        let mut logs = [0.0f64; COLUMNS];
        for group in (0..self.rows).step_by(GROUP) {
            let rows = group..(group + GROUP).min(self.rows);
            let columns = probs
                .chunks_exact_mut(LANES)
                .zip(logs.chunks_exact_mut(LANES))
                .take(width.div_ceil(LANES));
            for (i, (p, l)) in columns.enumerate() {
                let p: &mut [f64; LANES] = p.try_into().expect("16 lanes");
                let l: &mut [f64; LANES] = l.try_into().expect("16 lanes");
                self.strip::<I>(rows.clone(), (first, i * LANES, width), (p, l));
            }
        }
        for (o, (&p, &l)) in out.iter_mut().zip(probs.iter().zip(&logs)) {
            *o = (p, l);
        }
    }
}

/// Column sums of a `(..., V)` log-probability array.
#[derive(Debug, Clone, PartialEq)]
pub struct Marginals {
    /// `Σ_rows exp(lp)`, shape `(V,)`.
    pub sum_probs: Vec<f64>,
    /// `Σ_rows lp`, shape `(V,)` (`-inf` where any row has `lp = -inf`).
    pub sum_log_probs: Vec<f64>,
    pub rows: usize,
}

pub fn marginal_sums(exec: &Exec, log_probs: Values<'_>, shape: &[usize]) -> Result<Marginals> {
    let dims = Dims::of("log_probs", shape, log_probs.len())?;
    let mut pairs = vec![(0.0f64, 0.0f64); dims.vocab];
    with_elem!(log_probs, s, E => {
        let op = MarginalOp::<E> { x: s, rows: dims.rows, vocab: dims.vocab };
        exec.run_rows(&op, &mut pairs, COLUMNS, COLUMNS * dims.rows)
    })?;
    let (sum_probs, sum_log_probs) = pairs.into_iter().unzip();
    Ok(Marginals {
        sum_probs,
        sum_log_probs,
        rows: dims.rows,
    })
}
