//! Nexmark auctions written straight into Arrow builders: the values of the `nexmark`
//! crate's `Auction::new` without an event or a `String` built a character at a time.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampNanosecondBuilder};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::reference::{
    AUCTION_PROPORTION, FIRST_ID, HOT_BATCH, IN_FLIGHT_AUCTIONS, PERSON_PROPORTION,
    PROPORTION_DENOMINATOR, append_text, event_number, event_time_ms, extra_len, last_auction_id,
    last_person_id, letters, next_person_id, price,
};

const HOT_SELLER_RATIO: usize = 4;
const FIRST_CATEGORY_ID: usize = 10;
const CATEGORIES: usize = 5;
const ITEM_NAME_LEN: usize = 20;
const DESCRIPTION_LEN: usize = 100;
/// Bytes an auction's fields other than `extra` count for, and the average size `extra`
/// pads an auction to.
const AUCTION_FIXED_BYTES: usize = 8 + ITEM_NAME_LEN + DESCRIPTION_LEN + 5 * 8;
const AVG_AUCTION_BYTES: usize = 500;

/// The event number of the `index`-th auction (auctions are events 1..4 of every 50).
pub(super) fn auction_event_number(index: u64) -> usize {
    event_number(index, PERSON_PROPORTION, AUCTION_PROPORTION)
}

/// The auction columns under construction.
pub(super) struct AuctionBuilders {
    id: Int64Builder,
    item_name: StringBuilder,
    description: StringBuilder,
    initial_bid: Int64Builder,
    reserve: Int64Builder,
    date_time: TimestampNanosecondBuilder,
    expires: TimestampNanosecondBuilder,
    seller: Int64Builder,
    category: Int64Builder,
    extra: StringBuilder,
    scratch: Vec<u8>,
}

impl AuctionBuilders {
    pub(super) fn with_capacity(n: usize) -> Self {
        Self {
            id: Int64Builder::with_capacity(n),
            item_name: StringBuilder::with_capacity(n, n * ITEM_NAME_LEN),
            description: StringBuilder::with_capacity(n, n * DESCRIPTION_LEN),
            initial_bid: Int64Builder::with_capacity(n),
            reserve: Int64Builder::with_capacity(n),
            date_time: TimestampNanosecondBuilder::with_capacity(n),
            expires: TimestampNanosecondBuilder::with_capacity(n),
            seller: Int64Builder::with_capacity(n),
            category: Int64Builder::with_capacity(n),
            extra: StringBuilder::with_capacity(n, n * (AVG_AUCTION_BYTES - AUCTION_FIXED_BYTES)),
            scratch: Vec::with_capacity(AVG_AUCTION_BYTES),
        }
    }

    /// Appends the auction of event number `n`.
    pub(super) fn append(&mut self, n: usize, base_time: u64) {
        let rng = &mut SmallRng::seed_from_u64(n as u64);
        let s = &mut self.scratch;
        letters(rng, ITEM_NAME_LEN, s);
        append_text(s, &mut self.item_name);
        letters(rng, DESCRIPTION_LEN, s);
        append_text(s, &mut self.description);
        let initial_bid = price(rng);
        let reserve = initial_bid + price(rng);
        let time = event_time_ms(base_time, n);
        // Auctions last up to twice the time until the auction `IN_FLIGHT_AUCTIONS` later.
        let later = n + IN_FLIGHT_AUCTIONS * PROPORTION_DENOMINATOR / AUCTION_PROPORTION;
        let horizon = event_time_ms(base_time, later) - time;
        let expires = time + 1 + rng.gen_range(0..(horizon * 2).max(1));
        let seller = if rng.gen_range(0..HOT_SELLER_RATIO) > 0 {
            (last_person_id(n) / HOT_BATCH) * HOT_BATCH
        } else {
            next_person_id(n, rng)
        };
        let category = FIRST_CATEGORY_ID + rng.gen_range(0..CATEGORIES);
        let extra = extra_len(rng, AUCTION_FIXED_BYTES, AVG_AUCTION_BYTES);
        letters(rng, extra, s);
        append_text(s, &mut self.extra);
        self.id.append_value((last_auction_id(n) + FIRST_ID) as i64);
        self.initial_bid.append_value(initial_bid as i64);
        self.reserve.append_value(reserve as i64);
        self.date_time.append_value(time as i64 * 1_000_000);
        self.expires.append_value(expires as i64 * 1_000_000);
        self.seller.append_value((seller + FIRST_ID) as i64);
        self.category.append_value(category as i64);
    }

    /// The columns in the order of `NexmarkTable::Auction.schema()`.
    pub(super) fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.id.finish()),
            Arc::new(self.item_name.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.initial_bid.finish()),
            Arc::new(self.reserve.finish()),
            Arc::new(self.date_time.finish()),
            Arc::new(self.expires.finish()),
            Arc::new(self.seller.finish()),
            Arc::new(self.category.finish()),
            Arc::new(self.extra.finish()),
        ]
    }
}
