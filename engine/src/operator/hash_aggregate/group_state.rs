//! One aggregate's state for every group of a `HashAggregate`, held in columns indexed by
//! group slot: a batch updates all its groups in one pass and a flush evaluates them to one array.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, Decimal128Array, Float64Array, Int64Array,
    PrimitiveArray, StringArray,
};
use arrow::buffer::NullBuffer;
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowNativeTypeOp, DataType, Date32Type, Date64Type, Decimal128Type, Float32Type, Float64Type,
    Int8Type, Int16Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};

use crate::state::StateSnapshot;
use crate::{EngineError, Result};

/// An aggregate's state over all groups. Group `slot`s are small integers the operator
/// hands out and reuses: a state grows to cover every slot it is given, and `clear` resets
/// one before its reuse.
pub(super) trait GroupState: Send {
    /// Adds row `i` of `args`, `weights[i]` times (a negative weight retracts), to group
    /// `slots[i]`, for every row of the batch.
    fn update(&mut self, slots: &[u32], args: &[ArrayRef], weights: &Int64Array) -> Result<()>;

    /// The aggregate's current value for each of `slots`, in the output type.
    fn evaluate(&mut self, slots: &[u32]) -> Result<ArrayRef>;

    /// Forgets group `slot`.
    fn clear(&mut self, slot: u32);

    /// Bytes held, for state-size reporting.
    fn size(&self) -> usize;

    /// The state of each of `slots` as columns aligned with them; state that is not one
    /// value per group goes into `extra` under names starting with `prefix`.
    fn snapshot(
        &mut self,
        slots: &[u32],
        prefix: &str,
        extra: &mut StateSnapshot,
    ) -> Result<Vec<ArrayRef>>;

    /// Rebuilds `slots` (fresh) from what `snapshot` wrote for them.
    fn restore(
        &mut self,
        slots: &[u32],
        columns: &[ArrayRef],
        prefix: &str,
        extra: &StateSnapshot,
    ) -> Result<()>;
}

/// Restores an append-only min or max, whose snapshot is its value per group: each value
/// is added again, once.
fn restore_extremes(
    state: &mut impl GroupState,
    slots: &[u32],
    columns: &[ArrayRef],
) -> Result<()> {
    let values = columns
        .first()
        .ok_or_else(|| EngineError::CorruptCheckpoint("min/max state has no column".into()))?;
    let ones = Int64Array::from(vec![1; values.len()]);
    state.update(slots, std::slice::from_ref(values), &ones)
}

/// Grows `v` to hold `slot`.
fn cover<T: Clone>(v: &mut Vec<T>, slot: u32, fill: T) {
    let need = slot as usize + 1;
    if v.len() < need {
        v.resize(need, fill);
    }
}

fn column<T: 'static>(columns: &[ArrayRef], i: usize) -> Result<&T> {
    columns
        .get(i)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| {
            EngineError::CorruptCheckpoint(format!("aggregate state column {i} is missing"))
        })
}

/// What a linear aggregate adds up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Linear {
    /// `count(x)`: rows with a non-null argument (`count(*)` counts a literal).
    Count,
    /// `sum(x)` of integers into Int64, or of decimals into Decimal128 (as i128).
    SumExact,
    /// `sum(x)` of floats into Float64.
    SumFloat,
    /// `avg(x)` of integers or floats into Float64.
    AvgFloat,
}

/// Counts, sums and averages as weighted sums: a row of weight `w` adds `w` to its group's
/// count and `w * x` to its sum, so retractions in any order and any multiplicity are
/// exact (for floats, as exact as DataFusion's sliding sums).
pub(super) struct LinearState {
    kind: Linear,
    out: DataType,
    /// Rows with a non-null argument, weighted.
    counts: Vec<i64>,
    exact: Vec<i128>,
    float: Vec<f64>,
}

impl LinearState {
    /// The linear form of aggregate `name` with output type `out`, if it has one.
    pub(super) fn for_aggregate(name: &str, args: usize, out: &DataType) -> Option<Self> {
        let kind = match (name, out) {
            ("count", DataType::Int64) if args <= 1 => Linear::Count,
            ("sum", DataType::Int64 | DataType::Decimal128(..)) => Linear::SumExact,
            ("sum", DataType::Float64) => Linear::SumFloat,
            ("avg" | "mean", DataType::Float64) => Linear::AvgFloat,
            _ => return None,
        };
        Some(Self {
            kind,
            out: out.clone(),
            counts: Vec::new(),
            exact: Vec::new(),
            float: Vec::new(),
        })
    }

