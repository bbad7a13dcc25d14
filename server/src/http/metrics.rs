//! Prometheus metrics (OpenMetrics text at `/metrics`): process counters kept as things
//! happen, and per source partition, view, sink and checkpoint, values read at each scrape.

use std::sync::{LazyLock, Weak};

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::{Registry, Unit};
use weir_engine::runtime::SplitProgress;
use weir_sql::Database;

use super::HttpState;

type Labels = Vec<(&'static str, String)>;

/// What happens in the process, counted where it happens.
#[derive(Default)]
pub(crate) struct ProcessMetrics {
    connections: Counter,
    statements: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
}

/// The process's counters (one server per process in production; tests share them).
pub(crate) static PROCESS: LazyLock<ProcessMetrics> = LazyLock::new(ProcessMetrics::default);

/// Statement kinds with a label of their own; anything else counts as `other`.
const KINDS: [&str; 30] = [
    "select",
    "insert",
    "update",
    "delete",
    "create",
    "drop",
    "alter",
    "show",
    "set",
    "reset",
    "begin",
    "start",
    "commit",
    "rollback",
    "subscribe",
    "copy",
    "declare",
    "fetch",
    "close",
    "explain",
    "flush",
    "grant",
    "revoke",
    "with",
    "values",
    "discard",
    "prepare",
    "execute",
    "deallocate",
    "table",
];

impl ProcessMetrics {
    /// A session logged in on the Postgres endpoint.
    pub(crate) fn connection(&self) {
        self.connections.inc();
    }

    /// A statement ran; its kind is its first keyword (`select`, `create`, ...).
    pub(crate) fn statement(&self, text: &str) {
        let word: String = text
            .trim_start_matches(|c: char| !c.is_ascii_alphabetic())
            .chars()
            .take_while(char::is_ascii_alphabetic)
            .collect::<String>()
            .to_ascii_lowercase();
        let kind = KINDS
            .iter()
            .find(|k| **k == word)
            .copied()
            .unwrap_or("other");
        self.statements
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    /// A statement failed with `sqlstate`.
    pub(crate) fn error(&self, sqlstate: &str) {
        self.errors
            .get_or_create(&vec![("sqlstate", sqlstate.to_string())])
            .inc();
    }
}

/// The registry behind `/metrics`.
pub(crate) struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub(crate) fn new(db: Weak<Database>) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "weir_pg_connections",
            "Sessions that logged in on the Postgres endpoint",
            PROCESS.connections.clone(),
        );
        registry.register(
            "weir_statements",
            "Statements run, by their first keyword",
            PROCESS.statements.clone(),
        );
        registry.register(
            "weir_statement_errors",
            "Statements that failed, by SQLSTATE",
            PROCESS.errors.clone(),
        );
        registry.register_collector(Box::new(DatabaseCollector { db }));
        Self { registry }
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics could not be encoded");
        }
        out
    }
}

