//! Shape validation: the only place that decides whether shapes, ids and `k` are acceptable.
//!
//! Every axis but the last is a row axis; the last is the vocabulary `V`. Kernels trust what this
//! module returns and only `debug_assert!` it.

use crate::error::{Result, StatsError};

/// The largest `k` that `top_k` and `top_k_delta` accept (the per-row buffer is this long).
pub const MAX_K: usize = 64;

/// Format a shape the way Python prints a tuple, e.g. `(2, 3)` or `(5,)`.
pub fn fmt_shape(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [one] => format!("({one},)"),
        _ => {
            let parts: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("({})", parts.join(", "))
        }
    }
}

/// A validated `(..., V)` array: `rows` = product of the leading axes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dims {
    pub lead: Vec<usize>,
    pub rows: usize,
    pub vocab: usize,
}

impl Dims {
    /// Validate one `(..., V)` array holding `len` elements.
    pub fn of(arg: &'static str, shape: &[usize], len: usize) -> Result<Self> {
        let Some((&vocab, lead)) = shape.split_last() else {
            return Err(StatsError::shape(
                arg,
                "expected an array with a last (vocabulary) axis, got a 0-d array of shape ()",
            ));
        };
        if vocab == 0 {
            return Err(StatsError::shape(
                arg,
                format!(
                    "the vocabulary (last) axis is empty in shape {}; a distribution needs V >= 1",
                    fmt_shape(shape)
                ),
            ));
        }
        let rows: usize = lead.iter().product();
        if rows.checked_mul(vocab) != Some(len) {
            return Err(StatsError::shape(
                arg,
                format!(
                    "holds {len} elements but its shape {} says otherwise",
                    fmt_shape(shape)
                ),
            ));
        }
        Ok(Self {
            lead: lead.to_vec(),
            rows,
            vocab,
        })
    }

    /// Validate two arrays that must have identical shapes (divergences between `p` and `q`).
    pub fn pair(
        arg_a: &'static str,
        shape_a: &[usize],
        len_a: usize,
        arg_b: &'static str,
        shape_b: &[usize],
        len_b: usize,
    ) -> Result<Self> {
        let dims = Self::of(arg_a, shape_a, len_a)?;
        Self::of(arg_b, shape_b, len_b)?;
        if shape_a != shape_b {
            return Err(StatsError::shape(
                arg_b,
                format!(
                    "shape {} does not match {arg_a} shape {}; both must be identical",
                    fmt_shape(shape_b),
                    fmt_shape(shape_a)
                ),
            ));
        }
        Ok(dims)
    }

    /// The shape of a per-row output with `extra` trailing entries (e.g. `k` for top-k).
    pub fn out_shape(&self, extra: Option<usize>) -> Vec<usize> {
        let mut shape = self.lead.clone();
        shape.extend(extra);
        shape
    }
}

/// Validated shapes for `forward_kl`: `log_probs (*B, L, T, V)` against `reference (*B, T, V)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardDims {
    /// Product of the `*B` axes.
    pub outer: usize,
    pub layers: usize,
    pub positions: usize,
    pub vocab: usize,
    /// `log_probs.shape[:-1]`, the output shape.
    pub out_shape: Vec<usize>,
}

impl ForwardDims {
    pub fn of(shape: &[usize], len: usize, ref_shape: &[usize], ref_len: usize) -> Result<Self> {
        let dims = Dims::of("log_probs", shape, len)?;
        Dims::of("reference", ref_shape, ref_len)?;
        if shape.len() < 3 {
            return Err(StatsError::shape(
                "log_probs",
                format!(
                    "expected shape (..., L, T, V) with at least 3 axes, got {}",
                    fmt_shape(shape)
                ),
            ));
        }
        let n = shape.len();
        let mut expected: Vec<usize> = shape[..n - 3].to_vec();
        expected.extend_from_slice(&shape[n - 2..]);
        if ref_shape != expected.as_slice() {
            return Err(StatsError::shape(
                "reference",
                format!(
                    "shape {} does not match log_probs shape {}; expected {} \
                     (log_probs' shape without its layer axis -3)",
                    fmt_shape(ref_shape),
                    fmt_shape(shape),
                    fmt_shape(&expected)
                ),
            ));
        }
        Ok(Self {
            outer: shape[..n - 3].iter().product(),
            layers: shape[n - 3],
            positions: shape[n - 2],
            vocab: shape[n - 1],
            out_shape: dims.lead,
        })
    }
}

/// Check that an id array of shape `shape` broadcasts (numpy rules) to the row shape `lead`.
pub fn check_broadcast(
    arg: &'static str,
    shape: &[usize],
    lead: &[usize],
    values_arg: &'static str,
) -> Result<()> {
    let fits = shape.len() <= lead.len()
        && shape
            .iter()
            .rev()
            .zip(lead.iter().rev())
            .all(|(&s, &l)| s == l || s == 1);
    if fits {
        return Ok(());
    }
    Err(StatsError::shape(
        arg,
        format!(
            "shape {} cannot be broadcast to {}, the shape of {values_arg} without its last \
             (vocabulary) axis",
            fmt_shape(shape),
            fmt_shape(lead)
        ),
    ))
}

/// Check that every id lies in `[0, vocab)`; the error names the first offending value.
pub fn check_ids(arg: &'static str, ids: &[i64], vocab: usize) -> Result<()> {
    match ids.iter().find(|&&id| id < 0 || id as u64 >= vocab as u64) {
        Some(&value) => Err(StatsError::TargetIndex { arg, value, vocab }),
        None => Ok(()),
    }
}

/// Check `1 <= k <= min(MAX_K, vocab)`.
pub fn check_k(k: i64, vocab: usize) -> Result<usize> {
    if k < 1 || k as u64 > MAX_K as u64 || k as u64 > vocab as u64 {
        return Err(StatsError::value(
            "k",
            format!("k = {k} is out of range; need 1 <= k <= min({MAX_K}, V) with V = {vocab}"),
        ));
    }
    Ok(k as usize)
}

/// Check that a caller-given output has exactly the expected shape.
pub fn check_out(arg: &'static str, shape: &[usize], expected: &[usize]) -> Result<()> {
    if shape != expected {
        return Err(StatsError::shape(
            arg,
            format!(
                "has shape {} but the result has shape {}",
                fmt_shape(shape),
                fmt_shape(expected)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_format_like_python() {
        assert_eq!(fmt_shape(&[]), "()");
        assert_eq!(fmt_shape(&[5]), "(5,)");
        assert_eq!(fmt_shape(&[2, 3]), "(2, 3)");
    }

    #[test]
    fn broadcast_rules_follow_numpy() {
        assert!(check_broadcast("t", &[3], &[2, 3], "x").is_ok());
        assert!(check_broadcast("t", &[1, 3], &[2, 3], "x").is_ok());
        assert!(check_broadcast("t", &[], &[2, 3], "x").is_ok());
        assert!(check_broadcast("t", &[2], &[2, 3], "x").is_err());
        assert!(check_broadcast("t", &[1, 2, 3], &[2, 3], "x").is_err());
    }

    #[test]
    fn k_range() {
        assert!(check_k(0, 10).is_err());
        assert!(check_k(11, 10).is_err());
        assert!(check_k(65, 1000).is_err());
        assert_eq!(check_k(64, 1000), Ok(64));
    }
}
