//! The built-in Nexmark generator (RisingWave's `nexmark` crate) as Arrow batches.
//! Deterministic: the same options give the same rows, split across readers by offset and step.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::{EngineError, Result};

mod auctions;
mod bids;
mod people;
mod reference;

/// Which Nexmark relation a source produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkTable {
    Person,
    Auction,
    Bid,
}

impl NexmarkTable {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "person" => Ok(Self::Person),
            "auction" => Ok(Self::Auction),
            "bid" => Ok(Self::Bid),
            other => Err(EngineError::InvalidParameter(format!(
                "unknown nexmark.table.type '{other}' (expected Person, Auction or Bid)"
            ))),
        }
    }

    /// This relation's share of every 50 events, as the reference generator has it (1/3/46).
    /// (offset of the first event of this type within 50, count within 50).
    pub fn proportion(self) -> (u64, u64) {
        match self {
            Self::Person => (0, 1),
            Self::Auction => (1, 3),
            Self::Bid => (4, 46),
        }
    }

    /// The relation's columns, as RisingWave declares them.
    pub fn schema(self) -> SchemaRef {
        let ts = || DataType::Timestamp(TimeUnit::Nanosecond, None);
        let f = |n: &str, t: DataType| Field::new(n, t, true);
        let fields = match self {
            Self::Person => vec![
                f("id", DataType::Int64),
                f("name", DataType::Utf8),
                f("email_address", DataType::Utf8),
                f("credit_card", DataType::Utf8),
                f("city", DataType::Utf8),
                f("state", DataType::Utf8),
                f("date_time", ts()),
                f("extra", DataType::Utf8),
            ],
            Self::Auction => vec![
                f("id", DataType::Int64),
                f("item_name", DataType::Utf8),
                f("description", DataType::Utf8),
                f("initial_bid", DataType::Int64),
                f("reserve", DataType::Int64),
                f("date_time", ts()),
                f("expires", ts()),
                f("seller", DataType::Int64),
                f("category", DataType::Int64),
                f("extra", DataType::Utf8),
            ],
            Self::Bid => vec![
                f("auction", DataType::Int64),
                f("bidder", DataType::Int64),
                f("price", DataType::Int64),
                f("channel", DataType::Utf8),
                f("url", DataType::Utf8),
                f("date_time", ts()),
                f("extra", DataType::Utf8),
            ],
        };
        Arc::new(Schema::new(fields))
    }
}

/// Options of a `nexmark` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NexmarkOptions {
    pub table: NexmarkTable,
    /// Events of all types to generate; None = unbounded.
    pub event_num: Option<u64>,
    /// Event time of the first event, in ms since the epoch.
    pub base_time_ms: u64,
}

impl NexmarkOptions {
    /// Rows of this source's relation among the first `event_num` events.
    pub fn row_count(&self) -> Option<u64> {
        let (first, share) = self.table.proportion();
        self.event_num
            .map(|n| n / 50 * share + (n % 50).saturating_sub(first).min(share))
    }
}

/// Generates one split of a Nexmark relation: rows `split, split + splits, ...`.
pub struct NexmarkReader {
    table: NexmarkTable,
    /// The index of this split's next row among the relation's rows, and the step to the
    /// one after (the number of splits).
    next: u64,
    step: u64,
    base_time_ms: u64,
    schema: SchemaRef,
    remaining: Option<u64>,
}

impl NexmarkReader {
    pub fn new(options: &NexmarkOptions, split: u64, splits: u64) -> Self {
        Self::resume(options, split, splits, 0)
    }

