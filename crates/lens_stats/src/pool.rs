//! The crate's own rayon thread pool and the row-parallel driver every kernel goes through:
//! the calling thread works beside `threads - 1` helper threads, claiming runs of rows.
//!
//! The pool is separate from rayon's global pool and from torch's intra-op pool. Calls from
//! Python release the GIL for the whole computation but run synchronously, so they never run
//! concurrently with a torch op issued from the same Python thread: the two pools take turns
//! instead of oversubscribing the cores.
//!
//! Size: `set_num_threads(Some(n))`, else the env var `TUNED_LENS_NUM_THREADS` (read when the
//! pool is first built), else the number of available cores; never more than [`max_threads`]
//! (4 × the logical CPUs, at least 64). `set_num_threads` refuses a larger `n`; a larger, zero
//! or unparsable env var is clamped or ignored, with a notice for the binding to show as a
//! warning ([`take_notice`]). Results never depend on the size: each row is computed by one
//! thread, in a fixed lane order, whichever thread that is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{Result, StatsError};
use crate::notice::Notice;
use crate::simd::{run_block, IsaKind, RowOp};

/// Below this many elements of work a call runs on the calling thread.
const SEQUENTIAL_BELOW: usize = 1 << 15;
/// A thread claims at least this many elements' worth of rows at a time (claims shrink
/// towards this as the work runs out, so a busy core does not halve the throughput).
const BLOCK_ELEMS: usize = 1 << 16;
/// With an interrupt poll, a claim holds at most this many elements' worth of rows (4 MiB of
/// float32: about a millisecond of reading for the streaming kernels), so every worker reaches
/// its next claim soon after a stop; the one lock a claim costs is negligible beside that much
/// reading. Measured: `top_k` on its slowest input (ascending rows of 50304, 2 threads) raised
/// `KeyboardInterrupt` ~40 ms after the SIGINT (2^22 elements per claim: ~220 ms).
const INTERRUPTIBLE_CLAIM_ELEMS: usize = 1 << 20;
/// The calling thread polls for an interrupt at most this often, between its claims.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Asks, on the calling thread, whether the call should stop (e.g. a pending Ctrl-C). It may
/// re-acquire the GIL briefly; it is called between claimed runs, never per row.
pub type InterruptPoll = Arc<dyn Fn() -> bool + Send + Sync>;

/// The pool and the id of the process that built it: a forked child (e.g. a data-loader
/// worker) inherits the pool object but not its threads, so it builds its own.
static POOL: Mutex<Option<(u32, Arc<Workers>)>> = Mutex::new(None);

/// `threads` workers: the calling thread itself plus a pool of `threads - 1` helper threads
/// (none for one thread). No thread is left idle to spin beside the working ones.
pub(crate) struct Workers {
    threads: usize,
    helpers: Option<ThreadPool>,
}

/// The environment variable that sizes the pool when `set_num_threads` was not called.
pub const THREADS_ENV: &str = "TUNED_LENS_NUM_THREADS";

/// What the last read of [`THREADS_ENV`] had to correct, for the binding to warn about once.
static NOTICE: Notice = Notice::new();

fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The largest pool: 4 × the logical CPUs, at least 64.
///
/// The kernels stream memory, so threads beyond the cores only take turns (a few per core help
/// to hide a stall or a busy core; more never speed anything up), while every thread costs a
/// stack and a wake-up in every call: 2,000 threads took 9 s to start and turned a small call
/// into 21 s. The floor of 64 keeps deliberate over-subscription on a small machine possible.
pub fn max_threads() -> usize {
    logical_cpus().saturating_mul(4).max(64)
}

fn limit_text() -> String {
    format!(
        "the limit is {} threads (4 × the {} logical CPUs, at least 64)",
        max_threads(),
        logical_cpus()
    )
}

/// The corrections made to the last [`THREADS_ENV`] read, once (`None` if it needed none).
pub fn take_notice() -> Option<String> {
    NOTICE.take()
}

