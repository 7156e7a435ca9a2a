//! Hand-written AVX2 + FMA forms of the [`super::Isa`] lane operations: each 16-lane array is
//! two 8-lane registers.
//!
//! Without them the AVX2 copy relied on the compiler vectorising the generic lane loops, which
//! it did unevenly (the AVX-512 copy had hand-written forms already). Above all `exp16`, which
//! computes [`super::math::exp_table`] (eighths of an octave: a table of eight and a cubic, two
//! multiply-adds fewer than `math::exp`'s degree-5 polynomial, in loops bound by the number of
//! vector operations they issue): the table entry and `2^(k >> 3)` come from the bits of the rounding sum
//! itself, the low side is one AND with the `x >= EXP_MIN` mask, and `+inf` comes out of the
//! exponent field itself (13 instructions per 8 lanes, one `vpermps` more and two FMAs fewer
//! than with the polynomial). `exp16_floored` ([`super::math::exp_table_floored`]) floors the
//! argument at `-88` instead of masking, where the same arithmetic gives `+0` (12).
//!
//! Every function here is `unsafe`: it may only run on a CPU with AVX2 and FMA, which holds
//! where it is used (the `Avx2` marker is only instantiated inside the `#[target_feature]`
//! frame `run_block` enters after run-time detection). Loads and stores are unaligned unless
//! said otherwise.

#[cfg(target_arch = "x86")]
use std::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::math::{
    EXP8_C2, EXP8_C3, EXP8_CLAMP, EXP8_FLOOR, EXP8_TABLE, EXP_MIN, LOG2_E, LOG_HALF_H, ROUND_MAGIC,
};
use super::LANES;

/// The two halves of a lane array, through a whole 16-lane vector value: with two
/// `_mm256_loadu_ps` from its address the compiler kept loop-carried lane arrays (the sums of
/// `entropy_from_logits`, the block max) in stack slots, stored and reloaded every vector; a
/// single 64-byte access lets it keep them in two registers, as in the AVX-512 copy.
#[inline(always)]
pub(super) fn load(a: &[f32; LANES]) -> (__m256, __m256) {
    // SAFETY: `__m512` is a plain 64-byte type (no AVX-512 operation is used on it; the
    // compiler splits it into two 256-bit registers): the read is in bounds, unaligned-safe, and
    // every bit pattern is valid for both types.
    unsafe {
        let whole = std::ptr::read_unaligned(a.as_ptr().cast::<__m512>());
        let [lo, hi] = std::mem::transmute::<__m512, [__m256; 2]>(whole);
        (lo, hi)
    }
}

#[inline(always)]
pub(super) fn store(lo: __m256, hi: __m256) -> [f32; LANES] {
    // SAFETY: as in `load`.
    unsafe { std::mem::transmute::<[__m256; 2], [f32; LANES]>([lo, hi]) }
}

/// The constants of [`exp8`] and of the `asm!` forms (`avx2_loops`, `avx2_js`), each as a whole
/// 8-lane vector in memory.
#[repr(C, align(32))]
pub(super) struct Consts {
    pub(super) exp_min: [f32; 8],
    pub(super) exp_clamp: [f32; 8],
    /// `EXP8_FLOOR`: where `exp16_floored` and the `asm!` sums floor the argument.
    pub(super) exp_floor: [f32; 8],
    pub(super) magic: [f32; 8],
    /// `8 log2 e` and `-ln2 / 8`: the reduction to eighths (`math::exp_table`).
    pub(super) log2_e8: [f32; 8],
    pub(super) neg_ln2_8: [f32; 8],
    /// `EXP8_C3, EXP8_C2, 1, 1`: the cubic, highest power first.
    pub(super) exp_c: [[f32; 8]; 4],
    /// `EXP8_TABLE[j] - (j << 20)`: `vpermps` picks entry `k & 7` by the low bits of the
    /// rounding sum itself, and adding that sum shifted left by 20 (`(k >> 3) << 23` plus the
    /// `(k & 7) << 20` this takes off again) gives the scale without masking `k`.
    pub(super) exp_tab: [u32; 8],
    pub(super) sign: [f32; 8],
    pub(super) one: [f32; 8],
    /// `LOG_HALF_H`.
    pub(super) h: [[f32; 8]; 9],
}

