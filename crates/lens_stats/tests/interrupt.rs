//! The interrupt poll of `Exec::interruptible`: asked between claims on the calling thread, it
//! stops every worker and the call fails with `StatsError::Interrupted`; answering `false`
//! changes nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use lens_stats::{topk, Exec, IsaKind, StatsError, Values};

/// Ascending rows: `top_k`'s slowest input (every entry enters the buffer), so the call lasts
/// well past the first poll (~25 ms) without much memory.
fn slow_input(rows: usize, vocab: usize) -> Vec<f32> {
    let row: Vec<f32> = (0..vocab).map(|v| v as f32 / 1e4).collect();
    row.iter().copied().cycle().take(rows * vocab).collect()
}

fn counting(answer: bool) -> (Arc<AtomicUsize>, Arc<dyn Fn() -> bool + Send + Sync>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&calls);
    let poll = move || {
        seen.fetch_add(1, Ordering::Relaxed);
        answer
    };
    (calls, Arc::new(poll))
}

#[test]
fn a_true_poll_stops_the_call() {
    let (rows, vocab) = (400, 20_000);
    let x = slow_input(rows, vocab);
    for threads in [1, 2, 3] {
        let (calls, poll) = counting(true);
        let exec = Exec::with(IsaKind::detect(), threads)
            .unwrap()
            .interruptible(poll);
        let got = topk::top_k(&exec, Values::F32(&x), &[rows, vocab], 64);
        assert_eq!(
            got.unwrap_err(),
            StatsError::Interrupted,
            "{threads} threads"
        );
        assert_eq!(
            calls.load(Ordering::Relaxed),
            1,
            "stops at the first true answer"
        );
    }
}

#[test]
fn a_false_poll_changes_nothing() {
    let (rows, vocab) = (400, 20_000);
    let x = slow_input(rows, vocab);
    for threads in [1, 2] {
        let plain = Exec::with(IsaKind::detect(), threads).unwrap();
        let expected = topk::top_k(&plain, Values::F32(&x), &[rows, vocab], 64).unwrap();
        let (calls, poll) = counting(false);
        let exec = plain.interruptible(poll);
        let got = topk::top_k(&exec, Values::F32(&x), &[rows, vocab], 64).unwrap();
        assert_eq!(got, expected);
        assert!(calls.load(Ordering::Relaxed) >= 1, "a long call polls");
    }
}

#[test]
fn short_calls_never_poll() {
    let x = slow_input(4, 1000);
    let (calls, poll) = counting(true);
    let exec = Exec::current().unwrap().interruptible(poll);
    assert!(topk::top_k(&exec, Values::F32(&x), &[4, 1000], 8).is_ok());
    assert_eq!(calls.load(Ordering::Relaxed), 0);
}
