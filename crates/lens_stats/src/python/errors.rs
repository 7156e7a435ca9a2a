//! The exception classes of `tuned_lens.lens_stats` and the one mapping from [`StatsError`].
//!
//! `LensStatsError(ValueError)` and `ShapeError(LensStatsError)` come from `create_exception!`;
//! `DTypeError(LensStatsError, TypeError)` and `TargetIndexError(LensStatsError, IndexError)`
//! need two bases, so they are built once with `type(name, bases, namespace)`.

use pyo3::create_exception;
use pyo3::exceptions::{PyIndexError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::error::StatsError;

create_exception!(
    tuned_lens.lens_stats,
    LensStatsError,
    PyValueError,
    "Base class of the statistics errors (a ValueError)."
);
create_exception!(
    tuned_lens.lens_stats,
    ShapeError,
    LensStatsError,
    "Wrong number of axes, mismatched or non-broadcastable shapes, an empty vocabulary axis."
);

static DTYPE_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
static TARGET_INDEX_ERROR: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// A subclass of both `LensStatsError` and a builtin (`create_exception!` allows one base).
fn dual_class<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyType>>,
    name: &str,
    builtin: Bound<'py, PyType>,
    doc: &str,
) -> PyResult<Bound<'py, PyType>> {
    let ty = cell.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let bases = PyTuple::new(py, [py.get_type::<LensStatsError>(), builtin])?;
        let namespace = PyDict::new(py);
        namespace.set_item("__module__", "tuned_lens.lens_stats")?;
        namespace.set_item("__doc__", doc)?;
        let made = py.get_type::<PyType>().call1((name, bases, namespace))?;
        Ok(made.cast_into::<PyType>()?.unbind())
    })?;
    Ok(ty.bind(py).clone())
}

pub(super) fn dtype_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    let doc = "An element type the kernels do not read (also a TypeError).";
    dual_class(
        py,
        &DTYPE_ERROR,
        "DTypeError",
        py.get_type::<PyTypeError>(),
        doc,
    )
}

pub(super) fn target_index_error(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    let doc = "A token id outside [0, V) (also an IndexError).";
    dual_class(
        py,
        &TARGET_INDEX_ERROR,
        "TargetIndexError",
        py.get_type::<PyIndexError>(),
        doc,
    )
}

impl From<StatsError> for PyErr {
    fn from(err: StatsError) -> PyErr {
        let message = err.to_string();
        match err {
            StatsError::Shape { .. } => ShapeError::new_err(message),
            StatsError::Value { .. } => LensStatsError::new_err(message),
            StatsError::DType { .. } => Python::attach(|py| match dtype_error(py) {
                Ok(ty) => PyErr::from_type(ty, message),
                Err(e) => e,
            }),
            StatsError::TargetIndex { .. } => Python::attach(|py| match target_index_error(py) {
                Ok(ty) => PyErr::from_type(ty, message),
                Err(e) => e,
            }),
        }
    }
}
