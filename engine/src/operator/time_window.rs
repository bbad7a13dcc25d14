//! `TimeWindow`: TUMBLE and HOP. Appends `window_start` and `window_end` to each row (one
//! row per window it falls in), and drops and counts rows older than the watermark (late).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, UInt32Array};
use arrow::compute::{cast, take};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

use crate::message::Watermark;
use crate::operator::{Emitter, Operator};
use crate::state::rescale::lowest_values;
use crate::state::{StateRouter, StateSnapshot};
use crate::{ChangeBatch, EngineError, Result, with_weight};

/// Which windows a row belongs to; sizes in ns, aligned to the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Tumble { size: i64 },
    Hop { slide: i64, size: i64 },
}

impl WindowKind {
    pub fn size(self) -> i64 {
        match self {
            Self::Tumble { size } | Self::Hop { size, .. } => size,
        }
    }

    /// Calls `f` with the start of every window containing `t`.
    fn starts(self, t: i64, mut f: impl FnMut(i64)) {
        match self {
            Self::Tumble { size } => f(t - t.rem_euclid(size)),
            Self::Hop { slide, size } => {
                let mut s = t - t.rem_euclid(slide);
                while s > t - size {
                    f(s);
                    s -= slide;
                }
            }
        }
    }
}

/// Assigns rows to time windows.
pub struct TimeWindow {
    kind: WindowKind,
    time_column: usize,
    schema: SchemaRef,
    clock: EventClock,
    late_rows: Arc<AtomicU64>,
}

impl TimeWindow {
    /// `input` plus `window_start`, `window_end` of the time column's type.
    pub fn try_new(input: &Schema, time_column: usize, kind: WindowKind) -> Result<Self> {
        let time = input.field(time_column).data_type().clone();
        if !matches!(time, DataType::Timestamp(..)) {
            return Err(EngineError::InvalidParameter(format!(
                "window time column {} must be a TIMESTAMP, not {time}",
                input.field(time_column).name()
            )));
        }
        if kind.size() <= 0 || matches!(kind, WindowKind::Hop { slide, .. } if slide <= 0) {
            return Err(EngineError::InvalidParameter(
                "window sizes must be positive".into(),
            ));
        }
        let mut fields: Vec<Field> = input.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new("window_start", time.clone(), true));
        fields.push(Field::new("window_end", time, true));
        Ok(Self {
            kind,
            time_column,
            schema: Arc::new(Schema::new(fields)),
            clock: EventClock::default(),
            late_rows: Arc::new(AtomicU64::new(0)),
        })
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// Rows dropped for arriving behind the watermark.
    pub fn late_rows(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.late_rows)
    }
}

/// The event-time watermark an operator has seen (it never moves back), and which rows it
/// makes late: TimeWindow, SessionWindow and interval joins drop and count those.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EventClock {
    pub(crate) watermark: Option<i64>,
}

impl EventClock {
    /// Takes in a watermark; returns the current one if event time has started.
    pub(crate) fn advance(&mut self, w: Watermark) -> Option<i64> {
        if let Watermark::EventTime(t) = w {
            self.watermark = Some(self.watermark.map_or(t, |c| c.max(t)));
        }
        self.watermark
    }

    /// Whether a row at `t` (ns) is behind the watermark.
    pub(crate) fn is_late(&self, t: i64) -> bool {
        self.watermark.is_some_and(|w| t < w)
    }

    /// The rows of `times` with a time that is not late, as (row, time); adds the late
    /// ones to `late`.
    pub(crate) fn on_time(&self, times: &Int64Array, late: &AtomicU64) -> Vec<(usize, i64)> {
        let mut dropped = 0;
        let rows = (0..times.len())
            .filter(|&i| times.is_valid(i))
            .map(|i| (i, times.value(i)))
            .filter(|&(_, t)| {
                let is_late = self.is_late(t);
                dropped += u64::from(is_late);
                !is_late
            })
            .collect();
        late.fetch_add(dropped, Ordering::Relaxed);
        rows
    }
}

/// A timestamp column as ns since the epoch.
pub fn timestamps_ns(column: &ArrayRef) -> Result<Int64Array> {
    let ns = cast(column, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
    cast(&ns, &DataType::Int64)?
        .as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| EngineError::Internal("timestamp cast".into()))
}

