//! The JSON API: `POST /api/v1/query` runs SQL, `GET /api/v1/subscribe/{view}` streams a
//! view's SUBSCRIBE changes as Server-Sent Events, `GET /api/v1/dataflows/{view}` shows a
//! view's operators. Each request is a session of its own, checked like a Postgres one.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use weir_sql::{
    Database, Executed, Interrupt, Output, ParsedStatement, Session, SqlError, Subscription,
};

use super::HttpState;
use super::auth::{challenge, user_of};
use super::metrics::PROCESS;

/// An error as JSON, with the HTTP status its SQLSTATE class calls for.
pub(crate) fn error_response(e: &SqlError) -> (StatusCode, Json<Value>) {
    let status = match &e.code[..2] {
        "28" => StatusCode::UNAUTHORIZED,
        "42" if e.code == "42501" => StatusCode::FORBIDDEN,
        "42" if e.code == "42P01" => StatusCode::NOT_FOUND,
        "0A" | "22" | "42" => StatusCode::BAD_REQUEST,
        "53" => StatusCode::SERVICE_UNAVAILABLE,
        "57" => StatusCode::REQUEST_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut error = json!({"sqlstate": e.code, "message": e.message});
    if let Some(p) = e.position {
        error["position"] = json!(p);
    }
    (status, Json(json!({ "error": error })))
}

/// A fresh session of `user` with the server's statement timeout.
fn session(state: &HttpState, user: &str) -> Result<Session, SqlError> {
    let mut session = Session::new(user, &Default::default());
    if let Some(t) = state.statement_timeout {
        session.set("statement_timeout", Some(&t.as_millis().to_string()))?;
    }
    Ok(session)
}

async fn parse(
    db: &Database,
    session: &Session,
    sql: &str,
) -> Result<Vec<ParsedStatement>, SqlError> {
    db.parse_on_query_threads(sql.to_string(), Interrupt::new(session.statement_timeout()))
        .await
}

/// Runs one statement of `session`, counted in the process metrics.
async fn execute(
    db: &Arc<Database>,
    session: &mut Session,
    parsed: &ParsedStatement,
) -> Result<Executed, SqlError> {
    PROCESS.statement(&parsed.text);
    let plan = match &parsed.statement {
        weir_sql::Statement::Query(q) => match db.plan_for(session, parsed, q).await {
            Ok(p) => Some(p),
            Err(e) => {
                PROCESS.error(e.code);
                return Err(e);
            }
        },
        _ => None,
    };
    let result = db.execute(session, parsed, plan).await;
    if let Err(e) = &result {
        PROCESS.error(e.code);
    }
    result
}

#[derive(Deserialize)]
pub(crate) struct QueryBody {
    sql: String,
}

/// `POST /api/v1/query` with `{"sql": "..."}` (or the SQL as a plain-text body): each
/// statement's result, `{"results": [{"tag", "columns": [{"name", "type"}], "rows": [[..]]}]}`.
/// The first error ends the request.
pub(crate) async fn query(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let user = match user_of(&state.db, &headers) {
        Ok(u) => u,
        Err(e) => return challenge(&e),
    };
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let sql = if is_json {
        match serde_json::from_str::<QueryBody>(&body) {
            Ok(b) => b.sql,
            Err(e) => {
                let e = SqlError::new(
                    "22P02",
                    format!("the body is not {{\"sql\": \"...\"}}: {e}"),
                );
                return error_response(&e).into_response();
            }
        }
    } else {
        body
    };
    match run_all(&state, &user, &sql).await {
        Ok(results) => Json(json!({ "results": results })).into_response(),
        Err(e) => error_response(&e).into_response(),
    }
}

async fn run_all(state: &HttpState, user: &str, sql: &str) -> Result<Vec<Value>, SqlError> {
    let mut session = session(state, user)?;
    let mut results = Vec::new();
    for parsed in parse(&state.db, &session, sql).await? {
        let executed = execute(&state.db, &mut session, &parsed).await?;
        results.push(match executed {
            Executed::Output {
                output: Output::Rows { schema, batches },
                ..
            } => {
                let (columns, rows) = rows_json(&schema, &batches, false)?;
                json!({"tag": format!("SELECT {}", rows.len()), "columns": columns, "rows": rows})
            }
            Executed::Output {
                output: Output::Command { tag, rows },
                ..
            } => json!({"tag": tag, "rows_affected": rows}),
            Executed::Set { .. } => json!({"tag": "SET"}),
            Executed::TransactionStart => json!({"tag": "BEGIN"}),
            Executed::TransactionEnd { tag } => json!({"tag": tag}),
            Executed::Copy(_) => {
                return Err(SqlError::new(
                    "0A000",
                    "SUBSCRIBE streams: use GET /api/v1/subscribe/{view}",
                ));
            }
        });
    }
    Ok(results)
}

/// Columns as `[{"name", "type"}]` and rows as arrays in column order (`objects`: as
/// objects keyed by column name). Values keep their JSON type where there is one;
/// timestamps and dates are ISO 8601 strings.
pub(crate) fn rows_json(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    objects: bool,
) -> Result<(Vec<Value>, Vec<Value>), SqlError> {
    let internal = |e: &dyn std::fmt::Display| SqlError::new("XX000", e.to_string());
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": weir_sql::field_type_name(f)}))
        .collect();
    // Positional names: a result may repeat a column name.
    let positional = |batch: &RecordBatch, as_text: bool| -> Result<RecordBatch, SqlError> {
        let mut fields = Vec::new();
        let mut arrays = Vec::new();
        for (i, (f, a)) in schema.fields().iter().zip(batch.columns()).enumerate() {
            let a = if as_text && !matches!(f.data_type(), DataType::Utf8) {
                cast(a, &DataType::Utf8).map_err(|e| internal(&e))?
            } else {
                Arc::clone(a)
            };
            fields.push(Field::new(format!("c{i}"), a.data_type().clone(), true));
            arrays.push(a);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).map_err(|e| internal(&e))
    };
    let encode = |as_text: bool| -> Result<Vec<u8>, SqlError> {
        let mut writer = arrow_json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow_json::writer::JsonArray>(Vec::new());
        for b in batches {
            writer
                .write(&positional(b, as_text)?)
                .map_err(|e| internal(&e))?;
        }
        writer.finish().map_err(|e| internal(&e))?;
        Ok(writer.into_inner())
    };
    // Types JSON has no form for (intervals, binary) are sent as their text.
    let bytes = encode(false).or_else(|_| encode(true))?;
    let parsed: Vec<Map<String, Value>> = if bytes.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| internal(&e))?
    };
    let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
    let rows = parsed
        .into_iter()
        .map(|mut row| {
            let values =
                (0..names.len()).map(move |i| row.remove(&format!("c{i}")).unwrap_or(Value::Null));
            if objects {
                Value::Object(names.iter().map(|n| n.to_string()).zip(values).collect())
            } else {
                Value::Array(values.collect())
            }
        })
        .collect();
    Ok((columns, rows))
}

