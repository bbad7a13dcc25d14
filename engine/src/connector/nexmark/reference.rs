//! The reference generator's (the `nexmark` crate's) configuration and event arithmetic,
//! shared by the builders of bids, auctions and people: each reproduces that crate's values
//! exactly (same seed per event, same random draws in the same order).

use arrow::array::StringBuilder;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore};

// The reference generator's defaults (`NexmarkConfig::default()`), which every weir source uses.
pub(super) const PROPORTION_DENOMINATOR: usize = 50;
pub(super) const PERSON_PROPORTION: usize = 1;
pub(super) const AUCTION_PROPORTION: usize = 3;
pub(super) const BID_PROPORTION: usize = 46;
/// Ids of hot sellers, auctions and bidders are the first of a batch of this many.
pub(super) const HOT_BATCH: usize = 100;
pub(super) const IN_FLIGHT_AUCTIONS: usize = 100;
pub(super) const ACTIVE_PEOPLE: usize = 1000;
pub(super) const PERSON_ID_LEAD: usize = 10;
/// The first person's and the first auction's id.
pub(super) const FIRST_ID: usize = 1000;

/// The event number of the `index`-th row of a relation whose events are `first..first +
/// share` of every 50.
pub(super) fn event_number(index: u64, first: usize, share: usize) -> usize {
    let i = index as usize;
    i / share * PROPORTION_DENOMINATOR + first + i % share
}

/// Event time (ms) of event `n`: one event every 100 µs from `base_time`, computed in f32
/// as the reference does (its rounding included).
pub(super) fn event_time_ms(base_time: u64, n: usize) -> u64 {
    let delay = 1_000_000_f32 / 10_000_f32;
    base_time + ((n as f32 * delay) / 1000.0).round() as u64
}

/// The last auction id (base 0) at event `n`: the current one if `n` is an auction.
pub(super) fn last_auction_id(n: usize) -> usize {
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
pub(super) fn last_person_id(n: usize) -> usize {
    n / PROPORTION_DENOMINATOR * PERSON_PROPORTION
}

/// A random person id (base 0) among the active people at event `n`.
pub(super) fn next_person_id(n: usize, rng: &mut SmallRng) -> usize {
    let people = last_person_id(n) + 1;
    let active = people.min(ACTIVE_PEOPLE);
    people - active + rng.gen_range(0..active + PERSON_ID_LEAD)
}

/// `len` random lowercase letters appended to `out` (the reference's `gen_exact_string`).
pub(super) fn letters(rng: &mut SmallRng, len: usize, out: &mut Vec<u8>) {
    out.extend((0..len).map(|_| letter(rng)));
}

/// Appends the text in `scratch` to `into`, empties `scratch` and returns the text's length
/// (the builders assemble each string value in one reused buffer).
pub(super) fn append_text(scratch: &mut Vec<u8>, into: &mut StringBuilder) -> usize {
    into.append_value(std::str::from_utf8(scratch).unwrap_or_default());
    let len = scratch.len();
    scratch.clear();
    len
}

/// A random lowercase letter, drawn exactly as `rng.gen_range(b'a'..=b'z')` draws it (rand
/// 0.8's `sample_single_inclusive` for u8: a widening multiply of a u32, rejected above a
/// zone). Its zone is a constant here; `gen_range`, not inlined, divided for it on every
/// call, and letters are most of what the generator draws (42% of a q8 profile).
#[inline(always)]
fn letter(rng: &mut SmallRng) -> u8 {
    const RANGE: u32 = 26;
    const ZONE: u32 = u32::MAX - (u32::MAX - RANGE + 1) % RANGE;
    loop {
        let wide = u64::from(rng.next_u32()) * u64::from(RANGE);
        if wide as u32 <= ZONE {
            return b'a' + (wide >> 32) as u8;
        }
    }
}

/// The length of the `extra` field that pads a row of `current` bytes to `average` bytes
/// on average (the reference's `gen_next_extra`, whose letters follow).
pub(super) fn extra_len(rng: &mut SmallRng, current: usize, average: usize) -> usize {
    if current > average {
        return 0;
    }
    let wanted = average - current;
    let delta = (wanted + 2) / 5;
    wanted - delta
        + if delta == 0 {
            0
        } else {
            rng.gen_range(0..2 * delta)
        }
}

/// A random price in cents (the reference's `gen_price`).
pub(super) fn price(rng: &mut SmallRng) -> usize {
    (10.0_f32.powf(rng.r#gen::<f32>() * 6.0) * 100.0).round() as usize
}
