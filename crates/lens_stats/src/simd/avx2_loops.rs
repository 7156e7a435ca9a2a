//! Hand-written AVX2 + FMA forms of whole hot block loops (the [`super::Isa`] methods that take
//! a block rather than one 16-lane vector): the online normalisers' block sums and the
//! entropy's `Σ e^x x`, and the two-halves exponential (`exp2!`) they share with `avx2_js`.
//!
//! The online normalisers' block loop was bound by how the compiler scheduled it, not by the
//! arithmetic: through the per-vector methods it kept loop-carried state (the block max, the
//! shift, the opaque constant pointers of its exponential) in stack slots, and every constant
//! was a separate load for each 8-lane half (some 30 loads per 16 lanes, at two a cycle);
//! written with intrinsics it loaded all constants up front and spilled the accumulators
//! instead. So the per-vector step is an `asm!` block: both halves in lock step, all state in
//! registers. Constants the instructions can take as memory operands are (a folded load takes
//! no register; the loop is bound by the vector registers in flight across its ~50-cycle
//! chains more than by loads: ~10% faster than loading each once into a register for both
//! halves; entropy 4.0 -> 4.3 G elem/s); the others are loaded once for both.
//!
//! Every function here is `unsafe`: it may only run on a CPU with AVX2 and FMA (see `avx2.rs`).

#[cfg(target_arch = "x86")]
use std::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::mem::offset_of;

use super::avx2::{load, store, Consts, CONSTS};
use super::math::hsum;
use super::prefetch::Prefetch;
use super::LANES;
use crate::elem::Elem;

