//! Element types the kernels read, natively and without a widened copy of the input.
//!
//! float32 and float64 are read as they are; float16 and bfloat16 arrive as raw 16-bit patterns
//! and are converted 16 lanes at a time inside the hot loops (F16C on x86). Everything is
//! computed in f32 lanes and combined per row in f64.

use std::marker::PhantomData;
use std::slice::ChunksExact;

use crate::simd::prefetch::Prefetch;
use crate::simd::{bf16_to_f32, f16_to_f32, Isa, LANES};

/// The contiguous values of a `(rows, V)` array, by element type.
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    /// IEEE half precision, raw bits.
    F16(&'a [u16]),
    /// bfloat16, raw bits (the upper half of an f32).
    Bf16(&'a [u16]),
}

impl Values<'_> {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(s) => s.len(),
            Self::F64(s) => s.len(),
            Self::F16(s) | Self::Bf16(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The numpy/torch name of the element type, for messages.
    pub fn dtype_name(&self) -> &'static str {
        match self {
            Self::F32(_) => "float32",
            Self::F64(_) => "float64",
            Self::F16(_) => "float16",
            Self::Bf16(_) => "bfloat16",
        }
    }
}

/// How one element type is read into f32 lanes.
pub trait Elem: 'static {
    type Raw: Copy + Send + Sync;
    fn get(raw: Self::Raw) -> f32;
    /// Load 16 elements (`chunk.len() >= 16`).
    fn load16<I: Isa>(chunk: &[Self::Raw]) -> [f32; LANES];
}

pub enum F32 {}
pub enum F64 {}
pub enum F16 {}
pub enum Bf16 {}

impl Elem for F32 {
    type Raw = f32;
    #[inline(always)]
    fn get(raw: f32) -> f32 {
        raw
    }
    #[inline(always)]
    fn load16<I: Isa>(chunk: &[f32]) -> [f32; LANES] {
        let mut out = [0.0; LANES];
        out.copy_from_slice(&chunk[..LANES]);
        out
    }
}

impl Elem for F64 {
    type Raw = f64;
    #[inline(always)]
    fn get(raw: f64) -> f32 {
        raw as f32
    }
    #[inline(always)]
    fn load16<I: Isa>(chunk: &[f64]) -> [f32; LANES] {
        let mut out = [0.0; LANES];
        for (o, &c) in out.iter_mut().zip(&chunk[..LANES]) {
            *o = c as f32;
        }
        out
    }
}

impl Elem for F16 {
    type Raw = u16;
    #[inline(always)]
    fn get(raw: u16) -> f32 {
        f16_to_f32(raw)
    }
    #[inline(always)]
    fn load16<I: Isa>(chunk: &[u16]) -> [f32; LANES] {
        I::f16x16(chunk)
    }
}

impl Elem for Bf16 {
    type Raw = u16;
    #[inline(always)]
    fn get(raw: u16) -> f32 {
        bf16_to_f32(raw)
    }
    #[inline(always)]
    fn load16<I: Isa>(chunk: &[u16]) -> [f32; LANES] {
        I::bf16x16(chunk)
    }
}

/// A row as a sequence of 16-lane f32 vectors; the last one is padded with `-inf`, which every
/// kernel treats as "probability exactly 0" (a neutral element). Every vector handed out asks
/// for the data [`crate::simd::prefetch::AHEAD_BYTES`] further on (where this CPU prefetches),
/// as do the `for_each_*` loops.
pub struct Lanes<'a, I: Isa, E: Elem> {
    main: ChunksExact<'a, E::Raw>,
    tail: &'a [E::Raw],
    prefetch: Prefetch,
    _isa: PhantomData<I>,
}

impl<'a, I: Isa, E: Elem> Lanes<'a, I, E> {
    #[inline(always)]
    pub fn new(row: &'a [E::Raw]) -> Self {
        Self::with_prefetch(row, Prefetch::current())
    }

    /// As [`Lanes::new`], with the given prefetch policy instead of this CPU's.
    #[inline(always)]
    pub fn with_prefetch(row: &'a [E::Raw], prefetch: Prefetch) -> Self {
        let main = row.chunks_exact(LANES);
        let tail = main.remainder();
        Self {
            main,
            tail,
            prefetch,
            _isa: PhantomData,
        }
    }
}

impl<I: Isa, E: Elem> Iterator for Lanes<'_, I, E> {
    type Item = [f32; LANES];

    #[inline(always)]
    fn next(&mut self) -> Option<[f32; LANES]> {
        if let Some(chunk) = self.main.next() {
            self.prefetch.ahead(chunk.as_ptr());
            return Some(E::load16::<I>(chunk));
        }
        if self.tail.is_empty() {
            return None;
        }
        let mut padded = [f32::NEG_INFINITY; LANES];
        for (p, &raw) in padded.iter_mut().zip(self.tail) {
            *p = E::get(raw);
        }
        self.tail = &[];
        Some(padded)
    }
}

