//! Row reductions shared by several kernels: max, argmax, and the shifted sum of exponentials.
//! All use 16 f32 lanes in a fixed order and combine the lanes in f64.

use crate::elem::{for_each_vector, Elem, Lanes};
use crate::simd::math::{exp16, hsum, underflow_floor, SUM_BLOCK};
use crate::simd::prefetch::Prefetch;
use crate::simd::{Isa, LANES};

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
            // Through the ISA, like the normaliser (a lane loop here can be scalarised).
            acc = I::add16(acc, exp16::<I>(shifted(x, shift)));
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
/// Works block by block (`SUM_BLOCK` entries), in one pass per block: the exponentials are
/// taken against the running max of the earlier blocks while each lane tracks the block's own
/// max; then the f64 totals and the block's sums are brought to the new max by
/// `exp(m_old - m_new)` (rare after the first blocks). Only the first block with a finite
/// entry, and a block whose max exceeds the running one by more than `RESHIFT_ABOVE` (its
/// exponentials could overflow), take a second pass (from L1) against their own max.
/// An earlier version always made a max pass first: ~15% more instructions and a second
/// read of every block.
#[derive(Clone, Copy, Debug)]
pub struct Normalisers {
    pub max: f32,
    pub sum: f64,
    pub weighted: f64,
}

/// How far (in nats) a block's max may exceed the shift its exponentials were taken against
/// before it is redone against its own max: `e^60` times 1,024 entries stays far below the
/// f32 range.
const RESHIFT_ABOVE: f32 = 60.0;

/// `(Σ exp(x - shift), Σ exp(x - shift)·(x - shift), max x)` over one block (f32 lanes, the sums
/// in f64). NaN propagates into the sums and is skipped by the max. The generic definition of
/// [`Isa::block_sums`].
#[inline(always)]
pub(crate) fn block_sums_lanes<I: Isa, E: Elem, const WEIGHTED: bool>(
    block: &[E::Raw],
    shift: f32,
    prefetch_next: bool,
) -> (f64, f64, f32) {
    let mut acc = [0.0f32; LANES];
    let mut acc_w = [0.0f32; LANES];
    let mut top = [f32::NEG_INFINITY; LANES];
    let next_block = block.as_ptr_range().end;
    // The exception to this CPU's policy (`simd::prefetch`): this loop gains from it.
    let prefetch = Prefetch::on();
    for (k, x) in Lanes::<I, E>::with_prefetch(block, prefetch).enumerate() {
        if prefetch_next {
            // Keep the next block coming while this one is busy with exponentials.
            prefetch.line(next_block.wrapping_add(k * LANES));
        }
        // Through the ISA (the compiler scalarised this lane loop in the bf16 copy: 16 vmaxss
        // per vector, bf16 logsumexp at half the speed of f32).
        top = I::max16(x, top);
        // The weighted sum's factor is d floored where e^d is 0 (so finite); the plain sum
        // leaves the floor to `exp16_floored` (the AVX2 loop floors in place either way).
        let mut d = shifted(x, shift);
        if WEIGHTED {
            for v in &mut d {
                *v = underflow_floor(*v);
            }
        }
        let e = I::exp16_floored(d);
        acc = I::add16(acc, e);
        if WEIGHTED {
            acc_w = I::fma16(e, d, acc_w);
        }
    }
    let block_max = top
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    let weighted = if WEIGHTED { hsum(&acc_w) } else { 0.0 };
    (hsum(&acc), weighted, block_max)
}

/// Move `(sum, weighted)` taken against `from` to the reference `to` (both finite).
#[inline(always)]
fn rebase<const WEIGHTED: bool>(sum: f64, weighted: f64, from: f32, to: f32) -> (f64, f64) {
    if from == to || sum == 0.0 {
        return (sum, weighted);
    }
    let step = from as f64 - to as f64;
    let factor = step.exp();
    let weighted = if WEIGHTED {
        factor * (weighted + step * sum)
    } else {
        0.0
    };
    (sum * factor, weighted)
}