pub(super) static CONSTS: Consts = Consts {
    exp_min: [EXP_MIN; 8],
    exp_clamp: [EXP8_CLAMP; 8],
    exp_floor: [EXP8_FLOOR; 8],
    magic: [ROUND_MAGIC; 8],
    log2_e8: [8.0 * LOG2_E; 8],
    neg_ln2_8: [-std::f32::consts::LN_2 / 8.0; 8],
    exp_c: [[EXP8_C3; 8], [EXP8_C2; 8], [1.0; 8], [1.0; 8]],
    exp_tab: shifted_table(),
    sign: [-0.0; 8],
    one: [1.0; 8],
    h: [
        [LOG_HALF_H[0]; 8],
        [LOG_HALF_H[1]; 8],
        [LOG_HALF_H[2]; 8],
        [LOG_HALF_H[3]; 8],
        [LOG_HALF_H[4]; 8],
        [LOG_HALF_H[5]; 8],
        [LOG_HALF_H[6]; 8],
        [LOG_HALF_H[7]; 8],
        [LOG_HALF_H[8]; 8],
    ],
};

const fn shifted_table() -> [u32; 8] {
    let mut out = EXP8_TABLE;
    let mut j = 0;
    while j < 8 {
        out[j] -= (j as u32) << 20;
        j += 1;
    }
    out
}

/// One constant of the table.
#[inline(always)]
pub(super) unsafe fn k(v: &[f32; 8]) -> __m256 {
    _mm256_load_ps(v.as_ptr())
}

/// `e^x` on 8 lanes ([`super::math::exp_table`]), with the constants read from `c`
/// ([`CONSTS`]; where the compiler can see that, it treats the values as constants).
#[inline(always)]
pub(super) unsafe fn exp8(x: __m256, c: &Consts) -> __m256 {
    // min returns its second operand when one is NaN: NaN passes through.
    exp8_clamped(x, _mm256_min_ps(k(&c.exp_clamp), x), c)
}

/// [`exp8`] of `x` given `xc = min(EXP8_CLAMP, x)`; for `x <= 0` (or NaN) `xc` is `x` itself,
/// one instruction saved (the Jensen–Shannon `u = e^d`, `d <= 0`).
#[inline(always)]
pub(super) unsafe fn exp8_clamped(x: __m256, xc: __m256, c: &Consts) -> __m256 {
    // All ones except where x < EXP_MIN (-inf included; NaN compares "not less" and is kept):
    // those lanes are zeroed at the end, so their arithmetic never shows.
    let keep = _mm256_cmp_ps::<_CMP_NLT_UQ>(x, k(&c.exp_min));
    _mm256_and_ps(exp8_scaled(xc, c), keep)
}

/// The arithmetic of [`exp8`] on `xc` in `[EXP8_FLOOR, EXP8_CLAMP]` (or NaN), unmasked
/// (`math::exp_table_scaled`).
#[inline(always)]
unsafe fn exp8_scaled(xc: __m256, c: &Consts) -> __m256 {
    // shifted = 1.5 * 2^23 + k, k = round(8 x log2 e) in the low mantissa bits.
    let shifted = _mm256_fmadd_ps(xc, k(&c.log2_e8), k(&c.magic));
    let eighths = _mm256_sub_ps(shifted, k(&c.magic));
    let r = _mm256_fmadd_ps(eighths, k(&c.neg_ln2_8), xc);
    let mut p = k(&c.exp_c[0]);
    for coef in &c.exp_c[1..] {
        p = _mm256_fmadd_ps(p, r, k(coef));
    }
    let bits = _mm256_castps_si256(shifted);
    let entry = _mm256_permutevar8x32_ps(_mm256_load_ps(c.exp_tab.as_ptr().cast::<f32>()), bits);
    let scale = _mm256_add_epi32(_mm256_slli_epi32::<20>(bits), _mm256_castps_si256(entry));
    _mm256_mul_ps(p, _mm256_castsi256_ps(scale))
}

