//! The Nexmark benchmark (issue 5), one command:
//! `cargo bench --bench nexmark -- [--events N] [--queries q0,q5] [--inputs generator,file,kafka]
//! [--no-references] [--parallelism N] [--out BENCHMARKS.md]` (`--parallelism`: the views'
//! `streaming_parallelism`, default one instance per core).
//!
//! Writes N Nexmark events (default 10M; 20k when `cargo test` runs it as a smoke test) as
//! NDJSON and Parquet files and produces them to Kafka topics (Tansu, `memory://`). Then for
//! each of RisingWave's q0–q8 texts, weir maintains the query as a view over (a) the built-in
//! generator, (b) the NDJSON files and (c) the topics, each in a child process (events/s,
//! peak RSS, view rows), and once more over the generator paced at half its maximum rate,
//! measuring the latency of its changes through SUBSCRIBE. References in the same run:
//! DataFusion and DuckDB batch over the same files, and one rdkafka consumer's raw rate.
//! Prints progress and a Markdown report (tables, ratios, targets) and writes it with an SVG
//! plot when `--out` is given.
//!
//! `--beyond-q8 [--queries q18,q19]` measures the Nexmark queries beyond q8 (q6, q9–q22
//! but q12, q101–q106) over the generator.
//! `--checkpoints [--recovery-events N]` measures checkpoints instead: q5 and q7 with a
//! checkpoint every 10 s and 1 s against none, and a large view's recovery after kill -9
//! against deriving it again from Kafka (default 5M bids). `--sinks` measures the PLAIN
//! Kafka sink against a raw producer and the Parquet sink against DuckDB's COPY. The smoke
//! run does all of them. `--recovery [--recovery-events N]` measures the recovery alone;
//! `--data-dir-minutes N` samples the data dir's size over N minutes of ingestion and table
//! updates with a checkpoint every second.

#![allow(clippy::unwrap_used, clippy::print_stdout, dead_code, unreachable_pub)]

mod bounded;
mod checkpoints;
mod data;
#[path = "../../tests/harness.rs"]
mod harness;
mod queries;
mod references;
mod report;
mod run;
mod sinks;

use std::time::Instant;

use queries::QUERIES;
use report::{Report, WeirRow};
use run::{Input, Job, Outcome};

// As the `weir` binary: the benchmark measures what users run.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Largest event count at which views are checked (against weir's batch answer over the
/// generator, and against DataFusion's row counts over the files and topics).
const CHECKED_UP_TO: u64 = 200_000;

/// Event time of the first event: fixed, so that every run sees the same events.
const BASE_TIME_MS: u64 = 1_700_000_000_000;

