//! The AVX-512 copy's [`Isa`] marker (moved out of `mod.rs`, unchanged).

#[cfg(target_arch = "x86")]
use std::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::{Isa, LANES};

/// AVX-512 F/BW/VL + FMA + F16C, same contract as [`super::Avx2`].
#[derive(Clone, Copy)]
pub struct Avx512;

impl Isa for Avx512 {
    const FUSED: bool = true;
    const VECTOR_REGISTERS: usize = 32;

    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }

    #[inline(always)]
    fn f16x16(src: &[u16]) -> [f32; LANES] {
        let src = &src[..LANES];
        let mut out = [0.0f32; LANES];
        // SAFETY: as for `Avx2`, with AVX-512F detected at run time.
        unsafe {
            let h = _mm256_loadu_si256(src.as_ptr() as *const __m256i);
            _mm512_storeu_ps(out.as_mut_ptr(), _mm512_cvtph_ps(h));
        }
        out
    }

    #[inline(always)]
    fn add16(a: [f32; LANES], b: [f32; LANES]) -> [f32; LANES] {
        let mut out = [0.0f32; LANES];
        // SAFETY: 16 f32 in and out, unaligned; AVX-512F detected at run time.
        unsafe {
            let s = _mm512_add_ps(_mm512_loadu_ps(a.as_ptr()), _mm512_loadu_ps(b.as_ptr()));
            _mm512_storeu_ps(out.as_mut_ptr(), s);
        }
        out
    }

    #[inline(always)]
    fn fma16(a: [f32; LANES], b: [f32; LANES], c: [f32; LANES]) -> [f32; LANES] {
        let mut out = [0.0f32; LANES];
        // SAFETY: as in `add16`.
        unsafe {
            let (a, b) = (_mm512_loadu_ps(a.as_ptr()), _mm512_loadu_ps(b.as_ptr()));
            let s = _mm512_fmadd_ps(a, b, _mm512_loadu_ps(c.as_ptr()));
            _mm512_storeu_ps(out.as_mut_ptr(), s);
        }
        out
    }

    #[inline(always)]
    fn max16(x: [f32; LANES], top: [f32; LANES]) -> [f32; LANES] {
        let mut out = [0.0f32; LANES];
        // SAFETY: as in `add16`. `vmaxps(x, top)` is `x > top ? x : top` lane by lane,
        // NaN in `x` included.
        unsafe {
            let m = _mm512_max_ps(_mm512_loadu_ps(x.as_ptr()), _mm512_loadu_ps(top.as_ptr()));
            _mm512_storeu_ps(out.as_mut_ptr(), m);
        }
        out
    }

    #[inline(always)]
    fn store16_stream(dst: &mut [f32], v: [f32; LANES]) {
        let dst = &mut dst[..LANES];
        debug_assert_eq!(dst.as_ptr() as usize % 64, 0);
        // SAFETY: 16 f32 in bounds (sliced above); the caller starts `dst` on a 64-byte
        // boundary (checked in debug builds), as `vmovntps` requires; AVX-512F detected.
        unsafe { _mm512_stream_ps(dst.as_mut_ptr(), _mm512_loadu_ps(v.as_ptr())) }
    }

    #[inline(always)]
    fn store_fence() {
        // SAFETY: `sfence` has no operands and no preconditions.
        unsafe { _mm_sfence() }
    }

    /// Same reduction and polynomial as [`super::math::exp`]; `vrndscaleps` rounds, `vscalefps`
    /// multiplies by `2^n` (overflow to `+inf` built in) and its zero-mask gives the exact
    /// 0 below `EXP_MIN`: 11 instructions per 16 lanes instead of about 22.
    #[inline(always)]
    fn exp16(x: [f32; LANES]) -> [f32; LANES] {
        use super::math::{EXP_C1, EXP_C2, EXP_C3, EXP_C4, EXP_C5, EXP_MIN, LOG2_E, ROUND_MAGIC};
        let mut out = [0.0f32; LANES];
        // SAFETY: 16 f32 in and out, unaligned; AVX-512F detected at run time (see `f16x16`).
        unsafe {
            let x = _mm512_loadu_ps(x.as_ptr());
            // True except where x < EXP_MIN (NaN compares "not less": it stays NaN). Those
            // lanes are zeroed at the end, so their arithmetic (NaN for -inf) never shows.
            let keep = _mm512_cmp_ps_mask::<_CMP_NLT_UQ>(x, _mm512_set1_ps(EXP_MIN));
            // min returns its second operand when one is NaN: NaN passes through. The
            // clamp only keeps `n` finite; 89 still overflows to +inf in `vscalefps`.
            let xc = _mm512_min_ps(_mm512_set1_ps(89.0), x);
            // n = round(x log2 e) by the 1.5 * 2^23 trick, as in `math::exp` (two
            // instructions on either vector port, where `vrndscaleps` needs port 0 twice).
            let magic = _mm512_set1_ps(ROUND_MAGIC);
            let n = _mm512_sub_ps(_mm512_fmadd_ps(xc, _mm512_set1_ps(LOG2_E), magic), magic);
            // One fused step, as `math::reduce` does for fused units.
            let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-std::f32::consts::LN_2), xc);
            let mut p = _mm512_set1_ps(EXP_C5);
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C4));
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C3));
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C2));
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(EXP_C1));
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0));
            _mm512_storeu_ps(out.as_mut_ptr(), _mm512_maskz_scalef_ps(keep, p, n));
        }
        out
    }

    #[inline(always)]
    fn bf16x16(src: &[u16]) -> [f32; LANES] {
        let src = &src[..LANES];
        let mut out = [0.0f32; LANES];
        // SAFETY: as in `f16x16`, with AVX-512F/BW detected at run time.
        unsafe {
            let h = _mm256_loadu_si256(src.as_ptr() as *const __m256i);
            let w = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
            _mm512_storeu_si512(out.as_mut_ptr() as *mut __m512i, w);
        }
        out
    }
}
