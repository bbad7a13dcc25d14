//! SUBSCRIBE over the wire: `COPY (SUBSCRIBE ...) TO STDOUT` streams each commit's rows as
//! COPY text, flushed per commit, so psql prints them live.

use std::fmt::Debug;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use futures::{Sink, SinkExt};
use pgwire::api::results::{Response, Tag};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::copy::{CopyData, CopyDone, CopyOutResponse};
use weir_sql::{SqlError, Subscription};

use super::text::{Zone, is_null, write_value};

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