/// The env var's thread count, else the logical CPUs; a value above [`max_threads`] is
/// clamped, a zero or unparsable one ignored, each leaving a notice ([`take_notice`]).
fn default_threads() -> usize {
    let cpus = logical_cpus();
    let Ok(raw) = std::env::var(THREADS_ENV) else {
        return cpus;
    };
    let (threads, notice) = match raw.trim().parse::<u128>() {
        Ok(n) if n > max_threads() as u128 => (
            max_threads(),
            Some(format!(
                "{THREADS_ENV}={n} is too many: {}; using {}",
                limit_text(),
                max_threads()
            )),
        ),
        Ok(n) if n >= 1 => (n as usize, None),
        _ => (
            cpus,
            Some(format!(
                "{THREADS_ENV}={raw:?} is not a positive integer; using the {cpus} logical CPUs"
            )),
        ),
    };
    NOTICE.leave(notice);
    threads
}

fn build_pool(threads: usize) -> Result<Arc<Workers>> {
    let helpers = if threads > 1 {
        let pool = ThreadPoolBuilder::new()
            .num_threads(threads - 1)
            .thread_name(|i| format!("lens-stats-{i}"))
            .build()
            .map_err(|e| {
                StatsError::value("n", format!("could not start {threads} threads: {e}"))
            })?;
        Some(pool)
    } else {
        None
    };
    Ok(Arc::new(Workers { threads, helpers }))
}

/// The shared pool, built on first use.
fn shared_pool() -> Result<Arc<Workers>> {
    let mut slot = POOL.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    let threads = match slot.take() {
        Some((owner, pool)) if owner == pid => {
            *slot = Some((owner, Arc::clone(&pool)));
            return Ok(pool);
        }
        // Inherited through fork: its worker threads do not exist here, so never use (or
        // drop) it; keep its size.
        Some((_, inherited)) => {
            let threads = inherited.threads;
            std::mem::forget(inherited);
            threads
        }
        None => default_threads(),
    };
    let pool = build_pool(threads)?;
    *slot = Some((pid, Arc::clone(&pool)));
    Ok(pool)
}

/// Resize the shared pool: `Some(n)` threads (`n >= 1`), or `None` for the default (env var or
/// core count).
///
/// Fails, before any thread is started, for `n = 0` or `n` above [`max_threads`].
pub fn set_num_threads(n: Option<usize>) -> Result<()> {
    let threads = match n {
        Some(0) => return Err(StatsError::value("n", "the number of threads must be >= 1")),
        Some(n) if n > max_threads() => {
            return Err(StatsError::value(
                "n",
                format!("{n} threads is too many: {}", limit_text()),
            ))
        }
        Some(n) => n,
        None => default_threads(),
    };
    let pool = build_pool(threads)?;
    let previous = POOL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .replace((std::process::id(), pool));
    if let Some((owner, inherited)) = previous {
        if owner != std::process::id() {
            std::mem::forget(inherited);
        }
    }
    Ok(())
}

/// The number of threads calls use.
pub fn get_num_threads() -> usize {
    shared_pool().map_or(1, |p| p.threads)
}

/// How a call runs: which compiled copy of the hot loops, on which pool.
#[derive(Clone)]
pub struct Exec {
    pub isa: IsaKind,
    pool: Arc<Workers>,
    interrupt: Option<InterruptPoll>,
}

impl Exec {
    /// The best instruction set and the shared pool.
    pub fn current() -> Result<Self> {
        Ok(Self {
            isa: IsaKind::detect(),
            pool: shared_pool()?,
            interrupt: None,
        })
    }

    /// A given instruction set (must be in [`IsaKind::available`]) on a private pool of
    /// `threads` threads; for tests and benchmarks.
    pub fn with(isa: IsaKind, threads: usize) -> Result<Self> {
        if !IsaKind::available().contains(&isa) {
            return Err(StatsError::value(
                "isa",
                format!("{isa:?} is not supported by this CPU"),
            ));
        }
        Ok(Self {
            isa,
            pool: build_pool(threads.max(1))?,
            interrupt: None,
        })
    }

