//! Special values, extreme vocabularies, element types and validation errors.

mod common;

use common::{assert_close, exec, execs, log_softmax64, Rng};
use lens_stats::divergence::{divergence, Divergence};
use lens_stats::{entropy, forward, marginal, maxprob, softmax, target, topk, StatsError, Values};

const ALL_DIVERGENCES: [Divergence; 5] = [
    Divergence::Kl,
    Divergence::Js,
    Divergence::SymmetricKl,
    Divergence::TotalVariation,
    Divergence::MaxAbsDiff,
];

#[test]
fn nan_poisons_only_its_own_row() {
    let v = 37;
    let mut rng = Rng::new(1);
    let mut lp = log_softmax64(&rng.logits(3 * v, 4.0), v);
    let lq = log_softmax64(&rng.logits(3 * v, 4.0), v);
    lp[v + 5] = f32::NAN; // row 1 only
    let shape = [3, v];
    for e in execs() {
        let x = Values::F32(&lp);
        let check = |got: &[f32], what: &str| {
            assert!(
                got[0].is_finite() && got[2].is_finite(),
                "{what}: other rows {got:?}"
            );
            assert!(got[1].is_nan(), "{what}: row 1 = {}", got[1]);
        };
        check(&entropy::entropy(&e, x, &shape).unwrap().data, "entropy");
        check(
            &entropy::entropy_from_logits(&e, x, &shape).unwrap().data,
            "entropy_from_logits",
        );
        check(
            &softmax::logsumexp(&e, x, &shape).unwrap().data,
            "logsumexp",
        );
        check(
            &maxprob::max_probability(&e, x, &shape, false)
                .unwrap()
                .0
                .data,
            "max_probability",
        );
        check(
            &maxprob::max_probability(&e, x, &shape, true)
                .unwrap()
                .0
                .data,
            "max_prob logits",
        );
        for kind in ALL_DIVERGENCES {
            let r = divergence(&e, kind, x, &shape, Values::F32(&lq), &shape).unwrap();
            check(&r.data, &format!("{kind:?}(p, q)"));
            let r = divergence(&e, kind, Values::F32(&lq), &shape, x, &shape).unwrap();
            check(&r.data, &format!("{kind:?}(q, p)"));
        }
        let (_, probs) = topk::top_k(&e, x, &shape, 3).unwrap();
        check(&[probs.data[0], probs.data[3], probs.data[6]], "top_k");
        let (_, d) = topk::top_k_delta(&e, x, &shape, Values::F32(&lq), &shape, 3).unwrap();
        check(&[d.data[0], d.data[3], d.data[6]], "top_k_delta");
        let f = forward::forward_kl(
            &e,
            Values::F32(&lq),
            &[3, 1, v],
            Values::F32(&lp[v..2 * v]),
            &[1, v],
        )
        .unwrap();
        assert!(
            f.data.iter().all(|k| k.is_nan()),
            "forward_kl with a NaN reference"
        );
        let ranks = target::target_rank(&e, x, &shape, &[0, 5, 0]).unwrap();
        assert_eq!(ranks.data[1], v as i64, "a NaN target gets the worst rank");
        let mut out = vec![0.0f32; lp.len()];
        softmax::log_softmax_into(&e, x, &shape, &mut out, &shape).unwrap();
        assert!(out[v..2 * v].iter().all(|o| o.is_nan()) && out[..v].iter().all(|o| o.is_finite()));
    }
}

