//! The benchmark's report: Markdown tables (weir per input, the references, ratios, latency,
//! targets) and an SVG bar chart of events/s per query for weir and each reference.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::queries::QUERIES;
use crate::references::Measurements;
use crate::run::{Latency, Outcome};

/// A bar series of the plot: its name, colour, and value per query.
pub type Series<'a> = (
    &'static str,
    &'static str,
    Box<dyn Fn(&str) -> Option<f64> + 'a>,
);

/// One weir run.
pub struct WeirRow {
    pub query: String,
    pub input: &'static str,
    pub outcome: Outcome,
}

pub struct Report {
    pub events: u64,
    pub cores: usize,
    pub seconds: f64,
    pub weir: Vec<WeirRow>,
    /// Query -> (paced rate, (p50, p99, changes)).
    pub latency: HashMap<String, (f64, Option<Latency>)>,
    pub datafusion: Measurements,
    pub duckdb: Measurements,
    /// Raw rdkafka consume rate of all topics, messages/s.
    pub raw_consume: Option<f64>,
    /// Seconds the raw consumers took per partition (topic, seconds).
    pub raw_partitions: Vec<(&'static str, f64)>,
    /// Whether row counts are compared with DataFusion's (small runs).
    pub checked: bool,
}

/// Millions, two decimals ("-" when missing).
fn m(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2}", v / 1e6))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.0}%", 100.0 * a / b),
        _ => "-".into(),
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cpu}, {mem_gib:.0} GiB")
}

impl Report {
    pub fn new(events: u64, cores: usize) -> Self {
        Self {
            events,
            cores,
            seconds: 0.0,
            weir: Vec::new(),
            latency: HashMap::new(),
            datafusion: HashMap::new(),
            duckdb: HashMap::new(),
            raw_consume: None,
            raw_partitions: Vec::new(),
            checked: false,
        }
    }

    fn run(&self, query: &str, input: &str) -> Option<&Outcome> {
        self.weir
            .iter()
            .find(|r| r.query == query && r.input == input)
            .map(|r| &r.outcome)
            .filter(|o| o.error.is_none())
    }

    /// weir's events/s for `query` over `input`.
    pub fn events_per_s(&self, query: &str, input: &str) -> Option<f64> {
        self.run(query, input)
            .map(|o| self.events as f64 / o.seconds)
    }

    /// The raw consumers' rate over the topics `query` reads, in events/s: all events over
    /// the time the slowest of those partitions took (weir reads the same messages).
    fn raw_for(&self, query: &str) -> Option<f64> {
        let reads = QUERIES.iter().find(|q| q.name == query)?.reads();
        let secs = self
            .raw_partitions
            .iter()
            .filter(|(t, _)| reads.contains(t))
            .map(|(_, s)| *s)
            .fold(0.0, f64::max);
        (secs > 0.0).then(|| self.events as f64 / secs)
    }

    fn reference(&self, of: &Measurements, query: &str, format: &str) -> Option<f64> {
        of.get(&(query.to_string(), format.to_string()))
            .map(|r| self.events as f64 / r.seconds)
    }

    fn queries(&self) -> Vec<String> {
        let mut q: Vec<String> = Vec::new();
        for r in &self.weir {
            if !q.contains(&r.query) {
                q.push(r.query.clone());
            }
        }
        q
    }

    /// Row count check of a weir run: equal to DataFusion's over the NDJSON files.
    fn check(&self, query: &str, input: &str) -> String {
        let Some(run) = self
            .weir
            .iter()
            .find(|r| r.query == query && r.input == input)
        else {
            return "-".into();
        };
        if let Some(e) = &run.outcome.error {
            return format!("not supported: {}", e.replace('|', "/"));
        }
        let oracle = self
            .datafusion
            .get(&(query.to_string(), "ndjson".to_string()));
        match oracle {
            Some(o) if self.checked && o.rows == run.outcome.view_rows => "= DataFusion".into(),
            Some(o) if self.checked => format!("≠ DataFusion ({})", o.rows),
            _ => "-".into(),
        }
    }

