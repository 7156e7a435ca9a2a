//! The AArch64 copy: NEON (Advanced SIMD) forms of the [`Isa`] lane operations, each 16-lane
//! array as four 4-lane registers.
//!
//! NEON and its fused multiply-add are part of every AArch64 CPU (the `aarch64-*` targets enable
//! `neon` by default), so this copy needs no run-time detection and no `#[target_feature]`
//! frame: `run_block` calls it directly. It replaces what the portable copy lacks there: one
//! rounding per multiply-add (`fmla`), a `2^n` from the bits of the rounding sum, and selects in
//! place of branches.
//!
//! * `exp16`: the reduction, polynomial and special values of [`super::math::exp`] with
//!   [`Isa::FUSED`] set, bit for bit (tested below against the generic lane loop): `x < EXP_MIN`
//!   (and `-inf`) gives exactly 0, `x > EXP_MAX` gives `+inf`, NaN stays NaN. Between the two
//!   the clamped `n` lies in `[-126, 127]`, so `2^n` built by adding `n << 23` to the exponent
//!   of 1 is always a normal float: no overflow or underflow happens inside the arithmetic, the
//!   two selects decide the ends.
//! * `f16x16`: the branch-free integer conversion of [`super::f16_to_f32`] on 4 lanes
//!   (`vcvt_f32_f16` would need the `f16` type, still unstable in Rust; this form is exact,
//!   subnormals, infinities and NaN included, and costs 6 instructions per 4 lanes).
//! * `bf16x16`: a widening shift by 16 (`ushll`).
//! * `max16`: a compare and a bit select, not `fmax` (which returns NaN for a NaN `x`; the
//!   contract is that a NaN `x` leaves `top`).
//!
//! There is no streaming store: the default (plain) store and an empty fence are kept.

use std::arch::aarch64::*;

use super::math::{EXP_C1, EXP_C2, EXP_C3, EXP_C4, EXP_C5, EXP_MAX, EXP_MIN, LOG2_E, ROUND_MAGIC};
use super::{Isa, LANES};

/// NEON (always present on AArch64).
#[derive(Clone, Copy)]
pub struct Neon;

/// Four 4-lane registers: one lane array.
type Quad = [float32x4_t; 4];

#[inline(always)]
fn load(a: &[f32; LANES]) -> Quad {
    // SAFETY: `a` holds 16 f32; each load reads 4 of them, unaligned loads are allowed.
    unsafe { std::array::from_fn(|k| vld1q_f32(a.as_ptr().add(4 * k))) }
}

#[inline(always)]
fn store(v: Quad) -> [f32; LANES] {
    let mut out = [0.0f32; LANES];
    for (k, reg) in v.into_iter().enumerate() {
        // SAFETY: `out` holds 16 f32; each store writes 4 of them.
        unsafe { vst1q_f32(out.as_mut_ptr().add(4 * k), reg) };
    }
    out
}

/// `e^x` on 4 lanes (see the module notes).
#[inline(always)]
fn exp4(x: float32x4_t) -> float32x4_t {
    // SAFETY: register-only NEON arithmetic; NEON is part of every AArch64 target.
    unsafe {
        // FMIN/FMAX return NaN when either operand is NaN: NaN passes through the clamp.
        let xc = vmaxq_f32(vminq_f32(x, vdupq_n_f32(EXP_MAX)), vdupq_n_f32(EXP_MIN));
        // shifted = 1.5 * 2^23 + n: n is in the low mantissa bits of the sum (see `math::exp`).
        let magic = vdupq_n_f32(ROUND_MAGIC);
        let shifted = vfmaq_f32(magic, xc, vdupq_n_f32(LOG2_E));
        let n = vsubq_f32(shifted, magic);
        // One fused step, as `math::reduce` does for fused units. vfmaq_f32(a, b, c) = a + b c.
        let r = vfmaq_f32(xc, n, vdupq_n_f32(-std::f32::consts::LN_2));
        let mut p = vdupq_n_f32(EXP_C5);
        p = vfmaq_f32(vdupq_n_f32(EXP_C4), p, r);
        p = vfmaq_f32(vdupq_n_f32(EXP_C3), p, r);
        p = vfmaq_f32(vdupq_n_f32(EXP_C2), p, r);
        p = vfmaq_f32(vdupq_n_f32(EXP_C1), p, r);
        p = vfmaq_f32(vdupq_n_f32(1.0), p, r);
        // The constant's low 22 bits are 0: shifting the sum's bits left by 23 leaves n << 23,
        // the exponent field of 2^n less the bias (n in [-126, 127] after the clamp).
        let bits = vshlq_n_u32::<23>(vreinterpretq_u32_f32(shifted));
        let scale = vreinterpretq_f32_u32(vaddq_u32(bits, vdupq_n_u32(127 << 23)));
        let y = vmulq_f32(p, scale);
        // Compares with NaN are false: NaN is neither zeroed nor made infinite.
        let under = vcltq_f32(x, vdupq_n_f32(EXP_MIN));
        let over = vcgtq_f32(x, vdupq_n_f32(EXP_MAX));
        let y = vbslq_f32(under, vdupq_n_f32(0.0), y);
        vbslq_f32(over, vdupq_n_f32(f32::INFINITY), y)
    }
}