    /// The same executor, polling `poll` on the calling thread every ~25 ms of a long call; when
    /// it answers `true`, every worker stops at its next claim and the call returns
    /// [`StatsError::Interrupted`].
    pub fn interruptible(self, poll: InterruptPoll) -> Self {
        Self {
            interrupt: Some(poll),
            ..self
        }
    }

    pub fn threads(&self) -> usize {
        self.pool.threads
    }

    /// Fill `out` (chunks of `per_row` per row; the last may be shorter) by running `op` on every
    /// row; `work_per_row` (elements read) sizes the blocks and the sequential threshold.
    ///
    /// Fails only with [`StatsError::Interrupted`], when the interrupt poll asked to stop (the
    /// contents of `out` are then unspecified).
    pub(crate) fn run_rows<K: RowOp>(
        &self,
        op: &K,
        out: &mut [K::Out],
        per_row: usize,
        work_per_row: usize,
    ) -> Result<()> {
        let per_row = per_row.max(1);
        let rows = out.len().div_ceil(per_row);
        let work = work_per_row.max(1);
        let isa = self.isa;
        let poll = self.interrupt.as_deref();
        let small = rows < 2 || rows.saturating_mul(work) < SEQUENTIAL_BELOW;
        // One thread and nothing to poll: no claims at all.
        if small || (self.pool.helpers.is_none() && poll.is_none()) {
            run_block(isa, op, 0, out, per_row);
            return Ok(());
        }
        // Guided self-scheduling: each claim takes the next run of contiguous rows, half of an
        // even share of what is left (at least `min_rows`), so the work starts in long runs
        // (the hardware and software prefetchers stream across row boundaries) and ends in
        // short ones (a busy core holds up the call by one short run at most).
        // Fixed one-row blocks handed out in turn ran bf16 entropy ~20% slower.
        let threads = self.threads();
        let min_rows = (BLOCK_ELEMS / work).max(1);
        let max_rows = match poll {
            Some(_) => (INTERRUPTIBLE_CLAIM_ELEMS / work).max(min_rows),
            None => usize::MAX,
        };
        let stopped = AtomicBool::new(false);
        let queue: Mutex<(usize, &mut [K::Out])> = Mutex::new((0, out));
        let claim = || {
            if stopped.load(Ordering::Relaxed) {
                return None;
            }
            let mut guard = queue.lock().unwrap_or_else(PoisonError::into_inner);
            let (first, rest) = &mut *guard;
            let left = rest.len().div_ceil(per_row);
            if left == 0 {
                return None;
            }
            let take = (left / (2 * threads)).max(min_rows).min(max_rows).min(left);
            let len = (take * per_row).min(rest.len());
            let (mine, remaining) = std::mem::take(rest).split_at_mut(len);
            let start = *first;
            *first += take;
            *rest = remaining;
            Some((start, mine))
        };
        let drain = || {
            while let Some((first, chunk)) = claim() {
                run_block(isa, op, first, chunk, per_row);
            }
        };
        // Only the calling thread polls: the poll may take the GIL, which it gave up.
        let drain_and_poll = || {
            let Some(poll) = poll else {
                return drain();
            };
            let mut polled = Instant::now();
            while let Some((first, chunk)) = claim() {
                run_block(isa, op, first, chunk, per_row);
                if polled.elapsed() >= POLL_EVERY {
                    if poll() {
                        stopped.store(true, Ordering::Relaxed);
                    }
                    polled = Instant::now();
                }
            }
        };
        match &self.pool.helpers {
            // The calling thread is one of the workers and wakes `threads - 1` helpers. Handing
            // everything to a pool of `threads` and blocking the caller (`install`) let the
            // scheduler wake both workers onto the caller's core now and then (measured: a
            // third of the calls after 50 ms of Python work ran ~40% slower until one
            // migrated).
            Some(helpers) => helpers.in_place_scope(|scope| {
                for _ in 0..threads - 1 {
                    scope.spawn(|_| drain());
                }
                drain_and_poll();
            }),
            None => drain_and_poll(),
        }
        if stopped.into_inner() {
            return Err(StatsError::Interrupted);
        }
        Ok(())
    }
}