    /// The argument in the type this state adds up.
    fn argument(&self, args: &[ArrayRef]) -> Result<Option<ArrayRef>> {
        let Some(arg) = args.first() else {
            return Ok(None);
        };
        let ty = match (self.kind, &self.out) {
            (Linear::Count, _) => return Ok(Some(Arc::clone(arg))),
            (Linear::SumExact, DataType::Decimal128(_, s)) => DataType::Decimal128(38, *s),
            (Linear::SumExact, _) => DataType::Int64,
            _ => DataType::Float64,
        };
        Ok(Some(cast(arg, &ty)?))
    }
}

impl GroupState for LinearState {
    fn update(&mut self, slots: &[u32], args: &[ArrayRef], weights: &Int64Array) -> Result<()> {
        let Some(&top) = slots.iter().max() else {
            return Ok(());
        };
        cover(&mut self.counts, top, 0);
        let arg = self.argument(args)?;
        let w = weights.values();
        let valid = |i: usize| arg.as_ref().is_none_or(|a| a.is_valid(i));
        for (i, &s) in slots.iter().enumerate() {
            if valid(i) {
                self.counts[s as usize] += w[i];
            }
        }
        let Some(arg) = arg else { return Ok(()) };
        match (self.kind, arg.data_type()) {
            (Linear::Count, _) => {}
            (Linear::SumExact, DataType::Int64) => {
                cover(&mut self.exact, top, 0);
                let x = arg.as_primitive::<Int64Type>();
                for (i, &s) in slots.iter().enumerate() {
                    if x.is_valid(i) {
                        self.exact[s as usize] += i128::from(w[i]) * i128::from(x.value(i));
                    }
                }
            }
            (Linear::SumExact, _) => {
                cover(&mut self.exact, top, 0);
                let x = arg.as_primitive::<Decimal128Type>();
                for (i, &s) in slots.iter().enumerate() {
                    if x.is_valid(i) {
                        let e = &mut self.exact[s as usize];
                        *e = e.wrapping_add(i128::from(w[i]).wrapping_mul(x.value(i)));
                    }
                }
            }
            _ => {
                cover(&mut self.float, top, 0.0);
                let x = arg.as_primitive::<Float64Type>();
                for (i, &s) in slots.iter().enumerate() {
                    if x.is_valid(i) {
                        self.float[s as usize] += w[i] as f64 * x.value(i);
                    }
                }
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        let count = |s: u32| self.counts.get(s as usize).copied().unwrap_or(0);
        let present = NullBuffer::from_iter(slots.iter().map(|&s| count(s) > 0));
        let exact = |s: u32| self.exact.get(s as usize).copied().unwrap_or(0);
        let float = |s: u32| self.float.get(s as usize).copied().unwrap_or(0.0);
        let array: ArrayRef = match self.kind {
            Linear::Count => Arc::new(Int64Array::from_iter_values(
                slots.iter().map(|&s| count(s)),
            )),
            Linear::SumExact => match &self.out {
                DataType::Decimal128(p, s) => Arc::new(
                    Decimal128Array::new(slots.iter().map(|&g| exact(g)).collect(), Some(present))
                        .with_precision_and_scale(*p, *s)?,
                ),
                // Int64 sums wrap on overflow, as DataFusion's do.
                _ => Arc::new(Int64Array::new(
                    slots.iter().map(|&g| exact(g) as i64).collect(),
                    Some(present),
                )),
            },
            Linear::SumFloat => Arc::new(Float64Array::new(
                slots.iter().map(|&g| float(g)).collect(),
                Some(present),
            )),
            Linear::AvgFloat => Arc::new(Float64Array::new(
                slots
                    .iter()
                    .map(|&g| float(g) / count(g).max(1) as f64)
                    .collect(),
                Some(present),
            )),
        };
        Ok(array)
    }

    fn clear(&mut self, slot: u32) {
        let s = slot as usize;
        if let Some(c) = self.counts.get_mut(s) {
            *c = 0;
        }
        if let Some(e) = self.exact.get_mut(s) {
            *e = 0;
        }
        if let Some(f) = self.float.get_mut(s) {
            *f = 0.0;
        }
    }

    fn size(&self) -> usize {
        self.counts.capacity() * 8 + self.exact.capacity() * 16 + self.float.capacity() * 8
    }

    fn snapshot(&mut self, slots: &[u32], _: &str, _: &mut StateSnapshot) -> Result<Vec<ArrayRef>> {
        let at = |v: &Vec<i128>, s: u32| v.get(s as usize).copied().unwrap_or(0);
        let counts = slots
            .iter()
            .map(|&s| self.counts.get(s as usize).copied().unwrap_or(0));
        let exact = slots.iter().map(|&s| at(&self.exact, s));
        let float = slots
            .iter()
            .map(|&s| self.float.get(s as usize).copied().unwrap_or(0.0));
        Ok(vec![
            Arc::new(Int64Array::from_iter_values(counts)),
            Arc::new(Decimal128Array::from_iter_values(exact)),
            Arc::new(Float64Array::from_iter_values(float)),
        ])
    }

    fn restore(
        &mut self,
        slots: &[u32],
        columns: &[ArrayRef],
        _: &str,
        _: &StateSnapshot,
    ) -> Result<()> {
        let counts = column::<Int64Array>(columns, 0)?;
        let exact = column::<Decimal128Array>(columns, 1)?;
        let float = column::<Float64Array>(columns, 2)?;
        for (i, &s) in slots.iter().enumerate() {
            cover(&mut self.counts, s, 0);
            cover(&mut self.exact, s, 0);
            cover(&mut self.float, s, 0.0);
            self.counts[s as usize] = counts.value(i);
            self.exact[s as usize] = exact.value(i);
            self.float[s as usize] = float.value(i);
        }
        Ok(())
    }
}

/// `min(x)` or `max(x)` over input that never retracts: the extreme so far per group, one
/// native value each. (Under retractions min and max keep a multiset per group instead.)
pub(super) struct ExtremeState<T: ArrowPrimitiveType> {
    max: bool,
    out: DataType,
    values: Vec<T::Native>,
    present: Vec<bool>,
}

/// The columnar min or max for output type `out`, for the primitive and string types.
pub(super) fn extreme(max: bool, out: &DataType) -> Option<Box<dyn GroupState>> {
    fn make<T: ArrowPrimitiveType>(max: bool, out: &DataType) -> Option<Box<dyn GroupState>> {
        Some(Box::new(ExtremeState::<T> {
            max,
            out: out.clone(),
            values: Vec::new(),
            present: Vec::new(),
        }))
    }
    match out {
        DataType::Int8 => make::<Int8Type>(max, out),
        DataType::Int16 => make::<Int16Type>(max, out),
        DataType::Int32 => make::<Int32Type>(max, out),
        DataType::Int64 => make::<Int64Type>(max, out),
        DataType::UInt8 => make::<UInt8Type>(max, out),
        DataType::UInt16 => make::<UInt16Type>(max, out),
        DataType::UInt32 => make::<UInt32Type>(max, out),
        DataType::UInt64 => make::<UInt64Type>(max, out),
        DataType::Float32 => make::<Float32Type>(max, out),
        DataType::Float64 => make::<Float64Type>(max, out),
        DataType::Date32 => make::<Date32Type>(max, out),
        DataType::Date64 => make::<Date64Type>(max, out),
        DataType::Decimal128(..) => make::<Decimal128Type>(max, out),
        DataType::Timestamp(TimeUnit::Second, _) => make::<TimestampSecondType>(max, out),
        DataType::Timestamp(TimeUnit::Millisecond, _) => make::<TimestampMillisecondType>(max, out),
        DataType::Timestamp(TimeUnit::Microsecond, _) => make::<TimestampMicrosecondType>(max, out),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => make::<TimestampNanosecondType>(max, out),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
            Some(Box::new(ExtremeString {
                max,
                out: out.clone(),
                values: Vec::new(),
                bytes: 0,
            }))
        }
        _ => None,
    }
}

/// `min(x)` or `max(x)` of strings over input that never retracts: the extreme so far per
/// group, its text (compared bytewise, as DataFusion's and Postgres's "C" collation do).
pub(super) struct ExtremeString {
    max: bool,
    out: DataType,
    values: Vec<Option<Box<str>>>,
    /// Bytes of text held.
    bytes: usize,
}

impl GroupState for ExtremeString {
    fn update(&mut self, slots: &[u32], args: &[ArrayRef], weights: &Int64Array) -> Result<()> {
        let Some(&top) = slots.iter().max() else {
            return Ok(());
        };
        cover(&mut self.values, top, None);
        let arg = cast(&args[0], &DataType::Utf8)?;
        let x = arg.as_string::<i32>();
        for (i, &s) in slots.iter().enumerate() {
            if x.is_null(i) || weights.value(i) <= 0 {
                continue;
            }
            let v = x.value(i);
            let slot = &mut self.values[s as usize];
            let replaces = match slot.as_deref() {
                None => true,
                Some(old) if self.max => v > old,
                Some(old) => v < old,
            };
            if replaces {
                self.bytes = self.bytes + v.len() - slot.as_ref().map_or(0, |o| o.len());
                *slot = Some(v.into());
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        let values: StringArray = slots
            .iter()
            .map(|&s| self.values.get(s as usize).and_then(|v| v.as_deref()))
            .collect();
        Ok(cast(&values, &self.out)?)
    }

    fn clear(&mut self, slot: u32) {
        if let Some(v) = self.values.get_mut(slot as usize).and_then(Option::take) {
            self.bytes -= v.len();
        }
    }

    fn size(&self) -> usize {
        self.values.capacity() * size_of::<Option<Box<str>>>() + self.bytes
    }

    fn snapshot(&mut self, slots: &[u32], _: &str, _: &mut StateSnapshot) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(slots)?])
    }

