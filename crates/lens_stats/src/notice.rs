//! A one-message slot that reading an environment variable leaves a correction in, for the
//! binding to show once as a `RuntimeWarning`: the thread count (`pool`), the compiled copy
//! (`simd::select`) and the software prefetch (`simd::prefetch`) each own one.

use std::sync::{Mutex, PoisonError};

/// At most one pending message.
#[derive(Debug, Default)]
pub struct Notice(Mutex<Option<String>>);

impl Notice {
    /// An empty slot (usable in a `static`).
    pub const fn new() -> Self {
        Self(Mutex::new(None))
    }

    /// Keep `message` in place of any earlier one; `None` leaves the slot as it is.
    pub fn leave(&self, message: Option<String>) {
        if message.is_some() {
            *self.0.lock().unwrap_or_else(PoisonError::into_inner) = message;
        }
    }

    /// The pending message, once.
    pub fn take(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

#[cfg(test)]
mod tests {
    use super::Notice;

    #[test]
    fn a_message_is_taken_once_and_none_keeps_it() {
        let slot = Notice::new();
        assert_eq!(slot.take(), None);
        slot.leave(Some("first".into()));
        slot.leave(None);
        assert_eq!(slot.take().as_deref(), Some("first"));
        assert_eq!(slot.take(), None);
    }
}
