//! `Interrupt`: what stops a statement before it finishes — the client's cancel request,
//! the session's `statement_timeout`, or the server shutting down — checked by parsing too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Result, SqlError};

/// Why a statement was stopped (stored in an `AtomicU8`; 0 = running).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Reason {
    Cancelled = 1,
    TimedOut = 2,
    ShuttingDown = 3,
}

/// A statement's stop signal, shared by every piece of work it starts. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    reason: AtomicU8,
    deadline: Option<Instant>,
}

impl Interrupt {
    /// A signal that fires `timeout` from now (None: only when cancelled).
    pub fn new(timeout: Option<Duration>) -> Self {
        Self {
            inner: Arc::new(Inner {
                reason: AtomicU8::new(0),
                deadline: timeout.map(|t| Instant::now() + t),
            }),
        }
    }

    /// When the statement times out, if it has a timeout.
    pub fn deadline(&self) -> Option<Instant> {
        self.inner.deadline
    }

    /// The client asked to cancel (or went away).
    pub fn cancel(&self) {
        self.stop(Reason::Cancelled);
    }

    /// The server is stopping.
    pub fn shut_down(&self) {
        self.stop(Reason::ShuttingDown);
    }

    fn stop(&self, reason: Reason) {
        let _ = self.inner.reason.compare_exchange(
            0,
            reason as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// Ok while the statement may go on; the error to report once it may not.
    pub fn check(&self) -> Result<()> {
        if self.inner.reason.load(Ordering::Relaxed) == 0
            && self.inner.deadline.is_some_and(|d| Instant::now() >= d)
        {
            self.stop(Reason::TimedOut);
        }
        match self.inner.reason.load(Ordering::Relaxed) {
            0 => Ok(()),
            r if r == Reason::TimedOut as u8 => Err(Self::timed_out()),
            r if r == Reason::ShuttingDown as u8 => Err(SqlError::new(
                "57P01",
                "terminating connection due to administrator command",
            )),
            _ => Err(SqlError::new(
                "57014",
                "canceling statement due to user request",
            )),
        }
    }

    /// What a statement that ran past its `statement_timeout` reports (as Postgres does).
    pub fn timed_out() -> SqlError {
        SqlError::new("57014", "canceling statement due to statement timeout")
    }
}

/// Cancels its interrupt when dropped: a statement's future that is dropped before it
/// finished (cancel request, timeout, client gone) stops the work it handed to threads.
#[derive(Debug)]
pub struct CancelOnDrop(pub Interrupt);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_sticks() {
        let i = Interrupt::new(None);
        assert!(i.check().is_ok());
        i.cancel();
        i.shut_down();
        assert_eq!(i.check().unwrap_err().code, "57014");
        let t = Interrupt::new(Some(Duration::ZERO));
        let e = t.check().unwrap_err();
        assert_eq!((e.code, e.message.contains("timeout")), ("57014", true));
        t.cancel();
        assert!(t.check().unwrap_err().message.contains("timeout"));
        let s = Interrupt::new(None);
        drop(CancelOnDrop(s.clone()));
        assert!(s.check().unwrap_err().message.contains("user request"));
    }
}
