//! `Paced`: a split reader held to a rate (rows per second), for generators that should
//! behave like a live stream (`nexmark.min.event.gap.in.ns`, `datagen.rows.per.second`).

use std::time::{Duration, Instant};

use crate::Result;
use crate::runtime::{ReadResult, SplitReader};

/// Reads from `inner` no faster than `rows_per_second`.
pub struct Paced {
    inner: Box<dyn SplitReader>,
    rows_per_second: f64,
    started: Instant,
    emitted: u64,
}

impl Paced {
    pub fn new(inner: Box<dyn SplitReader>, rows_per_second: f64) -> Self {
        Self {
            inner,
            rows_per_second: rows_per_second.max(f64::MIN_POSITIVE),
            started: Instant::now(),
            emitted: 0,
        }
    }
}

impl SplitReader for Paced {
    fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
        let due = (self.started.elapsed().as_secs_f64() * self.rows_per_second) as u64;
        let allowed = due.saturating_sub(self.emitted) as usize;
        if allowed == 0 {
            let next = (self.emitted + 1) as f64 / self.rows_per_second;
            let wait = Duration::from_secs_f64(next).saturating_sub(self.started.elapsed());
            std::thread::sleep(wait.min(Duration::from_millis(50)));
            return Ok(ReadResult::Idle);
        }
        let read = self.inner.read(allowed.min(max_rows))?;
        if let ReadResult::Rows(rows) = &read {
            self.emitted += rows.num_rows() as u64;
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    use super::*;

    struct Endless;

    impl SplitReader for Endless {
        fn read(&mut self, max_rows: usize) -> Result<ReadResult> {
            let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
            let rows =
                RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![0; max_rows]))])?;
            Ok(ReadResult::Rows(rows))
        }
    }

    #[test]
    fn rows_arrive_no_faster_than_the_rate() {
        let mut paced = Paced::new(Box::new(Endless), 1000.0);
        let started = Instant::now();
        let mut rows = 0;
        while started.elapsed() < Duration::from_millis(300) {
            if let ReadResult::Rows(r) = paced.read(8192).unwrap() {
                rows += r.num_rows();
            }
        }
        assert!(
            (200..=320).contains(&rows),
            "{rows} rows in 300 ms at 1000/s"
        );
    }
}
