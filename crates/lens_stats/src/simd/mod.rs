//! Runtime SIMD dispatch.
//!
//! Hot loops are written once, generically over an [`Isa`] marker, on `[f32; LANES]` lane arrays,
//! and marked `#[inline(always)]`. [`run_block`] instantiates them inside a
//! `#[target_feature(enable = ...)]` frame for AVX-512 or AVX2+FMA+F16C, chosen at run time with
//! `is_x86_feature_detected!`, so the compiler vectorises the same code for the widest unit the
//! CPU has; a portable copy (whatever the build target allows, SSE2 on a default x86-64 build)
//! is the fallback. On AArch64 a NEON copy (`neon.rs`, always present there) runs instead.
//! Every path computes the same lanes in the same order; results differ only by the rounding
//! of fused multiply-adds.

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod avx2;
// The `asm!` forms use up to 16 vector registers: x86-64 only (32-bit x86 has 8).
#[cfg(target_arch = "x86_64")]
mod avx2_js;
#[cfg(target_arch = "x86_64")]
mod avx2_loops;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod avx512;
pub mod math;
#[cfg(target_arch = "aarch64")]
mod neon;
pub mod prefetch;
pub mod select;

use std::sync::OnceLock;

use crate::elem::Elem;

/// Width of every lane array. 16 f32 = one AVX-512 register, two AVX2 registers.
pub const LANES: usize = 16;

/// An instruction-set marker: what differs between the compiled copies of the hot loops.
pub trait Isa: Copy + Send + Sync + 'static {
    /// Whether [`Isa::fma`] rounds once (a hardware fused multiply-add).
    const FUSED: bool;
    /// Vector registers the copy has (16 on x86-64 without AVX-512, 32 with it and on
    /// AArch64): loops whose live state does not fit in 16 are arranged differently there.
    const VECTOR_REGISTERS: usize = 16;
    /// `a * b + c`, fused where the unit has FMA (a plain `mul_add` without the `fma` target
    /// feature would be a library call).
    fn fma(a: f32, b: f32, c: f32) -> f32;
    /// Convert 16 IEEE half floats (raw bits) to f32. `src.len() >= 16`.
    fn f16x16(src: &[u16]) -> [f32; LANES];
    /// Convert 16 bfloat16 values (raw bits) to f32. `src.len() >= 16`.
    fn bf16x16(src: &[u16]) -> [f32; LANES];
    /// `a + b` on 16 lanes.
    #[inline(always)]
    fn add16(a: [f32; LANES], b: [f32; LANES]) -> [f32; LANES] {
        let mut out = a;
        for j in 0..LANES {
            out[j] += b[j];
        }
        out
    }
    /// `a * b + c` on 16 lanes.
    #[inline(always)]
    fn fma16(a: [f32; LANES], b: [f32; LANES], c: [f32; LANES]) -> [f32; LANES] {
        let mut out = c;
        for j in 0..LANES {
            out[j] = Self::fma(a[j], b[j], c[j]);
        }
        out
    }
    /// `if x > top { x } else { top }` on 16 lanes (a NaN `x` leaves `top`).
    #[inline(always)]
    fn max16(x: [f32; LANES], top: [f32; LANES]) -> [f32; LANES] {
        let mut out = top;
        for j in 0..LANES {
            out[j] = if x[j] > top[j] { x[j] } else { top[j] };
        }
        out
    }
    /// Store 16 lanes to `dst[..16]`; where the unit allows, as a non-temporal (streaming)
    /// store that skips reading the destination line first. `dst` must start 64-byte aligned
    /// for the streaming form; call [`Isa::store_fence`] before the data is handed over.
    #[inline(always)]
    fn store16_stream(dst: &mut [f32], v: [f32; LANES]) {
        dst[..LANES].copy_from_slice(&v);
    }
    /// Order earlier streaming stores before later stores (a no-op without them).
    #[inline(always)]
    fn store_fence() {}
    /// [`Isa::exp16`] for results where a probability under 1.2e-38 counts as nothing: sums of
    /// `e^x`, `|e^x - e^y|` or `e^x x` with `x` floored by `math::underflow_floor` (entropy,
    /// the online normalisers, JS, total variation, max |p - q|, top-k by |Δp|, marginal sums;
    /// not KL, whose `p (lp - lq)` is unbounded where `q = 0`). The same results from `EXP_MIN`
    /// up and exactly `+0` from `EXP8_FLOOR` down; in between at most `e^x` instead of 0. The
    /// AVX2 copy floors instead of masking ([`math::exp_table_floored`], one vector operation
    /// fewer); the others mask as `exp16`.
    #[inline(always)]
    fn exp16_floored(x: [f32; LANES]) -> [f32; LANES] {
        Self::exp16(x)
    }
    /// The Jensen–Shannon terms of 16 pairs of log-probabilities ([`math::js16_lanes`]; the AVX2
    /// copy takes the log by Estrin's scheme: the last bit may differ).
    #[inline(always)]
    fn js16(lp: [f32; LANES], lq: [f32; LANES]) -> [f32; LANES] {
        math::js16_lanes::<Self>(lp, lq)
    }
    /// [`math::exp`] on 16 lanes (same special values, same polynomial).
    #[inline(always)]
    fn exp16(x: [f32; LANES]) -> [f32; LANES] {
        math::exp16_lanes::<Self>(x)
    }
    /// One block of the online softmax normalisers (`reduce::block_sums_lanes`);
    /// hand-written for AVX2, where the generic loop kept its state in memory.
    #[inline(always)]
    fn block_sums<E: Elem, const WEIGHTED: bool>(
        block: &[E::Raw],
        shift: f32,
        prefetch_next: bool,
    ) -> (f64, f64, f32) {
        crate::reduce::block_sums_lanes::<Self, E, WEIGHTED>(block, shift, prefetch_next)
    }
    /// One block of the entropy (`entropy::plogp_sum_lanes`); hand-written for AVX2.
    #[inline(always)]
    fn plogp_sum<E: Elem>(block: &[E::Raw]) -> f64 {
        crate::entropy::plogp_sum_lanes::<Self, E>(block)
    }
}