#[test]
fn masked_tokens_and_infinities() {
    // exp(lp) underflows to exactly 0 for masked tokens, so they add nothing.
    let lp = [0.0f32, -100.0, f32::NEG_INFINITY, -1e30];
    let q = [f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for e in execs() {
        assert_eq!(
            entropy::entropy(&e, Values::F32(&lp), &[4]).unwrap().data,
            vec![0.0]
        );
        let kl = divergence(
            &e,
            Divergence::Kl,
            Values::F32(&lp),
            &[4],
            Values::F32(&q),
            &[4],
        )
        .unwrap();
        assert_eq!(kl.data, vec![f32::INFINITY], "KL = +inf where q = 0 < p");
        let kl = divergence(
            &e,
            Divergence::Kl,
            Values::F32(&q),
            &[4],
            Values::F32(&q),
            &[4],
        )
        .unwrap();
        assert_eq!(kl.data, vec![0.0]);
        // A fully masked row: no distribution.
        let masked = [f32::NEG_INFINITY; 5];
        let lse = softmax::logsumexp(&e, Values::F32(&masked), &[5]).unwrap();
        assert_eq!(lse.data, vec![f32::NEG_INFINITY]);
        assert!(entropy::entropy_from_logits(&e, Values::F32(&masked), &[5])
            .unwrap()
            .data[0]
            .is_nan());
        assert_eq!(
            entropy::entropy(&e, Values::F32(&masked), &[5])
                .unwrap()
                .data,
            vec![0.0]
        );
        let (p, i) = maxprob::max_probability(&e, Values::F32(&masked), &[5], false).unwrap();
        assert_eq!((p.data[0], i.data[0]), (0.0, 0));
        let (ids, _) = topk::top_k(&e, Values::F32(&masked), &[5], 5).unwrap();
        assert_eq!(ids.data, vec![0, 1, 2, 3, 4]);
    }
}

#[test]
fn vocabulary_of_one() {
    let x = [3.5f32, -2.0];
    let lp = [0.0f32, 0.0];
    for e in execs() {
        let mut out = [1.0f32; 2];
        softmax::log_softmax_into(&e, Values::F32(&x), &[2, 1], &mut out, &[2, 1]).unwrap();
        assert_eq!(out, [0.0, 0.0]);
        assert_eq!(
            entropy::entropy(&e, Values::F32(&lp), &[2, 1])
                .unwrap()
                .data,
            vec![0.0, 0.0]
        );
        assert_eq!(
            entropy::entropy_from_logits(&e, Values::F32(&x), &[2, 1])
                .unwrap()
                .data,
            vec![0.0, 0.0]
        );
        assert_eq!(
            target::target_rank(&e, Values::F32(&lp), &[2, 1], &[0, 0])
                .unwrap()
                .data,
            vec![1, 1]
        );
        let (ids, probs) = topk::top_k(&e, Values::F32(&lp), &[2, 1], 1).unwrap();
        assert_eq!((ids.data, probs.data), (vec![0, 0], vec![1.0, 1.0]));
        for kind in ALL_DIVERGENCES {
            let r = divergence(
                &e,
                kind,
                Values::F32(&lp),
                &[2, 1],
                Values::F32(&lp),
                &[2, 1],
            )
            .unwrap();
            assert_eq!(r.data, vec![0.0, 0.0], "{kind:?}");
        }
    }
}

#[test]
fn vocabulary_of_262144() {
    let v = 262_144;
    let mut rng = Rng::new(7);
    let lp = log_softmax64(&rng.logits(2 * v, 6.0), v);
    let lq = log_softmax64(&rng.logits(2 * v, 6.0), v);
    let mut want_h = Vec::new();
    let mut want_kl = Vec::new();
    for r in 0..2 {
        let (a, b) = (&lp[r * v..(r + 1) * v], &lq[r * v..(r + 1) * v]);
        want_h.push(-a.iter().map(|&x| (x as f64).exp() * x as f64).sum::<f64>());
        want_kl.push(
            a.iter()
                .zip(b)
                .map(|(&x, &y)| (x as f64).exp() * (x as f64 - y as f64))
                .sum::<f64>(),
        );
    }
    for e in execs() {
        let h = entropy::entropy(&e, Values::F32(&lp), &[2, v]).unwrap();
        assert_close(&h.data, &want_h, 2e-6, 0.0, "entropy V=262144");
        let kl = divergence(
            &e,
            Divergence::Kl,
            Values::F32(&lp),
            &[2, v],
            Values::F32(&lq),
            &[2, v],
        )
        .unwrap();
        assert_close(&kl.data, &want_kl, 1e-5, 1e-6, "kl V=262144");
        let (ids, _) = topk::top_k(&e, Values::F32(&lp), &[2, v], 64).unwrap();
        let best = (0..v)
            .max_by(|&a, &b| lp[a].total_cmp(&lp[b]).then(b.cmp(&a)))
            .unwrap();
        assert_eq!(ids.data[0], best as i64);
    }
}

/// `log_softmax_into` writes the same values whatever the alignment of `out` (streaming stores
/// need 64-byte boundaries: a plain head, streamed middle, plain tail).
#[test]
fn log_softmax_into_any_output_alignment() {
    let (rows, v) = (3, 1037);
    let logits = Rng::new(5).logits(rows * v, 4.0);
    let want: Vec<f64> = log_softmax64(&logits, v)
        .iter()
        .map(|&x| x as f64)
        .collect();
    let mut buffer = vec![f32::NAN; rows * v + 16];
    for e in execs() {
        for offset in 0..16 {
            let out = &mut buffer[offset..offset + rows * v];
            softmax::log_softmax_into(&e, Values::F32(&logits), &[rows, v], out, &[rows, v])
                .unwrap();
            assert_close(
                out,
                &want,
                1e-6,
                1e-6,
                &format!("log_softmax, offset {offset}"),
            );
        }
    }
}

/// Logits whose maximum grows across the row (gradually, and by far more than the 60 nats a
/// block may exceed the running shift by before it is redone): the one-pass normalisers agree
/// with an f64 oracle, also for a first block that is fully masked.
#[test]
fn normalisers_follow_a_growing_maximum() {
    let v = 5000;
    let mut rng = Rng::new(11);
    let noise = rng.logits(4 * v, 2.0);
    let mut rows = Vec::with_capacity(4 * v);
    for r in 0..4 {
        for i in 0..v {
            let x = noise[r * v + i];
            rows.push(match r {
                0 => x + i as f32 * 0.01,                     // drifts up by 50 nats
                1 => x + if i < 3000 { -200.0 } else { 0.0 }, // jumps by 200 nats in block 2
                2 => {
                    if i < 2048 {
                        f32::NEG_INFINITY
                    } else {
                        x - 500.0
                    }
                } // masked first blocks
                _ => x + 300.0 * (i as f32 / v as f32).powi(3), // steep late growth
            });
        }
    }
    let mut want_lse = Vec::new();
    let mut want_h = Vec::new();
    for r in 0..4 {
        let row: Vec<f64> = rows[r * v..(r + 1) * v].iter().map(|&x| x as f64).collect();
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = row.iter().map(|x| (x - m).exp()).sum();
        let lse = m + s.ln();
        want_lse.push(lse);
        want_h.push(
            -row.iter()
                .map(|x| {
                    let lp = x - lse;
                    if lp == f64::NEG_INFINITY {
                        0.0
                    } else {
                        lp.exp() * lp
                    }
                })
                .sum::<f64>(),
        );
    }
    for e in execs() {
        let x = Values::F32(&rows);
        let lse = softmax::logsumexp(&e, x, &[4, v]).unwrap();
        assert_close(&lse.data, &want_lse, 1e-6, 1e-6, "logsumexp, growing max");
        let h = entropy::entropy_from_logits(&e, x, &[4, v]).unwrap();
        assert_close(
            &h.data,
            &want_h,
            1e-5,
            1e-6,
            "entropy_from_logits, growing max",
        );
    }
}

/// f32 values exactly representable in f16 and bf16 (multiples of 1/8 in [-20, 0]).
fn representable(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| -(rng.next_f64() * 160.0).floor() as f32 / 8.0)
        .collect()
}

