//! `Union`: forwards every input's changes unchanged. It is UNION ALL, and the node a
//! relation's splits (partitions, shards) feed before the rest of a view's operators.

use crate::ChangeBatch;
use crate::Result;
use crate::operator::{Emitter, Operator};

/// Merges its inputs.
#[derive(Debug)]
pub struct Union {
    label: String,
}

impl Union {
    /// `label` names what is merged (a relation, or "UNION ALL"), for EXPLAIN.
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
        }
    }
}

impl Operator for Union {
    fn name(&self) -> &'static str {
        "Union"
    }

    fn describe(&self) -> String {
        format!("Union({})", self.label)
    }

    fn on_batch(&mut self, _input: usize, batch: ChangeBatch, out: &mut Emitter) -> Result<()> {
        out.emit(batch);
        Ok(())
    }
}