/// [`super::math::exp_table`] on 16 lanes.
///
/// # Safety
/// AVX2 and FMA must be present.
#[inline(always)]
pub(super) unsafe fn exp16(x: [f32; LANES]) -> [f32; LANES] {
    let (lo, hi) = load(&x);
    store(exp8(lo, &CONSTS), exp8(hi, &CONSTS))
}

/// [`super::math::exp_table_floored`] on 16 lanes.
///
/// # Safety
/// AVX2 and FMA must be present.
#[inline(always)]
pub(super) unsafe fn exp16_floored(x: [f32; LANES]) -> [f32; LANES] {
    let (lo, hi) = load(&x);
    store(exp8_floored(lo, &CONSTS), exp8_floored(hi, &CONSTS))
}

/// [`super::math::exp_table_floored`] on 8 lanes.
#[inline(always)]
unsafe fn exp8_floored(x: __m256, c: &Consts) -> __m256 {
    // max and min return their second operand when one is NaN: NaN passes through both.
    let xf = _mm256_max_ps(k(&c.exp_floor), x);
    exp8_scaled(_mm256_min_ps(k(&c.exp_clamp), xf), c)
}

/// `a + b` on 16 lanes.
///
/// # Safety
/// AVX must be present.
#[inline(always)]
pub(super) unsafe fn add16(a: [f32; LANES], b: [f32; LANES]) -> [f32; LANES] {
    let ((a0, a1), (b0, b1)) = (load(&a), load(&b));
    store(_mm256_add_ps(a0, b0), _mm256_add_ps(a1, b1))
}

/// `a * b + c` on 16 lanes, fused.
///
/// # Safety
/// AVX and FMA must be present.
#[inline(always)]
pub(super) unsafe fn fma16(a: [f32; LANES], b: [f32; LANES], c: [f32; LANES]) -> [f32; LANES] {
    let ((a0, a1), (b0, b1), (c0, c1)) = (load(&a), load(&b), load(&c));
    store(_mm256_fmadd_ps(a0, b0, c0), _mm256_fmadd_ps(a1, b1, c1))
}

/// `x > top ? x : top` on 16 lanes (`vmaxps(x, top)`: a NaN `x` leaves `top`).
///
/// # Safety
/// AVX must be present.
#[inline(always)]
pub(super) unsafe fn max16(x: [f32; LANES], top: [f32; LANES]) -> [f32; LANES] {
    let ((x0, x1), (t0, t1)) = (load(&x), load(&top));
    store(_mm256_max_ps(x0, t0), _mm256_max_ps(x1, t1))
}

/// Streaming (non-temporal) store of 16 lanes to `dst[..16]`.
///
/// # Safety
/// AVX must be present and `dst` 32-byte aligned (the callers align it to 64) with at least 16
/// entries.
#[inline(always)]
pub(super) unsafe fn store16_stream(dst: &mut [f32], v: [f32; LANES]) {
    let (lo, hi) = load(&v);
    _mm256_stream_ps(dst.as_mut_ptr(), lo);
    _mm256_stream_ps(dst.as_mut_ptr().add(8), hi);
}

/// Values the hand-written forms' bit-identity tests plant among ordinary ones: masked,
/// huge, tiny, subnormal and signed-zero entries and the `exp` range's edges on both sides
/// (`-87.33` is `EXP_MIN`, and the next float below it the first one zeroed; `-88` is
/// `EXP8_FLOOR`, with the float above it and values between the two).
#[cfg(test)]
pub(super) const SPECIAL_VALUES: [f32; 19] = [
    f32::NEG_INFINITY,
    -1e30,
    -88.5,
    -88.0,
    f32::from_bits((-88.0f32).to_bits() - 1),
    -87.9,
    -87.33,
    f32::from_bits((-87.33f32).to_bits() + 1),
    -87.34,
    -1e-40,
    1e-40,
    -0.0,
    0.0,
    88.0,
    88.4,
    88.6,
    1e30,
    f32::MAX,
    f32::INFINITY,
];

