//! Streaming, SIMD-dispatched statistics over `(rows × vocab)` log-probability arrays for the
//! tuned lens.
//!
//! Every axis but the last is a row axis; the last is the vocabulary `V`. Each kernel reads its
//! input once, row by row (a row fits in L2), with 16 f32 lanes combined per row in f64, and
//! allocates only its outputs; each vector asks the L2 for the data 2 KiB ahead. Rows run in
//! parallel on the calling thread plus helpers from the crate's own rayon pool, claimed in
//! runs of contiguous rows; each row is computed by one thread in a fixed order, so results are
//! bit-identical for any thread count.
//!
//! Modules:
//! * [`error`] — [`StatsError`], the one error type; [`dims`] — all shape/id/k validation.
//! * [`elem`] — input element types (f32, f64, f16, bf16 read natively); [`simd`] — run-time
//!   instruction-set dispatch, prefetching and the lane `exp`; [`pool`] — threads and row
//!   driver.
//! * Kernels: [`softmax`], [`entropy`], [`maxprob`], [`target`], [`divergence`], [`forward`],
//!   [`topk`], [`marginal`].
//! * `python` (feature `python`) — the `tuned_lens.lens_stats._native` extension module
//!   (see `docs/lens_stats.md`).

pub mod dims;
pub mod divergence;
pub mod elem;
pub mod entropy;
pub mod error;
pub mod forward;
pub mod marginal;
pub mod maxprob;
pub mod notice;
pub mod pool;
mod reduce;
pub mod simd;
pub mod softmax;
pub mod target;
pub mod topk;

#[cfg(feature = "python")]
mod python;

pub use divergence::Divergence;
pub use elem::Values;
pub use error::{Result, StatsError};
pub use pool::{get_num_threads, set_num_threads, Exec};
pub use simd::IsaKind;

/// A per-row result: `data` in C order with shape `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct PerRow<T> {
    pub data: Vec<T>,
    pub shape: Vec<usize>,
}