pub(crate) fn ns_to(values: Vec<i64>, ty: &DataType) -> Result<ArrayRef> {
    let ns: ArrayRef = Arc::new(Int64Array::from(values));
    let ts = cast(&ns, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
    Ok(cast(&ts, ty)?)
}

impl Operator for TimeWindow {
    fn name(&self) -> &'static str {
        "TimeWindow"
    }

    fn describe(&self) -> String {
        format!("TimeWindow({:?} on column {})", self.kind, self.time_column)
    }

    fn on_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Emitter) -> Result<()> {
        let data = batch.batch();
        let times = timestamps_ns(data.column(self.time_column))?;
        let (mut rows, mut starts) = (Vec::new(), Vec::new());
        for (i, t) in self.clock.on_time(&times, &self.late_rows) {
            self.kind.starts(t, |s| {
                rows.push(i as u32);
                starts.push(s);
            });
        }
        let idx = UInt32Array::from(rows);
        let mut columns: Vec<ArrayRef> = data
            .columns()
            .iter()
            .map(|c| take(c, &idx, None))
            .collect::<Result<_, _>>()?;
        let weights = columns.pop().expect("invariant: weight column");
        let ty = self.schema.field(self.time_column).data_type().clone();
        let size = self.kind.size();
        let ends = starts.iter().map(|s| s + size).collect();
        columns.push(ns_to(starts, &ty)?);
        columns.push(ns_to(ends, &ty)?);
        columns.push(weights);
        out.emit(ChangeBatch::try_new(RecordBatch::try_new(
            with_weight(&self.schema),
            columns,
        )?)?);
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Watermark, _out: &mut Emitter) -> Result<Watermark> {
        self.clock.advance(watermark);
        Ok(watermark)
    }

    fn snapshot(&mut self) -> Result<StateSnapshot> {
        let mut snapshot = StateSnapshot::default();
        snapshot.put_values(CLOCK, &[("watermark", self.clock.watermark)])?;
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        self.clock.watermark = snapshot.value(CLOCK, "watermark")?;
        Ok(())
    }

    /// Instances of a source's stage read different splits, so their watermarks differ:
    /// each new one starts at the lowest.
    fn rescale(&self, old: Vec<StateSnapshot>, router: &StateRouter) -> Result<Vec<StateSnapshot>> {
        let mut parts = vec![StateSnapshot::default(); router.instances()];
        lowest_values(&old, &mut parts, CLOCK)?;
        Ok(parts)
    }
}

/// The state table of the watermark an operator has seen (what makes rows late).
pub(crate) const CLOCK: &str = "clock";

#[cfg(test)]
mod tests {
    use arrow::array::TimestampMillisecondArray;

    use super::*;

    fn rows(ms: &[i64]) -> ChangeBatch {
        let schema = Schema::new(vec![Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        )]);
        let data = RecordBatch::try_new(
            Arc::new(schema),
            vec![Arc::new(TimestampMillisecondArray::from(ms.to_vec()))],
        )
        .unwrap();
        ChangeBatch::from_data(&data, 1).unwrap()
    }

    fn starts_ms(b: &ChangeBatch) -> Vec<i64> {
        timestamps_ns(b.batch().column(1))
            .unwrap()
            .values()
            .iter()
            .map(|ns| ns / 1_000_000)
            .collect()
    }

    #[test]
    fn hop_assigns_every_window_and_late_rows_are_dropped() {
        let s = 1_000_000_000;
        let input = rows(&[]).data().schema();
        let kind = WindowKind::Hop {
            slide: 2 * s,
            size: 6 * s,
        };
        let mut w = TimeWindow::try_new(&input, 0, kind).unwrap();
        let mut out = Emitter::default();
        w.on_batch(0, rows(&[7_500, -500]), &mut out).unwrap();
        let b = out.drain().pop().unwrap();
        assert_eq!(
            starts_ms(&b),
            vec![6_000, 4_000, 2_000, -2_000, -4_000, -6_000]
        );
        w.on_watermark(Watermark::EventTime(7_000 * 1_000_000), &mut out)
            .unwrap();
        w.on_batch(0, rows(&[6_999, 7_000]), &mut out).unwrap();
        let b = out.drain().pop().unwrap();
        assert_eq!(starts_ms(&b), vec![6_000, 4_000, 2_000]);
        assert_eq!(w.late_rows().load(Ordering::Relaxed), 1);
    }
}
