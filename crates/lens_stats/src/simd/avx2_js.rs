//! The AVX2 + FMA Jensen–Shannon terms of 16 pairs ([`super::math::js16_lanes_with`], Estrin) as
//! one `asm!` block (its exponentials are `avx2_loops::exp2`).
//!
//! Written with intrinsics (two 8-lane halves, 23 constants) the JS loop took ~160 instructions
//! per 16 pairs, ~50 of them loads: each constant was a memory operand of each half, or
//! re-created by `vbroadcastss`, or spilled, as the compiler's register allocation went. Here
//! both halves run their `exp`s in lock step, then the `ln((1 + u)/2)` polynomial half after
//! half: ~115 instructions, 13 registers. Constants are memory operands wherever an
//! instruction can take one (a folded load takes no register: these loops are bound by the
//! vector registers in flight across their long chains; JS 1.19 -> 1.28 G pairs/s against
//! loading them into registers), else loaded once for both halves. The operations and their order per lane are those of
//! the intrinsics form, so the results are bit for bit the same.
//!
//! Every function here is `unsafe`: it may only run on a CPU with AVX2 and FMA (see `avx2.rs`).

#[cfg(target_arch = "x86")]
use std::arch::x86::*;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::mem::offset_of;

use super::avx2::{load, store, Consts, CONSTS};
use super::avx2_loops::{asm_with_exp2, exp2};
use super::LANES;

/// The rest of one half's term from `{$d}` (= d), `{$ph}` (= p_high), `{$u}` (= u): the term in
/// `{$pl}`; temporaries `{v8}`-`{v12}`. `p_low = p_high u`, Estrin's `H(u)` (coefficients as
/// memory operands), `g = H (u - 1)`, `p_low d - g (p_high + p_low)` rounded once.
macro_rules! tail {
    ($d:literal, $ph:literal, $u:literal, $pl:literal) => {
        concat!(
            "vmulps {",
            $u,
            "}, {",
            $ph,
            "}, {",
            $pl,
            "}\n",
            "vaddps {",
            $pl,
            "}, {",
            $ph,
            "}, {",
            $ph,
            "}\n",
            "vmulps {",
            $u,
            "}, {",
            $u,
            "}, {v8}\n",
            "vmulps {v8}, {v8}, {v9}\n",
            "vmovaps {o_h}+32({c}), {v10}\n",
            "vfmadd213ps {o_h}({c}), {",
            $u,
            "}, {v10}\n",
            "vmovaps {o_h}+96({c}), {v11}\n",
            "vfmadd213ps {o_h}+64({c}), {",
            $u,
            "}, {v11}\n",
            "vfmadd213ps {v10}, {v8}, {v11}\n",
            "vmovaps {o_h}+160({c}), {v10}\n",
            "vfmadd213ps {o_h}+128({c}), {",
            $u,
            "}, {v10}\n",
            "vmovaps {o_h}+224({c}), {v12}\n",
            "vfmadd213ps {o_h}+192({c}), {",
            $u,
            "}, {v12}\n",
            "vfmadd213ps {v10}, {v8}, {v12}\n",
            "vmovaps {o_h}+256({c}), {v10}\n",
            "vfmadd213ps {v12}, {v9}, {v10}\n",
            "vfmadd213ps {v11}, {v9}, {v10}\n",
            "vsubps {o_one}({c}), {",
            $u,
            "}, {",
            $u,
            "}\n",
            "vmulps {",
            $u,
            "}, {v10}, {v10}\n",
            "vmulps {",
            $ph,
            "}, {v10}, {v10}\n",
            "vfmsub213ps {v10}, {",
            $d,
            "}, {",
            $pl,
            "}\n",
        )
    };
}

