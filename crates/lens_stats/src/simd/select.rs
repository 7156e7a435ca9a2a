//! Which compiled copy runs: the best one the CPU supports, unless the environment variable
//! [`SIMD_ENV`] (`TUNED_LENS_SIMD`) asks for a lower one.
//!
//! The variable is read once, when [`IsaKind::detect`] first runs. Its values are the names
//! `simd_level()` reports (`portable`, `avx2`, `avx512`, `neon`; case and surrounding blanks
//! ignored), or `auto` / empty for the default. It exists to measure and test a lower copy on a
//! machine that has a higher one (the AVX2 copy on an AVX-512 CPU). A copy this CPU cannot run,
//! or an unknown name, is **not** an error: the best copy runs and a notice is left for the
//! binding to show as a `RuntimeWarning` ([`take_notice`]), as for `TUNED_LENS_NUM_THREADS` (an
//! environment variable reaches every child process; failing a statistic deep inside one would
//! be worse).

use super::IsaKind;
use crate::notice::Notice;

/// The environment variable that picks a compiled copy.
pub const SIMD_ENV: &str = "TUNED_LENS_SIMD";

/// What the read of [`SIMD_ENV`] had to correct, for the binding to warn about once.
static NOTICE: Notice = Notice::new();

impl IsaKind {
    /// Every copy this build knows, worst first (whether or not this CPU runs it).
    pub const ALL: &'static [IsaKind] = &[
        IsaKind::Portable,
        IsaKind::Avx2,
        IsaKind::Avx512,
        IsaKind::Neon,
    ];

    /// The name `simd_level()` reports and [`SIMD_ENV`] takes.
    pub fn name(self) -> &'static str {
        match self {
            IsaKind::Portable => "portable",
            IsaKind::Avx2 => "avx2",
            IsaKind::Avx512 => "avx512",
            IsaKind::Neon => "neon",
        }
    }
}

/// The correction made to [`SIMD_ENV`], once (`None` if it needed none or was not read yet).
pub fn take_notice() -> Option<String> {
    NOTICE.take()
}

/// The copy to run given the copies the CPU can run (worst first) and the variable's value:
/// `(kind, notice)`.
pub fn choose(available: &[IsaKind], requested: Option<&str>) -> (IsaKind, Option<String>) {
    let best = available[available.len() - 1];
    let Some(raw) = requested else {
        return (best, None);
    };
    let wanted = raw.trim().to_ascii_lowercase();
    if wanted.is_empty() || wanted == "auto" {
        return (best, None);
    }
    let names: Vec<&str> = available.iter().map(|k| k.name()).collect();
    if let Some(&kind) = available.iter().find(|k| k.name() == wanted) {
        return (kind, None);
    }
    let known = IsaKind::ALL.iter().any(|k| k.name() == wanted);
    let why = if known {
        "is not supported by this CPU".to_string()
    } else {
        let all: Vec<&str> = IsaKind::ALL.iter().map(|k| k.name()).collect();
        format!("is not one of auto, {}", all.join(", "))
    };
    let notice = format!(
        "{SIMD_ENV}={raw:?} {why} (this CPU runs: {}); using {}",
        names.join(", "),
        best.name()
    );
    (best, Some(notice))
}

/// [`choose`] on the environment, leaving its notice for [`take_notice`].
pub(super) fn from_env(available: &[IsaKind]) -> IsaKind {
    let value = std::env::var(SIMD_ENV).ok();
    let (kind, notice) = choose(available, value.as_deref());
    NOTICE.leave(notice);
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_picks_a_lower_copy_or_warns_and_uses_the_best() {
        let all = [IsaKind::Portable, IsaKind::Avx2];
        assert_eq!(choose(&all, None), (IsaKind::Avx2, None));
        assert_eq!(choose(&all, Some(" ")), (IsaKind::Avx2, None));
        assert_eq!(choose(&all, Some("Auto")), (IsaKind::Avx2, None));
        assert_eq!(choose(&all, Some(" PORTABLE\n")), (IsaKind::Portable, None));
        let (kind, notice) = choose(&all, Some("avx512"));
        assert_eq!(kind, IsaKind::Avx2);
        assert_eq!(
            notice.as_deref(),
            Some(
                "TUNED_LENS_SIMD=\"avx512\" is not supported by this CPU \
                 (this CPU runs: portable, avx2); using avx2"
            )
        );
        let (kind, notice) = choose(&all, Some("sse9"));
        assert_eq!(kind, IsaKind::Avx2);
        assert!(
            notice
                .as_deref()
                .is_some_and(|n| n.starts_with("TUNED_LENS_SIMD=\"sse9\" is not one of auto, ")),
            "{notice:?}"
        );
    }
}
