//! The exchange between dataflow stages: a `Router` deals each change row to the instance
//! of the next stage that owns its key (hash partitioning) and copies watermarks and
//! barriers to every instance, so keyed state is split across cores.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use datafusion_common::hash_utils::{RandomState, create_hashes};
use datafusion_physical_expr::PhysicalExpr;
use tokio::sync::mpsc;

use crate::{ChangeBatch, EngineError, Message, Result};

/// How rows cross an exchange edge.
#[derive(Debug, Clone)]
pub enum Partitioning {
    /// By the hash of these expressions over the rows (a keyed operator's key): equal
    /// keys always reach the same instance, on both sides of a join alike.
    Hash(Vec<Arc<dyn PhysicalExpr>>),
    /// All rows to one instance (a global aggregate, the view's `Materialize`).
    Single,
}

impl Partitioning {
    pub fn describe(&self) -> String {
        match self {
            Self::Hash(keys) => {
                let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                format!("hash({})", keys.join(", "))
            }
            Self::Single => "single".to_string(),
        }
    }
}

/// The seed every router hashes with: instances must agree on where a key goes.
const SEED: u64 = 0x5745_4952;

/// A stage instance's exit: sends its output to the next stage's instances.
pub struct Router {
    partitioning: Partitioning,
    outputs: Vec<mpsc::Sender<Message>>,
    hashes: Vec<u64>,
}

impl Router {
    pub fn new(partitioning: Partitioning, outputs: Vec<mpsc::Sender<Message>>) -> Self {
        Self {
            partitioning,
            outputs,
            hashes: Vec::new(),
        }
    }

    /// Sends one message on (waiting while a receiver is full); false once a receiver is
    /// gone, which means the dataflow is stopping.
    pub async fn send(&mut self, msg: Message) -> Result<bool> {
        match msg {
            Message::Data(batch) if self.outputs.len() > 1 => {
                for (to, part) in self.split(&batch)? {
                    if self.outputs[to].send(Message::Data(part)).await.is_err() {
                        return Ok(false);
                    }
                }
            }
            Message::Data(_) => {
                if self.outputs[0].send(msg).await.is_err() {
                    return Ok(false);
                }
            }
            other => {
                for out in &self.outputs {
                    if out.send(other.clone()).await.is_err() {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// The rows of `batch` per receiving instance (only the non-empty parts).
    fn split(&mut self, batch: &ChangeBatch) -> Result<Vec<(usize, ChangeBatch)>> {
        let n = self.outputs.len();
        let Partitioning::Hash(keys) = &self.partitioning else {
            return Ok(vec![(0, batch.clone())]);
        };
        let rows = batch.batch();
        let columns = evaluate_keys(keys, rows)?;
        let mut parts: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (i, to) in owners(&columns, n, &mut self.hashes)?.enumerate() {
            parts[to].push(i as u32);
        }
        let mut out = Vec::with_capacity(n);
        for (to, indices) in parts.into_iter().enumerate() {
            if indices.len() == rows.num_rows() {
                return Ok(vec![(to, batch.clone())]);
            }
            if !indices.is_empty() {
                let part = take_record_batch(rows, &UInt32Array::from(indices))
                    .map_err(EngineError::from)?;
                out.push((to, ChangeBatch::try_new(part)?));
            }
        }
        Ok(out)
    }
}

/// The partitioning expressions evaluated over `rows`: the values a key is hashed from.
pub(crate) fn evaluate_keys(
    keys: &[Arc<dyn PhysicalExpr>],
    rows: &RecordBatch,
) -> Result<Vec<ArrayRef>> {
    Ok(keys
        .iter()
        .map(|k| k.evaluate(rows)?.into_array(rows.num_rows()))
        .collect::<datafusion_common::Result<Vec<ArrayRef>>>()?)
}

/// The instance (of `instances`) that owns each row's key, given the key's values: the one
/// rule every router deals by and a restore at another parallelism re-deals state by.
/// `hashes` is scratch space.
pub(crate) fn owners<'a>(
    keys: &[ArrayRef],
    instances: usize,
    hashes: &'a mut Vec<u64>,
) -> Result<impl Iterator<Item = usize> + 'a> {
    let rows = keys.first().map_or(0, |k| k.len());
    hashes.clear();
    hashes.resize(rows, 0);
    create_hashes(keys, &RandomState::with_seed(SEED), hashes)?;
    Ok(hashes.iter().map(move |h| (*h % instances as u64) as usize))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;
    use crate::operator::column;
    use crate::runtime::channel_stream;

    fn batch(keys: &[i64]) -> ChangeBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let data =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(keys.to_vec()))]).unwrap();
        ChangeBatch::from_data(&data, 1).unwrap()
    }

    fn keys_of(msg: &Message) -> Vec<i64> {
        let Message::Data(b) = msg else {
            panic!("expected data, got {msg:?}")
        };
        let k = b.batch().column(0);
        let k = k.as_any().downcast_ref::<Int64Array>().unwrap();
        (0..k.len()).map(|i| k.value(i)).collect()
    }

    #[tokio::test]
    async fn equal_keys_go_to_one_instance_and_control_messages_to_all() {
        use futures::StreamExt;
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..3).map(|_| mpsc::channel(64)).unzip();
        let mut router = Router::new(Partitioning::Hash(vec![column("k", 0)]), txs);
        let input: Vec<i64> = (0..200).map(|i| i % 17).collect();
        for chunk in input.chunks(50) {
            assert!(router.send(Message::Data(batch(chunk))).await.unwrap());
        }
        let barrier = Message::Barrier(crate::Barrier::new(1, 0));
        assert!(router.send(barrier.clone()).await.unwrap());
        drop(router);
        let mut owner = std::collections::HashMap::new();
        let mut total = 0;
        for (i, rx) in rxs.into_iter().enumerate() {
            let msgs: Vec<Message> = channel_stream(rx).collect().await;
            assert_eq!(
                msgs.last(),
                Some(&barrier),
                "instance {i} gets the barrier last"
            );
            for m in &msgs[..msgs.len() - 1] {
                for k in keys_of(m) {
                    total += 1;
                    assert_eq!(*owner.entry(k).or_insert(i), i, "key {k} split");
                }
            }
        }
        assert_eq!(total, input.len());
        assert!(
            owner
                .values()
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1
        );
    }
}
