//! SUBSCRIBE over the wire: `COPY (SUBSCRIBE ...) TO STDOUT` streams each commit's rows as
//! COPY text (flushed per commit, so psql prints them live), and SUBSCRIBE cursors answer
//! `FETCH n c WITH (timeout = ...)` from a session's open subscriptions.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::SchemaRef;
use futures::{Sink, SinkExt};
use pgwire::api::ClientInfo;
use pgwire::api::results::{Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use tokio::sync::Mutex;
use weir_sql::{SqlError, Subscription};

use super::text::{Zone, is_null, write_value};

/// A session's open SUBSCRIBE cursors (closed at the end of their transaction).
#[derive(Default)]
pub(crate) struct Cursors(Mutex<HashMap<String, Cursor>>);

pub(crate) struct Cursor {
    sub: Subscription,
    /// Rows of a commit not fetched yet.
    pending: Option<RecordBatch>,
}

/// The session's cursor store.
pub(crate) fn cursors<C: ClientInfo>(client: &C) -> Arc<Cursors> {
    client
        .session_extensions()
        .get_or_insert_with(Cursors::default)
}

impl Cursors {
    pub(crate) async fn open(&self, name: &str, sub: Subscription) -> Result<(), SqlError> {
        let mut map = self.0.lock().await;
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
    pub(crate) async fn close(&self, name: Option<&str>) -> Result<(), SqlError> {
        let mut map = self.0.lock().await;
        match name {
            None => map.clear(),
            Some(n) => {
                map.remove(n).ok_or_else(|| no_cursor(n))?;
            }
        }
        Ok(())
    }

    pub(crate) async fn schema(&self, name: &str) -> Option<SchemaRef> {
        self.0.lock().await.get(name).map(|c| c.sub.schema())
    }

    /// Up to `count` rows (None = all queued); waits up to `timeout` (None = until some
    /// arrive) when nothing is queued.
    pub(crate) async fn fetch(
        &self,
        name: &str,
        count: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<RecordBatch, SqlError> {
        let mut map = self.0.lock().await;
        let cursor = map.get_mut(name).ok_or_else(|| no_cursor(name))?;
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

/// Rows as COPY text lines: tab-separated, `\N` for NULL, backslash escapes, values as
/// Postgres prints them.
fn copy_lines(batch: &RecordBatch, zone: &Zone) -> Vec<Bytes> {
    let mut lines = Vec::with_capacity(batch.num_rows());
    let mut value = String::new();
    for row in 0..batch.num_rows() {
        let mut line = String::new();
        for (i, column) in batch.columns().iter().enumerate() {
            if i > 0 {
                line.push('\t');
            }
            if is_null(column.as_ref(), row) {
                line.push_str("\\N");
                continue;
            }
            value.clear();
            write_value(column.as_ref(), row, zone, &mut value);
            for ch in value.chars() {
                match ch {
                    '\\' => line.push_str("\\\\"),
                    '\t' => line.push_str("\\t"),
                    '\n' => line.push_str("\\n"),
                    '\r' => line.push_str("\\r"),
                    c => line.push(c),
                }
            }
        }
        line.push('\n');
        lines.push(Bytes::from(line));
    }
    lines
}

/// Streams a subscription as COPY OUT until the view goes away, the subscriber falls behind,
/// or the client cancels (which drops this future) or disconnects (a failed send).
pub(crate) async fn copy_out<C>(
    client: &mut C,
    mut sub: Subscription,
    zone: Zone,
) -> PgWireResult<Result<Response, SqlError>>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let columns = sub.schema().fields().len();
    client
        .send(PgWireBackendMessage::CopyOutResponse(CopyOutResponse::new(
            0,
            columns as i16,
            vec![0; columns],
        )))
        .await?;
    let mut rows = 0;
    loop {
        match sub.next().await {
            Ok(Some(batch)) => {
                let lines = copy_lines(&batch, &zone);
                rows += lines.len();
                for line in lines {
                    client
                        .feed(PgWireBackendMessage::CopyData(CopyData::new(line)))
                        .await?;
                }
                // One flush per commit: psql shows the commit as soon as it happens.
                client.flush().await?;
            }
            Ok(None) => break,
            Err(e) => return Ok(Err(e)),
        }
    }
    client
        .send(PgWireBackendMessage::CopyDone(CopyDone::new()))
        .await?;
    Ok(Ok(Response::Execution(Tag::new("COPY").with_rows(rows))))
}
