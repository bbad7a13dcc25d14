//! `Graph`: a dataflow's plan, as lowering builds it and EXPLAIN describes it: operators
//! in topological order, the edges between them, and the exchanges where a keyed
//! operator's input is dealt between instances. `Dataflow` runs it as stage tasks.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use super::exchange::Partitioning;
use super::operator_stats::{OperatorInfo, Topology};
use crate::operator::Operator;
use crate::{EngineError, Result};

pub type NodeId = usize;
pub type InputId = usize;

/// An operator of the plan and the (node, input port) pairs it feeds within its stage.
pub(super) struct PlanNode {
    pub(super) op: Box<dyn Operator>,
    pub(super) outputs: Vec<(NodeId, usize)>,
}

/// An edge whose rows are repartitioned between stages (see `Dataflow`).
#[derive(Clone)]
pub(super) struct ExchangeEdge {
    pub(super) from: NodeId,
    pub(super) to: NodeId,
    pub(super) port: usize,
    pub(super) partitioning: Partitioning,
}

/// Operators and their edges. Nodes are added inputs-first.
#[derive(Default)]
pub struct Graph {
    pub(super) nodes: Vec<PlanNode>,
    pub(super) exchanges: Vec<ExchangeEdge>,
    /// Watermark alignment across relations (see `align_watermarks`).
    pub(super) align: bool,
    /// Each relation's (entry node's) read limit in event time, for its split readers.
    pub(super) limits: Vec<(NodeId, Arc<AtomicI64>)>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds back a relation whose watermark runs more than a second ahead of another's,
    /// for dataflows whose state depends on both sides' progress (time-bounded joins).
    pub fn align_watermarks(&mut self) {
        self.align = true;
    }

    /// The event time up to which the relation entering at `node` may be read (its split
    /// readers wait beyond it); i64::MAX unless alignment holds it back.
    pub fn read_limit(&mut self, node: NodeId) -> Arc<AtomicI64> {
        if let Some((_, l)) = self.limits.iter().find(|(n, _)| *n == node) {
            return Arc::clone(l);
        }
        let limit = Arc::new(AtomicI64::new(i64::MAX));
        self.limits.push((node, Arc::clone(&limit)));
        limit
    }

    pub fn add(&mut self, op: Box<dyn Operator>) -> NodeId {
        self.nodes.push(PlanNode {
            op,
            outputs: Vec::new(),
        });
        self.nodes.len() - 1
    }

    /// Feeds `from`'s output into `to`'s input `port`.
    pub fn connect(&mut self, from: NodeId, to: NodeId, port: usize) -> Result<()> {
        self.check_order(from, to)?;
        self.nodes[from].outputs.push((to, port));
        Ok(())
    }

    /// Feeds `from`'s output into `to`'s input `port` across an exchange: when the
    /// dataflow runs on several cores, `to` starts a new stage whose instances each get
    /// the rows `partitioning` deals them (on one core it is a plain edge).
    pub fn exchange(
        &mut self,
        from: NodeId,
        to: NodeId,
        port: usize,
        partitioning: Partitioning,
    ) -> Result<()> {
        self.check_order(from, to)?;
        self.exchanges.push(ExchangeEdge {
            from,
            to,
            port,
            partitioning,
        });
        Ok(())
    }

    fn check_order(&self, from: NodeId, to: NodeId) -> Result<()> {
        if from >= to || to >= self.nodes.len() {
            return Err(EngineError::Internal(format!(
                "edge {from} -> {to} is not in topological order"
            )));
        }
        Ok(())
    }

    /// Edges within stages, as (from, to).
    pub(super) fn edges(&self) -> Vec<(NodeId, NodeId)> {
        self.nodes
            .iter()
            .enumerate()
            .flat_map(|(from, n)| n.outputs.iter().map(move |&(to, _)| (from, to)))
            .collect()
    }

    /// Turns every exchange into a plain edge (a dataflow on one core).
    pub(super) fn inline_exchanges(&mut self) -> Result<()> {
        for e in std::mem::take(&mut self.exchanges) {
            self.connect(e.from, e.to, e.port)?;
        }
        Ok(())
    }

    /// Each node and what it feeds; `inputs` are the relations entering at a node, with
    /// their number of splits.
    pub fn topology(&self) -> Topology {
        self.topology_with(&[])
    }

    pub(super) fn topology_with(&self, inputs: &[(NodeId, usize)]) -> Topology {
        (0..self.nodes.len())
            .map(|id| OperatorInfo {
                id,
                operator: self.nodes[id].op.describe(),
                input_channels: inputs
                    .iter()
                    .filter(|(n, _)| *n == id)
                    .map(|(_, k)| k)
                    .sum(),
                outputs: self.nodes[id]
                    .outputs
                    .iter()
                    .map(|&(to, _)| (to, None))
                    .chain(
                        self.exchanges
                            .iter()
                            .filter(|e| e.from == id)
                            .map(|e| (e.to, Some(e.partitioning.describe()))),
                    )
                    .collect(),
            })
            .collect()
    }

