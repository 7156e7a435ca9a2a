//! Shared helpers for the kernel tests: deterministic data, float64 references, executors.
#![allow(dead_code)]

use lens_stats::{Exec, IsaKind};

/// xorshift64: deterministic pseudo-random floats without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Logits in `[-scale, scale)`.
    pub fn logits(&mut self, n: usize, scale: f64) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next_f64() * 2.0 - 1.0) * scale) as f32)
            .collect()
    }
}

/// Row-wise log-softmax in f64, stored as f32.
pub fn log_softmax64(x: &[f32], vocab: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(vocab) {
        let m = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b as f64));
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        let lse = m + s.ln();
        out.extend(row.iter().map(|&v| (v as f64 - lse) as f32));
    }
    out
}

pub fn execs() -> Vec<Exec> {
    IsaKind::available()
        .into_iter()
        .map(|isa| Exec::with(isa, 2).expect("exec"))
        .collect()
}

pub fn exec() -> Exec {
    Exec::current().expect("exec")
}

/// Relative-or-absolute closeness with matching NaN / infinity positions.
pub fn assert_close(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        if w.is_nan() || g.is_nan() {
            assert!(w.is_nan() && g.is_nan(), "{what}[{i}]: got {g}, want {w}");
        } else if w.is_infinite() || g.is_infinite() {
            assert_eq!(g, w, "{what}[{i}]");
        } else {
            assert!(
                (g - w).abs() <= atol + rtol * w.abs(),
                "{what}[{i}]: got {g}, want {w}"
            );
        }
    }
}

pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}