struct Options {
    events: u64,
    queries: Vec<String>,
    inputs: Vec<String>,
    out: Option<String>,
    latency_secs: u64,
    /// Run DataFusion and DuckDB over the same events (`--no-references` skips them).
    references: bool,
    /// Tansu's storage: `memory://` for throughput (the benchmark), `sqlite://` where
    /// results are checked (the smoke run).
    kafka_storage: String,
    /// A child: run this job (JSON) and print its outcome.
    child: Option<String>,
    /// Instances per keyed operator (`streaming_parallelism`; 0: one per core).
    parallelism: usize,
    /// Measure checkpoints only (`--checkpoints`); the smoke run measures them too.
    checkpoints_only: bool,
    /// Measure sinks only (`--sinks`); the smoke run measures them too.
    sinks_only: bool,
    /// Measure the queries beyond q8 only (`--beyond-q8`); the smoke run measures them too.
    beyond_q8_only: bool,
    smoke: bool,
    /// Bids in the recovery experiment.
    recovery_events: u64,
    /// Measure recovery only (`--recovery`).
    recovery_only: bool,
    /// Measure the data dir's size over this many minutes only (`--data-dir-minutes N`).
    data_dir_minutes: Option<u64>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; `cargo test` (CI) does not: then a small smoke run.
    let bench = args.iter().any(|a| a == "--bench");
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let list = |flag: &str, all: Vec<String>| {
        value(flag).map_or(all, |v| v.split(',').map(str::to_string).collect())
    };
    Options {
        events: value("--events")
            .map(|v| v.replace('_', "").parse().expect("--events takes a number"))
            .unwrap_or(if bench { 10_000_000 } else { 20_000 }),
        queries: list(
            "--queries",
            QUERIES.iter().map(|q| q.name.to_string()).collect(),
        ),
        inputs: list(
            "--inputs",
            ["generator", "file", "kafka"].map(str::to_string).to_vec(),
        ),
        out: value("--out"),
        latency_secs: if bench { 10 } else { 2 },
        references: !args.iter().any(|a| a == "--no-references"),
        kafka_storage: value("--kafka-storage").unwrap_or_else(|| {
            if bench {
                "memory://"
            } else {
                "sqlite://tansu.db"
            }
            .to_string()
        }),
        child: value("--child"),
        parallelism: value("--parallelism")
            .map(|v| v.parse().expect("--parallelism takes a number"))
            .unwrap_or(0),
        checkpoints_only: args.iter().any(|a| a == "--checkpoints"),
        sinks_only: args.iter().any(|a| a == "--sinks"),
        beyond_q8_only: args.iter().any(|a| a == "--beyond-q8"),
        smoke: !bench,
        recovery_events: value("--recovery-events")
            .map(|v| {
                v.replace('_', "")
                    .parse()
                    .expect("--recovery-events takes a number")
            })
            .unwrap_or(if bench { 5_000_000 } else { 20_000 }),
        recovery_only: args.iter().any(|a| a == "--recovery"),
        data_dir_minutes: value("--data-dir-minutes")
            .map(|v| v.parse().expect("--data-dir-minutes takes a number")),
    }
}

/// Runs `job` in a child process of this benchmark and returns its outcome.
fn in_child(job: &Job) -> Outcome {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--child", &serde_json::to_string(job).unwrap()])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{} failed", job.query);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("OUTCOME "))
        .unwrap_or_else(|| panic!("{}: no outcome", job.query));
    serde_json::from_str(line).unwrap()
}

fn input_name(input: &Input) -> &'static str {
    match input {
        Input::Generator => "generator",
        Input::File(_) => "file",
        Input::Kafka(_) => "kafka",
    }
}

