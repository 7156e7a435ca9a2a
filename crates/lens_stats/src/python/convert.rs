//! Python objects in, kernel inputs out, numpy arrays back: borrowing, dtype dispatch, id
//! broadcasting and the single GIL-release helper.

use numpy::ndarray::{ArrayD, IxDyn};
use numpy::{
    IntoPyArray, PyArrayDescrMethods, PyArrayDyn, PyReadonlyArrayDyn, PyUntypedArray,
    PyUntypedArrayMethods,
};
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;

use super::errors::LensStatsError;
use crate::dims::{check_broadcast, Dims};
use crate::elem::Values;
use crate::error::StatsError;
use crate::pool::Exec;
use crate::PerRow;

/// Release the GIL, run `work`, map its error: the one way every function runs a kernel.
///
/// A long call stays interruptible: every ~25 ms the calling thread takes the GIL back for a
/// moment and runs the pending signal handlers (`check_signals`). When one raises (Ctrl-C gives
/// `KeyboardInterrupt`), the workers stop at their next claim and that exception is what the
/// call raises.
pub(super) fn detached<T: Send>(
    py: Python<'_>,
    work: impl FnOnce(&Exec) -> Result<T, StatsError> + Send,
) -> PyResult<T> {
    let raised: Arc<Mutex<Option<PyErr>>> = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&raised);
    let poll = move || {
        Python::attach(|py| match py.check_signals() {
            Ok(()) => false,
            Err(err) => {
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(err);
                true
            }
        })
    };
    let exec = Exec::current()?.interruptible(Arc::new(poll));
    match py.detach(|| work(&exec)) {
        Ok(value) => Ok(value),
        Err(StatsError::Interrupted) => {
            let pending = raised.lock().unwrap_or_else(PoisonError::into_inner).take();
            Err(pending.unwrap_or_else(|| StatsError::Interrupted.into()))
        }
        Err(err) => Err(err.into()),
    }
}

/// A float input, borrowed when C-contiguous, else copied once.
pub(super) enum Held<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
    F16(PyReadonlyArrayDyn<'py, u16>),
    Bf16(PyReadonlyArrayDyn<'py, u16>),
}

pub(super) enum Copied {
    None,
    F32(Vec<f32>),
    F64(Vec<f64>),
    F16(Vec<u16>),
    Bf16(Vec<u16>),
}

pub(super) struct Input<'py> {
    held: Held<'py>,
    copied: Copied,
    pub(super) shape: Vec<usize>,
}

pub(super) fn not_an_array(arg: &'static str, obj: &Bound<'_, PyAny>) -> StatsError {
    let type_name = obj
        .get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string());
    StatsError::dtype(
        arg,
        format!("expected a numpy array or CPU torch tensor, got {type_name}"),
    )
}

impl<'py> Input<'py> {
    pub(super) fn new(arg: &'static str, obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let array = obj
            .cast::<PyUntypedArray>()
            .map_err(|_| not_an_array(arg, obj))?;
        let dtype = array.dtype();
        let native = dtype.is_native_byteorder() != Some(false);
        let held = match (dtype.char(), native) {
            (b'f', true) => Held::F32(obj.extract()?),
            (b'd', true) => Held::F64(obj.extract()?),
            (b'e', true) => Held::F16(obj.call_method1("view", ("uint16",))?.extract()?),
            (b'H', true) => Held::Bf16(obj.extract()?),
            _ => {
                let name = dtype
                    .str()
                    .map_or_else(|_| "?".to_string(), |s| s.to_string());
                return Err(StatsError::dtype(
                    arg,
                    format!(
                        "unsupported dtype {name}; expected float32, float64, float16, bfloat16 \
                         (torch) or uint16 (raw bfloat16 bits), in native byte order"
                    ),
                )
                .into());
            }
        };
        let shape = array.shape().to_vec();
        // `as_slice` also accepts Fortran order (memory order != logical order), so decide on
        // C-contiguity explicitly; anything else is copied in logical (C) order.
        let copied = if array.is_c_contiguous() {
            Copied::None
        } else {
            match &held {
                Held::F32(a) => Copied::F32(a.as_array().iter().copied().collect()),
                Held::F64(a) => Copied::F64(a.as_array().iter().copied().collect()),
                Held::F16(a) => Copied::F16(a.as_array().iter().copied().collect()),
                Held::Bf16(a) => Copied::Bf16(a.as_array().iter().copied().collect()),
            }
        };
        Ok(Self {
            held,
            copied,
            shape,
        })
    }

