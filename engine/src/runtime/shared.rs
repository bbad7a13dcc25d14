//! One reader per source split, shared by every dataflow that reads the source: its thread
//! sends each message to all subscribers. A dataflow that joins after the reader started
//! reads the split's earlier part with a reader of its own (a backfill up to the offset it
//! joined at) and then the shared messages (`Handover`), so the source is read once live.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::task::{Context, Poll};

use futures::Stream;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::CHANNEL_CAPACITY;
use crate::message::{Epoch, Message, Watermark};

/// A dataflow reading a shared split: its channel and how far it lets the split read
/// (watermark alignment).
#[derive(Clone)]
pub(super) struct Subscriber {
    pub(super) tx: mpsc::Sender<Message>,
    pub(super) read_limit: Arc<AtomicI64>,
    /// Has had the split's watermark (see `sync`).
    started: bool,
}

struct ShareState {
    subscribers: Vec<Subscriber>,
    /// The split offset the reader's next messages start at.
    position: i64,
    /// The last watermark sent: a new subscriber starts from it (its backfill reaches it
    /// too; the shared messages may no longer bring it, e.g. a bounded split's end).
    watermark: Option<Watermark>,
    /// The reader stopped (no subscriber was left): joining starts a new one.
    closed: bool,
}

/// The subscribers of one shared split reader.
pub struct SplitShare {
    state: Mutex<ShareState>,
}

/// Where a new subscriber joined: its channel, and the split offset the messages on it
/// start at (what came before is the subscriber's to backfill).
pub struct Joined {
    pub messages: mpsc::Receiver<Message>,
    pub offset: i64,
}

impl SplitShare {
    /// A share whose reader starts at split offset `start`.
    pub fn new(start: i64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(ShareState {
                subscribers: Vec::new(),
                position: start,
                watermark: None,
                closed: false,
            }),
        })
    }

    /// Subscribes a dataflow input; None once the reader has stopped.
    pub fn join(&self, read_limit: Arc<AtomicI64>) -> Option<Joined> {
        let mut state = self.state.lock();
        if state.closed {
            return None;
        }
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        state.subscribers.push(Subscriber {
            tx,
            read_limit,
            started: false,
        });
        Some(Joined {
            messages: rx,
            offset: state.position,
        })
    }

    /// The split offset the reader's next messages start at.
    pub fn position(&self) -> i64 {
        self.state.lock().position
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// The reader's thread, between reads: the split offset it has read up to, and who
    /// gets what it sends next. A subscriber that joins later backfills up to here; one
    /// that joined since the last call first gets the last watermark sent.
    pub(super) fn sync(&self, position: i64) -> Vec<Subscriber> {
        let mut state = self.state.lock();
        state.position = position;
        state.subscribers.retain(|s| !s.tx.is_closed());
        let watermark = state.watermark;
        for s in state.subscribers.iter_mut().filter(|s| !s.started) {
            s.started = true;
            if let Some(w) = watermark {
                // Nothing else was sent to it yet: its channel has room.
                let _ = s.tx.try_send(Message::Watermark(w));
            }
        }
        state.subscribers.clone()
    }

    /// Notes a watermark about to be sent (what joining subscribers start from).
    pub(super) fn sent_watermark(&self, w: Watermark) {
        self.state.lock().watermark = Some(w);
    }

    /// Stops the share if no subscriber is left; returns whether it stopped.
    pub(super) fn close_if_unused(&self) -> bool {
        let mut state = self.state.lock();
        state.subscribers.retain(|s| !s.tx.is_closed());
        state.closed = state.subscribers.is_empty();
        state.closed
    }
}

/// The lowest read limit of `subscribers` (i64::MAX when none holds the split back).
pub(super) fn read_limit(subscribers: &[Subscriber]) -> i64 {
    subscribers
        .iter()
        .map(|s| s.read_limit.load(Ordering::Relaxed))
        .min()
        .unwrap_or(i64::MAX)
}

/// A late subscriber's stream: its backfill's messages, then the shared ones (kept aside
/// while the backfill runs, so the shared reader never waits for it). Barriers the
/// backfill already passed are dropped from the shared messages, so epochs only rise.
pub struct Handover {
    backfill: Option<BoxStream<'static, Message>>,
    shared: BoxStream<'static, Message>,
    kept: VecDeque<Message>,
    shared_ended: bool,
    last_epoch: Option<Epoch>,
    /// A shared position, held until the barrier it goes with is known to be kept, and the
    /// message to send after it.
    position: Option<Message>,
    after_position: Option<Message>,
}

