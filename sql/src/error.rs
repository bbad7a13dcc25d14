//! `SqlError`: every error a statement can raise, each with its SQLSTATE.
//! DataFusion errors are classified here so the server only maps codes to wire messages.

use datafusion::error::DataFusionError;
use weir_engine::EngineError;

/// An error with a Postgres SQLSTATE, a message, and optionally a detail and a position.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SqlError {
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    /// 1-based character position in the query text.
    pub position: Option<usize>,
}

/// Result alias for the sql crate.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;

impl SqlError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            detail: None,
            position: None,
        }
    }

    pub fn syntax(message: impl Into<String>, position: Option<usize>) -> Self {
        Self {
            position,
            ..Self::new("42601", message)
        }
    }

    pub fn unsupported(what: impl Into<String>) -> Self {
        Self::new("0A000", what)
    }

    pub fn undefined_table(name: &str) -> Self {
        Self::new("42P01", format!("relation \"{name}\" does not exist"))
    }

    pub fn duplicate_table(name: &str) -> Self {
        Self::new("42P07", format!("relation \"{name}\" already exists"))
    }

    pub fn invalid_parameter(message: impl Into<String>) -> Self {
        Self::new("22023", message)
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Shifts the position by the offset of the statement within the whole query.
    pub fn offset_position(mut self, chars_before: usize) -> Self {
        self.position = self.position.map(|p| p + chars_before);
        self
    }
}

impl From<EngineError> for SqlError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::DuplicateKey { ref detail, .. } => {
                SqlError::new("23505", e.to_string()).with_detail(detail.clone())
            }
            EngineError::NullKey { column } => SqlError::new(
                "23502",
                format!("null value in column \"{column}\" violates not-null constraint"),
            ),
            EngineError::Arrow(a) => from_arrow(&a),
            EngineError::InvalidParameter(m) => SqlError::new("22023", m),
            EngineError::Unsupported(m) => SqlError::new("0A000", m),
            EngineError::External(m) => SqlError::new("58000", m),
            EngineError::DataFusion(d) => classify(&d),
            EngineError::Kafka(k) => SqlError::new("58000", format!("kafka: {k}")),
            EngineError::CorruptCheckpoint(_) | EngineError::CorruptLog { .. } => {
                SqlError::new("XX001", e.to_string())
            }
            other => SqlError::new("XX000", other.to_string()),
        }
    }
}

fn from_arrow(e: &arrow_error::ArrowError) -> SqlError {
    use arrow_error::ArrowError as A;
    match e {
        A::CastError(m) | A::ParseError(m) => SqlError::new("22P02", m.clone()),
        A::DivideByZero => SqlError::new("22012", "division by zero"),
        A::ArithmeticOverflow(m) => SqlError::new("22003", m.clone()),
        A::JsonError(m) => SqlError::new("22P02", m.clone()),
        // A kernel refusing its operand types: planning refuses the known cases first.
        A::InvalidArgumentError(m) if m.starts_with("Invalid arithmetic operation") => {
            SqlError::new("42883", m.clone())
        }
        // INSERT ... VALUES with a NULL for a NOT NULL column.
        A::InvalidArgumentError(m) if m.contains("declared as non-nullable") => not_null(m),
        other => SqlError::new("XX000", other.to_string()),
    }
}

/// A NULL for a NOT NULL column that DataFusion found before weir's table did (which
/// names the column): 23502, with DataFusion's words as the detail.
fn not_null(m: &str) -> SqlError {
    SqlError::new("23502", "null value violates not-null constraint").with_detail(m.to_string())
}

mod arrow_error {
    pub(crate) use datafusion::arrow::error::ArrowError;
}

impl From<DataFusionError> for SqlError {
    fn from(e: DataFusionError) -> Self {
        classify(&e)
    }
}

impl From<SqlError> for DataFusionError {
    fn from(e: SqlError) -> Self {
        DataFusionError::External(Box::new(e))
    }
}

/// Maps a DataFusion error to a SQLSTATE, looking through wrappers.
pub fn classify(e: &DataFusionError) -> SqlError {
    use datafusion::common::SchemaError;
    match e {
        DataFusionError::External(inner) => {
            if let Some(s) = inner.downcast_ref::<SqlError>() {
                return s.clone();
            }
            if let Some(df) = inner.downcast_ref::<DataFusionError>() {
                return classify(df);
            }
            SqlError::new("XX000", inner.to_string())
        }
        DataFusionError::Context(_, inner) | DataFusionError::Diagnostic(_, inner) => {
            classify(inner)
        }
        DataFusionError::Shared(inner) => classify(inner),
        DataFusionError::Collection(errs) if !errs.is_empty() => classify(&errs[0]),
        DataFusionError::SQL(p, _) => SqlError::syntax(p.to_string(), None),
        DataFusionError::ArrowError(a, _) => from_arrow(a),
        DataFusionError::NotImplemented(m) => SqlError::unsupported(m.clone()),
        DataFusionError::SchemaError(s, _) => match s.as_ref() {
            SchemaError::FieldNotFound { field, .. } => {
                SqlError::new("42703", format!("column \"{}\" does not exist", field.name))
            }
            SchemaError::AmbiguousReference { field } => SqlError::new(
                "42702",
                format!("column reference \"{}\" is ambiguous", field.name),
            ),
            SchemaError::DuplicateQualifiedField { .. }
            | SchemaError::DuplicateUnqualifiedField { .. } => {
                SqlError::new("42701", s.to_string())
            }
        },
        DataFusionError::Plan(m) => {
            if let Some(name) = m.strip_prefix("table '").and_then(|r| r.split('\'').next()) {
                let short = name.rsplit('.').next().unwrap_or(name);
                SqlError::undefined_table(short)
            } else if m.contains("Invalid function")
                || m.contains("No function matches")
                || m.starts_with("Unary operator")
            {
                SqlError::new("42883", m.clone())
            } else if m.contains("Cannot cast") || m.contains("Unsupported CAST") {
                SqlError::new("42846", m.clone())
            } else {
                SqlError::new("42000", m.clone())
            }
        }
        DataFusionError::Execution(m) => {
            if m.contains("Cast error") || m.contains("Cannot cast") {
                SqlError::new("22P02", m.clone())
            } else if m.contains("Divide by zero") {
                SqlError::new("22012", "division by zero")
            } else if m.contains("Overflow") || m.contains("overflow") {
                SqlError::new("22003", m.clone())
            } else if m.starts_with("Types don't match and no valid cast exists") {
                SqlError::new("42804", m.clone())
            } else if m.starts_with("Placeholder") && m.contains("was not provided a value") {
                SqlError::new("42P02", m.clone())
            } else if m.contains("has null but schema specifies non-nullable") {
                not_null(m)
            } else {
                SqlError::new("XX000", m.clone())
            }
        }
        DataFusionError::Configuration(m) => SqlError::new("42704", m.clone()),
        DataFusionError::ResourcesExhausted(m) => SqlError::new("53000", m.clone()),
        other => SqlError::new("XX000", other.to_string()),
    }
}
