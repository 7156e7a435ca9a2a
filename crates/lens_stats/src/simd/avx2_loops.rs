//! Hand-written AVX2 + FMA forms of whole hot block loops (the [`super::Isa`] methods that take
//! a block rather than one 16-lane vector).
//!
//! The online normalisers' block loop was bound by how the compiler scheduled it, not by the
//! arithmetic: through the per-vector methods it kept loop-carried state (the block max, the
//! shift, the opaque constant pointers of `exp16_spilled`) in stack slots, and every constant
//! was a separate load for each 8-lane half (some 30 loads per 16 lanes, at two a cycle);
//! written with intrinsics it loaded all constants up front and spilled the accumulators
//! instead. So the per-vector step is an `asm!` block: both halves in lock step, all state in
//! registers. Constants the instructions can take as memory operands are (a folded load takes
//! no register; the loop is bound by the vector registers in flight across its ~50-cycle
//! chains more than by loads: ~10% faster than loading each once into a register for both
//! halves); the others are loaded once for both.
//!
//! Every function here is `unsafe`: it may only run on a CPU with AVX2 and FMA (see `avx2.rs`).

#[cfg(target_arch = "x86")]
use std::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::mem::offset_of;

use super::avx2::{load, store, Consts, CONSTS};
use super::math::hsum;
use super::{prefetch_ahead, prefetch_l2, LANES};
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

/// The `exp` part of [`step`] (AT&T syntax). In: `{x0}`, `{x1}` = `d = x - shift`. Out: `{t7}`,
/// `{t8}` = `e^d`; `{x0}`, `{x1}` keep `d`. The operations of `avx2::exp8` on each half, bit for
/// bit wherever `d <= EXP_CLAMP` or NaN, with two fewer per half:
/// * no clamp from above (`min(EXP_CLAMP, d)`): the caller only keeps blocks where `d <= 60`;
/// * the rounding sum adds `ROUND_MAGIC + 127`, so that its low bits are the biased exponent of
///   `2^n` (no integer add of the bias). `n` is the same: `d log2 e + ROUND_MAGIC` is never a
///   tie (`LOG2_E`'s mantissa is odd, so `d log2 e` is never an odd multiple of 1/2 below 2^8).
macro_rules! exp_lines {
    () => {
        concat!(
            "vmovaps {o_magic}({c}), {t3}\n",
            "vmovaps {x0}, {t4}\n",
            "vmovaps {x1}, {t2}\n",
            "vfmadd132ps {o_log2e}({c}), {t3}, {t4}\n",
            "vfmadd132ps {o_log2e}({c}), {t3}, {t2}\n",
            "vsubps {t3}, {t4}, {t5}\n",
            "vsubps {t3}, {t2}, {t6}\n",
            "vfmadd132ps {o_nl2}({c}), {x0}, {t5}\n",
            "vfmadd132ps {o_nl2}({c}), {x1}, {t6}\n",
            "vmovaps {o_p}({c}), {t7}\n",
            "vmovaps {t7}, {t8}\n",
            "vfmadd213ps {o_p}+32({c}), {t5}, {t7}\n",
            "vfmadd213ps {o_p}+32({c}), {t6}, {t8}\n",
            "vfmadd213ps {o_p}+64({c}), {t5}, {t7}\n",
            "vfmadd213ps {o_p}+64({c}), {t6}, {t8}\n",
            "vfmadd213ps {o_p}+96({c}), {t5}, {t7}\n",
            "vfmadd213ps {o_p}+96({c}), {t6}, {t8}\n",
            "vfmadd213ps {o_p}+128({c}), {t5}, {t7}\n",
            "vfmadd213ps {o_p}+128({c}), {t6}, {t8}\n",
            "vfmadd213ps {o_p}+160({c}), {t5}, {t7}\n",
            "vfmadd213ps {o_p}+160({c}), {t6}, {t8}\n",
            // 2^n from the exponent bits, times the polynomial.
            "vpslld $23, {t4}, {t4}\n",
            "vpslld $23, {t2}, {t2}\n",
            "vmulps {t4}, {t7}, {t7}\n",
            "vmulps {t2}, {t8}, {t8}\n",
            // Zero where d < EXP_MIN (NaN compares "not less" and is kept), as in `exp8`.
            "vcmpnlt_uqps {o_min}({c}), {x0}, {t4}\n",
            "vcmpnlt_uqps {o_min}({c}), {x1}, {t2}\n",
            "vandps {t4}, {t7}, {t7}\n",
            "vandps {t2}, {t8}, {t8}\n",
        )
    };
}

