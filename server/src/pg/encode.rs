//! Arrow results to pgwire responses, through arrow-pg's encoders (text and binary formats).
//! Results are materialised first so a NOTICE about skipped input can precede them.

use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use pgwire::api::portal::Format;
use pgwire::api::results::{QueryResponse, Response, Tag};
use pgwire::error::PgWireResult;
use pgwire::types::format::FormatOptions;
use weir_sql::Output;

pub(crate) fn rows_response(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<Response> {
    let fields = Arc::new(arrow_schema_to_pg_fields(schema, format, Some(options))?);
    let mut rows = Vec::new();
    for batch in batches {
        rows.extend(encode_recordbatch(Arc::clone(&fields), batch));
    }
    Ok(Response::Query(QueryResponse::new(
        fields,
        futures::stream::iter(rows),
    )))
}

pub(crate) fn output_response(
    output: Output,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<Response> {
    match output {
        Output::Rows { schema, batches } => rows_response(&schema, batches, format, options),
        Output::Command { tag, rows } => {
            let t = Tag::new(&tag);
            Ok(Response::Execution(match rows {
                Some(n) => t.with_rows(n),
                None => t,
            }))
        }
    }
}
