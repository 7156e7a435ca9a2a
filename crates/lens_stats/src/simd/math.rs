//! Branch-free f32 `exp` for lane loops (~1-2 ulp): a degree-5 minimax polynomial after
//! Cody-Waite range reduction (fitted here: 9.2e-8 relative on `[-ln2/2, ln2/2]`, 1.6e-7 once
//! evaluated in f32; the constant term is exactly 1 so that `exp(0) = 1`), and the
//! `ln((1 + u)/2)` polynomial of the Jensen–Shannon divergence.
//!
//! Written per element with selects instead of branches so that the loops over `[f32; 16]`
//! vectorise. Special values are decided explicitly:
//! * `exp(x)` is exactly `0` for `x < -87.33` (including `-inf`): below that the result would be
//!   an f32 subnormal, and a masked token must contribute exactly nothing;
//!   `+inf` for `x > 88.37`; NaN stays NaN.
//! * `exp_table_floored`, the AVX2 copy's exponential where a sum only adds `e^x` or
//!   `e^x x` (the entropy, the online normalisers), is exactly `0` from `-88` down instead,
//!   and at most `e^x` (under 1.19e-38) between `-88` and `-87.33`.

// The polynomial coefficients are kept with the digits they were fitted with.
#![allow(clippy::excessive_precision)]

use super::{Isa, LANES};

pub(crate) const LOG2_E: f32 = std::f32::consts::LOG2_E;
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 * 2^23: adding it rounds to the nearest integer (no SSE4.1 `round` needed), and the low
/// mantissa bits of the sum are that integer.
pub(crate) const ROUND_MAGIC: f32 = 12_582_912.0;
pub(crate) const EXP_MIN: f32 = -87.33;
pub(crate) const EXP_MAX: f32 = 88.37;
pub(crate) const EXP_C1: f32 = 0.999_999_7;
pub(crate) const EXP_C2: f32 = 0.499_991_48;
pub(crate) const EXP_C3: f32 = 0.166_676_39;
pub(crate) const EXP_C4: f32 = 0.041_898_16;
pub(crate) const EXP_C5: f32 = 0.008_290_264;

/// `x - n ln 2`. With a fused multiply-add one step is exact up to the rounding of ln 2 in f32
/// (`|n| · 1.9e-9 <= 2.4e-7` absolute), one instruction fewer than Cody-Waite's two-part
/// constant, which the portable (unfused) path keeps: there `n · ln 2` would round to ~4e-6.
#[inline(always)]
pub fn reduce<I: Isa>(n: f32, x: f32) -> f32 {
    if I::FUSED {
        I::fma(n, -std::f32::consts::LN_2, x)
    } else {
        I::fma(n, -LN2_LO, I::fma(n, -LN2_HI, x))
    }
}

/// e^r for `|r| <= ln2/2`: degree 5, constant term exactly 1.
#[inline(always)]
pub fn exp_poly<I: Isa>(r: f32) -> f32 {
    let mut p = EXP_C5;
    p = I::fma(p, r, EXP_C4);
    p = I::fma(p, r, EXP_C3);
    p = I::fma(p, r, EXP_C2);
    p = I::fma(p, r, EXP_C1);
    I::fma(p, r, 1.0)
}

