//! Arrow results to pgwire responses: text columns as Postgres prints them (`text.rs`),
//! binary ones through arrow-pg. Results are materialised first so a NOTICE can precede them.

use std::sync::Arc;

use arrow_pg::datatypes::arrow_schema_to_pg_fields;
use arrow_pg::encoder::encode_value;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, QueryResponse, Response, Tag};
use pgwire::error::PgWireResult;
use pgwire::types::format::FormatOptions;
use weir_sql::Output;

use super::text::{Zone, is_null, write_value};

pub(crate) fn rows_response(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<Response> {
    let fields = Arc::new(arrow_schema_to_pg_fields(
        schema,
        format,
        Some(Arc::clone(&options)),
    )?);
    let zone = Zone::parse(&options.time_zone);
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    let mut text = String::new();
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            for (col, array) in batch.columns().iter().enumerate() {
                let field = &fields[col];
                if field.format() == FieldFormat::Binary {
                    encode_value(
                        &mut encoder,
                        array,
                        row,
                        batch.schema_ref().field(col),
                        field,
                    )?;
                    continue;
                }
                let value = (!is_null(array.as_ref(), row)).then(|| {
                    text.clear();
                    write_value(array.as_ref(), row, &zone, &mut text);
                    text.as_str()
                });
                // Typed as text so pgwire writes the bytes as they are (no array quoting).
                encoder.encode_field_with_type_and_format(
                    &value,
                    &Type::TEXT,
                    FieldFormat::Text,
                    &options,
                )?;
            }
            rows.push(Ok(encoder.take_row()));
        }
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