/// The tail of a row (fewer than 16 entries) as one vector padded with `-inf`.
#[inline(always)]
pub(crate) fn padded<E: Elem>(tail: &[E::Raw]) -> [f32; LANES] {
    let mut padded = [f32::NEG_INFINITY; LANES];
    for (p, &raw) in padded.iter_mut().zip(tail) {
        *p = E::get(raw);
    }
    padded
}

/// Call `f` on each 16-lane vector of `row` in order (the last padded with `-inf`), by internal
/// iteration over exact chunks: the loop body is one straight-line vector block (no per-vector
/// tail test as in [`Lanes`]).
#[inline(always)]
pub fn for_each_vector<I: Isa, E: Elem>(row: &[E::Raw], f: impl FnMut([f32; LANES])) {
    for_each_vector_with::<I, E>(row, Prefetch::current(), f);
}

/// [`for_each_vector`] with the given prefetch policy instead of this CPU's.
#[inline(always)]
pub fn for_each_vector_with<I: Isa, E: Elem>(
    row: &[E::Raw],
    prefetch: Prefetch,
    f: impl FnMut([f32; LANES]),
) {
    each_vector::<I, E>(row, |at| prefetch.ahead(at), f);
}

/// [`for_each_vector_with`], asking for the line `ahead` entries past each vector instead of
/// [`crate::simd::prefetch::AHEAD_BYTES`] past it (the same place in a block that comes
/// `ahead` entries later).
#[inline(always)]
pub fn for_each_vector_ahead<I: Isa, E: Elem>(
    row: &[E::Raw],
    prefetch: Prefetch,
    ahead: usize,
    f: impl FnMut([f32; LANES]),
) {
    each_vector::<I, E>(row, |at| prefetch.line(at.wrapping_add(ahead)), f);
}

/// The row's vectors in order (the tail padded with `-inf`), `ask` called with the start of
/// each whole one before it is read.
#[inline(always)]
fn each_vector<I: Isa, E: Elem>(
    row: &[E::Raw],
    mut ask: impl FnMut(*const E::Raw),
    mut f: impl FnMut([f32; LANES]),
) {
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        ask(chunk.as_ptr());
        f(E::load16::<I>(chunk));
    }
    if !tail.is_empty() {
        f(padded::<E>(tail));
    }
}

/// Like [`for_each_vector`] over two rows of equal length, vector by vector.
#[inline(always)]
pub fn for_each_vector_pair<I: Isa, E: Elem>(
    a: &[E::Raw],
    b: &[E::Raw],
    mut f: impl FnMut([f32; LANES], [f32; LANES]),
) {
    debug_assert_eq!(a.len(), b.len());
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ta, tb) = (ca.remainder(), cb.remainder());
    let prefetch = Prefetch::current();
    for (x, y) in ca.zip(cb) {
        prefetch.ahead(x.as_ptr());
        prefetch.ahead(y.as_ptr());
        f(E::load16::<I>(x), E::load16::<I>(y));
    }
    if !ta.is_empty() {
        f(padded::<E>(ta), padded::<E>(tb));
    }
}

/// Run `$body` with `$slice` bound to the typed slice and `$E` to its [`Elem`] type.
macro_rules! with_elem {
    ($values:expr, $slice:ident, $E:ident => $body:expr) => {
        match $values {
            $crate::elem::Values::F32($slice) => {
                type $E = $crate::elem::F32;
                $body
            }
            $crate::elem::Values::F64($slice) => {
                type $E = $crate::elem::F64;
                $body
            }
            $crate::elem::Values::F16($slice) => {
                type $E = $crate::elem::F16;
                $body
            }
            $crate::elem::Values::Bf16($slice) => {
                type $E = $crate::elem::Bf16;
                $body
            }
        }
    };
}

/// Like [`with_elem!`] for two arrays that must share one element type.
macro_rules! with_elem_pair {
    ($a:expr, $b:expr, $arg_b:expr, $sa:ident, $sb:ident, $E:ident => $body:expr) => {
        match ($a, $b) {
            ($crate::elem::Values::F32($sa), $crate::elem::Values::F32($sb)) => {
                type $E = $crate::elem::F32;
                $body
            }
            ($crate::elem::Values::F64($sa), $crate::elem::Values::F64($sb)) => {
                type $E = $crate::elem::F64;
                $body
            }
            ($crate::elem::Values::F16($sa), $crate::elem::Values::F16($sb)) => {
                type $E = $crate::elem::F16;
                $body
            }
            ($crate::elem::Values::Bf16($sa), $crate::elem::Values::Bf16($sb)) => {
                type $E = $crate::elem::Bf16;
                $body
            }
            (a, b) => {
                return Err($crate::error::StatsError::dtype(
                    $arg_b,
                    format!(
                        "has dtype {} but the other input has dtype {}; both must share one dtype",
                        b.dtype_name(),
                        a.dtype_name()
                    ),
                ))
            }
        }
    };
}

pub(crate) use with_elem;
pub(crate) use with_elem_pair;
