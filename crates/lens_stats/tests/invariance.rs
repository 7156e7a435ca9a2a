//! Every compiled copy of the hot loops agrees with the portable one, and results are
//! bit-identical for any thread count.

mod common;

use common::{bits, log_softmax64, Rng};
use lens_stats::divergence::{divergence, Divergence};
use lens_stats::{
    entropy, forward, marginal, maxprob, softmax, target, topk, Exec, IsaKind, Values,
};

/// Every statistic on one input pair, flattened to comparable parts.
#[derive(Debug, PartialEq)]
struct Everything {
    floats: Vec<Vec<f32>>,
    ints: Vec<Vec<i64>>,
    marginals: Vec<f64>,
}

fn everything(e: &Exec, lp: &[f32], lq: &[f32], shape: &[usize]) -> Everything {
    let (x, y) = (Values::F32(lp), Values::F32(lq));
    let rows: usize = shape[..shape.len() - 1].iter().product();
    let v = shape[shape.len() - 1];
    let targets: Vec<i64> = (0..rows as i64).map(|r| (r * 31) % v as i64).collect();
    let mut lsm = vec![0.0f32; lp.len()];
    softmax::log_softmax_into(e, x, shape, &mut lsm, shape).unwrap();
    let mut floats = vec![
        lsm,
        softmax::logsumexp(e, x, shape).unwrap().data,
        entropy::entropy(e, x, shape).unwrap().data,
        entropy::entropy_from_logits(e, x, shape).unwrap().data,
        maxprob::max_probability(e, x, shape, true).unwrap().0.data,
    ];
    for kind in [
        Divergence::Kl,
        Divergence::Js,
        Divergence::SymmetricKl,
        Divergence::TotalVariation,
        Divergence::MaxAbsDiff,
    ] {
        floats.push(divergence(e, kind, x, shape, y, shape).unwrap().data);
    }
    let (top_ids, top_p) = topk::top_k(e, x, shape, 7.min(v as i64)).unwrap();
    let (delta_ids, deltas) = topk::top_k_delta(e, x, shape, y, shape, 7.min(v as i64)).unwrap();
    floats.extend([top_p.data, deltas.data]);
    // forward_kl: treat the leading axis as layers against the first layer as reference.
    let layers = shape[0];
    let t = rows / layers;
    let fshape = [layers, t, v];
    floats.push(
        forward::forward_kl(e, x, &fshape, y, &fshape[1..])
            .map(|r| r.data)
            .unwrap_or_default(),
    );
    let ints = vec![
        top_ids.data,
        delta_ids.data,
        target::target_rank(e, x, shape, &targets).unwrap().data,
        maxprob::max_probability(e, x, shape, false).unwrap().1.data,
    ];
    let m = marginal::marginal_sums(e, x, shape).unwrap();
    Everything {
        floats,
        ints,
        marginals: [m.sum_probs, m.sum_log_probs].concat(),
    }
}

fn inputs(rows: usize, v: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let mut lp = log_softmax64(&rng.logits(rows * v, 8.0), v);
    let lq = log_softmax64(&rng.logits(rows * v, 8.0), v);
    // Masked tokens in a few places.
    for i in (0..lp.len()).step_by(97) {
        lp[i] = f32::NEG_INFINITY;
    }
    (lp, lq)
}

#[test]
fn bit_identical_for_any_thread_count() {
    for (layers, t, v) in [(4, 300, 19), (3, 5, 50304), (2, 2, 3)] {
        let (lp, lq) = inputs(layers * t, v, 3);
        let shape = [layers, t, v];
        for isa in IsaKind::available() {
            let one = everything(&Exec::with(isa, 1).unwrap(), &lp, &lq, &shape);
            for threads in [2, 3, 7] {
                let many = everything(&Exec::with(isa, threads).unwrap(), &lp, &lq, &shape);
                for (a, b) in one.floats.iter().zip(&many.floats) {
                    assert_eq!(bits(a), bits(b), "{isa:?}, {threads} threads, V = {v}");
                }
                assert_eq!(one.ints, many.ints);
                let to_bits = |m: &[f64]| m.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(to_bits(&one.marginals), to_bits(&many.marginals));
            }
        }
    }
}

#[test]
fn simd_paths_agree_with_portable() {
    for (layers, t, v) in [(3, 7, 1000), (2, 3, 50304), (2, 2, 21)] {
        let (lp, lq) = inputs(layers * t, v, 5);
        let shape = [layers, t, v];
        let portable = everything(&Exec::with(IsaKind::Portable, 2).unwrap(), &lp, &lq, &shape);
        for isa in IsaKind::available() {
            let got = everything(&Exec::with(isa, 2).unwrap(), &lp, &lq, &shape);
            for (i, (a, b)) in portable.floats.iter().zip(&got.floats).enumerate() {
                for (x, y) in a.iter().zip(b) {
                    // Relative, with an absolute floor: a log-sum-exp of normalised rows sits
                    // near 0 and carries the absolute error of its O(1) inputs. The AVX2 copy
                    // computes another exponential (`math::exp_table`; each within ~1.5 ulp of
                    // e^x, as the portable one), so its sums differ by up to ~2 ulp, not only by
                    // the rounding of fused multiply-adds: 1e-7 at a log-sum-exp near 0.
                    let ok = (x.is_nan() && y.is_nan())
                        || x == y
                        || (x - y).abs() <= 2e-6 * x.abs().max(5e-2);
                    assert!(ok, "{isa:?} statistic #{i}: {x} vs {y}");
                }
            }
            // Ids can only differ on near-ties; the random data here has none.
            assert_eq!(portable.ints, got.ints, "{isa:?}");
            for (x, y) in portable.marginals.iter().zip(&got.marginals) {
                assert!(
                    x == y || (x - y).abs() <= 1e-6 * x.abs(),
                    "{isa:?} marginals {x} vs {y}"
                );
            }
        }
    }
}