/// One 16-lane vector `(x0, x1)` of the online normalisers' block loop: the generic step's
/// `max16(x, top)`, `d = x - shift`, `e = exp16_spilled(d)`, `acc = add16(acc, e)` and (if
/// `WEIGHTED`) `acc_w = fma16(e, finite_floor(d), acc_w)`, lane for lane the same operations.
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
            std::arch::asm!(
                // `vmaxps(x, top)`: a NaN `x` leaves `top`.
                "vmaxps {m0}, {x0}, {m0}",
                "vmaxps {m1}, {x1}, {m1}",
                "vsubps ({sh}), {x0}, {x0}",
                "vsubps ({sh}), {x1}, {x1}",
                exp_lines!(),
                "vaddps {t7}, {a0}, {a0}",
                "vaddps {t8}, {a1}, {a1}",
                $($extra,)*
                x0 = inout(ymm_reg) x0 => _, x1 = inout(ymm_reg) x1 => _,
                a0 = inout(ymm_reg) *a0, a1 = inout(ymm_reg) *a1,
                w0 = inout(ymm_reg) *w0, w1 = inout(ymm_reg) *w1,
                m0 = inout(ymm_reg) *m0, m1 = inout(ymm_reg) *m1,
                t2 = out(ymm_reg) _, t3 = out(ymm_reg) _, t4 = out(ymm_reg) _,
                t5 = out(ymm_reg) _, t6 = out(ymm_reg) _, t7 = out(ymm_reg) _,
                t8 = out(ymm_reg) _,
                c = in(reg) &CONSTS, sh = in(reg) shift,
                o_log2e = const offset_of!(Consts, log2_e),
                o_magic = const offset_of!(Consts, magic_biased),
                o_nl2 = const offset_of!(Consts, neg_ln2),
                o_p = const offset_of!(Consts, exp_c),
                o_min = const offset_of!(Consts, exp_min),
                o_negmax = const offset_of!(Consts, neg_max),
                options(att_syntax, nostack, readonly, preserves_flags),
            )
        };
    }
    if WEIGHTED {
        // finite_floor: `max(-MAX, d)` returns d when d is NaN (the second operand).
        run!(
            "vmovaps {o_negmax}({c}), {t3}",
            "vmaxps {x0}, {t3}, {x0}",
            "vmaxps {x1}, {t3}, {x1}",
            "vfmadd231ps {x0}, {t7}, {w0}",
            "vfmadd231ps {x1}, {t8}, {w1}"
        );
    } else {
        run!("/* {w0} {w1} {o_negmax} unused */");
    }
}

/// The AVX2 form of the online normalisers' block loop (`reduce::block_sums_lanes`):
/// `(Σ exp(x - shift), Σ exp(x - shift)·finite_floor(x - shift), max x)` over one block.
/// Lanes where `x - shift > 88.5` (only in a block whose max exceeds `shift` by more than 60,
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
    for (k, chunk) in chunks.enumerate() {
        prefetch_ahead(chunk.as_ptr());
        if prefetch_next {
            prefetch_l2(next_block.wrapping_add(k * LANES));
        }
        let (x0, x1) = load(&E::load16::<super::Avx2>(chunk));
        step::<WEIGHTED>(&mut s, x0, x1, &sh);
    }
    if !tail.is_empty() {
        if prefetch_next {
            prefetch_l2(next_block.wrapping_add(block.len() / LANES * LANES));
        }
        let mut padded = [f32::NEG_INFINITY; LANES];
        for (p, &raw) in padded.iter_mut().zip(tail) {
            *p = E::get(raw);
        }
        let (x0, x1) = load(&padded);
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
            let masked = vec![f32::NEG_INFINITY; len];
            check::<F32>(&masked, &[0.0]);
            let mut inf = block.clone();
            inf[len - 1] = f32::INFINITY;
            check::<F32>(&inf, &[f32::INFINITY]);
        }
    }
}