    fn restore(
        &mut self,
        slots: &[u32],
        columns: &[ArrayRef],
        _: &str,
        _: &StateSnapshot,
    ) -> Result<()> {
        restore_extremes(self, slots, columns)
    }
}

impl<T: ArrowPrimitiveType> ExtremeState<T> {
    fn replaces(&self, new: T::Native, old: T::Native) -> bool {
        // is_gt/is_lt order floats totally (NaN above everything), as DataFusion's max does.
        if self.max {
            new.is_gt(old)
        } else {
            new.is_lt(old)
        }
    }
}

impl<T: ArrowPrimitiveType> GroupState for ExtremeState<T> {
    fn update(&mut self, slots: &[u32], args: &[ArrayRef], weights: &Int64Array) -> Result<()> {
        let Some(&top) = slots.iter().max() else {
            return Ok(());
        };
        cover(&mut self.values, top, T::default_value());
        cover(&mut self.present, top, false);
        let arg = cast(&args[0], &self.out)?;
        let x = arg.as_primitive::<T>();
        for (i, &s) in slots.iter().enumerate() {
            if x.is_null(i) || weights.value(i) <= 0 {
                continue;
            }
            let (v, s) = (x.value(i), s as usize);
            if !self.present[s] || self.replaces(v, self.values[s]) {
                self.values[s] = v;
                self.present[s] = true;
            }
        }
        Ok(())
    }