/// 8 lanes on a 32-byte boundary (an aligned memory operand).
#[repr(align(32))]
struct Aligned(#[allow(dead_code)] [f32; 8]);

/// The running sums and maxima of [`block_sums`], two 8-lane registers each.
struct State {
    acc: [__m256; 2],
    acc_w: [__m256; 2],
    top: [__m256; 2],
}

/// `e^x` on two halves in lock step (AT&T syntax): `{$xa}`, `{$xb}` are the inputs, already
/// clamped to `[EXP8_FLOOR, EXP8_CLAMP]` (or NaN) by the block, `{$pa}`, `{$pb}` the results
/// (they may be `$xa`, `$xb`). Temporaries `{v4}`, `{v7}`-`{v10}`. The instructions of
/// `avx2::exp8_floored` after its clamps, in its order (`math::exp_table_floored`: the cubic,
/// then the table entry by `vpermps` on the rounding sum's bits, `2^(k >> 3)` by its shift and
/// the product), each for both halves: no mask, the floor gives `+0` itself.
macro_rules! exp2 {
    ($xa:literal, $xb:literal, $pa:literal, $pb:literal) => {
        concat!(
            "vmovaps {",
            $xa,
            "}, {v7}\n",
            "vmovaps {",
            $xb,
            "}, {v8}\n",
            "vmovaps {o_magic}({c}), {v4}\n",
            "vfmadd132ps {o_log2e}({c}), {v4}, {v7}\n",
            "vfmadd132ps {o_log2e}({c}), {v4}, {v8}\n",
            "vsubps {v4}, {v7}, {v9}\n",
            "vsubps {v4}, {v8}, {v10}\n",
            "vfmadd132ps {o_nl2}({c}), {",
            $xa,
            "}, {v9}\n",
            "vfmadd132ps {o_nl2}({c}), {",
            $xb,
            "}, {v10}\n",
            "vmovaps {o_p}({c}), {",
            $pa,
            "}\n",
            "vmovaps {",
            $pa,
            "}, {",
            $pb,
            "}\n",
            "vfmadd213ps {o_p}+32({c}), {v9}, {",
            $pa,
            "}\n",
            "vfmadd213ps {o_p}+32({c}), {v10}, {",
            $pb,
            "}\n",
            "vfmadd213ps {o_p}+64({c}), {v9}, {",
            $pa,
            "}\n",
            "vfmadd213ps {o_p}+64({c}), {v10}, {",
            $pb,
            "}\n",
            "vfmadd213ps {o_p}+96({c}), {v9}, {",
            $pa,
            "}\n",
            "vfmadd213ps {o_p}+96({c}), {v10}, {",
            $pb,
            "}\n",
            "vpermps {o_tab}({c}), {v7}, {v9}\n",
            "vpermps {o_tab}({c}), {v8}, {v10}\n",
            "vpslld $20, {v7}, {v7}\n",
            "vpslld $20, {v8}, {v8}\n",
            "vpaddd {v9}, {v7}, {v7}\n",
            "vpaddd {v10}, {v8}, {v8}\n",
            "vmulps {v7}, {",
            $pa,
            "}, {",
            $pa,
            "}\n",
            "vmulps {v8}, {",
            $pb,
            "}, {",
            $pb,
            "}\n",
        )
    };
}
pub(super) use exp2;

/// `asm!` with the operands [`exp2`] reads appended: the constants table `c`, the offsets of
/// the exponential's fields in it and of `EXP8_FLOOR` (every block floors its own inputs).
/// Every block that expands `exp2!` goes through this, so the list exists once (the block may
/// use `c` for its own constants as well).
macro_rules! asm_with_exp2 {
    ($($body:tt)*) => {
        std::arch::asm!(
            $($body)*
            c = in(reg) &CONSTS,
            o_log2e = const offset_of!(Consts, log2_e8),
            o_magic = const offset_of!(Consts, magic),
            o_nl2 = const offset_of!(Consts, neg_ln2_8),
            o_p = const offset_of!(Consts, exp_c),
            o_tab = const offset_of!(Consts, exp_tab),
            o_floor = const offset_of!(Consts, exp_floor),
        )
    };
}
pub(super) use asm_with_exp2;

/// One 16-lane vector `(x0, x1)` of the online normalisers' block loop: the generic step's
/// `max16(x, top)`, `d = underflow_floor(x - shift)`, `e = exp16_floored(d)`,
/// `acc = add16(acc, e)` and (if `WEIGHTED`) `acc_w = fma16(e, d, acc_w)`, lane for lane the
/// same results.
/// (`#[inline]`, not `always`, which `target_feature` rules out: it is inlined into the AVX2
/// frame, whose features include these.)
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn step<const WEIGHTED: bool>(s: &mut State, x0: __m256, x1: __m256, shift: &Aligned) {
    let [a0, a1] = &mut s.acc;
    let [w0, w1] = &mut s.acc_w;
    let [m0, m1] = &mut s.top;
    macro_rules! run {
        ($($extra:literal),*) => {
            // SAFETY: reads only `CONSTS` (every offset is a field of it), `shift` (8 aligned
            // f32) and registers; AVX2 and FMA are present (the caller's contract).
            asm_with_exp2!(
                // `vmaxps(x, top)`: a NaN `x` leaves `top`.
                "vmaxps {m0}, {x0}, {m0}",
                "vmaxps {m1}, {x1}, {m1}",
                "vsubps ({sh}), {x0}, {x0}",
                "vsubps ({sh}), {x1}, {x1}",
                // d = max(EXP8_FLOOR, d), NaN kept: the exp's floor and the weighted sum's
                // finite factor at once. `d <= 60` where it counts (no clamp from above).
                "vmovaps {o_floor}({c}), {v4}",
                "vmaxps {x0}, {v4}, {x0}",
                "vmaxps {x1}, {v4}, {x1}",
                // e = e^d into {t7}, {t8}.
                exp2!("x0", "x1", "t7", "t8"),
                "vaddps {t7}, {a0}, {a0}",
                "vaddps {t8}, {a1}, {a1}",
                $($extra,)*
                x0 = inout(ymm_reg) x0 => _, x1 = inout(ymm_reg) x1 => _,
                a0 = inout(ymm_reg) *a0, a1 = inout(ymm_reg) *a1,
                w0 = inout(ymm_reg) *w0, w1 = inout(ymm_reg) *w1,
                m0 = inout(ymm_reg) *m0, m1 = inout(ymm_reg) *m1,
                v4 = out(ymm_reg) _, v7 = out(ymm_reg) _, v8 = out(ymm_reg) _,
                v9 = out(ymm_reg) _, v10 = out(ymm_reg) _, t7 = out(ymm_reg) _,
                t8 = out(ymm_reg) _,
                sh = in(reg) shift,
                options(att_syntax, nostack, readonly, preserves_flags),
            )
        };
    }
    if WEIGHTED {
        run!(
            "vfmadd231ps {x0}, {t7}, {w0}",
            "vfmadd231ps {x1}, {t8}, {w1}"
        );
    } else {
        run!("/* {w0} {w1} unused */");
    }
}

/// The last `< 16` entries of a block as one vector, padded with `-inf` (it adds nothing to
/// any of these sums and never raises a max).
#[inline(always)]
fn padded<E: Elem>(tail: &[E::Raw]) -> (__m256, __m256) {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for (lane, &raw) in lanes.iter_mut().zip(tail) {
        *lane = E::get(raw);
    }
    load(&lanes)
}

/// The AVX2 form of the online normalisers' block loop (`reduce::block_sums_lanes`):
/// `(Σ e^d, Σ e^d d, max x)` over one block, `d = underflow_floor(x - shift)`.
/// Lanes where `x - shift > 88.72` (only in a block whose max exceeds `shift` by more than 60,
/// which the caller redoes against its own max) are not `exp`'s `+inf` but garbage.
///
/// # Safety
/// AVX2 and FMA must be present.
#[inline(always)]
pub(super) unsafe fn block_sums<E: Elem, const WEIGHTED: bool>(
    block: &[E::Raw],
    shift: f32,
    prefetch_next: bool,
) -> (f64, f64, f32) {
    let zero = _mm256_setzero_ps();
    let mut s = State {
        acc: [zero; 2],
        acc_w: [zero; 2],
        top: [_mm256_set1_ps(f32::NEG_INFINITY); 2],
    };
    let sh = Aligned([shift; 8]);
    let next_block = block.as_ptr_range().end;
    let chunks = block.chunks_exact(LANES);
    let tail = chunks.remainder();
    // The exception to this CPU's policy (`simd::prefetch`): this loop gains from it.
    let prefetch = Prefetch::on();
    for (k, chunk) in chunks.enumerate() {
        prefetch.ahead(chunk.as_ptr());
        if prefetch_next {
            prefetch.line(next_block.wrapping_add(k * LANES));
        }
        let (x0, x1) = load(&E::load16::<super::Avx2>(chunk));
        step::<WEIGHTED>(&mut s, x0, x1, &sh);
    }
    if !tail.is_empty() {
        if prefetch_next {
            prefetch.line(next_block.wrapping_add(block.len() / LANES * LANES));
        }
        let (x0, x1) = padded::<E>(tail);
        step::<WEIGHTED>(&mut s, x0, x1, &sh);
    }
    let top = store(s.top[0], s.top[1]);
    let block_max = top
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| if b > a { b } else { a });
    let weighted = if WEIGHTED {
        hsum(&store(s.acc_w[0], s.acc_w[1]))
    } else {
        0.0
    };
    (hsum(&store(s.acc[0], s.acc[1])), weighted, block_max)
}

