//! Hand-written AVX2 + FMA forms of the [`super::Isa`] lane operations: each 16-lane array is
//! two 8-lane registers.
//!
//! Without them the AVX2 copy relied on the compiler vectorising the generic lane loops, which
//! it did unevenly (the AVX-512 copy had hand-written forms already). Above all `exp16`: the
//! generic `math::exp` clamps on both sides, selects twice and builds `2^n` from a separate
//! integer conversion; here `2^n` comes from the bits of the rounding sum itself, the low side
//! is one AND with the `x >= EXP_MIN` mask, and `+inf` comes out of the exponent field itself
//! (14 instructions per 8 lanes). Same reduction, same polynomial, same special values as [`super::math::exp`].
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
    EXP_C1, EXP_C2, EXP_C3, EXP_C4, EXP_C5, EXP_MAX, EXP_MIN, LOG2_E, LOG_HALF_H, ROUND_MAGIC,
};
use super::LANES;

/// Where `x` is clamped from above: `round(EXP_CLAMP log2 e) = 128`, so `2^n` is `+inf` there.
/// Between `EXP_MAX` and `127.5 / log2 e = 88.376` the result is the finite `e^x`, as in the
/// AVX-512 copy (the portable one rounds that sliver to `+inf` already).
const EXP_CLAMP: f32 = 88.5;
const _: () = assert!(EXP_CLAMP * LOG2_E > 127.5 && EXP_CLAMP * LOG2_E < 128.5);
const _: () = assert!(EXP_MAX * LOG2_E < 127.5);

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
    pub(super) log2_e: [f32; 8],
    pub(super) magic: [f32; 8],
    pub(super) neg_ln2: [f32; 8],
    /// `EXP_C5, EXP_C4, …, EXP_C1, 1`.
    pub(super) exp_c: [[f32; 8]; 6],
    pub(super) bias: [i32; 8],
    /// `ROUND_MAGIC + 127`: the rounding sum then carries the biased exponent (see
    /// `avx2_loops::exp2`).
    pub(super) magic_biased: [f32; 8],
    pub(super) neg_max: [f32; 8],
    pub(super) sign: [f32; 8],
    pub(super) one: [f32; 8],
    /// `LOG_HALF_H`.
    pub(super) h: [[f32; 8]; 9],
}