#[inline(always)]
pub fn online_normalisers<I: Isa, E: Elem, const WEIGHTED: bool>(row: &[E::Raw]) -> Normalisers {
    // `max`: the largest entry so far; the totals are taken against `safe_shift(max)`.
    let mut max = f32::NEG_INFINITY;
    let (mut sum, mut weighted) = (0.0f64, 0.0f64);
    for block in row.chunks(SUM_BLOCK) {
        let mut shift = if max == f32::NEG_INFINITY {
            safe_shift(row_max::<I, E>(block))
        } else {
            max
        };
        let (mut s, mut w, block_max) = I::block_sums::<E, WEIGHTED>(block, shift, true);
        if block_max > shift + RESHIFT_ABOVE {
            shift = block_max;
            (s, w, _) = I::block_sums::<E, WEIGHTED>(block, shift, false);
        }
        let new_max = if block_max > max { block_max } else { max };
        let reference = safe_shift(new_max);
        (sum, weighted) = rebase::<WEIGHTED>(sum, weighted, safe_shift(max), reference);
        (s, w) = rebase::<WEIGHTED>(s, w, shift, reference);
        sum += s;
        weighted += w;
        max = new_max;
    }
    Normalisers {
        max: safe_shift(max),
        sum,
        weighted,
    }
}

#[cfg(all(test, any(target_arch = "x86", target_arch = "x86_64")))]
mod tests {
    use super::*;
    use crate::elem::F32;
    use crate::simd::{Avx2, IsaKind};

    /// The AVX2 copy with the generic block loop ([`block_sums_lanes`]): what the AVX2 copy
    /// computed before its loop was hand-written.
    #[derive(Clone, Copy)]
    struct Avx2Lanes;

    impl Isa for Avx2Lanes {
        const FUSED: bool = true;
        fn fma(a: f32, b: f32, c: f32) -> f32 {
            Avx2::fma(a, b, c)
        }
        fn f16x16(src: &[u16]) -> [f32; LANES] {
            Avx2::f16x16(src)
        }
        fn bf16x16(src: &[u16]) -> [f32; LANES] {
            Avx2::bf16x16(src)
        }
        fn add16(a: [f32; LANES], b: [f32; LANES]) -> [f32; LANES] {
            Avx2::add16(a, b)
        }
        fn fma16(a: [f32; LANES], b: [f32; LANES], c: [f32; LANES]) -> [f32; LANES] {
            Avx2::fma16(a, b, c)
        }
        fn max16(x: [f32; LANES], top: [f32; LANES]) -> [f32; LANES] {
            Avx2::max16(x, top)
        }
        fn exp16_floored(x: [f32; LANES]) -> [f32; LANES] {
            Avx2::exp16_floored(x)
        }
        fn exp16(x: [f32; LANES]) -> [f32; LANES] {
            Avx2::exp16(x)
        }
    }

    /// Whole rows, blocks whose max jumps far above the running one (redone against their own
    /// max: the hand-written loop's lanes above `EXP8_CLAMP` are garbage there) included.
    #[test]
    fn avx2_normalisers_are_bit_identical_to_the_generic_loop() {
        if !IsaKind::available().contains(&IsaKind::Avx2) {
            return;
        }
        let n = 5 * SUM_BLOCK + 300;
        let base: Vec<f32> = (0..n)
            .map(|i| -(((i * 2_654_435_761) % 1000) as f32) * 0.013)
            .collect();
        let jumps: [&[(usize, f32)]; 6] = [
            &[],
            &[(1500, 100.0)],
            &[(1500, 59.0), (3000, 200.0), (4200, 1e30)],
            &[(0, f32::NEG_INFINITY), (2100, f32::INFINITY)],
            &[(10, -1e30), (2500, f32::NAN)],
            &[(5000, 88.4), (5100, 88.6), (5200, 300.0)],
        ];
        for set in jumps {
            let mut row = base.clone();
            for &(at, v) in set {
                row[at] = v;
            }
            for masked_start in [0, 1100] {
                let mut row = row.clone();
                row[..masked_start].fill(f32::NEG_INFINITY);
                let hand = online_normalisers::<Avx2, F32, true>(&row);
                let generic = online_normalisers::<Avx2Lanes, F32, true>(&row);
                let bits =
                    |v: Normalisers| (v.max.to_bits(), v.sum.to_bits(), v.weighted.to_bits());
                if hand.sum.is_nan() && generic.sum.is_nan() {
                    continue;
                }
                assert_eq!(
                    bits(hand),
                    bits(generic),
                    "{set:?}: {hand:?} vs {generic:?}"
                );
                let hand = online_normalisers::<Avx2, F32, false>(&row);
                let generic = online_normalisers::<Avx2Lanes, F32, false>(&row);
                assert_eq!(
                    bits(hand),
                    bits(generic),
                    "{set:?}: {hand:?} vs {generic:?}"
                );
            }
        }
    }
}
