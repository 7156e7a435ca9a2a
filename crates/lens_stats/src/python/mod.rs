//! The `tuned_lens.lens_stats._native` extension module: borrow numpy arrays, release the GIL,
//! run a kernel, map errors, build numpy outputs. No statistics live here.
//!
//! Every function goes through [`detached`] (GIL released for the whole computation, errors
//! mapped once by `impl From<StatsError> for PyErr`). Inputs are borrowed zero-copy when
//! C-contiguous and aligned; other layouts (strided, unaligned, byte strides that are not a
//! multiple of the item size) are copied once by numpy into a contiguous buffer (one extra
//! input-sized allocation: pass contiguous arrays on hot paths).
//!
//! `errors` holds the error mapping (the classes are Python's, from
//! `tuned_lens.lens_stats.errors`), `convert` the borrowing, dtype dispatch, output conversion and
//! the interruptible GIL release; this file only lists the functions. The type stub
//! `python/tuned_lens/lens_stats/_native.pyi` is generated from this module's signatures and
//! docstrings by `scripts/gen_stubs.py`.

mod convert;
mod errors;

use numpy::ndarray::IxDyn;
use numpy::{PyArrayDyn, PyArrayMethods, PyReadwriteArrayDyn, PyUntypedArrayMethods};
use pyo3::prelude::*;

use crate::dims::Dims;
use crate::error::StatsError;
use crate::PerRow;
use convert::{check_no_overlap, detached, ids, integer, lead_of, to_numpy, Input, Pair};

#[pymodule]
mod _native {
    use super::*;
    use crate::divergence::{divergence, Divergence};
    use crate::{entropy as ent, forward, marginal, maxprob, softmax, target, topk};