    /// The values and shape, both `Send`, for the detached kernel.
    pub(super) fn parts(&self) -> (Values<'_>, &[usize]) {
        (self.values(), &self.shape)
    }

    fn values(&self) -> Values<'_> {
        match (&self.copied, &self.held) {
            (Copied::F32(v), _) => Values::F32(v),
            (Copied::F64(v), _) => Values::F64(v),
            (Copied::F16(v), _) => Values::F16(v),
            (Copied::Bf16(v), _) => Values::Bf16(v),
            (Copied::None, Held::F32(a)) => Values::F32(a.as_slice().unwrap_or(&[])),
            (Copied::None, Held::F64(a)) => Values::F64(a.as_slice().unwrap_or(&[])),
            (Copied::None, Held::F16(a)) => Values::F16(a.as_slice().unwrap_or(&[])),
            (Copied::None, Held::Bf16(a)) => Values::Bf16(a.as_slice().unwrap_or(&[])),
        }
    }
}

/// Token ids (int32 or int64) broadcast to `lead`, as one i64 per row. The range is checked by
/// the kernels.
pub(super) fn ids(
    arg: &'static str,
    obj: &Bound<'_, PyAny>,
    lead: &[usize],
    of: &'static str,
) -> PyResult<Vec<i64>> {
    let array = obj
        .cast::<PyUntypedArray>()
        .map_err(|_| not_an_array(arg, obj))?;
    check_broadcast(arg, array.shape(), lead, of)?;
    let bad_shape = || StatsError::shape(arg, "cannot be broadcast");
    match array.dtype().char() {
        b'i' | b'l' | b'q' if array.dtype().itemsize() == 4 => {
            let a: PyReadonlyArrayDyn<'_, i32> = obj.extract()?;
            let view = a.as_array();
            let b = view.broadcast(IxDyn(lead)).ok_or_else(bad_shape)?;
            Ok(b.iter().map(|&x| x as i64).collect())
        }
        b'i' | b'l' | b'q' if array.dtype().itemsize() == 8 => {
            let a: PyReadonlyArrayDyn<'_, i64> = obj.extract()?;
            let view = a.as_array();
            let b = view.broadcast(IxDyn(lead)).ok_or_else(bad_shape)?;
            Ok(b.iter().copied().collect())
        }
        _ => {
            let name = array
                .dtype()
                .str()
                .map_or_else(|_| "?".to_string(), |s| s.to_string());
            Err(StatsError::dtype(
                arg,
                format!("unsupported dtype {name}; token ids must be int32 or int64"),
            )
            .into())
        }
    }
}

/// An integer argument (`k`): anything with `__index__`, saturated to the i64 range (the range
/// check then names the bad value); anything else is a dtype error.
pub(super) fn integer(arg: &'static str, obj: &Bound<'_, PyAny>) -> PyResult<i64> {
    if let Ok(value) = obj.extract::<i64>() {
        return Ok(value);
    }
    let type_name = obj
        .get_type()
        .name()
        .map_or_else(|_| "?".to_string(), |n| n.to_string());
    let index = obj
        .call_method0("__index__")
        .map_err(|_| StatsError::dtype(arg, format!("must be an integer, got {type_name}")))?;
    let negative = index.lt(0)?;
    Ok(if negative { i64::MIN } else { i64::MAX })
}

/// The row shape of `input` (validated), for broadcasting ids.
pub(super) fn lead_of(arg: &'static str, input: &Input<'_>) -> PyResult<Vec<usize>> {
    Ok(Dims::of(arg, &input.shape, input.values().len())?.lead)
}

pub(super) fn to_numpy<'py, T: numpy::Element>(
    py: Python<'py>,
    r: PerRow<T>,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let array = ArrayD::from_shape_vec(IxDyn(&r.shape), r.data)
        .map_err(|e| LensStatsError::new_err(format!("internal shape error: {e}")))?;
    Ok(array.into_pyarray(py))
}

pub(super) type Pair<'py, A, B> = (Bound<'py, PyArrayDyn<A>>, Bound<'py, PyArrayDyn<B>>);