/// The sinks' section: each sink beside the same work done without weir.
async fn sink_section(o: &Options) -> String {
    let rates = sinks::measure(o.events, BASE_TIME_MS, &o.kafka_storage).await;
    sinks::markdown(o.events, &rates)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let o = options();
    if let Some(job) = &o.child {
        let job: Job = serde_json::from_str(job).unwrap();
        let query = queries::find(&job.query).unwrap();
        let outcome = run::run(&query, &job).await;
        println!("OUTCOME {}", serde_json::to_string(&outcome).unwrap());
        return;
    }
    if o.checkpoints_only
        || o.sinks_only
        || o.beyond_q8_only
        || o.recovery_only
        || o.data_dir_minutes.is_some()
    {
        let markdown = if let Some(minutes) = o.data_dir_minutes {
            bounded::markdown(&bounded::data_dir_bound(minutes).await)
        } else if o.recovery_only {
            let recovery = checkpoints::recovery(o.recovery_events, BASE_TIME_MS).await;
            checkpoints::markdown(o.events, &[], &recovery)
        } else if o.checkpoints_only {
            checkpoint_section(&o).await
        } else if o.beyond_q8_only {
            let (markdown, rates) = beyond_q8_section(&o);
            if let Some(path) = &o.out {
                let svg = std::path::Path::new(path).with_extension("svg");
                let names: Vec<String> = rates.iter().map(|(q, _)| q.clone()).collect();
                let series: Vec<report::Series<'_>> = vec![(
                    "weir generator",
                    "#1f77b4",
                    Box::new(|q: &str| rates.iter().find(|(n, _)| n == q).map(|(_, r)| *r)),
                )];
                let title = format!("Nexmark beyond q8, million events/s ({} events)", o.events);
                std::fs::write(&svg, report::bar_chart(&title, &names, &series)).unwrap();
                let name = svg.file_name().unwrap().to_string_lossy().to_string();
                format!("{markdown}\n![events per second]({name})\n")
            } else {
                markdown
            }
        } else {
            sink_section(&o).await
        };
        println!("{markdown}");
        if let Some(path) = o.out {
            std::fs::write(&path, markdown).unwrap();
            eprintln!("wrote {path}");
        }
        return;
    }
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let queries: Vec<&str> = QUERIES
        .iter()
        .map(|q| q.name)
        .filter(|n| o.queries.iter().any(|q| q == n))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    // Files feed the file and Kafka inputs and the references (a generator-only run without
    // references, e.g. for memory at 100M events, needs none).
    if o.references || o.inputs.iter().any(|i| i != "generator") {
        eprintln!(
            "writing {} events as NDJSON and Parquet to {}",
            o.events,
            dir.path().display()
        );
        data::write_files(dir.path(), o.events, BASE_TIME_MS);
    }
    let mut report = Report::new(o.events, cores);

    let mut inputs = Vec::new();
    for name in &o.inputs {
        match name.as_str() {
            "generator" => inputs.push(Input::Generator),
            "file" => inputs.push(Input::File(dir.path().display().to_string())),
            "kafka" => {}
            other => panic!("unknown input {other} (generator, file, kafka)"),
        }
    }
    // Kafka: a broker on memory:// (raw throughput only), the topics, the raw ceiling.
    let broker = o.inputs.iter().any(|i| i == "kafka").then(|| {
        let broker = harness::Broker::start_with_storage(&o.kafka_storage);
        eprintln!("producing the events to Kafka");
        let partitions = data::produce_topics(&broker, dir.path());
        let raw = references::raw_consume(&broker.bootstrap(), &partitions);
        let messages: u64 = partitions.iter().map(|p| p.2).sum();
        let rate = messages as f64 / raw.iter().map(|r| r.1).fold(0.0, f64::max);
        eprintln!("  raw rdkafka consume: {rate:.0} msg/s");
        report.raw_consume = Some(rate);
        report.raw_partitions = raw;
        inputs.push(Input::Kafka(broker.bootstrap()));
        broker
    });

    for input in &inputs {
        for name in &queries {
            eprintln!(
                "weir {name} over the {}: {} events",
                input_name(input),
                o.events
            );
            let job = Job {
                query: name.to_string(),
                events: o.events,
                base_time_ms: BASE_TIME_MS,
                input: input.clone(),
                latency_rate: None,
                latency_secs: o.latency_secs,
                check: matches!(input, Input::Generator) && o.events <= CHECKED_UP_TO,
                parallelism: o.parallelism,
                checkpoint_ms: 10_000,
            };
            let outcome = in_child(&job);
            match &outcome.error {
                Some(e) => eprintln!("  not supported: {e}"),
                None => eprintln!(
                    "  {:.2} s, {:.0} events/s, peak RSS {:.0} MiB, {} rows",
                    outcome.seconds,
                    o.events as f64 / outcome.seconds,
                    outcome.peak_rss_mib,
                    outcome.view_rows
                ),
            }
            report.weir.push(WeirRow {
                query: name.to_string(),
                input: input_name(input),
                outcome,
            });
        }
    }
    drop(broker);

    // Latency at half the generator's maximum rate.
    for name in &queries {
        let Some(max) = report.events_per_s(name, "generator") else {
            continue;
        };
        let rate = max / 2.0;
        eprintln!(
            "weir {name} at {rate:.0} events/s: latency over {} s",
            o.latency_secs
        );
        let job = Job {
            query: name.to_string(),
            events: o.events,
            base_time_ms: BASE_TIME_MS,
            input: Input::Generator,
            latency_rate: Some(rate),
            latency_secs: o.latency_secs,
            check: false,
            parallelism: o.parallelism,
            checkpoint_ms: 10_000,
        };
        let outcome = in_child(&job);
        if let Some((p50, p99, n, stopped)) = &outcome.latency_ms {
            eprintln!("  p50 {p50:.0} ms, p99 {p99:.0} ms over {n} changes {stopped:?}");
        }
        report
            .latency
            .insert(name.to_string(), (rate, outcome.latency_ms));
    }

    if o.references {
        eprintln!("references: DataFusion batch");
        report.datafusion = references::datafusion(dir.path(), &queries, cores).await;
        eprintln!("references: DuckDB batch");
        report.duckdb = references::duckdb(dir.path(), &queries, cores);
    }
    report.checked = o.events <= CHECKED_UP_TO;
    report.seconds = started.elapsed().as_secs_f64();

    let mut markdown = report.markdown();
    if o.smoke {
        markdown.push('\n');
        markdown.push_str(&checkpoint_section(&o).await);
        markdown.push('\n');
        markdown.push_str(&sink_section(&o).await);
        markdown.push('\n');
        markdown.push_str(&beyond_q8_section(&o).0);
    }
    println!("{markdown}");
    let mismatches = report.mismatches();
    assert!(
        mismatches.is_empty(),
        "views differ from DataFusion: {mismatches:?}"
    );
    if let Some(path) = o.out {
        let svg_path = std::path::Path::new(&path).with_extension("svg");
        std::fs::write(&svg_path, report.svg()).unwrap();
        let svg_name = svg_path.file_name().unwrap().to_string_lossy();
        std::fs::write(
            &path,
            format!("{markdown}\n![events per second]({svg_name})\n"),
        )
        .unwrap();
        eprintln!("wrote {path} and {}", svg_path.display());
    }
}

