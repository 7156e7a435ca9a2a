//! The `k <= 64` largest entries of each row, without sorting the vocabulary.
//!
//! One pass per row keeps a small buffer sorted by descending key, with a running threshold (the
//! k-th key). Each 16-lane vector is first compared to the threshold as a whole; only vectors
//! with a candidate are inserted element by element, so the cost is one read of the row plus
//! O(k) per accepted candidate. Ties go to the lower id (a later equal key never displaces an
//! earlier one).
//!
//! * `top_k`: key = log-probability; output `(ids, probs = exp(lp))`.
//! * `top_k_delta`: key = `|q - p|` (probabilities); output `(ids, q - p)` signed.
//!
//! A NaN anywhere in a row (a NaN `|q - p|` for `top_k_delta`) leaves the row without a
//! ranking: its values are NaN and its ids `0, 1, ..., k-1` (set after the pass, see
//! [`split`], so the hot loop does not carry the case).

use crate::dims::{check_k, Dims, MAX_K};
use crate::elem::{for_each_vector_pair, with_elem, with_elem_pair, Elem, Lanes, Values};
use crate::error::Result;
use crate::pool::Exec;
use crate::simd::{Isa, RowOp, LANES};
use crate::PerRow;

/// Entries screened at once against the running threshold in `top_k`.
const SCREEN: usize = 4 * LANES;

/// The best `k` keys seen so far, sorted descending, with ids and a payload per entry.
struct Best {
    keys: [f32; MAX_K],
    ids: [u32; MAX_K],
    payload: [f32; MAX_K],
    len: usize,
    k: usize,
}

impl Best {
    #[inline(always)]
    fn new(k: usize) -> Self {
        Self {
            keys: [0.0; MAX_K],
            ids: [0; MAX_K],
            payload: [0.0; MAX_K],
            len: 0,
            k,
        }
    }

    #[inline(always)]
    fn full(&self) -> bool {
        self.len == self.k
    }

    /// The key a candidate must beat once the buffer is full.
    #[inline(always)]
    fn threshold(&self) -> f32 {
        self.keys[self.k - 1]
    }

    /// Whether a block whose per-lane maxima are `top` can hold a candidate: the buffer is not
    /// full yet, or some lane beats the threshold.
    #[inline(always)]
    fn could_take(&self, top: &[f32; LANES]) -> bool {
        if !self.full() {
            return true;
        }
        let threshold = self.threshold();
        let mut hit = 0u32;
        for &t in top {
            hit |= (t > threshold) as u32;
        }
        hit != 0
    }

    /// Insert after every key >= `key` (so earlier ids win ties), dropping the k-th if full.
    #[inline(always)]
    fn insert(&mut self, key: f32, id: usize, payload: f32) {
        let mut pos = if self.full() { self.k - 1 } else { self.len };
        if !self.full() {
            self.len += 1;
        }
        while pos > 0 && self.keys[pos - 1] < key {
            self.keys[pos] = self.keys[pos - 1];
            self.ids[pos] = self.ids[pos - 1];
            self.payload[pos] = self.payload[pos - 1];
            pos -= 1;
        }
        self.keys[pos] = key;
        self.ids[pos] = id as u32;
        self.payload[pos] = payload;
    }

    /// Offer one 16-lane vector of keys starting at id `base` (`valid` lanes are real entries).
    #[inline(always)]
    fn offer(&mut self, keys: &[f32; LANES], payload: &[f32; LANES], base: usize, valid: usize) {
        let valid = valid.min(LANES);
        if !self.full() {
            for j in 0..valid {
                if !self.full() || keys[j] > self.threshold() {
                    self.insert(keys[j], base + j, payload[j]);
                }
            }
            return;
        }
        // One vector compare gives the lanes above the threshold (usually none or one); only
        // those are visited, in id order, each checked again against the risen threshold.
        let threshold = self.threshold();
        let mut above = 0u32;
        for (j, &key) in keys.iter().enumerate() {
            above |= ((key > threshold) as u32) << j;
        }
        above &= (1u32 << valid) - 1;
        while above != 0 {
            let j = above.trailing_zeros() as usize;
            above &= above - 1;
            if keys[j] > self.threshold() {
                self.insert(keys[j], base + j, payload[j]);
            }
        }
    }

    fn write(&self, out: &mut [(i64, f32)], has_nan: bool, map: impl Fn(f32) -> f32) {
        for (i, o) in out.iter_mut().enumerate() {
            let value = if has_nan {
                f32::NAN
            } else {
                map(self.payload[i])
            };
            *o = (self.ids[i] as i64, value);
        }
    }
}

struct TopKOp<'a, E: Elem> {
    x: &'a [E::Raw],
    vocab: usize,
    k: usize,
}

impl<E: Elem> RowOp for TopKOp<'_, E> {
    type Out = (i64, f32);
    #[inline(always)]
    fn row<I: Isa>(&self, index: usize, out: &mut [(i64, f32)]) {
        let v = self.vocab;
        let row = &self.x[index * v..(index + 1) * v];
        let mut best = Best::new(self.k);
        let mut nan = [0u32; LANES];
        // Screen 64 entries at a time against the threshold; insert only from blocks with a
        // candidate (rare once the buffer holds good entries).
        for (b, block) in row.chunks(SCREEN).enumerate() {
            let mut top = [f32::NEG_INFINITY; LANES];
            for x in Lanes::<I, E>::new(block) {
                for j in 0..LANES {
                    top[j] = if x[j] > top[j] { x[j] } else { top[j] };
                    nan[j] |= x[j].is_nan() as u32;
                }
            }
            if !best.could_take(&top) {
                continue;
            }
            for (c, x) in Lanes::<I, E>::new(block).enumerate() {
                let base = b * SCREEN + c * LANES;
                best.offer(&x, &x, base, v - base);
            }
        }
        let has_nan = nan.iter().any(|&b| b != 0);
        best.write(out, has_nan, |lp| (lp as f64).exp() as f32);
    }
}

