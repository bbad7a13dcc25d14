//! The streaming runtime: source splits read on their own threads, a dataflow's operator
//! graph cut into stages at its exchanges, each stage instance driven by one task that
//! aligns barriers and combines watermarks over its inputs.

mod alignment;
mod barrier;
mod dataflow;
pub(crate) mod exchange;
mod graph;
mod operator_stats;
mod paced;
mod rescale;
mod shared;
mod split;
mod stage;

pub use barrier::Barriers;
pub use dataflow::{Dataflow, Started};
pub use exchange::{Partitioning, Router};
pub use graph::{Graph, InputId, NodeId};
pub use operator_stats::{
    COMMIT_LATENCY_BUCKETS_MS, CommitLatency, OperatorInfo, OperatorStats, Topology,
};
pub use paced::Paced;
pub use shared::{Handover, Joined, SplitShare};
pub use split::{
    ReadResult, SplitOutput, SplitProgress, SplitReader, SplitStart, WatermarkSpec, spawn_split,
};
pub use stage::{DataflowStats, GraphSnapshot};

/// Bounded capacity of a split's channel, in messages (batches): backpressure to readers.
pub const CHANNEL_CAPACITY: usize = 16;

/// A bounded channel's receiving end as the stream a stage task takes.
pub fn channel_stream(
    mut rx: tokio::sync::mpsc::Receiver<crate::Message>,
) -> futures::stream::BoxStream<'static, crate::Message> {
    use futures::StreamExt;
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}

/// An unbounded channel's receiving end as the stream a stage task takes.
pub fn unbounded_stream(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<crate::Message>,
) -> futures::stream::BoxStream<'static, crate::Message> {
    use futures::StreamExt;
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed()
}
