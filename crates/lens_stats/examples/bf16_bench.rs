//! f32 vs bf16 out of cache: `cargo run --release --example bf16_bench [rows] [vocab]`.
//! Prints ms per kernel and the bf16/f32 speed ratio on the default pool and on 1 thread.

use std::time::Instant;

use lens_stats::divergence::{divergence, Divergence};
use lens_stats::{entropy, forward, maxprob, softmax, topk, Exec, IsaKind, Values};

fn median_secs(mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[3]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(13 * 64);
    let vocab = args.get(1).copied().unwrap_or(50304);
    let layers = 13;
    let shape = [rows, vocab];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let logits: Vec<f32> = (0..rows * vocab)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 12.0 - 6.0
        })
        .collect();
    let exec = Exec::current().expect("pool");
    let mut lp = vec![0.0f32; logits.len()];
    softmax::log_softmax_into(&exec, Values::F32(&logits), &shape, &mut lp, &shape).expect("lsm");
    let lq: Vec<f32> = lp.iter().rev().copied().collect();
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
            let a = median_secs(f32_run);
            let b = median_secs(bf_run);
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
