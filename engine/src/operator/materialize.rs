//! `Materialize`: the arrangement behind a view. It buffers an epoch's changes and, at the
//! barrier, folds them into the shared `ViewState` and tells subscribers. Readers
//! (`SELECT`, SUBSCRIBE, views on views) therefore only ever see whole epochs.

use std::sync::Arc;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::{concat_batches, take};
use arrow::datatypes::SchemaRef;
use arrow::row::RowConverter;
use futures::future::BoxFuture;
use parking_lot::Mutex;

use crate::message::{Barrier, Epoch, Watermark};
use crate::operator::{Emitter, Operator};
use crate::state::StateSnapshot;
use crate::{ChangeBatch, EngineError, HashMap, Result, row_converter, with_weight};

/// What a view tells its subscribers, in commit order.
#[derive(Debug)]
pub enum ViewEvent<'a> {
    /// An epoch committed; `changes` is its consolidated delta (None when nothing changed).
    Commit {
        barrier: Barrier,
        changes: Option<&'a ChangeBatch>,
    },
    /// The view's input watermark advanced.
    Watermark(Watermark),
}

/// Receives a view's events; returns false to unsubscribe (a gone or lagging reader).
pub type ViewSubscriber = Box<dyn FnMut(&ViewEvent<'_>) -> bool + Send>;

/// A reader that sets the pace of its view's dataflow (`Operator::backpressure`).
pub trait Pace: Send + Sync {
    /// None when the reader can take more now; else what to wait for before the next commit.
    fn ready(&self) -> Option<BoxFuture<'static, ()>>;
}

/// How a view holds its rows. While every change has been an insert, the batches as they
/// came (no per-row work: views over append-only streams stay this way); from the first
/// retraction on, row -> count (rows in their row encoding, hashed: a change to a row
/// already there allocates nothing), which finds the rows a retraction removes.
enum Arrangement {
    Appended(Vec<RecordBatch>),
    Keyed(HashMap<Box<[u8]>, i64>),
}

/// What a view keeps of its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Every row: the view is read (SELECT, SUBSCRIBE, views and sinks on it).
    Rows,
    /// Only until its one reader subscribes (a sink's or SUBSCRIBE's own query): the reader
    /// starts from the rows so far and then takes every change, so nothing is kept after,
    /// neither in memory nor in checkpoints.
    UntilSubscribed,
}

/// The committed contents of a view, shared by its dataflow and its readers.
pub struct ViewState {
    schema: SchemaRef,
    retention: Retention,
    /// Its reader subscribed and it keeps no rows (`Retention::UntilSubscribed`).
    forgets: bool,
    converter: RowConverter,
    arrangement: Arrangement,
    epoch: Epoch,
    rows: i64,
    bytes: usize,
    last_commit_ms: i64,
    cache: Option<RecordBatch>,
    watermark: Option<Watermark>,
    subscribers: Vec<ViewSubscriber>,
    /// Set by a reader the dataflow waits for; it goes with the last subscriber.
    pace: Option<Arc<dyn Pace>>,
}

/// A view's state behind its lock.
pub type SharedView = Arc<Mutex<ViewState>>;

impl ViewState {
    fn new(schema: SchemaRef, retention: Retention) -> Result<Self> {
        Ok(Self {
            converter: row_converter(schema.fields())?,
            schema,
            retention,
            forgets: false,
            arrangement: Arrangement::Appended(Vec::new()),
            epoch: 0,
            rows: 0,
            bytes: 0,
            last_commit_ms: 0,
            cache: None,
            watermark: None,
            subscribers: Vec::new(),
            pace: None,
        })
    }