/// The queries beyond q8, each a view over the generator: events/s, peak RSS, rows, and
/// (up to `CHECKED_UP_TO` events) whether the view equals weir's batch answer; and each
/// query's events/s.
fn beyond_q8_section(o: &Options) -> (String, Vec<(String, f64)>) {
    let mut rows = Vec::new();
    let mut rates = Vec::new();
    // `--queries q18,q19` picks some; otherwise (it names none of them) all.
    let all = queries::beyond_q8();
    let picked: Vec<_> = all
        .iter()
        .filter(|q| o.queries.iter().any(|n| n == q.name))
        .copied()
        .collect();
    for query in if picked.is_empty() { all } else { picked } {
        eprintln!(
            "weir {} over the generator: {} events",
            query.name, o.events
        );
        let job = Job {
            query: query.name.to_string(),
            events: o.events,
            base_time_ms: BASE_TIME_MS,
            input: Input::Generator,
            latency_rate: None,
            latency_secs: o.latency_secs,
            check: o.events <= CHECKED_UP_TO,
            parallelism: o.parallelism,
            checkpoint_ms: 10_000,
        };
        let outcome = in_child(&job);
        let row = match &outcome.error {
            Some(e) => format!("| {} | - | - | - | refused: {e} |", query.name),
            None => {
                let rate = o.events as f64 / outcome.seconds;
                rates.push((query.name.to_string(), rate));
                eprintln!(
                    "  {:.2} s, {rate:.0} events/s, peak RSS {:.0} MiB, {} rows",
                    outcome.seconds, outcome.peak_rss_mib, outcome.view_rows
                );
                let check = if outcome.checked { "equal" } else { "-" };
                format!(
                    "| {} | {:.2} | {:.0} | {} | {check} |",
                    query.name,
                    rate / 1e6,
                    outcome.peak_rss_mib,
                    outcome.view_rows
                )
            }
        };
        rows.push(row);
    }
    let markdown = format!(
        "## Nexmark beyond q8 (generator)\n\n\
         Each query of `NEXMARK_BEYOND_Q8` (tests/harness.rs) as a view over the built-in \
         generator, {} events; events/s counts every event generated. \
         `cargo bench --bench nexmark -- --beyond-q8`.\n\n\
         | query | million events/s | peak RSS (MiB) | view rows | check |\n\
         |---|---:|---:|---:|---|\n{}\n",
        o.events,
        rows.join("\n")
    );
    (markdown, rates)
}

/// The checkpoint measurements, as a report section.
async fn checkpoint_section(o: &Options) -> String {
    let cost = checkpoints::throughput(o.events, BASE_TIME_MS, in_child);
    let recovery = checkpoints::recovery(o.recovery_events, BASE_TIME_MS).await;
    checkpoints::markdown(o.events, &cost, &recovery)
}