/// Quotes an identifier for SQL text.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[derive(Deserialize)]
pub(crate) struct SubscribeParams {
    snapshot: Option<bool>,
}

/// `GET /api/v1/subscribe/{view}[?snapshot=false]`: an `event: columns` with the columns
/// (`weir_ts`, `weir_diff`, then the view's), then per commit an `event: changes` whose
/// data is a JSON array of the commit's rows as objects, retractions first, as SUBSCRIBE
/// sends them. A subscriber that falls too far behind gets `event: error` and the end.
pub(crate) async fn subscribe(
    State(state): State<HttpState>,
    Path(view): Path<String>,
    Query(params): Query<SubscribeParams>,
    headers: HeaderMap,
) -> Response {
    let user = match user_of(&state.db, &headers) {
        Ok(u) => u,
        Err(e) => return challenge(&e),
    };
    let snapshot = if params.snapshot == Some(false) {
        " WITH (snapshot = false)"
    } else {
        ""
    };
    let sql = format!(
        "COPY (SUBSCRIBE TO {}{snapshot}) TO STDOUT",
        quote_ident(&view)
    );
    let started = async {
        let mut session = session(&state, &user)?;
        let parsed = parse(&state.db, &session, &sql).await?;
        let parsed = parsed
            .first()
            .ok_or_else(|| SqlError::new("42601", "empty subscription"))?;
        match execute(&state.db, &mut session, parsed).await? {
            Executed::Copy(sub) => Ok(sub),
            _ => Err(SqlError::new("XX000", "SUBSCRIBE did not stream")),
        }
    };
    match started.await {
        Ok(sub) => Sse::new(changes(sub))
            .keep_alive(KeepAlive::default())
            .into_response(),
        Err(e) => error_response(&e).into_response(),
    }
}