    pub fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    /// The last committed epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// Number of rows (with multiplicity).
    pub fn len(&self) -> i64 {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Wall time of the last commit that changed the view (ms since the Unix epoch; 0 = never).
    pub fn last_commit_ms(&self) -> i64 {
        self.last_commit_ms
    }

    /// The last watermark the view's input reached.
    pub fn watermark(&self) -> Option<Watermark> {
        self.watermark
    }

    /// Approximate bytes held by the arrangement.
    pub fn state_bytes(&self) -> usize {
        self.bytes
    }

    /// Current rows, each repeated by its count (in arrival order while the view has only
    /// seen inserts, in row order after).
    pub fn rows(&mut self) -> Result<RecordBatch> {
        if let Some(rows) = &self.cache {
            return Ok(rows.clone());
        }
        let rows = match &self.arrangement {
            Arrangement::Appended(batches) => concat_batches(&self.schema, batches)?,
            Arrangement::Keyed(counts) => {
                let parser = self.converter.parser();
                let (distinct, multiplicities): (Vec<_>, Vec<i64>) = counts
                    .iter()
                    .map(|(row, &n)| (parser.parse(row), n))
                    .unzip();
                let columns = self.converter.convert_rows(distinct)?;
                let unique = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
                if multiplicities.iter().all(|&n| n == 1) {
                    unique
                } else {
                    let repeat = multiplicities
                        .iter()
                        .enumerate()
                        .flat_map(|(i, &n)| std::iter::repeat_n(i as u32, n.max(0) as usize));
                    repeat_rows(&unique, repeat)?
                }
            }
        };
        self.cache = Some(rows.clone());
        Ok(rows)
    }

    /// Registers `subscriber` and returns the rows it starts from; every later commit reaches
    /// it, with nothing missed or doubled in between (both happen under the view's lock).
    pub fn subscribe(&mut self, subscriber: ViewSubscriber) -> Result<RecordBatch> {
        let rows = self.rows()?;
        self.subscribers.push(subscriber);
        if self.retention == Retention::UntilSubscribed {
            self.forgets = true;
            self.arrangement = Arrangement::Appended(Vec::new());
            self.cache = None;
            self.rows = 0;
            self.bytes = 0;
        }
        Ok(rows)
    }

    /// Makes the dataflow wait for `pace` after each commit (for the view's one reader).
    pub fn set_pace(&mut self, pace: Arc<dyn Pace>) {
        self.pace = Some(pace);
    }

    fn apply(&mut self, changes: &ChangeBatch) -> Result<()> {
        if self.forgets {
            return Ok(());
        }
        self.cache = None;
        let weights = changes.weights().values();
        if let Arrangement::Appended(batches) = &mut self.arrangement {
            if weights.iter().all(|&w| w > 0) {
                let data = if weights.iter().all(|&w| w == 1) {
                    changes.data()
                } else {
                    let repeat = weights
                        .iter()
                        .enumerate()
                        .flat_map(|(i, &w)| std::iter::repeat_n(i as u32, w as usize));
                    repeat_rows(&changes.data(), repeat)?
                };
                self.rows += data.num_rows() as i64;
                self.bytes += data.get_array_memory_size();
                batches.push(data);
                return Ok(());
            }
            self.key_appended_rows()?;
        }
        let Arrangement::Keyed(counts) = &mut self.arrangement else {
            unreachable!("appended rows were keyed above")
        };
        let rows = self.converter.convert_columns(changes.data().columns())?;
        for (i, &w) in weights.iter().enumerate() {
            self.rows += w;
            add_row(counts, &mut self.bytes, rows.row(i).data(), w)?;
        }
        Ok(())
    }

    /// Moves the appended batches into the row -> count map (at the first retraction).
    fn key_appended_rows(&mut self) -> Result<()> {
        let Arrangement::Appended(batches) = &mut self.arrangement else {
            return Ok(());
        };
        let mut counts: HashMap<Box<[u8]>, i64> = HashMap::default();
        let mut bytes = 0;
        for batch in batches.drain(..) {
            let rows = self.converter.convert_columns(batch.columns())?;
            for row in rows.iter() {
                add_row(&mut counts, &mut bytes, row.data(), 1)?;
            }
        }
        self.bytes = bytes;
        self.arrangement = Arrangement::Keyed(counts);
        Ok(())
    }

    fn notify(&mut self, event: &ViewEvent<'_>) {
        self.subscribers.retain_mut(|s| s(event));
        if self.subscribers.is_empty() {
            self.pace = None;
        }
    }
}

/// The map's per-entry overhead beyond the row's bytes.
const ENTRY_OVERHEAD: usize = 48;

/// A row's share of the keyed arrangement.
fn entry_bytes(row: &[u8]) -> usize {
    row.len() + ENTRY_OVERHEAD
}

/// Adds `w` copies of `row` (its row encoding) to `counts`, keeping `bytes` up to date:
/// a row whose count reaches 0 goes, and a count below 0 is an error.
fn add_row(
    counts: &mut HashMap<Box<[u8]>, i64>,
    bytes: &mut usize,
    row: &[u8],
    w: i64,
) -> Result<()> {
    match counts.get_mut(row) {
        Some(n) => {
            *n += w;
            if *n < 0 {
                return Err(negative(*n));
            }
            if *n == 0 {
                *bytes -= entry_bytes(row);
                counts.remove(row);
            }
        }
        None if w < 0 => return Err(negative(w)),
        None => {
            *bytes += entry_bytes(row);
            counts.insert(row.into(), w);
        }
    }
    Ok(())
}

/// `batch`'s rows at `indices` (a row repeated as often as its index is).
fn repeat_rows(batch: &RecordBatch, indices: impl Iterator<Item = u32>) -> Result<RecordBatch> {
    let idx = UInt32Array::from_iter_values(indices);
    let columns = batch
        .columns()
        .iter()
        .map(|c| take(c, &idx, None))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(batch.schema(), columns)?)
}