    /// One line per node, sinks last: what EXPLAIN CREATE MATERIALIZED VIEW prints.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for op in self.topology() {
            let mut line = format!("{}: {}", op.id, op.operator);
            if op.input_channels > 0 {
                let _ = write!(line, " <- {} input channel(s)", op.input_channels);
            }
            let outs: Vec<String> = op
                .outputs
                .iter()
                .map(|(to, exchange)| match exchange {
                    Some(p) => format!("{to} (exchange: {p})"),
                    None => to.to_string(),
                })
                .collect();
            if !outs.is_empty() {
                let _ = write!(line, " -> {}", outs.join(", "));
            }
            lines.push(line);
        }
        lines
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use crate::operator::{
        HashAggregate, Materialize, SharedView, TimeWindow, WindowClose, WindowKind, column,
    };
    use crate::{Barrier, ChangeBatch, Message, Watermark};

    /// TUMBLE(ts, 10 s) -> sum(v), count(v) per (window_start, k), freed at the watermark
    /// -> Materialize, behind exchanges by the group key and to one instance; its input
    /// enters at node 0.
    pub(in crate::runtime) fn windowed_sums() -> (Graph, SharedView) {
        use datafusion_functions_aggregate::{count::count_udaf, sum::sum_udaf};
        use datafusion_physical_expr::aggregate::AggregateExprBuilder;
        let window = TimeWindow::try_new(&kvt(), 2, WindowKind::Tumble { size: 10 * S }).unwrap();
        let input = window.schema();
        let agg = |f, name: &str| {
            Arc::new(
                AggregateExprBuilder::new(f, vec![column("v", 1)])
                    .schema(Arc::clone(&input))
                    .alias(name)
                    .build()
                    .unwrap(),
            )
        };
        let ts = DataType::Timestamp(TimeUnit::Nanosecond, None);
        let out = Arc::new(Schema::new(vec![
            Field::new("window_start", ts, true),
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
            Field::new("c", DataType::Int64, true),
        ]));
        let keys = vec![column("window_start", 3), column("k", 0)];
        let aggs = vec![agg(sum_udaf(), "s"), agg(count_udaf(), "c")];
        let close = WindowClose {
            column: 0,
            offset_ns: 10 * S,
            emit_on_close: false,
        };
        let aggregate = HashAggregate::try_new(keys, aggs, Arc::clone(&out))
            .unwrap()
            .with_window_close(close);
        let m = Materialize::new(out).unwrap();
        let view = m.view();
        let mut g = Graph::new();
        let w = g.add(Box::new(window));
        let a = g.add(Box::new(aggregate));
        let v = g.add(Box::new(m));
        let key = vec![column("window_start", 3), column("k", 0)];
        g.exchange(w, a, 0, Partitioning::Hash(key)).unwrap();
        g.exchange(a, v, 0, Partitioning::Single).unwrap();
        (g, view)
    }

    const S: i64 = 1_000_000_000;

    fn kvt() -> Schema {
        Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        ])
    }

    /// Rows (k, v, ts in s) out of order within 5 s, retractions of earlier rows, a
    /// watermark 5 s behind every third step, and a barrier every second step; the one
    /// after step `checkpoint` is a checkpoint barrier.
    pub(in crate::runtime) fn messages(checkpoint: usize) -> Vec<Message> {
        let rows = |i: i64| -> Vec<(i64, i64, i64)> {
            (0..5)
                .map(|j| ((i * 7 + j) % 3, (i * 13 + j * 5) % 10, i * 2 + (j * 3) % 5))
                .collect()
        };
        let batch = |rows: &[(i64, i64, i64)], w: i64| {
            let columns: Vec<ArrayRef> = vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(TimestampNanosecondArray::from_iter_values(
                    rows.iter().map(|r| r.2 * S),
                )),
            ];
            let data = RecordBatch::try_new(Arc::new(kvt()), columns).unwrap();
            Message::Data(ChangeBatch::from_data(&data, w).unwrap())
        };
        let mut out = Vec::new();
        for i in 0..40 {
            out.push(batch(&rows(i), 1));
            if i % 4 == 3 {
                out.push(batch(&rows(i - 1)[..2], -1));
            }
            if i % 3 == 2 {
                out.push(Message::Watermark(Watermark::EventTime((i * 2 - 5) * S)));
            }
            if i % 2 == 1 || i as usize == checkpoint {
                let epoch = i as u64 + 1;
                out.push(Message::Barrier(if i as usize == checkpoint {
                    Barrier::checkpoint(epoch, 0)
                } else {
                    Barrier::new(epoch, 0)
                }));
            }
        }
        out
    }

    pub(in crate::runtime) fn sorted(view: &SharedView) -> Vec<Vec<Option<i64>>> {
        let rows = view.lock().rows().unwrap();
        let mut out: Vec<Vec<Option<i64>>> = (0..rows.num_rows())
            .map(|i| {
                (0..rows.num_columns())
                    .map(|c| {
                        let ns = timestamps_or_ints(rows.column(c));
                        ns.is_valid(i).then(|| ns.value(i))
                    })
                    .collect()
            })
            .collect();
        out.sort();
        out
    }

    fn timestamps_or_ints(c: &ArrayRef) -> Int64Array {
        arrow::compute::cast(c, &DataType::Int64)
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .clone()
    }

    #[test]
    fn explain_lists_operators_and_exchanges() {
        let (g, _) = windowed_sums();
        let lines = g.describe();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("0: ") && lines[0].contains("-> 1 (exchange: hash("));
        assert!(lines[1].contains("-> 2 (exchange: single)"), "{lines:?}");
    }
}
