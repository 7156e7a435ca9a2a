//! Hand-computed values for every kernel, on every instruction set this CPU has.

mod common;

use common::{assert_close, execs};
use lens_stats::divergence::{divergence, Divergence};
use lens_stats::{entropy, forward, marginal, maxprob, softmax, target, topk, Values};

fn ln(x: f64) -> f32 {
    x.ln() as f32
}

const NEG_INF: f32 = f32::NEG_INFINITY;

#[test]
fn logsumexp_and_log_softmax() {
    let x = [0.0, ln(2.0), ln(3.0), 5.0, 5.0, NEG_INF];
    for e in execs() {
        let r = softmax::logsumexp(&e, Values::F32(&x), &[2, 3]).unwrap();
        assert_eq!(r.shape, vec![2]);
        let want1 = 5.0 + 2f64.ln();
        assert_close(&r.data, &[6f64.ln(), want1], 1e-6, 1e-6, "lse");
        let mut out = [0.0f32; 6];
        softmax::log_softmax_into(&e, Values::F32(&x), &[2, 3], &mut out, &[2, 3]).unwrap();
        let l6 = 6f64.ln();
        let want = [
            -l6,
            2f64.ln() - l6,
            3f64.ln() - l6,
            -(2f64.ln()),
            -(2f64.ln()),
            f64::NEG_INFINITY,
        ];
        assert_close(&out, &want, 1e-6, 1e-6, "log_softmax");
    }
}

#[test]
fn entropy_of_known_distributions() {
    // Uniform over 4; two halves plus a masked token (0 log 0 = 0).
    let lp = [
        ln(0.25),
        ln(0.25),
        ln(0.25),
        ln(0.25),
        ln(0.5),
        ln(0.5),
        NEG_INF,
        NEG_INF,
    ];
    let logits = [1.0, 1.0, 1.0, 1.0, 7.0, 7.0, NEG_INF, NEG_INF];
    for e in execs() {
        let h = entropy::entropy(&e, Values::F32(&lp), &[2, 4]).unwrap();
        assert_close(&h.data, &[4f64.ln(), 2f64.ln()], 1e-6, 1e-6, "entropy");
        let h = entropy::entropy_from_logits(&e, Values::F32(&logits), &[2, 4]).unwrap();
        assert_close(
            &h.data,
            &[4f64.ln(), 2f64.ln()],
            1e-6,
            1e-6,
            "entropy_from_logits",
        );
    }
}

#[test]
fn max_probability_with_ties_and_logits() {
    let lp = [ln(0.2), ln(0.5), ln(0.3), ln(0.5), ln(0.5), NEG_INF];
    let logits = [1.0f32, 3.0, 3.0];
    for e in execs() {
        let (p, i) = maxprob::max_probability(&e, Values::F32(&lp), &[2, 3], false).unwrap();
        assert_close(&p.data, &[0.5, 0.5], 1e-6, 0.0, "prob");
        assert_eq!(i.data, vec![1, 0], "ties go to the lower id");
        let (p, i) = maxprob::max_probability(&e, Values::F32(&logits), &[1, 3], true).unwrap();
        let e3 = 3f64.exp();
        assert_close(
            &p.data,
            &[e3 / (1f64.exp() + 2.0 * e3)],
            1e-6,
            0.0,
            "prob from logits",
        );
        assert_eq!(i.data, vec![1]);
    }
}

#[test]
fn target_statistics() {
    let lp = [-1.0f32, -2.0, -1.0, -0.5];
    let shape = [1, 4];
    for e in execs() {
        for (t, rank) in [(0, 2), (1, 4), (2, 2), (3, 1)] {
            let r = target::target_rank(&e, Values::F32(&lp), &shape, &[t]).unwrap();
            assert_eq!(r.data, vec![rank], "rank of {t}");
        }
    }
    let v = target::target_log_prob(Values::F32(&lp), &shape, &[1]).unwrap();
    assert_eq!(v.data, vec![-2.0]);
    let d = target::log_prob_diff(Values::F32(&lp), &shape, &[3], &[1]).unwrap();
    assert_eq!(d.data, vec![1.5]);
}

