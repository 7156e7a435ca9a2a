//! Criterion-free kernel timing: `cargo run --release --example kernel_bench [rows] [vocab]`.
//! Prints GB/s of input read per kernel, per instruction set, on 1 thread and on the default
//! pool. Numbers on a shared machine vary by ±20%.

mod common;

use common::{log_prob_inputs, median_secs};
use lens_stats::divergence::{divergence, Divergence};
use lens_stats::{entropy, forward, maxprob, softmax, target, topk, Exec, IsaKind, Values};

/// A plain read of every element on `e.threads()` threads (integer OR over 16 lanes: never
/// compute-bound), as this run's bandwidth reference.
fn read_sum(e: &Exec, x: &[f32]) -> u32 {
    let n = e.threads();
    let part = x.len().div_ceil(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = x
            .chunks(part)
            .map(|c| {
                s.spawn(move || {
                    let mut acc = [0u32; 16];
                    for v in c.chunks_exact(16) {
                        for j in 0..16 {
                            acc[j] |= v[j].to_bits();
                        }
                    }
                    acc.iter().fold(0, |a, b| a | b)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .fold(0, |a, b| a | b)
    })
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(512);
    let vocab = args.get(1).copied().unwrap_or(50304);
    let shape = [rows, vocab];
    let exec = Exec::current().expect("pool");
    let (logits, lp, lq) = log_prob_inputs(&exec, rows, vocab);
    let mut out = vec![0.0f32; lp.len()];
    let targets: Vec<i64> = (0..rows as i64)
        .map(|r| (r * 7919) % vocab as i64)
        .collect();
    let bytes = (rows * vocab * 4) as f64;
    let bf16: Vec<u16> = lp.iter().map(|v| (v.to_bits() >> 16) as u16).collect();
    let bf16_q: Vec<u16> = lq.iter().map(|v| (v.to_bits() >> 16) as u16).collect();

    // KB_BEST=1: only the best instruction set and the default thread count (quick A/B runs).
    let quick = std::env::var_os("KB_BEST").is_some();
    let threads: Vec<usize> = if quick {
        vec![exec.threads()]
    } else {
        vec![1, exec.threads()]
    };
    let isas: Vec<IsaKind> = if quick {
        vec![IsaKind::detect()]
    } else {
        IsaKind::available()
    };
    let only = std::env::var("KB_ONLY").unwrap_or_default();
    let wanted = |name: &str| only.is_empty() || only.split(',').any(|o| name.starts_with(o));
    for isa in isas {
        for &n in &threads {
            let e = Exec::with(isa, n).expect("exec");
            let x = Values::F32(&lp);
            let report = |name: &str, inputs: f64, f: &mut dyn FnMut()| {
                if !wanted(name) {
                    return;
                }
                let secs = median_secs(5, f);
                println!(
                    "{isa:?} t={n} {name:20} {:7.1} ms {:6.1} GB/s",
                    secs * 1e3,
                    inputs * bytes / secs / 1e9
                );
            };
            let b = Values::Bf16(&bf16);
            let q = Values::F32(&lq);
            let qb = Values::Bf16(&bf16_q);
            report("log_softmax", 1.0, &mut || {
                softmax::log_softmax_into(&e, Values::F32(&logits), &shape, &mut out, &shape)
                    .expect("log_softmax")
            });
            report("entropy", 1.0, &mut || {
                drop(entropy::entropy(&e, x, &shape))
            });
            report("entropy_bf16", 0.5, &mut || {
                drop(entropy::entropy(&e, b, &shape))
            });
            report("entropy_from_logits", 1.0, &mut || {
                drop(entropy::entropy_from_logits(&e, x, &shape))
            });
            report("max_probability", 1.0, &mut || {
                drop(maxprob::max_probability(&e, x, &shape, false))
            });
            report("max_probability_bf16", 0.5, &mut || {
                drop(maxprob::max_probability(&e, b, &shape, false))
            });
            report("target_rank", 1.0, &mut || {
                drop(target::target_rank(&e, x, &shape, &targets))
            });
            report("top_k_10", 1.0, &mut || {
                drop(topk::top_k(&e, x, &shape, 10))
            });
            report("top_k_10_bf16", 0.5, &mut || {
                drop(topk::top_k(&e, b, &shape, 10))
            });
            report("top_k_delta_10", 2.0, &mut || {
                drop(topk::top_k_delta(&e, x, &shape, q, &shape, 10))
            });
            for kind in [Divergence::Kl, Divergence::Js, Divergence::TotalVariation] {
                let name = format!("{kind:?}");
                report(&name, 2.0, &mut || {
                    drop(divergence(&e, kind, x, &shape, q, &shape))
                });
                report(&format!("{name}_bf16"), 1.0, &mut || {
                    drop(divergence(&e, kind, b, &shape, qb, &shape))
                });
            }
            let reference = &lp[..vocab * (rows / 13).max(1)];
            let fshape = [13usize, rows / 13, vocab];
            let rshape = [rows / 13, vocab];
            if rows % 13 == 0 {
                report("forward_kl", 1.0, &mut || {
                    drop(forward::forward_kl(
                        &e,
                        x,
                        &fshape,
                        Values::F32(reference),
                        &rshape,
                    ))
                });
            }
            report("read_bandwidth", 1.0, &mut || {
                std::hint::black_box(read_sum(&e, &lp));
            });
        }
    }
}