/// Portable code: whatever the compilation target allows.
#[derive(Clone, Copy)]
pub struct Portable;

impl Isa for Portable {
    const FUSED: bool = false;

    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }

    #[inline(always)]
    fn f16x16(src: &[u16]) -> [f32; LANES] {
        let mut out = [0.0; LANES];
        for (o, &h) in out.iter_mut().zip(&src[..LANES]) {
            *o = f16_to_f32(h);
        }
        out
    }

    #[inline(always)]
    fn bf16x16(src: &[u16]) -> [f32; LANES] {
        let mut out = [0.0; LANES];
        for (o, &h) in out.iter_mut().zip(&src[..LANES]) {
            *o = bf16_to_f32(h);
        }
        out
    }
}

/// IEEE half (raw bits) to f32, branch-free so that it vectorises: shift the exponent and
/// mantissa into place, rescale by 2^112 (also turns half subnormals into the right f32), and
/// patch infinities and NaNs.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let magnitude = h & 0x7fff;
    let scaled = f32::from_bits(magnitude << 13) * f32::from_bits(0x7780_0000);
    let bits = if magnitude >= 0x7c00 {
        (magnitude << 13) | 0x7f80_0000
    } else {
        scaled.to_bits()
    };
    f32::from_bits(bits | sign)
}

/// bfloat16 (raw bits) to f32: the top half of an f32.
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
mod x86 {
    use super::{Elem, Isa, LANES};
    #[cfg(target_arch = "x86")]
    use std::arch::x86::*;
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;

    /// AVX2 + FMA + F16C. Only instantiated inside `#[target_feature]` frames entered after
    /// run-time detection (see `run_block`).
    #[derive(Clone, Copy)]
    pub struct Avx2;

    impl Isa for Avx2 {
        const FUSED: bool = true;

        #[inline(always)]
        fn fma(a: f32, b: f32, c: f32) -> f32 {
            a.mul_add(b, c)
        }

        #[inline(always)]
        fn f16x16(src: &[u16]) -> [f32; LANES] {
            let src = &src[..LANES];
            let mut out = [0.0f32; LANES];
            // SAFETY: `src` holds 16 u16 (checked by the slice above), `out` 16 f32; unaligned
            // loads/stores are used; F16C/AVX are present because this type is only used inside
            // frames entered after `is_x86_feature_detected!`.
            unsafe {
                let lo = _mm_loadu_si128(src.as_ptr() as *const __m128i);
                let hi = _mm_loadu_si128(src.as_ptr().add(8) as *const __m128i);
                _mm256_storeu_ps(out.as_mut_ptr(), _mm256_cvtph_ps(lo));
                _mm256_storeu_ps(out.as_mut_ptr().add(8), _mm256_cvtph_ps(hi));
            }
            out
        }