    /// Every weir run whose row count was compared with DataFusion's and differs.
    pub fn mismatches(&self) -> Vec<String> {
        self.weir
            .iter()
            .filter(|r| self.check(&r.query, r.input).starts_with('≠'))
            .map(|r| {
                format!(
                    "{} over {}: {}",
                    r.query,
                    r.input,
                    self.check(&r.query, r.input)
                )
            })
            .collect()
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Nexmark benchmark\n\n{} events (person 2%, auction 6%, bid 92%), {} cores ({}). \
             Regenerate with `cargo bench --bench nexmark -- --events {} --out BENCHMARKS.md` \
             (needs `tansu` and `python3 -m pip install duckdb`); this run took {:.0} s.\n",
            self.events,
            self.cores,
            machine(),
            self.events,
            self.seconds
        );
        let _ = writeln!(
            s,
            "## Throughput (million events/s)\n\nweir: from CREATE MATERIALIZED VIEW until every \
             source row is in and FLUSH returned, over the built-in generator, the NDJSON files \
             (`file` source) and Kafka topics (Tansu `memory://`, bids on 2 partitions). \
             References: the same query run once as a batch over the same files, result \
             materialized. Events/s counts all events, as each relation holds its share.\n"
        );
        let _ = writeln!(
            s,
            "| query | weir generator | weir file | weir kafka | DuckDB NDJSON | DuckDB Parquet | DataFusion NDJSON | DataFusion Parquet | weir file / DuckDB NDJSON | weir kafka / raw consume |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for q in self.queries() {
            let _ = writeln!(
                s,
                "| {q} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                m(self.events_per_s(&q, "generator")),
                m(self.events_per_s(&q, "file")),
                m(self.events_per_s(&q, "kafka")),
                m(self.reference(&self.duckdb, &q, "ndjson")),
                m(self.reference(&self.duckdb, &q, "parquet")),
                m(self.reference(&self.datafusion, &q, "ndjson")),
                m(self.reference(&self.datafusion, &q, "parquet")),
                ratio(
                    self.events_per_s(&q, "file"),
                    self.reference(&self.duckdb, &q, "ndjson")
                ),
                ratio(self.events_per_s(&q, "kafka"), self.raw_for(&q)),
            );
        }
        if let Some(raw) = self.raw_consume {
            let _ = writeln!(
                s,
                "\nRaw rdkafka consume of all topics at once, one consumer per partition, no \
                 decoding: {:.2}M messages/s. The last column compares weir with the raw \
                 consumers' time for the topics the query reads (q3 and q8 read only person \
                 and auction, one partition each).",
                raw / 1e6
            );
        }
        let _ = writeln!(
            s,
            "\n## Memory and results\n\nPeak RSS of the process maintaining the view (MiB) and the \
             view's rows at the end; checked against DataFusion's row count up to 200k events \
             (over the generator also row by row against weir's batch answer).\n\n\
             | query | RSS generator | RSS file | RSS kafka | rows generator | rows file | rows kafka | check generator | check file | check kafka |\n\
             |---|---:|---:|---:|---:|---:|---:|---|---|---|"
        );
        for q in self.queries() {
            let rss = |i: &str| {
                self.run(&q, i)
                    .map_or("-".into(), |o| format!("{:.0}", o.peak_rss_mib))
            };
            let rows = |i: &str| {
                self.run(&q, i)
                    .map_or("-".into(), |o| o.view_rows.to_string())
            };
            let _ = writeln!(
                s,
                "| {q} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                rss("generator"),
                rss("file"),
                rss("kafka"),
                rows("generator"),
                rows("file"),
                rows("kafka"),
                self.check(&q, "generator"),
                self.check(&q, "file"),
                self.check(&q, "kafka"),
            );
        }
        let _ = writeln!(
            s,
            "\n## Latency at half the maximum rate\n\nThe generator paced at half of weir's \
             generator rate for the query; a client SUBSCRIBEs to the view and measures, per \
             change, arrival − `weir_ts` (the wall time at which the epoch's barrier entered the \
             sources, every 100 ms). An input row waits up to one barrier interval before that.\n\n\
             | query | rate (events/s) | p50 (ms) | p99 (ms) | changes | note |\n|---|---:|---:|---:|---:|---|"
        );
        for q in self.queries() {
            if let Some((rate, lat)) = self.latency.get(&q) {
                let (p50, p99, n, note) = lat.as_ref().map_or(
                    (
                        "-".into(),
                        "-".into(),
                        "0".into(),
                        "no change in the window".into(),
                    ),
                    |(a, b, n, why)| {
                        let note = why
                            .as_ref()
                            .map_or(String::new(), |w| format!("stopped: {w}"));
                        (format!("{a:.0}"), format!("{b:.0}"), n.to_string(), note)
                    },
                );
                let _ = writeln!(s, "| {q} | {rate:.0} | {p50} | {p99} | {n} | {note} |");
            }
        }
        s.push_str(&self.targets());
        s
    }

    fn targets(&self) -> String {
        let mut s = String::from(
            "\n## Targets (issue 5)\n\n| target | measured | holds |\n|---|---|---|\n",
        );
        let mut row = |target: String, measured: String, holds: Option<bool>| {
            let verdict = holds.map_or("-", |h| if h { "yes" } else { "no" });
            let _ = writeln!(s, "| {target} | {measured} | {verdict} |");
        };
        for q in ["q1", "q5", "q7"] {
            let (w, d) = (
                self.events_per_s(q, "file"),
                self.reference(&self.duckdb, q, "ndjson"),
            );
            row(
                format!("{q} from NDJSON ≥ 50% of DuckDB"),
                ratio(w, d),
                w.zip(d).map(|(w, d)| w >= 0.5 * d),
            );
        }
        for q in self.queries() {
            let w = self.events_per_s(&q, "kafka");
            row(
                format!("{q} from Kafka ≥ 80% of raw consume"),
                ratio(w, self.raw_for(&q)),
                w.zip(self.raw_for(&q)).map(|(w, r)| w >= 0.8 * r),
            );
        }
        for (q, goal) in [
            ("q0", 5e6),
            ("q1", 5e6),
            ("q2", 5e6),
            ("q5", 3e6),
            ("q7", 3e6),
            ("q3", 1e6),
            ("q4", 1e6),
            ("q8", 1e6),
        ] {
            let w = self.events_per_s(q, "generator");
            row(
                format!("{q} from the generator ≥ {}M events/s", goal / 1e6),
                m(w),
                w.map(|w| w >= goal),
            );
        }
        for q in self.queries() {
            if let Some((_, Some((_, p99, _, _)))) = self.latency.get(&q) {
                row(
                    format!("{q} p99 latency < 100 ms"),
                    format!("{p99:.0} ms"),
                    Some(*p99 < 100.0),
                );
            }
        }
        row(
            "q7 peak RSS at 100M events within 10% of 10M".into(),
            "`-- --events 100000000 --queries q7 --inputs generator --no-references` beside a 10M run".into(),
            None,
        );
        s
    }

    /// A grouped bar chart: per query, weir over each input and each reference, events/s.
    pub fn svg(&self) -> String {
        let series: Vec<Series<'_>> = vec![
            (
                "weir generator",
                "#1f77b4",
                Box::new(|q| self.events_per_s(q, "generator")),
            ),
            (
                "weir file",
                "#4a9fe0",
                Box::new(|q| self.events_per_s(q, "file")),
            ),
            (
                "weir kafka",
                "#9ecae9",
                Box::new(|q| self.events_per_s(q, "kafka")),
            ),
            (
                "DuckDB NDJSON",
                "#d62728",
                Box::new(|q| self.reference(&self.duckdb, q, "ndjson")),
            ),
            (
                "DuckDB Parquet",
                "#ff9896",
                Box::new(|q| self.reference(&self.duckdb, q, "parquet")),
            ),
            (
                "DataFusion NDJSON",
                "#2ca02c",
                Box::new(|q| self.reference(&self.datafusion, q, "ndjson")),
            ),
            (
                "DataFusion Parquet",
                "#98df8a",
                Box::new(|q| self.reference(&self.datafusion, q, "parquet")),
            ),
        ];
        let title = format!(
            "Nexmark, million events/s ({} events, {} cores)",
            self.events, self.cores
        );
        bar_chart(&title, &self.queries(), &series)
    }
}