pub(super) static CONSTS: Consts = Consts {
    exp_min: [EXP_MIN; 8],
    exp_clamp: [EXP_CLAMP; 8],
    log2_e: [LOG2_E; 8],
    magic: [ROUND_MAGIC; 8],
    neg_ln2: [-std::f32::consts::LN_2; 8],
    exp_c: [
        [EXP_C5; 8],
        [EXP_C4; 8],
        [EXP_C3; 8],
        [EXP_C2; 8],
        [EXP_C1; 8],
        [1.0; 8],
    ],
    bias: [127 << 23; 8],
    magic_biased: [ROUND_MAGIC + 127.0; 8],
    neg_max: [-f32::MAX; 8],
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

/// One constant of the table.
#[inline(always)]
pub(super) unsafe fn k(v: &[f32; 8]) -> __m256 {
    _mm256_load_ps(v.as_ptr())
}

/// `e^x` on 8 lanes, with the constants read from `c`.
///
/// `c` is [`CONSTS`]; where the compiler can see that, it treats the values as constants,
/// which is what `exp16` wants. `exp16_spilled` hands it an opaque reference instead: with 16 registers
/// and some 25 constants the compiler otherwise re-creates each spilled constant with a
/// `vbroadcastss` (50 per 16 pairs, each an FP-pipe operation on Zen 3/4); loads from memory it
/// cannot see into are folded into the arithmetic as memory operands (load ports only).
#[inline(always)]
pub(super) unsafe fn exp8(x: __m256, c: &Consts) -> __m256 {
    // min returns its second operand when one is NaN: NaN passes through. The clamp keeps
    // n <= 128, and n = 128 (every x above EXP_MAX rounds there) makes the exponent field
    // below all ones: 2^n is +inf, and so is the result (p > 0), without a compare and blend.
    exp8_clamped(x, _mm256_min_ps(k(&c.exp_clamp), x), c)
}

/// [`exp8`] of `x` given `xc = min(EXP_CLAMP, x)`; for `x <= 0` (or NaN) `xc` is `x` itself,
/// one instruction saved (the Jensen–Shannon `u = e^d`, `d <= 0`).
#[inline(always)]
pub(super) unsafe fn exp8_clamped(x: __m256, xc: __m256, c: &Consts) -> __m256 {
    // All ones except where x < EXP_MIN (-inf included; NaN compares "not less" and is kept):
    // those lanes are zeroed at the end, so their arithmetic never shows.
    let keep = _mm256_cmp_ps::<_CMP_NLT_UQ>(x, k(&c.exp_min));
    // shifted = 1.5 * 2^23 + n: n is in the low mantissa bits of the sum (see `math::exp`).
    let shifted = _mm256_fmadd_ps(xc, k(&c.log2_e), k(&c.magic));
    let n = _mm256_sub_ps(shifted, k(&c.magic));
    let r = _mm256_fmadd_ps(n, k(&c.neg_ln2), xc);
    let mut p = k(&c.exp_c[0]);
    for coef in &c.exp_c[1..] {
        p = _mm256_fmadd_ps(p, r, k(coef));
    }
    // The bits of `shifted` are those of the magic constant plus n, and the constant's low 9
    // bits are 0: shifting left by 23 leaves n << 23, the exponent field of 2^n less the bias.
    let bits = _mm256_slli_epi32::<23>(_mm256_castps_si256(shifted));
    let bias = _mm256_load_si256(c.bias.as_ptr().cast::<__m256i>());
    let scale = _mm256_castsi256_ps(_mm256_add_epi32(bits, bias));
    _mm256_and_ps(_mm256_mul_ps(p, scale), keep)
}

/// [`super::math::exp`] on 16 lanes.
///
/// # Safety
/// AVX2 and FMA must be present.
#[inline(always)]
pub(super) unsafe fn exp16(x: [f32; LANES]) -> [f32; LANES] {
    let (lo, hi) = load(&x);
    store(exp8(lo, &CONSTS), exp8(hi, &CONSTS))
}

/// [`exp16`] with the constants read from an opaque reference to [`CONSTS`] (see [`exp8`]).
///
/// # Safety
/// AVX2 and FMA must be present.
#[inline(always)]
pub(super) unsafe fn exp16_spilled(x: [f32; LANES]) -> [f32; LANES] {
    // One opaque reference per half: the halves then do not share (and keep live in
    // registers across each other) the constants they load.
    let (c0, c1) = (std::hint::black_box(&CONSTS), std::hint::black_box(&CONSTS));
    let (lo, hi) = load(&x);
    store(exp8(lo, c0), exp8(hi, c1))
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
/// (`-87.33` is `EXP_MIN`, and the next float below it the first one zeroed).
#[cfg(test)]
pub(super) const SPECIAL_VALUES: [f32; 15] = [
    f32::NEG_INFINITY,
    -1e30,
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
    use super::super::{math, Avx2, IsaKind, LANES};

    /// The hand-written `exp16` gives the generic lane loop's bits wherever that one is finite
    /// and nonzero, and the same special values (run outside a `target_feature` frame: slower,
    /// same results).
    #[test]
    fn exp16_is_bit_identical_to_the_lane_loop() {
        if !IsaKind::available().contains(&IsaKind::Avx2) {
            return;
        }
        let mut x = math::EXP_MIN;
        while x <= math::EXP_MAX {
            let lanes: [f32; LANES] = std::array::from_fn(|j| (x + j as f32 * 0.000_37).min(88.37));
            // SAFETY: AVX2 and FMA are present (checked above).
            let hand = unsafe { super::exp16(lanes) };
            let generic = math::exp16_lanes::<Avx2>(lanes);
            for j in 0..LANES {
                assert_eq!(hand[j].to_bits(), generic[j].to_bits(), "exp({})", lanes[j]);
            }
            x += 0.0071;
        }
        let special = [
            f32::NEG_INFINITY,
            -87.5,
            -1e30,
            0.0,
            88.5,
            100.0,
            f32::INFINITY,
            f32::NAN,
        ];
        let mut lanes: [f32; LANES] = std::array::from_fn(|j| special[j % 8]);
        lanes[8] = math::EXP_MIN;
        lanes[9] = f32::from_bits(math::EXP_MIN.to_bits() + 1);
        // x86's default NaN is negative.
        lanes[15] = -f32::NAN;
        // SAFETY: as above.
        let hand = unsafe { super::exp16(lanes) };
        let generic = math::exp16_lanes::<Avx2>(lanes);
        assert_eq!(hand[8].to_bits(), generic[8].to_bits());
        assert!(hand[8] > 0.0 && hand[9] == 0.0 && generic[9] == 0.0);
        assert!(hand[15].is_nan());
        assert_eq!(&hand[..4], &[0.0, 0.0, 0.0, 1.0]);
        assert_eq!(&hand[4..7], &[f32::INFINITY; 3]);
        assert!(hand[7].is_nan());
    }
}
