//! `SqlError` to Postgres ErrorResponse / NoticeResponse fields.
//! The SQLSTATE, detail and position come from the sql crate; this only shapes them for the wire.

use pgwire::error::{ErrorInfo, PgWireError};
use weir_sql::SqlError;

pub(crate) fn error_info(e: &SqlError) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".to_string(), e.code.to_string(), e.message.clone());
    info.detail.clone_from(&e.detail);
    info.position = e.position.map(|p| p.to_string());
    info
}

pub(crate) fn to_pgwire(e: &SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

pub(crate) fn notice(message: String) -> ErrorInfo {
    ErrorInfo::new("NOTICE".to_string(), "01000".to_string(), message)
}