        #[inline(always)]
        fn bf16x16(src: &[u16]) -> [f32; LANES] {
            let src = &src[..LANES];
            let mut out = [0.0f32; LANES];
            // SAFETY: as in `f16x16`: 16 u16 in, 16 f32 out, unaligned; AVX2 detected at run time.
            unsafe {
                let lo = _mm_loadu_si128(src.as_ptr() as *const __m128i);
                let hi = _mm_loadu_si128(src.as_ptr().add(8) as *const __m128i);
                let lo = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(lo));
                let hi = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(hi));
                _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, lo);
                _mm256_storeu_si256(out.as_mut_ptr().add(8) as *mut __m256i, hi);
            }
            out
        }

        // Hand-written (see `super::avx2`); the generic lane loops vectorised unevenly.
        // SAFETY (all below): AVX2 + FMA detected at run time, as for `f16x16`.
        #[inline(always)]
        fn exp16(x: [f32; LANES]) -> [f32; LANES] {
            unsafe { super::avx2::exp16(x) }
        }

        #[inline(always)]
        fn exp16_floored(x: [f32; LANES]) -> [f32; LANES] {
            unsafe { super::avx2::exp16_floored(x) }
        }

        #[inline(always)]
        fn js16(lp: [f32; LANES], lq: [f32; LANES]) -> [f32; LANES] {
            #[cfg(target_arch = "x86_64")]
            return unsafe { super::avx2_js::js16(lp, lq) };
            // The definition of the `asm!` form (the same bits).
            #[cfg(not(target_arch = "x86_64"))]
            super::math::js16_lanes_with::<Self, true>(lp, lq)
        }

        #[cfg(target_arch = "x86_64")]
        #[inline(always)]
        fn block_sums<E: Elem, const WEIGHTED: bool>(
            block: &[E::Raw],
            shift: f32,
            prefetch_next: bool,
        ) -> (f64, f64, f32) {
            unsafe { super::avx2_loops::block_sums::<E, WEIGHTED>(block, shift, prefetch_next) }
        }

        #[cfg(target_arch = "x86_64")]
        #[inline(always)]
        fn plogp_sum<E: Elem>(block: &[E::Raw]) -> f64 {
            unsafe { super::avx2_loops::plogp_sum::<E>(block) }
        }

        #[inline(always)]
        fn add16(a: [f32; LANES], b: [f32; LANES]) -> [f32; LANES] {
            unsafe { super::avx2::add16(a, b) }
        }

        #[inline(always)]
        fn fma16(a: [f32; LANES], b: [f32; LANES], c: [f32; LANES]) -> [f32; LANES] {
            unsafe { super::avx2::fma16(a, b, c) }
        }

        #[inline(always)]
        fn max16(x: [f32; LANES], top: [f32; LANES]) -> [f32; LANES] {
            unsafe { super::avx2::max16(x, top) }
        }

        #[inline(always)]
        fn store16_stream(dst: &mut [f32], v: [f32; LANES]) {
            let dst = &mut dst[..LANES];
            debug_assert_eq!(dst.as_ptr() as usize % 64, 0);
            // The caller starts `dst` on a 64-byte boundary, as `vmovntps` requires.
            unsafe { super::avx2::store16_stream(dst, v) }
        }

        #[inline(always)]
        fn store_fence() {
            // SAFETY: `sfence` has no operands and no preconditions.
            unsafe { _mm_sfence() }
        }
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub use avx512::Avx512;
#[cfg(target_arch = "aarch64")]
pub use neon::Neon;
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
pub use x86::Avx2;

/// Which compiled copy of the hot loops runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsaKind {
    Portable,
    Avx2,
    Avx512,
    /// AArch64 Advanced SIMD (every AArch64 CPU has it).
    Neon,
}

impl IsaKind {
    /// The copy calls run (decided once): the best this CPU supports, or a lower one named by
    /// the env var `TUNED_LENS_SIMD` (see [`select`]).
    pub fn detect() -> Self {
        static CHOSEN: OnceLock<IsaKind> = OnceLock::new();
        *CHOSEN.get_or_init(|| select::from_env(&Self::available()))
    }

