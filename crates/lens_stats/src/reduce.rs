//! Row reductions shared by several kernels: max, argmax, and the shifted sum of exponentials.
//! All use 16 f32 lanes in a fixed order and combine the lanes in f64.

use crate::elem::{for_each_vector, Elem, Lanes};
use crate::simd::math::{exp16, finite_floor, hsum, SUM_BLOCK};
use crate::simd::{prefetch_l2, Isa, LANES};

/// Maximum of a row (NaN ignored; `-inf` for a row of `-inf`/NaN only).
#[inline(always)]
pub fn row_max<I: Isa, E: Elem>(row: &[E::Raw]) -> f32 {
    let mut best = [f32::NEG_INFINITY; LANES];
    for x in Lanes::<I, E>::new(row) {
        for j in 0..LANES {
            best[j] = if x[j] > best[j] { x[j] } else { best[j] };
        }
    }
    best.iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a })
}

/// The largest value of a row, its lowest index among ties, and whether the row holds a NaN.
/// A row of `-inf` gives `(-inf, 0, false)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArgMax {
    pub value: f32,
    pub index: usize,
    pub has_nan: bool,
}

#[inline(always)]
pub fn row_argmax<I: Isa, E: Elem>(row: &[E::Raw]) -> ArgMax {
    // One pass, each lane keeping its best value and the vector where it first appeared
    // (strictly greater replaces, so ties keep the earliest). The lanes are combined at the
    // end: the largest value, and among lanes holding it the lowest position. NaN never
    // compares greater, so it is skipped and flagged. (An earlier version re-searched a block
    // with a scalar loop whenever its max beat the running one: ~4 re-searches per random row,
    // a quarter of the time of a bf16 call.)
    let mut best = [f32::NEG_INFINITY; LANES];
    let mut best_at = [0u32; LANES];
    let mut nan = [0u32; LANES];
    let mut vector = 0u32;
    for_each_vector::<I, E>(
        row,
        #[inline(always)]
        |x| {
            for j in 0..LANES {
                let better = x[j] > best[j];
                best[j] = if better { x[j] } else { best[j] };
                best_at[j] = if better { vector } else { best_at[j] };
                nan[j] |= x[j].is_nan() as u32;
            }
            vector += 1;
        },
    );
    let value = best
        .iter()
        .fold(f32::NEG_INFINITY, |a, &m| if m > a { m } else { a });
    let index = (0..LANES)
        .filter(|&j| best[j] == value)
        .map(|j| best_at[j] as usize * LANES + j)
        .min()
        .unwrap_or(0);
    ArgMax {
        value,
        index,
        has_nan: nan.iter().any(|&b| b != 0),
    }
}

/// `x - shift` on every lane (a plain loop: `array::map` was not kept in registers).
#[inline(always)]
fn shifted(x: [f32; LANES], shift: f32) -> [f32; LANES] {
    let mut d = x;
    for v in &mut d {
        *v -= shift;
    }
    d
}

/// `Σ exp(x - shift)` over a row. NaN propagates.
#[inline(always)]
pub fn sum_exp<I: Isa, E: Elem>(row: &[E::Raw], shift: f32) -> f64 {
    let mut total = 0.0f64;
    for block in row.chunks(SUM_BLOCK) {
        let mut acc = [0.0f32; LANES];
        for x in Lanes::<I, E>::new(block) {
            let e = exp16::<I>(shifted(x, shift));
            for j in 0..LANES {
                acc[j] += e[j];
            }
        }
        total += hsum(&acc);
    }
    total
}

/// The shift that keeps `exp(x - shift)` in range: the row maximum, or 0 when the maximum is
/// `-inf` (a fully masked row), so that `-inf - shift` stays `-inf` instead of NaN.
#[inline(always)]
pub fn safe_shift(max: f32) -> f32 {
    if max == f32::NEG_INFINITY {
        0.0
    } else {
        max
    }
}

/// Softmax normalisers of a row in one streaming pass: with `m` the row max,
/// `s = Σ exp(x - m)` and (if `WEIGHTED`) `w = Σ exp(x - m)(x - m)`, masked entries
/// contributing 0 to `w`.
///
/// Works block by block (`SUM_BLOCK` entries, in L1): the block max first, then the
/// exponentials against the running max; when the max grows, the f64 totals are rescaled by
/// `exp(m_old - m_new)` (rare after the first blocks). The input is read from memory once.
#[derive(Clone, Copy, Debug)]
pub struct Normalisers {
    pub max: f32,
    pub sum: f64,
    pub weighted: f64,
}

#[inline(always)]
pub fn online_normalisers<I: Isa, E: Elem, const WEIGHTED: bool>(row: &[E::Raw]) -> Normalisers {
    let mut max = f32::NEG_INFINITY;
    let (mut sum, mut weighted) = (0.0f64, 0.0f64);
    for block in row.chunks(SUM_BLOCK) {
        let block_max = row_max::<I, E>(block);
        if block_max > max {
            if sum != 0.0 {
                let step = max as f64 - block_max as f64;
                let factor = step.exp();
                if WEIGHTED {
                    weighted = factor * (weighted + step * sum);
                }
                sum *= factor;
            }
            max = block_max;
        }
        let shift = safe_shift(max);
        let mut acc = [0.0f32; LANES];
        let mut acc_w = [0.0f32; LANES];
        // The max pass of the next block reads memory with little work to hide it: request
        // that block during this (exp-heavy) pass, one line per vector.
        let next_block = block.as_ptr_range().end;
        for (k, x) in Lanes::<I, E>::new(block).enumerate() {
            prefetch_l2(next_block.wrapping_add(k * LANES));
            let d = shifted(x, shift);
            let e = exp16::<I>(d);
            let mut fd = d;
            for v in &mut fd {
                *v = finite_floor(*v);
            }
            acc = I::add16(acc, e);
            if WEIGHTED {
                acc_w = I::fma16(e, fd, acc_w);
            }
        }
        sum += hsum(&acc);
        if WEIGHTED {
            weighted += hsum(&acc_w);
        }
    }
    Normalisers {
        max: safe_shift(max),
        sum,
        weighted,
    }
}
