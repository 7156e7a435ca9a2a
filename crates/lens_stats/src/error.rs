//! The crate's one error type. Pure Rust: the Python binding maps each variant to an exception
//! class exactly once (`impl From<StatsError> for PyErr` in `src/python/errors.rs`).

use std::fmt;

/// Everything that can go wrong in a statistics call. Every variant names the offending argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsError {
    /// Wrong number of axes, mismatched or non-broadcastable shapes, an empty vocabulary axis.
    Shape { arg: &'static str, message: String },
    /// An element type the kernels do not read (integers for values, floats for ids, complex...).
    DType { arg: &'static str, message: String },
    /// A token id outside `[0, vocab)`.
    TargetIndex {
        arg: &'static str,
        value: i64,
        vocab: usize,
    },
    /// Any other bad value: `k` out of range, an `out=` array that cannot be written, a bad
    /// thread count.
    Value { arg: &'static str, message: String },
    /// The interrupt poll of the executor asked the call to stop (Ctrl-C from Python); no
    /// result was produced.
    Interrupted,
}

impl StatsError {
    pub fn shape(arg: &'static str, message: impl Into<String>) -> Self {
        Self::Shape {
            arg,
            message: message.into(),
        }
    }

    pub fn dtype(arg: &'static str, message: impl Into<String>) -> Self {
        Self::DType {
            arg,
            message: message.into(),
        }
    }

    pub fn value(arg: &'static str, message: impl Into<String>) -> Self {
        Self::Value {
            arg,
            message: message.into(),
        }
    }
}

impl fmt::Display for StatsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Shape { arg, message }
            | Self::DType { arg, message }
            | Self::Value { arg, message } => write!(f, "{arg}: {message}"),
            Self::TargetIndex { arg, value, vocab } => write!(
                f,
                "{arg}: token id {value} is out of range for a vocabulary of size {vocab} \
                 (valid ids are 0..{vocab})"
            ),
            Self::Interrupted => write!(f, "interrupted"),
        }
    }
}

impl std::error::Error for StatsError {}

pub type Result<T> = std::result::Result<T, StatsError>;