/// `acc += e^x x` for one 16-lane vector `(x0, x1)`, `x` floored at `EXP8_FLOOR`: the generic
/// entropy step (`underflow_floor`, `exp16_floored`, then `fma(p, x, acc)`), lane for lane the
/// same results.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn plogp_step(acc: &mut [__m256; 2], x0: __m256, x1: __m256) {
    let [a0, a1] = acc;
    // SAFETY: reads only `CONSTS` (every offset is a field of it) and registers; AVX2 and FMA
    // are present (the caller's contract).
    asm_with_exp2!(
        // x = max(EXP8_FLOOR, x), then xc = min(EXP8_CLAMP, x), NaN kept by both (the operand
        // they return on NaN is x). Where e^x is +0 the floored x is finite: 0·x adds 0.
        "vmovaps {o_floor}({c}), {v4}",
        "vmaxps {v0}, {v4}, {v0}",
        "vmaxps {v1}, {v4}, {v1}",
        "vmovaps {o_clamp}({c}), {v4}",
        "vminps {v0}, {v4}, {v2}",
        "vminps {v1}, {v4}, {v3}",
        exp2!("v2", "v3", "v2", "v3"),
        "vfmadd231ps {v0}, {v2}, {a0}",
        "vfmadd231ps {v1}, {v3}, {a1}",
        v0 = inout(ymm_reg) x0 => _, v1 = inout(ymm_reg) x1 => _,
        v2 = out(ymm_reg) _, v3 = out(ymm_reg) _, v4 = out(ymm_reg) _,
        v7 = out(ymm_reg) _, v8 = out(ymm_reg) _, v9 = out(ymm_reg) _,
        v10 = out(ymm_reg) _,
        a0 = inout(ymm_reg) *a0, a1 = inout(ymm_reg) *a1,
        o_clamp = const offset_of!(Consts, exp_clamp),
        options(att_syntax, nostack, readonly, preserves_flags),
    );
}

/// The AVX2 form of `entropy::plogp_sum_lanes`: `Σ e^x x` over one block (`x` floored).
///
/// # Safety
/// AVX2 and FMA must be present.
#[inline(always)]
pub(super) unsafe fn plogp_sum<E: Elem>(block: &[E::Raw]) -> f64 {
    let mut acc = [_mm256_setzero_ps(); 2];
    let chunks = block.chunks_exact(LANES);
    let tail = chunks.remainder();
    let prefetch = Prefetch::current();
    for chunk in chunks {
        prefetch.ahead(chunk.as_ptr());
        let (x0, x1) = load(&E::load16::<super::Avx2>(chunk));
        plogp_step(&mut acc, x0, x1);
    }
    if !tail.is_empty() {
        let (x0, x1) = padded::<E>(tail);
        plogp_step(&mut acc, x0, x1);
    }
    hsum(&store(acc[0], acc[1]))
}

