//! Epoch barriers: one coordinator numbers epochs and stamps them with wall time; every
//! input injects the newest epoch into its stream, and FLUSH waits until views commit it.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::message::{Barrier, Epoch};

/// Hands out epochs; a ticker thread starts one every interval.
#[derive(Debug)]
pub struct Barriers {
    tx: watch::Sender<Barrier>,
    /// The next epoch, and the newest checkpoint started (what every later barrier carries).
    next: Mutex<(Epoch, Epoch)>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

impl Barriers {
    /// Starts the coordinator, with a new epoch every `interval`.
    pub fn start(interval: Duration) -> Arc<Self> {
        Self::start_after(interval, 0)
    }

    /// As `start`, numbering epochs after `last` (the epoch a restored checkpoint was at,
    /// so that epochs keep rising across restarts).
    pub fn start_after(interval: Duration, last: Epoch) -> Arc<Self> {
        let (tx, _) = watch::channel(Barrier::new(last, now_ms()));
        let barriers = Arc::new(Self {
            tx,
            next: Mutex::new((last + 1, 0)),
        });
        let weak: Weak<Self> = Arc::downgrade(&barriers);
        std::thread::Builder::new()
            .name("weir-barriers".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(interval);
                    match weak.upgrade() {
                        Some(b) => {
                            b.inject();
                        }
                        None => return,
                    }
                }
            })
            .expect("spawn barrier thread");
        barriers
    }

    /// Starts a new epoch now and returns it.
    pub fn inject(&self) -> Barrier {
        self.start_epoch(false)
    }

    /// Starts a new epoch that starts a checkpoint (numbered by the epoch) and returns it.
    pub fn inject_checkpoint(&self) -> Barrier {
        self.start_epoch(true)
    }

    fn start_epoch(&self, checkpoint: bool) -> Barrier {
        let mut next = self.next.lock();
        let (epoch, latest) = &mut *next;
        if checkpoint {
            *latest = *epoch;
        }
        let barrier = Barrier {
            epoch: *epoch,
            ts_ms: now_ms(),
            checkpoint: *latest,
        };
        *epoch += 1;
        self.tx.send_replace(barrier);
        barrier
    }

    /// The newest epoch started.
    pub fn current(&self) -> Barrier {
        *self.tx.borrow()
    }

    /// Inputs watch this and forward each new epoch into their streams.
    pub fn subscribe(&self) -> watch::Receiver<Barrier> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_barriers_carry_the_newest_checkpoint() {
        let b = Barriers::start_after(Duration::from_secs(3600), 41);
        assert_eq!(
            b.inject(),
            Barrier {
                checkpoint: 0,
                ..b.current()
            }
        );
        assert_eq!(
            b.current().epoch,
            42,
            "epochs continue after a restored one"
        );
        let c = b.inject_checkpoint();
        assert_eq!((c.epoch, c.checkpoint), (43, 43));
        assert_eq!(b.inject().checkpoint, 43);
        assert_eq!(b.inject_checkpoint().checkpoint, 45);
    }
}
