//! Nexmark bids written straight into Arrow builders: the values of the `nexmark` crate's
//! `Bid::new` (same seed per event, same random draws in the same order) without an event,
//! a `String` per field, or a copy per row; bids are 92% of all events, so this sets the
//! generator's speed.

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampNanosecondBuilder};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::reference::{
    AUCTION_PROPORTION, BID_PROPORTION, FIRST_ID, HOT_BATCH, IN_FLIGHT_AUCTIONS, PERSON_PROPORTION,
    append_text, event_number, event_time_ms, extra_len, last_auction_id, last_person_id, letters,
    next_person_id, price,
};

const HOT_AUCTION_RATIO: usize = 2;
const HOT_BIDDER_RATIO: usize = 4;
const HOT_CHANNEL_RATIO: usize = 2;
const AUCTION_ID_LEAD: usize = 10;
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// Bytes a bid's fixed fields count for, and the average size `extra` pads a bid to.
const BID_FIXED_BYTES: usize = 32;
const AVG_BID_BYTES: usize = 100;

fn gen_string_with_delimiter(rng: &mut SmallRng, max: usize, delimiter: char) -> String {
    let len = rng.gen_range(3..max);
    (0..len)
        .map(|_| {
            if rng.gen_range(0..13) == 0 {
                delimiter
            } else {
                rng.gen_range(b'a'..=b'z') as char
            }
        })
        .collect()
}

fn base_url(seed: u64) -> String {
    let mut rng = SmallRng::seed_from_u64(seed);
    let ids: Vec<String> = (0..3)
        .map(|_| gen_string_with_delimiter(&mut rng, 5, '_'))
        .collect();
    format!(
        "https://www.nexmark.com/{}/{}/{}/item.htm?query=1",
        ids[0], ids[1], ids[2]
    )
}

/// The hot channels' URLs and the 10,000 other (channel, URL) pairs, built once.
struct Channels {
    hot_urls: Vec<String>,
    all: Vec<(String, String)>,
}

fn channels() -> &'static Channels {
    static CHANNELS: OnceLock<Channels> = OnceLock::new();
    CHANNELS.get_or_init(|| Channels {
        hot_urls: (0..4).map(base_url).collect(),
        all: (0..10_000usize)
            .map(|i| {
                let mut url = base_url(i as u64);
                let mut rng = SmallRng::seed_from_u64(i as u64);
                if rng.gen_range(0..10) > 0 {
                    url.push_str("&channel_id=");
                    url.push_str(&i64::abs((i as i32).reverse_bits() as i64).to_string());
                }
                (format!("channel-{i}"), url)
            })
            .collect(),
    })
}

/// The event number of the `index`-th bid (bids are events 4..50 of every 50).
pub(super) fn bid_event_number(index: u64) -> usize {
    event_number(
        index,
        PERSON_PROPORTION + AUCTION_PROPORTION,
        BID_PROPORTION,
    )
}

/// The bid columns under construction.
pub(super) struct BidBuilders {
    auction: Int64Builder,
    bidder: Int64Builder,
    price: Int64Builder,
    channel: StringBuilder,
    url: StringBuilder,
    date_time: TimestampNanosecondBuilder,
    extra: StringBuilder,
    scratch: Vec<u8>,
}

impl BidBuilders {
    pub(super) fn with_capacity(n: usize) -> Self {
        Self {
            auction: Int64Builder::with_capacity(n),
            bidder: Int64Builder::with_capacity(n),
            price: Int64Builder::with_capacity(n),
            channel: StringBuilder::with_capacity(n, n * 8),
            url: StringBuilder::with_capacity(n, n * 80),
            date_time: TimestampNanosecondBuilder::with_capacity(n),
            extra: StringBuilder::with_capacity(n, n * AVG_BID_BYTES),
            scratch: Vec::with_capacity(AVG_BID_BYTES),
        }
    }

    /// Appends the bid of event number `n`.
    pub(super) fn append(&mut self, n: usize, base_time: u64) {
        let rng = &mut SmallRng::seed_from_u64(n as u64);
        let auction = if 0 < rng.gen_range(0..HOT_AUCTION_RATIO) {
            (last_auction_id(n) / HOT_BATCH) * HOT_BATCH
        } else {
            let max = last_auction_id(n);
            let min = max.saturating_sub(IN_FLIGHT_AUCTIONS);
            min + rng.gen_range(0..max - min + 1 + AUCTION_ID_LEAD)
        };
        let bidder = if 0 < rng.gen_range(0..HOT_BIDDER_RATIO) {
            (last_person_id(n) / HOT_BATCH) * HOT_BATCH + 1
        } else {
            next_person_id(n, rng)
        };
        let price = price(rng);
        let c = channels();
        if rng.gen_range(0..HOT_CHANNEL_RATIO) > 0 {
            let index = rng.gen_range(0..HOT_CHANNELS.len());
            self.channel.append_value(HOT_CHANNELS[index]);
            self.url.append_value(&c.hot_urls[index]);
        } else {
            let (channel, url) = c.all.choose(rng).expect("10,000 channels");
            self.channel.append_value(channel);
            self.url.append_value(url);
        }
        let size = extra_len(rng, BID_FIXED_BYTES, AVG_BID_BYTES);
        letters(rng, size, &mut self.scratch);
        append_text(&mut self.scratch, &mut self.extra);
        self.auction.append_value((auction + FIRST_ID) as i64);
        self.bidder.append_value((bidder + FIRST_ID) as i64);
        self.price.append_value(price as i64);
        self.date_time
            .append_value(event_time_ms(base_time, n) as i64 * 1_000_000);
    }

    /// The columns in the order of `NexmarkTable::Bid.schema()`.
    pub(super) fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.auction.finish()),
            Arc::new(self.bidder.finish()),
            Arc::new(self.price.finish()),
            Arc::new(self.channel.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.date_time.finish()),
            Arc::new(self.extra.finish()),
        ]
    }
}
