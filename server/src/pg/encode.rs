//! Arrow results to pgwire responses: text columns as Postgres prints them (`text.rs`),
//! binary ones through arrow-pg. Results are materialised first so a NOTICE can precede them.

use std::sync::Arc;

use arrow_pg::datatypes::arrow_schema_to_pg_fields;
use arrow_pg::encoder::encode_value;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use pgwire::api::Type;
use pgwire::api::portal::Format;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::error::PgWireResult;
use pgwire::types::format::FormatOptions;
use weir_sql::Output;
use weir_sql::jsonb::is_jsonb;

use super::text::{Zone, is_null, write_value};

/// The row description of `schema`: arrow-pg's, with jsonb columns (strings marked with
/// Arrow's JSON extension, `weir_sql::jsonb`) typed as jsonb (OID 3802).
pub(crate) fn pg_fields(
    schema: &Schema,
    format: &Format,
    options: Option<Arc<FormatOptions>>,
) -> PgWireResult<Vec<FieldInfo>> {
    let mut fields = arrow_schema_to_pg_fields(schema, format, options.clone())?;
    for (i, field) in schema.fields().iter().enumerate() {
        if is_jsonb(field) {
            let mut info = FieldInfo::new(
                field.name().clone(),
                None,
                None,
                Type::JSONB,
                format.format_for(i),
            );
            if let Some(options) = &options {
                info = info.with_format_options(Arc::clone(options));
            }
            fields[i] = info;
        }
    }
    Ok(fields)
}

pub(crate) fn rows_response(
    schema: &SchemaRef,
    batches: Vec<RecordBatch>,
    format: &Format,
    options: Arc<FormatOptions>,
) -> PgWireResult<Response> {
    let fields = Arc::new(pg_fields(schema, format, Some(Arc::clone(&options)))?);
    let zone = Zone::parse(&options.time_zone);
    let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
    let mut text = String::new();
    let mut rows = Vec::new();
    for batch in batches {
        for row in 0..batch.num_rows() {
            for (col, array) in batch.columns().iter().enumerate() {
                let field = &fields[col];
                if field.format() == FieldFormat::Binary && *field.datatype() == Type::JSONB {
                    // jsonb's binary form: a version byte (1), then the text.
                    let value = (!is_null(array.as_ref(), row)).then(|| {
                        text.clear();
                        text.push('\u{1}');
                        write_value(array.as_ref(), row, &zone, &mut text);
                        text.as_bytes()
                    });
                    encoder.encode_field_with_type_and_format(
                        &value,
                        &Type::BYTEA,
                        FieldFormat::Binary,
                        &options,
                    )?;
                    continue;
                }
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