pub(crate) async fn scrape(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// Reads the database at each scrape.
#[derive(Debug)]
struct DatabaseCollector {
    db: Weak<Database>,
}

/// Writes one counter family: `values` are its label sets and totals.
fn counters<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in values {
        metric
            .encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// Writes one gauge family: `values` are its label sets and values.
fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    values: impl IntoIterator<Item = (L, V)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    for (labels, value) in values {
        metric.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

impl Collector for DatabaseCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(db) = self.db.upgrade() else {
            return Ok(());
        };
        sources(&db, &mut encoder)?;
        views(&db, &mut encoder)?;
        sinks(&db, &mut encoder)?;
        if let Some((epoch, duration_ms, bytes)) = db.last_checkpoint() {
            gauges(
                &mut encoder,
                "weir_checkpoint_last_epoch",
                "Epoch of the newest committed checkpoint",
                None,
                [(Labels::new(), epoch as i64)],
            )?;
            gauges(
                &mut encoder,
                "weir_checkpoint_last_duration",
                "How long the newest committed checkpoint took",
                Some(Unit::Seconds),
                [(Labels::new(), duration_ms as f64 / 1000.0)],
            )?;
            gauges(
                &mut encoder,
                "weir_checkpoint_last",
                "Bytes the newest committed checkpoint wrote",
                Some(Unit::Bytes),
                [(Labels::new(), bytes as i64)],
            )?;
        }
        Ok(())
    }
}

fn sources(db: &Database, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let splits = db.source_progress();
    let labels = |s: &str, p: i32| -> Labels {
        vec![("source", s.to_string()), ("partition", p.to_string())]
    };
    let counter = |encoder: &mut DescriptorEncoder<'_>,
                   name: &str,
                   help: &str,
                   f: &dyn Fn(&SplitProgress) -> u64| {
        counters(
            encoder,
            name,
            help,
            splits
                .iter()
                .map(|(s, p, progress)| (labels(s, *p), f(progress))),
        )
    };
    counter(
        encoder,
        "weir_source_rows",
        "Rows read from the partition",
        &|p| p.rows,
    )?;
    counter(
        encoder,
        "weir_source_bytes",
        "Payload bytes read from the partition",
        &|p| p.bytes,
    )?;
    counter(
        encoder,
        "weir_source_parse_errors",
        "Messages of the partition that did not decode (counted and skipped)",
        &|p| p.parse_errors,
    )?;
    counter(
        encoder,
        "weir_source_late_rows",
        "Rows of the partition behind its watermark when they arrived",
        &|p| p.late_rows,
    )?;
    gauges(
        encoder,
        "weir_source_lag_messages",
        "Messages of the partition not yet read: high watermark - next offset",
        None,
        splits.iter().map(|(s, p, progress)| {
            (
                labels(s, *p),
                (progress.high_watermark - progress.next_offset).max(0),
            )
        }),
    )?;
    let now_ns = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    gauges(
        encoder,
        "weir_source_watermark_delay",
        "Wall time now minus the partition's watermark (event time)",
        Some(Unit::Seconds),
        splits.iter().filter_map(|(s, p, progress)| {
            let w = progress.watermark?;
            Some((labels(s, *p), (now_ns.saturating_sub(w)) as f64 / 1e9))
        }),
    )
}

fn views(db: &Database, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let statuses = db.dataflow_statuses();
    let lag: std::collections::HashMap<String, i64> =
        db.source_progress()
            .into_iter()
            .fold(Default::default(), |mut m, (s, _, p)| {
                *m.entry(s).or_default() += (p.high_watermark - p.next_offset).max(0);
                m
            });
    let labels = |name: &str| -> Labels { vec![("view", name.to_string())] };
    let gauge = |encoder: &mut DescriptorEncoder<'_>,
                 name: &str,
                 help: &str,
                 unit: Option<Unit>,
                 f: &dyn Fn(&weir_sql::ViewStatus) -> i64| {
        gauges(
            encoder,
            name,
            help,
            unit,
            statuses.iter().map(|(n, s)| (labels(n), f(s))),
        )
    };
    gauge(
        encoder,
        "weir_view_rows",
        "Rows of the view (messages delivered, for a sink)",
        None,
        &|s| s.rows,
    )?;
    gauge(
        encoder,
        "weir_view_state",
        "State held by the view's dataflow",
        Some(Unit::Bytes),
        &|s| s.state_bytes as i64,
    )?;
    gauge(
        encoder,
        "weir_view_backfill_remaining_rows",
        "Messages its sources have yet to read (0 once caught up)",
        None,
        &|s| s.inputs.iter().filter_map(|i| lag.get(i)).sum(),
    )?;
    counters(
        encoder,
        "weir_view_input_rows",
        "Change rows the view's dataflow has read from its inputs",
        statuses.iter().map(|(n, s)| (labels(n), s.input_rows)),
    )?;
    counters(
        encoder,
        "weir_view_late_rows",
        "Rows dropped by the view's windows and joins as late",
        statuses.iter().map(|(n, s)| (labels(n), s.late_rows)),
    )?;
    let unit = Unit::Seconds;
    let mut metric = encoder.encode_descriptor(
        "weir_view_commit_latency",
        "From an epoch's barrier entering the sources to the view committing it",
        Some(&unit),
        MetricType::Histogram,
    )?;
    for (name, status) in &statuses {
        let l = &status.commit_latency;
        let buckets: Vec<(f64, u64)> = l
            .buckets()
            .into_iter()
            // prometheus-client writes f64::MAX as "+Inf".
            .map(|(le, n)| {
                (
                    if le.is_finite() {
                        le / 1000.0
                    } else {
                        f64::MAX
                    },
                    n,
                )
            })
            .collect();
        let view = labels(name);
        metric
            .encode_family(&view)?
            .encode_histogram::<NoLabelSet>(l.sum_ms / 1000.0, l.count, &buckets, None)?;
    }
    Ok(())
}

fn sinks(db: &Database, encoder: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
    let all = db.sink_progress();
    let rows: Vec<_> = all.iter().filter(|r| r.partition.is_some()).collect();
    let labels = |r: &weir_sql::ProgressRow| -> Labels {
        vec![
            ("sink", r.sink.clone()),
            ("topic", r.destination.clone()),
            ("partition", r.partition.unwrap_or_default().to_string()),
        ]
    };
    for (name, help, f) in [
        (
            "weir_sink_messages",
            "Messages the sink delivered",
            (|r| r.rows) as fn(&weir_sql::ProgressRow) -> u64,
        ),
        ("weir_sink_bytes", "Bytes the sink delivered", |r| r.bytes),
        (
            "weir_sink_errors",
            "Deliveries that failed (and were retried)",
            |r| r.errors,
        ),
    ] {
        counters(encoder, name, help, rows.iter().map(|r| (labels(r), f(r))))?;
    }
    gauges(
        encoder,
        "weir_sink_last_epoch",
        "The newest epoch all of whose messages the sink has delivered",
        None,
        rows.iter().map(|r| (labels(r), r.last_epoch as i64)),
    )?;
    let now = db.current_epoch();
    gauges(
        encoder,
        "weir_sink_lag_epochs",
        "Epochs since the newest one the sink delivered whole",
        None,
        rows.iter()
            .map(|r| (labels(r), now.saturating_sub(r.last_epoch) as i64)),
    )?;
    // Per sink (every row of a sink has the same): what waits for its writer.
    let mut queued: Vec<(Labels, i64)> = Vec::new();
    for r in &all {
        if !queued.iter().any(|(l, _)| l[0].1 == r.sink) {
            queued.push((vec![("sink", r.sink.clone())], r.queued_bytes as i64));
        }
    }
    gauges(
        encoder,
        "weir_sink_queued_bytes",
        "Bytes of commits waiting for the sink's writer, in memory or spilled to disk",
        None,
        queued,
    )?;
    Ok(())
}
