//! Nexmark people written straight into Arrow builders: the values of the `nexmark` crate's
//! `Person::new` without an event, a `format!` or a `String` per field.

use std::io::Write;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Builder, StringBuilder, TimestampNanosecondBuilder};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::reference::{
    FIRST_ID, PERSON_PROPORTION, append_text, event_number, event_time_ms, extra_len,
    last_person_id, letters,
};

const FIRST_NAMES: [&str; 11] = [
    "peter", "paul", "luke", "john", "saul", "vicky", "kate", "julie", "sarah", "deiter", "walter",
];
const LAST_NAMES: [&str; 9] = [
    "shultz", "abrams", "spencer", "white", "bartels", "walton", "smith", "jones", "noris",
];
const CITIES: [&str; 10] = [
    "phoenix",
    "los angeles",
    "san francisco",
    "boise",
    "portland",
    "bend",
    "redmond",
    "seattle",
    "kent",
    "cheyenne",
];
const STATES: [&str; 6] = ["az", "ca", "id", "or", "wa", "wy"];
/// The average size `extra` pads a person to.
const AVG_PERSON_BYTES: usize = 200;

/// The event number of the `index`-th person (people are event 0 of every 50).
pub(super) fn person_event_number(index: u64) -> usize {
    event_number(index, 0, PERSON_PROPORTION)
}

/// The person columns under construction.
pub(super) struct PersonBuilders {
    id: Int64Builder,
    name: StringBuilder,
    email_address: StringBuilder,
    credit_card: StringBuilder,
    city: StringBuilder,
    state: StringBuilder,
    date_time: TimestampNanosecondBuilder,
    extra: StringBuilder,
    scratch: Vec<u8>,
}

impl PersonBuilders {
    pub(super) fn with_capacity(n: usize) -> Self {
        Self {
            id: Int64Builder::with_capacity(n),
            name: StringBuilder::with_capacity(n, n * 12),
            email_address: StringBuilder::with_capacity(n, n * 16),
            credit_card: StringBuilder::with_capacity(n, n * 19),
            city: StringBuilder::with_capacity(n, n * 8),
            state: StringBuilder::with_capacity(n, n * 2),
            date_time: TimestampNanosecondBuilder::with_capacity(n),
            extra: StringBuilder::with_capacity(n, n * AVG_PERSON_BYTES / 2),
            scratch: Vec::with_capacity(AVG_PERSON_BYTES),
        }
    }

    /// Appends the person of event number `n`.
    pub(super) fn append(&mut self, n: usize, base_time: u64) {
        let rng = &mut SmallRng::seed_from_u64(n as u64);
        let s = &mut self.scratch;
        let first = FIRST_NAMES.choose(rng).expect("names");
        let last = LAST_NAMES.choose(rng).expect("names");
        let _ = write!(s, "{first} {last}");
        let mut size = 8 + append_text(s, &mut self.name);
        letters(rng, 7, s);
        s.push(b'@');
        letters(rng, 5, s);
        s.extend_from_slice(b".com");
        size += append_text(s, &mut self.email_address);
        // The reference draws these as i32 (an unsuffixed literal in `format!`).
        let card: [i32; 4] = std::array::from_fn(|_| rng.gen_range(0..10000));
        let _ = write!(
            s,
            "{:04} {:04} {:04} {:04}",
            card[0], card[1], card[2], card[3]
        );
        size += append_text(s, &mut self.credit_card);
        let city = CITIES.choose(rng).expect("cities");
        let state = STATES.choose(rng).expect("states");
        self.city.append_value(city);
        self.state.append_value(state);
        size += city.len() + state.len();
        let extra = extra_len(rng, size, AVG_PERSON_BYTES);
        letters(rng, extra, s);
        append_text(s, &mut self.extra);
        self.id.append_value((last_person_id(n) + FIRST_ID) as i64);
        self.date_time
            .append_value(event_time_ms(base_time, n) as i64 * 1_000_000);
    }

    /// The columns in the order of `NexmarkTable::Person.schema()`.
    pub(super) fn finish(mut self) -> Vec<ArrayRef> {
        vec![
            Arc::new(self.id.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.email_address.finish()),
            Arc::new(self.credit_card.finish()),
            Arc::new(self.city.finish()),
            Arc::new(self.state.finish()),
            Arc::new(self.date_time.finish()),
            Arc::new(self.extra.finish()),
        ]
    }
}