fn negative(n: i64) -> EngineError {
    EngineError::Internal(format!(
        "view holds a row with negative count {n}: a retraction without its insert"
    ))
}

/// Buffers an epoch's changes and commits them to its `ViewState` at the barrier.
pub struct Materialize {
    schema: SchemaRef,
    view: SharedView,
    pending: Vec<RecordBatch>,
}

impl Materialize {
    pub fn new(schema: SchemaRef) -> Result<Self> {
        Self::with_retention(schema, Retention::Rows)
    }

    pub fn with_retention(schema: SchemaRef, retention: Retention) -> Result<Self> {
        let view = Arc::new(Mutex::new(ViewState::new(Arc::clone(&schema), retention)?));
        Ok(Self {
            schema: with_weight(&schema),
            view,
            pending: Vec::new(),
        })
    }

    /// The handle readers use; it always holds a whole epoch.
    pub fn view(&self) -> SharedView {
        Arc::clone(&self.view)
    }
}

impl Operator for Materialize {
    fn name(&self) -> &'static str {
        "Materialize"
    }

    fn on_batch(&mut self, _input: usize, batch: ChangeBatch, _out: &mut Emitter) -> Result<()> {
        self.pending.push(batch.batch().clone());
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Watermark, _out: &mut Emitter) -> Result<Watermark> {
        let mut view = self.view.lock();
        view.watermark = Some(watermark);
        view.notify(&ViewEvent::Watermark(watermark));
        Ok(watermark)
    }

    fn on_barrier(&mut self, barrier: Barrier, _out: &mut Emitter) -> Result<()> {
        let changes = if self.pending.is_empty() {
            None
        } else {
            let all = ChangeBatch::try_new(concat_batches(&self.schema, &self.pending)?)?;
            self.pending.clear();
            // Only retractions can cancel rows; an insert-only epoch is its own delta.
            if all.weights().values().iter().all(|&w| w > 0) {
                Some(all)
            } else {
                Some(all.consolidate()?).filter(|c| !c.is_empty())
            }
        };
        let mut view = self.view.lock();
        if let Some(c) = &changes {
            view.apply(c)?;
            view.last_commit_ms = barrier.ts_ms;
        }
        view.epoch = barrier.epoch;
        view.notify(&ViewEvent::Commit {
            barrier,
            changes: changes.as_ref(),
        });
        Ok(())
    }

    fn backpressure(&self) -> Option<BoxFuture<'static, ()>> {
        self.view.lock().pace.as_ref()?.ready()
    }

    fn state_bytes(&self) -> usize {
        self.view.lock().state_bytes()
    }

    /// The committed rows (each repeated by its count) and the epoch they are as of.
    fn snapshot(&mut self) -> Result<StateSnapshot> {
        if !self.pending.is_empty() {
            return Err(EngineError::Internal(
                "a view's state is taken only after a barrier".into(),
            ));
        }
        let mut view = self.view.lock();
        let mut snapshot = StateSnapshot::default();
        snapshot.put_values(EPOCH, &[("epoch", Some(view.epoch as i64))])?;
        snapshot.put(ROWS, view.rows()?);
        Ok(snapshot)
    }

    fn restore(&mut self, snapshot: &StateSnapshot) -> Result<()> {
        let mut view = self.view.lock();
        if let Some(rows) = snapshot.table(ROWS) {
            let columns = rows.columns().to_vec();
            let n = rows.num_rows();
            let schema = view.schema();
            view.apply(&ChangeBatch::from_columns(
                &schema,
                columns,
                std::iter::repeat_n(1, n),
            )?)?;
        }
        view.epoch = snapshot.value(EPOCH, "epoch")?.unwrap_or(0) as Epoch;
        Ok(())
    }
}