/// `len` ordinary entries `offset - k · 0.023` (a scrambled `k` below 4000) for those tests.
#[cfg(test)]
pub(super) fn ordinary_block(len: usize, offset: f32) -> Vec<f32> {
    (0..len)
        .map(|i| offset - ((i * 2_654_435_761) % 4000) as f32 * 0.023)
        .collect()
}

/// `block` with each of `special` planted at a spread-out position (wrapping for short blocks).
#[cfg(test)]
pub(super) fn plant(block: &mut [f32], special: &[f32]) {
    let len = block.len();
    for (i, &v) in special.iter().enumerate() {
        block[(i * 97) % len] = v;
    }
}

#[cfg(test)]
mod tests {
    use super::super::{math, IsaKind, LANES};

    /// The hand-written `exp16` gives the bits of its lane definition, `math::exp_table`, over
    /// the whole range and at the special values (run outside a `target_feature` frame: slower,
    /// same results).
    #[test]
    fn exp16_is_bit_identical_to_its_lane_definition() {
        if !IsaKind::available().contains(&IsaKind::Avx2) {
            return;
        }
        let definition = |lanes: [f32; LANES]| lanes.map(math::exp_table);
        let mut x = math::EXP_MIN;
        while x <= 88.8 {
            let lanes: [f32; LANES] = std::array::from_fn(|j| x + j as f32 * 0.000_37);
            // SAFETY: AVX2 and FMA are present (checked above).
            let hand = unsafe { super::exp16(lanes) };
            let want = definition(lanes);
            for j in 0..LANES {
                assert_eq!(hand[j].to_bits(), want[j].to_bits(), "exp({})", lanes[j]);
            }
            x += 0.0071;
        }
        let special = [
            f32::NEG_INFINITY,
            -87.5,
            -1e30,
            0.0,
            88.7,
            100.0,
            f32::INFINITY,
            f32::NAN,
        ];
        let mut lanes: [f32; LANES] = std::array::from_fn(|j| special[j % 8]);
        lanes[8] = math::EXP_MIN;
        lanes[9] = f32::from_bits(math::EXP_MIN.to_bits() + 1);
        lanes[10] = 88.5;
        // x86's default NaN is negative.
        lanes[15] = -f32::NAN;
        // SAFETY: as above.
        let hand = unsafe { super::exp16(lanes) };
        let want = definition(lanes);
        for j in [8, 9, 10] {
            assert_eq!(hand[j].to_bits(), want[j].to_bits(), "exp({})", lanes[j]);
        }
        assert!(hand[8] > 0.0 && hand[9] == 0.0);
        assert!(hand[10].is_finite() && hand[15].is_nan());
        assert_eq!(&hand[..4], &[0.0, 0.0, 0.0, 1.0]);
        assert_eq!(&hand[4..7], &[f32::INFINITY; 3]);
        assert!(hand[7].is_nan());
    }

    /// `exp16_floored` gives the bits of `math::exp_table_floored` on the whole range, in the
    /// stretch it floors and at the special values.
    #[test]
    fn exp16_floored_is_bit_identical_to_its_lane_definition() {
        if !IsaKind::available().contains(&IsaKind::Avx2) {
            return;
        }
        let mut cases: Vec<f32> = super::SPECIAL_VALUES.to_vec();
        cases.extend([f32::NAN, -f32::NAN, math::EXP_MIN, -f32::MAX]);
        let mut x = -89.0f32;
        while x <= 88.8 {
            cases.push(x);
            x += 0.0071;
        }
        let mut x = -88.01f32;
        while x < -87.3 {
            cases.push(x);
            x += 0.000_13;
        }
        for chunk in cases.chunks(LANES) {
            let lanes: [f32; LANES] = std::array::from_fn(|j| chunk.get(j).copied().unwrap_or(0.5));
            // SAFETY: AVX2 and FMA are present (checked above).
            let hand = unsafe { super::exp16_floored(lanes) };
            for j in 0..LANES {
                let want = math::exp_table_floored(lanes[j]);
                if want.is_nan() {
                    assert!(hand[j].is_nan(), "exp({})", lanes[j]);
                } else {
                    assert_eq!(hand[j].to_bits(), want.to_bits(), "exp({})", lanes[j]);
                }
            }
        }
    }
}