/// The SSE events of a subscription, ending when it does (dropping the stream, as a client
/// that goes away does, unsubscribes).
fn changes(sub: Subscription) -> impl Stream<Item = Result<Event, Infallible>> {
    let schema = sub.schema();
    let (columns, _) = rows_json(&schema, &[], false).unwrap_or_default();
    let first = Event::default()
        .event("columns")
        .data(Value::Array(columns).to_string());
    let rest = futures::stream::unfold(Some(sub), move |sub| {
        let schema = Arc::clone(&schema);
        async move {
            let mut sub = sub?;
            let event = match sub.next().await {
                Ok(Some(batch)) => match rows_json(&schema, &[batch], true) {
                    Ok((_, rows)) => Event::default()
                        .event("changes")
                        .data(Value::Array(rows).to_string()),
                    Err(e) => return Some((error_event(&e), None)),
                },
                Ok(None) => return None,
                Err(e) => return Some((error_event(&e), None)),
            };
            Some((event, Some(sub)))
        }
    });
    futures::stream::once(async move { first })
        .chain(rest)
        .map(Ok)
}

fn error_event(e: &SqlError) -> Event {
    Event::default()
        .event("error")
        .data(json!({"sqlstate": e.code, "message": e.message}).to_string())
}

/// `GET /api/v1/dataflows/{view}`: the view's operators (as EXPLAIN CREATE MATERIALIZED
/// VIEW describes them), their edges and exchanges, and the rows and state of each.
pub(crate) async fn dataflow_graph(
    State(state): State<HttpState>,
    Path(view): Path<String>,
    headers: HeaderMap,
) -> Response {
    let user = match user_of(&state.db, &headers) {
        Ok(u) => u,
        Err(e) => return challenge(&e),
    };
    // What the role may not read, it may not inspect either.
    let check = format!("SELECT * FROM {} LIMIT 0", quote_ident(&view));
    if let Err(e) = run_all(&state, &user, &check).await {
        return error_response(&e).into_response();
    }
    let graph = match state.db.dataflow_graph(&view) {
        Ok(g) => g,
        Err(e) => return error_response(&e).into_response(),
    };
    let operators: Vec<Value> = graph
        .operators
        .iter()
        .map(|op| {
            json!({
                "id": op.info.id,
                "operator": op.info.operator,
                "input_channels": op.info.input_channels,
                "outputs": op.info.outputs.iter().map(|(to, exchange)| json!({"to": to, "exchange": exchange})).collect::<Vec<_>>(),
                "rows": op.rows,
                "state_bytes": op.state_bytes,
            })
        })
        .collect();
    let inputs: Vec<Value> = graph
        .inputs
        .iter()
        .map(|(node, relation)| json!({"operator": node, "relation": relation}))
        .collect();
    Json(json!({
        "view": view,
        "parallelism": graph.parallelism,
        "operators": operators,
        "inputs": inputs,
    }))
    .into_response()
}
