//! Watermark alignment across a dataflow's relations: each relation's split readers may
//! read up to one second of event time past the slowest other relation that still moves,
//! so a time-bounded join does not hold the leader's rows while the other side catches up.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use parking_lot::Mutex;

/// How far (event time) one relation may run ahead of another under watermark alignment.
const ALIGNMENT_NS: i64 = 1_000_000_000;

/// Identifies a relation: its entry node in the dataflow's (unsplit) graph.
pub(super) type RelationId = usize;

/// Shared by every stage instance of one dataflow that reads a relation.
#[derive(Debug)]
pub(super) struct Alignment {
    /// Each relation's read limit, as its split readers see it.
    limits: Vec<(RelationId, Arc<AtomicI64>)>,
    /// Every registered input's relation and last event time (None: idle or ended).
    times: Mutex<Vec<(RelationId, Option<i64>)>>,
}

/// The smaller of two optional times (None = no time).
fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Alignment {
    pub(super) fn new(limits: Vec<(RelationId, Arc<AtomicI64>)>) -> Self {
        Self {
            limits,
            times: Mutex::new(Vec::new()),
        }
    }

    /// A new input of `relation`; until it reports a time it holds the others back as if
    /// at the start of time.
    pub(super) fn register(&self, relation: RelationId) -> usize {
        let mut times = self.times.lock();
        times.push((relation, Some(i64::MIN)));
        times.len() - 1
    }

    /// Input `input`'s event time moved (None: idle or ended); republishes the limits.
    pub(super) fn update(&self, input: usize, time: Option<i64>) {
        let mut times = self.times.lock();
        times[input].1 = time;
        // A relation's time: the minimum over its inputs that have one.
        let mut relation: Vec<(RelationId, Option<i64>)> = Vec::new();
        for &(id, t) in times.iter() {
            match relation.iter_mut().find(|r| r.0 == id) {
                Some(r) => r.1 = min_some(r.1, t),
                None => relation.push((id, t)),
            }
        }
        for (id, limit) in &self.limits {
            let others = relation
                .iter()
                .filter(|r| r.0 != *id)
                .fold(None, |m, r| min_some(m, r.1));
            let value = others.map_or(i64::MAX, |t| t.saturating_add(ALIGNMENT_NS));
            limit.store(value, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_relation_may_read_one_second_past_the_others() {
        let (a, b) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicI64::new(0)));
        let align = Alignment::new(vec![(0, Arc::clone(&a)), (1, Arc::clone(&b))]);
        let s = 1_000_000_000;
        // Two inputs of relation 0 (possibly in different stage instances), one of 1.
        let (a1, a2, b1) = (align.register(0), align.register(0), align.register(1));
        align.update(a1, Some(10 * s));
        // b has said nothing yet: a may not read on.
        assert!(a.load(Ordering::Relaxed) < 0);
        align.update(b1, Some(4 * s));
        assert_eq!(a.load(Ordering::Relaxed), 5 * s);
        // a's second input has no time yet, so a holds b back.
        assert!(b.load(Ordering::Relaxed) < 0);
        align.update(a2, Some(7 * s));
        assert_eq!(b.load(Ordering::Relaxed), 8 * s, "a is at min(10, 7)");
        // b goes idle: it holds nothing back.
        align.update(b1, None);
        assert_eq!(a.load(Ordering::Relaxed), i64::MAX);
    }
}
