//! The one mapping from [`StatsError`] to Python exceptions.
//!
//! The exception classes are defined in Python, in `tuned_lens.errors`, and re-exported by
//! `tuned_lens.lens_stats.errors`; `import_exception!` looks them up there (once, on first use),
//! so the compiled core and the torch twin raise the very same classes. Nothing here defines a
//! class.

use pyo3::exceptions::PyKeyboardInterrupt;
use pyo3::prelude::*;

use crate::error::StatsError;

pyo3::import_exception!(tuned_lens.lens_stats.errors, LensStatsError);
pyo3::import_exception!(tuned_lens.lens_stats.errors, ShapeError);
pyo3::import_exception!(tuned_lens.lens_stats.errors, DTypeError);
pyo3::import_exception!(tuned_lens.lens_stats.errors, TargetIndexError);

impl From<StatsError> for PyErr {
    fn from(err: StatsError) -> PyErr {
        let message = err.to_string();
        match err {
            StatsError::Shape { .. } => ShapeError::new_err(message),
            StatsError::Value { .. } => LensStatsError::new_err(message),
            StatsError::DType { .. } => DTypeError::new_err(message),
            StatsError::TargetIndex { .. } => TargetIndexError::new_err(message),
            // `convert::detached` replaces this with the exception the signal handler raised;
            // this is the fallback when none was recorded.
            StatsError::Interrupted => PyKeyboardInterrupt::new_err(message),
        }
    }
}