/// [`super::f16_to_f32`] on 4 lanes.
#[inline(always)]
fn f16x4(h: uint16x4_t) -> float32x4_t {
    // SAFETY: register-only NEON arithmetic; NEON is part of every AArch64 target.
    unsafe {
        let h = vmovl_u16(h);
        let sign = vshlq_n_u32::<16>(vandq_u32(h, vdupq_n_u32(0x8000)));
        let magnitude = vandq_u32(h, vdupq_n_u32(0x7fff));
        let shifted = vshlq_n_u32::<13>(magnitude);
        // Rescale by 2^112: the half exponent bias (15) to the f32 one (127), subnormals too.
        let scaled = vmulq_f32(
            vreinterpretq_f32_u32(shifted),
            vdupq_n_f32(f32::from_bits(0x7780_0000)),
        );
        let special = vorrq_u32(shifted, vdupq_n_u32(0x7f80_0000));
        let is_special = vcgeq_u32(magnitude, vdupq_n_u32(0x7c00));
        let bits = vbslq_u32(is_special, special, vreinterpretq_u32_f32(scaled));
        vreinterpretq_f32_u32(vorrq_u32(bits, sign))
    }
}

impl Isa for Neon {
    const FUSED: bool = true;
    const VECTOR_REGISTERS: usize = 32;

    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        // `fmadd`: AArch64 always has a fused multiply-add, so this is no library call.
        a.mul_add(b, c)
    }

    #[inline(always)]
    fn f16x16(src: &[u16]) -> [f32; LANES] {
        let src = &src[..LANES];
        // SAFETY: `src` holds 16 u16 (checked by the slice above); each load reads 4.
        store(std::array::from_fn(|k| {
            f16x4(unsafe { vld1_u16(src.as_ptr().add(4 * k)) })
        }))
    }

    #[inline(always)]
    fn bf16x16(src: &[u16]) -> [f32; LANES] {
        let src = &src[..LANES];
        // SAFETY: as in `f16x16`; the shift is register-only.
        store(std::array::from_fn(|k| unsafe {
            let h = vld1_u16(src.as_ptr().add(4 * k));
            vreinterpretq_f32_u32(vshll_n_u16::<16>(h))
        }))
    }

    #[inline(always)]
    fn add16(a: [f32; LANES], b: [f32; LANES]) -> [f32; LANES] {
        let (a, b) = (load(&a), load(&b));
        // SAFETY: register-only NEON arithmetic.
        store(std::array::from_fn(|k| unsafe { vaddq_f32(a[k], b[k]) }))
    }

    #[inline(always)]
    fn fma16(a: [f32; LANES], b: [f32; LANES], c: [f32; LANES]) -> [f32; LANES] {
        let (a, b, c) = (load(&a), load(&b), load(&c));
        // SAFETY: register-only NEON arithmetic. `vfmaq_f32(c, a, b)` is `c + a b`, fused.
        store(std::array::from_fn(|k| unsafe {
            vfmaq_f32(c[k], a[k], b[k])
        }))
    }

    #[inline(always)]
    fn max16(x: [f32; LANES], top: [f32; LANES]) -> [f32; LANES] {
        let (x, top) = (load(&x), load(&top));
        // SAFETY: register-only NEON arithmetic. `x > top` is false for a NaN on either side,
        // so a NaN `x` leaves `top`, as the scalar definition does.
        store(std::array::from_fn(|k| unsafe {
            vbslq_f32(vcgtq_f32(x[k], top[k]), x[k], top[k])
        }))
    }

    #[inline(always)]
    fn exp16(x: [f32; LANES]) -> [f32; LANES] {
        let x = load(&x);
        store(std::array::from_fn(|k| exp4(x[k])))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{bf16_to_f32, f16_to_f32, math};
    use super::*;

    /// Many inputs around every special point of `exp`, and a sweep of the whole range.
    fn exp_inputs() -> Vec<f32> {
        let mut xs = vec![
            f32::NEG_INFINITY,
            f32::INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::MAX,
            -f32::MAX,
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -1e30,
            1e30,
        ];
        for edge in [EXP_MIN, EXP_MAX, 0.0, -87.0, 88.0] {
            let mut v = edge;
            for _ in 0..64 {
                v = v.next_down();
                xs.push(v);
            }
            v = edge;
            for _ in 0..64 {
                v = v.next_up();
                xs.push(v);
            }
        }
        let mut x = -100.0f32;
        while x < 100.0 {
            xs.push(x);
            x += 0.000_61;
        }
        while xs.len() % LANES != 0 {
            xs.push(1.0);
        }
        xs
    }

    /// On AArch64 the NEON copy is offered (so the crate's ISA-agreement tests compare it).
    #[test]
    fn neon_is_available_and_named() {
        assert!(super::super::IsaKind::available().contains(&super::super::IsaKind::Neon));
        assert_eq!(super::super::IsaKind::Neon.name(), "neon");
    }

    /// The hand-written `exp16` is the generic lane loop with `FUSED`, bit for bit.
    #[test]
    fn neon_exp16_is_the_fused_lane_loop_bit_for_bit() {
        for chunk in exp_inputs().chunks_exact(LANES) {
            let x: [f32; LANES] = chunk.try_into().unwrap();
            let got = Neon::exp16(x);
            let want = math::exp16_lanes::<Neon>(x);
            for j in 0..LANES {
                assert!(
                    got[j].to_bits() == want[j].to_bits() || (got[j].is_nan() && want[j].is_nan()),
                    "exp({:e}) = {:e}, lane loop {:e}",
                    x[j],
                    got[j],
                    want[j]
                );
            }
        }
    }

    /// Every half and bfloat16 bit pattern converts as the scalar definitions do.
    #[test]
    fn every_half_and_bfloat16_converts_exactly() {
        let all: Vec<u16> = (0..=u16::MAX).collect();
        for chunk in all.chunks_exact(LANES) {
            let half = Neon::f16x16(chunk);
            let brain = Neon::bf16x16(chunk);
            for j in 0..LANES {
                let (h, b) = (f16_to_f32(chunk[j]), bf16_to_f32(chunk[j]));
                assert!(
                    half[j].to_bits() == h.to_bits() || (half[j].is_nan() && h.is_nan()),
                    "f16 {:#06x}: {:e} vs {h:e}",
                    chunk[j],
                    half[j]
                );
                assert_eq!(brain[j].to_bits(), b.to_bits(), "bf16 {:#06x}", chunk[j]);
            }
        }
        // The scalar definition itself against known values (and so the NEON copy).
        assert_eq!(Neon::f16x16(&[0x3c00; LANES])[0], 1.0);
        assert_eq!(Neon::f16x16(&[0x0001; LANES])[0], 5.960_464_5e-8);
        assert_eq!(Neon::f16x16(&[0xfc00; LANES])[0], f32::NEG_INFINITY);
        assert!(Neon::f16x16(&[0x7e01; LANES])[0].is_nan());
    }

    /// add, fma (one rounding: checked in f64) and max (NaN contract) lane by lane.
    #[test]
    fn lane_operations_match_their_scalar_definitions() {
        let a: [f32; LANES] = std::array::from_fn(|j| (j as f32 - 7.3) * 1.37e-3 + 1.0);
        let b: [f32; LANES] = std::array::from_fn(|j| 1.0 / (j as f32 + 0.7));
        let mut c: [f32; LANES] = std::array::from_fn(|j| -(j as f32) * 0.11);
        c[3] = f32::NAN;
        let sum = Neon::add16(a, b);
        let fused = Neon::fma16(a, b, c);
        let top = Neon::max16(c, a);
        let back = Neon::max16(a, c);
        for j in 0..LANES {
            assert_eq!(sum[j], a[j] + b[j]);
            let want = ((a[j] as f64) * (b[j] as f64) + c[j] as f64) as f32;
            assert!(
                fused[j] == want || (j == 3 && fused[j].is_nan()),
                "fma lane {j}"
            );
            // A NaN `x` leaves `top`; a NaN `top` stays (x > NaN is false).
            assert_eq!(
                top[j].to_bits(),
                if c[j] > a[j] { c[j] } else { a[j] }.to_bits()
            );
            assert_eq!(
                back[j].to_bits(),
                if a[j] > c[j] { a[j] } else { c[j] }.to_bits()
            );
        }
        assert_eq!(top[3], a[3]);
        assert!(back[3].is_nan());
    }
}
