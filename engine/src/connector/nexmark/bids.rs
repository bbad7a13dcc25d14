//! Nexmark bids written straight into Arrow builders: the values of the `nexmark` crate's
//! `Bid::new` (same seed per event, same random draws in the same order) without an event,
//! a `String` per field, or a copy per row; bids are 92% of all events, so this sets the
//! generator's speed.

use std::sync::{Arc, OnceLock};

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampNanosecondBuilder};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

// The reference generator's defaults (`NexmarkConfig::default()`), which every weir source uses.
const PROPORTION_DENOMINATOR: usize = 50;
const PERSON_PROPORTION: usize = 1;
const AUCTION_PROPORTION: usize = 3;
const BID_PROPORTION: usize = 46;
const HOT_AUCTION_RATIO: usize = 2;
const HOT_BIDDER_RATIO: usize = 4;
const HOT_CHANNEL_RATIO: usize = 2;
const HOT_BATCH: usize = 100;
const IN_FLIGHT_AUCTIONS: usize = 100;
const AUCTION_ID_LEAD: usize = 10;
const ACTIVE_PEOPLE: usize = 1000;
const PERSON_ID_LEAD: usize = 10;
const FIRST_ID: usize = 1000;
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
    let i = index as usize;
    i / BID_PROPORTION * PROPORTION_DENOMINATOR
        + PERSON_PROPORTION
        + AUCTION_PROPORTION
        + i % BID_PROPORTION
}

/// Event time (ms) of event `n`: one event every 100 µs from `base_time`, computed in f32
/// as the reference does (its rounding included).
pub(super) fn event_time_ms(base_time: u64, n: usize) -> u64 {
    let delay = 1_000_000_f32 / 10_000_f32;
    base_time + ((n as f32 * delay) / 1000.0).round() as u64
}

fn last_auction_id(n: usize) -> usize {
    let mut epoch = n / PROPORTION_DENOMINATOR;
    let mut offset = n % PROPORTION_DENOMINATOR;
    if offset < PERSON_PROPORTION {
        epoch -= 1;
        offset = AUCTION_PROPORTION - 1;
    } else if PERSON_PROPORTION + AUCTION_PROPORTION <= offset {
        offset = AUCTION_PROPORTION - 1;
    } else {
        offset -= PERSON_PROPORTION;
    }
    epoch * AUCTION_PROPORTION + offset
}

/// One person per 50 events, the first: the last person id is the epoch.
fn last_person_id(n: usize) -> usize {
    n / PROPORTION_DENOMINATOR * PERSON_PROPORTION
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
            let people = last_person_id(n) + 1;
            let active = people.min(ACTIVE_PEOPLE);
            people - active + rng.gen_range(0..active + PERSON_ID_LEAD)
        };
        let price = (10.0_f32.powf(rng.r#gen::<f32>() * 6.0) * 100.0).round() as usize;
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
        let wanted = AVG_BID_BYTES - BID_FIXED_BYTES;
        let delta = (wanted + 2) / 5;
        let size = wanted - delta + rng.gen_range(0..2 * delta);
        self.scratch.clear();
        self.scratch
            .extend((0..size).map(|_| rng.gen_range(b'a'..=b'z')));
        self.extra
            .append_value(std::str::from_utf8(&self.scratch).unwrap_or_default());
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
