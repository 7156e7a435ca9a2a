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
    warn_pool_notice(py)?;
    match py.detach(|| work(&exec)) {
        Ok(value) => Ok(value),
        Err(StatsError::Interrupted) => {
            let pending = raised.lock().unwrap_or_else(PoisonError::into_inner).take();
            Err(pending.unwrap_or_else(|| StatsError::Interrupted.into()))
        }
        Err(err) => Err(err.into()),
    }
}

/// Show what building the pool had to correct in `TUNED_LENS_NUM_THREADS` (clamped to the
/// limit, or ignored), what choosing the compiled copy had to correct in `TUNED_LENS_SIMD` (a
/// copy this CPU cannot run, or an unknown name) and what `TUNED_LENS_PREFETCH` held that is
/// not a choice, as `RuntimeWarning`s, once each.
pub(super) fn warn_pool_notice(py: Python<'_>) -> PyResult<()> {
    // Decide the prefetch policy now (the kernels would, too late for this call's warning).
    crate::simd::prefetch::enabled();
    let notices = [
        crate::pool::take_notice(),
        crate::simd::select::take_notice(),
        crate::simd::prefetch::take_notice(),
    ];
    for notice in notices.into_iter().flatten() {
        let message = std::ffi::CString::new(notice).unwrap_or_default();
        let category = py.get_type::<pyo3::exceptions::PyRuntimeWarning>();
        PyErr::warn(py, &category, &message, 1)?;
    }
    Ok(())
}

/// A float input, borrowed when C-contiguous and aligned, else a C-ordered copy made by numpy.
pub(super) enum Held<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
    F16(PyReadonlyArrayDyn<'py, u16>),
    Bf16(PyReadonlyArrayDyn<'py, u16>),
}

pub(super) struct Input<'py> {
    held: Held<'py>,
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

/// Whether every element of `array` can be read in place by a strided reader of its item type:
/// the data and every stride (of an axis longer than one) are multiples of the item size.
/// numpy allows views that are neither (a float field of a packed record array, a view into a
/// byte buffer at an odd offset or with odd strides); an element reader that divides byte
/// strides by the item size would read such a view at the wrong addresses.
fn in_place_readable(array: &Bound<'_, PyUntypedArray>) -> bool {
    let itemsize = array.dtype().itemsize() as isize;
    let strides_ok = (array.shape().iter().zip(array.strides()))
        .all(|(&len, &stride)| len <= 1 || stride % itemsize == 0);
    array.is_aligned() && strides_ok
}

/// `obj` itself when it can be borrowed as one C-ordered slice, else a C-ordered, aligned copy
/// (`ndarray.copy()`, which reads any layout numpy allows correctly).
fn c_ordered<'py>(
    obj: &Bound<'py, PyAny>,
    array: &Bound<'py, PyUntypedArray>,
) -> PyResult<Bound<'py, PyAny>> {
    if array.is_c_contiguous() && in_place_readable(array) {
        Ok(obj.clone())
    } else {
        obj.call_method0("copy")
    }
}

impl<'py> Input<'py> {
    pub(super) fn new(arg: &'static str, obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let array = obj
            .cast::<PyUntypedArray>()
            .map_err(|_| not_an_array(arg, obj))?;
        let dtype = array.dtype();
        let native = dtype.is_native_byteorder() != Some(false);
        let kind = dtype.char();
        if !native || !matches!(kind, b'f' | b'd' | b'e' | b'H') {
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
        // Non-contiguous, unaligned or byte-strided layouts are copied once, in logical (C)
        // order; `as_slice` alone would also accept Fortran order (memory order != logical).
        let source = c_ordered(obj, array)?;
        let held = match kind {
            b'f' => Held::F32(source.extract()?),
            b'd' => Held::F64(source.extract()?),
            b'e' => Held::F16(source.call_method1("view", ("uint16",))?.extract()?),
            _ => Held::Bf16(source.extract()?),
        };
        let input = Self {
            held,
            shape: array.shape().to_vec(),
        };
        if input.slice_len().is_none() {
            // Unreachable after `c_ordered`; named rather than read as an empty array.
            return Err(StatsError::value(arg, "could not be read as one C-ordered buffer").into());
        }
        Ok(input)
    }

    fn slice_len(&self) -> Option<usize> {
        match &self.held {
            Held::F32(a) => a.as_slice().ok().map(<[f32]>::len),
            Held::F64(a) => a.as_slice().ok().map(<[f64]>::len),
            Held::F16(a) | Held::Bf16(a) => a.as_slice().ok().map(<[u16]>::len),
        }
    }

    /// The values and shape, both `Send`, for the detached kernel.
    pub(super) fn parts(&self) -> (Values<'_>, &[usize]) {
        (self.values(), &self.shape)
    }

    fn values(&self) -> Values<'_> {
        // Every held array is C-contiguous and aligned (checked in `new`).
        match &self.held {
            Held::F32(a) => Values::F32(a.as_slice().unwrap_or(&[])),
            Held::F64(a) => Values::F64(a.as_slice().unwrap_or(&[])),
            Held::F16(a) => Values::F16(a.as_slice().unwrap_or(&[])),
            Held::Bf16(a) => Values::Bf16(a.as_slice().unwrap_or(&[])),
        }
    }
}

/// Refuse an output array whose memory overlaps an input's, whichever objects own the two
/// (two views of one `bytearray`, two `np.frombuffer` of one buffer, a tensor and its numpy
/// view): the byte ranges the two span are compared (`numpy.may_share_memory`), not their
/// base objects. Empty arrays overlap nothing.
pub(super) fn check_no_overlap(
    out_arg: &'static str,
    out: &Bound<'_, PyAny>,
    input_arg: &'static str,
    input: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let may_share = out.py().import("numpy")?.getattr("may_share_memory")?;
    if may_share.call1((out, input))?.is_truthy()? {
        return Err(StatsError::value(
            out_arg,
            format!("shares memory with {input_arg}; pass a separate buffer"),
        )
        .into());
    }
    Ok(())
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
    let dtype = array.dtype();
    let integer = matches!(dtype.char(), b'i' | b'l' | b'q');
    // Big-endian ids are converted (to native int32 / int64), odd layouts copied.
    let source = match (integer, dtype.itemsize()) {
        (true, 4) if dtype.is_native_byteorder() == Some(false) => {
            obj.call_method1("astype", ("int32",))?
        }
        (true, 8) if dtype.is_native_byteorder() == Some(false) => {
            obj.call_method1("astype", ("int64",))?
        }
        _ if integer && !in_place_readable(array) => obj.call_method0("copy")?,
        _ => obj.clone(),
    };
    match dtype.char() {
        b'i' | b'l' | b'q' if dtype.itemsize() == 4 => {
            let a: PyReadonlyArrayDyn<'_, i32> = source.extract()?;
            let view = a.as_array();
            let b = view.broadcast(IxDyn(lead)).ok_or_else(bad_shape)?;
            Ok(b.iter().map(|&x| x as i64).collect())
        }
        b'i' | b'l' | b'q' if dtype.itemsize() == 8 => {
            let a: PyReadonlyArrayDyn<'_, i64> = source.extract()?;
            let view = a.as_array();
            let b = view.broadcast(IxDyn(lead)).ok_or_else(bad_shape)?;
            Ok(b.iter().copied().collect())
        }
        _ => {
            let name = dtype
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
