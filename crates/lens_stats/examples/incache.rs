//! In-cache single-thread throughput of the hot loops per instruction set (best of many runs):
//! `cargo run --release --example incache` (`IC_ISA=avx2`: one copy only). Separates compute
//! speed from memory bandwidth; on a busy shared machine best-of is the figure to compare.

use std::time::Instant;

use lens_stats::divergence::{divergence, Divergence};
use lens_stats::{entropy, maxprob, softmax, target, topk, Exec, IsaKind, Values};

fn best_secs(mut f: impl FnMut()) -> f64 {
    (0..200)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    let (rows, vocab) = (4usize, 50304usize);
    let shape = [rows, vocab];
    let lp: Vec<f32> = (0..rows * vocab)
        .map(|i| -3.0 - ((i * 2654435761) % 1000) as f32 * 0.01)
        .collect();
    let lq: Vec<f32> = lp.iter().rev().copied().collect();
    let bf16: Vec<u16> = lp.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
    let f16: Vec<u16> = vec![0xbc00; lp.len()];
    let targets: Vec<i64> = vec![5; rows];
    let n = (rows * vocab) as f64;
    let mut out = vec![0.0f32; lp.len()];
    // IC_ISA=avx2 (a name as `simd_level()` reports it): that copy only.
    let only = std::env::var("IC_ISA").unwrap_or_default();
    let isas = IsaKind::available()
        .into_iter()
        .filter(|k| only.is_empty() || k.name() == only);
    for isa in isas {
        let e = Exec::with(isa, 1).expect("exec");
        let (x, q) = (Values::F32(&lp), Values::F32(&lq));
        let show = |name: &str, s: f64| println!("{isa:?} {name:16} {:6.2} G elem/s", n / s / 1e9);
        show(
            "entropy",
            best_secs(|| drop(entropy::entropy(&e, x, &shape))),
        );
        show(
            "entropy bf16",
            best_secs(|| drop(entropy::entropy(&e, Values::Bf16(&bf16), &shape))),
        );
        show(
            "entropy f16",
            best_secs(|| drop(entropy::entropy(&e, Values::F16(&f16), &shape))),
        );
        show(
            "from_logits",
            best_secs(|| drop(entropy::entropy_from_logits(&e, x, &shape))),
        );
        show(
            "max_prob",
            best_secs(|| drop(maxprob::max_probability(&e, x, &shape, false))),
        );
        show(
            "rank",
            best_secs(|| drop(target::target_rank(&e, x, &shape, &targets))),
        );
        show(
            "top_k 10",
            best_secs(|| drop(topk::top_k(&e, x, &shape, 10))),
        );
        show(
            "kl",
            best_secs(|| drop(divergence(&e, Divergence::Kl, x, &shape, q, &shape))),
        );
        show(
            "js",
            best_secs(|| drop(divergence(&e, Divergence::Js, x, &shape, q, &shape))),
        );
        show(
            "symmetric_kl",
            best_secs(|| {
                drop(divergence(
                    &e,
                    Divergence::SymmetricKl,
                    x,
                    &shape,
                    q,
                    &shape,
                ))
            }),
        );
        show(
            "max_abs_diff",
            best_secs(|| drop(divergence(&e, Divergence::MaxAbsDiff, x, &shape, q, &shape))),
        );
        show(
            "top_k_delta 10",
            best_secs(|| drop(topk::top_k_delta(&e, x, &shape, q, &shape, 10))),
        );
        show(
            "log_softmax",
            best_secs(|| {
                softmax::log_softmax_into(&e, x, &shape, &mut out, &shape).expect("log_softmax")
            }),
        );
        show(
            "tv",
            best_secs(|| {
                drop(divergence(
                    &e,
                    Divergence::TotalVariation,
                    x,
                    &shape,
                    q,
                    &shape,
                ))
            }),
        );
    }
}
