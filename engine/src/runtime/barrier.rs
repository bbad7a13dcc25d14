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
    next: Mutex<Epoch>,
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
        let (tx, _) = watch::channel(Barrier::new(0, now_ms()));
        let barriers = Arc::new(Self {
            tx,
            next: Mutex::new(1),
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
        let mut next = self.next.lock();
        let barrier = Barrier::new(*next, now_ms());
        *next += 1;
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