/// [`super::math::js16_lanes_with`] (Estrin) on 16 lanes. (`#[inline]`, not `always`, which
/// `target_feature` rules out: it is inlined into the AVX2 frame, whose features include these.)
///
/// # Safety
/// AVX2 and FMA must be present.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn js16(lp: [f32; LANES], lq: [f32; LANES]) -> [f32; LANES] {
    let ((p0, p1), (q0, q1)) = (load(&lp), load(&lq));
    let (t0, t1): (__m256, __m256);
    // SAFETY: reads only `CONSTS` (in bounds: every offset is a field of it, and the `h` table
    // has 9 entries of 32 bytes) and registers; AVX2 and FMA are present (the caller's contract).
    asm_with_exp2!(
        // underflow_floor: `max(EXP8_FLOOR, x)` returns x when x is NaN (the second operand).
        "vmovaps {o_floor}({c}), {v4}",
        "vmaxps {v0}, {v4}, {v0}",
        "vmaxps {v1}, {v4}, {v1}",
        "vmaxps {v2}, {v4}, {v2}",
        "vmaxps {v3}, {v4}, {v3}",
        // high = `x > y ? x : y`; d = -|x - y| (the sign bit set), floored for the unmasked
        // exp (where that changes d, u = 0 and p_low d is 0 either way).
        "vmaxps {v2}, {v0}, {v5}",
        "vmaxps {v3}, {v1}, {v6}",
        "vsubps {v2}, {v0}, {v0}",
        "vsubps {v3}, {v1}, {v1}",
        "vorps {o_sign}({c}), {v0}, {v0}",
        "vorps {o_sign}({c}), {v1}, {v1}",
        "vmaxps {v0}, {v4}, {v0}",
        "vmaxps {v1}, {v4}, {v1}",
        // u = e^d first, the longer chain (d <= 0 or NaN: no clamp from above).
        exp2!("v0", "v1", "v2", "v3"),
        // p_high = e^high, clamped from above (high >= EXP8_FLOOR already).
        "vmovaps {o_clamp}({c}), {v4}",
        "vminps {v5}, {v4}, {v5}",
        "vminps {v6}, {v4}, {v6}",
        exp2!("v5", "v6", "v5", "v6"),
        tail!("v0", "v5", "v2", "v7"),
        tail!("v1", "v6", "v3", "v4"),
        v0 = inout(ymm_reg) p0 => _, v1 = inout(ymm_reg) p1 => _,
        v2 = inout(ymm_reg) q0 => _, v3 = inout(ymm_reg) q1 => _,
        v4 = out(ymm_reg) t1, v5 = out(ymm_reg) _, v6 = out(ymm_reg) _,
        v7 = out(ymm_reg) t0, v8 = out(ymm_reg) _, v9 = out(ymm_reg) _,
        v10 = out(ymm_reg) _, v11 = out(ymm_reg) _, v12 = out(ymm_reg) _,
        o_sign = const offset_of!(Consts, sign),
        o_clamp = const offset_of!(Consts, exp_clamp),
        o_h = const offset_of!(Consts, h),
        o_one = const offset_of!(Consts, one),
        options(att_syntax, nostack, readonly, preserves_flags, pure),
    );
    store(t0, t1)
}

#[cfg(test)]
mod tests {
    use super::super::{math, Avx2, IsaKind, LANES};

    /// The hand-written `js16` gives the generic lane form's bits, special values included
    /// (`-inf` on one or both sides, NaN, huge, tiny, equal entries, far-apart entries).
    #[test]
    fn js16_is_bit_identical_to_the_lane_form() {
        if !IsaKind::available().contains(&IsaKind::Avx2) {
            return;
        }
        let special = [
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            -200.0,
            -90.0,
            -87.33,
            0.0,
            -1e-7,
            -1e-40,
            -1e30,
            50.0,
            88.4,
            100.0,
            f32::INFINITY,
        ];
        let mut cases: Vec<(f32, f32)> = Vec::new();
        for &a in &special {
            for &b in &special {
                cases.push((a, b));
            }
        }
        for i in 0..20_000 {
            let x = -(i as f32) * 0.0037;
            cases.push((x, -((i * 7919 % 20_000) as f32) * 0.0041));
            cases.push((x, x - 1e-3 * (i % 17) as f32));
        }
        for chunk in cases.chunks(LANES) {
            let lp: [f32; LANES] = std::array::from_fn(|j| chunk.get(j).map_or(-1.0, |c| c.0));
            let lq: [f32; LANES] = std::array::from_fn(|j| chunk.get(j).map_or(-2.0, |c| c.1));
            // SAFETY: AVX2 and FMA are present (checked above).
            let hand = unsafe { super::js16(lp, lq) };
            let generic = math::js16_lanes_with::<Avx2, true>(lp, lq);
            for j in 0..LANES {
                if hand[j].is_nan() && generic[j].is_nan() {
                    continue; // the sign of a NaN is not specified
                }
                assert_eq!(
                    hand[j].to_bits(),
                    generic[j].to_bits(),
                    "js({}, {}): {} vs {}",
                    lp[j],
                    lq[j],
                    hand[j],
                    generic[j]
                );
            }
        }
    }
}