    #[pymodule_init]
    fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
        // The limits the kernels validate against, for Python to compare with its own.
        m.add("MAX_K", crate::dims::MAX_K)?;
        // The most threads `set_num_threads` accepts on this machine.
        m.add("MAX_THREADS", crate::pool::max_threads())?;
        Ok(())
    }

    /// log_softmax(logits, *, out=None): x - logsumexp(x) over the last axis, float32.
    #[pyfunction]
    #[pyo3(signature = (logits, *, out=None))]
    fn log_softmax<'py>(
        py: Python<'py>,
        logits: &Bound<'py, PyAny>,
        out: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let x = Input::new("logits", logits)?;
        let (xv, xs) = x.parts();
        let target = match out {
            Some(o) => o.clone(),
            None => {
                Dims::of("logits", xs, xv.len())?;
                PyArrayDyn::<f32>::zeros(py, IxDyn(&x.shape), false).into_any()
            }
        };
        let array = target
            .cast::<PyArrayDyn<f32>>()
            .map_err(|_| StatsError::dtype("out", "must be a float32 array"))?;
        check_no_overlap("out", &target, "logits", logits)?;
        let mut writer: PyReadwriteArrayDyn<'_, f32> = array.try_readwrite().map_err(|e| {
            StatsError::value(
                "out",
                format!("cannot be written (read-only, or shares memory with logits): {e}"),
            )
        })?;
        let out_shape = writer.shape().to_vec();
        let not_c = || StatsError::value("out", "must be C-contiguous");
        if !writer.is_c_contiguous() {
            return Err(not_c().into());
        }
        let slice = writer.as_slice_mut().map_err(|_| not_c())?;
        detached(py, |exec| {
            softmax::log_softmax_into(exec, xv, xs, slice, &out_shape)
        })?;
        drop(writer);
        Ok(target)
    }

    /// logsumexp(logits): log Σ exp over the last axis, float32 of shape logits.shape[:-1].
    #[pyfunction]
    fn logsumexp<'py>(
        py: Python<'py>,
        logits: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let x = Input::new("logits", logits)?;
        let (xv, xs) = x.parts();
        to_numpy(py, detached(py, |e| softmax::logsumexp(e, xv, xs))?)
    }

    /// entropy(log_probs): -Σ p log p (nats), 0·log 0 = 0.
    #[pyfunction]
    fn entropy<'py>(
        py: Python<'py>,
        log_probs: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let x = Input::new("log_probs", log_probs)?;
        let (xv, xs) = x.parts();
        to_numpy(py, detached(py, |e| ent::entropy(e, xv, xs))?)
    }

    /// entropy_from_logits(logits): entropy of softmax(logits), fused.
    #[pyfunction]
    fn entropy_from_logits<'py>(
        py: Python<'py>,
        logits: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let x = Input::new("logits", logits)?;
        let (xv, xs) = x.parts();
        to_numpy(py, detached(py, |e| ent::entropy_from_logits(e, xv, xs))?)
    }

    /// max_probability(log_probs, *, from_logits=False) -> (prob float32, token_id int64).
    #[pyfunction]
    #[pyo3(signature = (log_probs, *, from_logits=false))]
    fn max_probability<'py>(
        py: Python<'py>,
        log_probs: &Bound<'py, PyAny>,
        from_logits: bool,
    ) -> PyResult<Pair<'py, f32, i64>> {
        let arg = if from_logits { "logits" } else { "log_probs" };
        let x = Input::new(arg, log_probs)?;
        let (xv, xs) = x.parts();
        let (p, i) = detached(py, |e| maxprob::max_probability(e, xv, xs, from_logits))?;
        Ok((to_numpy(py, p)?, to_numpy(py, i)?))
    }

    /// target_log_prob(log_probs, targets): log_probs[..., targets].
    #[pyfunction]
    fn target_log_prob<'py>(
        py: Python<'py>,
        log_probs: &Bound<'py, PyAny>,
        targets: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let x = Input::new("log_probs", log_probs)?;
        let (xv, xs) = x.parts();
        let t = ids("targets", targets, &lead_of("log_probs", &x)?, "log_probs")?;
        to_numpy(py, detached(py, |_| target::target_log_prob(xv, xs, &t))?)
    }

    /// cross_entropy(log_probs, targets): -log_probs[..., targets].
    #[pyfunction]
    fn cross_entropy<'py>(
        py: Python<'py>,
        log_probs: &Bound<'py, PyAny>,
        targets: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let x = Input::new("log_probs", log_probs)?;
        let (xv, xs) = x.parts();
        let t = ids("targets", targets, &lead_of("log_probs", &x)?, "log_probs")?;
        let mut r = detached(py, |_| target::target_log_prob(xv, xs, &t))?;
        r.data.iter_mut().for_each(|v| *v = -*v);
        to_numpy(py, r)
    }

    /// log_prob_diff(log_probs, targets, anti_targets): lp[target] - lp[anti_target].
    #[pyfunction]
    fn log_prob_diff<'py>(
        py: Python<'py>,
        log_probs: &Bound<'py, PyAny>,
        targets: &Bound<'py, PyAny>,
        anti_targets: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let x = Input::new("log_probs", log_probs)?;
        let (xv, xs) = x.parts();
        let lead = lead_of("log_probs", &x)?;
        let t = ids("targets", targets, &lead, "log_probs")?;
        let a = ids("anti_targets", anti_targets, &lead, "log_probs")?;
        to_numpy(py, detached(py, |_| target::log_prob_diff(xv, xs, &t, &a))?)
    }

    /// target_rank(log_probs, targets): 1 + #{v : lp[v] > lp[target]}, int64.
    #[pyfunction]
    fn target_rank<'py>(
        py: Python<'py>,
        log_probs: &Bound<'py, PyAny>,
        targets: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        let x = Input::new("log_probs", log_probs)?;
        let (xv, xs) = x.parts();
        let t = ids("targets", targets, &lead_of("log_probs", &x)?, "log_probs")?;
        to_numpy(py, detached(py, |e| target::target_rank(e, xv, xs, &t))?)
    }

    fn pair<'py>(
        py: Python<'py>,
        kind: Divergence,
        log_p: &Bound<'py, PyAny>,
        log_q: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let p = Input::new("log_p", log_p)?;
        let (pv, ps) = p.parts();
        let q = Input::new("log_q", log_q)?;
        let (qv, qs) = q.parts();
        to_numpy(py, detached(py, |e| divergence(e, kind, pv, ps, qv, qs))?)
    }

    /// kl_divergence(log_p, log_q): KL(p‖q) per row.
    #[pyfunction]
    fn kl_divergence<'py>(
        py: Python<'py>,
        log_p: &Bound<'py, PyAny>,
        log_q: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        pair(py, Divergence::Kl, log_p, log_q)
    }

    /// js_divergence(log_p, log_q): Jensen–Shannon divergence per row, in [0, ln 2].
    #[pyfunction]
    fn js_divergence<'py>(
        py: Python<'py>,
        log_p: &Bound<'py, PyAny>,
        log_q: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        pair(py, Divergence::Js, log_p, log_q)
    }

    /// symmetric_kl(log_p, log_q): ½KL(p‖q) + ½KL(q‖p) per row.
    #[pyfunction]
    fn symmetric_kl<'py>(
        py: Python<'py>,
        log_p: &Bound<'py, PyAny>,
        log_q: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        pair(py, Divergence::SymmetricKl, log_p, log_q)
    }

    /// total_variation(log_p, log_q): ½Σ|p - q| per row.
    #[pyfunction]
    fn total_variation<'py>(
        py: Python<'py>,
        log_p: &Bound<'py, PyAny>,
        log_q: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        pair(py, Divergence::TotalVariation, log_p, log_q)
    }

    /// max_abs_diff(log_p, log_q): max |p - q| per row.
    #[pyfunction]
    fn max_abs_diff<'py>(
        py: Python<'py>,
        log_p: &Bound<'py, PyAny>,
        log_q: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        pair(py, Divergence::MaxAbsDiff, log_p, log_q)
    }

    /// forward_kl(log_probs, reference): KL(reference ‖ layer) for every layer.
    #[pyfunction]
    fn forward_kl<'py>(
        py: Python<'py>,
        log_probs: &Bound<'py, PyAny>,
        reference: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<f32>>> {
        let x = Input::new("log_probs", log_probs)?;
        let (xv, xs) = x.parts();
        let r = Input::new("reference", reference)?;
        let (rv, rs) = r.parts();
        to_numpy(
            py,
            detached(py, |e| forward::forward_kl(e, xv, xs, rv, rs))?,
        )
    }

    /// top_k(log_probs, k) -> (ids int64 (..., k), probs float32 (..., k)).
    #[pyfunction]
    fn top_k<'py>(
        py: Python<'py>,
        log_probs: &Bound<'py, PyAny>,
        k: &Bound<'py, PyAny>,
    ) -> PyResult<Pair<'py, i64, f32>> {
        let x = Input::new("log_probs", log_probs)?;
        let (xv, xs) = x.parts();
        let k = integer("k", k)?;
        let (i, p) = detached(py, |e| topk::top_k(e, xv, xs, k))?;
        Ok((to_numpy(py, i)?, to_numpy(py, p)?))
    }

    /// top_k_delta(log_p, log_q, k) -> (ids int64 (..., k), q - p float32 (..., k)).
    #[pyfunction]
    fn top_k_delta<'py>(
        py: Python<'py>,
        log_p: &Bound<'py, PyAny>,
        log_q: &Bound<'py, PyAny>,
        k: &Bound<'py, PyAny>,
    ) -> PyResult<Pair<'py, i64, f32>> {
        let p = Input::new("log_p", log_p)?;
        let (pv, ps) = p.parts();
        let q = Input::new("log_q", log_q)?;
        let (qv, qs) = q.parts();
        let k = integer("k", k)?;
        let (i, d) = detached(py, |e| topk::top_k_delta(e, pv, ps, qv, qs, k))?;
        Ok((to_numpy(py, i)?, to_numpy(py, d)?))
    }

    /// marginal_sums(log_probs) -> (sum_probs float64 (V,), sum_log_probs float64 (V,), n_rows).
    #[pyfunction]
    #[allow(clippy::type_complexity)]
    fn marginal_sums<'py>(
        py: Python<'py>,
        log_probs: &Bound<'py, PyAny>,
    ) -> PyResult<(
        Bound<'py, PyArrayDyn<f64>>,
        Bound<'py, PyArrayDyn<f64>>,
        usize,
    )> {
        let x = Input::new("log_probs", log_probs)?;
        let (xv, xs) = x.parts();
        let m = detached(py, |e| marginal::marginal_sums(e, xv, xs))?;
        let v = m.sum_probs.len();
        let probs = to_numpy(
            py,
            PerRow {
                data: m.sum_probs,
                shape: vec![v],
            },
        )?;
        let logs = to_numpy(
            py,
            PerRow {
                data: m.sum_log_probs,
                shape: vec![v],
            },
        )?;
        Ok((probs, logs, m.rows))
    }

    /// set_num_threads(n): size of the statistics thread pool (None = default).
    #[pyfunction]
    #[pyo3(signature = (n))]
    fn set_num_threads(py: Python<'_>, n: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let n = match n.map(|v| integer("n", v)).transpose()? {
            None => None,
            Some(v) if v >= 1 => Some(usize::try_from(v).unwrap_or(usize::MAX)),
            Some(v) => {
                return Err(StatsError::value(
                    "n",
                    format!("the number of threads must be >= 1, got {v}"),
                )
                .into())
            }
        };
        crate::pool::set_num_threads(n)?;
        convert::warn_pool_notice(py)
    }

    /// get_num_threads(): the number of threads statistics use.
    #[pyfunction]
    fn get_num_threads(py: Python<'_>) -> PyResult<usize> {
        let threads = crate::pool::get_num_threads();
        convert::warn_pool_notice(py)?;
        Ok(threads)
    }

    /// simd_level(): the compiled copy of the hot loops in use ("avx512", "avx2", "neon" or
    /// "portable"; the best the CPU runs unless TUNED_LENS_SIMD names a lower one).
    #[pyfunction]
    fn simd_level(py: Python<'_>) -> PyResult<&'static str> {
        let name = crate::IsaKind::detect().name();
        convert::warn_pool_notice(py)?;
        Ok(name)
    }
}