impl Handover {
    pub fn new(backfill: BoxStream<'static, Message>, shared: BoxStream<'static, Message>) -> Self {
        Self {
            backfill: Some(backfill),
            shared,
            kept: VecDeque::new(),
            shared_ended: false,
            last_epoch: None,
            position: None,
            after_position: None,
        }
    }
}

impl Stream for Handover {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let this = &mut *self;
        loop {
            if let Some(backfill) = &mut this.backfill {
                while !this.shared_ended {
                    match this.shared.as_mut().poll_next(cx) {
                        Poll::Ready(Some(m)) => this.kept.push_back(m),
                        Poll::Ready(None) => this.shared_ended = true,
                        Poll::Pending => break,
                    }
                }
                match backfill.as_mut().poll_next(cx) {
                    Poll::Ready(Some(m)) => {
                        if let Message::Barrier(b) = &m {
                            this.last_epoch = Some(b.epoch);
                        }
                        return Poll::Ready(Some(m));
                    }
                    Poll::Ready(None) => this.backfill = None,
                    Poll::Pending => return Poll::Pending,
                }
            }
            if let Some(m) = this.after_position.take() {
                return Poll::Ready(Some(m));
            }
            let m = match this.kept.pop_front() {
                Some(m) => m,
                None if this.shared_ended => return Poll::Ready(None),
                None => match this.shared.as_mut().poll_next(cx) {
                    Poll::Ready(Some(m)) => m,
                    Poll::Ready(None) => return Poll::Ready(None),
                    Poll::Pending => return Poll::Pending,
                },
            };
            match m {
                Message::Position(_) => this.position = Some(m),
                // The backfill passed it: the barrier and its position go.
                Message::Barrier(b) if this.last_epoch.is_some_and(|last| b.epoch <= last) => {
                    this.position = None;
                }
                m => match this.position.take() {
                    Some(p) => {
                        this.after_position = Some(m);
                        return Poll::Ready(Some(p));
                    }
                    None => return Poll::Ready(Some(m)),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures::{FutureExt, StreamExt};

    use super::*;
    use crate::message::Barrier;

    fn barrier(epoch: Epoch) -> Message {
        Message::Barrier(Barrier::new(epoch, 0))
    }

    fn position(offset: i64) -> Message {
        Message::Position(crate::SplitPosition {
            partition: 0,
            offset,
            watermark: None,
        })
    }

    fn wm(t: i64) -> Message {
        Message::Watermark(Watermark::EventTime(t))
    }

    #[tokio::test]
    async fn a_late_subscriber_gets_its_backfill_then_the_shared_messages_with_rising_epochs() {
        let share = SplitShare::new(0);
        let first = share.join(Arc::new(AtomicI64::new(i64::MAX))).unwrap();
        assert_eq!(first.offset, 0);
        // The reader read up to offset 10 and sent a watermark before the second joined.
        let subscribers = share.sync(10);
        share.sent_watermark(Watermark::EventTime(5));
        subscribers[0].tx.send(wm(5)).await.unwrap();
        drop(subscribers);
        let limit = Arc::new(AtomicI64::new(7));
        let second = share.join(Arc::clone(&limit)).unwrap();
        assert_eq!(second.offset, 10, "backfill offsets 0..10");
        let subscribers = share.sync(12);
        assert_eq!(read_limit(&subscribers), 7);
        for s in &subscribers {
            s.tx.send(position(12)).await.unwrap();
            s.tx.send(barrier(3)).await.unwrap();
            s.tx.send(position(13)).await.unwrap();
            s.tx.send(barrier(4)).await.unwrap();
        }
        drop(subscribers);
        let backfill = futures::stream::iter(vec![wm(2), barrier(3), wm(5)]).boxed();
        let shared = super::super::channel_stream(second.messages);
        let mut handover = Handover::new(backfill, shared);
        let mut got = Vec::new();
        while let Some(m) = handover.next().now_or_never().flatten() {
            got.push(m);
        }
        assert_eq!(
            got,
            vec![wm(2), barrier(3), wm(5), wm(5), position(13), barrier(4)],
            "backfill first; the shared barrier 3 it already passed is dropped with its position"
        );
        drop(first);
        assert!(!share.close_if_unused(), "the second still reads");
        drop(handover);
        assert!(share.close_if_unused());
        assert!(share.join(limit).is_none());
    }
}