    /// Split `split` of `splits` after its first `done` rows (a checkpoint's position).
    pub fn resume(options: &NexmarkOptions, split: u64, splits: u64, done: u64) -> Self {
        let step = splits.max(1);
        let first = split + done * step;
        let remaining = options
            .row_count()
            .map(|n| n.saturating_sub(split).div_ceil(step).saturating_sub(done));
        Self {
            table: options.table,
            next: first,
            step,
            base_time_ms: options.base_time_ms,
            schema: options.table.schema(),
            remaining,
        }
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The next batch of at most `max_rows` rows; None when the split is exhausted.
    pub fn next_batch(&mut self, max_rows: usize) -> Option<RecordBatch> {
        let n = match self.remaining {
            Some(0) => return None,
            Some(r) => (r as usize).min(max_rows),
            None => max_rows,
        };
        if let Some(r) = self.remaining.as_mut() {
            *r -= n as u64;
        }
        let (base_time, step) = (self.base_time_ms, self.step);
        let indices = (0..n).map(|i| self.next + i as u64 * step);
        let columns = match self.table {
            NexmarkTable::Bid => {
                let mut builders = bids::BidBuilders::with_capacity(n);
                indices.for_each(|i| builders.append(bids::bid_event_number(i), base_time));
                builders.finish()
            }
            NexmarkTable::Auction => {
                let mut builders = auctions::AuctionBuilders::with_capacity(n);
                indices.for_each(|i| builders.append(auctions::auction_event_number(i), base_time));
                builders.finish()
            }
            NexmarkTable::Person => {
                let mut builders = people::PersonBuilders::with_capacity(n);
                indices.for_each(|i| builders.append(people::person_event_number(i), base_time));
                builders.finish()
            }
        };
        self.next += n as u64 * step;
        RecordBatch::try_new(self.schema(), columns).ok()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampNanosecondBuilder};
    use nexmark::EventGenerator;
    use nexmark::config::NexmarkConfig;
    use nexmark::event::{Event, EventType};

    use super::*;

    impl NexmarkTable {
        fn event_type(self) -> EventType {
            match self {
                Self::Person => EventType::Person,
                Self::Auction => EventType::Auction,
                Self::Bid => EventType::Bid,
            }
        }
    }

    fn ms_to_ns(ms: u64) -> i64 {
        ms as i64 * 1_000_000
    }

    /// Auctions as the reference crate makes them (an `Event` per row), to compare with ours.
    fn auction_columns(events: impl Iterator<Item = Event>, n: usize) -> Vec<ArrayRef> {
        let mut id = Int64Builder::with_capacity(n);
        let (mut item, mut desc, mut extra) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let (mut initial, mut reserve, mut seller, mut category) = (
            Int64Builder::with_capacity(n),
            Int64Builder::with_capacity(n),
            Int64Builder::with_capacity(n),
            Int64Builder::with_capacity(n),
        );
        let (mut ts, mut expires) = (
            TimestampNanosecondBuilder::with_capacity(n),
            TimestampNanosecondBuilder::with_capacity(n),
        );
        for e in events {
            if let Event::Auction(a) = e {
                id.append_value(a.id as i64);
                item.append_value(&a.item_name);
                desc.append_value(&a.description);
                initial.append_value(a.initial_bid as i64);
                reserve.append_value(a.reserve as i64);
                ts.append_value(ms_to_ns(a.date_time));
                expires.append_value(ms_to_ns(a.expires));
                seller.append_value(a.seller as i64);
                category.append_value(a.category as i64);
                extra.append_value(&a.extra);
            }
        }
        vec![
            Arc::new(id.finish()),
            Arc::new(item.finish()),
            Arc::new(desc.finish()),
            Arc::new(initial.finish()),
            Arc::new(reserve.finish()),
            Arc::new(ts.finish()),
            Arc::new(expires.finish()),
            Arc::new(seller.finish()),
            Arc::new(category.finish()),
            Arc::new(extra.finish()),
        ]
    }

    /// People as the reference crate makes them, to compare with ours.
    fn person_columns(events: impl Iterator<Item = Event>, n: usize) -> Vec<ArrayRef> {
        let mut id = Int64Builder::with_capacity(n);
        let mut s: Vec<StringBuilder> = (0..6).map(|_| StringBuilder::new()).collect();
        let mut ts = TimestampNanosecondBuilder::with_capacity(n);
        for e in events {
            if let Event::Person(p) = e {
                id.append_value(p.id as i64);
                for (b, v) in
                    s.iter_mut()
                        .zip([&p.name, &p.email_address, &p.credit_card, &p.city, &p.state])
                {
                    b.append_value(v);
                }
                ts.append_value(ms_to_ns(p.date_time));
                s[5].append_value(&p.extra);
            }
        }
        let mut cols: Vec<ArrayRef> = vec![Arc::new(id.finish())];
        for b in s.iter_mut().take(5) {
            cols.push(Arc::new(b.finish()));
        }
        cols.push(Arc::new(ts.finish()));
        cols.push(Arc::new(s[5].finish()));
        cols
    }

    /// Bids as the reference crate makes them (an `Event` per row), to compare with ours.
    fn bid_columns(events: impl Iterator<Item = Event>, n: usize) -> Vec<ArrayRef> {
        let (mut auction, mut bidder, mut price) = (
            Int64Builder::with_capacity(n),
            Int64Builder::with_capacity(n),
            Int64Builder::with_capacity(n),
        );
        let (mut channel, mut url, mut extra) = (
            StringBuilder::with_capacity(n, n * 8),
            StringBuilder::with_capacity(n, n * 48),
            StringBuilder::new(),
        );
        let mut ts = TimestampNanosecondBuilder::with_capacity(n);
        for e in events {
            if let Event::Bid(b) = e {
                auction.append_value(b.auction as i64);
                bidder.append_value(b.bidder as i64);
                price.append_value(b.price as i64);
                channel.append_value(&b.channel);
                url.append_value(&b.url);
                ts.append_value(ms_to_ns(b.date_time));
                extra.append_value(&b.extra);
            }
        }
        vec![
            Arc::new(auction.finish()),
            Arc::new(bidder.finish()),
            Arc::new(price.finish()),
            Arc::new(channel.finish()),
            Arc::new(url.finish()),
            Arc::new(ts.finish()),
            Arc::new(extra.finish()),
        ]
    }

    #[test]
    fn every_table_equals_the_reference_generator() {
        type Columns = fn(std::vec::IntoIter<Event>, usize) -> Vec<ArrayRef>;
        let tables: [(NexmarkTable, Columns); 3] = [
            (NexmarkTable::Bid, bid_columns),
            (NexmarkTable::Auction, auction_columns),
            (NexmarkTable::Person, person_columns),
        ];
        for (table, columns) in tables {
            // From the start, split, and far out (where f32 event times round).
            for (split, splits) in [(0, 1), (1, 3), (90_000_000, 7)] {
                let options = opts(table, None);
                let mut ours = NexmarkReader::new(&options, split, splits);
                let config = NexmarkConfig {
                    base_time: options.base_time_ms,
                    ..NexmarkConfig::default()
                };
                let mut reference = EventGenerator::new(config)
                    .with_type_filter(table.event_type())
                    .with_offset(split)
                    .with_step(splits);
                for _ in 0..4 {
                    let got = ours.next_batch(3000).unwrap();
                    let events: Vec<Event> = (&mut reference).take(3000).collect();
                    let want = columns(events.into_iter(), 3000);
                    assert_eq!(got.columns(), &want[..], "{table:?} split {split}/{splits}");
                }
            }
        }
    }

    fn opts(table: NexmarkTable, n: Option<u64>) -> NexmarkOptions {
        NexmarkOptions {
            table,
            event_num: n,
            base_time_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn proportions_follow_the_reference_generator() {
        assert_eq!(opts(NexmarkTable::Bid, Some(100)).row_count(), Some(92));
        assert_eq!(opts(NexmarkTable::Auction, Some(102)).row_count(), Some(7));
        assert_eq!(opts(NexmarkTable::Person, Some(101)).row_count(), Some(3));
        let mut r = NexmarkReader::new(&opts(NexmarkTable::Bid, Some(1000)), 0, 1);
        let mut total = 0;
        while let Some(b) = r.next_batch(300) {
            total += b.num_rows();
        }
        assert_eq!(total, 920);
    }

    #[test]
    fn a_resumed_split_goes_on_with_the_rows_that_followed() {
        for table in [
            NexmarkTable::Bid,
            NexmarkTable::Auction,
            NexmarkTable::Person,
        ] {
            let o = opts(table, Some(20_000));
            let mut whole = NexmarkReader::new(&o, 1, 3);
            let first = whole.next_batch(123).unwrap();
            let rest = whole.next_batch(10_000).unwrap();
            let mut resumed = NexmarkReader::resume(&o, 1, 3, first.num_rows() as u64);
            assert_eq!(resumed.next_batch(10_000).unwrap(), rest, "{table:?}");
            assert_eq!(whole.next_batch(1), None);
            assert_eq!(resumed.next_batch(1), None, "{table:?} ends where it did");
        }
    }

    #[test]
    fn splits_partition_the_rows_exactly() {
        let o = opts(NexmarkTable::Bid, Some(500));
        let all = NexmarkReader::new(&o, 0, 1).next_batch(10_000).unwrap();
        let mut parts = 0;
        for s in 0..3 {
            let mut r = NexmarkReader::new(&o, s, 3);
            while let Some(b) = r.next_batch(7) {
                parts += b.num_rows();
            }
        }
        assert_eq!(parts, all.num_rows());
        assert_eq!(all.num_rows(), 460);
    }
}
