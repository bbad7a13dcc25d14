//! Byte arenas for `HashJoin`: rows copied back to back into one buffer, so that what one
//! batch emits and what the watermark will free cost no allocation per row.

/// Byte strings back to back in one buffer, numbered in the order they were pushed.
#[derive(Debug, Default)]
pub(super) struct ByteArena {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl ByteArena {
    /// Appends `item` and returns its number.
    pub(super) fn push(&mut self, item: &[u8]) -> u32 {
        self.bytes.extend_from_slice(item);
        self.ends.push(self.bytes.len());
        u32::try_from(self.ends.len() - 1).expect("fewer than 2^32 rows in one arena")
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Empties the arena, keeping its buffers for reuse.
    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// The items in the order they were pushed.
    pub(super) fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(s, &e)| &self.bytes[s..e])
    }

    /// Items pushed two by two (a key, then its row), as pairs.
    pub(super) fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut items = self.iter();
        std::iter::from_fn(move || Some((items.next()?, items.next()?)))
    }
}

/// What one batch of one side emits, before it becomes columns: per output row, the batch's
/// row on that side (an index into the batch) and a stored row of the other side (copied,
/// as the batch goes on changing the state), either absent for NULLs, and a weight.
#[derive(Debug, Default)]
pub(super) struct Output {
    pub(super) mine: Vec<Option<u32>>,
    pub(super) theirs: Vec<Option<u32>>,
    pub(super) stored: ByteArena,
    pub(super) weights: Vec<i64>,
}

impl Output {
    pub(super) fn push(&mut self, mine: Option<usize>, theirs: Option<&[u8]>, w: i64) {
        self.mine.push(mine.map(|i| i as u32));
        self.theirs.push(theirs.map(|r| self.stored.push(r)));
        self.weights.push(w);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }

    /// Empties the output, keeping its buffers for the next batch (growing them anew for
    /// each batch cost a tenth of a join's time in reallocation and first-touch faults).
    pub(super) fn clear(&mut self) {
        self.mine.clear();
        self.theirs.clear();
        self.stored.clear();
        self.weights.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_back_in_order_and_in_pairs() {
        let mut arena = ByteArena::default();
        assert!(arena.is_empty());
        for item in [&b"k1"[..], b"row one", b"", b"row two"] {
            arena.push(item);
        }
        let items: Vec<&[u8]> = arena.iter().collect();
        assert_eq!(items, [&b"k1"[..], b"row one", b"", b"row two"]);
        let pairs: Vec<_> = arena.pairs().collect();
        assert_eq!(
            pairs,
            [(&b"k1"[..], &b"row one"[..]), (&b""[..], &b"row two"[..])]
        );
    }
}