    /// Every copy this CPU can run, worst first (tests compare them on the same data).
    pub fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut kinds = vec![Self::Portable];
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                kinds.push(Self::Avx2);
                if is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                {
                    kinds.push(Self::Avx512);
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        kinds.push(Self::Neon);
        kinds
    }
}

/// A per-row computation with its own inputs; `row` fills the outputs of row `index`.
pub(crate) trait RowOp: Sync {
    type Out: Send;
    fn row<I: Isa>(&self, index: usize, out: &mut [Self::Out]);
}

/// Run `op` for rows `first..` whose outputs are the `per_row`-long chunks of `out` (the last
/// chunk may be shorter), in the compiled copy `isa`. `isa` must come from
/// [`IsaKind::available`].
pub(crate) fn run_block<K: RowOp>(
    isa: IsaKind,
    op: &K,
    first: usize,
    out: &mut [K::Out],
    per_row: usize,
) {
    match isa {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        // SAFETY: `IsaKind::Avx512` only exists in `available()` when the CPU has these features.
        IsaKind::Avx512 => unsafe { block_avx512(op, first, out, per_row) },
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        // SAFETY: as above for AVX2 + FMA + F16C.
        IsaKind::Avx2 => unsafe { block_avx2(op, first, out, per_row) },
        #[cfg(target_arch = "aarch64")]
        // No frame needed: NEON is part of every AArch64 target's baseline.
        IsaKind::Neon => block_generic::<Neon, K>(op, first, out, per_row),
        _ => block_generic::<Portable, K>(op, first, out, per_row),
    }
}

#[inline(always)]
fn block_generic<I: Isa, K: RowOp>(op: &K, first: usize, out: &mut [K::Out], per_row: usize) {
    for (i, chunk) in out.chunks_mut(per_row.max(1)).enumerate() {
        op.row::<I>(first + i, chunk);
    }
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma,f16c")]
unsafe fn block_avx512<K: RowOp>(op: &K, first: usize, out: &mut [K::Out], per_row: usize) {
    block_generic::<Avx512, K>(op, first, out, per_row)
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block_avx2<K: RowOp>(op: &K, first: usize, out: &mut [K::Out], per_row: usize) {
    block_generic::<Avx2, K>(op, first, out, per_row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn half_conversion_matches_known_values() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 5.960_464_5e-8); // smallest subnormal
        assert_eq!(f16_to_f32(0x7c00), f32::INFINITY);
        assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
    }

    /// Every compiled `exp16` (the AVX-512 one is hand-written) against f64, with its special
    /// values. Called outside a `target_feature` frame: slower, same results.
    #[test]
    fn exp16_of_every_isa_is_accurate() {
        fn check<I: Isa>(name: &str) {
            let mut x = -87.3f32;
            while x < 88.3 {
                let lanes: [f32; LANES] = std::array::from_fn(|j| x + j as f32 * 0.0007);
                let got = I::exp16(lanes);
                for j in 0..LANES {
                    let want = (lanes[j] as f64).exp();
                    let rel = ((got[j] as f64 - want) / want).abs();
                    assert!(
                        rel < 5e-7,
                        "{name}: exp({}) = {}, want {want}",
                        lanes[j],
                        got[j]
                    );
                }
                x += 0.0131;
            }
            let special = I::exp16(std::array::from_fn(|j| match j {
                0 => f32::NEG_INFINITY,
                1 => -87.5,
                2 => -1e30,
                3 => 0.0,
                4 => 100.0,
                5 => f32::INFINITY,
                6 => f32::NAN,
                _ => -1.0,
            }));
            assert_eq!(&special[..4], &[0.0, 0.0, 0.0, 1.0], "{name}");
            assert_eq!(special[4], f32::INFINITY, "{name}");
            assert_eq!(special[5], f32::INFINITY, "{name}");
            assert!(special[6].is_nan(), "{name}");
        }
        for kind in IsaKind::available() {
            match kind {
                IsaKind::Portable => check::<Portable>("portable"),
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                IsaKind::Avx2 => check::<Avx2>("avx2"),
                #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
                IsaKind::Avx512 => check::<Avx512>("avx512"),
                #[cfg(target_arch = "aarch64")]
                IsaKind::Neon => check::<Neon>("neon"),
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
    }
}