#[test]
fn divergences_of_known_pairs() {
    // Row 0: p = (.5, .5), q = (.25, .75). Row 1: disjoint supports.
    let p = [ln(0.5), ln(0.5), 0.0, NEG_INF];
    let q = [ln(0.25), ln(0.75), NEG_INF, 0.0];
    let kl0 = 0.5 * 2f64.ln() + 0.5 * (0.5f64 / 0.75).ln();
    let kl_rev = 0.25 * (0.5f64).ln() + 0.75 * (0.75f64 / 0.5).ln();
    let m = [0.375f64, 0.625];
    let js0 = 0.5 * (0.5 * (0.5 / m[0]).ln() + 0.5 * (0.5 / m[1]).ln())
        + 0.5 * (0.25 * (0.25 / m[0]).ln() + 0.75 * (0.75 / m[1]).ln());
    let cases = [
        (Divergence::Kl, [kl0, f64::INFINITY]),
        (Divergence::Js, [js0, 2f64.ln()]),
        (
            Divergence::SymmetricKl,
            [0.5 * (kl0 + kl_rev), f64::INFINITY],
        ),
        (Divergence::TotalVariation, [0.25, 1.0]),
        (Divergence::MaxAbsDiff, [0.25, 1.0]),
    ];
    for e in execs() {
        for (kind, want) in cases {
            let r =
                divergence(&e, kind, Values::F32(&p), &[2, 2], Values::F32(&q), &[2, 2]).unwrap();
            assert_close(&r.data, &want, 2e-6, 1e-7, &format!("{kind:?}"));
        }
        // Identical inputs: exactly zero, masked entries included.
        let same = [ln(0.5), ln(0.5), NEG_INF];
        for kind in [
            Divergence::Kl,
            Divergence::Js,
            Divergence::SymmetricKl,
            Divergence::TotalVariation,
        ] {
            let r =
                divergence(&e, kind, Values::F32(&same), &[3], Values::F32(&same), &[3]).unwrap();
            assert!(
                r.data[0].abs() < 1e-7,
                "{kind:?} of identical rows = {}",
                r.data[0]
            );
        }
    }
}

#[test]
fn forward_kl_matches_pairwise_kl() {
    // (L=2, T=2, V=3) against a (T=2, V=3) reference.
    let layers = [
        ln(0.2),
        ln(0.3),
        ln(0.5),
        ln(0.6),
        ln(0.2),
        ln(0.2), //
        ln(0.1),
        ln(0.1),
        ln(0.8),
        ln(0.3),
        ln(0.3),
        ln(0.4),
    ];
    let reference = [ln(0.5), ln(0.25), ln(0.25), ln(0.1), ln(0.1), ln(0.8)];
    for e in execs() {
        let f = forward::forward_kl(
            &e,
            Values::F32(&layers),
            &[2, 2, 3],
            Values::F32(&reference),
            &[2, 3],
        )
        .unwrap();
        assert_eq!(f.shape, vec![2, 2]);
        let mut want = Vec::new();
        for l in 0..2 {
            for t in 0..2 {
                let row = &layers[(l * 2 + t) * 3..][..3];
                let rf = &reference[t * 3..][..3];
                want.push(
                    (0..3)
                        .map(|v| (rf[v] as f64).exp() * (rf[v] as f64 - row[v] as f64))
                        .sum::<f64>(),
                );
            }
        }
        assert_close(&f.data, &want, 1e-6, 1e-7, "forward_kl");
    }
}

#[test]
fn top_k_and_top_k_delta() {
    let lp = [ln(0.1), ln(0.4), ln(0.4), ln(0.1)];
    let p = [ln(0.5), ln(0.25), ln(0.25)];
    let q = [ln(0.25), ln(0.5), ln(0.25)];
    for e in execs() {
        let (ids, probs) = topk::top_k(&e, Values::F32(&lp), &[4], 3).unwrap();
        assert_eq!(ids.shape, vec![3]);
        assert_eq!(ids.data, vec![1, 2, 0]);
        assert_close(&probs.data, &[0.4, 0.4, 0.1], 1e-6, 0.0, "top_k probs");
        let (ids, deltas) =
            topk::top_k_delta(&e, Values::F32(&p), &[3], Values::F32(&q), &[3], 2).unwrap();
        assert_eq!(ids.data, vec![0, 1], "tie on |delta| goes to the lower id");
        assert_close(&deltas.data, &[-0.25, 0.25], 1e-6, 1e-7, "deltas");
    }
}

#[test]
fn marginal_sums_add_columns() {
    let lp = [ln(0.5), ln(0.5), ln(0.25), ln(0.75), 0.0, NEG_INF];
    for e in execs() {
        let m = marginal::marginal_sums(&e, Values::F32(&lp), &[3, 2]).unwrap();
        assert_eq!(m.rows, 3);
        let want_p = [1.75f64, 1.25];
        for (g, w) in m.sum_probs.iter().zip(want_p) {
            assert!((g - w).abs() < 1e-6, "{g} vs {w}");
        }
        assert!((m.sum_log_probs[0] - (0.125f64).ln()).abs() < 1e-6);
        assert_eq!(m.sum_log_probs[1], f64::NEG_INFINITY);
    }
}
