//! Shared by the timing examples: the median timer and the deterministic inputs.

use std::time::Instant;

use lens_stats::{softmax, Exec, Values};

/// Median wall time of `runs` calls of `f`, after one warm-up call.
pub fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Pseudo-random logits in [-6, 6) (xorshift, fixed seed), their log-softmax `lp`, and `lq`,
/// `lp` reversed: `(logits, lp, lq)`, each `rows * vocab` long.
pub fn log_prob_inputs(exec: &Exec, rows: usize, vocab: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let logits: Vec<f32> = (0..rows * vocab)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 12.0 - 6.0
        })
        .collect();
    let shape = [rows, vocab];
    let mut lp = vec![0.0f32; logits.len()];
    softmax::log_softmax_into(exec, Values::F32(&logits), &shape, &mut lp, &shape).expect("lsm");
    let lq: Vec<f32> = lp.iter().rev().copied().collect();
    (logits, lp, lq)
}
