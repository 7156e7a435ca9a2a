//! Criterion-free kernel timing: `cargo run --release --example kernel_bench [rows] [vocab]`.
//! Prints GB/s of input read per kernel, per instruction set, on 1 thread and on the default
//! pool. Numbers on a shared machine vary by ±20%.

use std::time::Instant;

use lens_stats::divergence::{divergence, Divergence};
use lens_stats::{entropy, maxprob, softmax, target, topk, Exec, IsaKind, Values};

fn median_secs(mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(512);
    let vocab = args.get(1).copied().unwrap_or(50304);
    let shape = [rows, vocab];
    // A deterministic pseudo-random log-softmax input.
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
    let targets: Vec<i64> = (0..rows as i64)
        .map(|r| (r * 7919) % vocab as i64)
        .collect();
    let bytes = (rows * vocab * 4) as f64;
    let bf16: Vec<u16> = lp.iter().map(|v| (v.to_bits() >> 16) as u16).collect();

    let threads = [1, exec.threads()];
    for isa in IsaKind::available() {
        for &n in &threads {
            let e = Exec::with(isa, n).expect("exec");
            let x = Values::F32(&lp);
            let report = |name: &str, secs: f64, inputs: f64| {
                println!(
                    "{isa:?} t={n} {name:20} {:7.1} ms {:6.1} GB/s",
                    secs * 1e3,
                    inputs * bytes / secs / 1e9
                );
            };
            report(
                "entropy",
                median_secs(|| drop(entropy::entropy(&e, x, &shape))),
                1.0,
            );
            let b = Values::Bf16(&bf16);
            report(
                "entropy bf16",
                median_secs(|| drop(entropy::entropy(&e, b, &shape))),
                0.5,
            );
            report(
                "entropy_from_logits",
                median_secs(|| drop(entropy::entropy_from_logits(&e, x, &shape))),
                1.0,
            );
            report(
                "max_probability",
                median_secs(|| drop(maxprob::max_probability(&e, x, &shape, false))),
                1.0,
            );
            report(
                "target_rank",
                median_secs(|| drop(target::target_rank(&e, x, &shape, &targets))),
                1.0,
            );
            report(
                "top_k 10",
                median_secs(|| drop(topk::top_k(&e, x, &shape, 10))),
                1.0,
            );
            let q = Values::F32(&lq);
            for kind in [Divergence::Kl, Divergence::Js, Divergence::TotalVariation] {
                let secs = median_secs(|| drop(divergence(&e, kind, x, &shape, q, &shape)));
                report(&format!("{kind:?}"), secs, 2.0);
            }
        }
    }
}