    fn evaluate(&mut self, slots: &[u32]) -> Result<ArrayRef> {
        let values = slots.iter().map(|&s| {
            self.values
                .get(s as usize)
                .copied()
                .unwrap_or(T::default_value())
        });
        let present = slots
            .iter()
            .map(|&s| self.present.get(s as usize).copied().unwrap_or(false));
        let array =
            PrimitiveArray::<T>::new(values.collect(), Some(NullBuffer::from_iter(present)))
                .with_data_type(self.out.clone());
        Ok(Arc::new(array))
    }

    fn clear(&mut self, slot: u32) {
        if let Some(p) = self.present.get_mut(slot as usize) {
            *p = false;
        }
    }

    fn size(&self) -> usize {
        self.values.capacity() * size_of::<T::Native>() + self.present.capacity()
    }

    fn snapshot(&mut self, slots: &[u32], _: &str, _: &mut StateSnapshot) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(slots)?])
    }

    fn restore(
        &mut self,
        slots: &[u32],
        columns: &[ArrayRef],
        _: &str,
        _: &StateSnapshot,
    ) -> Result<()> {
        restore_extremes(self, slots, columns)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Float64Array, TimestampNanosecondArray};

    use super::*;

    fn weights(w: &[i64]) -> Int64Array {
        Int64Array::from(w.to_vec())
    }

    #[test]
    fn linear_sums_take_weights_and_retractions_in_any_order() {
        let mut sum = LinearState::for_aggregate("sum", 1, &DataType::Int64).unwrap();
        let mut avg = LinearState::for_aggregate("avg", 1, &DataType::Float64).unwrap();
        let mut count = LinearState::for_aggregate("count", 1, &DataType::Int64).unwrap();
        let x: ArrayRef = Arc::new(Int64Array::from(vec![Some(5), None, Some(2), Some(7)]));
        let slots = [0, 0, 1, 1];
        for s in [&mut sum as &mut dyn GroupState, &mut avg, &mut count] {
            s.update(&slots, &[Arc::clone(&x)], &weights(&[2, 1, 1, 1]))
                .unwrap();
            // Retract the 2 of group 1 before anything else happens to it.
            s.update(
                &[1],
                &[Arc::new(Int64Array::from(vec![2]))],
                &weights(&[-1]),
            )
            .unwrap();
        }
        let sums = sum.evaluate(&[0, 1, 2]).unwrap();
        assert_eq!(
            sums.as_primitive::<Int64Type>(),
            &Int64Array::from(vec![Some(10), Some(7), None]),
            "group 2 has no rows: NULL"
        );
        let avgs = avg.evaluate(&[0, 1]).unwrap();
        assert_eq!(
            avgs.as_primitive::<Float64Type>(),
            &Float64Array::from(vec![5.0, 7.0])
        );
        let counts = count.evaluate(&[0, 1, 2]).unwrap();
        assert_eq!(counts.as_primitive::<Int64Type>().values(), &[2, 1, 0]);
        // A snapshot restores to the same values in other slots.
        let mut extra = StateSnapshot::default();
        let columns = sum.snapshot(&[0, 1], "", &mut extra).unwrap();
        let mut back = LinearState::for_aggregate("sum", 1, &DataType::Int64).unwrap();
        back.restore(&[5, 3], &columns, "", &extra).unwrap();
        assert_eq!(
            back.evaluate(&[5, 3])
                .unwrap()
                .as_primitive::<Int64Type>()
                .values(),
            &[10, 7]
        );
    }

    #[test]
    fn decimal_sums_keep_scale_and_precision() {
        let out = DataType::Decimal128(20, 2);
        let mut sum = LinearState::for_aggregate("sum", 1, &out).unwrap();
        let x: ArrayRef = Arc::new(
            Decimal128Array::from(vec![150, 275])
                .with_precision_and_scale(10, 2)
                .unwrap(),
        );
        sum.update(&[0, 0], &[x], &weights(&[1, 3])).unwrap();
        let v = sum.evaluate(&[0]).unwrap();
        assert_eq!(v.data_type(), &out);
        assert_eq!(v.as_primitive::<Decimal128Type>().value(0), 150 + 3 * 275);
    }

    #[test]
    fn string_extremes_compare_bytewise_skip_nulls_and_restore() {
        let text = |v: &[Option<&str>]| -> ArrayRef { Arc::new(StringArray::from(v.to_vec())) };
        let strings = |a: ArrayRef| -> Vec<Option<String>> {
            let a = a.as_string::<i32>();
            (0..a.len())
                .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
                .collect()
        };
        for (max, expected) in [(true, ["b", "é"]), (false, ["a", "Z"])] {
            let mut state = extreme(max, &DataType::Utf8).unwrap();
            let x = text(&[Some("b"), Some("a"), None, Some("é"), Some("Z")]);
            state
                .update(&[0, 0, 0, 1, 1], &[x], &weights(&[1, 1, 1, 1, 1]))
                .unwrap();
            let got = strings(state.evaluate(&[0, 1, 2]).unwrap());
            let want = vec![
                Some(expected[0].to_string()),
                Some(expected[1].to_string()),
                None,
            ];
            assert_eq!(got, want, "max = {max}");
            let mut extra = StateSnapshot::default();
            let columns = state.snapshot(&[0, 1], "a0_", &mut extra).unwrap();
            let mut back = extreme(max, &DataType::Utf8).unwrap();
            back.restore(&[5, 3], &columns, "a0_", &extra).unwrap();
            assert_eq!(strings(back.evaluate(&[5, 3]).unwrap()), want[..2]);
            back.clear(5);
            assert_eq!(strings(back.evaluate(&[5]).unwrap()), vec![None]);
        }
    }

    #[test]
    fn extremes_order_floats_totally_and_keep_timestamp_zones() {
        let mut max = extreme(true, &DataType::Float64).unwrap();
        let x: ArrayRef = Arc::new(Float64Array::from(vec![
            Some(1.5),
            Some(f64::NAN),
            None,
            Some(-3.0),
        ]));
        max.update(&[0, 0, 1, 1], &[x], &weights(&[1, 1, 1, 1]))
            .unwrap();
        let v = max.evaluate(&[0, 1, 2]).unwrap();
        let v = v.as_primitive::<Float64Type>();
        assert!(
            v.value(0).is_nan(),
            "NaN is the largest float, as in Postgres"
        );
        assert_eq!((v.value(1), v.is_null(2)), (-3.0, true));
        let zone = DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into()));
        let mut min = extreme(false, &zone).unwrap();
        let t: ArrayRef =
            Arc::new(TimestampNanosecondArray::from(vec![9, 4, 6]).with_timezone("+00:00"));
        min.update(&[0, 0, 0], &[t], &weights(&[1, 1, 1])).unwrap();
        let v = min.evaluate(&[0]).unwrap();
        assert_eq!(v.data_type(), &zone);
        assert_eq!(v.as_primitive::<TimestampNanosecondType>().value(0), 4);
    }
}