struct TopKDeltaOp<'a, E: Elem> {
    p: &'a [E::Raw],
    q: &'a [E::Raw],
    vocab: usize,
    k: usize,
}

impl<E: Elem> RowOp for TopKDeltaOp<'_, E> {
    type Out = (i64, f32);
    #[inline(always)]
    fn row<I: Isa>(&self, index: usize, out: &mut [(i64, f32)]) {
        let v = self.vocab;
        let span = index * v..(index + 1) * v;
        let (p, q) = (&self.p[span.clone()], &self.q[span]);
        let mut best = Best::new(self.k);
        let mut nan = [0u32; LANES];
        // As in `top_k`: screen 64 entries at a time by their largest |q - p|, and revisit
        // (from L1, recomputing the deltas) only a block holding a candidate. Offering every
        // vector kept the deltas on the stack and cost ~45% over total variation.
        let blocks = p.chunks(SCREEN).zip(q.chunks(SCREEN));
        for (b, (block_p, block_q)) in blocks.enumerate() {
            let mut top = [0.0f32; LANES];
            for_each_vector_pair::<I, E>(
                block_p,
                block_q,
                #[inline(always)]
                |lp, lq| {
                    let (ep, eq) = (I::exp16_floored(lp), I::exp16_floored(lq));
                    for j in 0..LANES {
                        let size = (eq[j] - ep[j]).abs();
                        top[j] = if size > top[j] { size } else { top[j] };
                        nan[j] |= size.is_nan() as u32;
                    }
                },
            );
            if !best.could_take(&top) {
                continue;
            }
            let lanes = Lanes::<I, E>::new(block_p).zip(Lanes::<I, E>::new(block_q));
            for (c, (lp, lq)) in lanes.enumerate() {
                let (ep, eq) = (I::exp16_floored(lp), I::exp16_floored(lq));
                let mut delta = [0.0f32; LANES];
                let mut size = [0.0f32; LANES];
                for j in 0..LANES {
                    delta[j] = eq[j] - ep[j];
                    size[j] = delta[j].abs();
                }
                let base = b * SCREEN + c * LANES;
                best.offer(&size, &delta, base, v - base);
            }
        }
        let has_nan = nan.iter().any(|&b| b != 0);
        best.write(out, has_nan, |d| d);
    }
}

/// Split `(id, value)` pairs into the two outputs of shape `(*lead, k)`. A row that held a
/// NaN (all its values NaN, as `Best::write` makes them; no other row has a NaN value) gets
/// the ids `0..k`, not whichever ids the pass happened to keep.
fn split(mut pairs: Vec<(i64, f32)>, k: usize, shape: Vec<usize>) -> (PerRow<i64>, PerRow<f32>) {
    for row in pairs.chunks_mut(k) {
        if row[0].1.is_nan() {
            for (id, pair) in row.iter_mut().enumerate() {
                pair.0 = id as i64;
            }
        }
    }
    let (ids, values) = pairs.into_iter().unzip();
    (
        PerRow {
            data: ids,
            shape: shape.clone(),
        },
        PerRow {
            data: values,
            shape,
        },
    )
}

/// `(ids, probs)` of the `k` most likely tokens per row, sorted by descending probability.
pub fn top_k(
    exec: &Exec,
    log_probs: Values<'_>,
    shape: &[usize],
    k: i64,
) -> Result<(PerRow<i64>, PerRow<f32>)> {
    let dims = Dims::of("log_probs", shape, log_probs.len())?;
    let k = check_k(k, dims.vocab)?;
    let mut pairs = vec![(0i64, 0.0f32); dims.rows * k];
    with_elem!(log_probs, s, E => {
        exec.run_rows(&TopKOp::<E> { x: s, vocab: dims.vocab, k }, &mut pairs, k, dims.vocab)
    })?;
    Ok(split(pairs, k, dims.out_shape(Some(k))))
}

/// `(ids, q - p)` of the `k` tokens whose probability changes most (by `|q - p|`) per row.
pub fn top_k_delta(
    exec: &Exec,
    log_p: Values<'_>,
    p_shape: &[usize],
    log_q: Values<'_>,
    q_shape: &[usize],
    k: i64,
) -> Result<(PerRow<i64>, PerRow<f32>)> {
    let dims = Dims::pair("log_p", p_shape, log_p.len(), "log_q", q_shape, log_q.len())?;
    let k = check_k(k, dims.vocab)?;
    let mut pairs = vec![(0i64, 0.0f32); dims.rows * k];
    with_elem_pair!(log_p, log_q, "log_q", p, q, E => {
        let op = TopKDeltaOp::<E> { p, q, vocab: dims.vocab, k };
        exec.run_rows(&op, &mut pairs, k, 2 * dims.vocab)
    })?;
    Ok(split(pairs, k, dims.out_shape(Some(k))))
}
