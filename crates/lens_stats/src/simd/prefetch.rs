//! Software prefetch in the streaming loops, and whether this CPU gets it.
//!
//! The loops ask for the line [`AHEAD_BYTES`] past the vector they load, one request per 64
//! bytes, into L2. On the Intel Xeon (AVX-512) this was tuned on, that took an exp-heavy
//! streaming loop from 58% of the read bandwidth (hardware prefetcher only) to 96% (2 threads,
//! 1.3 GB of f32: the next 4 KiB block requested at once into L1 gave 67%; per vector into L2 at
//! 1 KiB 88%, 2 KiB 96%, 4 KiB 91%; into L1 at 2 KiB 87%).
//!
//! On AMD the same requests cost bandwidth instead. AMD EPYC Zen 4 (2 vCPUs, numpy inputs on
//! transparent huge pages, 13×128×50304 f32, share of a plain read timed just before each call,
//! medians of 6 alternated runs of the two builds, AVX2 copy): 1 thread, max probability 53–58%
//! with the requests vs 95–99% without, entropy 39–40% vs 49–50%, KL 55–58% vs 63–66%; 2
//! threads, max probability 70% vs 86%, entropy 57% vs 60%, KL 77% vs 84%, JS 44% vs 48%; the
//! AVX-512 copy, 1 thread: max probability 58% vs 88%, entropy 48% vs 69%, KL 82% vs 93%. Zen's
//! own stream prefetchers keep enough lines in flight; the extra requests (one per line, ahead
//! of demand) only compete with them for the L2's miss buffers. Prefetching 8 KiB ahead was in
//! between, and slowed the target rank (66% vs 92%). So the requests are off on AMD (and Hygon,
//! which builds Zen cores) and on everywhere else; [`Prefetch::current`] says which.
//!
//! Three loops keep their requests everywhere ([`Prefetch::on`]), measured faster with them on
//! the same AMD machine: the online normalisers' block loop (entropy from logits, logsumexp,
//! log_softmax's first pass; entropy from logits, medians of 6: 1 thread 44% with vs 38%
//! without, 2 threads 58% vs 53%), and the two kernels that read short strided pieces, which
//! the hardware prefetchers do not follow: `forward_kl` (L layers' 4 KiB blocks per reference
//! block; 2 threads 56–60% vs 43%) and `marginal_sums` (one 4 KiB segment per row).

//!
//! The environment variable [`PREFETCH_ENV`] (`TUNED_LENS_PREFETCH`: `on`, `off`, or `auto` /
//! empty for the vendor's default; case and blanks ignored) overrides the choice, to measure
//! both on one machine without a rebuild. It is read once; an unknown value is not an error:
//! the default applies and a notice is left for the binding to show as a `RuntimeWarning`
//! ([`take_notice`]), as for `TUNED_LENS_SIMD`. The three loops above ignore it.

use std::sync::OnceLock;

use crate::notice::Notice;

/// How far ahead of the vector being processed the streaming loops ask for data, in bytes.
pub const AHEAD_BYTES: usize = 2048;

/// The environment variable that overrides the prefetch choice.
pub const PREFETCH_ENV: &str = "TUNED_LENS_PREFETCH";

/// What the read of [`PREFETCH_ENV`] had to correct, for the binding to warn about once.
static NOTICE: Notice = Notice::new();

/// Whether this CPU's streaming loops issue software prefetches (decided once).
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let value = std::env::var(PREFETCH_ENV).ok();
        let (on, notice) = choose(!zen_family(), value.as_deref());
        NOTICE.leave(notice);
        on
    })
}

/// The correction made to [`PREFETCH_ENV`], once (`None` if it needed none or was not read).
pub fn take_notice() -> Option<String> {
    NOTICE.take()
}