/// A grouped bar chart of events/s: per category (query), a bar for each series.
pub fn bar_chart(title: &str, queries: &[String], series: &[Series<'_>]) -> String {
    let max = queries
        .iter()
        .flat_map(|q| series.iter().filter_map(|(_, _, f)| f(q)))
        .fold(1.0_f64, f64::max);
    let (left, top, height, bar, gap) = (60.0, 40.0, 300.0, 9.0, 18.0);
    let group = bar * series.len() as f64 + gap;
    let width = left + group * queries.len() as f64 + 170.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{:.0}\" font-family=\"sans-serif\" font-size=\"11\">\n\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{left}\" y=\"20\" font-size=\"13\">{title}</text>\n",
        top + height + 40.0,
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = top + height - height * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            "<line x1=\"{left}\" x2=\"{:.0}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{:.1}</text>",
            left + group * queries.len() as f64,
            left - 5.0,
            y + 4.0,
            v / 1e6
        );
    }
    for (qi, q) in queries.iter().enumerate() {
        let x0 = left + group * qi as f64 + gap / 2.0;
        for (si, (_, color, f)) in series.iter().enumerate() {
            if let Some(v) = f(q) {
                let h = height * v / max;
                let _ = writeln!(
                    s,
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{h:.1}\" fill=\"{color}\"><title>{q} {}: {:.2}M</title></rect>",
                    x0 + bar * si as f64,
                    top + height - h,
                    series[si].0,
                    v / 1e6
                );
            }
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{q}</text>",
            x0 + bar * series.len() as f64 / 2.0,
            top + height + 15.0
        );
    }
    let lx = left + group * queries.len() as f64 + 15.0;
    for (si, (name, color, _)) in series.iter().enumerate() {
        let y = top + 15.0 * si as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{lx:.0}\" y=\"{y:.0}\" width=\"10\" height=\"10\" fill=\"{color}\"/>\
                 <text x=\"{:.0}\" y=\"{:.0}\">{name}</text>",
            lx + 14.0,
            y + 9.0
        );
    }
    s.push_str("</svg>\n");
    s
}