/// State tables of a view: its rows and the epoch they are as of.
const ROWS: &str = "rows";
const EPOCH: &str = "epoch";

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn data(keys: &[&str], vals: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(keys.to_vec())),
                Arc::new(Int64Array::from(vals.to_vec())),
            ],
        )
        .unwrap()
    }

    /// `batch`'s rows in order (a keyed view's rows come in no particular order).
    fn sorted(batch: RecordBatch) -> RecordBatch {
        let columns: Vec<arrow::compute::SortColumn> = batch
            .columns()
            .iter()
            .map(|c| arrow::compute::SortColumn {
                values: Arc::clone(c),
                options: None,
            })
            .collect();
        let order = arrow::compute::lexsort_to_indices(&columns, None).unwrap();
        arrow::compute::take_record_batch(&batch, &order).unwrap()
    }

    fn barrier(epoch: Epoch) -> Barrier {
        Barrier::new(epoch, epoch as i64 * 1000)
    }

    #[test]
    fn readers_see_whole_epochs_with_multiplicities() {
        let mut m = Materialize::new(data(&[], &[]).schema()).unwrap();
        let view = m.view();
        let mut out = Emitter::default();
        let insert = ChangeBatch::from_data(&data(&["a", "b", "a"], &[1, 2, 1]), 1).unwrap();
        m.on_batch(0, insert, &mut out).unwrap();
        assert_eq!(
            view.lock().rows().unwrap().num_rows(),
            0,
            "nothing before the barrier"
        );
        m.on_barrier(barrier(1), &mut out).unwrap();
        // Inserts only so far: the rows as they came.
        assert_eq!(
            view.lock().rows().unwrap(),
            data(&["a", "b", "a"], &[1, 2, 1])
        );
        // A subscriber starts from the committed rows and then sees each epoch's delta.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let start = view
            .lock()
            .subscribe(Box::new(move |e| {
                if let ViewEvent::Commit { barrier, changes } = e {
                    sink.lock()
                        .push((barrier.ts_ms, changes.map(|c| c.num_rows())));
                }
                true
            }))
            .unwrap();
        assert_eq!(start.num_rows(), 3);
        // An update: retract one ("a", 1), insert ("a", 5).
        let old = ChangeBatch::from_data(&data(&["a"], &[1]), -1).unwrap();
        let new = ChangeBatch::from_data(&data(&["a"], &[5]), 1).unwrap();
        m.on_batch(0, old, &mut out).unwrap();
        m.on_batch(0, new, &mut out).unwrap();
        m.on_barrier(barrier(2), &mut out).unwrap();
        m.on_barrier(barrier(3), &mut out).unwrap();
        let mut v = view.lock();
        assert_eq!((v.epoch(), v.last_commit_ms()), (3, 2000));
        // After a retraction, keyed.
        assert_eq!(
            sorted(v.rows().unwrap()),
            data(&["a", "a", "b"], &[1, 5, 2])
        );
        assert_eq!(v.len(), 3);
        assert_eq!(*seen.lock(), vec![(2000, Some(2)), (3000, None)]);
        assert!(out.drain().is_empty());
    }

    /// A view kept until its reader subscribes: the reader starts from the rows so far and
    /// gets every later change, while the view holds (and checkpoints) nothing more, a
    /// retraction of an earlier row included.
    #[test]
    fn a_view_for_one_reader_keeps_no_rows_once_it_subscribed() {
        let schema = data(&[], &[]).schema();
        let mut m = Materialize::with_retention(schema, Retention::UntilSubscribed).unwrap();
        let view = m.view();
        let mut out = Emitter::default();
        let insert = ChangeBatch::from_data(&data(&["a", "b"], &[1, 2]), 1).unwrap();
        m.on_batch(0, insert, &mut out).unwrap();
        m.on_barrier(barrier(1), &mut out).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let start = view
            .lock()
            .subscribe(Box::new(move |e| {
                if let ViewEvent::Commit {
                    changes: Some(c), ..
                } = e
                {
                    sink.lock().push(c.weights().values().to_vec());
                }
                true
            }))
            .unwrap();
        assert_eq!(start, data(&["a", "b"], &[1, 2]));
        let insert = ChangeBatch::from_data(&data(&["c"], &[3]), 1).unwrap();
        let retract = ChangeBatch::from_data(&data(&["a"], &[1]), -1).unwrap();
        m.on_batch(0, insert, &mut out).unwrap();
        m.on_batch(0, retract, &mut out).unwrap();
        m.on_barrier(barrier(2), &mut out).unwrap();
        assert_eq!(*seen.lock(), vec![vec![1, -1]]);
        let mut v = view.lock();
        assert_eq!((v.rows().unwrap().num_rows(), v.state_bytes()), (0, 0));
        assert_eq!(v.epoch(), 2);
        drop(v);
        let snapshot = m.snapshot().unwrap();
        assert_eq!(snapshot.table(ROWS).map(|t| t.num_rows()), Some(0));
    }

    #[test]
    fn inserts_with_weights_then_a_retraction_keep_multiplicities() {
        let mut m = Materialize::new(data(&[], &[]).schema()).unwrap();
        let view = m.view();
        let mut out = Emitter::default();
        let twice = ChangeBatch::from_data(&data(&["x", "y"], &[1, 2]), 2).unwrap();
        m.on_batch(0, twice, &mut out).unwrap();
        m.on_barrier(barrier(1), &mut out).unwrap();
        assert_eq!(view.lock().len(), 4);
        assert_eq!(
            view.lock().rows().unwrap(),
            data(&["x", "x", "y", "y"], &[1, 1, 2, 2])
        );
        let retract = ChangeBatch::from_data(&data(&["y"], &[2]), -1).unwrap();
        m.on_batch(0, retract, &mut out).unwrap();
        m.on_barrier(barrier(2), &mut out).unwrap();
        assert_eq!(view.lock().len(), 3);
        assert_eq!(
            sorted(view.lock().rows().unwrap()),
            data(&["x", "x", "y"], &[1, 1, 2])
        );
        let gone = ChangeBatch::from_data(&data(&["y"], &[2]), -2).unwrap();
        m.on_batch(0, gone, &mut out).unwrap();
        assert!(
            m.on_barrier(barrier(3), &mut out).is_err(),
            "only one y left"
        );
    }

    #[test]
    fn a_view_restored_from_its_snapshot_carries_on() {
        let mut m = Materialize::new(data(&[], &[]).schema()).unwrap();
        let mut out = Emitter::default();
        let rows = ChangeBatch::from_data(&data(&["x", "y", "x"], &[1, 2, 1]), 1).unwrap();
        m.on_batch(0, rows, &mut out).unwrap();
        m.on_barrier(barrier(4), &mut out).unwrap();
        let bytes = m.snapshot().unwrap().to_bytes().unwrap();
        let mut restored = Materialize::new(data(&[], &[]).schema()).unwrap();
        restored
            .restore(&StateSnapshot::from_bytes(&bytes).unwrap())
            .unwrap();
        let view = restored.view();
        let (epoch, len) = {
            let v = view.lock();
            (v.epoch(), v.len())
        };
        assert_eq!((epoch, len), (4, 3));
        // Both copies of x are there to retract; a third is not.
        let retract = ChangeBatch::from_data(&data(&["x"], &[1]), -2).unwrap();
        restored.on_batch(0, retract, &mut out).unwrap();
        restored.on_barrier(barrier(5), &mut out).unwrap();
        assert_eq!(view.lock().rows().unwrap(), data(&["y"], &[2]));
        let again = ChangeBatch::from_data(&data(&["x"], &[1]), -1).unwrap();
        restored.on_batch(0, again, &mut out).unwrap();
        assert!(restored.on_barrier(barrier(6), &mut out).is_err());
    }

    #[test]
    fn retraction_without_insert_is_an_error_at_commit() {
        let mut m = Materialize::new(data(&[], &[]).schema()).unwrap();
        let mut out = Emitter::default();
        let retract = ChangeBatch::from_data(&data(&["x"], &[1]), -1).unwrap();
        m.on_batch(0, retract, &mut out).unwrap();
        assert!(m.on_barrier(barrier(1), &mut out).is_err());
    }
}