/// Prefetch or not, given this CPU's default and the variable's value: `(on, notice)`.
pub fn choose(default: bool, requested: Option<&str>) -> (bool, Option<String>) {
    let wanted = requested.map(|raw| raw.trim().to_ascii_lowercase());
    match wanted.as_deref() {
        None | Some("" | "auto") => (default, None),
        Some("on") => (true, None),
        Some("off") => (false, None),
        Some(_) => {
            let raw = requested.unwrap_or_default();
            let used = if default { "on" } else { "off" };
            let notice =
                format!("{PREFETCH_ENV}={raw:?} is not one of auto, on, off; using {used}");
            (default, Some(notice))
        }
    }
}

/// The CPU vendor is AMD or Hygon (`cpuid` leaf 0).
fn zen_family() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `cpuid` leaf 0 exists on every x86-64 CPU.
        #[allow(unused_unsafe)]
        let leaf = unsafe { std::arch::x86_64::__cpuid(0) };
        let mut vendor = [0u8; 12];
        vendor[..4].copy_from_slice(&leaf.ebx.to_le_bytes());
        vendor[4..8].copy_from_slice(&leaf.edx.to_le_bytes());
        vendor[8..].copy_from_slice(&leaf.ecx.to_le_bytes());
        &vendor == b"AuthenticAMD" || &vendor == b"HygonGenuine"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The prefetch policy of one loop: read once per row or block (a register in the loop, not a
/// global load per vector). Prefetches are hints: they never fault, so the addresses may lie
/// past the end of a slice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefetch(bool);

impl Prefetch {
    /// This CPU's policy ([`enabled`]).
    #[inline(always)]
    pub fn current() -> Self {
        Self(enabled())
    }

    /// Requests on whatever the CPU (the online normalisers' block loop, see the module notes).
    #[inline(always)]
    pub fn on() -> Self {
        Self(true)
    }

    /// Ask for the line [`AHEAD_BYTES`] past `at`.
    #[inline(always)]
    pub fn ahead<T>(self, at: *const T) {
        if self.0 {
            to_l2(at.cast::<u8>().wrapping_add(AHEAD_BYTES));
        }
    }

    /// Ask for the line holding `at`.
    #[inline(always)]
    pub fn line<T>(self, at: *const T) {
        if self.0 {
            to_l2(at);
        }
    }
}

/// Ask the L2 cache to start loading the line holding `at` (x86-64; nothing elsewhere).
#[inline(always)]
fn to_l2<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `_mm_prefetch` never faults and reads nothing architecturally.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(at.cast::<i8>())
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy follows the vendor string unless the variable says otherwise, and is decided
    /// once.
    #[test]
    fn prefetch_is_off_exactly_on_amd_and_hygon() {
        if std::env::var_os(PREFETCH_ENV).is_none() {
            assert_eq!(enabled(), !zen_family());
        }
        assert_eq!(Prefetch::current(), Prefetch::current());
        #[cfg(target_arch = "x86_64")]
        {
            let amd = std::fs::read_to_string("/proc/cpuinfo")
                .map(|text| text.contains("AuthenticAMD") || text.contains("HygonGenuine"));
            if let Ok(amd) = amd {
                assert_eq!(zen_family(), amd);
            }
        }
        // A hint past the end of anything never faults.
        let p = Prefetch::on();
        p.ahead(std::ptr::null::<f32>());
        p.line(usize::MAX as *const u8);
    }

    #[test]
    fn the_variable_overrides_the_default_or_warns_and_keeps_it() {
        for default in [true, false] {
            assert_eq!(choose(default, None), (default, None));
            assert_eq!(choose(default, Some(" ")), (default, None));
            assert_eq!(choose(default, Some("Auto")), (default, None));
            assert_eq!(choose(default, Some(" ON\n")), (true, None));
            assert_eq!(choose(default, Some("off")), (false, None));
        }
        assert_eq!(
            choose(false, Some("yes")),
            (
                false,
                Some("TUNED_LENS_PREFETCH=\"yes\" is not one of auto, on, off; using off".into())
            )
        );
        let (on, notice) = choose(true, Some("2048"));
        assert!(on && notice.is_some_and(|n| n.ends_with("using on")));
    }
}
