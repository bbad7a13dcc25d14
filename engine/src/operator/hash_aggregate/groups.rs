//! The groups of a `HashAggregate`: each key's slot (the index of its state in every
//! aggregate's columns), row count, last emitted row, close time and dirtiness.

use std::hash::BuildHasher;

use hashbrown::HashTable;

/// Bytes of bookkeeping per group besides its key and emitted row (vectors and table).
const GROUP_OVERHEAD: usize = 48;

/// Groups by key, as slots. A freed slot is reused by the next new group; its key is
/// empty meanwhile (a key's row encoding never is).
#[derive(Default)]
pub(super) struct Groups {
    /// Slots, found by hashing their key bytes.
    table: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    keys: Vec<Box<[u8]>>,
    rows: Vec<i64>,
    /// The aggregate values the view holds for the group, row-encoded.
    emitted: Vec<Option<Box<[u8]>>>,
    close_at: Vec<Option<i64>>,
    is_dirty: Vec<bool>,
    /// Groups changed since the last flush, in first-change order.
    dirty: Vec<u32>,
    free: Vec<u32>,
    len: usize,
}

impl Groups {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The slot of `key`, made (with no rows) if it is new.
    pub(super) fn find_or_insert(&mut self, key: &[u8], close_at: Option<i64>) -> u32 {
        self.find_or_insert_new(key, close_at).0
    }

    /// The slot of `key` and whether it was made now.
    pub(super) fn find_or_insert_new(&mut self, key: &[u8], close_at: Option<i64>) -> (u32, bool) {
        let hash = self.hasher.hash_one(key);
        let keys = &self.keys;
        if let Some(&slot) = self.table.find(hash, |&s| &*keys[s as usize] == key) {
            return (slot, false);
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                let s = slot as usize;
                self.keys[s] = key.into();
                self.rows[s] = 0;
                self.emitted[s] = None;
                self.close_at[s] = close_at;
                self.is_dirty[s] = false;
                slot
            }
            None => {
                self.keys.push(key.into());
                self.rows.push(0);
                self.emitted.push(None);
                self.close_at.push(close_at);
                self.is_dirty.push(false);
                (self.keys.len() - 1) as u32
            }
        };
        let (keys, hasher) = (&self.keys, &self.hasher);
        self.table
            .insert_unique(hash, slot, |&s| hasher.hash_one(&*keys[s as usize]));
        self.len += 1;
        (slot, true)
    }

    /// Frees `slot` (its aggregates' states are the caller's to clear).
    pub(super) fn remove(&mut self, slot: u32) {
        let s = slot as usize;
        if self.keys[s].is_empty() {
            return;
        }
        let hash = self.hasher.hash_one(&*self.keys[s]);
        if let Ok(entry) = self.table.find_entry(hash, |&x| x == slot) {
            entry.remove();
        }
        self.keys[s] = Box::default();
        self.emitted[s] = None;
        self.rows[s] = 0;
        self.is_dirty[s] = false;
        self.free.push(slot);
        self.len -= 1;
    }

    pub(super) fn in_use(&self, slot: u32) -> bool {
        !self.keys[slot as usize].is_empty()
    }

    /// The slots in use, in slot order.
    pub(super) fn slots(&self) -> Vec<u32> {
        (0..self.keys.len() as u32)
            .filter(|&s| self.in_use(s))
            .collect()
    }

    pub(super) fn key(&self, slot: u32) -> &[u8] {
        &self.keys[slot as usize]
    }

    pub(super) fn rows(&self, slot: u32) -> i64 {
        self.rows[slot as usize]
    }

    pub(super) fn close_at(&self, slot: u32) -> Option<i64> {
        self.close_at[slot as usize]
    }

    /// Adds `weight` to the group's row count; the group is then dirty when `mark`.
    pub(super) fn add_rows(&mut self, slot: u32, weight: i64, mark: bool) {
        self.rows[slot as usize] += weight;
        if mark {
            self.mark_dirty(slot);
        }
    }

    pub(super) fn set_rows(&mut self, slot: u32, rows: i64) {
        self.rows[slot as usize] = rows;
    }

    pub(super) fn mark_dirty(&mut self, slot: u32) {
        let d = &mut self.is_dirty[slot as usize];
        if !*d {
            *d = true;
            self.dirty.push(slot);
        }
    }

    pub(super) fn is_dirty(&self, slot: u32) -> bool {
        self.is_dirty[slot as usize]
    }

    pub(super) fn dirty_count(&self) -> usize {
        self.dirty.len()
    }

    /// The groups changed since the last call, no longer dirty.
    pub(super) fn take_dirty(&mut self) -> Vec<u32> {
        let dirty = std::mem::take(&mut self.dirty);
        for &s in &dirty {
            self.is_dirty[s as usize] = false;
        }
        dirty
    }

    pub(super) fn emitted(&self, slot: u32) -> Option<&[u8]> {
        self.emitted[slot as usize].as_deref()
    }

    /// Records the row the view now holds for the group; returns the one it held.
    pub(super) fn set_emitted(&mut self, slot: u32, row: Option<&[u8]>) -> Option<Box<[u8]>> {
        std::mem::replace(&mut self.emitted[slot as usize], row.map(Into::into))
    }

    /// Bytes held by the groups (not their aggregates' states).
    pub(super) fn size(&self) -> usize {
        self.keys
            .iter()
            .zip(&self.emitted)
            .map(|(k, e)| GROUP_OVERHEAD + k.len() + e.as_ref().map_or(0, |e| e.len()))
            .sum()
    }
}