#[cfg(test)]
mod tests {
    use super::super::avx2::{ordinary_block, plant, SPECIAL_VALUES};
    use super::super::{Avx2, IsaKind};
    use crate::elem::{Bf16, Elem, F32};
    use crate::reduce::block_sums_lanes;

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// `block` against the generic loop, for `shift`s the online normalisers keep (the block's
    /// max at most 60 above it) and both sums.
    fn check<E: Elem>(block: &[E::Raw], shifts: &[f32]) {
        for &shift in shifts {
            // SAFETY: AVX2 and FMA are present (checked by the caller).
            let hand = unsafe { super::block_sums::<E, true>(block, shift, true) };
            let generic = block_sums_lanes::<Avx2, E, true>(block, shift, true);
            assert!(
                same(hand.0, generic.0),
                "sum, shift {shift}: {hand:?} vs {generic:?}"
            );
            assert!(
                same(hand.1, generic.1),
                "weighted, shift {shift}: {hand:?} vs {generic:?}"
            );
            assert_eq!(hand.2.to_bits(), generic.2.to_bits(), "max, shift {shift}");
            // SAFETY: as above.
            let hand = unsafe { super::block_sums::<E, false>(block, shift, false) };
            let generic = block_sums_lanes::<Avx2, E, false>(block, shift, false);
            assert!(same(hand.0, generic.0) && hand.2.to_bits() == generic.2.to_bits());
        }
    }

    /// The hand-written block loop gives the generic one's bits: ordinary, masked (`-inf`), NaN,
    /// huge, tiny and subnormal entries, the `exp` range's edges, a padded tail.
    #[test]
    fn block_sums_is_bit_identical_to_the_lane_form() {
        if !IsaKind::available().contains(&IsaKind::Avx2) {
            return;
        }
        // Finite values only: a block max of +inf is its own case (the last one below).
        let special: Vec<f32> = SPECIAL_VALUES
            .into_iter()
            .filter(|v| v.is_finite() || *v < 0.0)
            .collect();
        for len in [1024usize, 1000, 37, 5] {
            let mut block = ordinary_block(len, 1.5);
            check::<F32>(&block, &[1.5, 7.0, -50.0, 0.0]);
            plant(&mut block, &special);
            let top = block.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            check::<F32>(&block, &[top, top + 3.0, top - 59.0]);
            let bf16: Vec<u16> = block.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
            check::<Bf16>(&bf16, &[top, top - 30.0]);
            block[len / 2] = f32::NAN;
            check::<F32>(&block, &[top, top - 20.0]);
            block[len / 2] = -f32::NAN; // x86's default NaN is negative
            check::<F32>(&block, &[top, top - 20.0]);
            let masked = vec![f32::NEG_INFINITY; len];
            check::<F32>(&masked, &[0.0]);
            let mut inf = block.clone();
            inf[len - 1] = f32::INFINITY;
            check::<F32>(&inf, &[f32::INFINITY]);
        }
    }
}

#[cfg(test)]
mod plogp_tests {
    use super::super::avx2::{ordinary_block, plant, SPECIAL_VALUES};
    use super::super::{Avx2, IsaKind};
    use crate::elem::{Bf16, Elem, F16, F32};
    use crate::entropy::plogp_sum_lanes;

    fn check<E: Elem>(block: &[E::Raw]) {
        // SAFETY: AVX2 and FMA are present (checked by the caller).
        let hand = unsafe { super::plogp_sum::<E>(block) };
        let generic = plogp_sum_lanes::<Avx2, E>(block);
        assert!(
            hand.to_bits() == generic.to_bits() || (hand.is_nan() && generic.is_nan()),
            "{hand} vs {generic}"
        );
    }

    /// The hand-written entropy block gives the generic one's bits: ordinary, masked, NaN,
    /// huge, tiny, subnormal and positive entries, the `exp` range's edges, padded tails.
    #[test]
    fn plogp_sum_is_bit_identical_to_the_lane_form() {
        if !IsaKind::available().contains(&IsaKind::Avx2) {
            return;
        }
        let special = SPECIAL_VALUES;
        for len in [1024usize, 1000, 37, 5] {
            let mut block = ordinary_block(len, 0.0);
            check::<F32>(&block);
            plant(&mut block, &special);
            check::<F32>(&block);
            let bf16: Vec<u16> = block.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
            check::<Bf16>(&bf16);
            let f16: Vec<u16> = (0..len)
                .map(|i| (0xbc00 + (i * 37) % 0x3ff) as u16)
                .collect();
            check::<F16>(&f16);
            block[len / 3] = f32::NAN;
            check::<F32>(&block);
            block[len / 3] = -f32::NAN;
            check::<F32>(&block);
        }
        // Entry by entry: each special value alone among ordinary ones.
        for &v in &special {
            let mut block = vec![-2.5f32; 40];
            block[17] = v;
            check::<F32>(&block);
        }
    }
}