/// e^x for one lane (see the module notes for special values).
#[inline(always)]
pub fn exp<I: Isa>(x: f32) -> f32 {
    // Clamp for the arithmetic; NaN fails both comparisons and stays NaN.
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    let shifted = I::fma(xc, LOG2_E, ROUND_MAGIC);
    let n = shifted - ROUND_MAGIC;
    let n_int = (shifted.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = reduce::<I>(n, xc);
    let poly = exp_poly::<I>(r);
    let scale = f32::from_bits((n_int.wrapping_add(127) as u32) << 23);
    let y = poly * scale;
    if x < EXP_MIN {
        0.0
    } else if x > EXP_MAX {
        f32::INFINITY
    } else {
        y
    }
}

/// `e^r ≈ 1 + r + EXP8_C2 r² + EXP8_C3 r³` for `|r| <= ln2/16`: a minimax fit of the relative
/// error with the linear term fixed at 1 (2.6e-8 exact, 8.3e-8 evaluated in f32).
pub(crate) const EXP8_C2: f32 = 0.500_064_43;
pub(crate) const EXP8_C3: f32 = 0.166_668_53;
/// The bits of `2^(j/8)` rounded to f32 (3.2e-8 relative at most), `j = 0..8`.
pub(crate) const EXP8_TABLE: [u32; 8] = [
    0x3f80_0000,
    0x3f8b_95c2,
    0x3f98_37f0,
    0x3fa5_fed7,
    0x3fb5_04f3,
    0x3fc5_672a,
    0x3fd7_44fd,
    0x3fea_c0c7,
];
/// Where [`exp_table`] clamps from above: `round(8 EXP8_CLAMP log2 e) = 1024`, so the scale is
/// exactly `2^128 = +inf` there (table entry 0: the exponent field becomes all ones).
pub(crate) const EXP8_CLAMP: f32 = 88.72;
const _: () = assert!(EXP8_CLAMP * LOG2_E * 8.0 > 1023.5 && EXP8_CLAMP * LOG2_E * 8.0 < 1024.5);

/// e^x by eighths of an octave, lane by lane: the definition the AVX2 copy computes (bit for
/// bit: `avx2::exp8` and the `asm!` forms). `k = round(8 x log2 e)`, `x = k ln2/8 + r` with
/// `|r| <= ln2/16`, `e^x = 2^(k >> 3) · 2^((k & 7)/8) · e^r`: a table of eight and a cubic
/// instead of a degree-5 polynomial: two fewer multiply-adds per lane, for loops bound by the
/// number of vector operations they issue (benches/README.md, "Fifth step"); ~1-2 ulp, as
/// [`exp`].
///
/// Special values as [`exp`]'s, except near the top: between `EXP_MAX` and `88.68` the result
/// is the finite `e^x` (or `+inf` where the product rounds over `f32::MAX`), and from `88.68`
/// it is `+inf` (the last 0.04 below the true overflow at `128 ln 2` included).
#[inline(always)]
pub fn exp_table(x: f32) -> f32 {
    let y = exp_table_scaled(clamp_top(x));
    if x < EXP_MIN {
        0.0
    } else {
        y
    }
}

/// Where [`exp_table_floored`] floors its argument: `round(8 EXP8_FLOOR log2 e) = -1016`, so
/// that the scale `2^(k >> 3) · 2^((k & 7)/8)` is `2^-127` built from exponent field 0 and table
/// entry 0: exactly `+0`.
pub(crate) const EXP8_FLOOR: f32 = -88.0;
const _: () = assert!(EXP8_FLOOR * LOG2_E * 8.0 > -1016.5 && EXP8_FLOOR * LOG2_E * 8.0 < -1015.5);

/// `max(EXP8_FLOOR, x)`, NaN kept (`vmaxps` with `x` as the operand it returns on NaN).
#[inline(always)]
pub fn underflow_floor(x: f32) -> f32 {
    if x < EXP8_FLOOR {
        EXP8_FLOOR
    } else {
        x
    }
}

/// [`exp_table`] without its mask: the argument floored at [`EXP8_FLOOR`] instead, where the
/// arithmetic itself gives `+0`. One vector operation fewer than the compare and AND of the
/// mask, and for `p·x` sums (the entropy's `Σ e^x x`, the online normalisers' weighted sum)
/// the floored `x` is also the finite factor that `0 · x` needs where `x = -inf`: two fewer.
///
/// The same bits as [`exp_table`] from `EXP_MIN` up, NaN kept; exactly `+0` from `EXP8_FLOOR`
/// down (`-inf` included). In between, where [`exp_table`] gives 0 and `e^x` is 5.7e-39 to
/// 1.19e-38, it is at most `e^x` (to `exp_table`'s 4.2e-7 there): `e^x` itself while
/// `k >> 3 >= -126`, then exponent field 0 under the table entry's mantissa,
/// `(2^(j/8) - 1) 2^-126` for `2^(j/8) 2^-127`, times the cubic.
#[inline(always)]
pub fn exp_table_floored(x: f32) -> f32 {
    exp_table_scaled(clamp_top(underflow_floor(x)))
}

/// `vminps(EXP8_CLAMP, x)`: NaN passes through.
#[inline(always)]
fn clamp_top(x: f32) -> f32 {
    if EXP8_CLAMP < x {
        EXP8_CLAMP
    } else {
        x
    }
}

/// The arithmetic of [`exp_table`] for `xc` in `[EXP8_FLOOR, EXP8_CLAMP]` (or NaN), unmasked.
#[inline(always)]
fn exp_table_scaled(xc: f32) -> f32 {
    let shifted = xc.mul_add(8.0 * LOG2_E, ROUND_MAGIC);
    let k = shifted - ROUND_MAGIC;
    let r = k.mul_add(-std::f32::consts::LN_2 / 8.0, xc);
    let poly = EXP8_C3.mul_add(r, EXP8_C2).mul_add(r, 1.0).mul_add(r, 1.0);
    // The low bits of `shifted` are k's two's complement (the magic constant's low 22 bits are
    // 0; no tie to round: LOG2_E's mantissa is odd, so `8 x log2 e` is an odd multiple of 1/2
    // only for |x| >= 2^19): k >> 3 goes into the exponent field of the table entry k & 7. In
    // range (k in [-1008, 1024]) that is `2^(k/8)` exactly as rounded in the table; below it,
    // down to k = -1016, the exponent field is 0 (see `exp_table_floored`).
    let bits = shifted.to_bits();
    let scale = f32::from_bits(((bits >> 3) << 23).wrapping_add(EXP8_TABLE[(bits & 7) as usize]));
    poly * scale
}

/// The coefficients of `H` in [`log_half_one_plus`], constant term first.
pub(crate) const LOG_HALF_H: [f32; 9] = [
    std::f32::consts::LN_2,
    -0.306_851_8,
    0.193_112_28,
    -0.139_723_78,
    0.106_716_4,
    -0.078_192_964,
    0.047_413_856,
    -0.019_401_1,
    0.003_780_500_7,
];

/// `ln((1 + u) / 2)` for `u` in `[0, 1]`, as `(u - 1) H(u)` with a degree-8 minimax `H`
/// fitted here (7e-8 absolute in f32; exactly 0 at `u = 1`). The log of the mean of two
/// probabilities relative to the larger one, for the Jensen–Shannon divergence.
#[inline(always)]
pub fn log_half_one_plus<I: Isa>(u: f32) -> f32 {
    const H: [f32; 9] = LOG_HALF_H;
    let mut h = H[8];
    for &c in H[..8].iter().rev() {
        h = I::fma(h, u, c);
    }
    h * (u - 1.0)
}

/// [`log_half_one_plus`] with `H` by Estrin's scheme: four independent pairs, then two
/// levels. Two multiplications more than Horner's eight dependent steps, but 14 cycles of
/// latency instead of 32 on a 4-cycle FMA: the AVX2 Jensen–Shannon loop (16 registers) is
/// bound by the chain exp, then this, then the term; the AVX-512 one (32 registers) is not,
/// and runs ~5% slower with it, so only AVX2 uses it.
#[inline(always)]
pub fn log_half_one_plus_estrin<I: Isa>(u: f32) -> f32 {
    const H: [f32; 9] = LOG_HALF_H;
    let (u2, u4) = (u * u, (u * u) * (u * u));
    let a0 = I::fma(H[1], u, H[0]);
    let a1 = I::fma(H[3], u, H[2]);
    let a2 = I::fma(H[5], u, H[4]);
    let a3 = I::fma(H[7], u, H[6]);
    let b0 = I::fma(a1, u2, a0);
    let b1 = I::fma(a3, u2, a2);
    let h = I::fma(I::fma(H[8], u4, b1), u4, b0);
    h * (u - 1.0)
}

/// The Jensen–Shannon terms `p ln(p/m) + q ln(q/m)`, `m = (p + q)/2`, of 16 pairs of
/// log-probabilities, lane by lane; the portable definition of [`Isa::js16`].
///
/// Relative to the larger of the pair: with h = max(lp, lq), d = -|lp - lq|, p_h = e^h,
/// u = e^d, p_l = p_h u and g = ln((1 + u)/2) = ln(m / p_h):
/// p_h (lp_h - lm) + p_l (lp_l - lm) = p_l d - g (p_h + p_l). Two exps and a polynomial
/// instead of two exps and a log, and no cancellation between a log and a log-prob. The
/// entries are floored at `EXP8_FLOOR` (where `e^x` is 0, or below f32's normal range: a
/// probability under 1.2e-38 changes a term by under 1e-36); the AVX2 form floors d as well,
/// which changes d only where u, and so `p_l d`, is 0. Both entries -inf: d = 0,
/// p_h = 0, the term 0. One -inf (or far below the other): u = 0, the term p_h ln 2 (u under
/// 1.2e-38: the same in f32 unless p_h is tiny too). A NaN makes d, u and the term NaN.
#[inline(always)]
pub fn js16_lanes<I: Isa>(lp: [f32; LANES], lq: [f32; LANES]) -> [f32; LANES] {
    js16_lanes_with::<I, false>(lp, lq)
}

/// [`js16_lanes`], with `ln((1 + u)/2)` by [`log_half_one_plus_estrin`] if `ESTRIN` (the
/// definition of the AVX2 copy's hand-written form).
#[inline(always)]
pub fn js16_lanes_with<I: Isa, const ESTRIN: bool>(
    lp: [f32; LANES],
    lq: [f32; LANES],
) -> [f32; LANES] {
    let mut high = [0.0f32; LANES];
    let mut d = [0.0f32; LANES];
    for j in 0..LANES {
        let (x, y) = (underflow_floor(lp[j]), underflow_floor(lq[j]));
        high[j] = if x > y { x } else { y };
        d[j] = -(x - y).abs();
    }
    let p_high = I::exp16_floored(high);
    let u = I::exp16_floored(d);
    let mut out = [0.0f32; LANES];
    for j in 0..LANES {
        let p_low = p_high[j] * u[j];
        let g = if ESTRIN {
            log_half_one_plus_estrin::<I>(u[j])
        } else {
            log_half_one_plus::<I>(u[j])
        };
        out[j] = I::fma(p_low, d[j], -g * (p_high[j] + p_low));
    }
    out
}

/// `exp` on every lane, by the instruction set's own vector code where it has one (AVX-512:
/// `vscalefps` does the `2^n` scaling with correct overflow, one instruction for five).
#[inline(always)]
pub fn exp16<I: Isa>(x: [f32; LANES]) -> [f32; LANES] {
    I::exp16(x)
}

/// `exp` on every lane, lane by lane (the compiler vectorises it); the portable definition.
#[inline(always)]
pub fn exp16_lanes<I: Isa>(x: [f32; LANES]) -> [f32; LANES] {
    let mut out = [0.0; LANES];
    for j in 0..LANES {
        out[j] = exp::<I>(x[j]);
    }
    out
}

/// f32 lane sums are flushed to f64 every this many elements of a row (64 terms per lane),
/// which keeps the relative error near 1e-7 even for V = 262,144.
pub const SUM_BLOCK: usize = 1024;

/// Sum of the lanes, combined in f64 in a fixed order.
#[inline(always)]
pub fn hsum(acc: &[f32; LANES]) -> f64 {
    acc.iter().map(|&v| v as f64).sum()
}

#[cfg(test)]
mod tests {
    use super::super::Portable;
    use super::*;

    #[test]
    fn exp_is_accurate_and_handles_specials() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp::<Portable>(x) as f64;
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
            x += 0.0137;
        }
        assert_eq!(exp::<Portable>(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp::<Portable>(-87.5), 0.0);
        assert_eq!(exp::<Portable>(-1e30), 0.0);
        assert_eq!(exp::<Portable>(0.0), 1.0);
        assert_eq!(exp::<Portable>(100.0), f32::INFINITY);
        assert!(exp::<Portable>(f32::NAN).is_nan());
    }

    #[test]
    fn exp_table_is_accurate_and_handles_specials() {
        let mut x = -87.33f32;
        while x < 88.6 {
            let want = (x as f64).exp();
            let got = exp_table(x) as f64;
            // The cubic's 8.3e-8, the table's 3.2e-8 and the product's rounding (1.5 ulp), and
            // the reduction's one fused step: k ln2/8 with ln 2 rounded, |k/8| · 1.9e-9.
            let bound = 1.8e-7 + (x.abs() as f64 * LOG2_E as f64) * 1.9e-9;
            let err = ((got - want) / want).abs();
            assert!(
                err < bound,
                "exp_table({x}) = {got}, want {want}: {err} > {bound}"
            );
            x += 0.001_37;
        }
        for (j, &bits) in EXP8_TABLE.iter().enumerate() {
            assert_eq!(
                bits,
                (2f64.powf(j as f64 / 8.0) as f32).to_bits(),
                "2^({j}/8)"
            );
        }
        assert_eq!(exp_table(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_table(-87.34), 0.0);
        assert!(exp_table(EXP_MIN) > 0.0 && exp_table(EXP_MIN).is_normal());
        assert_eq!(exp_table(-1e30), 0.0);
        assert_eq!(exp_table(0.0), 1.0);
        assert!(exp_table(88.6).is_finite());
        for x in [88.68, EXP8_CLAMP, 88.8, 100.0, 1e30, f32::INFINITY] {
            assert_eq!(exp_table(x), f32::INFINITY, "exp_table({x})");
        }
        assert!(exp_table(f32::NAN).is_nan() && exp_table(-f32::NAN).is_nan());
    }

    /// `exp_table_floored` is `exp_table` from `EXP_MIN` up (bit for bit), `+0` from the floor
    /// down and below f32's normal range in between.
    #[test]
    fn exp_table_floored_agrees_and_underflows_to_zero() {
        let mut x = EXP_MIN;
        while x < 89.0 {
            assert_eq!(
                exp_table_floored(x).to_bits(),
                exp_table(x).to_bits(),
                "{x}"
            );
            x += 0.000_731;
        }
        for x in [EXP_MIN, 0.0, -0.0, 88.7, 1e30, f32::MAX, f32::INFINITY] {
            assert_eq!(
                exp_table_floored(x).to_bits(),
                exp_table(x).to_bits(),
                "{x}"
            );
        }
        assert!(exp_table_floored(f32::NAN).is_nan() && exp_table_floored(-f32::NAN).is_nan());
        let below = f32::from_bits(EXP8_FLOOR.to_bits() + 1); // the next float below the floor
        for x in [
            EXP8_FLOOR,
            below,
            -88.5,
            -1e30,
            -f32::MAX,
            f32::NEG_INFINITY,
        ] {
            assert_eq!(exp_table_floored(x).to_bits(), 0, "{x}");
        }
        let mut x = f32::from_bits(EXP8_FLOOR.to_bits() - 1);
        let mut largest = 0.0f32;
        while x < EXP_MIN {
            let y = exp_table_floored(x);
            assert!(
                y >= 0.0 && y as f64 <= (x as f64).exp() * (1.0 + 4.2e-7),
                "{x}: {y}"
            );
            largest = largest.max(y);
            x = f32::from_bits(x.to_bits() - 1);
        }
        assert!(largest > 0.5 * f32::MIN_POSITIVE);
        assert_eq!(underflow_floor(f32::NEG_INFINITY), EXP8_FLOOR);
        assert_eq!(underflow_floor(-3.0), -3.0);
        assert!(underflow_floor(f32::NAN).is_nan());
    }

    #[test]
    fn log_half_one_plus_is_accurate_on_0_1() {
        for i in 0..=100_000 {
            let u = i as f32 / 100_000.0;
            let want = ((1.0 + u as f64) / 2.0).ln();
            let got = log_half_one_plus::<Portable>(u) as f64;
            assert!((got - want).abs() <= 1.5e-7, "u = {u}: {got} vs {want}");
            let got = log_half_one_plus_estrin::<Portable>(u) as f64;
            assert!(
                (got - want).abs() <= 1.5e-7,
                "Estrin, u = {u}: {got} vs {want}"
            );
        }
        assert_eq!(log_half_one_plus::<Portable>(1.0), 0.0);
        assert!(log_half_one_plus::<Portable>(f32::NAN).is_nan());
        assert_eq!(log_half_one_plus_estrin::<Portable>(1.0), 0.0);
        assert!(log_half_one_plus_estrin::<Portable>(f32::NAN).is_nan());
    }
}