fn to_f16(x: f32) -> u16 {
    // Exact for the values above: normal halves, 10-bit mantissa suffices.
    if x == 0.0 {
        return 0;
    }
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32 - 127 + 15;
    let mant = ((bits >> 13) & 0x3ff) as u16;
    sign | ((exp as u16) << 10) | mant
}

#[test]
fn half_precision_and_f64_agree_with_f32() {
    let v = 1000;
    let x = representable(3 * v, 11);
    let shape = [3, v];
    let h: Vec<u16> = x.iter().map(|&f| to_f16(f)).collect();
    let b: Vec<u16> = x.iter().map(|&f| (f.to_bits() >> 16) as u16).collect();
    let d: Vec<f64> = x.iter().map(|&f| f as f64).collect();
    for e in execs() {
        let want = entropy::entropy_from_logits(&e, Values::F32(&x), &shape).unwrap();
        for (name, values) in [
            ("f16", Values::F16(&h)),
            ("bf16", Values::Bf16(&b)),
            ("f64", Values::F64(&d)),
        ] {
            let got = entropy::entropy_from_logits(&e, values, &shape).unwrap();
            assert_eq!(got, want, "{name} on {:?}", e.isa);
            let t = topk::top_k(&e, values, &shape, 5).unwrap();
            assert_eq!(
                t,
                topk::top_k(&e, Values::F32(&x), &shape, 5).unwrap(),
                "{name} top_k"
            );
        }
    }
}

