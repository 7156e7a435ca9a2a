//! f32 vs bf16 out of cache: `cargo run --release --example bf16_bench [rows] [vocab]`.
//! Prints ms per kernel and the bf16/f32 speed ratio on the default pool and on 1 thread.

mod common;

use common::{log_prob_inputs, median_secs};
use lens_stats::divergence::{divergence, Divergence};
use lens_stats::{entropy, forward, maxprob, topk, Exec, IsaKind, Values};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(13 * 64);
    let vocab = args.get(1).copied().unwrap_or(50304);
    let layers = 13;
    let shape = [rows, vocab];
    let exec = Exec::current().expect("pool");
    let (_, lp, lq) = log_prob_inputs(&exec, rows, vocab);
    let bf = |v: &[f32]| -> Vec<u16> { v.iter().map(|x| (x.to_bits() >> 16) as u16).collect() };
    let (bp, bq) = (bf(&lp), bf(&lq));
    let positions = rows / layers;
    let fshape = [layers, positions, vocab];
    let rshape = [positions, vocab];
    let reference = &lq[..positions * vocab];
    let bref = &bq[..positions * vocab];
    let isa = IsaKind::detect();
    for n in [exec.threads(), 1] {
        let e = Exec::with(isa, n).expect("exec");
        let pair = |name: &str, f32_run: &dyn Fn(), bf_run: &dyn Fn()| {
            let a = median_secs(7, f32_run);
            let b = median_secs(7, bf_run);
            println!(
                "{isa:?} t={n} {name:16} f32 {:7.1} ms  bf16 {:7.1} ms  bf16 speed-up {:.2}x",
                a * 1e3,
                b * 1e3,
                a / b
            );
        };
        let (x, q, bx, bqv) = (
            Values::F32(&lp),
            Values::F32(&lq),
            Values::Bf16(&bp),
            Values::Bf16(&bq),
        );
        pair(
            "entropy",
            &|| drop(entropy::entropy(&e, x, &shape)),
            &|| drop(entropy::entropy(&e, bx, &shape)),
        );
        pair(
            "max_probability",
            &|| drop(maxprob::max_probability(&e, x, &shape, false)),
            &|| drop(maxprob::max_probability(&e, bx, &shape, false)),
        );
        pair(
            "kl",
            &|| drop(divergence(&e, Divergence::Kl, x, &shape, q, &shape)),
            &|| drop(divergence(&e, Divergence::Kl, bx, &shape, bqv, &shape)),
        );
        pair(
            "forward_kl",
            &|| {
                drop(forward::forward_kl(
                    &e,
                    Values::F32(&lp[..layers * positions * vocab]),
                    &fshape,
                    Values::F32(reference),
                    &rshape,
                ))
            },
            &|| {
                drop(forward::forward_kl(
                    &e,
                    Values::Bf16(&bp[..layers * positions * vocab]),
                    &fshape,
                    Values::Bf16(bref),
                    &rshape,
                ))
            },
        );
        pair(
            "top_k 10",
            &|| drop(topk::top_k(&e, x, &shape, 10)),
            &|| drop(topk::top_k(&e, bx, &shape, 10)),
        );
    }
}
