//! A session's SUBSCRIBE cursors: `DECLARE c CURSOR FOR SUBSCRIBE ...` opens one, `FETCH n c
//! WITH (timeout = ...)` takes its queued rows, and the end of the transaction closes it.

use std::collections::HashMap;
use std::time::Duration;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;

use crate::database::Subscription;
use crate::error::SqlError;

/// A session's open SUBSCRIBE cursors (closed at the end of their transaction).
#[derive(Debug, Default)]
pub struct Cursors(HashMap<String, Cursor>);

#[derive(Debug)]
struct Cursor {
    sub: Subscription,
    /// Rows of a commit not fetched yet.
    pending: Option<RecordBatch>,
}

impl Cursors {
    pub(crate) fn open(&mut self, name: &str, sub: Subscription) -> Result<(), SqlError> {
        let map = &mut self.0;
        if map.contains_key(name) {
            return Err(SqlError::new(
                "42P03",
                format!("cursor \"{name}\" already exists"),
            ));
        }
        map.insert(name.to_string(), Cursor { sub, pending: None });
        Ok(())
    }

    /// Closes one cursor (None: all of them).
    pub(crate) fn close(&mut self, name: Option<&str>) -> Result<(), SqlError> {
        let map = &mut self.0;
        match name {
            None => map.clear(),
            Some(n) => {
                map.remove(n).ok_or_else(|| no_cursor(n))?;
            }
        }
        Ok(())
    }

    /// The columns a FETCH from `name` returns.
    pub fn schema(&self, name: &str) -> Option<SchemaRef> {
        self.0.get(name).map(|c| c.sub.schema())
    }

    /// Up to `count` rows (None = all queued); waits up to `timeout` (None = until some
    /// arrive) when nothing is queued.
    pub(crate) async fn fetch(
        &mut self,
        name: &str,
        count: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<RecordBatch, SqlError> {
        let cursor = self.0.get_mut(name).ok_or_else(|| no_cursor(name))?;
        let limit = count.map_or(usize::MAX, |c| c as usize);
        let mut out: Vec<RecordBatch> = Vec::new();
        let mut taken = 0;
        while taken < limit {
            let batch = match cursor.pending.take() {
                Some(b) => Some(b),
                None if taken == 0 => match timeout {
                    None => cursor.sub.next().await?,
                    Some(t) => match tokio::time::timeout(t, cursor.sub.next()).await {
                        Ok(r) => r?,
                        Err(_) => None,
                    },
                },
                None => cursor.sub.try_next()?,
            };
            let Some(batch) = batch else { break };
            let n = (limit - taken).min(batch.num_rows());
            if n < batch.num_rows() {
                cursor.pending = Some(batch.slice(n, batch.num_rows() - n));
            }
            taken += n;
            out.push(batch.slice(0, n));
        }
        concat_batches(&cursor.sub.schema(), &out)
            .map_err(|e| SqlError::new("XX000", e.to_string()))
    }
}

fn no_cursor(name: &str) -> SqlError {
    SqlError::new("34000", format!("cursor \"{name}\" does not exist"))
}