#[test]
fn validation_errors_name_the_argument() {
    let e = exec();
    let x = [0.0f32; 6];
    let err = entropy::entropy(&e, Values::F32(&x), &[]).unwrap_err();
    assert!(
        matches!(
            err,
            StatsError::Shape {
                arg: "log_probs",
                ..
            }
        ),
        "{err}"
    );
    let err = entropy::entropy(&e, Values::F32(&[]), &[3, 0]).unwrap_err();
    assert!(
        matches!(err, StatsError::Shape { .. }) && err.to_string().contains("(3, 0)"),
        "{err}"
    );
    // Zero rows is fine.
    assert_eq!(
        entropy::entropy(&e, Values::F32(&[]), &[0, 4])
            .unwrap()
            .shape,
        vec![0]
    );
    let err = divergence(
        &e,
        Divergence::Kl,
        Values::F32(&x),
        &[2, 3],
        Values::F32(&x),
        &[3, 2],
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("log_q") && msg.contains("(3, 2)") && msg.contains("(2, 3)"),
        "{msg}"
    );
    let h = [0u16; 6];
    let err = divergence(
        &e,
        Divergence::Kl,
        Values::F32(&x),
        &[2, 3],
        Values::Bf16(&h),
        &[2, 3],
    )
    .unwrap_err();
    assert!(
        matches!(err, StatsError::DType { arg: "log_q", .. }),
        "{err}"
    );
    let err = target::target_rank(&e, Values::F32(&x), &[2, 3], &[0, 3]).unwrap_err();
    assert_eq!(
        err,
        StatsError::TargetIndex {
            arg: "targets",
            value: 3,
            vocab: 3
        }
    );
    assert!(err.to_string().contains('3'));
    let err = target::target_log_prob(Values::F32(&x), &[2, 3], &[-1, 0]).unwrap_err();
    assert!(matches!(err, StatsError::TargetIndex { value: -1, .. }));
    for k in [0, 4, 65] {
        let err = topk::top_k(&e, Values::F32(&x), &[2, 3], k).unwrap_err();
        assert!(
            matches!(err, StatsError::Value { arg: "k", .. }),
            "k = {k}: {err}"
        );
    }
    let err = forward::forward_kl(
        &e,
        Values::F32(&x),
        &[1, 2, 3],
        Values::F32(&x[..3]),
        &[1, 3],
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            StatsError::Shape {
                arg: "reference",
                ..
            }
        ),
        "{err}"
    );
    let mut out = [0.0f32; 5];
    let err = softmax::log_softmax_into(&e, Values::F32(&x), &[2, 3], &mut out, &[5]).unwrap_err();
    assert!(matches!(err, StatsError::Shape { arg: "out", .. }), "{err}");
    let err = marginal::marginal_sums(&e, Values::F32(&x), &[4, 3]).unwrap_err();
    assert!(
        matches!(err, StatsError::Shape { .. }),
        "length mismatch: {err}"
    );
}

#[test]
fn logsumexp_of_a_row_with_inf_is_inf() {
    let v = 41; // a SIMD body and a tail
    let mut x = vec![0.5f32; 4 * v];
    x[3] = f32::INFINITY; // row 0: early
    x[2 * v - 1] = f32::INFINITY; // row 1: in the tail
    x[2 * v] = f32::NEG_INFINITY; // row 2: +inf beside -inf and a NaN
    x[2 * v + 20] = f32::INFINITY;
    x[2 * v + 30] = f32::NAN;
    let shape = [4, v];
    for e in execs() {
        let lse = softmax::logsumexp(&e, Values::F32(&x), &shape)
            .unwrap()
            .data;
        assert_eq!(&lse[..2], &[f32::INFINITY; 2], "rows holding +inf");
        assert!(lse[2].is_nan(), "a NaN wins over +inf: {}", lse[2]);
        assert!((lse[3] as f64 - (0.5 + (v as f64).ln())).abs() < 1e-5);
        // The normaliser of log_softmax stays undefined: no distribution.
        let mut out = vec![0.0f32; x.len()];
        softmax::log_softmax_into(&e, Values::F32(&x), &shape, &mut out, &shape).unwrap();
        assert!(out[..v].iter().any(|o| o.is_nan()));
    }
}

#[test]
fn top_k_rows_holding_a_nan_give_ids_in_order() {
    let v = 300;
    let mut rng = Rng::new(7);
    let mut lp = log_softmax64(&rng.logits(3 * v, 4.0), v);
    let lq = log_softmax64(&rng.logits(3 * v, 4.0), v);
    lp[v + 250] = f32::NAN; // row 1, late
    let shape = [3, v];
    for e in execs() {
        for k in [1, 4, 64] {
            let (ids, probs) = topk::top_k(&e, Values::F32(&lp), &shape, k as i64).unwrap();
            let expected: Vec<i64> = (0..k as i64).collect();
            assert_eq!(&ids.data[k..2 * k], &expected[..], "k = {k}");
            assert!(probs.data[k..2 * k].iter().all(|p| p.is_nan()));
            assert!(probs.data[..k].iter().all(|p| p.is_finite()));
            let (ids, d) = topk::top_k_delta(
                &e,
                Values::F32(&lp),
                &shape,
                Values::F32(&lq),
                &shape,
                k as i64,
            )
            .unwrap();
            assert_eq!(&ids.data[k..2 * k], &expected[..], "delta, k = {k}");
            assert!(d.data[k..2 * k].iter().all(|p| p.is_nan()));
        }
    }
}

#[test]
fn thread_counts_above_the_limit_are_refused() {
    let limit = lens_stats::pool::max_threads();
    assert!(limit >= 64);
    let err = lens_stats::pool::set_num_threads(Some(limit + 1)).unwrap_err();
    assert!(matches!(err, StatsError::Value { arg: "n", .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("the limit is {limit} threads")),
        "{err}"
    );
}
